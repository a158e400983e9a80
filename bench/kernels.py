"""Kernel vs twin timings on one realistic batch: the numbers that justify carrying Cython.

    python -m bench.kernels [--n 200000] [--json bench/results/kernels.json]

Prints figures only; nothing here asserts on timings (CI machines are too noisy for that).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import platform
import random
import sys
import time
from collections.abc import Callable
from itertools import repeat
from pathlib import Path
from types import ModuleType

from ext import _twin

CHANNELS = ("shopify", "amazon", "tiktok", "tmall", "jd", "shopee", "lazada", "ebay")
ENVELOPE = 500  # records per envelope handed to kafka_partitions
PARTITIONS = 48


def _phone(rng: random.Random) -> tuple[str, str]:
    mobile = f"1{rng.choice('3456789')}{rng.randrange(10**9):09d}"
    area, exchange = rng.randrange(200, 1000), rng.randrange(200, 1000)
    us = f"{area}{exchange}{rng.randrange(10**4):04d}"
    formats = [
        (mobile, "CN"),
        (f"+86 {mobile[:3]} {mobile[3:7]} {mobile[7:]}", "CN"),
        (f"86{mobile}", "CN"),
        ("".join(chr(ord(c) + 0xFEE0) for c in mobile), "CN"),  # fullwidth
        (f"{mobile[:3]}****{mobile[7:]}", "CN"),  # masked
        (f"({us[:3]}) {us[3:6]}-{us[6:]}", "US"),
        (f"(+1){us}", "US"),
        (f"1-{us[:3]}-{us[3:6]}-{us[6:]}", "US"),
        (f"07{rng.randrange(10**9):09d}", "GB"),
        (f"+44 (0)20 {rng.randrange(10**4):04d} {rng.randrange(10**4):04d}", "GB"),
        (f"090-{rng.randrange(10**4):04d}-{rng.randrange(10**4):04d}", "JP"),
        (f"0{rng.randrange(10**9):09d}", "DE"),
    ]
    return rng.choice(formats)


def _sku(rng: random.Random) -> str:
    n = rng.randrange(100, 999)
    return rng.choice(
        [
            f"MB-C{n}",
            f"Mercedes-Benz C{n}",
            f"SKU_{rng.randrange(10**6):06d}/BLK-XL",
            f"Nike Air Max {n} (White) [42]",
            f"奔驰C{n}",
            f"红色、大号・XL【新款{n}】",
            f"ＭＢ－Ｃ{n}",
            f"iPhone 15 Pro Max 256GB {rng.choice(['Black', 'Blue', '黑色'])}",
        ]
    )


_CN_NAMES = ["张伟", "王芳", "李**", "刘洋", "陈*"]
_CN_STREETS = ["人民路{}号 28栋2325室", "中山路{}号", "天府大道2**号", "珞喻路{}号 5栋1939室"]
_EN_NAMES = ["Jane Brown", "José Álvarez", "Olivia Martin", "Noah S***"]


def _recipient(rng: random.Random) -> tuple[str, ...]:
    """(name, address, country, region, city, district, postcode, masked phone) as channels send
    them: mostly CJK or ASCII (the kernel's fast paths), some accented (the NFKC path)."""
    n = rng.randrange(1, 999)
    if rng.random() < 0.6:
        street = rng.choice(_CN_STREETS).format(n)
        return (
            rng.choice(_CN_NAMES),
            street,
            "CN",
            "北京市",
            "北京市",
            "海淀区",
            "",
            "138****5678",
        )
    return (
        rng.choice(_EN_NAMES),
        f"{n} Pine Rd, Apt {n % 80}",
        "US",
        "CA",
        "Mountain View",
        "",
        "94043",
        "",
    )


def _masked_pairs(rng: random.Random, n: int) -> list[tuple[str, str, str, str]]:
    """(masked phone, full phone, masked street, full address) as the matcher compares them."""
    out = []
    for _ in range(n):
        phone = f"+86138{rng.randrange(10**8):08d}"
        street = f"{rng.choice(('文三路', '南京东路', '中山北路'))}{rng.randrange(1, 999)}号"
        masked = f"{phone[3:6]}****{phone[-4:]}" if rng.random() < 0.5 else f"1*********{phone[-1]}"
        out.append((masked, phone, street[:-2] + "**号", f"{street} {rng.randrange(1, 30)}栋"))
    return out


def make_batch(n: int, seed: int = 42) -> dict[str, list]:
    rng = random.Random(seed)
    keys = [f"{rng.choice(CHANNELS)}:{rng.randrange(10**9, 10**10)}".encode() for _ in range(n)]
    phones = [_phone(rng) for _ in range(n)]
    skus = [_sku(rng) for _ in range(n)]
    recipients = [_recipient(rng) for _ in range(n)]
    carts = []
    for _ in range(n):
        lines = [f"SKU-{rng.randrange(2000):05d}" for _ in range(rng.choice((1, 1, 2, 3, 4)))]
        carts.append((lines, [rng.choice((1, 1, 2, 3)) for _ in lines]))
    masked = _masked_pairs(rng, n)
    return {
        "keys": keys,
        "phones": phones,
        "skus": skus,
        "recipients": recipients,
        "carts": carts,
        "masked": masked,
    }


def _cases(impl: ModuleType, batch: dict[str, list]) -> dict[str, Callable[[], object]]:
    keys, phones, skus = batch["keys"], batch["phones"], batch["skus"]
    raws = [p for p, _ in phones]
    countries = [c for _, c in phones]
    envelopes = [keys[i : i + ENVELOPE] for i in range(0, len(keys), ENVELOPE)]
    kp, kps, ph, sk = (
        impl.kafka_partition,
        impl.kafka_partitions,
        impl.normalize_phone,
        impl.sku_key,
    )
    rf, smf = impl.recipient_fingerprint, impl.sku_multiset_fingerprint
    fold, mda, wm = impl.fold_text, impl.masked_digits_agree, impl.wildcard_match
    recipients, carts, masked = batch["recipients"], batch["carts"], batch["masked"]
    return {
        "kafka_partition": lambda: list(map(kp, keys, repeat(PARTITIONS))),
        "kafka_partitions": lambda: [kps(env, PARTITIONS) for env in envelopes],
        "normalize_phone": lambda: list(map(ph, raws, countries)),
        "sku_key": lambda: list(map(sk, skus)),
        "recipient_fingerprint": lambda: list(map(rf, recipients)),
        "sku_multiset_fingerprint": lambda: [smf(s, q) for s, q in carts],
        "fold_text": lambda: [fold(r[1]) for r in recipients],
        "masked_digits_agree": lambda: [mda(m, p) for m, p, _, _ in masked],
        "wildcard_match": lambda: [wm(ms, a, False) for _, _, ms, a in masked],
    }


def _best_ns(fn: Callable[[], object], repeats: int) -> int:
    best = None
    gc.disable()
    try:
        for _ in range(repeats):
            t0 = time.perf_counter_ns()
            fn()
            elapsed = time.perf_counter_ns() - t0
            best = elapsed if best is None else min(best, elapsed)
    finally:
        gc.enable()
    assert best is not None
    return best


def run(n: int, repeats: int) -> dict:
    batch = make_batch(n)
    try:
        kernels: ModuleType | None = importlib.import_module("ext._kernels")
    except ImportError:
        kernels = None
    twin_cases = _cases(_twin, batch)
    kernel_cases = _cases(kernels, batch) if kernels is not None else {}
    rows = []
    for name, twin_fn in twin_cases.items():
        if kernels is not None and kernel_cases[name]() != twin_fn():
            raise SystemExit(f"{name}: kernel and twin disagree on the benchmark batch")
        ops = n
        twin_ns = _best_ns(twin_fn, repeats) / ops
        kernel_ns = _best_ns(kernel_cases[name], repeats) / ops if kernels is not None else None
        rows.append(
            {
                "kernel": name,
                "ns_per_op_cython": None if kernel_ns is None else round(kernel_ns, 1),
                "ns_per_op_twin": round(twin_ns, 1),
                "speedup": None if kernel_ns is None else round(twin_ns / kernel_ns, 1),
            }
        )
    return {
        "n": n,
        "repeats": repeats,
        "compiled": kernels is not None,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "machine": platform.machine(),
        "results": rows,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.kernels", description=__doc__)
    parser.add_argument("--n", type=int, default=200_000, help="records per batch")
    parser.add_argument("--repeats", type=int, default=5, help="best of this many runs")
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    args = parser.parse_args(argv)

    report = run(args.n, args.repeats)
    if not report["compiled"]:
        print("ext._kernels is not built: showing the twin only (pip install -e . builds it)")
    print(f"n={args.n}, best of {args.repeats}, Python {report['python']}")
    print(f"{'kernel':<26} {'cython ns/op':>13} {'twin ns/op':>11} {'speedup':>8}")
    for row in report["results"]:
        k = row["ns_per_op_cython"]
        ratio = row["speedup"]
        print(
            f"{row['kernel']:<26} {('-' if k is None else f'{k:.1f}'):>13} "
            f"{row['ns_per_op_twin']:>11.1f} {('-' if ratio is None else f'{ratio:.1f}x'):>8}"
        )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
