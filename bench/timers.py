"""SLA timer firing lateness in the real running service (issue 7: "timer lateness p99 printed").

    python -m bench.timers                                   # 5,000 unpaid orders, tick 1 s
    python -m bench.timers --tick 0.2 --json                 # -> bench/results/timers.json
    python -m bench.timers --orders 20000 --rate 0 --after 10s

Spawns ``orderstream serve`` (``bench.flood.Service``: temp data dir, free ports) with a copy of
``config/sla.toml`` whose payment_timeout fires after ``--after`` (5 s) instead of 15 min, and
``sla_tick_s`` = ``--tick``. It posts ``--orders`` unpaid Shopify orders (the fixture webhook with
``financial_status: pending``, a unique id and a unique recipient phone each, so none is a
near-duplicate of another and held for review, and without its ``vip`` tag, so they take the
normal lane) as NDJSON, paced at ``--rate`` orders/s, then waits for every one of them to be
cancelled by the timer.

Lateness is read from the service's own audit trail, not from client clocks: per order,
``GET /v1/orders/{id}/history`` has ``order_received`` (``at`` = when the order stage recorded it,
which is when the payment clock starts) and ``payment_timeout`` (``at`` = when the worker fired
it), so lateness = payment_timeout.at - (order_received.at + after). Both are the worker's wall
clock, which makes the figure independent of HTTP and broker latency. The
``orderstream_sla_timer_lateness_seconds`` histogram from ``/metrics`` (delta over the run) is
reported next to it as a cross-check. Exit code 1 if any order was not cancelled within
``--wait-timeout``, 2 if the service did not stop cleanly.
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import math
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.flood import API_HEADERS, Pacer, Service, fmt, machine_info
from core.config_check import parse_duration

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "shopify" / "paid_webhook.json"
SLA_SOURCE = ROOT / "config" / "sla.toml"
DEFAULT_JSON = "bench/results/timers.json"
TIMER = "payment_timeout"
RECEIVED = "order_received"
LATENESS_METRIC = "orderstream_sla_timer_lateness_seconds"
FIRST_ID = 9_100_000_000_000  # Shopify-sized ids, far from the fixture's own
MAX_ORDERS = 1_000_000  # one unique 6-digit phone suffix per order

# ---------------------------------------------------------------------------- pure helpers


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile: the smallest value with at least ``q`` of the values <= it.

    Nearest rank (not interpolation) so p99 of 5,000 lateness figures is a lateness some order
    really saw; ``sorted_values`` must already be sorted (the caller sorts once for all q).
    """
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[rank - 1]


def summarise(values: list[float]) -> dict[str, float | int | None]:
    """p50/p90/p99/max/min and n of a list of lateness figures (ms)."""
    v = sorted(values)
    return {
        "n": len(v),
        "min": v[0] if v else None,
        "p50": percentile(v, 0.50),
        "p90": percentile(v, 0.90),
        "p99": percentile(v, 0.99),
        "max": v[-1] if v else None,
    }


def lateness_ms(history: list[dict[str, Any]], after_ms: int) -> float | None:
    """How late the payment timeout fired for one order, from its audit trail; None if not yet.

    The deadline is armed at recording time (``order_received.at``) + ``after_ms``; the timer's
    state-machine entry carries the moment the worker fired it. An order without a
    ``payment_timeout`` entry has not been cancelled by the timer (yet).
    """
    received = next((e for e in history if e.get("event") == RECEIVED), None)
    fired = next((e for e in history if e.get("event") == TIMER), None)
    if received is None or fired is None:
        return None
    return float(fired["at"] - (received["at"] + after_ms))


@dataclass
class Histogram:
    """A Prometheus histogram as cumulative (upper bound, count) buckets plus count and sum."""

    buckets: list[tuple[float, float]] = field(default_factory=list)
    count: float = 0.0
    sum: float = 0.0

    def minus(self, before: Histogram) -> Histogram:
        """This scrape less an earlier one: only what happened during the run."""
        old = dict(before.buckets)
        return Histogram(
            [(le, n - old.get(le, 0.0)) for le, n in self.buckets],
            self.count - before.count,
            self.sum - before.sum,
        )

    def quantile_le(self, q: float) -> float | None:
        """Upper bound of the bucket holding the q-quantile ("p99 <= this"); inf past the last.

        Buckets cannot say more than that, and an upper bound is the honest figure to compare
        with the exact per-order p99 (which must not exceed it).
        """
        if self.count <= 0:
            return None
        target = q * self.count
        for le, n in self.buckets:
            if n >= target:
                return le
        return math.inf


