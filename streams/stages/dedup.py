"""The two dedup stages' glue: which records go where, keyed so that their state is local.

Exact stage (``orders.canonical``, partition = global id = channel + order no): the seen-id
store says whether a copy is new, an update or a repeat. New orders move on to the recipient
partition of their route key. Later copies go to the recipient partition the *first* copy
went to, so they can never overtake it on the way to the order stage (one producer, one
partition, in order) even if the buyer edited the address in between.

Recipient stage (``orders.recipient``, partition = the order's block, country + city, plus its
amount and SKUs: ``core.dedup.route_key``, so every rendering of one purchase meets there):
checks new orders against the order-no+phone index (cross-channel copies) and scores them
against the near-duplicate window (``core.recipient_match``), passes later copies through
untouched, and sends everything to ``orders.unique`` keyed by global id. Each new order's
history fact goes to ``orders.history`` (keyed by recipient), where the history stage counts
the recipient's orders in 24 h (``streams.stages.history``).
"""

from __future__ import annotations

from typing import Any

import msgspec

from core.dedup import (
    DELETE_RANGE,
    DedupFacts,
    dedup_facts,
    exact_dedup,
    recipient_dedup,
    recipient_lookup_keys,
    route_key,
)
from core.model import CanonicalOrder
from core.recipient_history import HISTORY, KEPT_KEY
from streams.kafka.envelope import CanonicalRecord, HistoryFact, RoutedRecord, copy_ref

# The stages take either record type: the worker reads RoutedRecords (the order stays encoded
# and only its facts are read); tests and benches may hand in decoded CanonicalRecords.
Record = CanonicalRecord | RoutedRecord
_order_dec = msgspec.msgpack.Decoder(CanonicalOrder)

EXACT_STAGE = "exact_dedup"
EXACT_STORE = "seen"
RECIPIENT_STAGE = "recipient_dedup"
RECIPIENT_STORE = "recipients"
HISTORY_END = b"hist;"  # the end of the 24 h history rows this stage's store once held


class StageOutcome:
    __slots__ = ("history", "keys", "records", "uncomparable", "updates")

    def __init__(
        self,
        records: list[Record],
        keys: list[bytes],
        updates: list[tuple[bytes, bytes | None]],
        uncomparable: int = 0,
        history: list[HistoryFact] | None = None,
    ) -> None:
        self.records = records  # with verdicts, to send on
        self.keys = keys  # their destination partition keys
        self.updates = updates  # for the stage's store
        self.uncomparable = uncomparable  # new orders showing no name or phone to compare
        self.history = history or []  # new orders for the history stage, keyed by recipient


def facts_of(rec: Record) -> DedupFacts:
    """What the dedup stages read of a record's order (derived once if a producer left it out)."""
    facts = rec.facts
    if facts is None:
        order = rec.order
        if isinstance(order, msgspec.Raw):
            order = _order_dec.decode(order)
        facts = rec.facts = dedup_facts(order)
    return facts


def exact_keys(records: list[Record]) -> list[bytes]:
    return [facts_of(r).id.encode() for r in records]


def exact_envelope(records: list[Record], held: list[bytes | None]) -> StageOutcome:
    out = exact_dedup([facts_of(r) for r in records], held, [copy_ref(r) for r in records])
    for rec, verdict, rkey in zip(records, out.verdicts, out.route_keys, strict=True):
        rec.verdict = verdict
        rec.recipient_key = rkey
    return StageOutcome(records, out.route_keys, out.updates)


def recipient_keys(records: list[Record], now: int, window_ms: int, grace_ms: int) -> list[bytes]:
    fresh = _new(records)
    orders = [facts_of(r) for r in fresh]
    blocks = [_block(r) for r in fresh]
    window = recipient_lookup_keys(
        orders, blocks, clock=now, window_ms=window_ms, grace_ms=grace_ms
    )
    return [*window, KEPT_KEY]


def _block(rec: Record) -> bytes:
    """The route key stage 1 sent the record with (carried, not recomputed): a later copy
    keeps its first copy's, even if the buyer moved the delivery in between."""
    return rec.recipient_key or route_key(facts_of(rec))


def _new(records: list[Record]) -> list[Record]:
    return [r for r in records if r.verdict is None or r.verdict.kind == "new"]


def recipient_envelope(
    records: list[Record],
    held: dict[bytes, bytes | None],
    window_ms: int,
    grace_ms: int,
    now_ms: int,
) -> tuple[StageOutcome, int]:
    """Verdicts for new orders, and their facts for the history stage (which counts them)."""
    fresh = _new(records)
    orders = [facts_of(r) for r in fresh]
    blocks = [_block(r) for r in fresh]
    out = recipient_dedup(orders, held, window_ms, grace_ms=grace_ms, now_ms=now_ms, rkeys=blocks)
    for rec, verdict in zip(fresh, out.verdicts, strict=True):
        rec.verdict = verdict
    keys = [facts_of(r).id.encode() for r in records]
    # a cross-channel duplicate is the same purchase relayed again, not another order to the
    # recipient: it is not counted (a suspected near-duplicate may be a real second order)
    history = [
        HistoryFact(o.rkey, o.id, o.created_at)
        for o, v in zip(orders, out.verdicts, strict=True)
        if v.kind != "duplicate"
    ]
    updates = out.updates
    if held.get(KEPT_KEY) is not None:
        # a store from when this stage counted the 24 h histories: they are the history
        # stage's now, and go in one range delete
        updates = [(DELETE_RANGE + HISTORY, HISTORY_END), (KEPT_KEY, None), *updates]
    return StageOutcome(records, keys, updates, out.uncomparable, history), out.pruned


def recipient_step(
    store: Any, records: list[Record], window_ms: int, grace_ms: int, now: int
) -> tuple[StageOutcome, int]:
    """The recipient stage on one partition batch: one multi-get, the verdicts, the updates
    (forgetting is range deletes among them: nothing to scan)."""
    keys = recipient_keys(records, now, window_ms, grace_ms)
    held = dict(zip(keys, store.get_many(keys), strict=True))
    return recipient_envelope(records, held, window_ms, grace_ms, now)
