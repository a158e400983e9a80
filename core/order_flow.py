"""What happens to an order record when something happens to the order: one place, pure.

The order stage is the single writer of order state; every input it takes - a new order, a newer
channel copy, an event (HTTP, ``orders.events``, a timer), a reservation result - goes through
one of the functions here, which return the new record plus everything that must follow from
it: audit entries, SLA deadline index changes, reservation requests and alerts. The stage only
reads, writes and sends. Nothing here knows about Kafka or RocksDB.

Order of consequences for a transition, and why:
1. the state machine decides (``core.state_machine.apply_event``) - a refusal changes nothing;
2. audit entries, one per step, numbered from the record's ``audit_seq``;
3. SLA deadlines re-planned for the new state (``core.sla.plan_timers``);
4. stock effects become saga requests (release / deduct / reserve, ``core.saga``);
5. rules for the event and for the state entered (``core.rules``); a rule's hold or skip is
   itself an event through the state machine, so it is audited and timed like any other.
"""

from __future__ import annotations

import msgspec

from core.audit import AuditEntry, rule_entry
from core.inventory import ReserveRequest
from core.order_state import OrderRecord
from core.routing import WarehouseRouting
from core.rules import Action, RuleSet
from core.saga import deduct_reservation, release_reservation, start_reservation
from core.sla import (
    Breach,
    Deadline,
    SlaPolicy,
    breach_audit,
    deadline_key,
    fire,
    plan_timers,
    rearm,
)
from core.state_machine import (
    OrderEvent,
    Refusal,
    Transition,
    apply_event,
    remember_event,
    transition_audit,
)

LIVE_STATES = frozenset({"pending_payment", "paid"})  # a new order in these reserves stock
# States the merchant's own flow moves an order out of (not the buyer paying, not the carrier):
# a step out of one of these that took longer than the policy's flow_break_after is a break.
FLOW_STATES = frozenset({"paid", "picking", "held"})
MAX_RULE_DEPTH = 3  # a rule's hold/skip is an event whose rules may act again: bounded


class Alert(msgspec.Struct, kw_only=True, frozen=True):
    """Something an operator should see: an SLA breach, a rule's notification, a carrier
    exception. Published on ``orders.alerts``; the sync stage fans it out."""

    order_id: str
    kind: str  # sla_breach | sla_escalation | notify | route | alert
    severity: str  # info | warn | breach | flag
    message: str
    at: int
    rung: str = ""  # escalation: who is notified
    source: str = ""


class FlowContext:
    """Policies read at start-up; ``rules`` may be swapped by a hot reload between envelopes."""

    __slots__ = ("policy", "routing", "rules", "ttl_ms")

    def __init__(
        self, policy: SlaPolicy, rules: RuleSet, routing: WarehouseRouting, ttl_ms: int = 0
    ) -> None:
        self.policy = policy
        self.rules = rules
        self.routing = routing
        self.ttl_ms = ttl_ms


class Flow:
    """The consequences of one input, accumulated on one record."""

    __slots__ = (
        "alerts",
        "audit",
        "deadline_deletes",
        "deadline_puts",
        "kpis",
        "record",
        "requests",
    )

    def __init__(self, record: OrderRecord) -> None:
        self.record = record
        self.audit: list[AuditEntry] = []
        self.requests: list[ReserveRequest] = []
        self.deadline_puts: list[Deadline] = []
        self.deadline_deletes: list[bytes] = []
        self.alerts: list[Alert] = []
        self.kpis: list[str] = []  # flow_break, shipped_on_time, shipped_late

    def add_audit(self, entries: list[AuditEntry]) -> None:
        self.audit += entries
        self.record.audit_seq += len(entries)

    def retime(self, delete: list[bytes], arm: list[Deadline]) -> None:
        if delete:
            gone = set(delete)
            self.deadline_deletes += delete
            self.deadline_puts = [d for d in self.deadline_puts if deadline_key(d) not in gone]
            kept = [d for d in self.record.deadlines if deadline_key(d) not in gone]
        else:
            kept = self.record.deadlines
        self.deadline_puts += arm
        self.record.deadlines = kept + arm


def _copy(rec: OrderRecord) -> OrderRecord:
    return msgspec.structs.replace(rec, deadlines=list(rec.deadlines), labels=list(rec.labels))


