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


_ID_HEX = frozenset("0123456789abcdef")


def is_global_order_id(text: str) -> bool:
    """Whether ``text`` has the shape :func:`global_order_id` gives (``os_`` + 24 hex digits):
    anything else can be refused at once, without asking a worker."""
    return len(text) == 27 and text.startswith("os_") and _ID_HEX.issuperset(text[3:])


# ------------------------------------------------------------------------------ hostile input
# Bounds every canonical order satisfies. Past them a payload is refused (dead-lettered with the
# field and the limit), never truncated: a silently shortened address or SKU would ship or
# reserve the wrong thing. The numbers are fixed because every stage relies on them (msgpack and
# RocksDB want 64-bit ints; JSON clients read amounts as doubles, exact up to 2**53).

MAX_MINOR = 2**53 - 1  # any amount, in minor units (9e13 dollars: no real order comes close)
MAX_QUANTITY = 1_000_000  # units on one line
MAX_TIME_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z, the last instant ISO 8601 has
MAX_ORDER_NO_CHARS = 128  # a channel order number (it names the order in ids, keys and logs)
MAX_TAGS = 250  # Shopify's own limit per order; the other channels send a few at most


class Limits(msgspec.Struct, frozen=True, kw_only=True):
    """The per-order and per-request bounds an operator may tune (settings of the same names).

    ``max_order_bytes`` and ``max_batch_lines`` are checked at the door (HTTP ingest) and
    ``max_order_bytes`` again by the normaliser (gateway messages never pass the door); the
    others when an order is normalised.
    """

    max_batch_lines: int = 5000  # NDJSON lines in one HTTP request (413 past it)
    max_order_bytes: int = 256 * 1024  # one order's JSON
    max_order_lines: int = 500  # line items in one order
    max_string_chars: int = 1000  # any text field: names, address parts, SKUs, titles
    max_note_chars: int = 5000  # the buyer's note / message (gift messages run long)


DEFAULT_LIMITS = Limits()


def limit_problem(order: CanonicalOrder, limits: Limits = DEFAULT_LIMITS) -> tuple[str, str] | None:
    """The first bound ``order`` breaks as (canonical field path, reason), or None.

    Adapters check most values where they read them (naming the channel's own field); this is
    the backstop over the finished order: sums and products of valid values (a line total, a
    derived total), strings joined from several fields, and anything an adapter missed.
    """
    lines = order.lines
    if len(lines) > limits.max_order_lines:
        return "lines", (
            f"{len(lines)} lines; at most {limits.max_order_lines} per order (max_order_lines)"
        )
    if len(order.tags) > MAX_TAGS:
        return "tags", f"{len(order.tags)} tags; at most {MAX_TAGS} per order"
    n = limits.max_string_chars
    r = order.recipient
    texts = (
        order.channel_status,
        order.buyer_id,
        order.warehouse,
        r.name,
        r.phone,
        r.phone_masked,
        r.country,
        r.region,
        r.city,
        r.district,
        r.address,
        r.postcode,
        *order.tags,
    )
    if max(map(len, texts)) > n:
        for name, value in zip(_TEXT_FIELDS, texts, strict=False):
            if len(value) > n:
                return name, _too_long(value, n, "max_string_chars")
        for i, tag in enumerate(order.tags):
            if len(tag) > n:
                return f"tags[{i}]", _too_long(tag, n, "max_string_chars")
    if len(order.note) > limits.max_note_chars:
        return "note", _too_long(order.note, limits.max_note_chars, "max_note_chars")
    if len(order.channel_order_no) > MAX_ORDER_NO_CHARS:
        return "channel_order_no", _too_long(order.channel_order_no, MAX_ORDER_NO_CHARS, "")
    amounts = (order.total, order.subtotal, order.shipping, order.tax, order.discount, order.paid)
    if not (0 <= min(amounts) and max(amounts) <= MAX_MINOR):
        for name, value in zip(_AMOUNT_FIELDS, amounts, strict=True):
            if not 0 <= value <= MAX_MINOR:
                return name, _out_of_range(value)
    times = (order.created_at, order.updated_at, order.paid_at or 0)
    if not (0 <= min(times) and max(times) <= MAX_TIME_MS):
        for name, value in zip(("created_at", "updated_at", "paid_at"), times, strict=True):
            if not 0 <= value <= MAX_TIME_MS:
                return name, f"time {value} ms is outside 1970..9999"
    for i, ln in enumerate(lines):
        if len(ln.sku) > n or len(ln.channel_sku) > n or len(ln.title) > n:
            for name in ("sku", "channel_sku", "title"):
                value = getattr(ln, name)
                if len(value) > n:
                    return f"lines[{i}].{name}", _too_long(value, n, "max_string_chars")
        if not 0 < ln.quantity <= MAX_QUANTITY:
            return f"lines[{i}].quantity", f"quantity {ln.quantity} is outside 1..{MAX_QUANTITY}"
        if not (0 <= ln.unit_price <= MAX_MINOR and 0 <= ln.line_total <= MAX_MINOR):
            name = "unit_price" if not 0 <= ln.unit_price <= MAX_MINOR else "line_total"
            return f"lines[{i}].{name}", _out_of_range(getattr(ln, name))
    return None


_TEXT_FIELDS = (
    "channel_status",
    "buyer_id",
    "warehouse",
    "recipient.name",
    "recipient.phone",
    "recipient.phone_masked",
    "recipient.country",
    "recipient.region",
    "recipient.city",
    "recipient.district",
    "recipient.address",
    "recipient.postcode",
)
_AMOUNT_FIELDS = ("total", "subtotal", "shipping", "tax", "discount", "paid")


def _too_long(value: str, limit: int, setting: str) -> str:
    named = f" ({setting})" if setting else ""
    return f"{len(value):,} characters; at most {limit:,}{named}"


def _out_of_range(value: int) -> str:
    shown = str(value) if value.bit_length() < 200 else f"a {value.bit_length()}-bit number"
    return f"amount {shown} (minor units) is outside 0..{MAX_MINOR} (2**53 - 1)"
