"""Peer comparison: the labelled corpus through Splink 4 (DuckDB) instead of ``core.dedup``.

    .venv/bin/pip install -e '.[peer]'        # splink>=4,<5 (DuckDB, pandas come with it)
    .venv/bin/python -m bench.peer --orders 50000
    .venv/bin/python -m bench.peer --orders 50000 --train em --json /tmp/peer-em.json

The same ``bench.orders`` corpus as ``bench.linkage`` (same options, same seed), normalised by
``core.channels``, one record per distinct order id (later copies of an id are the exact rule's:
counted as copies, as the service does; the cross-channel rule, same order no + same E.164
phone on another channel, is applied as the service applies it, and wins). Every other order is
matched by an established record-linkage library as it is normally used:

- records: the recipient's fields exactly as orderstream's comparison reads them
  (``core.recipient_match.folded``: NFKC, case-folded; names as sorted tokens; the street with
  the places it is in taken off the front, abbreviations spelled out, unit markers dropped;
  postcodes normalised), so the two linkers compare the same strings; the phone as its full
  digits and its last 3 and last 1 *visible* digits (masked phones keep some), created time;
- blocking (pairs it compares): the recipient stage's window key (``core.dedup.route_key``:
  country + city, currency + total, SKU multiset), created within the window;
- comparisons: name (Jaro-Winkler 0.95/0.8), phone (full digits / last 3 / last 1 visible),
  address (Jaro-Winkler 0.92/0.8), postcode (exact); null levels where a side has nothing;
- training on a corpus of another seed (``--train-seed``): u by random sampling, m from the
  ground-truth clusters (``--train labels``, Splink's ``estimate_m_from_label_column``) or by EM
  over the blocked pairs (``--train em``), the prior from the labels;
- threshold: on the training corpus, the match weight with the most recall at which
  near-duplicate precision is >= 99.9 % and no repeat/household class is flagged over 0.1 %
  (the issue's bars), every distinct weight tried; the max-F1 weight when none meets them;
- flags: each order is flagged as a near-duplicate of its best-scoring *earlier* order (earlier
  in arrival, as the recipient stage only sees what came before) at or above the threshold.

The figures come out of ``bench.accuracy.dedup_accuracy`` like ``bench.linkage``'s, so the two
tables can be read side by side. Written to ``bench/results/peer-<orders>-s<seed>.json``.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

from bench.accuracy import (
    LINKED_LABELS,
    NEAR_PRECISION_BAR,
    NEGATIVE_FLAG_BAR,
    bar_lines,
    dedup_accuracy,
    meets_bars,
)
from bench.linkage import (
    RESULTS,
    ROOT,
    add_generator_args,
    class_table,
    generator_options,
    write_json,
)
from bench.orders import GeneratedOrder, OrderGenerator
from core.channels import NormaliseContext, normalise
from core.dedup import dedup_facts, route_key
from core.model import CanonicalOrder, Recipient
from core.recipient_match import folded, who_of
from core.skus import SkuCatalog

WINDOW_S = 180
# ------------------------------------------------------------------------------ records


def phone_parts(r: Recipient) -> tuple[str | None, str | None, str | None]:
    """(full digits, last 3 visible digits, last visible digit); None where not shown."""
    if r.phone:
        digits = "".join(ch for ch in r.phone if ch.isdigit())
        return digits, digits[-3:], digits[-1:]
    marks = "".join(ch for ch in r.phone_masked if ch.isdigit() or ch == "*")
    tail = len(marks) - len(marks.rstrip("0123456789"))
    return (
        None,
        marks[-3:] if tail >= 3 else None,
        marks[-1:] if tail >= 1 else None,
    )


def _clusters(orders: Sequence[GeneratedOrder]) -> dict[str, str]:
    """Order id -> ground-truth cluster (ref links of cross-channel copies and near-dups)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.get(x, x) != x:
            parent[x] = parent.get(parent[x], parent[x])
            x = parent[x]
        return x

    for o in orders:
        if o.label in LINKED_LABELS and 0 <= o.ref < len(orders):
            a, b = find(o.order_id), find(orders[o.ref].order_id)
            if a != b:
                parent[a] = b
    return {o.order_id: find(o.order_id) for o in orders}