def parse_histogram(text: str, name: str) -> Histogram:
    """The named histogram out of a /metrics body, summed over any labels (processes)."""
    by_le: dict[float, float] = {}
    hist = Histogram()
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for s in family.samples:
            if s.name == name + "_bucket":
                le = float(s.labels["le"])
                by_le[le] = by_le.get(le, 0.0) + s.value
            elif s.name == name + "_count":
                hist.count += s.value
            elif s.name == name + "_sum":
                hist.sum += s.value
    hist.buckets = sorted(by_le.items())
    return hist


def write_policy(dst: Path, after: str, src: Path = SLA_SOURCE) -> None:
    """The shipped SLA policy with the payment timeout shortened, everything else unchanged.

    A copy, not a hand-written policy, so the service validates and runs the real one; the
    first ``after = "15m"`` is payment_timeout's. Fails loudly if the file no longer has it.
    """
    text = src.read_text()
    needle = 'after = "15m"'
    if needle not in text:
        raise RuntimeError(f"{src} has no {needle!r}: cannot shorten the payment timeout")
    dst.write_text(text.replace(needle, f'after = "{after}"', 1))


def unpaid_order(template: dict[str, Any], i: int) -> dict[str, Any]:
    """Order ``i``: the fixture, unpaid, with its own id and recipient phone, not VIP.

    A shared phone would make every order a near-duplicate of the first (held for review, never
    timed out) and trip the "3 orders to one recipient" rule. The fixture's ``vip`` tag would
    send all of them down the priority lane, which is meant for a few urgent orders, not for
    the bulk this measures.
    """
    o = copy.deepcopy(template)
    oid = FIRST_ID + i
    o["id"] = oid
    o["admin_graphql_api_id"] = f"gid://shopify/Order/{oid}"
    o["financial_status"] = "pending"
    o["tags"] = "gift-wrap"
    o["total_outstanding"] = o["total_price"]
    o["shipping_address"]["phone"] = f"+1 646 5{i:06d}"
    return o


def ndjson_bodies(n: int, batch: int, template: dict[str, Any]) -> list[tuple[int, bytes]]:
    """(order count, NDJSON body) per request, built before the clock starts."""
    bodies = []
    for start in range(0, n, batch):
        lines = [json.dumps(unpaid_order(template, i)) for i in range(start, min(n, start + batch))]
        bodies.append((len(lines), ("\n".join(lines) + "\n").encode()))
    return bodies


# ---------------------------------------------------------------------------- talking to it


@dataclass
class Posted:
    """What the service answered to the posts: the accepted global ids, in send order."""

    accepted: list[str] = field(default_factory=list)
    refused: int = 0
    retries: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    window_s: float = 0.0


async def post_batch(
    session: aiohttp.ClientSession, url: str, body: bytes, posted: Posted, max_retries: int = 20
) -> list[str]:
    """One NDJSON POST, retried on 503 (journal full) or a dropped connection like a gateway."""
    headers = {"X-Channel": "shopify", "Content-Type": "application/x-ndjson"}
    for attempt in range(max_retries + 1):
        try:
            async with session.post(url + "/v1/orders", data=body, headers=headers) as resp:
                status, text = resp.status, await resp.read()
                retry_after = resp.headers.get("Retry-After", "1")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            posted.errors[type(exc).__name__] = posted.errors.get(type(exc).__name__, 0) + 1
            status, text, retry_after = 0, b"", "0.5"
        if status in (0, 503) and attempt < max_retries:
            posted.retries += 1
            await asyncio.sleep(float(retry_after))
            continue
        break
    if status != 202:
        posted.errors[f"HTTP {status}"] = posted.errors.get(f"HTTP {status}", 0) + 1
        posted.refused += body.count(b"\n")
        return []
    results = [json.loads(ln) for ln in text.splitlines() if ln.strip()]
    posted.refused += sum(r.get("status") != "accepted" for r in results)
    return [r["id"] for r in results if r.get("status") == "accepted"]


