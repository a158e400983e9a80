"""What the memory budget replaces, decided from one sample of resident memory.

Pure, so the rule is tested without processes; the supervisor measures and acts.
"""

from __future__ import annotations

from typing import Literal

import msgspec

# Act at this share of the budget. Resident memory keeps growing while the pipeline drains
# before a broker swap (the API journals, the workers catch up): by up to ~5 % of a 1,200 MiB
# budget in the 30-minute flood. Acting early keeps the peak under the budget itself.
ACT_AT = 0.85
SWAP_GAP_S = 60.0  # between two broker swaps, and between any two replacements otherwise
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
) -> Action:
    """``rss``: bytes per role (api, broker, workers); ``workers``: (bytes, age in s) per index.

    The embedded broker never trims what it holds, so it goes first once it holds a quarter
    of the budget, whatever was restarted a moment ago (waiting for that overshot the budget).
    A worker's memory (memtables, fetch buffers, Python's heap after a backlog) only shrinks
    when it restarts, which costs a rebalance and nothing else: its state is on disk.
    """
    if not budget or sum(rss.values()) <= budget * ACT_AT:
        return NONE
    if embedded_broker and rss["broker"] >= budget // 4 and since_broker_swap >= SWAP_GAP_S:
        return Action("broker")
    if since_replacement < SWAP_GAP_S:
        return NONE
    grown = [(size, i) for i, (size, age) in enumerate(workers) if age >= FRESH_WORKER_S]
    # Workers share the load evenly, so no single one may reach a quarter while together they
    # hold most of the overage: judge them together, restart the biggest.
    if rss["workers"] >= budget // 4:
        return Action("worker", max(grown)[1]) if grown else NONE
    return Action("too_small")
