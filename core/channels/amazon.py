"""Amazon SP-API Orders v0: ``{"order": <getOrder payload>, "items": [<OrderItems>]}``.

Amazon splits an order over two calls, so our puller posts both together. ``ItemPrice`` is the
price of the whole quantity; the per-unit price is derived (rounded half-up when it does not
divide evenly, while ``line_total`` stays exact).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from core.channels._common import (
    Amount,
    Bad,
    at,
    bare_decoder,
    currency_exp,
    iso_ms,
    join_nonempty,
    lines_within,
    minor,
    normaliser,
    order_no_reader,
    order_number,
    phone_pair,
    pick_sku,
    quantity,
    required,
    status_of,
)
from core.model import CanonicalOrder, LineItem, PaymentStatus, Recipient, global_order_id

if TYPE_CHECKING:
    from core.channels import NormaliseContext

CHANNEL = "amazon"

# Amazon charges the buyer when the order ships, and an order is only released to the seller
# (Unshipped) once payment is authorised: so Unshipped onwards is paid, and Canceled (which can
# only happen before shipment) was never charged.
ORDER_STATUS: dict[str, PaymentStatus] = {
    "PendingAvailability": "unpaid",  # pre-order not yet released
    "Pending": "unpaid",
    "Unshipped": "paid",
    "PartiallyShipped": "paid",
    "Shipped": "paid",
    "InvoiceUnconfirmed": "paid",
    "Canceled": "unpaid",
    "Unfulfillable": "unpaid",
}


class _Money(msgspec.Struct):
    CurrencyCode: str
    Amount: Amount


class _Address(msgspec.Struct):
    Name: str | None = None
    AddressLine1: str | None = None
    AddressLine2: str | None = None
    AddressLine3: str | None = None
    City: str | None = None
    County: str | None = None
    District: str | None = None
    StateOrRegion: str | None = None
    PostalCode: str | None = None
    CountryCode: str | None = None
    Phone: str | None = None


class Order(msgspec.Struct):
    PurchaseDate: str
    AmazonOrderId: str | None = None
    LastUpdateDate: str | None = None
    OrderStatus: str | None = None
    OrderTotal: _Money | None = None
    OrderType: str | None = None
    FulfillmentChannel: str | None = None
    ShippingAddress: _Address | None = None


class _Item(msgspec.Struct):
    QuantityOrdered: int
    ASIN: str | None = None
    SellerSKU: str | None = None
    OrderItemId: str | None = None
    Title: str | None = None
    ItemPrice: _Money | None = None
    ShippingPrice: _Money | None = None
    ItemTax: _Money | None = None
    ShippingTax: _Money | None = None
    PromotionDiscount: _Money | None = None
    ShippingDiscount: _Money | None = None


class Doc(msgspec.Struct):
    order: Order | None = None
    items: list[_Item] = []


class _NoInner(msgspec.Struct):
    AmazonOrderId: str | None = None


class _No(msgspec.Struct):
    order: _NoInner | None = None


def _number_in(doc: _No) -> str:
    order = required(doc.order, "$.order", "order")
    return order_number(order.AmazonOrderId, "$.order.AmazonOrderId")


order_no = order_no_reader(CHANNEL, _No, "$.order.AmazonOrderId", _number_in)
_decode = bare_decoder(Doc)


def _number(d: Doc) -> str:
    return (d.order.AmazonOrderId or "") if d.order is not None else ""


def _money(m: _Money | None, currency: str, exp: int, field: str) -> int:
    if m is None:
        return 0
    if m.CurrencyCode != currency:
        raise Bad(field + ".CurrencyCode", f"{m.CurrencyCode!r} differs from order {currency!r}")
    try:
        return minor(m.Amount, exp, ".Amount")
    except Bad as exc:
        raise at(field, exc) from None


def _build(d: Doc, ctx: NormaliseContext) -> CanonicalOrder:
    o = required(d.order, ".order", "order")
    no = order_number(o.AmazonOrderId, ".order.AmazonOrderId")
    raw_status = o.OrderStatus or ""
    status = status_of(ORDER_STATUS, raw_status, ".order.OrderStatus")
    if not d.items:
        raise Bad(".items", "order has no items")
    lines_within(d.items, ".items", ctx)

    # Pending orders may come without OrderTotal; the items then carry the currency.
    if o.OrderTotal is not None:
        currency = o.OrderTotal.CurrencyCode
        exp = currency_exp(currency, ".order.OrderTotal.CurrencyCode")
    else:
        priced = next((it.ItemPrice for it in d.items if it.ItemPrice is not None), None)
        if priced is None:
            raise Bad(".order.OrderTotal", "missing, and no item prices to derive it from")
        currency = priced.CurrencyCode
        exp = currency_exp(currency, ".items[0].ItemPrice.CurrencyCode")

    lines = []
    subtotal = shipping = tax = discount = 0
    for i, it in enumerate(d.items):
        try:
            qty = quantity(it.QuantityOrdered, ".QuantityOrdered")
            sku, channel_sku = pick_sku(ctx, ".SellerSKU", it.SellerSKU, it.ASIN, it.OrderItemId)
            price = _money(it.ItemPrice, currency, exp, ".ItemPrice")
            promo = _money(it.PromotionDiscount, currency, exp, ".PromotionDiscount")
            shipping += _money(it.ShippingPrice, currency, exp, ".ShippingPrice")
            tax += _money(it.ItemTax, currency, exp, ".ItemTax")
            tax += _money(it.ShippingTax, currency, exp, ".ShippingTax")
            discount += promo + _money(it.ShippingDiscount, currency, exp, ".ShippingDiscount")
        except Bad as exc:
            raise at(f".items[{i}]", exc) from None
        subtotal += price
        lines.append(
            LineItem(
                sku=sku,
                channel_sku=channel_sku,
                title=it.Title or "",
                quantity=qty,
                unit_price=(2 * price + qty) // (2 * qty),
                line_total=max(0, price - promo),
            )
        )

    if o.OrderTotal is not None:
        total = minor(o.OrderTotal.Amount, exp, ".order.OrderTotal.Amount", required=True)
    else:
        total = max(0, subtotal + shipping + tax - discount)

    tags = []
    if o.OrderType == "Preorder" or raw_status == "PendingAvailability":
        tags.append("presale")
    if o.FulfillmentChannel == "AFN":
        tags.append("fba")  # Amazon ships it: our warehouses must not

    created = iso_ms(o.PurchaseDate, ".order.PurchaseDate")
    return CanonicalOrder(
        id=global_order_id(CHANNEL, no),
        channel=CHANNEL,
        channel_order_no=no,
        created_at=created,
        updated_at=iso_ms(o.LastUpdateDate, ".order.LastUpdateDate")
        if o.LastUpdateDate
        else created,
        currency=currency,
        total=total,
        subtotal=subtotal,
        shipping=shipping,
        tax=tax,
        discount=discount,
        paid=total if status == "paid" else 0,
        payment_status=status,
        channel_status=raw_status,
        lines=lines,
        recipient=_recipient(o.ShippingAddress, ctx),
        tags=tags,
    )


def _recipient(a: _Address | None, ctx: NormaliseContext) -> Recipient:
    if a is None:
        return Recipient()
    country = a.CountryCode or ""
    phone, masked = phone_pair(a.Phone, country or ctx.default_country)
    return Recipient(
        name=a.Name or "",
        phone=phone,
        phone_masked=masked,
        country=country,
        region=a.StateOrRegion or "",
        city=a.City or "",
        district=a.District or a.County or "",
        address=join_nonempty(a.AddressLine1, a.AddressLine2, a.AddressLine3),
        postcode=a.PostalCode or "",
    )


normalise = normaliser(CHANNEL, _decode, _build, _number, order_no)