async def post_orders(
    url: str, bodies: list[tuple[int, bytes]], rate: float, concurrency: int
) -> Posted:
    """Send every body, ``concurrency`` at a time, paced to ``rate`` orders/s (0 = flat out)."""
    posted = Posted()
    per_body: list[list[str]] = [[] for _ in bodies]
    queue: asyncio.Queue[int] = asyncio.Queue()
    for k in range(len(bodies)):
        queue.put_nowait(k)
    pacer = Pacer(rate)

    async def worker(session: aiohttp.ClientSession) -> None:
        while not queue.empty():
            k = queue.get_nowait()
            await pacer.take(bodies[k][0])
            per_body[k] = await post_batch(session, url, bodies[k][1], posted)

    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(headers=API_HEADERS, timeout=timeout) as session:
        t0 = time.monotonic()
        pacer.t0 = t0
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        posted.window_s = time.monotonic() - t0
    posted.accepted = [oid for ids in per_body for oid in ids]
    return posted


async def get_json(session: aiohttp.ClientSession, url: str) -> tuple[int, Any]:
    """(status, body) of a GET; status 0 if the request itself failed (retried by callers)."""
    try:
        async with session.get(url) as resp:
            return resp.status, await resp.json(content_type=None)
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
        return 0, None


async def scrape_lateness(session: aiohttp.ClientSession, url: str) -> Histogram:
    """The service's own lateness histogram (all worker processes summed by /metrics)."""
    async with session.get(url + "/metrics") as resp:
        return parse_histogram(await resp.text(), LATENESS_METRIC)


async def sample_cancelled(session: aiohttp.ClientSession, url: str, ids: list[str]) -> bool:
    """Whether every order in a small sample is cancelled: cheap to poll while timers fire."""
    answers = await asyncio.gather(*(get_json(session, f"{url}/v1/orders/{oid}") for oid in ids))
    return all(st == 200 and body.get("state") == "cancelled" for st, body in answers)


async def sweep(
    session: aiohttp.ClientSession, url: str, ids: list[str], after_ms: int, concurrency: int
) -> tuple[dict[str, float], dict[str, str]]:
    """Read every order's history: lateness of those the timer cancelled, last state of others."""
    sem = asyncio.Semaphore(concurrency)
    late: dict[str, float] = {}
    other: dict[str, str] = {}

    async def one(oid: str) -> None:
        async with sem:
            status, body = await get_json(session, f"{url}/v1/orders/{oid}/history")
        if status != 200:
            other[oid] = f"HTTP {status}"
            return
        history = body.get("history", [])
        ms = lateness_ms(history, after_ms)
        if ms is not None:
            late[oid] = ms
        else:
            other[oid] = history[-1]["to_state"] if history else "no history"

    await asyncio.gather(*(one(oid) for oid in ids))
    return late, other


@dataclass
class Cancellations:
    """Lateness (ms) per cancelled order, the last state of the others, and how long it took."""

    late: dict[str, float] = field(default_factory=dict)
    left: dict[str, str] = field(default_factory=dict)
    sample_s: float = 0.0  # from the last post until the sample was all cancelled (or timeout)
    sweep_s: float = 0.0  # reading every history (and re-reading the stragglers)


async def wait_for_cancellations(
    url: str, ids: list[str], after_ms: int, timeout_s: float, concurrency: int
) -> Cancellations:
    """Lateness per order once all are cancelled or ``timeout_s`` is up; also what is left.

    Polls a sample (the last orders sent, due last, plus a few at random) until it is all
    cancelled, and only then reads every history, so the measurement itself does not load the
    worker while most timers are still due; orders not done yet are re-read each second.
    """
    rng = random.Random(7)
    sample = ids[-20:] + rng.sample(ids, min(20, len(ids)))
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    out = Cancellations(left=dict.fromkeys(ids, "not read"))
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(headers=API_HEADERS, timeout=timeout) as session:
        while time.monotonic() < deadline and not await sample_cancelled(session, url, sample):
            await asyncio.sleep(0.5)
        t1 = time.monotonic()
        out.sample_s = t1 - t0
        while True:  # at least once: past the timeout, the report still names each order's state
            done, out.left = await sweep(session, url, list(out.left), after_ms, concurrency)
            out.late.update(done)
            if not out.left or time.monotonic() >= deadline:
                break
            await asyncio.sleep(1.0)
        out.sweep_s = time.monotonic() - t1
    return out


# ---------------------------------------------------------------------------- report


