"""The transition table does what the life cycle says, refuses the rest, and folds cleanly."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.audit import audit_decoder, audit_encoder, audit_key, audit_prefix, parse_audit_key
from core.model import PAYMENT_STATUSES
from core.state_machine import (
    EVENTS,
    STATES,
    TERMINAL,
    EventError,
    OrderEvent,
    Refusal,
    Transition,
    apply_event,
    fold,
    remember_event,
    validate_event,
)

# The life cycle as the issue describes it, written independently of the table: state -> events
# that move (or loop) it. Everything else must be refused.
ALLOWED: dict[str, set[str]] = {
    "pending_payment": {
        "payment_received",
        "payment_timeout",
        "cancel",
        "hold",
        "stock_refused",
        "mark_duplicate",
        "refund_request",
        "skip_state",
    },
    "paid": {"pick_start", "cancel", "hold", "refund_request", "stock_refused", "mark_duplicate"},
    "picking": {"ship", "cancel", "hold", "refund_request"},
    "shipped": {
        "tracking_pushed",
        "carrier_pickup",
        "carrier_update",
        "delivered",
        "carrier_exception",
        "refund_request",
    },
    "in_transit": {"carrier_update", "carrier_exception", "delivered", "refund_request"},
    "delivered": {"complete", "refund_request", "skip_state"},
    "completed": set(),
    "cancelled": set(),
    "refund_requested": {
        "refund_approve",
        "refund_reject",
        # carrier events advance the remembered state (resume "shipped" here)
        "carrier_pickup",
        "carrier_update",
        "carrier_exception",
        "delivered",
    },
    "refunded": set(),
    "held": {
        "release",
        "review_approve",
        "review_reject",
        "cancel",
        "refund_request",
        "stock_refused",
        "mark_duplicate",
    },
    "duplicate": set(),
    "out_of_stock": {"restock_retry", "cancel", "hold", "refund_request", "mark_duplicate"},
}
# Events whose guard needs a specific payment status to pass.
PAYMENT_FOR = {"payment_received": "paid", "payment_timeout": "unpaid"}


def ev(name: str, at: int = 1_000, **data: str) -> OrderEvent:
    return OrderEvent(order_id="os_1", event=name, at=at, data=data)


def favourable(state: str, event: str) -> Transition | Refusal:
    """Apply with everything a guard could ask for, so only the table decides."""
    data = {"tracking_no": "SF123", "state": state}
    resume = {"refund_requested": "shipped", "held": "paid"}.get(state, "")
    return apply_event(
        state,
        OrderEvent(order_id="os_1", event=event, at=5_000, data=data),
        payment_status=PAYMENT_FOR.get(event, "paid"),
        resume_state=resume,
        last_carrier_at=1_000,
    )


def test_expected_matrix_covers_every_state() -> None:
    assert set(ALLOWED) == set(STATES)
    assert all(events <= set(EVENTS) for events in ALLOWED.values())


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("event", EVENTS)
def test_every_pair_is_allowed_or_refused(state: str, event: str) -> None:
    result = favourable(state, event)
    if event in ALLOWED[state]:
        assert isinstance(result, Transition), result
        assert result.from_state == state
        assert result.to_state in STATES
        assert result.steps[0][0] == state and result.steps[-1][1] == result.to_state
    else:
        assert isinstance(result, Refusal), result
        assert result.state == state and result.event == event and result.reason


@pytest.mark.parametrize("state", sorted(TERMINAL))
def test_terminal_states_never_move(state: str) -> None:
    for event in EVENTS:
        assert isinstance(favourable(state, event), Refusal)


def test_unknown_event_is_refused() -> None:
    r = apply_event("paid", ev("teleport"), payment_status="paid")
    assert isinstance(r, Refusal) and "unknown event" in r.reason


# ---- payment and deposits ---------------------------------------------------------------------


@pytest.mark.parametrize("status", ["deposit_paid", "partially_paid", "paid", "refunded"])
def test_payment_timeout_never_cancels_a_paid_or_deposit_order(status: str) -> None:
    r = apply_event("pending_payment", ev("payment_timeout"), payment_status=status)
    assert isinstance(r, Refusal) and "only unpaid" in r.reason


def test_payment_timeout_cancels_unpaid_and_releases_stock() -> None:
    r = apply_event("pending_payment", ev("payment_timeout"), payment_status="unpaid")
    assert isinstance(r, Transition)
    assert r.to_state == "cancelled" and r.effects == ("release_stock",)


def test_deposit_does_not_make_the_order_paid() -> None:
    r = apply_event("pending_payment", ev("payment_received"), payment_status="deposit_paid")
    assert isinstance(r, Refusal)


def test_cancel_refunds_only_what_was_paid() -> None:
    unpaid = apply_event("pending_payment", ev("cancel"), payment_status="unpaid")
    deposit = apply_event("pending_payment", ev("cancel"), payment_status="deposit_paid")
    assert isinstance(unpaid, Transition) and unpaid.effects == ("release_stock",)
    assert isinstance(deposit, Transition)
    assert deposit.effects == ("release_stock", "refund_payment")


def test_second_payment_callback_is_stale() -> None:
    r = apply_event("picking", ev("payment_received"), payment_status="paid")
    assert isinstance(r, Refusal) and r.stale


# ---- shipping and carriers --------------------------------------------------------------------


def test_ship_needs_tracking_and_deducts_stock() -> None:
    missing = apply_event("picking", ev("ship"), payment_status="paid")
    assert isinstance(missing, Refusal) and "tracking_no" in missing.reason
    ok = apply_event("picking", ev("ship", tracking_no="SF1"), payment_status="paid")
    assert isinstance(ok, Transition) and ok.effects == ("deduct_stock",)


def test_delivered_while_shipped_passes_through_in_transit() -> None:
    r = apply_event("shipped", ev("delivered", at=9), payment_status="paid")
    assert isinstance(r, Transition)
    assert r.steps == (("shipped", "in_transit"), ("in_transit", "delivered"))
    assert r.to_state == "delivered" and r.carrier_at == 9


@pytest.mark.parametrize("late", ["carrier_pickup", "carrier_update", "carrier_exception"])
def test_carrier_events_after_delivery_are_stale(late: str) -> None:
    r = apply_event("delivered", ev(late), payment_status="paid")
    assert isinstance(r, Refusal) and r.stale and "delivered" in r.reason


def test_pickup_after_in_transit_is_stale() -> None:
    r = apply_event("in_transit", ev("carrier_pickup"), payment_status="paid")
    assert isinstance(r, Refusal) and r.stale


def test_older_carrier_update_does_not_restart_the_timer() -> None:
    old = apply_event(
        "in_transit", ev("carrier_update", at=50), payment_status="paid", last_carrier_at=100
    )
    assert isinstance(old, Refusal) and old.stale
    new = apply_event(
        "in_transit", ev("carrier_update", at=150), payment_status="paid", last_carrier_at=100
    )
    assert isinstance(new, Transition)
    assert new.to_state == "in_transit" and new.timers == "restart" and new.carrier_at == 150


def test_carrier_exception_when_shipped_goes_back_to_picking_with_alert() -> None:
    r = apply_event("shipped", ev("carrier_exception"), payment_status="paid")
    assert isinstance(r, Transition) and r.to_state == "picking"
    assert "alert" in r.effects and "reverse_deduct" in r.effects


def test_carrier_exception_in_transit_alerts_without_moving() -> None:
    r = apply_event("in_transit", ev("carrier_exception"), payment_status="paid")
    assert isinstance(r, Transition) and r.to_state == "in_transit"
    assert r.effects == ("alert",) and r.timers == "keep"


def test_tracking_pushed_clears_the_timer() -> None:
    r = apply_event("shipped", ev("tracking_pushed"), payment_status="paid")
    assert isinstance(r, Transition) and r.to_state == "shipped" and r.timers == "clear"


def test_carrier_events_during_a_refund_advance_the_remembered_state() -> None:
    r = apply_event(
        "refund_requested", ev("delivered"), payment_status="paid", resume_state="shipped"
    )
    assert isinstance(r, Transition)
    assert r.to_state == "refund_requested" and r.resume_state == "delivered"


# ---- refunds, holds, reviews, out of stock -----------------------------------------------------


@pytest.mark.parametrize(
    ("before", "releases"),
    [("paid", True), ("picking", True), ("shipped", False), ("delivered", False)],
)
def test_refund_approve_releases_stock_only_before_shipment(before: str, releases: bool) -> None:
    req = apply_event(before, ev("refund_request"), payment_status="paid")
    assert isinstance(req, Transition) and req.resume_state == before
    ok = apply_event(
        "refund_requested",
        ev("refund_approve"),
        payment_status="paid",
        resume_state=req.resume_state,
    )
    assert isinstance(ok, Transition) and ok.to_state == "refunded"
    assert ("release_stock" in ok.effects) is releases and "refund_payment" in ok.effects


def test_refund_reject_returns_to_the_remembered_state() -> None:
    r = apply_event(
        "refund_requested", ev("refund_reject"), payment_status="paid", resume_state="in_transit"
    )
    assert isinstance(r, Transition) and r.to_state == "in_transit" and r.resume_state == ""
    lost = apply_event("refund_requested", ev("refund_reject"), payment_status="paid")
    assert isinstance(lost, Refusal)


@pytest.mark.parametrize(
    ("status", "expected"),
    [("unpaid", "pending_payment"), ("deposit_paid", "pending_payment"), ("paid", "paid")],
)
def test_review_approve_goes_where_the_payment_says(status: str, expected: str) -> None:
    r = apply_event("held", ev("review_approve"), payment_status=status)
    assert isinstance(r, Transition) and r.to_state == expected
    assert r.effects == ("reserve_stock",)


def test_review_reject_cancels() -> None:
    r = apply_event("held", ev("review_reject"), payment_status="unpaid")
    assert isinstance(r, Transition) and r.to_state == "cancelled"


def test_release_follows_a_payment_that_arrived_while_held() -> None:
    hold = apply_event("pending_payment", ev("hold"), payment_status="unpaid")
    assert isinstance(hold, Transition) and hold.resume_state == "pending_payment"
    r = apply_event("held", ev("release"), payment_status="paid", resume_state="pending_payment")
    assert isinstance(r, Transition) and r.to_state == "paid"
    picking = apply_event("held", ev("release"), payment_status="paid", resume_state="picking")
    assert isinstance(picking, Transition) and picking.to_state == "picking"


def test_out_of_stock_retry_reserves_again() -> None:
    r = apply_event("out_of_stock", ev("restock_retry"), payment_status="paid")
    assert isinstance(r, Transition) and r.to_state == "paid" and r.effects == ("reserve_stock",)


def test_skip_state_only_where_allowed() -> None:
    ok = apply_event(
        "pending_payment", ev("skip_state", state="pending_payment"), payment_status="unpaid"
    )
    assert isinstance(ok, Transition) and ok.to_state == "paid"
    wrong = apply_event(
        "pending_payment", ev("skip_state", state="delivered"), payment_status="unpaid"
    )
    assert isinstance(wrong, Refusal)


# ---- validation and idempotency ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b"{not json", "$"),
        (b'{"event": "cancel", "at": 1}', "$"),  # order_id missing
        (b'{"order_id": "o", "event": "teleport", "at": 1}', "$.event"),
        (b'{"order_id": "o", "event": "cancel", "at": "now"}', "$.at"),
        (b'{"order_id": "o", "event": "cancel", "at": 0}', "$.at"),
        (b'{"order_id": "o", "event": "ship", "at": 1}', "$.data.tracking_no"),
        (b'{"order_id": "o", "event": "hold", "at": 1}', "$.reason"),
        (
            b'{"order_id": "o", "event": "skip_state", "at": 1, "data": {"state": "paid"}}',
            "$.data.state",
        ),
        (
            b'{"order_id": "o", "event": "cancel", "at": 1, "data": {"tracking_no": 5}}',
            "$.data[...]",
        ),  # msgspec names the map, not the key
    ],
)
def test_validate_event_names_the_field(body: bytes, field: str) -> None:
    r = validate_event(body)
    assert isinstance(r, EventError) and r.field == field and r.reason, r


def test_validate_event_accepts_mappings() -> None:
    r = validate_event({"order_id": "o", "event": "ship", "at": 5, "data": {"tracking_no": "X"}})
    assert isinstance(r, OrderEvent) and r.data == {"tracking_no": "X"}


def test_remember_event_is_bounded_and_detects_repeats() -> None:
    recent: tuple[str, ...] = ()
    for i in range(40):
        repeat, recent = remember_event(recent, f"e{i}", keep=8)
        assert not repeat
    assert len(recent) == 8 and recent[-1] == "e39"
    assert remember_event(recent, "e39", keep=8)[0]
    assert not remember_event(recent, "", keep=8)[0]


def test_fold_drops_repeated_event_ids() -> None:
    e = OrderEvent(order_id="os_1", event="pick_start", at=5, event_id="x")
    tl, outcomes = fold("os_1", "paid", [e, e], payment_status="paid")
    assert tl.state == "picking" and outcomes[1] is None and len(tl.audit) == 1


def test_happy_path_audit_reads_in_order() -> None:
    events = [
        OrderEvent(
            order_id="os_1",
            event="payment_received",
            at=1,
            data={"payment_status": "paid"},
            source="payment",
        ),
        ev("pick_start", 2),
        ev("ship", 3, tracking_no="SF1"),
        ev("delivered", 4),  # pickup and updates never arrived: passes through in_transit
        ev("complete", 5),
    ]
    tl, _ = fold("os_1", "pending_payment", events)
    assert tl.state == "completed"
    path = [(a.from_state, a.to_state) for a in tl.audit]
    assert path == [
        ("pending_payment", "paid"),
        ("paid", "picking"),
        ("picking", "shipped"),
        ("shipped", "in_transit"),
        ("in_transit", "delivered"),
        ("delivered", "completed"),
    ]
    keys = [audit_key(a.order_id, a.seq) for a in tl.audit]
    assert keys == sorted(keys) and all(k.startswith(audit_prefix("os_1")) for k in keys)
    assert parse_audit_key(keys[3]) == ("os_1", 3)
    assert audit_decoder.decode(audit_encoder.encode(tl.audit[0])) == tl.audit[0]


# ---- properties -------------------------------------------------------------------------------

event_strategy = st.builds(
    OrderEvent,
    order_id=st.just("os_p"),
    event=st.sampled_from((*EVENTS, "bogus")),
    at=st.integers(1, 10_000),
    event_id=st.one_of(st.just(""), st.text("abc", min_size=1, max_size=2)),
    data=st.fixed_dictionaries(
        {},
        optional={
            "tracking_no": st.sampled_from(["", "SF1"]),
            "state": st.sampled_from(STATES),
            "payment_status": st.sampled_from(PAYMENT_STATUSES),
        },
    ),
)


@settings(max_examples=300, deadline=None)
@given(
    start=st.sampled_from(STATES),
    status=st.sampled_from(PAYMENT_STATUSES),
    events=st.lists(event_strategy, max_size=30),
)
def test_random_sequences_stay_inside_the_table(
    start: str, status: str, events: list[OrderEvent]
) -> None:
    tl, outcomes = fold("os_p", start, events, payment_status=status)
    state = start
    applied_steps = 0
    for outcome in outcomes:
        if isinstance(outcome, Transition):
            assert outcome.from_state == state  # a refusal in between changed nothing
            state = outcome.to_state
            applied_steps += len(outcome.steps)
        assert state in STATES
    assert tl.state == state
    # one audit entry per step: an applied event without pass-through is exactly one entry
    assert len(tl.audit) == applied_steps
    assert [a.seq for a in tl.audit] == list(range(len(tl.audit)))
    for prev, nxt in zip(tl.audit, tl.audit[1:], strict=False):
        assert prev.to_state == nxt.from_state  # history is a connected path
    if tl.audit:
        assert tl.audit[0].from_state == start and tl.audit[-1].to_state == tl.state
    status_changes = any("payment_status" in e.data for e in events)
    if status in ("deposit_paid", "partially_paid") and not status_changes:
        # a deposit order never reaches cancelled through the payment timer
        assert not any(a.event == "payment_timeout" for a in tl.audit)
