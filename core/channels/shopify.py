"""Shopify Admin REST API ``Order``: the webhook body (``orders/create``, ``orders/updated``...) is
the bare order, ``GET .../orders/{id}.json`` answers ``{"order": ...}``; both are accepted. Its
error answer ``{"errors": ...}`` (a message, or messages per field) is refused quoting it.

The channel order number is the numeric ``id``, not the display ``name`` ("#1001"): names are
per-shop and merchants can re-prefix them, ids never change.
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
    iso_ms,
    iso_ms_opt,
    join_nonempty,
    lines_within,
    minor,
    normaliser,
    order_number,
    phone_pair,
    pick_sku,
    platform_error,
    quantity,
    status_of,
)
from core.model import CanonicalOrder, LineItem, PaymentStatus, Recipient, global_order_id

if TYPE_CHECKING:
    from core.channels import NormaliseContext

CHANNEL = "shopify"

# ``authorized`` counts as paid: the authorisation guarantees the funds and merchants with manual
# capture fulfil such orders. ``voided`` releases the hold, so nothing is owed any more: refunded.
# ``expired`` means an authorisation lapsed uncaptured: the money is still owed.
FINANCIAL_STATUS: dict[str, PaymentStatus] = {
    "pending": "unpaid",
    "authorized": "paid",
    "partially_paid": "partially_paid",
    "paid": "paid",
    "partially_refunded": "partially_refunded",
    "refunded": "refunded",
    "voided": "refunded",
    "expired": "unpaid",
}
_FULLY_RECEIVED = frozenset(("authorized", "paid", "partially_refunded", "refunded"))


class _Money(msgspec.Struct):
    amount: Amount
    currency_code: str = ""


class _MoneySet(msgspec.Struct):
    shop_money: _Money


class _DiscountAllocation(msgspec.Struct):
    amount: Amount


class _Line(msgspec.Struct):
    quantity: int
    price: Amount
    id: int | None = None
    variant_id: int | None = None
    product_id: int | None = None
    sku: str | None = None
    title: str | None = None
    name: str | None = None
    total_discount: Amount | None = None
    discount_allocations: list[_DiscountAllocation] = []


class _ShippingLine(msgspec.Struct):
    price: Amount = "0"


class _Address(msgspec.Struct):
    name: str | None = None
    first_name: str | None = None
    last_name: str | None = None
    address1: str | None = None
    address2: str | None = None
    city: str | None = None
    province: str | None = None
    country_code: str | None = None
    zip: str | None = None
    phone: str | None = None


class _Customer(msgspec.Struct):
    id: int | None = None
    phone: str | None = None


class Order(msgspec.Struct):
    created_at: str
    currency: str
    total_price: Amount
    id: int | str | None = None
    name: str | None = None
    updated_at: str | None = None
    processed_at: str | None = None
    cancelled_at: str | None = None
    subtotal_price: Amount | None = None
    total_tax: Amount | None = None
    total_discounts: Amount | None = None
    total_outstanding: Amount | None = None
    total_shipping_price_set: _MoneySet | None = None
    shipping_lines: list[_ShippingLine] = []
    financial_status: str | None = None
    fulfillment_status: str | None = None
    tags: str | None = None
    note: str | None = None
    phone: str | None = None
    customer: _Customer | None = None
    shipping_address: _Address | None = None
    billing_address: _Address | None = None
    line_items: list[_Line] = []


OrderT = TypeVar("OrderT")  # what an envelope holds: the full Order, or the number alone
_NO_ERRORS = msgspec.Raw(b"null")


class _Envelope(msgspec.Struct, Generic[OrderT]):
    """``GET .../orders/{id}.json``'s answer: the order, or ``errors`` (any JSON: kept raw)."""

    order: OrderT | None = None
    errors: msgspec.Raw = _NO_ERRORS


class _No(msgspec.Struct):
    id: int | str | None = None


_KEYS = (b'"order"', b'"errors"')
_ERRORS_SHOWN = 400  # bytes of the raw ``errors`` value a refusal quotes
_decode_text = msgspec.json.Decoder(str).decode


def _unwrap(env: _Envelope[OrderT]) -> tuple[OrderT, str] | None:
    errors = memoryview(env.errors)
    if bytes(errors[:4]) != b"null":
        raise platform_error("$.errors", _said(errors))
    return None if env.order is None else (env.order, "$.order")