def hist_json(h: Histogram) -> dict[str, Any]:
    """The histogram delta as JSON (inf as the string Prometheus uses)."""

    def le(x: float | None) -> float | str | None:
        return "+Inf" if x == math.inf else x

    return {
        "count": h.count,
        "sum_s": h.sum,
        "mean_ms": h.sum / h.count * 1000 if h.count else None,
        "p50_le_s": le(h.quantile_le(0.50)),
        "p99_le_s": le(h.quantile_le(0.99)),
        "buckets": [[le(b), n] for b, n in h.buckets],
    }


def print_report(r: dict[str, Any]) -> None:
    """One table, the figures issue 7 asks for first."""
    s, lat, m = r["settings"], r["lateness_ms"], r["machine"]
    print()
    print(
        f"orderstream SLA timers — {s['orders']:,} unpaid orders, payment_timeout after "
        f"{s['after']}, sla_tick_s {s['tick_s']}, rate "
        f"{'flat out' if not s['rate'] else s['rate']}, batch {s['batch']}"
    )
    print(
        f"machine: {m['nproc']} cores, Python {m['python']}, kernels {m['kernels']}, "
        f"commit {m['git_commit'][:10]}{' (dirty)' if m['git_dirty'] else ''}"
    )
    h, c = r["metric"], r["counts"]
    rows = [
        ("accepted / refused", f"{c['accepted']:,} / {c['refused']:,}"),
        ("posted in", fmt(r["post_window_s"], " s", 2)),
        ("cancelled by the timer", f"{c['cancelled']:,} of {c['accepted']:,}"),
        ("not cancelled in time", fmt(c["not_cancelled"])),
        (
            "lateness (audit: fired - (recorded + after))",
            f"p50 {fmt(lat['p50'])}  p90 {fmt(lat['p90'])}  p99 {fmt(lat['p99'])}  "
            f"max {fmt(lat['max'])} ms  (min {fmt(lat['min'])}, n {lat['n']:,})",
        ),
        (
            f"{LATENESS_METRIC} (delta)",
            f"count {h['count']:,.0f}  mean {fmt(h['mean_ms'])} ms  "
            f"p50 <= {h['p50_le_s'] or '-'} s  p99 <= {h['p99_le_s'] or '-'} s",
        ),
        (
            "after the last post",
            f"waited {fmt(r['sample_s'], ' s', 1)} for a sample to be cancelled, "
            f"read every history in {fmt(r['sweep_s'], ' s', 1)}",
        ),
    ]
    if r.get("service"):
        sv = r["service"]
        rows.append(
            (
                "service",
                f"ready in {fmt(sv['ready_s'], ' s', 1)}, stopped in {fmt(sv['stop_s'], ' s', 1)}"
                f", exit code {sv['exit_code']}, leftover processes {sv['leftover_pids']}",
            )
        )
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    if r["errors"]:
        print(f"  errors: {r['errors']}")
    for oid, state in r["not_cancelled_sample"].items():
        print(f"  not cancelled: {oid}  {state}")


# ---------------------------------------------------------------------------- main


async def measure(url: str, args: argparse.Namespace, after_ms: int) -> dict[str, Any]:
    """Post the orders to a ready service, wait for the timer to cancel them, gather figures."""
    template = json.loads(FIXTURE.read_text())
    bodies = ndjson_bodies(args.orders, args.batch, template)
    async with aiohttp.ClientSession(
        headers=API_HEADERS, timeout=aiohttp.ClientTimeout(total=10)
    ) as session:
        before = await scrape_lateness(session, url)
    print(f"posting {args.orders:,} unpaid orders ...", flush=True)
    posted = await post_orders(url, bodies, args.rate, args.concurrency)
    wait_s = args.wait_timeout
    print(f"waiting up to {wait_s:.0f}s for {len(posted.accepted):,} cancellations", flush=True)
    got = await wait_for_cancellations(
        url, posted.accepted, after_ms, wait_s, args.read_concurrency
    )
    async with aiohttp.ClientSession(
        headers=API_HEADERS, timeout=aiohttp.ClientTimeout(total=10)
    ) as session:
        metric = (await scrape_lateness(session, url)).minus(before)
    return {
        "counts": {
            "orders": args.orders,
            "accepted": len(posted.accepted),
            "refused": posted.refused,
            "retries": posted.retries,
            "cancelled": len(got.late),
            "not_cancelled": len(got.left),
        },
        "post_window_s": posted.window_s,
        "posted_per_s": len(posted.accepted) / posted.window_s if posted.window_s else None,
        "sample_s": got.sample_s,
        "sweep_s": got.sweep_s,
        "lateness_ms": summarise(list(got.late.values())),
        "metric": hist_json(metric),
        "errors": posted.errors,
        "not_cancelled_sample": dict(sorted(got.left.items())[:10]),
    }


