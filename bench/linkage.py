"""Recipient matching, offline: the labelled corpus through the dedup rules, class by class.

    .venv/bin/python -m bench.linkage --orders 100000 --seed 7
    .venv/bin/python -m bench.linkage --orders 20000 --variant-rate 0.2 --json /tmp/l.json

Generates ``bench.orders`` payloads (near-duplicates in every rendering class, the hard
negatives: legitimate repeats and other people at the same address), normalises them with
``core.channels`` and runs them in generation order through both dedup stages in-process:
``exact_dedup`` then ``recipient_dedup`` on the orders it found new, in batches (``--batch``,
500 like an envelope), each stage on an in-memory store that applies the returned updates as the
RocksDB WriteBatch would (a dict; range deletes as ``core.dedup.apply_updates`` does them),
event time only (no wall clock). One store per stage: the service
partitions them, which changes which batch an order is in, not what it is compared with.

Only the dedup stages' public API is used (``dedup_facts``, ``exact_store_key``,
``exact_dedup``, ``recipient_lookup_keys``, ``recipient_dedup``, ``apply_updates``), so this keeps
measuring whatever matcher sits behind it. The verdicts become the ``copies``/``flagged`` maps
``bench.accuracy.dedup_accuracy`` takes (what the service reports per order id); the report is
recall per near-duplicate class, the flag rate per negative class (``repeat/*``,
``household/*``, ``unique``), near-duplicate precision, and the exact rules as in the floods.
Results go to ``bench/results/linkage-<orders>-s<seed>.json`` unless ``--json`` says otherwise.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.accuracy import (
    CLASS_RECALL_BAR,
    NEAR_PRECISION_BAR,
    NEGATIVE_FLAG_BAR,
    bar_lines,
    dedup_accuracy,
    meets_bars,
)
from bench.flood import machine_info
from bench.orders import DEFAULT_MIX, MATCHABLE_VARIANTS, GeneratedOrder, OrderGenerator, parse_mix
from core.channels import NormaliseContext, normalise
from core.dedup import (
    DEFAULT_WINDOW_MS,
    WATERMARK_KEY,
    apply_updates,
    dedup_facts,
    exact_dedup,
    exact_store_key,
    recipient_dedup,
    recipient_lookup_keys,
    stored_watermark,
)
from core.model import CanonicalOrder
from core.skus import SkuCatalog

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


class MemStore:
    """A partition store in memory: ``get_many``, and ``apply`` of a stage's updates in order
    (value None = delete; range deletes as ``core.dedup.apply_updates`` does them)."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        get = self.data.get
        return [get(k) for k in keys]

    def apply(self, updates: Sequence[tuple[bytes, bytes | None]]) -> None:
        apply_updates(self.data, list(updates))