# ---- a new order ------------------------------------------------------------------------------


def on_created(
    rec: OrderRecord, ctx: FlowContext, now: int, *, address_orders_24h: int = 0
) -> Flow:
    """A first recording: audit the arrival, arm its timers, reserve stock, run the rules.

    ``address_orders_24h``: a recipient count that overtook the order (kept pending by the
    order stage); the rules read it like one that comes later (:func:`on_recipient_count`)."""
    flow = Flow(_copy(rec))
    r = flow.record
    r.address_orders_24h = max(r.address_orders_24h, address_orders_24h)
    r.state_since = now
    reason = r.duplicate_rule and f"{r.duplicate_rule} of {r.duplicate_of}"
    flow.add_audit(
        [
            AuditEntry(
                order_id=r.order.id,
                seq=r.audit_seq,
                from_state="",
                to_state=r.state,
                event="order_received",
                actor="system",
                source=r.order.channel,
                reason=reason or f"payment {r.order.payment_status}",
                at=now,
            )
        ]
    )
    _arm_for_state(flow, ctx, now)
    if r.state in LIVE_STATES:
        _reserve(flow, ctx, now)
    _run_rules(flow, ctx, f"state:{r.state}", "", now, depth=0)
    return flow


def on_recipient_count(rec: OrderRecord, count: int, ctx: FlowContext, now: int) -> Flow | None:
    """The recipient's 24 h order count, computed by the history stage after the order was
    recorded: kept on the record, and the rules that read it run for the current state (the
    others already ran when the state was entered). None when it is not above the count
    already applied: a redelivery changes nothing."""
    if count <= rec.address_orders_24h:
        return None
    flow = Flow(_copy(rec))
    flow.record.address_orders_24h = count
    _run_rules(flow, ctx, f"state:{flow.record.state}", "", now, depth=0, history_only=True)
    return flow


def _kpi_step(flow: Flow, to_state: str, now: int, policy: SlaPolicy) -> None:
    """The health KPIs a step feeds: a flow break (once per order), a shipment on time or late."""
    r = flow.record
    if (
        not r.flow_broke
        and r.state in FLOW_STATES
        and r.state_since
        and now - r.state_since > policy.flow_break_ms
    ):
        r.flow_broke = True
        flow.kpis.append("flow_break")
    if to_state == "shipped" and r.state != "shipped":
        promised = ship_by(r, policy)
        flow.kpis.append("shipped_on_time" if now <= promised else "shipped_late")


def ship_by(rec: OrderRecord, policy: SlaPolicy) -> int:
    """When the order must ship: ship_within after it was paid (or created, if the channel
    gives no payment time)."""
    return (rec.order.paid_at or rec.order.created_at) + policy.ship_within_ms


def on_channel_update(old: OrderRecord, new: OrderRecord, ctx: FlowContext, now: int) -> Flow:
    """A newer channel copy: payment may have moved the state (pending -> paid, -> refunded)."""
    flow = Flow(_copy(new))
    r = flow.record
    if old.state != r.state:
        probe = Flow(_copy(old))
        _kpi_step(probe, r.state, now, ctx.policy)
        flow.kpis += probe.kpis
        r.flow_broke = r.flow_broke or probe.record.flow_broke
        flow.add_audit(
            [
                AuditEntry(
                    order_id=r.order.id,
                    seq=r.audit_seq,
                    from_state=old.state,
                    to_state=r.state,
                    event="channel_update",
                    actor="system",
                    source=r.order.channel,
                    reason=f"payment {old.order.payment_status} -> {r.order.payment_status}",
                    at=now,
                )
            ]
        )
        r.state_since = now
        _arm_for_state(flow, ctx, now)
        if r.state in ("cancelled", "refunded"):
            _stock(flow, ("release_stock",), f"channel: {r.order.payment_status}", now)
        _run_rules(flow, ctx, f"state:{r.state}", "", now, depth=0)
    elif old.order.payment_status != r.order.payment_status:
        # same state, other payment status (deposit -> partially paid): the clock keeps running
        plan = rearm(
            r.deadlines,
            state=r.state,
            since=r.state_since,
            payment_status=r.order.payment_status,
            policy=ctx.policy,
            order_id=r.order.id,
        )
        flow.retime(plan.delete, plan.arm)
    return flow