def _said(errors: memoryview) -> str:
    """Shopify's ``errors``: a message ("Not Found") as text, anything else as its JSON."""
    if len(errors) <= _ERRORS_SHOWN and bytes(errors[:1]) == b'"':
        try:
            return _decode_text(errors)
        except (msgspec.DecodeError, UnicodeDecodeError):
            pass
    return bytes(errors[:_ERRORS_SHOWN]).decode("utf-8", "replace")


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
    exp = currency_exp(o.currency, ".currency")
    fin = o.financial_status or ""
    status = status_of(FINANCIAL_STATUS, fin, ".financial_status")
    total = minor(o.total_price, exp, ".total_price", required=True)

    if o.total_shipping_price_set is not None:
        shipping = minor(
            o.total_shipping_price_set.shop_money.amount,
            exp,
            ".total_shipping_price_set.shop_money.amount",
        )
    else:
        shipping = 0
        for i, sl in enumerate(o.shipping_lines):
            try:
                shipping += minor(sl.price, exp, ".price")
            except Bad as exc:
                raise at(f".shipping_lines[{i}]", exc) from None

    if not o.line_items:
        raise Bad(".line_items", "order has no line items")
    lines_within(o.line_items, ".line_items", ctx)
    lines = []
    for i, li in enumerate(o.line_items):
        try:
            lines.append(_line(li, exp, ctx))
        except Bad as exc:
            raise at(f".line_items[{i}]", exc) from None

    if fin in _FULLY_RECEIVED:
        paid = total
    elif o.total_outstanding is not None:
        paid = max(0, total - minor(o.total_outstanding, exp, ".total_outstanding"))
    else:
        paid = 0

    tags = [t for t in (s.strip() for s in o.tags.split(",")) if t] if o.tags else []
    if o.cancelled_at:
        tags.append("cancelled")

    addr = o.shipping_address or o.billing_address
    customer = o.customer
    if addr is not None:
        country = addr.country_code or ""
        raw_phone = addr.phone or o.phone or (customer.phone if customer else None)
        phone, masked = phone_pair(raw_phone, country or ctx.default_country)
        recipient = Recipient(
            name=addr.name or " ".join(p for p in (addr.first_name, addr.last_name) if p),
            phone=phone,
            phone_masked=masked,
            country=country,
            region=addr.province or "",
            city=addr.city or "",
            address=join_nonempty(addr.address1, addr.address2),
            postcode=addr.zip or "",
        )
    else:
        phone, masked = phone_pair(o.phone, ctx.default_country)
        recipient = Recipient(phone=phone, phone_masked=masked)

    created = iso_ms(o.created_at, ".created_at")
    return CanonicalOrder(
        id=global_order_id(CHANNEL, no),
        channel=CHANNEL,
        channel_order_no=no,
        created_at=created,
        updated_at=iso_ms(o.updated_at, ".updated_at") if o.updated_at else created,
        paid_at=iso_ms_opt(o.processed_at, ".processed_at") if paid else None,
        currency=o.currency,
        total=total,
        subtotal=minor(o.subtotal_price, exp, ".subtotal_price"),
        shipping=shipping,
        tax=minor(o.total_tax, exp, ".total_tax"),
        discount=minor(o.total_discounts, exp, ".total_discounts"),
        paid=paid,
        payment_status=status,
        channel_status=fin,
        lines=lines,
        recipient=recipient,
        buyer_id=str(customer.id) if customer is not None and customer.id is not None else "",
        tags=tags,
        note=o.note or "",
    )


def _line(li: _Line, exp: int, ctx: NormaliseContext) -> LineItem:
    qty = quantity(li.quantity, ".quantity")
    sku, channel_sku = pick_sku(ctx, ".sku", li.sku, li.variant_id, li.product_id, li.id)
    unit = minor(li.price, exp, ".price", required=True)
    if li.discount_allocations:
        discount = 0
        for j, d in enumerate(li.discount_allocations):
            try:
                discount += minor(d.amount, exp, ".amount")
            except Bad as exc:
                raise at(f".discount_allocations[{j}]", exc) from None
    else:
        discount = minor(li.total_discount, exp, ".total_discount")
    line_total = unit * qty - discount
    if line_total < 0:
        raise Bad(".discount_allocations", "line discount exceeds the line price")
    return LineItem(
        sku=sku,
        channel_sku=channel_sku,
        title=li.title or li.name or "",
        quantity=qty,
        unit_price=unit,
        line_total=line_total,
    )


normalise = normaliser(CHANNEL, _decode, _build, _number, order_no)