def run_dedup(
    orders: Sequence[GeneratedOrder],
    *,
    batch: int = 500,
    window_ms: int = DEFAULT_WINDOW_MS,
    ctx: NormaliseContext | None = None,
) -> dict[str, Any]:
    """Both dedup stages over ``orders`` in generation order.

    Returns ``copies`` (order id -> copies recorded) and ``flagged`` (order id -> (rule,
    original id)) for :func:`bench.accuracy.dedup_accuracy`, the ``scores`` of the flagged
    near-duplicates (when the verdict carries one), and counts.
    """
    ctx = ctx or NormaliseContext(skus=SkuCatalog())
    exact_store, recipient_store = MemStore(), MemStore()
    copies: dict[str, int] = {}
    flagged: dict[str, tuple[str, str]] = {}
    scores: dict[str, tuple[int, tuple[str, ...]]] = {}
    dead = uncomparable = 0
    for start in range(0, len(orders), batch):
        facts = []
        for g in orders[start : start + batch]:
            canonical = normalise(g.channel, g.payload, ctx)
            if isinstance(canonical, CanonicalOrder):
                facts.append(dedup_facts(canonical))
            else:
                dead += 1
        if not facts:
            continue
        exact = exact_dedup(facts, exact_store.get_many([exact_store_key(f) for f in facts]))
        exact_store.apply(exact.updates)
        fresh = []
        for f, verdict in zip(facts, exact.verdicts, strict=True):
            copies[f.id] = copies.get(f.id, 0) + 1
            if verdict.kind == "new":
                fresh.append(f)
        if not fresh:
            continue
        clock = stored_watermark(recipient_store.data.get(WATERMARK_KEY))
        keys = recipient_lookup_keys(fresh, clock=clock, window_ms=window_ms)
        held = dict(zip(keys, recipient_store.get_many(keys), strict=True))
        out = recipient_dedup(fresh, held, window_ms)
        recipient_store.apply(out.updates)
        uncomparable += getattr(out, "uncomparable", 0)
        for f, verdict in zip(fresh, out.verdicts, strict=True):
            if verdict.kind in ("duplicate", "suspected"):
                flagged[f.id] = (verdict.rule, verdict.original_id)
                if hasattr(verdict, "score"):
                    scores[f.id] = (verdict.score, tuple(getattr(verdict, "agreed", ())))
    return {
        "copies": copies,
        "flagged": flagged,
        "scores": scores,
        "dead_letters": dead,
        "uncomparable": uncomparable,
        "store_keys": {"exact": len(exact_store.data), "recipient": len(recipient_store.data)},
    }


# ------------------------------------------------------------------------------ report


def class_table(acc: dict[str, Any]) -> list[str]:
    """The per-class lines both this bench and ``bench.peer`` print."""
    lines = [
        f"  {'near-duplicate class':<32} {'copies':>7} {'found':>7} {'recall':>9}",
    ]
    classes = acc.get("classes", {})
    order = [c for c in MATCHABLE_VARIANTS if c in classes] + sorted(
        c for c in classes if c not in MATCHABLE_VARIANTS
    )
    for name in order:
        row = classes[name]
        mark = "" if row["recall"] >= CLASS_RECALL_BAR else "  <"
        lines.append(
            f"  {name:<32} {row['expected']:>7,} {row['found']:>7,} {row['recall']:>8.2%}{mark}"
        )
    near = acc["near_duplicate"]
    lines.append(
        f"  {'all near-duplicates':<32} {near['expected']:>7,} "
        f"{min(near['correct'], near['expected']):>7,} {near['recall']:>8.2%}"
    )
    lines.append("")
    lines.append(f"  {'negative class':<32} {'orders':>7} {'flagged':>7} {'rate':>9}")
    for name, row in acc.get("negatives", {}).items():
        bar = name != "unique" and row["rate"] > NEGATIVE_FLAG_BAR
        lines.append(
            f"  {name:<32} {row['total']:>7,} {row['flagged']:>7,} "
            f"{row['rate']:>8.3%}{'  <' if bar else ''}"
        )
    lines.append("")
    wrong = near["flagged"] - near["correct"]
    lines.append(
        f"  near-duplicate precision {near['precision']:.4%} ({near['flagged']:,} flagged, "
        f"{wrong:,} wrong; bar {NEAR_PRECISION_BAR:.1%})"
    )
    ex = acc["exact"]
    lines.append(
        f"  exact rules: precision {ex['precision']:.4%}, recall {ex['recall']:.4%} "
        f"(same channel {ex['same_channel']}, cross-channel "
        f"{ex['cross_channel']['correct']:,}/{ex['cross_channel']['expected']:,})"
    )
    return lines


def print_report(r: dict[str, Any]) -> None:
    s, m = r["settings"], r["machine"]
    print()
    print(
        f"orderstream linkage — {s['orders']:,} orders, seed {s['seed']}, window "
        f"{s['window_ms'] / 1000:.0f} s, batches of {s['batch']}"
    )
    print(
        f"machine: {m['nproc']} cores, Python {m['python']}, kernels {m['kernels']}, "
        f"commit {m['git_commit'][:10]}{' (dirty)' if m['git_dirty'] else ''}"
    )
    print(
        f"generated in {r['generate_s']:.1f} s ({r['generate_per_s']:,.0f}/s); normalise + "
        f"dedup in {r['run_s']:.1f} s ({r['run_per_s']:,.0f}/s); labels {r['labels']}"
    )
    print()
    for line in class_table(r["accuracy"]):
        print(line)
    print()
    for line in bar_lines(r["bars_failed"]):
        print(line)
    if r.get("json"):
        print(f"\nwrote {r['json']}")