def _arm_for_state(flow: Flow, ctx: FlowContext, now: int) -> None:
    r = flow.record
    plan = rearm(
        r.deadlines,
        state=r.state,
        since=now,
        payment_status=r.order.payment_status,
        policy=ctx.policy,
        order_id=r.order.id,
    )
    flow.retime(plan.delete, plan.arm)


# ---- events -----------------------------------------------------------------------------------


def on_event(
    rec: OrderRecord, event: OrderEvent, ctx: FlowContext, now: int
) -> Flow | Refusal | None:
    """An event from HTTP, ``orders.events`` or a timer; None when its id was already applied."""
    repeat, recent = remember_event(tuple(rec.recent_events), event.event_id)
    if repeat:
        return None
    flow = Flow(_copy(rec))
    flow.record.recent_events = list(recent)
    paid_now = event.data.get("payment_status")
    if paid_now and paid_now != rec.order.payment_status:
        flow.record.order = msgspec.structs.replace(rec.order, payment_status=paid_now)  # type: ignore[arg-type]
    result = _apply(flow, event, ctx, now, depth=0)
    if isinstance(result, Refusal):
        return result
    return flow


def _apply(
    flow: Flow, event: OrderEvent, ctx: FlowContext, now: int, depth: int
) -> Transition | Refusal:
    r = flow.record
    result = apply_event(
        r.state,
        event,
        payment_status=r.order.payment_status,
        resume_state=r.resume_state,
        last_carrier_at=r.last_carrier_at,
    )
    if isinstance(result, Refusal):
        return result
    flow.add_audit(transition_audit(result, event, r.audit_seq))
    moved = result.to_state != r.state
    if moved:
        _kpi_step(flow, result.to_state, now, ctx.policy)
    r.state = result.to_state  # type: ignore[assignment]
    r.resume_state = result.resume_state
    if result.carrier_at:
        r.last_carrier_at = result.carrier_at
    if event.event == "ship":
        r.tracking_no = event.data.get("tracking_no", r.tracking_no)
        r.carrier = event.data.get("carrier", r.carrier)
    if r.state != "held":
        if r.hold_rule and event.event in ("release", "review_approve"):
            # an operator lifted this rule's hold: the same rule must not hold it again when the
            # order re-enters the state that triggered it (approve -> paid -> "amount > 5,000")
            r.waived_rules = [*r.waived_rules, r.hold_rule]
        r.hold_reason = ""
        r.hold_rule = ""
    elif event.event == "hold":
        r.hold_reason = event.reason
        r.hold_rule = event.data.get("rule", "")
    if event.event == "carrier_exception" and r.state == "picking":
        r.tracking_no = ""  # back on the shelf: the old tracking number is void
    plan = plan_timers(
        result,
        r.deadlines,
        at=now,
        payment_status=r.order.payment_status,
        policy=ctx.policy,
        order_id=r.order.id,
    )
    if result.timers == "restart":
        r.state_since = now
    flow.retime(plan.delete, plan.arm)
    _stock(flow, result.effects, event.reason or event.event, now, ctx)
    if "alert" in result.effects:
        flow.alerts.append(
            Alert(
                order_id=r.order.id,
                kind="alert",
                severity="warn",
                message=f"{event.event}: {event.reason or 'see the order history'}",
                at=now,
                source=event.source,
            )
        )
    _run_rules(flow, ctx, event.event, event.reason, now, depth)
    if moved:
        _run_rules(flow, ctx, f"state:{r.state}", event.reason, now, depth)
    return result


def _stock(
    flow: Flow, effects: tuple[str, ...], reason: str, now: int, ctx: FlowContext | None = None
) -> None:
    r = flow.record
    saga = r.reservation
    oid = r.order.id
    for effect in effects:
        if effect == "release_stock" and saga is not None:
            saga, reqs = release_reservation(saga, oid, reason, now)
            flow.requests += reqs
        elif effect == "deduct_stock" and saga is not None:
            saga, reqs = deduct_reservation(saga, oid, now)
            flow.requests += reqs
        elif effect == "reserve_stock" and ctx is not None:
            r.reservation = saga
            _reserve(flow, ctx, now)
            saga = r.reservation
    r.reservation = saga


