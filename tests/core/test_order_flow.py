"""The order flow: what follows from a new order, an event, a timer, with the shipped policies."""

from __future__ import annotations

from pathlib import Path

import msgspec

from core.order_flow import FlowContext, on_created, on_deadline, on_event
from core.order_state import record_order
from core.routing import WarehouseRouting
from core.rules import RuleSet
from core.sla import SlaPolicy
from core.state_machine import OrderEvent, Refusal
from tests.core.test_dedup import T0, order

CONFIG = Path(__file__).resolve().parents[2] / "config"
CTX = FlowContext(
    SlaPolicy.from_toml(CONFIG / "sla.toml"),
    RuleSet.from_toml(CONFIG / "rules.toml"),
    WarehouseRouting.default(),
)


def created(**changes: object):  # type: ignore[no-untyped-def]
    o = order("1001")
    o = msgspec.structs.replace(o, **changes) if changes else o
    rec, _ = record_order(None, o, T0, T0)  # type: ignore[misc]
    return on_created(rec, CTX, T0)


def event(name: str, **data: str) -> OrderEvent:
    return OrderEvent(order_id=order("1001").id, event=name, actor="ana", at=T0 + 1, data=data)


def test_a_paid_order_is_audited_timed_and_reserved() -> None:
    flow = created()
    r = flow.record
    assert r.state == "paid"
    assert [(a.from_state, a.to_state, a.event) for a in flow.audit] == [
        ("", "paid", "order_received")
    ]
    assert [d.kind for d in r.deadlines] == ["pick_start"]
    assert [(q.op, q.sku) for q in flow.requests] == [("reserve", "MB-C200")]
    assert r.reservation is not None and r.reservation.status == "pending"


def test_an_unpaid_order_is_cancelled_by_its_timer_and_releases_stock() -> None:
    r = created(payment_status="unpaid").record
    assert r.state == "pending_payment"
    (due,) = r.deadlines
    flow, breach = on_deadline(r, due, CTX, due.at + 5)
    assert breach is None and flow.record.state == "cancelled"
    assert [q.op for q in flow.requests] == ["release"]
    assert flow.record.deadlines == []


def test_a_deposit_order_gets_no_cancel_timer() -> None:
    r = created(payment_status="deposit_paid").record
    assert r.state == "pending_payment"
    assert "payment_timeout" not in [d.kind for d in r.deadlines]


def test_cash_on_delivery_skips_the_payment_step() -> None:
    flow = created(payment_status="unpaid", tags=["cod"])
    assert flow.record.state == "paid"
    assert "payment_timeout" not in [d.kind for d in flow.record.deadlines]


def test_an_approved_rule_hold_stays_lifted() -> None:
    flow = created(total=600_000, currency="USD")  # 6,000 USD: held for a manager
    r = flow.record
    assert r.state == "held" and r.hold_rule == "big-order-manager-approval"
    approved = on_event(r, event("review_approve"), CTX, T0 + 2)
    assert not isinstance(approved, Refusal) and approved is not None
    assert approved.record.state == "paid"
    assert approved.record.hold_rule == ""


def test_a_refused_event_changes_nothing() -> None:
    r = created().record
    refusal = on_event(r, event("ship", tracking_no="SF1"), CTX, T0 + 2)
    assert isinstance(refusal, Refusal) and refusal.state == "paid"


def test_shipping_deducts_and_a_carrier_exception_voids_the_tracking_number() -> None:
    r = created().record
    r.reservation = msgspec.structs.replace(r.reservation, status="reserved")  # type: ignore[arg-type]
    for line in r.reservation.lines:  # type: ignore[union-attr]
        line.outcome = "granted"
    picked = on_event(r, event("pick_start"), CTX, T0 + 2)
    shipped = on_event(picked.record, event("ship", tracking_no="SF1"), CTX, T0 + 3)  # type: ignore[union-attr]
    assert [q.op for q in shipped.requests] == ["deduct"]  # type: ignore[union-attr]
    back = on_event(shipped.record, event("carrier_exception"), CTX, T0 + 4)  # type: ignore[union-attr]
    assert back.record.state == "picking" and back.record.tracking_no == ""  # type: ignore[union-attr]
    assert [a.kind for a in back.alerts] == ["alert"]  # type: ignore[union-attr]


