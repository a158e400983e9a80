"""Dedup accuracy against the generator's ground truth: precision and recall per rule.

What the service reports (from ``orders.changes`` or ``GET /v1/orders/{id}``), per order id:
how many channel copies it recorded (the first + every later copy, whether it updated the order
or changed nothing) and, when the dedup stages flagged it, the rule and the original's id.

Why pairs are judged as clusters: two copies of one purchase (a cross-channel copy and its
source, or a double submit) travel different partitions before they meet in the recipient
stage, so which one arrives first - and is therefore "the original" - depends on timing. A
cluster of k related orders (ground truth ``ref`` links) is fully detected when k - 1 of them
are flagged with an original inside the same cluster, whichever way round.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from bench.orders import GeneratedOrder

EXACT_RULES = ("exact_channel", "exact_cross_channel")
LINKED_LABELS = {"cross_channel": "exact_cross_channel", "near_dup": "near_duplicate"}


class _Clusters:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        root = x
        while self.parent.get(root, root) != root:
            root = self.parent[root]
        while x != root:  # path compression
            self.parent[x], x = root, self.parent.get(x, x)
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[ra] = rb


def _ratio(num: int, den: int) -> float:
    return 1.0 if den == 0 else num / den


def _score(correct: int, flagged: int, expected: int) -> dict[str, Any]:
    hits = min(correct, expected)
    return {
        "expected": expected,
        "flagged": flagged,
        "correct": correct,
        "precision": _ratio(correct, flagged),
        "recall": _ratio(hits, expected),
    }


def dedup_accuracy(
    orders: Iterable[GeneratedOrder],  # from the generator's first order on
    copies: dict[str, int],
    flagged: dict[str, tuple[str, str]],
) -> dict[str, Any]:
    """Scores for the exact rules, the near-duplicate rule and legitimate repeats.

    ``copies``: order id -> copies recorded; ``flagged``: order id -> (rule, original id)
    for orders recorded as ``duplicate`` or held as suspected.
    """
    generated = list(orders)  # every order the generator made, in order: ``ref`` indexes it
    id_at = {i: o.order_id for i, o in enumerate(generated)}
    all_orders = [o for o in generated if o.label != "invalid"]
    copies_expected = Counter(o.order_id for o in all_orders)
    clusters = _Clusters()
    expected_links: Counter[str] = Counter()
    for o in all_orders:
        rule = LINKED_LABELS.get(o.label)
        if rule is not None and o.ref in id_at and id_at[o.ref] != o.order_id:
            clusters.union(o.order_id, id_at[o.ref])
            expected_links[rule] += 1
    # exact, same channel: every later copy of an id is recorded on it exactly once
    exact_tp = exact_fp = exact_fn = 0
    for oid, n in copies_expected.items():
        got = copies.get(oid, 0) - 1
        exp = n - 1
        if got < 0:
            exact_fn += exp
            continue
        exact_tp += min(got, exp)
        exact_fp += max(0, got - exp)
        exact_fn += max(0, exp - got)
    correct: Counter[str] = Counter()
    wrong: Counter[str] = Counter()
    wrong_ids: list[str] = []
    for oid, (rule, original) in flagged.items():
        if clusters.find(oid) == clusters.find(original) and oid != original:
            correct[rule] += 1
        else:
            wrong[rule] += 1
            wrong_ids.append(oid)
    cross = _score(
        correct["exact_cross_channel"],
        correct["exact_cross_channel"] + wrong["exact_cross_channel"],
        expected_links["exact_cross_channel"],
    )
    near = _score(
        correct["near_duplicate"],
        correct["near_duplicate"] + wrong["near_duplicate"],
        expected_links["near_duplicate"],
    )
    exact_flagged = exact_tp + exact_fp + cross["flagged"]
    exact_correct = exact_tp + cross["correct"]
    exact_expected = exact_tp + exact_fn + cross["expected"]
    repeats = [o.order_id for o in all_orders if o.label == "repeat"]
    repeat_ids = set(repeats)
    repeats_wrong = sum(1 for oid in wrong_ids if oid in repeat_ids)
    missing = [oid for oid in copies_expected if oid not in copies]
    return {
        "orders": len(all_orders),
        "distinct_ids": len(copies_expected),
        "missing": len(missing),
        "missing_ids": missing[:20],
        "exact": {
            **_score(exact_correct, exact_flagged, exact_expected),
            "same_channel": {"tp": exact_tp, "fp": exact_fp, "fn": exact_fn},
            "cross_channel": cross,
        },
        "near_duplicate": near,
        "repeats": {
            "total": len(repeats),
            "flagged": repeats_wrong,
            "rate": _ratio(repeats_wrong, len(repeats)) if repeats else 0.0,
        },
        "false_flags": wrong_ids[:20],
    }


def meets_bars(acc: dict[str, Any]) -> list[str]:
    """The issue's bars; returns what failed (empty when all hold)."""
    failed = []
    if acc["missing"]:
        failed.append(f"{acc['missing']} orders never recorded")
    for what, bar in (("exact", 0.9999), ("near_duplicate", 0.995)):
        for m in ("precision", "recall"):
            value = acc[what][m]
            if value < bar:
                failed.append(f"{what} {m} {value:.5f} < {bar}")
    if acc["repeats"]["rate"] > 0.0001:
        failed.append(f"legitimate repeats flagged {acc['repeats']['rate']:.5%} > 0.01%")
    return failed
