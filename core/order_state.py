"""Recording orders in the order stage: the first version creates, newer versions update.

Merge rule for re-deliveries (gateways retry webhooks for hours): the channel's ``updated_at``
decides. A copy newer than what is held replaces the order data (e.g. paid after pending); an
older or equal copy is a duplicate (rule ``exact_channel``): it is noted on the order (count and
the last few copies) and changes nothing else, so a retry storm never rolls an order back.

A copy is identified by where it was accepted (``ref``: journal entry, or gateway topic
position). The same ref arriving again is a replay after a crash or a broker restart, not a
duplicate, and records nothing - so at-least-once delivery never inflates duplicate counts.

The dedup stages decide how a *new* order starts: a cross-channel duplicate is recorded in
state ``duplicate`` (never fulfilled), a suspected near-duplicate is ``held`` for review.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from core.model import CanonicalOrder
from core.saga import ReservationSaga
from core.sla import Deadline

OrderStateName = Literal[
    "pending_payment",
    "paid",
    "picking",
    "shipped",
    "in_transit",
    "delivered",
    "completed",
    "cancelled",
    "refund_requested",
    "refunded",
    "held",
    "duplicate",
    "out_of_stock",
]

# Only payment decides the state on arrival; later states come from fulfilment events.
_STATE_FOR_PAYMENT: dict[str, OrderStateName] = {
    "unpaid": "pending_payment",
    "deposit_paid": "pending_payment",
    "partially_paid": "pending_payment",
    "paid": "paid",
    "partially_refunded": "paid",
    "refunded": "refunded",
}
# States that a channel copy may still move (before fulfilment starts).
_PAYMENT_DRIVEN: frozenset[str] = frozenset({"pending_payment", "paid"})


MAX_COPIES_KEPT = 16  # the last copies shown on the order; the count keeps the total


class DuplicateCopy(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """A later copy of this very order (same channel + order no) that changed nothing."""

    received_at: int
    channel_updated_at: int
    ref: str
    rule: str = "exact_channel"


class OrderRecord(msgspec.Struct, kw_only=True, gc=False):
    order: CanonicalOrder
    state: OrderStateName
    version: int  # 1 on creation, +1 per recorded update
    recorded_at: int  # epoch ms of the first recording
    changed_at: int  # epoch ms of the last recorded change
    received_at: int  # when the newest version was accepted at the door
    ref: str = ""  # where the first copy was accepted (journal entry or gateway position)
    duplicate_of: str = ""  # for a duplicate / suspected order: the original's global id
    duplicate_rule: str = ""  # "exact_cross_channel" | "near_duplicate"
    hold_reason: str = ""  # why the order is held, e.g. "near_duplicate"
    match_score: int = 0  # near_duplicate: the recipient match score (core.recipient_match)
    match_fields: list[str] = []  # near_duplicate: what counted for it, "field:outcome"
    copies: int = 1  # channel copies recorded: the first, every newer one, every stale one
    duplicate_count: int = 0  # later copies of this order that changed nothing
    duplicates: list[DuplicateCopy] = []
    copy_refs: list[str] = []  # refs of every recorded version: a replay of one records nothing
    reservation: ReservationSaga | None = None  # the order's stock reservation (core.saga)
    # state machine bookkeeping (core.order_flow): what earlier transitions told us to keep
    state_since: int = 0  # when the current state's SLA clock started
    resume_state: str = ""  # held / refund_requested: where to go back to
    last_carrier_at: int = 0
    deadlines: list[Deadline] = []  # armed SLA deadlines (their index keys are derived)
    recent_events: list[str] = []  # ids of recently applied events: a redelivery is a no-op
    audit_seq: int = 0  # next audit entry's sequence number
    priority: str = "normal"  # "high": the priority lane (rules)
    labels: list[str] = []  # tags added by rules (the channel's own tags stay on the order)
    tracking_no: str = ""
    carrier: str = ""
    hold_rule: str = ""  # the rule whose hold the order is in, if a rule held it
    waived_rules: list[str] = []  # rules whose hold an operator lifted: they do not hold again
    flow_broke: bool = False  # a step of its own flow once took longer than flow_break_after
    # the recipient's orders in 24 h up to this one, once the history stage counted it (rules
    # read it; a count not above it is a redelivery and changes nothing)
    address_orders_24h: int = 0


def initial_state(order: CanonicalOrder) -> OrderStateName:
    return _STATE_FOR_PAYMENT[order.payment_status]


ChangeKind = Literal["created", "updated", "duplicate_received"]
MAX_REFS_KEPT = 64  # replays come within hours; a longer tail only costs bytes per order


def start_state(
    incoming: CanonicalOrder,
    verdict_kind: str,
    original_id: str,
    rule: str,
    match: tuple[int, tuple[str, ...]] = (0, ()),
) -> dict[str, object]:
    """State and dedup fields of a new order, from the dedup stages' verdict (``match``: the
    near-duplicate's score and agreeing fields, shown to whoever reviews it)."""
    if verdict_kind == "duplicate":
        return {"state": "duplicate", "duplicate_of": original_id, "duplicate_rule": rule}
    if verdict_kind == "suspected":
        return {
            "state": "held",
            "hold_reason": rule,
            "duplicate_of": original_id,
            "duplicate_rule": rule,
            "match_score": match[0],
            "match_fields": list(match[1]),
        }
    return {"state": initial_state(incoming)}


