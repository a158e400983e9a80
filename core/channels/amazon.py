"""Amazon SP-API Orders v0: an order and its items, which Amazon serves from two calls.

Two shapes are accepted:

- what our puller posts: ``{"order": <getOrder payload>, "items": [<getOrderItems OrderItems>]}``;
- the two responses as a gateway forwards them, unchanged:
  ``{"order": <getOrder response>, "items": <getOrderItems response>}``, i.e. ``{"order":
  {"payload": {...}}, "items": {"payload": {"AmazonOrderId": ..., "OrderItems": [...]}}}``.
  Both halves must be responses then. The items must be all of them (no ``NextToken``: a gateway
  that pages concatenates the pages' ``OrderItems``) and of the same order (``AmazonOrderId``):
  an order recorded with part or another order's items would reserve the wrong stock.

SP-API's error answer ``{"errors": [{"code", "message", "details"}]}`` (at the root, or as either
half) is refused naming the error. ``ItemPrice`` is the price of the whole quantity; the per-unit
price is derived (rounded half-up when it does not divide evenly, while ``line_total`` stays exact).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from core.channels._common import (
    Amount,
    Bad,
    at,
    bare_or_wrapped_decoder,
    currency_exp,
    enveloped_order_no_reader,
    iso_ms,
    join_nonempty,
    lines_within,
    minor,
    normaliser,
    order_number,
    phone_pair,
    pick_sku,
    platform_error,
    quantity,
    required,
    shown,
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
    """What our puller posts: the getOrder payload and getOrderItems' OrderItems."""

    order: Order | None = None
    items: list[_Item] = []


OrderT = TypeVar("OrderT")  # the order Struct: the full Order, or the number alone
ItemT = TypeVar("ItemT")  # the item Struct: a full item, or left raw (the door reads no item)


class _SpError(msgspec.Struct):
    code: str | int | None = None
    message: str | None = None
    details: str | None = None


class _OrderResponse(msgspec.Struct, Generic[OrderT]):
    payload: OrderT | None = None
    errors: list[_SpError] | None = None


class _ItemsPage(msgspec.Struct, Generic[ItemT]):
    OrderItems: list[ItemT] = []
    AmazonOrderId: str | None = None
    NextToken: str | None = None


class _ItemsResponse(msgspec.Struct, Generic[ItemT]):
    payload: _ItemsPage[ItemT] | None = None
    errors: list[_SpError] | None = None


class Responses(msgspec.Struct, Generic[OrderT, ItemT]):
    """getOrder's and getOrderItems' responses side by side, or one error answer alone.

    ``items`` also takes a list (left raw) so that an order of the puller's shape in which
    "payload" or "errors" happens to occur still decodes here: ``_unwrap`` then hands it back.
    """

    order: _OrderResponse[OrderT] | None = None
    items: _ItemsResponse[ItemT] | list[msgspec.Raw] | None = None
    errors: list[_SpError] | None = None


class _NoInner(msgspec.Struct):
    AmazonOrderId: str | None = None


class _No(msgspec.Struct):
    order: _NoInner | None = None


_KEYS = (b'"payload"', b'"errors"')


def _refuse(errors: list[_SpError] | None, field: str) -> None:
    """SP-API answered ``errors`` instead of a payload: quote the first, count the rest."""
    if errors:
        first = errors[0]
        more = f"and {len(errors) - 1} more" if len(errors) > 1 else ""
        detail = "; ".join(p for p in (first.details, more) if p)
        raise platform_error(field, first.code, first.message, detail)


def _unwrap(r: Responses[OrderT, ItemT]) -> tuple[Responses[OrderT, ItemT], str] | None:
    """The two responses, once neither is an error, both are there, and they belong together;
    None for the puller's shape (the order itself and a list of items)."""
    _refuse(r.errors, "$.errors")
    order, items = r.order, r.items
    if type(items) is not _ItemsResponse:
        if order is None or (order.payload is None and order.errors is None):
            return None
        _refuse(order.errors, "$.order.errors")
        raise Bad(
            "$.items",
            ("missing" if items is None else "a list")
            + ": with `order` the getOrder response, `items` must be the getOrderItems response"
            ' ({"payload": {"OrderItems": [...]}})',
        )
    if order is not None:
        _refuse(order.errors, "$.order.errors")
    _refuse(items.errors, "$.items.errors")
    if order is None or order.payload is None:
        raise Bad(
            "$.order" if order is None else "$.order.payload",
            "missing: with `items` the getOrderItems response, `order` must be the getOrder"
            ' response ({"payload": {"AmazonOrderId": ...}})',
        )
    page = required(items.payload, "$.items.payload", "getOrderItems payload")
    if page.NextToken:
        raise Bad(
            "$.items.payload.NextToken",
            "more items follow on further pages: send the order with all its items (the"
            " pages' OrderItems in one list, without NextToken)",
        )
    own, theirs = order.payload.AmazonOrderId, page.AmazonOrderId  # type: ignore[attr-defined]
    if type(own) is str and type(theirs) is str and own.strip() != theirs.strip():
        raise Bad(
            "$.items.payload.AmazonOrderId",
            f"these are the items of order {shown(theirs)!r}, not of {shown(own)!r}",
        )
    return r, "$"