def build_records(
    orders: Sequence[GeneratedOrder], ctx: NormaliseContext
) -> tuple[list[dict[str, Any]], dict[str, int], dict[str, tuple[str, str]]]:
    """(records, copies, exact cross-channel flags): one record per distinct order id."""
    truth = _clusters(orders)
    records: list[dict[str, Any]] = []
    copies: dict[str, int] = {}
    flagged: dict[str, tuple[str, str]] = {}
    first_by_no: dict[tuple[str, str], str] = {}
    for seq, g in enumerate(orders):
        c = normalise(g.channel, g.payload, ctx)
        if not isinstance(c, CanonicalOrder):
            continue
        if c.id in copies:  # a later copy of an id: the exact rule records it
            copies[c.id] += 1
            continue
        copies[c.id] = 1
        r = c.recipient
        if r.phone:  # same order no + same full phone, another channel: the relayed copy
            key = (r.phone, c.channel_order_no)
            first = first_by_no.setdefault(key, c.id)
            if first != c.id:
                flagged[c.id] = ("exact_cross_channel", first)
        full, tail3, tail1 = phone_parts(r)
        fields = folded(who_of(r))  # the fields exactly as orderstream's comparison reads them
        records.append(
            {
                "unique_id": c.id,
                "seq": seq,
                "created_s": c.created_at / 1000,
                "block": route_key(dedup_facts(c)).hex(),  # the recipient stage's window key
                "name_clean": fields.name or None,
                "phone_full": full,
                "phone_tail3": tail3,
                "phone_tail1": tail1,
                "address_clean": fields.street or None,
                "postcode_clean": fields.postcode or None,
                "cluster": truth.get(c.id, c.id),
            }
        )
    return records, copies, flagged


# ------------------------------------------------------------------------------ splink


def _settings(prior: float, window_s: int) -> Any:
    import splink.comparison_level_library as cll
    import splink.comparison_library as cl
    from splink import SettingsCreator

    phone = cl.CustomComparison(
        output_column_name="phone",
        comparison_levels=[
            cll.NullLevel("phone_tail1"),
            cll.ExactMatchLevel("phone_full"),
            cll.ExactMatchLevel("phone_tail3"),
            cll.ExactMatchLevel("phone_tail1"),
            cll.ElseLevel(),
        ],
    )
    return SettingsCreator(
        link_type="dedupe_only",
        comparisons=[
            cl.JaroWinklerAtThresholds("name_clean", [0.95, 0.8]),
            phone,
            cl.JaroWinklerAtThresholds("address_clean", [0.92, 0.8]),
            cl.ExactMatch("postcode_clean"),
        ],
        blocking_rules_to_generate_predictions=[
            f"l.block = r.block and abs(l.created_s - r.created_s) <= {window_s}"
        ],
        probability_two_random_records_match=prior,
        retain_matching_columns=False,
    )


