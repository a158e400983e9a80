"""Dedup accuracy against the generator's ground truth: precision and recall per rule.

What the service reports (from ``orders.changes`` or ``GET /v1/orders/{id}``), per order id:
how many channel copies it recorded (the first + every later copy, whether it updated the order
or changed nothing) and, when the dedup stages flagged it, the rule and the original's id.

Why pairs are judged as clusters: two copies of one purchase (a cross-channel copy and its
source, or a double submit) travel different partitions before they meet in the recipient
stage, so which one arrives first - and is therefore "the original" - depends on timing. A
cluster of k related orders (ground truth ``ref`` links) is fully detected when k - 1 of them
are flagged with an original inside the same cluster, whichever way round.

Per class (``GeneratedOrder.variant``): a near-duplicate copy's link to its source counts as
found when the copy is flagged with an original in its cluster, or the source is flagged with the
copy as its original (it arrived second). Negative classes (``repeat/*``, ``household/*``,
``unique``) report the share of their orders flagged with an original outside their cluster; an
order that is itself the source of a copy is in that copy's cluster, so being flagged as its
duplicate is not counted against its class.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from bench.orders import GeneratedOrder

EXACT_RULES = ("exact_channel", "exact_cross_channel")
LINKED_LABELS = {"cross_channel": "exact_cross_channel", "near_dup": "near_duplicate"}
NEGATIVE_LABELS = ("repeat", "household", "unique")

# the bars on the recipient matching (added to the older ones in meets_bars)
CLASS_RECALL_BAR = 0.99  # every matchable near-duplicate class
NEAR_PRECISION_BAR = 0.999
NEGATIVE_FLAG_BAR = 0.001  # repeats and households (per class) flagged at most this often


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
    wrong_set = set(wrong_ids)
    repeats_wrong = sum(1 for oid in repeat_ids if oid in wrong_set)
    missing = [oid for oid in copies_expected if oid not in copies]
    classes = _near_dup_classes(all_orders, id_at, clusters, flagged)
    negatives = _negative_classes(all_orders, wrong_set)
    households = [o.order_id for o in all_orders if o.label == "household"]
    households_wrong = sum(1 for oid in households if oid in wrong_set)
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
        "households": {
            "total": len(households),
            "flagged": households_wrong,
            "rate": _ratio(households_wrong, len(households)) if households else 0.0,
        },
        "classes": classes,  # near_dup variant -> expected, found, recall, wrong, missed ids
        "negatives": negatives,  # "repeat/<variant>", "household/<variant>", "unique" -> rate
        "false_flags": wrong_ids[:20],
    }


def _variant(o: Any, default: str = "") -> str:
    """The order's class (``GeneratedOrder.variant``); ``default`` for truth records that carry
    none (bench.soak's ``Truth``)."""
    return getattr(o, "variant", "") or default


def _near_dup_classes(
    orders: list[GeneratedOrder],
    id_at: dict[int, str],
    clusters: _Clusters,
    flagged: dict[str, tuple[str, str]],
) -> dict[str, dict[str, Any]]:
    """Recall per near-duplicate class: the copy -> source links found (either way round)."""
    out: dict[str, dict[str, Any]] = {}
    for o in orders:
        if o.label != "near_dup" or o.ref not in id_at or id_at[o.ref] == o.order_id:
            continue
        src = id_at[o.ref]
        row = out.setdefault(
            _variant(o, "unclassified"),
            {"expected": 0, "found": 0, "wrong": 0, "missed_ids": []},
        )
        row["expected"] += 1
        mine, theirs = flagged.get(o.order_id), flagged.get(src)
        if mine is not None and clusters.find(mine[1]) == clusters.find(o.order_id):
            row["found"] += 1
        elif theirs is not None and theirs[1] == o.order_id:
            row["found"] += 1
        else:
            if mine is not None:
                row["wrong"] += 1  # flagged, but as a copy of something else
            if len(row["missed_ids"]) < 10:
                row["missed_ids"].append(o.order_id)
    for row in out.values():
        row["recall"] = _ratio(row["found"], row["expected"])
    return dict(sorted(out.items()))


def _negative_classes(orders: list[GeneratedOrder], wrong: set[str]) -> dict[str, dict[str, Any]]:
    """Flag rate per class of orders that are nobody's copy: repeats, households, uniques."""
    out: dict[str, dict[str, Any]] = {}
    for o in orders:
        if o.label not in NEGATIVE_LABELS:
            continue
        variant = _variant(o)
        name = f"{o.label}/{variant}" if variant else o.label
        row = out.setdefault(name, {"total": 0, "flagged": 0, "flagged_ids": []})
        row["total"] += 1
        if o.order_id in wrong:
            row["flagged"] += 1
            if len(row["flagged_ids"]) < 10:
                row["flagged_ids"].append(o.order_id)
    for row in out.values():
        row["rate"] = row["flagged"] / row["total"] if row["total"] else 0.0
    return dict(sorted(out.items()))


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
    # the recipient-matching issue's bars, per class
    near = acc["near_duplicate"]
    if near["precision"] < NEAR_PRECISION_BAR:
        failed.append(f"near_duplicate precision {near['precision']:.5f} < {NEAR_PRECISION_BAR}")
    for name, row in acc.get("classes", {}).items():
        if row["recall"] < CLASS_RECALL_BAR:
            failed.append(
                f"near_duplicate recall on {name} {row['recall']:.5f} < {CLASS_RECALL_BAR}"
                f" ({row['found']}/{row['expected']})"
            )
    for name, row in acc.get("negatives", {}).items():
        if name != "unique" and row["rate"] > NEGATIVE_FLAG_BAR:
            failed.append(
                f"{name} flagged {row['rate']:.4%} > {NEGATIVE_FLAG_BAR:.1%}"
                f" ({row['flagged']}/{row['total']})"
            )
    return failed


def bar_lines(failed: list[str]) -> list[str]:
    """What :func:`meets_bars` found, as a report prints it."""
    head = "bars: all met" if not failed else f"bars: {len(failed)} missed"
    return [head, *(f"  - {f}" for f in failed)]