def generator_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "channel_mix": parse_mix(args.mix) if args.mix else dict(DEFAULT_MIX),
        "near_dup_rate": args.near_dup_rate,
        "variant_rate": args.variant_rate,
        "household_rate": args.household_rate,
        "repeat_basket_rate": args.repeat_basket_rate,
    }


def add_generator_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--mix", default="", help="channel mix, e.g. shopify=0.3,tiktok=0.2,taobao=0.5")
    p.add_argument("--near-dup-rate", type=float, default=0.01, help="same-rendering near-dups")
    p.add_argument(
        "--variant-rate", type=float, default=0.03, help="near-dups in the other classes"
    )
    p.add_argument("--household-rate", type=float, default=0.01)
    p.add_argument("--repeat-basket-rate", type=float, default=0.01)


def run(args: argparse.Namespace) -> dict[str, Any]:
    opts = generator_options(args)
    t0 = time.perf_counter()
    orders = OrderGenerator(args.seed, **opts).generate(args.orders)
    generate_s = time.perf_counter() - t0
    ctx = NormaliseContext(
        skus=SkuCatalog.from_toml(args.skus_toml) if args.skus_toml else SkuCatalog()
    )
    t0 = time.perf_counter()
    out = run_dedup(orders, batch=args.batch, window_ms=int(args.window_s * 1000), ctx=ctx)
    run_s = time.perf_counter() - t0
    acc = dedup_accuracy(orders, out["copies"], out["flagged"])
    by_class: dict[str, list[int]] = {}
    index = {o.order_id: o for o in orders}
    for oid, (score, _) in out["scores"].items():
        o = index.get(oid)
        if o is not None and o.label == "near_dup":
            by_class.setdefault(o.variant, []).append(score)
    return {
        "settings": {
            "orders": args.orders,
            "seed": args.seed,
            "batch": args.batch,
            "window_ms": int(args.window_s * 1000),
            "skus_toml": args.skus_toml,
            **opts,
        },
        "machine": machine_info(),
        "generate_s": generate_s,
        "generate_per_s": len(orders) / generate_s if generate_s else None,
        "run_s": run_s,
        "run_per_s": len(orders) / run_s if run_s else None,
        "labels": dict(Counter(o.label for o in orders)),
        "classes_generated": dict(Counter(f"{o.label}/{o.variant}" for o in orders if o.variant)),
        "dead_letters": out["dead_letters"],
        "uncomparable": out["uncomparable"],
        "flagged_score_min_by_class": {k: min(v) for k, v in sorted(by_class.items())},
        "accuracy": acc,
        "bars_failed": meets_bars(acc),
    }


def write_json(result: dict[str, Any], path: str) -> str:
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    return str(target)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.linkage",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--orders", type=int, default=100_000)
    add_generator_args(p)
    p.add_argument("--batch", type=int, default=500, help="orders per stage batch (envelope)")
    p.add_argument("--window-s", type=float, default=DEFAULT_WINDOW_MS / 1000)
    p.add_argument(
        "--skus-toml",
        default=str(ROOT / "config" / "skus.toml"),
        help="SKU alias table, as orderstream.toml configures it ('' = none)",
    )
    p.add_argument("--json", default=None, help="results file (default bench/results/linkage-…)")
    p.add_argument("--no-json", action="store_true", help="print only")
    args = p.parse_args(argv)
    result = run(args)
    if not args.no_json:
        path = args.json or str(RESULTS / f"linkage-{args.orders}-s{args.seed}.json")
        result["json"] = write_json(result, path)
    print_report(result)


if __name__ == "__main__":
    main()
