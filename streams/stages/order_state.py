"""Order stage: the single writer of order state, keyed (and partitioned) by global order id.

Per envelope: look up held records in one multi-get, apply ``core.order_state.record_order``,
send the changes, commit the state (one changelog message + one WriteBatch), then settle the
journal entries. Settling last means an order is trimmed from the journal only once it is
recorded; a crash anywhere before that is repaired by redelivery or replay.
"""

from __future__ import annotations

from core.order_state import OrderRecord, record_decoder, record_encoder, record_order
from streams.envelope import CanonicalRecord, OrderChange, Settle, settles_for

STAGE = "order_state"
STORE = "orders"


class EnvelopeOutcome:
    """What one envelope produced: state updates, change events, journal settles."""

    __slots__ = ("changes", "settles", "updates")

    def __init__(self) -> None:
        self.updates: dict[bytes, bytes] = {}
        self.changes: list[OrderChange] = []
        self.settles: list[Settle] = []


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
    out.settles = settles_of(records)
    return out


def settles_of(records: list[CanonicalRecord]) -> list[Settle]:
    """Every record settles its journal entry, recorded now, before, or found stale."""
    return settles_for(r.origin for r in records)
