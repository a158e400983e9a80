"""Order stage: the single writer of order state, keyed (and partitioned) by global order id.

Inputs, each through ``core.order_flow``: orders with their dedup verdict (``orders.unique``),
events (``orders.events``, HTTP, SLA timers), reservation results and recipient counts (the
history stage's, for the rules that read them). Per envelope: look up the
held records in one multi-get, fold every input into them, send the changes, alerts, reviews
and reservation requests, commit the state (records, audit entries, deadline index: one
changelog message + one WriteBatch), then settle the journal entries. Settling last means an
order is trimmed from the journal only once it is recorded; a crash anywhere before that is
repaired by redelivery or replay.
"""

from __future__ import annotations

import time

import msgspec

from core.audit import AuditEntry, audit_decoder, audit_encoder, audit_key
from core.inventory import ReservationResult, ReserveRequest
from core.order_flow import (
    Alert,
    Flow,
    FlowContext,
    on_channel_update,
    on_created,
    on_deadline,
    on_event,
    on_recipient_count,
)
from core.order_state import (
    OrderRecord,
    full_record,
    order_head,
    record_decoder,
    record_encoder,
    record_order,
    stored_decoder,
)
from core.saga import apply_result
from core.sla import Breach, Deadline, deadline_key, encode_deadline
from core.state_machine import OrderEvent, Refusal
from streams.kafka.envelope import (
    CanonicalRecord,
    OrderChange,
    RecipientCount,
    ReviewItem,
    Settle,
    copy_ref,
    settles_for,
)

STAGE = "order_state"
STORE = "orders"
REVIEW_PREFIX = b"rv:"  # orders held as suspected duplicates, until an operator decides

review_encoder = msgspec.msgpack.Encoder()
review_decoder = msgspec.msgpack.Decoder(ReviewItem)

# The reservation outbox: every request to a SKU partition is kept here, in the same commit as
# the state that asked for it, until that partition's answer comes back. The broker between
# the two stages may lose messages (the embedded one keeps them in memory only, and a new broker
# epoch starts empty): a request sent in an earlier epoch and still unanswered is sent again at
# once, and any request unanswered for RESEND_AFTER_MS (a safety net; never under a mere
# backlog) too. The ledger answers a repeat as it answered the first (reserve, release and
# deduct are idempotent per order, SKU and attempt).
OUTBOX_PREFIX = b"ob:"
RESEND_AFTER_MS = 600_000
_EPOCH_LEN = 32
outbox_epoch = ""  # the broker epoch this worker runs in (set by the app at start)
_request_encoder = msgspec.msgpack.Encoder()
_request_decoder = msgspec.msgpack.Decoder(ReserveRequest)


def outbox_key(order_id: str, sku: str, op: str, attempt: int) -> bytes:
    return b"%s%s\x00%s\x00%s\x00%d" % (
        OUTBOX_PREFIX,
        order_id.encode(),
        sku.encode(),
        op.encode(),
        attempt,
    )


def _stamp(sent_at: int, epoch: str) -> bytes:
    return sent_at.to_bytes(8, "big") + epoch.encode()[:_EPOCH_LEN].ljust(_EPOCH_LEN)


def outbox_entry(req: ReserveRequest, sent_at: int, epoch: str = "") -> tuple[bytes, bytes]:
    key = outbox_key(req.order_id, req.sku, req.op, req.attempt)
    return key, _stamp(sent_at, epoch or outbox_epoch) + _request_encoder.encode(req)


def due_resends(
    rows: list[tuple[bytes, bytes]], now: int, epoch: str = ""
) -> tuple[list[ReserveRequest], list[tuple[bytes, bytes | None]]]:
    """Outbox rows sent in another broker epoch, or unanswered for RESEND_AFTER_MS: the
    requests to send again, and the rows stamped with this send."""
    epoch = epoch or outbox_epoch
    mine = epoch.encode()[:_EPOCH_LEN].ljust(_EPOCH_LEN)
    requests: list[ReserveRequest] = []
    updates: list[tuple[bytes, bytes | None]] = []
    head = 8 + _EPOCH_LEN
    for key, value in rows:
        old_epoch = value[8:head] != mine
        if not old_epoch and int.from_bytes(value[:8], "big") > now - RESEND_AFTER_MS:
            continue
        requests.append(_request_decoder.decode(value[head:]))
        updates.append((key, _stamp(now, epoch) + value[head:]))
    return requests, updates


