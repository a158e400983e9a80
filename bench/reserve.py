"""Lines/s of the reserve stage's domain work (``core.inventory.apply_batch``) on a skewed mix.

    python -m bench.reserve                                  # 200,000 lines, batches of 500
    python -m bench.reserve --lines 50000 --json bench/results/reserve.json

Worst case for one partition: every SKU lives in the same partition, one SKU takes 30 % of all
lines (a live-stream hit), the other 30 % spread Zipf(1.1) over ``--skus`` SKUs; two candidate
warehouses; 10 % of lines carry a TTL; stock is tight enough that a few percent are refused.
After the reserve pass, every line is released or shipped (deduct), so all three ops are timed;
``lines_per_s`` counts both passes, ``reserve_lines_per_s`` the reserve pass alone.

Three figures, best of ``--repeat``:
- ``pure``: ``inventory_lookup_keys`` + ``apply_batch`` over a dict store (CPU of the domain);
- ``rocksdb``: the same with a real ``streams.state.store.PartitionStore``: one ``get_many`` and one
  ``WriteBatch`` (fsync'd, as the stage commits) per batch;
- ``rocksdb_nosync``: as above without fsync, to separate CPU from the disk's sync latency.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import itertools
import json
import random
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from core.inventory import (
    ReserveRequest,
    StockAdjustment,
    apply_batch,
    inventory_lookup_keys,
)

WAREHOUSES = ["hz-east", "sh-main"]


def make_lines(n: int, skus: int, hot_share: float, seed: int) -> list[ReserveRequest]:
    rng = random.Random(seed)
    sizes = (1, 1, 1, 2, 2, 3, 4)  # lines per order
    # P(order of k lines holds the hot SKU) = min(1, a * k), with a solved so that the hot SKU
    # is ``hot_share`` of all lines (an order holds a SKU on one line only, as the saga sends)
    lo, hi = 0.0, 1.0
    for _ in range(50):
        a = (lo + hi) / 2
        share = sum(min(1.0, a * k) for k in sizes) / sum(sizes)
        lo, hi = (a, hi) if share < hot_share else (lo, a)
    cum = list(itertools.accumulate(1.0 / (k + 1) ** 1.1 for k in range(skus - 1)))
    out: list[ReserveRequest] = []
    order = 0
    while len(out) < n:
        order += 1
        oid = f"os_{order:024x}"
        chosen: set[str] = set()
        k = rng.choice(sizes)
        if rng.random() < min(1.0, a * k):
            chosen.add("HOT-0000")
        while len(chosen) < k:
            chosen.add(f"SKU-{bisect.bisect(cum, rng.random() * cum[-1]) + 1:04d}")
        for sku in sorted(chosen):
            ttl = 900_000 if rng.random() < 0.1 else 0
            qty = rng.choice((1, 1, 1, 2, 3))
            whs = WAREHOUSES if rng.random() < 0.5 else WAREHOUSES[::-1]
            out.append(ReserveRequest("reserve", oid, sku, qty, whs, "taobao", "", 0, ttl))
    return out[:n]


def initial_stock(lines: list[ReserveRequest]) -> list[StockAdjustment]:
    """~97 % of each SKU's demand on hand over two warehouses, 2 units of safety stock each."""
    demand: dict[str, int] = {}
    for r in lines:
        demand[r.sku] = demand.get(r.sku, 0) + r.quantity
    adjs = []
    for sku, d in demand.items():
        for wh in WAREHOUSES:
            adjs.append(
                StockAdjustment(sku=sku, warehouse=wh, op="set", quantity=d * 97 // 200 + 2)
            )
            adjs.append(StockAdjustment(sku=sku, warehouse=wh, op="safety", quantity=2))
    return adjs


def followups(lines: list[ReserveRequest]) -> list[ReserveRequest]:
    """Half released (cancel / timeout), half shipped (deduct)."""
    out = []
    for i, r in enumerate(lines):
        op = "release" if i % 2 else "deduct"
        out.append(ReserveRequest(op, r.order_id, r.sku, r.quantity, [], r.channel, "bench"))
    return out


def chunks(seq: list[Any], size: int) -> list[list[Any]]:
    return [seq[i : i + size] for i in range(0, len(seq), size)]


class DictStore:
    def __init__(self) -> None:
        self.db: dict[bytes, bytes] = {}

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        get = self.db.get
        return [get(k) for k in keys]

    def write(self, updates: list[tuple[bytes, bytes | None]]) -> None:
        for k, v in updates:
            if v is None:
                self.db.pop(k, None)
            else:
                self.db[k] = v

    def close(self) -> None:
        pass


class RocksStore:
    """The stage's own store class: one multi-get, one WriteBatch per batch."""

    def __init__(self, root: Path, sync: bool) -> None:
        from streams.state.store import ChangelogEntry, PartitionStore, Position

        self._entry, self._pos = ChangelogEntry, Position
        self.store = PartitionStore(root, "reserve", 0)
        self.sync = sync
        self.offset = 0
        if not sync:
            from rocksdict import WriteBatch

            self._wb = WriteBatch

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        return self.store.get_many(keys)

    def write(self, updates: list[tuple[bytes, bytes | None]]) -> None:
        self.offset += 1
        if self.sync:
            entry = self._entry(updates, "reserve.requests", self._pos("bench", self.offset))
            self.store.write(entry, None)
            return
        batch = self._wb(raw_mode=True)
        for k, v in updates:
            if v is None:
                batch.delete(k)
            else:
                batch.put(k, v)
        self.store.db.write(batch)

    def close(self) -> None:
        self.store.close()


def run(
    store: Any, adjs: list[StockAdjustment], passes: list[list[list[ReserveRequest]]]
) -> dict[str, Any]:
    now = 1_700_000_000_000
    keys = inventory_lookup_keys([], adjs)
    out = apply_batch([], adjs, dict(zip(keys, store.get_many(keys), strict=True)), now)
    store.write(out.updates)
    granted = refused = oversold = alerts = lines = 0
    per_pass = []
    t0 = time.perf_counter()
    for batches in passes:
        tp, n = time.perf_counter(), 0
        for batch in batches:
            keys = inventory_lookup_keys(batch)
            held = dict(zip(keys, store.get_many(keys), strict=True))
            out = apply_batch(batch, (), held, now)
            store.write(out.updates)
            granted += out.granted
            refused += out.refused
            oversold += out.oversold
            alerts += len(out.alerts)
            lines += len(batch)
            n += len(batch)
            now += 50
        per_pass.append(round(n / (time.perf_counter() - tp)))
    elapsed = time.perf_counter() - t0
    return {
        "lines": lines,
        "seconds": round(elapsed, 3),
        "lines_per_s": round(lines / elapsed),
        "reserve_lines_per_s": per_pass[0],
        "release_deduct_lines_per_s": per_pass[1],
        "us_per_line": round(elapsed / lines * 1e6, 2),
        "granted": granted,
        "refused": refused,
        "oversold": oversold,
        "alerts": alerts,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lines", type=int, default=200_000, help="reserve lines per pass")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--skus", type=int, default=2_000)
    ap.add_argument("--hot-share", type=float, default=0.30)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--json", type=Path, default=Path("bench/results/reserve.json"))
    args = ap.parse_args(argv)

    lines = make_lines(args.lines, args.skus, args.hot_share, args.seed)
    adjs = initial_stock(lines)
    passes = [chunks(lines, args.batch), chunks(followups(lines), args.batch)]
    hot = sum(1 for r in lines if r.sku == "HOT-0000") / len(lines)
    gc.freeze()

    results: dict[str, Any] = {}
    for name in ("pure", "rocksdb_nosync", "rocksdb"):
        best: dict[str, Any] | None = None
        for _ in range(args.repeat):
            tmp = Path(tempfile.mkdtemp(prefix="bench-reserve-"))
            try:
                store: Any = DictStore() if name == "pure" else RocksStore(tmp, name == "rocksdb")
                r = run(store, adjs, passes)
                store.close()
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            if best is None or r["lines_per_s"] > best["lines_per_s"]:
                best = r
        assert best is not None and best["oversold"] == 0
        results[name] = best
        print(
            f"{name:15s} {best['lines_per_s']:>9,} lines/s  {best['us_per_line']:6.2f} µs/line  "
            f"(reserve {best['reserve_lines_per_s']:,}/s, "
            f"release+deduct {best['release_deduct_lines_per_s']:,}/s)  "
            f"granted {best['granted']:,} refused {best['refused']:,} alerts {best['alerts']:,} "
            f"oversold {best['oversold']}"
        )
    report = {
        "bench": "reserve",
        "lines_per_pass": len(lines),
        "passes": ["reserve", "release/deduct"],
        "batch": args.batch,
        "skus": len({r.sku for r in lines}),
        "hot_sku_share": round(hot, 3),
        "repeat": args.repeat,
        "bar_lines_per_s": 20_000,
        "results": results,
    }
    try:
        from bench.flood import machine_info

        report["machine"] = machine_info()
    except Exception as exc:  # pragma: no cover - figures matter more than the machine note
        report["machine"] = {"error": str(exc)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"hot SKU share {hot:.1%}; written {args.json}")
    return report


if __name__ == "__main__":
    main()
