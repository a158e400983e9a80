"""The shipped rules do what the merchant asked; bad files are refused; edits reload safely."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.config_check import ConfigInvalid
from core.model import CanonicalOrder, LineItem, Recipient
from core.rules import Action, RuleSet, RulesFile

CONFIG = Path(__file__).resolve().parents[2] / "config" / "rules.toml"


@pytest.fixture(scope="module")
def rules() -> RuleSet:
    return RuleSet.from_toml(CONFIG)


def order(
    total: int = 19_900, currency: str = "CNY", tags: list[str] | None = None, sku: str = "MUG"
) -> CanonicalOrder:
    return CanonicalOrder(
        id="os_r1",
        channel="taobao",
        channel_order_no="1",
        created_at=1,
        updated_at=1,
        currency=currency,
        total=total,
        payment_status="paid",
        lines=[LineItem(sku=sku, channel_sku=sku, quantity=1, unit_price=total, line_total=total)],
        recipient=Recipient(name="x"),
        tags=tags or [],
    )


def kinds(actions: list[Action]) -> list[tuple[str, str]]:
    return [(a.kind, a.value) for a in actions]


def test_urgent_paid_gets_priority_pick(rules: RuleSet) -> None:
    acts = rules.evaluate("state:paid", order(tags=["urgent"]), state="paid")
    assert ("set_priority", "high") in kinds(acts)
    assert {a.rule for a in acts} == {"urgent-priority-pick", "vip-priority-lane"}
    assert rules.evaluate("state:paid", order(), state="paid") == []


def test_vip_rides_the_priority_lane_before_payment(rules: RuleSet) -> None:
    acts = rules.evaluate("state:pending_payment", order(tags=["vip"]), state="pending_payment")
    assert kinds(acts) == [("set_priority", "high")]


@pytest.mark.parametrize(
    ("total", "currency", "held"),
    [
        (500_000, "CNY", False),  # exactly 5,000.00
        (500_001, "CNY", True),  # 5,000.01
        (5_000, "JPY", False),  # 5,000 yen: exponent 0
        (5_001, "JPY", True),
        (5_000_000, "KWD", False),  # 5,000.000 dinar: exponent 3
        (5_000_001, "KWD", True),
    ],
)
def test_big_orders_wait_for_a_manager(
    rules: RuleSet, total: int, currency: str, held: bool
) -> None:
    acts = rules.evaluate("state:paid", order(total, currency), state="paid")
    assert (("hold", "amount over 5,000: manager approval") in kinds(acts)) is held
    if held:
        assert ("notify", "order os_r1 (taobao) held for manager approval") in kinds(acts)


def test_same_address_three_times_in_a_day_hints_a_merge(rules: RuleSet) -> None:
    two = rules.evaluate("state:paid", order(), state="paid", address_orders_24h=2)
    assert two == []
    three = rules.evaluate("state:paid", order(), state="paid", address_orders_24h=3)
    assert kinds(three)[0] == ("add_tag", "merge_shipment")
    assert kinds(three)[1][1].startswith("3 orders to one address")


@pytest.mark.parametrize(
    ("reason", "qc"),
    [("发错了颜色", True), ("包裹破损", True), ("少发一件", True), ("不想要了", False)],
)
def test_refund_reasons_route_to_quality_check(rules: RuleSet, reason: str, qc: bool) -> None:
    acts = rules.evaluate("refund_request", order(), state="delivered", reason=reason)
    assert (("route", "quality_check") in kinds(acts)) is qc


@pytest.mark.parametrize(
    ("rule", "key", "words"),
    [
        ({"when": {"state": "paid"}, "then": [{"add_tag": "x"}]}, "rule[0].name", "required"),
        (
            {"name": "a", "when": {"state": "packed"}, "then": [{"add_tag": "x"}]},
            "rule[a].when.state",
            "unknown state",
        ),
        (
            {"name": "a", "when": {"event": "teleport"}, "then": [{"add_tag": "x"}]},
            "rule[a].when.event",
            "unknown event",
        ),
        (
            {
                "name": "a",
                "when": {"state": "paid"},
                "if": {"amount_gt": "5,000"},
                "then": [{"add_tag": "x"}],
            },
            "rule[a].if.amount_gt",
            "not a decimal",
        ),
        (
            {
                "name": "a",
                "when": {"state": "paid"},
                "if": {"colour": ["red"]},
                "then": [{"add_tag": "x"}],
            },
            "rule[a].if.colour",
            "unknown condition",
        ),
        (
            {"name": "a", "when": {"state": "paid"}, "then": [{"set_priority": "urgent"}]},
            "rule[a].then[0].set_priority",
            "not one of",
        ),
        (
            {"name": "a", "when": {"state": "paid"}, "then": [{"skip_state": "picking"}]},
            "rule[a].then[0].skip_state",
            "cannot be skipped",
        ),
        (
            {"name": "a", "when": {"state": "paid"}, "then": [{"notify": "hi {buyer}"}]},
            "rule[a].then[0].notify",
            "unknown placeholder",
        ),
        (
            {"name": "a", "when": {"state": "paid"}, "then": [{"explode": "x"}]},
            "rule[a].then[0].explode",
            "unknown action",
        ),
        (
            {
                "name": "a",
                "when": {"state": "paid"},
                "if": {"amount_gt": {"XXX": "1"}},
                "then": [{"add_tag": "x"}],
            },
            "rule[a].if.amount_gt.XXX",
            "unknown currency",
        ),
    ],
)
def test_invalid_rules_are_refused_naming_rule_and_key(rule: dict, key: str, words: str) -> None:
    with pytest.raises(ConfigInvalid) as info:
        RuleSet.from_dict({"rule": [rule]})
    assert any(e.key == key and words in e.reason for e in info.value.errors), info.value


def test_event_and_state_together_and_per_currency_amounts() -> None:
    rs = RuleSet.from_dict(
        {
            "rule": [
                {
                    "name": "late-refund",
                    "when": {"event": "refund_request", "state": ["delivered"]},
                    "if": {"amount_gte": {"USD": "100"}, "channel_in": ["taobao"]},
                    "then": [{"notify": "refund on {order_id} in {state}"}],
                }
            ]
        }
    )
    usd = order(10_000, "USD")
    assert kinds(rs.evaluate("refund_request", usd, state="delivered")) == [
        ("notify", "refund on os_r1 in delivered")
    ]
    assert rs.evaluate("refund_request", usd, state="paid") == []
    assert rs.evaluate("refund_request", order(10_000, "CNY"), state="delivered") == []


RULE_A = '[[rule]]\nname = "a"\nwhen = { state = "paid" }\nthen = [{ add_tag = "A" }]\n'
RULE_B = '[[rule]]\nname = "b"\nwhen = { state = "paid" }\nthen = [{ add_tag = "B" }]\n'


def _write(path: Path, text: str, mtime_ns: int) -> None:
    path.write_text(text, encoding="utf-8")
    os.utime(path, ns=(mtime_ns, mtime_ns))  # same-second edits must still be seen


def test_hot_reload_swaps_good_edits_and_keeps_the_last_good_set(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    _write(path, RULE_A, 1_000_000_000)
    rf = RulesFile(path)
    tags = lambda: kinds(rf.rules.evaluate("state:paid", order(), state="paid"))  # noqa: E731
    assert tags() == [("add_tag", "A")] and not rf.poll()

    _write(path, RULE_B, 2_000_000_000)
    assert rf.poll() and tags() == [("add_tag", "B")] and rf.error is None

    _write(path, RULE_B.replace('"paid"', '"packed"'), 3_000_000_000)
    assert not rf.poll()
    assert tags() == [("add_tag", "B")]  # the running set survives a broken edit
    assert rf.error is not None and "rule[b].when.state" in str(rf.error)

    _write(path, "not [toml", 4_000_000_000)
    assert not rf.poll() and rf.error is not None and tags() == [("add_tag", "B")]

    _write(path, RULE_A, 5_000_000_000)
    assert rf.poll() and rf.error is None and tags() == [("add_tag", "A")]

    path.unlink()
    assert not rf.poll() and rf.error is not None and tags() == [("add_tag", "A")]


def test_invalid_file_fails_at_start_up(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[[rule]]\nname = "x"\n', encoding="utf-8")
    with pytest.raises(ConfigInvalid) as info:
        RulesFile(path)
    keys = {e.key for e in info.value.errors}
    assert {"rule[x].when", "rule[x].then"} <= keys


def test_the_smallest_count_any_rule_waits_for(rules: RuleSet) -> None:
    assert rules.history_min == 3
    two = RuleSet.from_dict(
        {
            "rule": [
                {
                    "name": "a",
                    "when": {"state": "paid"},
                    "if": {"address_orders_24h_gte": 5},
                    "then": [{"add_tag": "a"}],
                },
                {
                    "name": "b",
                    "when": {"state": "shipped"},
                    "if": {"address_orders_24h_gte": 2},
                    "then": [{"add_tag": "b"}],
                },
            ]
        }
    )
    assert two.history_min == 2
    tag = [{"add_tag": "c"}]
    none = RuleSet.from_dict({"rule": [{"name": "c", "when": {"state": "paid"}, "then": tag}]})
    assert none.history_min == 0


def test_history_only_evaluates_the_rules_that_read_the_count(rules: RuleSet) -> None:
    big = order(600_000, "USD")  # the manager-approval rule holds for state:paid too
    everything = rules.evaluate("state:paid", big, state="paid", address_orders_24h=3)
    assert ("add_tag", "merge_shipment") in kinds(everything)
    assert any(k == "hold" for k, _ in kinds(everything))
    only = rules.evaluate("state:paid", big, state="paid", address_orders_24h=3, history_only=True)
    assert [k for k, _ in kinds(only)] == ["add_tag", "notify"]
    assert rules.evaluate("state:paid", big, state="paid", history_only=True) == []
