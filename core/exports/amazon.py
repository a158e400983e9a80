"""Amazon's order reports (Seller Central → Reports → Order Reports; flat files, tab-separated).

The "All Orders" report and the "Unshipped Orders" report both list one row per order item,
keyed by ``amazon-order-id``; the latter adds the recipient (``recipient-name``,
``ship-address-1..3``, ``ship-phone-number``). Rows become what the SP-API serves from getOrder
and getOrderItems, the shape the amazon adapter reads, so an imported order gets the same global
id as its API copy. ``item-price`` is for the whole quantity, as ``ItemPrice`` is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.exports._cells import Columns, RowError, amount, iso_ms, per_row, quantity, zoned_time

CHANNEL = "amazon"
KEY = "order_id"
ALIASES: dict[str, tuple[str, ...]] = {
    "order_id": ("amazon-order-id", "order-id"),
    "purchase_date": ("purchase-date",),
    "updated": ("last-updated-date",),
    "status": ("order-status",),
    "fulfillment": ("fulfillment-channel",),
    "currency": ("currency",),
    "sku": ("sku",),
    "asin": ("asin",),
    "title": ("product-name",),
    "quantity": ("quantity", "quantity-purchased"),
    "item_price": ("item-price",),
    "item_tax": ("item-tax",),
    "shipping_price": ("shipping-price",),
    "shipping_tax": ("shipping-tax",),
    "item_discount": ("item-promotion-discount",),
    "ship_discount": ("ship-promotion-discount",),
    "item_id": ("order-item-id",),
    "recipient": ("recipient-name", "buyer-name"),
    "address1": ("ship-address-1",),
    "address2": ("ship-address-2",),
    "address3": ("ship-address-3",),
    "city": ("ship-city",),
    "state": ("ship-state",),
    "postcode": ("ship-postal-code",),
    "country": ("ship-country",),
    "phone": ("ship-phone-number", "buyer-phone-number"),
}
REQUIRED = ("order_id", "purchase_date", "quantity")

STATUS = {
    "pending": "Pending",
    "unshipped": "Unshipped",
    "partiallyshipped": "PartiallyShipped",
    "shipping": "PartiallyShipped",
    "shipped": "Shipped",
    "cancelled": "Canceled",
    "canceled": "Canceled",
    "unfulfillable": "Unfulfillable",
    "pendingavailability": "PendingAvailability",
}
FULFILMENT = {"amazon": "AFN", "afn": "AFN", "merchant": "MFN", "mfn": "MFN"}


def _money(cols: Columns, row: Sequence[str], field: str, currency: str) -> dict[str, str] | None:
    if not cols.text(row, field):
        return None
    return {"CurrencyCode": currency, "Amount": amount(cols, row, field)}


def build(cols: Columns, rows: list[tuple[int, list[str]]]) -> dict[str, Any]:
    """One order's item rows → ``{"order": getOrder payload, "items": OrderItems}``."""
    _, head = rows[0]
    order_id = cols.required(head, "order_id")
    purchased = zoned_time(cols, head, "purchase_date", required=True)
    raw_status = cols.text(head, "status") or (
        "Unshipped" if cols.has("address1") else "Pending"  # the Unshipped report has none
    )
    status = STATUS.get(raw_status.replace(" ", "").lower())
    if status is None:
        raise RowError(cols.name("status"), f"{raw_status!r}: not an Amazon order-status")
    currency = cols.text(head, "currency").upper()
    if not currency and any(cols.text(r, "item_price") for _, r in rows):
        raise RowError(cols.name("currency"), "empty; the items' prices need their currency")
    order: dict[str, Any] = {
        "AmazonOrderId": order_id,
        "PurchaseDate": purchased,
        "LastUpdateDate": zoned_time(cols, head, "updated") or purchased,
        "OrderStatus": status,
        "FulfillmentChannel": FULFILMENT.get(cols.text(head, "fulfillment").lower(), "MFN"),
        "ShippingAddress": {
            "Name": cols.text(head, "recipient") or None,
            "AddressLine1": cols.text(head, "address1") or None,
            "AddressLine2": cols.text(head, "address2") or None,
            "AddressLine3": cols.text(head, "address3") or None,
            "City": cols.text(head, "city") or None,
            "StateOrRegion": cols.text(head, "state") or None,
            "PostalCode": cols.text(head, "postcode") or None,
            "CountryCode": cols.text(head, "country") or None,
            "Phone": cols.text(head, "phone") or None,
        },
    }

    def item(row: Sequence[str]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "QuantityOrdered": quantity(cols, row, "quantity"),
            "SellerSKU": cols.text(row, "sku") or None,
            "ASIN": cols.text(row, "asin") or None,
            "Title": cols.text(row, "title") or None,
            "OrderItemId": cols.text(row, "item_id") or None,
        }
        for key, field in (
            ("ItemPrice", "item_price"),
            ("ItemTax", "item_tax"),
            ("ShippingPrice", "shipping_price"),
            ("ShippingTax", "shipping_tax"),
            ("PromotionDiscount", "item_discount"),
            ("ShippingDiscount", "ship_discount"),
        ):
            money = _money(cols, row, field, currency)
            if money is not None:
                out[key] = money
        return out

    return {"order": order, "items": per_row(rows, item)}


def updated_ms(doc: dict[str, Any]) -> int:
    return iso_ms(doc["order"]["LastUpdateDate"])
