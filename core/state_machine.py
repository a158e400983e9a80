"""The order life cycle as one transition table, and the one function that applies an event to it.

Why a table: every allowed move is a row in ``_ROWS`` (state, event -> state, effects, guard), so
the allowed moves can be read, reviewed and tested in one place; ``apply_event`` only resolves
the few dynamic parts a row names. An event the table does not allow comes back as a
:class:`Refusal` (state + reason), never applied silently; the caller keeps the state.

States (``STATES``)::

    pending_payment -> paid -> picking -> shipped -> in_transit -> delivered -> completed
    cancelled, duplicate, refunded, completed   terminal
    refund_requested                            remembers where it came from (resume state)
    held                                        manual review; remembers where it came from
    out_of_stock                                a reservation was refused; cancel or retry

Events (``EVENTS``; ``source`` on the event says which system sent it):

    payment_received   payment callback; needs payment_status "paid" (deposits stay pending)
    payment_timeout    SLA: unpaid too long -> cancelled. Only for payment_status "unpaid":
                       a deposit or partly paid order is never auto-cancelled (the SLA policy
                       refuses it too; this guard is the second line of defence)
    stock_refused      the reservation saga refused a line -> out_of_stock (alert)
    restock_retry      out_of_stock -> pending_payment/paid by payment status, reserve again
    mark_duplicate     cross-channel duplicate of another order -> duplicate (terminal)
    pick_start         warehouse starts picking
    ship               scan-out; data["tracking_no"] required -> shipped, deduct stock
    tracking_pushed    the channel accepted the tracking number (clears the 3-minute timer)
    carrier_pickup     carrier took the parcel -> in_transit
    carrier_update     carrier tracking update; in in_transit restarts the 48 h silence timer
    carrier_exception  pickup failed / timed out / invalid tracking: shipped -> picking with an
                       alert and the deduction reversed (never a silent "shipped"); while
                       in_transit it only alerts
    delivered          carrier says signed for
    complete           after-sales window closed (SLA) or an operator closes the order
    cancel             buyer/operator cancel before shipment (release stock, refund if paid)
    refund_request     -> refund_requested, remembering the state it came from
    refund_approve     -> refunded; stock released only if the remembered state is unshipped
    refund_reject      -> back to the remembered state
    hold / release     manual review: hold remembers the state; release goes back to it
    review_approve     near-duplicate review passed: -> pending_payment/paid by payment status
                       and reserve stock (it was never reserved while held on arrival)
    review_reject      -> cancelled
    skip_state         a rule skips data["state"] where ``SKIPPABLE`` allows it (cash on
                       delivery skips pending_payment; virtual goods skip the delivered wait)

Remembering where to return (held, refund_requested): the :class:`Transition` that enters
these states carries ``resume_state`` = the state left; the caller stores what every transition
returns in ``resume_state`` and passes it back to ``apply_event``. Release / reject go back to
it. Payment-driven states (pending_payment / paid) are re-derived from the current payment
status on the way back, because the payment may have arrived while the order was held.

Out-of-order carrier events (carriers deliver webhooks late and out of order):

- A carrier event that implies steps not yet seen passes through them, recording each step:
  ``delivered`` while ``shipped`` -> steps shipped->in_transit, in_transit->delivered.
- A carrier event that the order is already past is *stale*: a Refusal with ``stale=True`` and
  a reason (e.g. ``carrier_pickup`` after ``in_transit``, any carrier event after
  ``delivered``). Stale is not an error: the caller acks it without alerting. The same holds for
  repeats that raced a system event (``cancel`` on a cancelled order, a second payment callback).
- A ``carrier_update`` whose ``at`` is not newer than the last applied carrier event time
  (``last_carrier_at``, kept by the caller from ``Transition.carrier_at``) is stale too, so an
  old update never restarts the silence timer.
- While ``refund_requested`` the parcel is still moving: carrier events are applied to the
  remembered state (the resume state advances, the order stays refund_requested), so approving
  the refund later knows whether the goods ever left.

Idempotency: every event has an ``event_id``; the caller keeps each order's recent ids
(:func:`remember_event`) and drops repeats before calling ``apply_event``.

Effects tell the stock side what to do: ``release_stock`` (cancel, payment timeout, unshipped
refund, review reject), ``deduct_stock`` (ship), ``reverse_deduct`` (shipped -> picking: the
goods are back on the shelf, still reserved for this order, so the next ship deducts once),
``reserve_stock`` (review approve, restock retry), ``refund_payment`` (only when something was
paid) and ``alert``. Reservation and release are idempotent on (order id, SKU), so an effect
that repeats (a rule hold after reservation, then review approve) is harmless.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import pairwise
from typing import Any, Final, Literal, NamedTuple

import msgspec

from core.audit import AuditEntry
from core.model import PAYMENT_STATUSES

STATES: Final[tuple[str, ...]] = (
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
)
TERMINAL: Final[frozenset[str]] = frozenset({"completed", "cancelled", "refunded", "duplicate"})
# Goods never left the warehouse: a refund from here releases the reservation.
UNSHIPPED: Final[frozenset[str]] = frozenset(
    {"pending_payment", "paid", "picking", "held", "out_of_stock"}
)
# States the payment status decides (order_state.initial_state agrees).
_PAYMENT_DRIVEN: Final[frozenset[str]] = frozenset({"pending_payment", "paid"})
# Entering these states remembers the state left, so the order can go back.
_REMEMBERING: Final[frozenset[str]] = frozenset({"held", "refund_requested"})

EVENTS: Final[tuple[str, ...]] = (
    "payment_received",
    "payment_timeout",
    "stock_refused",
    "restock_retry",
    "mark_duplicate",
    "pick_start",
    "ship",
    "tracking_pushed",
    "carrier_pickup",
    "carrier_update",
    "carrier_exception",
    "delivered",
    "complete",
    "cancel",
    "refund_request",
    "refund_approve",
    "refund_reject",
    "hold",
    "release",
    "review_approve",
    "review_reject",
    "skip_state",
)
CARRIER_EVENTS: Final[frozenset[str]] = frozenset(
    {"carrier_pickup", "carrier_update", "carrier_exception", "delivered"}
)
# Data keys an event must carry (checked by validate_event and again by apply_event).
REQUIRED_DATA: Final[dict[str, tuple[str, ...]]] = {
    "ship": ("tracking_no",),
    "skip_state": ("state",),
}
# A hold without a reason leaves the reviewer guessing why the order stopped.
REQUIRED_REASON: Final[frozenset[str]] = frozenset({"hold"})
# skip_state: the state that may be skipped -> where the order goes instead.
SKIPPABLE: Final[dict[str, str]] = {
    "pending_payment": "paid",  # cash on delivery: payment is collected at the door
    "delivered": "completed",  # virtual goods: no after-sales wait
}

Effect = Literal[
    "release_stock", "deduct_stock", "reverse_deduct", "reserve_stock", "refund_payment", "alert"
]
TimerChange = Literal["restart", "keep", "clear"]

# Row targets that apply_event resolves.
_RESUME: Final = "@resume"  # the remembered state
_BY_PAYMENT: Final = "@by_payment"  # pending_payment or paid by payment status
# Row effect resolved to release_stock only when the remembered state is unshipped.
_RELEASE_IF_UNSHIPPED: Final = "@release_if_unshipped"


class _Row(NamedTuple):
    state: str
    event: str
    to: str
    effects: tuple[str, ...] = ()
    guard: str = ""
    via: tuple[str, ...] = ()  # states passed through on the way (recorded as steps)
    timers: TimerChange | None = None  # None: restart on a state change, keep on a self-loop


_CANCEL: Final = ("release_stock", "refund_payment")
_REFUND: Final = ("refund_payment", _RELEASE_IF_UNSHIPPED)
# The transition table. Order: by state along the happy path, then side states.
_ROWS: Final[tuple[_Row, ...]] = (
    _Row("pending_payment", "payment_received", "paid", guard="fully_paid"),
    _Row("pending_payment", "payment_timeout", "cancelled", ("release_stock",), "unpaid_only"),
    _Row("pending_payment", "cancel", "cancelled", _CANCEL),
    _Row("pending_payment", "hold", "held"),
    _Row("pending_payment", "stock_refused", "out_of_stock", ("alert",)),
    _Row("pending_payment", "mark_duplicate", "duplicate", _CANCEL),
    _Row("pending_payment", "refund_request", "refund_requested", guard="paid_something"),
    _Row("pending_payment", "skip_state", "paid", guard="skip_matches"),
    _Row("paid", "pick_start", "picking"),
    _Row("paid", "cancel", "cancelled", _CANCEL),
    _Row("paid", "hold", "held"),
    _Row("paid", "refund_request", "refund_requested"),
    _Row("paid", "stock_refused", "out_of_stock", ("alert",)),
    _Row("paid", "mark_duplicate", "duplicate", _CANCEL),
    _Row("picking", "ship", "shipped", ("deduct_stock",), "has_tracking"),
    _Row("picking", "cancel", "cancelled", _CANCEL),
    _Row("picking", "hold", "held"),
    _Row("picking", "refund_request", "refund_requested"),
    _Row("shipped", "tracking_pushed", "shipped", timers="clear"),
    _Row("shipped", "carrier_pickup", "in_transit"),
    _Row("shipped", "carrier_update", "in_transit"),
    _Row("shipped", "delivered", "delivered", via=("in_transit",)),
    _Row("shipped", "carrier_exception", "picking", ("reverse_deduct", "alert")),
    _Row("shipped", "refund_request", "refund_requested"),
    _Row("in_transit", "carrier_update", "in_transit", guard="newer_carrier", timers="restart"),
    _Row("in_transit", "carrier_exception", "in_transit", ("alert",)),
    _Row("in_transit", "delivered", "delivered"),
    _Row("in_transit", "refund_request", "refund_requested"),
    _Row("delivered", "complete", "completed"),
    _Row("delivered", "refund_request", "refund_requested"),
    _Row("delivered", "skip_state", "completed", guard="skip_matches"),
    _Row("refund_requested", "refund_approve", "refunded", _REFUND),
    _Row("refund_requested", "refund_reject", _RESUME),
    _Row("held", "release", _RESUME),
    _Row("held", "review_approve", _BY_PAYMENT, ("reserve_stock",), "payable"),
    _Row("held", "review_reject", "cancelled", _CANCEL),
    _Row("held", "cancel", "cancelled", _CANCEL),
    _Row("held", "refund_request", "refund_requested", guard="paid_something"),
    _Row("held", "stock_refused", "out_of_stock", ("alert",)),
    _Row("held", "mark_duplicate", "duplicate", _CANCEL),
    _Row("out_of_stock", "restock_retry", _BY_PAYMENT, ("reserve_stock",), "payable"),
    _Row("out_of_stock", "cancel", "cancelled", _CANCEL),
    _Row("out_of_stock", "hold", "held"),
    _Row("out_of_stock", "refund_request", "refund_requested", guard="paid_something"),
    _Row("out_of_stock", "mark_duplicate", "duplicate", _CANCEL),
)

_PAST_PICKUP: Final = ("carrier_pickup", "tracking_pushed")
_ALL_CARRIER: Final = ("carrier_pickup", "carrier_update", "carrier_exception", "delivered")
# (states, events, reason): events that are late or repeated, acked without effect.
_STALE_ROWS: Final[tuple[tuple[tuple[str, ...], tuple[str, ...], str], ...]] = (
    (("in_transit",), _PAST_PICKUP, "the carrier already has the parcel"),
    (("delivered", "completed"), (*_ALL_CARRIER, "tracking_pushed"), "already delivered"),
    (("refunded",), (*_ALL_CARRIER, "tracking_pushed"), "order already refunded"),
    (
        ("paid", "picking", "shipped", "in_transit", "delivered", "completed", "refunded"),
        ("payment_received",),
        "payment already recorded",
    ),
    (
        ("held", "out_of_stock", "refund_requested"),
        ("payment_received",),
        "payment status is kept on the order; the state follows it on release or retry",
    ),
    (("cancelled",), ("cancel", "payment_timeout", "review_reject"), "already cancelled"),
    (("completed",), ("complete",), "already completed"),
    (("refunded",), ("refund_approve",), "already refunded"),
    (("duplicate",), ("mark_duplicate",), "already marked duplicate"),
    (("held",), ("hold",), "already held"),
    (("out_of_stock",), ("stock_refused",), "already out of stock"),
)

TRANSITIONS: Final[dict[tuple[str, str], _Row]] = {(r.state, r.event): r for r in _ROWS}
STALE: Final[dict[tuple[str, str], str]] = {
    (s, e): reason for states, events, reason in _STALE_ROWS for s in states for e in events
}


def _check_table() -> None:
    """Fail at import if the table names a state or event that does not exist (a typo guard)."""
    targets = set(STATES) | {_RESUME, _BY_PAYMENT}
    for r in _ROWS:
        if r.state not in STATES or r.event not in EVENTS or r.to not in targets:
            raise AssertionError(f"transition row {r} names an unknown state or event")
        if (r.state, r.event) in STALE:
            raise AssertionError(f"({r.state}, {r.event}) is both a transition and stale")
    for s, e in STALE:
        if s not in STATES or e not in EVENTS:
            raise AssertionError(f"stale row ({s}, {e}) names an unknown state or event")


_check_table()


class OrderEvent(msgspec.Struct, kw_only=True, frozen=True):
    """Something that happened to an order, from a user, a carrier, a channel or a timer."""

    order_id: str
    event: str
    actor: str = "system"  # user name or "system"
    source: str = "api"  # api, carrier, channel, warehouse, sla, rules, payment, ...
    reason: str = ""
    at: int  # epoch ms UTC, when it happened at the source
    event_id: str = ""
    data: dict[str, str] = {}  # tracking_no, carrier, state (skip_state), ...


class Transition(msgspec.Struct, kw_only=True, frozen=True):
    """An applied event. ``steps`` lists every from->to move (one per audit entry).

    ``resume_state``: store it on the order as is ("" clears it). ``carrier_at``: the new
    last carrier event time to store (0 = unchanged). ``timers``: what to do with the order's SLA
    deadlines (``core.sla.plan_timers`` does it).
    """

    from_state: str
    to_state: str
    event: str
    steps: tuple[tuple[str, str], ...]
    effects: tuple[str, ...] = ()
    timers: TimerChange = "restart"
    resume_state: str = ""
    carrier_at: int = 0


class Refusal(msgspec.Struct, kw_only=True, frozen=True):
    """An event that was not applied; the order stays in ``state``.

    ``stale`` = the order is already past what the event says (a late carrier update, a repeat
    racing a timer): ack it quietly. Otherwise the event was wrong for the state: report it.
    """

    state: str
    event: str
    reason: str
    stale: bool = False


class EventError(msgspec.Struct, frozen=True):
    """Why an input could not become an OrderEvent (for the DLQ and HTTP 400 bodies)."""

    field: str
    reason: str


def state_for_payment(payment_status: str) -> str | None:
    """The payment-driven state for a status, None when nothing can be fulfilled (refunded)."""
    if payment_status in ("unpaid", "deposit_paid", "partially_paid"):
        return "pending_payment"
    if payment_status in ("paid", "partially_refunded"):
        return "paid"
    return None


def _guard(name: str, event: OrderEvent, payment_status: str, last_carrier_at: int) -> str:
    """ "" when the guard passes, else the refusal reason."""
    if name == "fully_paid":
        if payment_status != "paid":
            return f"payment status is {payment_status!r}, not 'paid'"
    elif name == "unpaid_only":
        if payment_status != "unpaid":
            return f"payment status {payment_status!r}: only unpaid orders are auto-cancelled"
    elif name == "paid_something":
        if payment_status == "unpaid":
            return "nothing was paid: cancel instead"
    elif name == "has_tracking":
        if not event.data.get("tracking_no", "").strip():
            return "ship needs data.tracking_no"
    elif name == "payable":
        if state_for_payment(payment_status) is None:
            return f"payment status {payment_status!r} cannot be fulfilled: cancel instead"
    elif name == "newer_carrier":
        if event.at <= last_carrier_at:
            return "older than the last carrier event"
    elif name == "skip_matches":
        # the row's state is the one skipped; apply_event checks data["state"] against it
        pass
    else:  # pragma: no cover - _check_table would not catch a guard typo; this does
        raise AssertionError(f"unknown guard {name!r}")
    return ""


def apply_event(
    state: str,
    event: OrderEvent,
    *,
    payment_status: str,
    resume_state: str = "",
    last_carrier_at: int = 0,
) -> Transition | Refusal:
    """Apply ``event`` to an order in ``state``: the move to make, or why not.

    ``payment_status`` is the order's status *after* the event's own payment data was recorded.
    ``resume_state`` / ``last_carrier_at`` are what earlier transitions told the caller to keep.
    """
    name = event.event
    row = TRANSITIONS.get((state, name))
    if row is None:
        stale = STALE.get((state, name))
        if stale is not None:
            return Refusal(state=state, event=name, reason=stale, stale=True)
        if state == "refund_requested" and name in CARRIER_EVENTS:
            return _carrier_while_refunding(event, payment_status, resume_state, last_carrier_at)
        if name not in EVENTS:
            return Refusal(state=state, event=name, reason=f"unknown event {name!r}")
        why = "terminal state" if state in TERMINAL else "not allowed in this state"
        return Refusal(state=state, event=name, reason=f"{name} {why} ({state})")
    if row.guard:
        why = _guard(row.guard, event, payment_status, last_carrier_at)
        if why:
            stale = row.guard == "newer_carrier"
            return Refusal(state=state, event=name, reason=why, stale=stale)
        if row.guard == "skip_matches" and event.data.get("state") != state:
            skipped = event.data.get("state", "")
            return Refusal(state=state, event=name, reason=f"cannot skip {skipped!r} from {state}")
    to = row.to
    if to == _RESUME:
        to = resume_state
        if not to:
            if name != "release":
                return Refusal(state=state, event=name, reason="no remembered state to return to")
            to = _BY_PAYMENT  # held on arrival (never had another state)
    if to == _BY_PAYMENT or (to in _PAYMENT_DRIVEN and state in _REMEMBERING):
        by_payment = state_for_payment(payment_status)
        if by_payment is None:
            reason = f"payment status {payment_status!r} cannot be fulfilled: cancel instead"
            return Refusal(state=state, event=name, reason=reason)
        to = by_payment
    effects = row.effects
    if _RELEASE_IF_UNSHIPPED in effects or (payment_status == "unpaid" and effects):
        effects = _resolve_effects(effects, payment_status, resume_state)
    if name == "release" and not resume_state:
        effects = ("reserve_stock",)  # held on arrival: nothing was reserved yet
    steps = ((state, to),) if not row.via else _steps(state, row.via, to)
    timers = row.timers or ("restart" if to != state else "keep")
    return Transition(
        from_state=state,
        to_state=to,
        event=name,
        steps=steps,
        effects=effects,
        timers=timers,
        resume_state=state if to in _REMEMBERING and to != state else "",
        carrier_at=max(event.at, last_carrier_at) if name in CARRIER_EVENTS else 0,
    )


def _steps(state: str, via: tuple[str, ...], to: str) -> tuple[tuple[str, str], ...]:
    path = (state, *via, to)
    return tuple(pairwise(path))


def _resolve_effects(
    effects: tuple[str, ...], payment_status: str, resume_state: str
) -> tuple[str, ...]:
    out: list[str] = []
    for e in effects:
        if e == _RELEASE_IF_UNSHIPPED:
            if resume_state in UNSHIPPED:
                out.append("release_stock")
        elif e == "refund_payment" and payment_status == "unpaid":
            continue  # nothing to give back
        else:
            out.append(e)
    return tuple(out)


def _carrier_while_refunding(
    event: OrderEvent, payment_status: str, resume_state: str, last_carrier_at: int
) -> Transition | Refusal:
    """Apply a carrier event to the remembered state; the order stays refund_requested."""
    if not resume_state:
        return Refusal(
            state="refund_requested", event=event.event, reason="no remembered state to advance"
        )
    inner = apply_event(
        resume_state, event, payment_status=payment_status, last_carrier_at=last_carrier_at
    )
    if isinstance(inner, Refusal):
        return msgspec.structs.replace(inner, state="refund_requested")
    return Transition(
        from_state="refund_requested",
        to_state="refund_requested",
        event=event.event,
        steps=(("refund_requested", "refund_requested"),),
        effects=inner.effects,
        timers="keep",
        resume_state=inner.to_state,
        carrier_at=inner.carrier_at,
    )


# ---- input validation -------------------------------------------------------------------------

_event_decoder = msgspec.json.Decoder(OrderEvent)


def validate_event(obj: bytes | str | Mapping[str, Any]) -> OrderEvent | EventError:
    """An HTTP body / Kafka value / parsed mapping -> an OrderEvent, or the field that is wrong."""
    try:
        if isinstance(obj, bytes | str):
            ev = _event_decoder.decode(obj)
        else:
            ev = msgspec.convert(obj, OrderEvent)
    except msgspec.ValidationError as exc:
        text = str(exc)
        reason, sep, path = text.rpartition(" - at `")
        if sep:
            return EventError(field=path.rstrip("`"), reason=reason)
        return EventError(field="$", reason=text)
    except msgspec.DecodeError as exc:
        return EventError(field="$", reason=f"not JSON: {exc}")
    if not ev.order_id.strip():
        return EventError(field="$.order_id", reason="must not be empty")
    if ev.event not in EVENTS:
        return EventError(field="$.event", reason=f"unknown event {ev.event!r}")
    if ev.at <= 0:
        return EventError(field="$.at", reason="must be epoch milliseconds > 0")
    if not ev.actor.strip():
        return EventError(field="$.actor", reason="must not be empty (a user name or 'system')")
    for key in REQUIRED_DATA.get(ev.event, ()):
        if not ev.data.get(key, "").strip():
            return EventError(field=f"$.data.{key}", reason=f"required for {ev.event}")
    if ev.event == "skip_state" and ev.data["state"] not in SKIPPABLE:
        return EventError(
            field="$.data.state", reason=f"{ev.data['state']!r} is not a skippable state"
        )
    status = ev.data.get("payment_status")
    if status is not None and status not in PAYMENT_STATUSES:
        return EventError(field="$.data.payment_status", reason=f"unknown status {status!r}")
    if ev.event in REQUIRED_REASON and not ev.reason.strip():
        return EventError(field="$.reason", reason=f"required for {ev.event}")
    return ev


# ---- idempotency ------------------------------------------------------------------------------

RECENT_EVENT_IDS: Final = 32  # per order: carriers and gateways retry within minutes, not weeks


def remember_event(
    recent: tuple[str, ...], event_id: str, keep: int = RECENT_EVENT_IDS
) -> tuple[bool, tuple[str, ...]]:
    """(is a repeat, the ids to store). Events without an id are never treated as repeats."""
    if not event_id:
        return False, recent
    if event_id in recent:
        return True, recent
    return False, (*recent[-(keep - 1) :], event_id) if keep > 1 else (event_id,)


# ---- a pure driver (tests, replays, the order stage's per-order fold) --------------------------


class Timeline(msgspec.Struct, kw_only=True):
    """An order's state plus what the caller must remember between events, and its audit list."""

    order_id: str
    state: str
    payment_status: str = "unpaid"
    resume_state: str = ""
    last_carrier_at: int = 0
    recent_ids: tuple[str, ...] = ()
    next_seq: int = 0
    audit: list[AuditEntry] = []