# A recipient count that overtook its order (the count's path is shorter than the order's
# through orders.unique under a backlog) waits here until the order is created, which deletes
# it. It cannot normally outlive that: a count exists only for an order the recipient stage
# sent to orders.unique in the same commit, and the journal replays an order until it is
# recorded. What an unforeseen loss might leave is deleted after PENDING_COUNT_TTL_MS by
# ``stale_pending_counts``. Value: 8-byte stored-at ms + 4-byte count.
PENDING_COUNT_PREFIX = b"hcount:"
PENDING_COUNT_TTL_MS = 86_400_000


def pending_count_key(order_id: str) -> bytes:
    return PENDING_COUNT_PREFIX + order_id.encode()


def pending_count(raw: bytes | None) -> int:
    return 0 if raw is None else int.from_bytes(raw[8:12], "big")


def stale_pending_counts(rows: list[tuple[bytes, bytes]], now: int) -> list[bytes]:
    """Pending counts kept longer than PENDING_COUNT_TTL_MS: their order never came."""
    return [k for k, v in rows if int.from_bytes(v[:8], "big") < now - PENDING_COUNT_TTL_MS]


def review_key(order_id: str) -> bytes:
    return REVIEW_PREFIX + order_id.encode()


def review_item(rec: OrderRecord) -> ReviewItem:
    o = rec.order
    return ReviewItem(
        order_id=o.id,
        suspected_of=rec.duplicate_of if rec.hold_reason == rec.duplicate_rule else "",
        reason=rec.hold_reason,
        match_score=rec.match_score,
        match_fields=rec.match_fields,
        channel=o.channel,
        channel_order_no=o.channel_order_no,
        total=o.total,
        currency=o.currency,
        created_at=o.created_at,
        held_at=rec.changed_at,
    )


class EnvelopeOutcome:
    """What one envelope produced: state updates and everything that goes out."""

    __slots__ = (
        "alerts",
        "breaches",
        "changes",
        "kpis",
        "records",
        "refusals",
        "requests",
        "reviews",
        "settles",
        "updates",
    )

    def __init__(self) -> None:
        # encoded once, at the end of the envelope; a record whose order was not touched may
        # stay a StoredRecord (order still encoded)
        self.records: dict[str, OrderRecord] = {}
        self.updates: dict[bytes, bytes | None] = {}
        self.changes: list[OrderChange] = []
        self.reviews: list[ReviewItem] = []
        self.requests: list[ReserveRequest] = []
        self.alerts: list[Alert] = []
        self.breaches: list[Breach] = []
        self.kpis: list[str] = []
        self.refusals: list[tuple[OrderEvent, Refusal | str]] = []
        self.settles: list[Settle] = []

    def put_record(self, rec: OrderRecord, oid: str = "") -> None:
        self.records[oid or rec.order.id] = rec

    def store_updates(self, sent_at: int = 0) -> list[tuple[bytes, bytes | None]]:
        """Everything to write: each touched record encoded once, however often it moved, and
        every request sent, kept in the outbox until it is answered."""
        out = [(oid.encode(), record_encoder.encode(r)) for oid, r in self.records.items()]
        sent_at = sent_at or time.time_ns() // 1_000_000
        outbox = [outbox_entry(r, sent_at) for r in self.requests]
        return out + list(self.updates.items()) + outbox

    def take(self, flow: Flow) -> None:
        """A flow's consequences: its record, audit entries, deadline index, requests, alerts."""
        self.put_record(flow.record)
        for entry in flow.audit:
            self.updates[audit_key(entry.order_id, entry.seq)] = audit_encoder.encode(entry)
        for key in flow.deadline_deletes:
            self.updates[key] = None
        for d in flow.deadline_puts:
            self.updates[deadline_key(d)] = encode_deadline(d)
        self.requests += flow.requests
        self.alerts += flow.alerts
        self.kpis += flow.kpis


def change_of(rec: OrderRecord, kind: str, received_at: int, now: int) -> OrderChange:
    order = order_head(rec)
    return OrderChange(
        order_id=order.id,
        channel=order.channel,
        kind=kind,
        version=rec.version,
        state=rec.state,
        payment_status=order.payment_status,
        received_at=received_at,
        recorded_at=now,
        duplicate_of=rec.duplicate_of,
        duplicate_rule="exact_channel" if kind == "duplicate_received" else rec.duplicate_rule,
        reservation=rec.reservation.status if rec.reservation is not None else "",
        priority=rec.priority,
    )


