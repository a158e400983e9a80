"""The memory budget's decision rule, from samples (streams.process.memory_budget)."""

from __future__ import annotations

from streams.process.memory_budget import ACT_AT, Action, memory_action

MIB = 2**20
BUDGET = 1200 * MIB


def rss(api: int, broker: int, workers: int) -> dict[str, int]:
    return {"api": api * MIB, "broker": broker * MIB, "workers": workers * MIB}


def decide(  # type: ignore[no-untyped-def]
    sample: dict[str, int], workers=None, swap=600.0, any_=600.0, embedded=True, standby=0
) -> Action:
    workers = workers if workers is not None else [(150 * MIB, 600.0), (150 * MIB, 600.0)]
    return memory_action(sample, workers, BUDGET, swap, any_, embedded, standby * MIB)


def test_below_the_high_water_mark_nothing_happens() -> None:
    assert decide(rss(300, 400, 300)).kind == "none"  # 1,000 MiB < 85 % of 1,200
    assert memory_action(rss(900, 900, 900), [], 0, 600.0, 600.0, True).kind == "none"  # off


def test_past_the_high_water_mark_but_under_the_budget_the_broker_is_swapped() -> None:
    total = 300 + 450 + 300
    assert BUDGET * ACT_AT < total * MIB < BUDGET
    assert decide(rss(300, 450, 300)) == Action("broker")


def test_a_worker_restarted_a_moment_ago_does_not_delay_the_broker_swap() -> None:
    assert decide(rss(300, 450, 300), any_=5.0) == Action("broker")
    assert decide(rss(300, 450, 300), swap=10.0, any_=10.0).kind == "none"  # 30 s between swaps


def test_the_swap_starts_while_there_is_room_for_the_next_brokers_workers() -> None:
    # 900 MiB alone is under the mark; with two standby workers (2 x 120) beside it, it is not
    assert decide(rss(250, 200, 450)).kind == "none"
    assert decide(rss(250, 200, 450), standby=240) == Action("broker")
    # a broker holding under an eighth of the budget is not worth a swap: nothing to gain
    assert decide(rss(300, 140, 500), standby=240).kind != "broker"


def test_the_biggest_grown_worker_restarts_when_the_workers_hold_the_overage() -> None:
    workers = [(200 * MIB, 600.0), (350 * MIB, 600.0), (400 * MIB, 30.0)]  # the last is fresh
    assert decide(rss(250, 100, 950), workers) == Action("worker", 1)
    assert decide(rss(250, 100, 950), workers, any_=20.0).kind == "none"
    fresh = [(size, 20.0) for size, _ in workers]  # all just restarted: wait, no warning either
    assert decide(rss(250, 100, 950), fresh).kind == "none"


def test_a_budget_the_api_alone_fills_is_reported_not_thrashed() -> None:
    assert decide(rss(900, 100, 200)) == Action("too_small")
    assert decide(rss(300, 450, 300), embedded=False).kind == "worker"  # no broker to swap