def _order_of(d: Any) -> tuple[Any, str]:
    """(the order, its path) in either shape; ``_unwrap`` made sure a response holds one."""
    if type(d) is Responses:
        return d.order.payload, ".order.payload"
    return d.order, ".order"


def _items_of(d: Doc | Responses[Order, _Item]) -> tuple[list[_Item], str]:
    if type(d) is Responses:
        return d.items.payload.OrderItems, ".items.payload.OrderItems"  # type: ignore[union-attr]
    return d.items, ".items"  # type: ignore[return-value]


def _number_at(doc: _No | Responses[_NoInner, msgspec.Raw], root: str) -> str:
    order, at = _order_of(doc)
    order = required(order, root + at, "order")
    return order_number(order.AmazonOrderId, root + at + ".AmazonOrderId")


order_no = enveloped_order_no_reader(
    CHANNEL,
    bare_or_wrapped_decoder(_No, Responses[_NoInner, msgspec.Raw], _KEYS, _unwrap),
    "$.order.AmazonOrderId",
    _number_at,
)
_decode = bare_or_wrapped_decoder(Doc, Responses[Order, _Item], _KEYS, _unwrap)


def _number(d: Doc | Responses[Order, _Item]) -> str:
    o, _ = _order_of(d)
    return (o.AmazonOrderId or "") if o is not None else ""


def _money(m: _Money | None, currency: str, exp: int, field: str) -> int:
    if m is None:
        return 0
    if m.CurrencyCode != currency:
        raise Bad(field + ".CurrencyCode", f"{m.CurrencyCode!r} differs from order {currency!r}")
    try:
        return minor(m.Amount, exp, ".Amount")
    except Bad as exc:
        raise at(field, exc) from None


def _build(d: Doc | Responses[Order, _Item], ctx: NormaliseContext) -> CanonicalOrder:
    o, oat = _order_of(d)  # where the order and the items are: the two shapes differ
    items, iat = _items_of(d)
    o = required(o, oat, "order")
    no = order_number(o.AmazonOrderId, oat + ".AmazonOrderId")
    raw_status = o.OrderStatus or ""
    status = status_of(ORDER_STATUS, raw_status, oat + ".OrderStatus")
    if not items:
        raise Bad(iat, "order has no items")
    lines_within(items, iat, ctx)

    # Pending orders may come without OrderTotal; the items then carry the currency.
    if o.OrderTotal is not None:
        currency = o.OrderTotal.CurrencyCode
        exp = currency_exp(currency, oat + ".OrderTotal.CurrencyCode")
    else:
        priced = next((it.ItemPrice for it in items if it.ItemPrice is not None), None)
        if priced is None:
            raise Bad(oat + ".OrderTotal", "missing, and no item prices to derive it from")
        currency = priced.CurrencyCode
        exp = currency_exp(currency, iat + "[0].ItemPrice.CurrencyCode")

    lines = []
    subtotal = shipping = tax = discount = 0
    for i, it in enumerate(items):
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
            raise at(f"{iat}[{i}]", exc) from None
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
        total = minor(o.OrderTotal.Amount, exp, oat + ".OrderTotal.Amount", required=True)
    else:
        total = max(0, subtotal + shipping + tax - discount)

    tags = []
    if o.OrderType == "Preorder" or raw_status == "PendingAvailability":
        tags.append("presale")
    if o.FulfillmentChannel == "AFN":
        tags.append("fba")  # Amazon ships it: our warehouses must not

    created = iso_ms(o.PurchaseDate, oat + ".PurchaseDate")
    return CanonicalOrder(
        id=global_order_id(CHANNEL, no),
        channel=CHANNEL,
        channel_order_no=no,
        created_at=created,
        updated_at=iso_ms(o.LastUpdateDate, oat + ".LastUpdateDate")
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