async def run(args: argparse.Namespace, after_ms: int) -> int:
    """Spawn the service with the short policy, measure, stop it; the exit code says it all."""
    policy_dir = Path(tempfile.mkdtemp(prefix="timers-"))
    policy = policy_dir / "sla.toml"
    write_policy(policy, args.after)
    env = {"ORDERSTREAM_SLA_POLICY": str(policy), "ORDERSTREAM_SLA_TICK_S": str(args.tick)}
    service = Service(args.ready_timeout, env)
    machine = machine_info()  # before the run: it records the load average too
    measured: dict[str, Any] = {}
    code = 0
    try:
        print(f"starting the service (data {service.data}, tick {args.tick}s) ...", flush=True)
        service.start()
        await service.wait_ready()
        print(f"service ready in {service.ready_s}s", flush=True)
        measured = await measure(service.url, args, after_ms)
        c = measured["counts"]
        if c["not_cancelled"] or c["accepted"] != args.orders:
            code = 1
    finally:
        svc, stopped_ok = stop_service(service, args.keep_data)
        code = code or (0 if stopped_ok else 2)
        shutil.rmtree(policy_dir, ignore_errors=True)
    if measured:
        result = {"settings": settings_json(args), "machine": machine, **measured, "service": svc}
        print_report(result)
        write_json(result, args.json)
    return code


def stop_service(service: Service, keep_data: bool) -> tuple[dict[str, Any], bool]:
    """SIGTERM, then make sure no worker or broker outlived it; (figures, stopped cleanly)."""
    print("stopping the service (SIGTERM) ...", flush=True)
    service.stop()
    left = service.leftovers()
    svc = {
        "ready_s": service.ready_s,
        "stop_s": service.stop_s,
        "exit_code": service.exit_code,
        "leftover_pids": left,
    }
    ok = service.exit_code == 0 and not left
    if not ok:
        print(f"! service exit code {service.exit_code}, leftover processes {left}")
        print(service.tail())
    if not keep_data:
        shutil.rmtree(service.data, ignore_errors=True)
    return svc, ok


def settings_json(args: argparse.Namespace) -> dict[str, Any]:
    """The knobs, in the JSON, so a figure can be reproduced."""
    return {
        "orders": args.orders,
        "after": args.after,
        "tick_s": args.tick,
        "rate": args.rate,
        "batch": args.batch,
        "concurrency": args.concurrency,
        "read_concurrency": args.read_concurrency,
        "wait_timeout_s": args.wait_timeout,
    }


def write_json(result: dict[str, Any], path: str) -> None:
    if not path:
        return
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {p}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.timers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--orders", type=int, default=5_000)
    p.add_argument("--rate", type=float, default=1_000, help="orders/s; 0 = flat out")
    p.add_argument("--batch", type=int, default=100, help="orders per NDJSON body")
    p.add_argument("--concurrency", type=int, default=4, help="HTTP connections")
    p.add_argument("--read-concurrency", type=int, default=16, help="history reads in flight")
    p.add_argument("--tick", type=float, default=1.0, help="sla_tick_s of the service")
    p.add_argument("--after", default="5s", help="payment_timeout in the temp policy")
    p.add_argument("--wait-timeout", type=float, default=120.0, help="s after the last post")
    p.add_argument("--ready-timeout", type=float, default=120.0)
    p.add_argument(
        "--json",
        nargs="?",
        const=DEFAULT_JSON,
        default="",
        help=f"write JSON (default path {DEFAULT_JSON})",
    )
    p.add_argument("--keep-data", action="store_true", help="keep the service's data dir")
    args = p.parse_args(argv)
    if (
        not 1 <= args.orders <= MAX_ORDERS
        or min(args.batch, args.concurrency, args.read_concurrency) < 1
    ):
        p.error(f"--orders must be 1..{MAX_ORDERS:,}; --batch and the concurrencies >= 1")
    after_ms = parse_duration(args.after)
    if isinstance(after_ms, str):
        p.error(f"--after: {after_ms}")
    if not 0.05 <= args.tick <= 60:
        p.error("--tick must be 0.05..60 seconds (the service's own bounds)")
    sys.exit(asyncio.run(run(args, after_ms)))


if __name__ == "__main__":
    main()
