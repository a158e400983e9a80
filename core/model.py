"""The canonical order: the one shape every channel's payload is turned into.

Why these representations:
- times are UTC epoch milliseconds (ints), so ordering and windows never depend on a time zone;
- money is integer minor units plus an ISO 4217 code, so sums are exact (no float cents);
- the global id is derived from (channel, channel order no), so a replayed or re-sent payload maps
  to the same id and every later stage can be idempotent on it.
"""

from __future__ import annotations

import hashlib
from typing import Literal

import msgspec

SCHEMA_VERSION = 1

Channel = Literal["shopify", "tiktok", "amazon", "taobao", "jd", "pdd", "ministore"]
CHANNELS: tuple[str, ...] = ("shopify", "tiktok", "amazon", "taobao", "jd", "pdd", "ministore")

# Payment status is a closed set on purpose: a new status (e.g. a presale deposit) must be added
# here and handled explicitly by every rule and timer, never fall into an "else" branch.
PaymentStatus = Literal[
    "unpaid",  # order placed, nothing paid yet
    "deposit_paid",  # presale: deposit paid, balance due later
    "partially_paid",  # part of the amount paid (instalments, mixed tender)
    "paid",  # fully paid
    "partially_refunded",
    "refunded",
]
PAYMENT_STATUSES: tuple[str, ...] = PaymentStatus.__args__  # type: ignore[attr-defined]


class LineItem(msgspec.Struct, frozen=True, kw_only=True):
    """One order line; ``sku`` is canonical (through the alias table), ``channel_sku`` as sent."""

    sku: str
    channel_sku: str
    title: str = ""
    quantity: int
    unit_price: int  # minor units of the order currency
    line_total: int  # minor units, after line discounts


class Recipient(msgspec.Struct, frozen=True, kw_only=True):
    """Where the order ships to.

    ``phone`` is E.164 (``+8613812345678``) or "" when the channel masks or omits it; a masked
    phone is kept in ``phone_masked`` (e.g. ``138****5678``) because its visible digits still help
    recognise the same recipient.
    """

    name: str = ""
    phone: str = ""
    phone_masked: str = ""
    country: str = ""  # ISO 3166-1 alpha-2
    region: str = ""  # state / province
    city: str = ""
    district: str = ""
    address: str = ""  # street lines joined with ", "
    postcode: str = ""


class CanonicalOrder(msgspec.Struct, kw_only=True):
    """An order as every stage after normalisation sees it."""

    id: str  # global id, see global_order_id()
    channel: str
    channel_order_no: str
    created_at: int  # epoch ms UTC, when the buyer placed it
    updated_at: int  # epoch ms UTC, the channel's last change; newer wins on re-delivery
    paid_at: int | None = None
    currency: str  # ISO 4217
    total: int  # minor units: what the buyer owes in all
    subtotal: int = 0
    shipping: int = 0
    tax: int = 0
    discount: int = 0
    paid: int = 0  # minor units received so far (deposit, partial or full)
    payment_status: PaymentStatus
    channel_status: str = ""  # the channel's own status word, kept for operators
    lines: list[LineItem]
    recipient: Recipient
    buyer_id: str = ""
    tags: list[str] = []
    warehouse: str = ""  # named by the order, "" when routing decides
    note: str = ""
    schema: int = SCHEMA_VERSION


class Rejection(msgspec.Struct, frozen=True, kw_only=True):
    """Why a payload could not become a canonical order: a value, not an exception.

    ``field`` is a JSON path into the channel payload (``$.line_items[0].price``) so the gateway
    owner can fix the sender; it ends up in the dead-letter topic and in HTTP 4xx bodies.
    """

    channel: str
    field: str
    reason: str
    order_no: str = ""


def global_order_id(channel: str, channel_order_no: str) -> str:
    """Deterministic id: the same (channel, order no) always maps to the same id.

    96 bits of BLAKE2b keep collisions negligible (~1e-11 at a billion orders); the ``os_`` prefix
    makes the id recognisable in logs and URLs.
    """
    digest = hashlib.blake2b(
        f"{channel}\x1f{channel_order_no}".encode(), digest_size=12
    ).hexdigest()
    return f"os_{digest}"