def test_a_repeated_event_id_is_applied_once() -> None:
    r = created().record
    ev = msgspec.structs.replace(event("pick_start"), event_id="wms-1")
    first = on_event(r, ev, CTX, T0 + 2)
    assert first is not None and not isinstance(first, Refusal)
    assert on_event(first.record, ev, CTX, T0 + 3) is None


def test_a_recipient_count_runs_only_the_rules_that_read_it_once() -> None:
    from core.order_flow import on_recipient_count

    r = created().record
    assert r.state == "paid" and "merge_shipment" not in r.labels
    assert on_recipient_count(r, 2, CTX, T0 + 5) is not None  # kept, below the rule's 3
    below = on_recipient_count(r, 2, CTX, T0 + 5)
    assert below is not None and below.audit == [] and below.alerts == []
    flow = on_recipient_count(below.record, 3, CTX, T0 + 6)
    assert flow is not None
    assert flow.record.labels == ["merge_shipment"] and flow.record.address_orders_24h == 3
    assert [(a.actor, a.source, a.rule) for a in flow.audit] == [
        ("system", "rules", "same-address-merge-hint"),
        ("system", "rules", "same-address-merge-hint"),
    ]
    assert [(a.kind, a.source) for a in flow.alerts] == [("notify", "rule same-address-merge-hint")]
    assert flow.alerts[0].message.startswith("3 orders to one address")
    assert flow.requests == [] and flow.deadline_puts == []  # nothing but the rule acted
    assert on_recipient_count(flow.record, 3, CTX, T0 + 7) is None  # a redelivery


def test_a_count_that_came_first_is_applied_at_creation() -> None:
    o = order("1001")
    rec, _ = record_order(None, o, T0, T0)  # type: ignore[misc]
    flow = on_created(rec, CTX, T0, address_orders_24h=4)
    assert "merge_shipment" in flow.record.labels and flow.record.address_orders_24h == 4
    assert any(a.kind == "notify" and a.message.startswith("4 orders") for a in flow.alerts)


# ---- the health KPIs ----------------------------------------------------------------------------

MIN = 60_000


def _at(name: str, at: int, **data: str) -> OrderEvent:
    return OrderEvent(order_id=order("1001").id, event=name, actor="wh", at=at, data=data)


def _step(rec, name: str, at: int, **data: str):  # type: ignore[no-untyped-def]
    flow = on_event(rec, _at(name, at, **data), CTX, at)
    assert flow is not None and not isinstance(flow, Refusal), flow
    return flow


def test_a_slow_step_in_the_merchants_flow_is_one_flow_break() -> None:
    rec = created().record  # paid at T0
    quick = _step(rec, "pick_start", T0 + 2 * MIN)
    assert quick.kpis == [] and not quick.record.flow_broke
    slow = _step(rec, "pick_start", T0 + 16 * MIN)
    assert slow.kpis == ["flow_break"] and slow.record.flow_broke
    # a second slow step of the same order is not a second break
    later = _step(slow.record, "ship", T0 + 40 * MIN, tracking_no="SF1")
    assert "flow_break" not in later.kpis


def test_waiting_on_the_buyer_is_not_a_flow_break() -> None:
    rec = created(payment_status="unpaid").record  # pending_payment: the buyer's move
    flow = _step(rec, "payment_received", T0 + 30 * MIN, payment_status="paid")
    assert "flow_break" not in flow.kpis


def test_shipment_on_time_against_the_promise() -> None:
    rec = _step(created().record, "pick_start", T0 + MIN).record
    assert CTX.policy.ship_within_ms == 24 * 3_600_000  # config/sla.toml [kpi]
    paid = order("1001").paid_at or T0
    on_time = _step(rec, "ship", paid + 23 * 3_600_000, tracking_no="SF1")
    assert "shipped_on_time" in on_time.kpis
    late = _step(rec, "ship", paid + 25 * 3_600_000, tracking_no="SF1")
    assert "shipped_late" in late.kpis


def test_kpi_thresholds_are_policy() -> None:
    from core.config_check import ConfigInvalid

    policy = SlaPolicy.from_toml(CONFIG / "sla.toml", {"kpi.flow_break_after": "5m"})
    assert policy.flow_break_ms == 5 * MIN
    try:
        SlaPolicy.from_toml(CONFIG / "sla.toml", {"kpi.flow_break": "5m"})
    except ConfigInvalid as exc:
        assert "kpi.flow_break" in str(exc)
    else:
        raise AssertionError("an unknown kpi key must stop start-up")