class _Held:
    """Decoded records of one envelope, decoded once however many inputs touch an order."""

    __slots__ = ("current",)

    def __init__(self) -> None:
        self.current: dict[str, OrderRecord | None] = {}

    def get(self, oid: str, raw: bytes | None) -> OrderRecord | None:
        if oid not in self.current:
            self.current[oid] = None if raw is None else record_decoder.decode(raw)
        rec = self.current[oid]
        if rec is not None and not isinstance(rec, OrderRecord):
            rec = self.current[oid] = full_record(rec)
        return rec

    def get_stored(self, oid: str, raw: bytes | None) -> OrderRecord | None:
        """The record as it is (a ``StoredRecord`` unless this envelope decoded it already)."""
        if oid not in self.current:
            self.current[oid] = None if raw is None else stored_decoder.decode(raw)
        return self.current[oid]


def record_envelope(
    records: list[CanonicalRecord],
    held_raw: list[bytes | None],
    now: int,
    ctx: FlowContext | None = None,
    pending: dict[str, int] | None = None,
) -> EnvelopeOutcome:
    """Orders with their verdicts. Without ``ctx`` (a bench of the recording alone) no flow.

    ``pending``: recipient counts that came before their order (order id -> count), applied
    when it is created; their side keys are deleted."""
    out = EnvelopeOutcome()
    held = _Held()
    for rec, raw in zip(records, held_raw, strict=True):
        oid = rec.order.id
        old = held.get(oid, raw)
        v = rec.verdict
        result = record_order(
            old,
            rec.order,
            rec.received_at,
            now,
            ref=copy_ref(rec),
            verdict_kind=v.kind if v is not None else "new",
            original_id=v.original_id if v is not None else "",
            rule=v.rule if v is not None else "",
            match=(v.score, v.agreed) if v is not None else (0, ()),
        )
        if result is None:
            continue
        new, kind = result
        if kind == "created" and rec.priority:
            new.priority = "high"  # came on the priority lane or with a priority tag
        if ctx is not None and kind == "created":
            waiting = pending.get(oid, 0) if pending else 0
            if waiting:
                out.updates[pending_count_key(oid)] = None
            flow = on_created(new, ctx, now, address_orders_24h=waiting)
            new = flow.record
            out.take(flow)
        elif ctx is not None and kind == "updated" and old is not None:
            flow = on_channel_update(old, new, ctx, now)
            new = flow.record
            out.take(flow)
        else:
            out.put_record(new)
        held.current[oid] = new
        out.changes.append(change_of(new, kind, rec.received_at, now))
        _review_index(out, old.state if old is not None else "", new)
    out.settles = settles_of(records)
    return out


def apply_events(
    events: list[OrderEvent], held_raw: list[bytes | None], now: int, ctx: FlowContext
) -> EnvelopeOutcome:
    """Events in order; a refused one is reported (HTTP 409 / dead letter), never applied."""
    out = EnvelopeOutcome()
    held = _Held()
    for event, raw in zip(events, held_raw, strict=True):
        rec = held.get(event.order_id, raw)
        if rec is None:
            out.refusals.append((event, "no recorded order with this id"))
            continue
        flow = on_event(rec, event, ctx, now)
        if flow is None:
            continue  # an event id already applied: a redelivery
        if isinstance(flow, Refusal):
            out.refusals.append((event, flow))
            continue
        _moved(out, held, rec, flow, now)
    return out


def apply_recipient_counts(
    counts: list[RecipientCount],
    held_raw: list[bytes | None],
    pending_raw: list[bytes | None],
    now: int,
    ctx: FlowContext,
) -> EnvelopeOutcome:
    """The history stage's counts: a recorded order runs the rules that read the count (once
    per count: a redelivery is a no-op); an order not yet recorded gets the count kept under
    its side key, for ``record_envelope`` to apply when it is created."""
    out = EnvelopeOutcome()
    held = _Held()
    for c, raw, waiting in zip(counts, held_raw, pending_raw, strict=True):
        rec = held.get(c.order_id, raw)
        if rec is None:
            key = pending_count_key(c.order_id)
            kept = out.updates.get(key, waiting)
            if c.count > pending_count(kept):
                out.updates[key] = now.to_bytes(8, "big") + c.count.to_bytes(4, "big")
            continue
        flow = on_recipient_count(rec, c.count, ctx, now)
        if flow is not None:
            _moved(out, held, rec, flow, now)
    return out


def fire_deadlines(
    due: list[Deadline], held_raw: list[bytes | None], now: int, ctx: FlowContext
) -> EnvelopeOutcome:
    out = EnvelopeOutcome()
    held = _Held()
    for d, raw in zip(due, held_raw, strict=True):
        rec = held.get(d.order_id, raw)
        if rec is None:
            out.updates[deadline_key(d)] = None  # its order is gone: drop the timer
            continue
        flow, breach = on_deadline(rec, d, ctx, now)
        if breach is not None:
            out.breaches.append(breach)
        _moved(out, held, rec, flow, now)
    return out


