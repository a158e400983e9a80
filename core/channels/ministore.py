"""The merchant's own mini-program / web store; schema documented in docs/ministore-order.md.

We own this format, so it is strict where the marketplaces force leniency: amounts must be decimal
strings, times must carry an offset, and payment_status uses the canonical vocabulary directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from core.channels._common import (
    Bad,
    at,
    bare_decoder,
    currency_exp,
    iso_ms,
    iso_ms_opt,
    lines_within,
    minor,
    normaliser,
    order_no_reader,
    order_number,
    phone_pair,
    pick_sku,
    quantity,
    status_of,
)
from core.model import (
    PAYMENT_STATUSES,
    CanonicalOrder,
    LineItem,
    PaymentStatus,
    Recipient,
    global_order_id,
)

if TYPE_CHECKING:
    from core.channels import NormaliseContext

CHANNEL = "ministore"

PAYMENT_STATUS: dict[str, PaymentStatus] = {s: s for s in PAYMENT_STATUSES}  # type: ignore[misc]
# Part payments must say how much arrived; for the others it follows from the status.
_NEEDS_PAID = frozenset(("deposit_paid", "partially_paid"))


class _Line(msgspec.Struct, kw_only=True):
    sku: str
    qty: int
    unit_price: str
    title: str = ""
    line_total: str | None = None


class _Recipient(msgspec.Struct, kw_only=True):
    name: str = ""
    phone: str = ""
    country: str = ""
    region: str = ""
    city: str = ""
    district: str = ""
    address: str = ""
    postcode: str = ""


class Order(msgspec.Struct, kw_only=True):
    order_no: str | None = None
    created_at: str
    updated_at: str | None = None
    paid_at: str | None = None
    currency: str
    payment_status: str
    total: str
    subtotal: str | None = None
    shipping: str | None = None
    tax: str | None = None
    discount: str | None = None
    paid: str | None = None
    buyer_id: str = ""
    recipient: _Recipient
    lines: list[_Line] = []
    tags: list[str] = []
    warehouse: str = ""
    note: str = ""


class _No(msgspec.Struct):
    order_no: str | None = None


def _number_in(doc: _No) -> str:
    return order_number(doc.order_no, "$.order_no")


order_no = order_no_reader(CHANNEL, _No, "$.order_no", _number_in)
_decode = bare_decoder(Order)


def _number(o: Order) -> str:
    return o.order_no or ""


def _build(o: Order, ctx: NormaliseContext) -> CanonicalOrder:
    no = order_number(o.order_no, ".order_no")
    exp = currency_exp(o.currency, ".currency")
    status = status_of(PAYMENT_STATUS, o.payment_status, ".payment_status")
    total = minor(o.total, exp, ".total", required=True)
    if o.paid is not None:
        paid = minor(o.paid, exp, ".paid")
    elif status in _NEEDS_PAID:
        raise Bad(".paid", f"required when payment_status is {status!r}")
    else:
        paid = 0 if status == "unpaid" else total

    if not o.lines:
        raise Bad(".lines", "order has no lines")
    lines_within(o.lines, ".lines", ctx)
    lines = []
    for i, ln in enumerate(o.lines):
        try:
            qty = quantity(ln.qty, ".qty")
            sku, channel_sku = pick_sku(ctx, ".sku", ln.sku)
            unit = minor(ln.unit_price, exp, ".unit_price", required=True)
            line_total = minor(ln.line_total, exp, ".line_total") if ln.line_total else unit * qty
        except Bad as exc:
            raise at(f".lines[{i}]", exc) from None
        lines.append(
            LineItem(
                sku=sku,
                channel_sku=channel_sku,
                title=ln.title,
                quantity=qty,
                unit_price=unit,
                line_total=line_total,
            )
        )

    tags = [t.strip() for t in o.tags if t.strip()]
    if status == "deposit_paid" and "presale" not in tags:
        tags.append("presale")  # deposits only exist for presale items in this store
    r = o.recipient
    phone, masked = phone_pair(r.phone, r.country or ctx.default_country)
    created = iso_ms(o.created_at, ".created_at")
    return CanonicalOrder(
        id=global_order_id(CHANNEL, no),
        channel=CHANNEL,
        channel_order_no=no,
        created_at=created,
        updated_at=iso_ms(o.updated_at, ".updated_at") if o.updated_at else created,
        paid_at=iso_ms_opt(o.paid_at, ".paid_at"),
        currency=o.currency,
        total=total,
        subtotal=minor(o.subtotal, exp, ".subtotal"),
        shipping=minor(o.shipping, exp, ".shipping"),
        tax=minor(o.tax, exp, ".tax"),
        discount=minor(o.discount, exp, ".discount"),
        paid=paid,
        payment_status=status,
        channel_status=o.payment_status,
        lines=lines,
        recipient=Recipient(
            name=r.name,
            phone=phone,
            phone_masked=masked,
            country=r.country,
            region=r.region,
            city=r.city,
            district=r.district,
            address=r.address,
            postcode=r.postcode,
        ),
        buyer_id=o.buyer_id,
        tags=tags,
        warehouse=o.warehouse.strip(),
        note=o.note,
    )


normalise = normaliser(CHANNEL, _decode, _build, _number, order_no)
