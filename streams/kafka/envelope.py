"""Batch envelopes: one broker message carries many records of one destination partition.

Faust costs ~300 µs per message on this machine; an envelope pays it once for up to a few hundred
orders (design.md, "Hot paths"). Records inside keep their order, envelopes are produced in
order, so per-key order within a partition holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

import msgspec

from core.dedup import DedupFacts, DedupVerdict
from core.inventory import ReservationResult, ReserveRequest, StockAlert, StockChange
from core.model import CanonicalOrder
from core.order_flow import Alert
from ext import kafka_partitions

ENVELOPE_VERSION = 1
ENVELOPE_HEADER = "orderstream-envelope"  # value: the record type, e.g. b"raw"

T = TypeVar("T")


class Origin(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Where an accepted record lives in an ingest journal, so a terminal stage can settle it."""

    journal: str
    seq: int


class RawRecord(msgspec.Struct, array_like=True, gc=False):
    channel: str
    payload: bytes
    received_at: int  # epoch ms when orderstream accepted it
    origin: Origin | None = None  # None for records a gateway produced straight to orders.raw
    ref: str = ""  # for gateway records: their position on orders.raw (see copy_ref)


class CanonicalRecord(msgspec.Struct, array_like=True, gc=False):
    order: CanonicalOrder
    received_at: int
    origin: Origin | None = None
    verdict: DedupVerdict | None = None  # set by the dedup stages; None = not yet checked
    ref: str = ""
    address_orders_24h: int = 0  # orders to this recipient in the last 24 h (recipient stage)
    recipient_key: bytes = b""  # set by the exact stage: the recipient partition's key
    facts: DedupFacts | None = None  # set by the normaliser: what the dedup stages read
    priority: bool = False  # VIP/urgent: first in every envelope, recorded with priority "high"


class RoutedRecord(msgspec.Struct, array_like=True, gc=False):
    """A :class:`CanonicalRecord` as the dedup stages read it: the same fields in the same
    places, but the order stays encoded (``msgspec.Raw``, re-sent byte for byte), and only its
    ``facts`` are decoded. The order stage decodes the order, once."""

    order: msgspec.Raw
    received_at: int
    origin: Origin | None = None
    verdict: DedupVerdict | None = None
    ref: str = ""
    address_orders_24h: int = 0
    recipient_key: bytes = b""
    facts: DedupFacts | None = None
    priority: bool = False


class HistoryFact(msgspec.Struct, array_like=True, gc=False):
    """A new order, as the history stage counts it (``orders.history``, keyed by recipient)."""

    recipient_key: bytes
    order_id: str
    created_at: int

    @property
    def id(self) -> str:
        """``core.recipient_history`` reads a fact like any dated order."""
        return self.order_id


class RecipientCount(msgspec.Struct, array_like=True, gc=False):
    """The recipient's orders in 24 h up to ``order_id``, for the order stage's rules
    (``orders.recipient_counts``, keyed by order id)."""

    order_id: str
    count: int


def copy_ref(rec: RawRecord | CanonicalRecord | RoutedRecord) -> str:
    """Which accepted copy this is: a replay of the same copy must not count as a duplicate.

    Journal entries are named by journal and sequence number; gateway records by the broker
    epoch, partition, offset and line of the orders.raw message they came in.
    """
    if rec.origin is not None:
        return f"{rec.origin.journal}:{rec.origin.seq}"
    return rec.ref


class DeadLetter(msgspec.Struct, kw_only=True):
    """What could not be processed, with the original bytes: nothing is silently dropped."""

    stage: str
    channel: str
    field: str
    reason: str
    payload: bytes
    received_at: int
    order_no: str = ""
    origin: Origin | None = None


class OrderChange(msgspec.Struct, kw_only=True, gc=False):
    """A recorded change of an order; the sync stage fans these out to subscribers."""

    order_id: str
    channel: str
    kind: str  # "created" | "updated" | "duplicate_received"
    version: int  # the order's version after this change: consumers dedupe on (order_id, version)
    state: str
    payment_status: str
    duplicate_of: str = ""  # a duplicate or suspected order: the original's global id
    duplicate_rule: str = ""  # exact_channel | exact_cross_channel | near_duplicate
    reservation: str = ""  # the stock reservation's status: pending, reserved, out_of_stock, ...
    priority: str = "normal"
    received_at: int  # when the newest version was accepted: end-to-end latency starts here
    recorded_at: int


