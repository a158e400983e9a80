"""SLA policy loading, the deadline index keys, firing, escalation, and the deposit-order rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.config_check import ConfigInvalid, parse_duration
from core.model import PAYMENT_STATUSES
from core.sla import (
    DEADLINE_PREFIX,
    Deadline,
    SlaPolicy,
    breach_audit,
    deadline_key,
    deadlines_for,
    decode_deadline,
    due_until,
    encode_deadline,
    fire,
    next_escalation,
    parse_deadline_key,
    plan_timers,
    rearm,
)
from core.state_machine import OrderEvent, Transition, apply_event

CONFIG = Path(__file__).resolve().parents[2] / "config" / "sla.toml"
MIN = 60_000
HOUR = 60 * MIN


@pytest.fixture(scope="module")
def policy() -> SlaPolicy:
    return SlaPolicy.from_toml(CONFIG)


def test_shipped_defaults(policy: SlaPolicy) -> None:
    after = {k: t.after_ms for k, t in policy.timers.items()}
    assert after == {
        "payment_timeout": 15 * MIN,
        "pick_start": 90_000,
        "picking_slow": 4 * HOUR,
        "tracking_push": 3 * MIN,
        "carrier_silence": 48 * HOUR,
        "auto_complete": 7 * 24 * HOUR,
    }
    assert policy.escalate_every_ms == 2 * HOUR
    assert policy.ladder == ("team_lead", "operations_manager", "director")


def test_durations_can_be_overridden_to_seconds() -> None:
    p = SlaPolicy.from_toml(
        CONFIG, {"timers.payment_timeout.after": "2s", "escalation.every": "1s"}
    )
    assert p.timers["payment_timeout"].after_ms == 2_000 and p.escalate_every_ms == 1_000


@pytest.mark.parametrize(
    ("override", "key", "words"),
    [
        ({"timers.pick_start.state": "packed"}, "timers.pick_start.state", "unknown state"),
        (
            {"timers.payment_timeout.by_payment.layaway": "none"},
            "timers.payment_timeout.by_payment.layaway",
            "unknown payment status",
        ),
        (
            {"timers.auto_complete.by_payment": {"paid": "apply"}},
            "timers.auto_complete.by_payment.deposit_paid",
            "not handled",
        ),
        (
            {"timers.payment_timeout.by_payment.deposit_paid": "apply"},
            "timers.payment_timeout.by_payment.deposit_paid",
            "never auto-cancelled",
        ),
        (
            {"timers.payment_timeout.by_payment.partially_paid": "apply"},
            "timers.payment_timeout.by_payment.partially_paid",
            "never auto-cancelled",
        ),
        ({"timers.pick_start.after": "90"}, "timers.pick_start.after", "not a duration"),
        ({"timers.pick_start.action": "explode"}, "timers.pick_start.action", "not one of"),
        ({"timers.pick_start.action": "cancel"}, "timers.pick_start.action", "only applies"),
        ({"escalation.ladder": []}, "escalation.ladder", "non-empty"),
        ({"timers.pick_start.colour": "red"}, "timers.pick_start.colour", "unknown key"),
    ],
)
def test_bad_policy_fails_naming_the_key(override: dict, key: str, words: str) -> None:
    with pytest.raises(ConfigInvalid) as info:
        SlaPolicy.from_toml(CONFIG, override)
    assert any(e.key == key and words in e.reason for e in info.value.errors), info.value
    assert key in str(info.value)


def test_cancel_timer_must_name_every_payment_status() -> None:
    data = {"timers": {"t": {"state": "pending_payment", "after": "15m", "action": "cancel"}}}
    with pytest.raises(ConfigInvalid) as info:
        SlaPolicy.from_dict(data)
    assert info.value.errors[0].key == "timers.t.by_payment"
    assert "deposit_paid" in info.value.errors[0].reason


def test_parse_duration() -> None:
    assert parse_duration("15m") == 15 * MIN and parse_duration("7d") == 7 * 24 * HOUR
    assert isinstance(parse_duration(900), str) and isinstance(parse_duration("0s"), str)


# ---- deadlines and keys -----------------------------------------------------------------------


def test_deposit_orders_get_no_cancel_deadline(policy: SlaPolicy) -> None:
    unpaid = deadlines_for("pending_payment", 0, "unpaid", policy, order_id="os_1")
    assert [d.kind for d in unpaid] == ["payment_timeout"] and unpaid[0].at == 15 * MIN
    assert deadlines_for("pending_payment", 0, "deposit_paid", policy, order_id="os_1") == []
    partial = deadlines_for("pending_payment", 0, "partially_paid", policy, order_id="os_1")
    assert [d.kind for d in partial] == ["payment_timeout"]


@pytest.mark.parametrize("status", ["deposit_paid", "partially_paid"])
def test_deposit_order_is_never_cancelled_even_by_an_old_deadline(
    policy: SlaPolicy, status: str
) -> None:
    # armed while unpaid, the deposit arrived before it fired
    d = deadlines_for("pending_payment", 0, "unpaid", policy, order_id="os_1")[0]
    out = fire(d, state="pending_payment", since=0, payment_status=status, policy=policy, now=d.at)
    assert out.outcome in ("stale", "breach") and out.event is None


def test_unpaid_order_is_cancelled_through_the_state_machine(policy: SlaPolicy) -> None:
    d = deadlines_for("pending_payment", 0, "unpaid", policy, order_id="os_1")[0]
    out = fire(
        d, state="pending_payment", since=0, payment_status="unpaid", policy=policy, now=d.at
    )
    assert out.outcome == "event" and out.event is not None
    assert out.event.event == "payment_timeout" and out.event.source == "sla"
    t = apply_event("pending_payment", out.event, payment_status="unpaid")
    assert isinstance(t, Transition) and t.effects == ("release_stock",)


def test_deadline_key_round_trip_and_order(policy: SlaPolicy) -> None:
    ds = [
        Deadline(at=at, order_id=f"os_{i}", kind="pick_start", state="paid", since=0, level=lvl)
        for i, (at, lvl) in enumerate([(5, 0), (300, 2), (2**40, 1), (70_000, 0)])
    ]
    keys = [deadline_key(d) for d in ds]
    assert all(k.startswith(DEADLINE_PREFIX) for k in keys)
    assert [parse_deadline_key(k)[0] for k in sorted(keys)] == sorted(d.at for d in ds)
    assert parse_deadline_key(keys[1]) == (300, "os_1", "pick_start", 2)
    assert due_until(300) > keys[1] > keys[0] and due_until(299) < keys[1]
    assert decode_deadline(encode_deadline(ds[2])) == ds[2]


def test_moving_on_deletes_old_keys_and_arms_new(policy: SlaPolicy) -> None:
    old = deadlines_for("paid", 0, "paid", policy, order_id="os_1")
    t = apply_event(
        "paid", OrderEvent(order_id="os_1", event="pick_start", at=10), payment_status="paid"
    )
    assert isinstance(t, Transition)
    plan = plan_timers(t, old, at=10, payment_status="paid", policy=policy, order_id="os_1")
    assert plan.delete == [deadline_key(old[0])]
    assert [(d.kind, d.at) for d in plan.arm] == [("picking_slow", 10 + 4 * HOUR)]


def test_payment_change_in_place_keeps_the_clock(policy: SlaPolicy) -> None:
    old = deadlines_for("pending_payment", 0, "unpaid", policy, order_id="os_1")
    plan = rearm(
        old,
        state="pending_payment",
        since=0,
        payment_status="deposit_paid",
        policy=policy,
        order_id="os_1",
    )
    assert plan.delete == [deadline_key(old[0])] and plan.arm == []
    same = rearm(
        old,
        state="pending_payment",
        since=0,
        payment_status="unpaid",
        policy=policy,
        order_id="os_1",
    )
    assert same.delete == [] and same.arm == old


def test_carrier_update_restarts_the_silence_timer(policy: SlaPolicy) -> None:
    old = deadlines_for("in_transit", 0, "paid", policy, order_id="os_1")
    t = apply_event(
        "in_transit",
        OrderEvent(order_id="os_1", event="carrier_update", at=HOUR),
        payment_status="paid",
    )
    assert isinstance(t, Transition)
    plan = plan_timers(t, old, at=HOUR, payment_status="paid", policy=policy, order_id="os_1")
    assert plan.delete == [deadline_key(old[0])] and plan.arm[0].at == HOUR + 48 * HOUR
    # the old deadline, had it not been deleted, is stale: the clock restarted
    out = fire(
        old[0], state="in_transit", since=HOUR, payment_status="paid", policy=policy, now=old[0].at
    )
    assert out.outcome == "stale"


def test_deadline_of_an_order_that_moved_on_is_stale(policy: SlaPolicy) -> None:
    d = deadlines_for("paid", 0, "paid", policy, order_id="os_1")[0]
    out = fire(d, state="picking", since=50, payment_status="paid", policy=policy, now=d.at)
    assert out.outcome == "stale" and "moved on" in out.reason


def test_breach_escalates_up_the_ladder_then_stops(policy: SlaPolicy) -> None:
    d = deadlines_for("paid", 0, "paid", policy, order_id="os_1")[0]
    rungs = []
    seen_at = []
    while d is not None:
        out = fire(d, state="paid", since=0, payment_status="paid", policy=policy, now=d.at + 5)
        assert out.outcome == "breach" and out.breach is not None
        rungs.append(out.breach.rung)
        seen_at.append(d.at)
        entry = breach_audit(out.breach, seq=len(rungs))
        assert entry.from_state == entry.to_state == "paid" and entry.source == "sla"
        d = out.next
    assert rungs == ["", "team_lead", "operations_manager", "director"]
    assert seen_at == [90_000 + i * 2 * HOUR for i in range(4)]


def test_auto_complete_after_seven_days(policy: SlaPolicy) -> None:
    d = deadlines_for("delivered", 0, "paid", policy, order_id="os_1")[0]
    out = fire(d, state="delivered", since=0, payment_status="paid", policy=policy, now=d.at)
    assert out.event is not None and out.event.event == "complete"
    assert next_escalation(d, policy) is None  # moving timers do not escalate


def test_every_payment_status_named_for_moving_timers(policy: SlaPolicy) -> None:
    for t in policy.timers.values():
        assert set(t.by_payment) == set(PAYMENT_STATUSES)