def record_order(
    held: OrderRecord | None,
    incoming: CanonicalOrder,
    received_at: int,
    now: int,
    *,
    ref: str = "",
    verdict_kind: str = "new",
    original_id: str = "",
    rule: str = "",
    match: tuple[int, tuple[str, ...]] = (0, ()),
) -> tuple[OrderRecord, ChangeKind] | None:
    """The new record and what happened, or None when ``incoming`` is a replay of a known copy."""
    if held is None:
        rec = OrderRecord(
            order=incoming,
            version=1,
            recorded_at=now,
            changed_at=now,
            received_at=received_at,
            ref=ref,
            copy_refs=[ref] if ref else [],
            **start_state(incoming, verdict_kind, original_id, rule, match),  # type: ignore[arg-type]
        )
        return rec, "created"
    if ref and ref in held.copy_refs:
        return None
    refs = [*held.copy_refs, ref][-MAX_REFS_KEPT:] if ref else held.copy_refs
    if incoming.updated_at <= held.order.updated_at:
        copy = DuplicateCopy(received_at, incoming.updated_at, ref)
        rec = msgspec.structs.replace(
            held,
            version=held.version + 1,
            changed_at=now,
            copies=held.copies + 1,
            duplicate_count=held.duplicate_count + 1,
            duplicates=[*held.duplicates, copy][-MAX_COPIES_KEPT:],
            copy_refs=refs,
        )
        return rec, "duplicate_received"
    state = held.state
    if state in _PAYMENT_DRIVEN:
        state = initial_state(incoming)
    rec = msgspec.structs.replace(
        held,
        order=incoming,
        state=state,
        version=held.version + 1,
        changed_at=now,
        received_at=received_at,
        copies=held.copies + 1,
        copy_refs=refs,
    )
    return rec, "updated"


record_encoder = msgspec.msgpack.Encoder()
record_decoder = msgspec.msgpack.Decoder(OrderRecord)


class OrderHead(msgspec.Struct, gc=False):
    """The order fields a change event needs, read from the encoded order (the rest skipped)."""

    id: str
    channel: str
    payment_status: str


def _stored_record_type() -> type:
    """``OrderRecord`` with the canonical order left encoded (``msgspec.Raw``).

    Same fields, same order, same defaults: it decodes what ``record_encoder`` wrote and
    encodes back byte for byte, so a step that only touches the bookkeeping (a reservation
    answer) neither decodes nor re-encodes the order, the bulk of the record."""
    fields: list[tuple[str, object] | tuple[str, object, object]] = []
    for f in msgspec.structs.fields(OrderRecord):
        typ = msgspec.Raw if f.name == "order" else f.type
        if f.default is not msgspec.NODEFAULT:
            fields.append((f.name, typ, f.default))
        elif f.default_factory is not msgspec.NODEFAULT:
            fields.append((f.name, typ, msgspec.field(default_factory=f.default_factory)))
        else:
            fields.append((f.name, typ))
    return msgspec.defstruct("StoredRecord", fields, kw_only=True, gc=False, module=__name__)  # type: ignore[arg-type]


StoredRecord = _stored_record_type()
stored_decoder = msgspec.msgpack.Decoder(StoredRecord)
head_decoder = msgspec.msgpack.Decoder(OrderHead)


def order_head(rec: object) -> OrderHead | CanonicalOrder:
    """id / channel / payment_status of a record's order, decoded or not."""
    order = rec.order  # type: ignore[attr-defined]
    return head_decoder.decode(order) if isinstance(order, msgspec.Raw) else order


def full_record(rec: object) -> OrderRecord:
    """A decoded ``OrderRecord`` from either form."""
    if isinstance(rec, OrderRecord):
        return rec
    return record_decoder.decode(record_encoder.encode(rec))