class ReviewItem(msgspec.Struct, kw_only=True):
    """An order held for an operator (``orders.review``, ``GET /v1/review``): a suspected
    near-duplicate (``suspected_of`` names the original) or a rule's hold (e.g. a big order)."""

    order_id: str
    suspected_of: str
    reason: str  # near_duplicate, or the hold's reason
    match_score: int = 0  # near_duplicate: how sure (core.recipient_match; held at >= 6)
    match_fields: list[str] = []  # near_duplicate: what agreed, "field:outcome"
    channel: str
    channel_order_no: str
    total: int
    currency: str
    created_at: int
    held_at: int


class Settle(msgspec.Struct, array_like=True, gc=False):
    journal: str
    seqs: list[int]


def settles_for(origins: Iterable[Origin | None]) -> list[Settle]:
    """Journal seqs grouped by journal: what a terminal stage tells the journals it recorded."""
    by_journal: dict[str, list[int]] = {}
    for origin in origins:
        if origin is not None:
            by_journal.setdefault(origin.journal, []).append(origin.seq)
    return [Settle(j, seqs) for j, seqs in by_journal.items()]


class Envelope(msgspec.Struct, Generic[T], array_like=True):
    v: int
    records: list[T]


class EnvelopeCodec(Generic[T]):
    """msgpack encoder/decoder pair for one record type."""

    def __init__(self, record_type: type[T]) -> None:
        self.type = record_type
        self._enc = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder(Envelope[record_type])  # type: ignore[valid-type]

    def encode(self, records: Sequence[T]) -> bytes:
        return self._enc.encode(Envelope(ENVELOPE_VERSION, list(records)))

    def decode(self, data: bytes) -> list[T]:
        env = self._dec.decode(data)
        if env.v != ENVELOPE_VERSION:
            raise msgspec.ValidationError(f"unsupported envelope version {env.v}")
        return env.records


RAW_CODEC = EnvelopeCodec(RawRecord)
CANONICAL_CODEC = EnvelopeCodec(CanonicalRecord)
ROUTED_CODEC = EnvelopeCodec(RoutedRecord)  # the same envelopes, orders left encoded
DLQ_CODEC = EnvelopeCodec(DeadLetter)
CHANGES_CODEC = EnvelopeCodec(OrderChange)
SETTLE_CODEC = EnvelopeCodec(Settle)

REVIEW_CODEC = EnvelopeCodec(ReviewItem)
RESERVE_CODEC = EnvelopeCodec(ReserveRequest)
RESULT_CODEC = EnvelopeCodec(ReservationResult)
STOCK_CHANGE_CODEC = EnvelopeCodec(StockChange)
STOCK_ALERT_CODEC = EnvelopeCodec(StockAlert)
ALERT_CODEC = EnvelopeCodec(Alert)
HISTORY_CODEC = EnvelopeCodec(HistoryFact)
COUNT_CODEC = EnvelopeCodec(RecipientCount)


def group_by_partition(
    records: Sequence[T], keys: Sequence[bytes], partitions: int
) -> dict[int, list[T]]:
    """Split records by the destination partition Kafka's default partitioner gives their keys.

    Using Kafka's own murmur2 means a gateway producing single keyed messages and our envelopes
    agree on where a key lives.
    """
    out: dict[int, list[T]] = {}
    for rec, part in zip(records, kafka_partitions(list(keys), partitions), strict=True):
        bucket = out.get(part)
        if bucket is None:
            out[part] = [rec]
        else:
            bucket.append(rec)
    return out


def chunks(records: list[T], size: int) -> list[list[T]]:
    return [records[i : i + size] for i in range(0, len(records), size)]


# A broker message must stay under the producers' max_request_size (4 MiB): an envelope is
# split in halves until each part fits (a single record always fits: orders are bounded by
# max_order_bytes, at most 3 MiB).
ENVELOPE_MAX_BYTES = 3 * 1024 * 1024


def fitting_envelopes(codec: EnvelopeCodec[T], records: list[T]) -> list[bytes]:
    """``records`` encoded as one envelope, or as several when one would be too big."""
    data = codec.encode(records)
    if len(data) <= ENVELOPE_MAX_BYTES or len(records) == 1:
        return [data]
    mid = len(records) // 2
    return fitting_envelopes(codec, records[:mid]) + fitting_envelopes(codec, records[mid:])