def _reserve(flow: Flow, ctx: FlowContext, now: int) -> None:
    """Start a reservation unless one is live; a retry after out_of_stock starts a new attempt."""
    r = flow.record
    held = r.reservation
    if held is not None and held.status in ("pending", "reserved", "deducted"):
        return
    attempt = 0 if held is None else held.attempt + 1
    saga, reqs = start_reservation(r.order, ctx.routing, now, ctx.ttl_ms, attempt=attempt)
    r.reservation = saga
    flow.requests += reqs


# ---- rules ------------------------------------------------------------------------------------


def _run_rules(
    flow: Flow,
    ctx: FlowContext,
    trigger: str,
    reason: str,
    now: int,
    depth: int,
    history_only: bool = False,
) -> None:
    r = flow.record
    actions = ctx.rules.evaluate(
        trigger,
        r.order,
        state=r.state,
        reason=reason,
        address_orders_24h=r.address_orders_24h,
        history_only=history_only,
    )
    for action in actions:
        _act(flow, ctx, action, now, depth)


def _act(flow: Flow, ctx: FlowContext, action: Action, now: int, depth: int) -> None:
    r = flow.record
    if action.kind == "hold" and action.rule in r.waived_rules:
        return  # an operator already lifted this rule's hold on this order
    flow.add_audit(
        [
            rule_entry(
                r.order.id,
                r.audit_seq,
                state=r.state,
                action=action.kind,
                value=action.value,
                rule=action.rule,
                at=now,
            )
        ]
    )
    if action.kind == "set_priority":
        r.priority = action.value
    elif action.kind == "add_tag":
        if action.value not in r.labels:
            r.labels.append(action.value)
    elif action.kind in ("notify", "route"):
        if action.kind == "route" and f"route:{action.value}" not in r.labels:
            r.labels.append(f"route:{action.value}")
        flow.alerts.append(
            Alert(
                order_id=r.order.id,
                kind=action.kind,
                severity="info",
                message=action.value if action.kind == "notify" else f"route to {action.value}",
                at=now,
                source=f"rule {action.rule}",
            )
        )
    elif action.kind in ("hold", "skip_state") and depth < MAX_RULE_DEPTH:
        data = {"state": action.value} if action.kind == "skip_state" else {"rule": action.rule}
        event = OrderEvent(
            order_id=r.order.id,
            event="hold" if action.kind == "hold" else "skip_state",
            actor="system",
            source="rules",
            reason=action.value if action.kind == "hold" else f"rule {action.rule}",
            at=now,
            data=data,
        )
        _apply(flow, event, ctx, now, depth + 1)  # a refusal (e.g. already held) changes nothing


# ---- timers -----------------------------------------------------------------------------------


def on_deadline(
    rec: OrderRecord, d: Deadline, ctx: FlowContext, now: int
) -> tuple[Flow, Breach | None]:
    """A due deadline: its key is always deleted; the order may move (cancel, complete) or get
    a breach (audit + alert) and the next escalation armed."""
    flow = Flow(_copy(rec))
    r = flow.record
    key = deadline_key(d)
    flow.retime([key], [])
    outcome = fire(
        d,
        state=r.state,
        since=r.state_since,
        payment_status=r.order.payment_status,
        policy=ctx.policy,
        now=now,
    )
    if outcome.outcome == "event" and outcome.event is not None:
        repeat, recent = remember_event(tuple(r.recent_events), outcome.event.event_id)
        if not repeat:
            r.recent_events = list(recent)
            _apply(flow, outcome.event, ctx, now, depth=0)
        return flow, None
    if outcome.outcome == "breach" and outcome.breach is not None:
        b = outcome.breach
        flow.add_audit([breach_audit(b, r.audit_seq)])
        flow.alerts.append(
            Alert(
                order_id=r.order.id,
                kind="sla_breach" if b.level == 0 else "sla_escalation",
                severity=b.severity,
                message=f"{b.kind}: {b.state} past due by {(now - b.due_at) // 1000} s",
                at=now,
                rung=b.rung,
                source="sla",
            )
        )
        if outcome.next is not None:
            flow.retime([], [outcome.next])
        return flow, b
    return flow, None
