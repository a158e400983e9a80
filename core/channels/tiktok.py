"""TikTok Shop Partner API 202309 "Get Order Detail" order object, bare or in the whole response
(``{"code": 0, "message": "Success", "request_id": ..., "data": {"orders": [...]}}``).

A response must hold exactly one order: a document is one order (one global id at the door), and
picking one of several would silently drop the others, so several are refused naming how many (send
each as its own NDJSON line). A ``code`` other than 0 is TikTok's error answer and is refused naming
it. The order webhook (type 1, ORDER_STATUS_CHANGE) carries only the order id and status, not the
order: it is refused saying so (fetch the order with Get Order Detail and send that response).

TikTok sends one ``line_items`` entry per unit; the canonical order wants quantities, so units of
the same SKU at the same prices are folded into one line (first-seen order kept).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

import msgspec

from core.channels._common import (
    Amount,
    Bad,
    at,
    bare_or_wrapped_decoder,
    currency_exp,
    enveloped_order_no_reader,
    join_nonempty,
    lines_within,
    minor,
    normaliser,
    order_number,
    phone_pair,
    pick_sku,
    platform_error,
    shown,
    status_of,
    unix_ms,
)
from core.model import CanonicalOrder, LineItem, PaymentStatus, Recipient, global_order_id

if TYPE_CHECKING:
    from core.channels import NormaliseContext

CHANNEL = "tiktok"

# ON_HOLD is TikTok's post-payment cancellation window: paid. CANCELLED depends on whether money
# moved (paid_time), so it is resolved in _build rather than in this table.
ORDER_STATUS: dict[str, PaymentStatus] = {
    "UNPAID": "unpaid",
    "ON_HOLD": "paid",
    "AWAITING_SHIPMENT": "paid",
    "PARTIALLY_SHIPPING": "paid",
    "AWAITING_COLLECTION": "paid",
    "IN_TRANSIT": "paid",
    "DELIVERED": "paid",
    "COMPLETED": "paid",
}

# district_info level names -> Recipient field; TikTok names the levels per market.
_LEVEL_FIELD: dict[str, str] = {
    "state": "region",
    "province": "region",
    "region": "region",
    "nation": "region",
    "city": "city",
    "post town": "city",
    "county": "district",
    "district": "district",
}


class _Payment(msgspec.Struct):
    currency: str
    total_amount: Amount
    sub_total: Amount | None = None
    shipping_fee: Amount | None = None
    seller_discount: Amount | None = None
    platform_discount: Amount | None = None
    tax: Amount | None = None


class _District(msgspec.Struct):
    address_level_name: str = ""
    address_name: str = ""
    address_level: str = ""


class _Address(msgspec.Struct):
    name: str | None = None
    phone_number: str | None = None
    full_address: str | None = None
    address_line1: str | None = None
    address_line2: str | None = None
    address_detail: str | None = None
    postal_code: str | None = None
    region_code: str | None = None
    district_info: list[_District] = []


class _Line(msgspec.Struct):
    id: str | int | None = None
    sku_id: str | int | None = None
    seller_sku: str | None = None
    product_id: str | int | None = None
    product_name: str | None = None
    sku_name: str | None = None
    sale_price: Amount | None = None
    original_price: Amount | None = None
    is_gift: bool = False


class Order(msgspec.Struct):
    payment: _Payment
    create_time: int | str
    id: str | int | None = None
    status: str | None = None
    update_time: int | str | None = None
    paid_time: int | str | None = None
    user_id: str | int | None = None
    buyer_message: str | None = None
    order_type: str | None = None
    recipient_address: _Address | None = None
    line_items: list[_Line] = []


OrderT = TypeVar("OrderT")  # what an envelope holds: the full Order, or the number alone


class _Data(msgspec.Struct, Generic[OrderT]):
    orders: list[OrderT] = []
    order_id: str | int | None = None  # a webhook's: the order it is about


class _Envelope(msgspec.Struct, Generic[OrderT]):
    """Get Order Detail's response, TikTok's error answer, or a webhook notification."""

    code: int | str | None = None
    message: str | None = None
    data: _Data[OrderT] | None = None
    type: int | str | None = None  # webhook
    tts_notification_id: str | int | None = None  # webhook


class _No(msgspec.Struct):
    id: str | int | None = None


_KEYS = (b'"data"', b'"code"', b'"tts_notification_id"')


def _unwrap(env: _Envelope[OrderT]) -> tuple[OrderT, str] | None:
    """The one order of a Get Order Detail response, after TikTok's error answer and webhooks."""
    data = env.data
    if env.tts_notification_id is not None or (data is not None and data.order_id is not None):
        kind = "" if env.type is None else f" (type {shown(env.type)})"
        about = "" if data is None or data.order_id is None else f" of order {shown(data.order_id)}"
        raise Bad(
            "$.data",
            f"a webhook notification{kind}{about} carries no order: fetch the order with Get Order"
            " Detail and send that response",
        )
    if env.code not in (None, 0, "0"):
        raise platform_error("$.code", env.code, env.message)
    if data is None:
        if env.code is None:
            return None  # no envelope: "code" or "data" was a value, or a key deeper down
        raise Bad("$.data", "the response holds no data (no order)")
    orders = data.orders
    if len(orders) != 1:
        raise Bad(
            "$.data.orders",
            f"a response with {len(orders)} orders; one document is one order: send each order"
            " as its own document (NDJSON: one per line)"
            if orders
            else "the response holds no order (an unknown order id?)",
        )
    return orders[0], "$.data.orders[0]"


