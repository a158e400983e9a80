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

from core.dedup import exact_dedup, exact_store_key, recipient_dedup, recipient_lookup_keys
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
    for rec, verdict in zip(records, out.verdicts, strict=True):
        rec.verdict = verdict
    return StageOutcome(records, out.route_keys, out.updates)


def recipient_keys(records: list[CanonicalRecord]) -> list[bytes]:
    return recipient_lookup_keys([r.order for r in _new(records)])


def _new(records: list[CanonicalRecord]) -> list[CanonicalRecord]:
    return [r for r in records if r.verdict is None or r.verdict.kind == "new"]


def recipient_envelope(
    records: list[CanonicalRecord],
    held: dict[bytes, bytes | None],
    expiring: list[tuple[bytes, bytes]],
    window_ms: int,
    now_ms: int | None = None,
) -> tuple[StageOutcome, int]:
    fresh = _new(records)
    out = recipient_dedup([r.order for r in fresh], held, expiring, window_ms, now_ms=now_ms)
    for rec, verdict in zip(fresh, out.verdicts, strict=True):
        rec.verdict = verdict
    keys = [r.order.id.encode() for r in records]
    return StageOutcome(records, keys, out.updates), out.pruned