def _moved(out: EnvelopeOutcome, held: _Held, old: OrderRecord, flow: Flow, now: int) -> None:
    new = flow.record
    if flow.audit or new.reservation != old.reservation or new.priority != old.priority:
        # anything recorded (a transition, a rule firing, a breach, a carrier update) is a new
        # version: consumers of orders.changes dedupe on (order_id, version)
        new.version += 1
        new.changed_at = now
        out.changes.append(change_of(new, "event", new.received_at, now))
    _review_index(out, old.state, new)
    held.current[new.order.id] = new
    out.take(flow)


def _review_index(out: EnvelopeOutcome, old_state: str, new: OrderRecord) -> None:
    """Every held order is on the review queue (suspected duplicates, rule holds) until it
    leaves ``held``; entering it publishes the item on ``orders.review``."""
    if new.state == "held" and old_state != "held":
        item = review_item(new)
        out.reviews.append(item)
        out.updates[review_key(new.order.id)] = review_encoder.encode(item)
    elif old_state == "held" and new.state != "held":
        out.updates[review_key(new.order.id)] = None


def apply_reservation_results(
    results: list[ReservationResult], held_raw: list[bytes | None], now: int, ctx: FlowContext
) -> EnvelopeOutcome:
    """Fold the SKU partitions' answers into each order's saga.

    A refused line moves a live order to ``out_of_stock`` through the state machine
    (``stock_refused``: audited, alerted) and the saga releases the lines already granted, so
    the order is never half-reserved. A change is published when the saga's status moves.
    """
    out = EnvelopeOutcome()
    held = _Held()
    for res, raw in zip(results, held_raw, strict=True):
        oid = res.order_id
        out.updates[outbox_key(oid, res.sku, res.op, res.attempt)] = None  # answered
        # the order itself stays encoded unless the state machine needs it (out of stock)
        rec = held.get_stored(oid, raw)
        if rec is None or rec.reservation is None:
            continue  # cannot happen in order; a result for an unknown order changes nothing
        saga, releases = apply_result(rec.reservation, res)
        out.requests += releases
        if saga == rec.reservation:
            continue
        moved = saga.status != rec.reservation.status
        if moved and saga.status == "out_of_stock":
            rec = held.get(oid, raw)
            assert rec is not None
        rec2 = msgspec.structs.replace(rec, reservation=saga)
        if moved and saga.status == "out_of_stock":
            event = OrderEvent(
                order_id=oid,
                event="stock_refused",
                actor="system",
                source="inventory",
                reason="out of stock: " + ", ".join(saga.refused),
                at=now,
                event_id=f"stock_refused:{saga.attempt}",
            )
            flow = on_event(rec2, event, ctx, now)
            if isinstance(flow, Flow):
                _moved(out, held, rec, flow, now)
                continue
        if moved:
            rec2.version += 1
            rec2.changed_at = now
            out.changes.append(change_of(rec2, "reservation", rec2.received_at, now))
        held.current[oid] = rec2
        out.put_record(rec2, oid)
    return out


# bookkeeping the order stage needs and an API reader does not
_INTERNAL = frozenset({"ref", "copy_refs", "recent_events", "audit_seq", "waived_rules"})


def order_view(rec: OrderRecord) -> dict[str, object]:
    """``GET /v1/orders/{id}``: the record with named fields, without internal bookkeeping."""
    view: dict[str, object] = {"id": rec.order.id}
    for name, value in msgspec.structs.asdict(rec).items():
        if name not in _INTERNAL:
            view[name] = value
    view["duplicates"] = [
        {"received_at": d.received_at, "channel_updated_at": d.channel_updated_at, "rule": d.rule}
        for d in rec.duplicates
    ]
    view["deadlines"] = [
        {"timer": d.kind, "state": d.state, "due_at": d.at, "since": d.since, "level": d.level}
        for d in rec.deadlines
    ]
    return view


def history(rows: list[tuple[bytes, bytes]]) -> list[AuditEntry]:
    return [audit_decoder.decode(v) for _, v in rows]


def settles_of(records: list[CanonicalRecord]) -> list[Settle]:
    """Every record settles its journal entry, recorded now, before, or found stale."""
    return settles_for(r.origin for r in records)


class _WindowOrder(msgspec.Struct, gc=False):
    channel: str
    channel_order_no: str
    created_at: int


class _WindowHead(msgspec.Struct, gc=False):
    order: _WindowOrder


_window_decoder = msgspec.msgpack.Decoder(_WindowHead)


def window_head(raw: bytes) -> _WindowOrder:
    """Channel, order number and creation time of a stored record, the rest left undecoded."""
    return _window_decoder.decode(raw).order