def _prior(records: list[dict[str, Any]]) -> float:
    sizes = Counter(r["cluster"] for r in records)
    matches = sum(k * (k - 1) // 2 for k in sizes.values())
    n = len(records)
    return max(matches, 1) / max(n * (n - 1) // 2, 1)


def _linker(records: list[dict[str, Any]], settings: Any) -> Any:
    import pandas as pd
    from splink import DuckDBAPI, Linker

    return Linker(
        pd.DataFrame.from_records(records),
        settings,
        db_api=DuckDBAPI(),
        set_up_basic_logging=False,
    )


def _pairs(linker: Any, records: list[dict[str, Any]]) -> list[tuple[int, int, float]]:
    """(later seq, earlier seq, match weight) of every blocked pair."""
    seq = {r["unique_id"]: r["seq"] for r in records}
    df = linker.inference.predict().as_pandas_dataframe()
    out = []
    for a, b, w in zip(df["unique_id_l"], df["unique_id_r"], df["match_weight"], strict=True):
        sa, sb = seq[a], seq[b]
        out.append((max(sa, sb), min(sa, sb), float(w)))
    return out


def flags_at(
    pairs: list[tuple[int, int, float]],
    threshold: float,
    orders: Sequence[GeneratedOrder],
    exact: dict[str, tuple[str, str]],
) -> dict[str, tuple[str, str]]:
    """The cross-channel flags, then each other order's best earlier match >= threshold."""
    best: dict[int, tuple[float, int]] = {}
    for later, earlier, w in pairs:
        if w >= threshold and (later not in best or w > best[later][0]):
            best[later] = (w, earlier)
    flagged = dict(exact)
    for later, (_, earlier) in best.items():
        oid = orders[later].order_id
        if oid not in flagged:
            flagged[oid] = ("near_duplicate", orders[earlier].order_id)
    return flagged


def choose_threshold(
    pairs: list[tuple[int, int, float]],
    orders: Sequence[GeneratedOrder],
    exact: dict[str, tuple[str, str]],
) -> tuple[float, str, list[dict[str, float]]]:
    """(threshold, how it was chosen, the sweep) on the training corpus.

    Every order is flagged by its best earlier partner, so lowering the threshold only adds
    flags: one scan down the distinct best weights evaluates every threshold exactly (near-dup
    precision, each negative class's flag rate, link recall as ``bench.accuracy`` counts it).
    """
    cluster = _clusters(orders)
    first: dict[str, int] = {}
    for i, o in enumerate(orders):
        first.setdefault(o.order_id, i)
    links: dict[int, int] = {}  # near_dup copy (first index) -> its source (first index)
    copies_of: dict[int, list[int]] = {}
    for i, o in enumerate(orders):
        if o.label == "near_dup" and first[o.order_id] == i and 0 <= o.ref < len(orders):
            src = first[orders[o.ref].order_id]
            if src != i:
                links[i] = src
                copies_of.setdefault(src, []).append(i)
    negatives = Counter(
        f"{o.label}/{o.variant}"
        for i, o in enumerate(orders)
        if first[o.order_id] == i and o.label in ("repeat", "household")
    )
    best: dict[int, tuple[float, int]] = {}
    for later, earlier, w in pairs:
        if later not in best or w > best[later][0]:
            best[later] = (w, earlier)
    flags = sorted(
        ((w, later, earlier) for later, (w, earlier) in best.items()
         if orders[later].order_id not in exact),
        reverse=True,
    )  # fmt: skip
    if not flags:
        return 0.0, "no pairs", []
    flagged = correct = 0
    found: set[int] = set()
    wrong_by_class: Counter[str] = Counter()
    sweep: list[dict[str, Any]] = []
    k = 0
    for t in sorted({round(w, 2) for w, _, _ in flags}, reverse=True):
        while k < len(flags) and round(flags[k][0], 2) >= t:
            _, later, earlier = flags[k]
            k += 1
            flagged += 1
            o = orders[later]
            if cluster[o.order_id] == cluster[orders[earlier].order_id]:
                correct += 1
                if later in links:
                    found.add(later)
                if earlier in links and links[earlier] == later:
                    found.add(earlier)  # the copy arrived first: its source is flagged
            elif o.label in ("repeat", "household"):
                wrong_by_class[f"{o.label}/{o.variant}"] += 1
        precision = correct / flagged
        recall = len(found) / len(links) if links else 1.0
        meets = precision >= NEAR_PRECISION_BAR and all(
            wrong_by_class[c] <= NEGATIVE_FLAG_BAR * n for c, n in negatives.items()
        )
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        sweep.append(
            {"threshold": t, "precision": precision, "recall": recall, "f1": f1, "meets": meets}
        )
    meeting = [s for s in sweep if s["meets"]]
    if meeting:  # the most recall the bars allow (the highest such threshold on a tie)
        top = max(s["recall"] for s in meeting)
        chosen = max(s["threshold"] for s in meeting if s["recall"] == top)
        return chosen, "most recall meeting the bars", sweep
    best_f1 = max(sweep, key=lambda s: s["f1"])
    return best_f1["threshold"], "max F1 (no weight met the bars)", sweep


def run(args: argparse.Namespace) -> dict[str, Any]:
    logging.getLogger("splink").setLevel(logging.ERROR)  # its progress and "m not trained" notes
    opts = generator_options(args)
    ctx = NormaliseContext(
        skus=SkuCatalog.from_toml(args.skus_toml) if args.skus_toml else SkuCatalog()
    )
    window_s = int(args.window_s)
    t0 = time.perf_counter()
    train_orders = OrderGenerator(args.train_seed, **opts).generate(args.orders)
    train_records, _, train_exact = build_records(train_orders, ctx)
    prior = _prior(train_records)
    linker = _linker(train_records, _settings(prior, window_s))
    linker.training.estimate_u_using_random_sampling(max_pairs=args.u_pairs, seed=1)
    if args.train == "labels":
        linker.training.estimate_m_from_label_column("cluster")
    else:
        from splink import block_on

        linker.training.estimate_parameters_using_expectation_maximisation(block_on("block"))
    model = linker.misc.save_model_to_json()
    train_pairs = _pairs(linker, train_records)
    threshold, how, sweep = choose_threshold(train_pairs, train_orders, train_exact)
    train_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    orders = OrderGenerator(args.seed, **opts).generate(args.orders)
    records, copies, exact = build_records(orders, ctx)
    pairs = _pairs(_linker(records, model), records)
    flagged = flags_at(pairs, threshold, orders, exact)
    run_s = time.perf_counter() - t0
    acc = dedup_accuracy(orders, copies, flagged)
    # for context: the same model at the weight with the best F1 on the training corpus
    f1_threshold = max(sweep, key=lambda s: s["f1"])["threshold"] if sweep else threshold
    acc_f1 = dedup_accuracy(orders, copies, flags_at(pairs, f1_threshold, orders, exact))

    import splink

    from bench.flood import machine_info

    return {
        "settings": {
            "orders": args.orders,
            "seed": args.seed,
            "train_seed": args.train_seed,
            "train": args.train,
            "window_ms": window_s * 1000,
            "u_pairs": args.u_pairs,
            "skus_toml": args.skus_toml,
            **opts,
        },
        "library": {"name": "splink", "version": splink.__version__, "backend": "duckdb"},
        "machine": machine_info(),
        "train_s": train_s,
        "run_s": run_s,
        "records": len(records),
        "blocked_pairs": len(pairs),
        "prior": prior,
        "threshold_match_weight": threshold,
        "threshold_chosen_by": how,
        "threshold_sweep": sweep,
        "model": model,
        "labels": dict(Counter(o.label for o in orders)),
        "accuracy": acc,
        "bars_failed": meets_bars(acc),
        "at_max_f1": {
            "threshold_match_weight": f1_threshold,
            "near_duplicate": acc_f1["near_duplicate"],
            "classes": {k: v["recall"] for k, v in acc_f1["classes"].items()},
            "negatives": {k: v["rate"] for k, v in acc_f1["negatives"].items()},
        },
    }


def print_report(r: dict[str, Any]) -> None:
    s, m, lib = r["settings"], r["machine"], r["library"]
    print()
    print(
        f"orderstream peer — {lib['name']} {lib['version']} on {lib['backend']}, "
        f"{s['orders']:,} orders, seed {s['seed']} (trained on seed {s['train_seed']}, "
        f"m from {s['train']}), window {s['window_ms'] / 1000:.0f} s"
    )
    print(
        f"machine: {m['nproc']} cores, Python {m['python']}, commit {m['git_commit'][:10]}"
        f"{' (dirty)' if m['git_dirty'] else ''}"
    )
    print(
        f"trained + threshold in {r['train_s']:.1f} s; records + predict in {r['run_s']:.1f} s; "
        f"{r['records']:,} records, {r['blocked_pairs']:,} blocked pairs; threshold match "
        f"weight {r['threshold_match_weight']:.2f} ({r['threshold_chosen_by']})"
    )
    print()
    for line in class_table(r["accuracy"]):
        print(line)
    print()
    for line in bar_lines(r["bars_failed"]):
        print(line)
    f1 = r["at_max_f1"]
    near = f1["near_duplicate"]
    flagged = ", ".join(f"{k} {v:.2%}" for k, v in f1["negatives"].items() if v)
    print(
        f"\nat the max-F1 weight {f1['threshold_match_weight']:.2f} instead: near-duplicate "
        f"recall {near['recall']:.2%}, precision {near['precision']:.2%}; "
        f"negatives flagged: {flagged or 'none'}"
    )
    if r.get("json"):
        print(f"\nwrote {r['json']}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.peer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--orders", type=int, default=50_000)
    add_generator_args(p)
    p.add_argument("--train-seed", type=int, default=None, help="default: seed + 1000")
    p.add_argument("--train", choices=("labels", "em"), default="labels", help="how m is found")
    p.add_argument("--u-pairs", type=float, default=2e6, help="random pairs for u")
    p.add_argument("--window-s", type=float, default=WINDOW_S)
    p.add_argument(
        "--skus-toml",
        default=str(ROOT / "config" / "skus.toml"),
        help="SKU alias table, as orderstream.toml configures it ('' = none)",
    )
    p.add_argument("--json", default=None, help="results file (default bench/results/peer-…)")
    p.add_argument("--no-json", action="store_true", help="print only")
    args = p.parse_args(argv)
    if args.train_seed is None:
        args.train_seed = args.seed + 1000
    try:
        import splink  # noqa: F401
    except ImportError:
        raise SystemExit("bench.peer needs Splink 4: .venv/bin/pip install -e '.[peer]'") from None
    result = run(args)
    if not args.no_json:
        path = args.json or str(RESULTS / f"peer-{args.orders}-s{args.seed}.json")
        result["json"] = write_json(result, path)
    print_report(result)


if __name__ == "__main__":
    main()
