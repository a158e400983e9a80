"""The two dedup stages' glue: which records go where, keyed so that their state is local.

Exact stage (``orders.canonical``, partition = global id = channel + order no): the seen-id
store says whether a copy is new, an update or a repeat. New orders move on to the recipient
partition of their recipient key. Later copies go to the recipient partition the *first* copy
went to, so they can never overtake it on the way to the order stage (one producer, one
partition, in order) even if the buyer edited the address in between.

Recipient stage (``orders.recipient``, partition = recipient key): checks new orders against
the order-no+phone index (cross-channel copies) and the near-duplicate window, passes later
copies through untouched, and sends everything to ``orders.unique`` keyed by global id.
"""

from __future__ import annotations

from typing import Any

from core.dedup import (
    EXPIRY_PREFIX,
    exact_dedup,
    exact_store_key,
    expiry_scan_stop,
    recipient_dedup,
    recipient_key,
    recipient_lookup_keys,
)
from core.recipient_history import EXPIRY as HISTORY_EXPIRY
from core.recipient_history import count_recent, due_bound, history_keys
from streams.envelope import CanonicalRecord

EXACT_STAGE = "exact_dedup"
EXACT_STORE = "seen"
RECIPIENT_STAGE = "recipient_dedup"
RECIPIENT_STORE = "recipients"
PRUNE_BATCH = 2000  # window entries pruned per envelope at most: pruning keeps pace, never stalls


class StageOutcome:
    __slots__ = ("keys", "records", "updates")

    def __init__(
        self,
        records: list[CanonicalRecord],
        keys: list[bytes],
        updates: list[tuple[bytes, bytes | None]],
    ) -> None:
        self.records = records  # with verdicts, to send on
        self.keys = keys  # their destination partition keys
        self.updates = updates  # for the stage's store


def exact_keys(records: list[CanonicalRecord]) -> list[bytes]:
    return [exact_store_key(r.order) for r in records]


def exact_envelope(records: list[CanonicalRecord], held: list[bytes | None]) -> StageOutcome:
    out = exact_dedup([r.order for r in records], held)
    for rec, verdict, rkey in zip(records, out.verdicts, out.route_keys, strict=True):
        rec.verdict = verdict
        rec.recipient_key = rkey
    return StageOutcome(records, out.route_keys, out.updates)


def recipient_keys(records: list[CanonicalRecord]) -> list[bytes]:
    fresh = _new(records)
    orders = [r.order for r in fresh]
    rkeys = [_rkey(r) for r in fresh]
    return recipient_lookup_keys(orders, rkeys) + history_keys(orders, rkeys)


def _rkey(rec: CanonicalRecord) -> bytes:
    """The recipient key stage 1 routed the record by (carried, not recomputed)."""
    return rec.recipient_key or recipient_key(rec.order)


def _new(records: list[CanonicalRecord]) -> list[CanonicalRecord]:
    return [r for r in records if r.verdict is None or r.verdict.kind == "new"]


def recipient_envelope(
    records: list[CanonicalRecord],
    held: dict[bytes, bytes | None],
    expiring: list[tuple[bytes, bytes]],
    window_ms: int,
    grace_ms: int,
    now_ms: int | None = None,
    history_due: list[tuple[bytes, bytes]] | None = None,
) -> tuple[StageOutcome, int]:
    """Verdicts for new orders, and each new order's recipient history (orders in 24 h)."""
    fresh = _new(records)
    orders = [r.order for r in fresh]
    rkeys = [_rkey(r) for r in fresh]
    out = recipient_dedup(
        orders, held, expiring, window_ms, grace_ms=grace_ms, now_ms=now_ms, rkeys=rkeys
    )
    counts, history_updates = count_recent(orders, held, history_due or [], rkeys=rkeys)
    for rec, verdict, n in zip(fresh, out.verdicts, counts, strict=True):
        rec.verdict = verdict
        rec.address_orders_24h = n
    keys = [r.order.id.encode() for r in records]
    return StageOutcome(records, keys, out.updates + history_updates), out.pruned


def recipient_step(
    store: Any, records: list[CanonicalRecord], window_ms: int, grace_ms: int, now: int
) -> tuple[StageOutcome, int]:
    """The recipient stage on one partition batch: one multi-get, two range scans of what is
    due (window entries, 24 h histories), the verdicts, the store updates."""
    keys = recipient_keys(records)
    held = dict(zip(keys, store.get_many(keys), strict=True))
    expiring = store.scan_range(EXPIRY_PREFIX, expiry_scan_stop(held, now), PRUNE_BATCH)
    history_due = store.scan_range(HISTORY_EXPIRY, due_bound(now), PRUNE_BATCH)
    return recipient_envelope(records, held, expiring, window_ms, grace_ms, now, history_due)