def _number_at(doc: _No, root: str) -> str:
    return order_number(doc.id, root + ".id")


order_no = enveloped_order_no_reader(
    CHANNEL, bare_or_wrapped_decoder(_No, _Envelope[_No], _KEYS, _unwrap), "$.id", _number_at
)
_decode = bare_or_wrapped_decoder(Order, _Envelope[Order], _KEYS, _unwrap)


def _number(o: Order) -> str:
    return "" if o.id is None else str(o.id)


def _build(o: Order, ctx: NormaliseContext) -> CanonicalOrder:
    no = order_number(o.id, ".id")
    p = o.payment
    exp = currency_exp(p.currency, ".payment.currency")
    raw_status = o.status or ""
    if raw_status == "CANCELLED":
        status: PaymentStatus = "refunded" if o.paid_time else "unpaid"
    else:
        status = status_of(ORDER_STATUS, raw_status, ".status")
    total = minor(p.total_amount, exp, ".payment.total_amount", required=True)

    if not o.line_items:
        raise Bad(".line_items", "order has no line items")
    # (sku as sent, original price, sale price) -> [canonical, channel sku, title, qty, unit, sum]
    folded: dict[tuple[str, object, object], list] = {}
    for i, li in enumerate(o.line_items):
        try:
            sku, channel_sku = pick_sku(ctx, ".seller_sku", li.seller_sku, li.sku_id, li.id)
            key = (channel_sku, li.original_price, li.sale_price)
            acc = folded.get(key)
            if acc is None:
                sale = minor(li.sale_price, exp, ".sale_price", required=True)
                unit = (
                    minor(li.original_price, exp, ".original_price")
                    if li.original_price not in (None, "")
                    else sale
                )
                title = li.product_name or li.sku_name or ""
                folded[key] = [sku, channel_sku, title, 1, unit, sale, sale]
            else:
                acc[3] += 1
                acc[6] += acc[5]
        except Bad as exc:
            raise at(f".line_items[{i}]", exc) from None
    lines = [
        LineItem(
            sku=a[0], channel_sku=a[1], title=a[2], quantity=a[3], unit_price=a[4], line_total=a[6]
        )
        for a in folded.values()
    ]
    lines_within(lines, ".line_items", ctx)  # one entry per unit: the folded lines count

    tags = ["presale"] if o.order_type == "PRE_ORDER" else []
    created = unix_ms(o.create_time, ".create_time")
    paid_at = unix_ms(o.paid_time, ".paid_time") if o.paid_time else None
    return CanonicalOrder(
        id=global_order_id(CHANNEL, no),
        channel=CHANNEL,
        channel_order_no=no,
        created_at=created,
        updated_at=unix_ms(o.update_time, ".update_time") if o.update_time else created,
        paid_at=paid_at,
        currency=p.currency,
        total=total,
        subtotal=minor(p.sub_total, exp, ".payment.sub_total"),
        shipping=minor(p.shipping_fee, exp, ".payment.shipping_fee"),
        tax=minor(p.tax, exp, ".payment.tax"),
        discount=minor(p.seller_discount, exp, ".payment.seller_discount")
        + minor(p.platform_discount, exp, ".payment.platform_discount"),
        paid=total if status in ("paid", "refunded") else 0,
        payment_status=status,
        channel_status=raw_status,
        lines=lines,
        recipient=_recipient(o.recipient_address, ctx),
        buyer_id="" if o.user_id is None else str(o.user_id),
        tags=tags,
        note=o.buyer_message or "",
    )


def _recipient(a: _Address | None, ctx: NormaliseContext) -> Recipient:
    if a is None:
        return Recipient()
    levels = {"region": "", "city": "", "district": ""}
    for d in a.district_info:
        field = _LEVEL_FIELD.get(d.address_level_name.casefold())
        if field is None and d.address_level == "L1":
            field = "region"
        if field is not None and not levels[field]:
            levels[field] = d.address_name
    country = a.region_code or ""
    phone, masked = phone_pair(a.phone_number, country or ctx.default_country)
    return Recipient(
        name=a.name or "",
        phone=phone,
        phone_masked=masked,
        country=country,
        region=levels["region"],
        city=levels["city"],
        district=levels["district"],
        # the lines when TikTok splits them; else the whole one-string address (address_detail
        # alone is only the unit part, "Apt 5", and would lose the street)
        address=join_nonempty(a.address_line1, a.address_line2)
        or a.full_address
        or a.address_detail
        or "",
        postcode=a.postal_code or "",
    )


normalise = normaliser(CHANNEL, _decode, _build, _number, order_no)
