"""Shopify's orders CSV export (Admin → Orders → Export): one row per line item.

The order's own columns are filled on its first row only; later rows of the same order repeat
``Name`` and carry the line. ``Id`` is the order id that webhooks and the Admin API carry, so an
imported order gets the same global id as its webhook copy. Times are written in the shop's zone
with an offset (``2026-11-23 10:00:00 -0500``). The export has no ``updated_at``: the newest of
created, paid, fulfilled and cancelled stands in, so a re-export after fulfilment or a cancel is
newer than the webhook copy and updates it, while an unchanged one is a duplicate.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from core.exports._cells import (
    Columns,
    RowError,
    amount,
    iso_ms,
    latest,
    per_row,
    quantity,
    zoned_time,
)

CHANNEL = "shopify"
KEY = "id"
ALIASES: dict[str, tuple[str, ...]] = {
    "id": ("Id",),
    "name": ("Name",),
    "email": ("Email",),
    "financial_status": ("Financial Status",),
    "paid_at": ("Paid at",),
    "fulfillment_status": ("Fulfillment Status",),
    "fulfilled_at": ("Fulfilled at",),
    "currency": ("Currency",),
    "subtotal": ("Subtotal",),
    "shipping": ("Shipping",),
    "taxes": ("Taxes",),
    "total": ("Total",),
    "discount": ("Discount Amount",),
    "created_at": ("Created at",),
    "cancelled_at": ("Cancelled at",),
    "outstanding": ("Outstanding Balance",),
    "notes": ("Notes",),
    "tags": ("Tags",),
    "phone": ("Phone",),
    "li_quantity": ("Lineitem quantity",),
    "li_name": ("Lineitem name",),
    "li_price": ("Lineitem price",),
    "li_sku": ("Lineitem sku",),
    "li_discount": ("Lineitem discount",),
    **{
        f"{side}_{part}": (f"{side.title()} {title}",)
        for side in ("shipping", "billing")
        for part, title in (
            ("name", "Name"),
            ("address1", "Address1"),
            ("address2", "Address2"),
            ("city", "City"),
            ("zip", "Zip"),
            ("province", "Province"),
            ("country", "Country"),
            ("phone", "Phone"),
        )
    },
}
_ADDRESS = {
    side: [
        (f, f"{side}_{f}")
        for f in ("name", "address1", "address2", "city", "zip", "province", "country", "phone")
    ]
    for side in ("shipping", "billing")
}
REQUIRED = ("id", "name", "created_at", "currency", "total", "li_quantity", "li_price")


def _address(cols: Columns, row: Sequence[str], side: str) -> dict[str, str] | None:
    got = {f: cols.text(row, key) for f, key in _ADDRESS[side]}
    if not any(got.values()):
        return None
    got["country_code"] = got.pop("country")
    return got


def build(cols: Columns, rows: list[tuple[int, list[str]]]) -> dict[str, Any]:
    """One order's rows → the Admin API order object the shopify adapter reads."""
    _, head = rows[0]
    order_id = cols.required(head, "id")
    if not order_id.isdigit():
        raise RowError(cols.name("id"), f"{order_id!r}: Shopify order ids are numbers")
    created = zoned_time(cols, head, "created_at", required=True)
    paid = zoned_time(cols, head, "paid_at")
    cancelled = zoned_time(cols, head, "cancelled_at")
    currency = cols.required(head, "currency").upper()
    order: dict[str, Any] = {
        "id": int(order_id),
        "name": cols.text(head, "name"),
        "email": cols.text(head, "email"),
        "created_at": created,
        "updated_at": latest(created, paid, zoned_time(cols, head, "fulfilled_at"), cancelled),
        "currency": currency,
        "total_price": amount(cols, head, "total", required=True),
        "subtotal_price": amount(cols, head, "subtotal"),
        "total_tax": amount(cols, head, "taxes"),
        "total_discounts": amount(cols, head, "discount"),
        "total_shipping_price_set": {
            "shop_money": {"amount": amount(cols, head, "shipping"), "currency_code": currency}
        },
        "financial_status": cols.text(head, "financial_status").lower() or "pending",
        "fulfillment_status": cols.text(head, "fulfillment_status").lower() or None,
        "tags": cols.text(head, "tags"),
        "note": cols.text(head, "notes"),
        "phone": cols.text(head, "phone") or None,
    }
    if paid:
        order["processed_at"] = paid
    if cancelled:
        order["cancelled_at"] = cancelled
    if cols.has("outstanding") and cols.text(head, "outstanding"):
        order["total_outstanding"] = amount(cols, head, "outstanding")
    for side in ("shipping", "billing"):
        addr = _address(cols, head, side)
        if addr is not None:
            order[f"{side}_address"] = addr
    order["line_items"] = per_row(rows, lambda row: _line(cols, row))
    return order


def _line(cols: Columns, row: Sequence[str]) -> dict[str, Any]:
    return {
        "quantity": quantity(cols, row, "li_quantity"),
        "price": amount(cols, row, "li_price", required=True),
        "sku": cols.text(row, "li_sku") or None,
        "name": cols.text(row, "li_name"),
        "title": cols.text(row, "li_name"),
        "total_discount": amount(cols, row, "li_discount"),
    }


def updated_ms(order: dict[str, Any]) -> int:
    return iso_ms(order["updated_at"])
