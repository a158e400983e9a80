"""Order stage: the single writer of order state, keyed (and partitioned) by global order id.

Per envelope: look up held records in one multi-get, apply ``core.order_state.record_order``,
send the changes, commit the state (one changelog message + one WriteBatch), then settle the
journal entries. Settling last means an order is trimmed from the journal only once it is
recorded; a crash anywhere before that is repaired by redelivery or replay.
"""

from __future__ import annotations

from collections import defaultdict

from core.order_state import OrderRecord, record_decoder, record_encoder, record_order
from streams.envelope import CanonicalRecord, OrderChange, Settle

STAGE = "order_state"
STORE = "orders"


class EnvelopeOutcome:
    """What one envelope produced: state updates, change events, journal settles."""

    __slots__ = ("changes", "settles", "updates")

    def __init__(self) -> None:
        self.updates: dict[bytes, bytes] = {}
        self.changes: list[OrderChange] = []
        self.settles: dict[str, list[int]] = defaultdict(list)

    def settle_list(self) -> list[Settle]:
        return [Settle(j, seqs) for j, seqs in self.settles.items()]


def record_envelope(
    records: list[CanonicalRecord], held_raw: list[bytes | None], now: int
) -> EnvelopeOutcome:
    out = EnvelopeOutcome()
    current: dict[str, OrderRecord | None] = {}
    for rec, raw in zip(records, held_raw, strict=True):
        oid = rec.order.id
        if oid not in current:
            current[oid] = None if raw is None else record_decoder.decode(raw)
        result = record_order(current[oid], rec.order, rec.received_at, now)
        if result is not None:
            new, kind = result
            current[oid] = new
            out.updates[oid.encode()] = record_encoder.encode(new)
            out.changes.append(
                OrderChange(
                    order_id=oid,
                    channel=new.order.channel,
                    kind=kind,
                    version=new.version,
                    state=new.state,
                    payment_status=new.order.payment_status,
                    received_at=rec.received_at,
                    recorded_at=now,
                )
            )
        if rec.origin is not None:
            out.settles[rec.origin.journal].append(rec.origin.seq)
    return out


def settles_of(records: list[CanonicalRecord]) -> list[Settle]:
    """Settles for an envelope already applied before a crash: re-sending them is harmless."""
    by_journal: dict[str, list[int]] = defaultdict(list)
    for rec in records:
        if rec.origin is not None:
            by_journal[rec.origin.journal].append(rec.origin.seq)
    return [Settle(j, seqs) for j, seqs in by_journal.items()]
