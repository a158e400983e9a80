"""History stage glue: the rules' 24 h recipient count, exact, off the critical path.

``orders.history`` carries one small fact per new order (recipient key, id, created_at), sent
by the recipient dedup stage and keyed by the recipient key, so all of one recipient's orders
meet on one partition whatever their baskets (the dedup stage's own partitions follow the route
key). Here ``core.recipient_history.count_recent`` counts them against the partition's
``history`` store; a count that reaches the smallest threshold any rule waits for goes to the
order stage (``orders.recipient_counts``, keyed by order id), where only the rules that read
it run. Below that threshold nothing is sent: no rule could act on it.
"""

from __future__ import annotations

from typing import Any

from core.recipient_history import count_recent, history_keys
from streams.kafka.envelope import HistoryFact, RecipientCount

STAGE = "history"
STORE = "history"


class HistoryOutcome:
    __slots__ = ("counted", "counts", "updates")

    def __init__(
        self,
        counts: list[RecipientCount],
        updates: list[tuple[bytes, bytes | None]],
        counted: int,
    ) -> None:
        self.counts = counts  # for the order stage, keyed by order id
        self.updates = updates  # for the history store
        self.counted = counted  # facts counted


def lookup_keys(facts: list[HistoryFact]) -> list[bytes]:
    return history_keys(facts, [f.recipient_key for f in facts])


def count_facts(
    facts: list[HistoryFact], held: dict[bytes, bytes | None], now: int, threshold: int
) -> HistoryOutcome:
    """Each fact's count; the counts at or above ``threshold`` (0: none) to send on.

    A redelivered fact is counted once (by order id) and its count sent again: the order
    stage applies a count not above the one it holds as a no-op."""
    counts, updates = count_recent(facts, held, now, [f.recipient_key for f in facts])
    out = [
        RecipientCount(f.order_id, n)
        for f, n in zip(facts, counts, strict=True)
        if threshold and n >= threshold
    ]
    return HistoryOutcome(out, updates, len(facts))


def history_step(store: Any, facts: list[HistoryFact], now: int, threshold: int) -> HistoryOutcome:
    """The history stage on one partition batch: one multi-get, the counts, the updates."""
    keys = lookup_keys(facts)
    held = dict(zip(keys, store.get_many(keys), strict=True))
    return count_facts(facts, held, now, threshold)