def transition_audit(t: Transition, event: OrderEvent, first_seq: int) -> list[AuditEntry]:
    """One entry per step, so a pass-through shows every state the order went through."""
    return [
        AuditEntry(
            order_id=event.order_id,
            seq=first_seq + i,
            from_state=a,
            to_state=b,
            event=event.event,
            actor=event.actor,
            source=event.source,
            reason=event.reason,
            at=event.at,
        )
        for i, (a, b) in enumerate(t.steps)
    ]


def step(tl: Timeline, event: OrderEvent) -> Transition | Refusal | None:
    """Apply ``event`` to ``tl`` in place; None for a repeated event id.

    A payment callback may carry ``data["payment_status"]``: it is recorded before the event is
    applied, as the order stage records the channel's payment status before applying events.
    """
    repeat, tl.recent_ids = remember_event(tl.recent_ids, event.event_id)
    if repeat:
        return None
    paid_now = event.data.get("payment_status")
    if paid_now in PAYMENT_STATUSES:
        tl.payment_status = paid_now
    result = apply_event(
        tl.state,
        event,
        payment_status=tl.payment_status,
        resume_state=tl.resume_state,
        last_carrier_at=tl.last_carrier_at,
    )
    if isinstance(result, Transition):
        entries = transition_audit(result, event, tl.next_seq)
        tl.audit.extend(entries)
        tl.next_seq += len(entries)
        tl.state = result.to_state
        tl.resume_state = result.resume_state
        if result.carrier_at:
            tl.last_carrier_at = result.carrier_at
    return result


def fold(
    order_id: str,
    state: str,
    events: Iterable[OrderEvent],
    *,
    payment_status: str = "unpaid",
) -> tuple[Timeline, list[Transition | Refusal | None]]:
    """Fold ``events`` from ``state``: the final timeline and each event's outcome."""
    if payment_status not in PAYMENT_STATUSES:
        raise ValueError(f"unknown payment status {payment_status!r}")
    tl = Timeline(order_id=order_id, state=state, payment_status=payment_status)
    return tl, [step(tl, e) for e in events]
