"""What the memory budget replaces, decided from one sample of resident memory.

Pure, so the rule is tested without processes; the supervisor measures and acts.
"""

from __future__ import annotations

from typing import Literal

import msgspec

# Act at this share of the budget. A broker swap runs the next broker and its workers beside
# the old ones for a few seconds (their memory is counted in ``standby``), and the old broker
# keeps growing until it is drained: acting early keeps that peak under the budget itself.
ACT_AT = 0.85
SWAP_GAP_S = 30.0  # between two broker swaps, and between any two replacements otherwise
FRESH_WORKER_S = 120.0  # a worker this young is as small as it gets: restarting it is thrash


class Action(msgspec.Struct, frozen=True):
    kind: Literal["none", "broker", "worker", "too_small"]
    worker: int = -1  # the worker's index, for kind == "worker"


NONE = Action("none")


def memory_action(
    rss: dict[str, int],
    workers: list[tuple[int, float]],
    budget: int,
    since_broker_swap: float,
    since_replacement: float,
    embedded_broker: bool,
    standby: int = 0,
) -> Action:
    """``rss``: bytes per role (api, broker, workers); ``workers``: (bytes, age in s) per index;
    ``standby``: what a broker swap adds while the old and the new pipeline run side by side
    (the next broker and its workers), so the swap starts while there is room for it.

    The embedded broker never trims what it holds, so it goes first once it holds an eighth
    of the budget, whatever was restarted a moment ago (waiting for that overshot the budget).
    A worker's memory (memtables, fetch buffers, Python's heap after a backlog) only shrinks
    when it restarts, which costs a rebalance and nothing else: its state is on disk.
    """
    if not budget:
        return NONE
    total = sum(rss.values())
    if (
        embedded_broker
        and total + standby > budget * ACT_AT
        and rss["broker"] >= budget // 8
        and since_broker_swap >= SWAP_GAP_S
    ):
        return Action("broker")
    if total <= budget * ACT_AT:
        return NONE
    if since_replacement < SWAP_GAP_S:
        return NONE
    grown = [(size, i) for i, (size, age) in enumerate(workers) if age >= FRESH_WORKER_S]
    # Workers share the load evenly, so no single one may reach a quarter while together they
    # hold most of the overage: judge them together, restart the biggest.
    if rss["workers"] >= budget // 4:
        return Action("worker", max(grown)[1]) if grown else NONE
    return Action("too_small")
