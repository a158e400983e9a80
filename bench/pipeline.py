"""The whole-pipeline flood benchmark, measured where a merchant sees it: a live SSE subscriber.

    python -m bench.pipeline sustained --orders 200000          # flat out: orders/s end to end
    python -m bench.pipeline paced --rate 2400 --seconds 60     # latency to the subscriber
    python -m bench.pipeline burst --rate 2400 --burst-x 10 --burst-s 30
    python -m bench.pipeline sustained --workers 1              # scaling: 1 vs 2 workers

Each run starts the real service (embedded broker, API, N workers) on loopback, generates
realistic multi-channel orders (5.8 % duplicates, near-duplicates, Zipf SKUs; bench.orders)
before the clock starts, sends them as NDJSON over HTTP, and follows ``GET /v1/stream?type=order``
from the first second. An order counts as out when its first change reaches the subscriber;
count in = count out is checked by global id and any missing order fails the run (exit 1).

It prints and writes (``bench/results/pipeline-<scenario>-w<N>.json`` and ``.png``): orders/s
in and out per second, latency from the request being sent to the change arriving (p50, p99,
p999, per second too), the HTTP refusals (the burst must have none), and where the CPU went:
each process's CPU seconds per order and each stage's envelope time per order, from the
service's own /metrics — the per-stage ceiling table. Client, broker, API and workers share the
machine's cores: figures are for the whole box.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import re
import signal
import time
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiohttp
import msgspec

from bench.flood import API_HEADERS, Service, Tally, _stats, machine_info, send_http
from bench.orders import OrderGenerator, ndjson_batch_orders, ndjson_batches

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class _Change(msgspec.Struct):
    order_id: str
    kind: str
    received_at: int
    priority: str = "normal"


class _Event(msgspec.Struct):
    id: int | str  # on a cluster: a position every node understands
    data: _Change


class Subscriber:
    """A live SSE subscriber (order changes only) that timestamps each order's first change."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/") + "/v1/stream?type=order"
        self.first: dict[str, float] = {}  # order id -> wall time its first change arrived
        self.server_lat: list[float] = []  # accepted at the door -> arrived here (ms)
        self.changes = 0
        self.copies = 0  # changes that record an accepted copy (created/updated/duplicate)
        self.last_id = 0
        self.error = ""
        self._task: asyncio.Task[None] | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.connected.wait(), 10)

    async def _run(self) -> None:
        dec = msgspec.json.Decoder(_Event)
        first = self.first
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
        try:
            async with (
                aiohttp.ClientSession(headers=API_HEADERS, timeout=timeout) as session,
                session.get(self.url) as resp,
            ):
                self.connected.set()
                buf = b""
                async for chunk in resp.content.iter_any():
                    now = time.time()
                    buf += chunk
                    *frames, buf = buf.split(b"\n\n")
                    for frame in frames:
                        i = frame.find(b"data: ")
                        if i < 0:
                            continue
                        ev = dec.decode(frame[i + 6 :])
                        self.last_id = ev.id
                        ch = ev.data
                        self.changes += 1
                        if ch.kind in ("created", "updated", "duplicate_received"):
                            self.copies += 1
                        if ch.order_id not in first:
                            first[ch.order_id] = now
                            self.server_lat.append(now * 1000 - ch.received_at)
        except (aiohttp.ClientError, OSError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            self.connected.set()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


class Schedule:
    """Paces senders along piecewise-constant rates: [(orders/s, seconds), ...]; 0 = flat out."""

    def __init__(self, phases: list[tuple[float, float]]) -> None:
        self.phases = phases
        self.t0 = 0.0
        self.granted = 0

    def due(self, k: int) -> float:
        """Seconds after t0 when the k-th order is due."""
        t = 0.0
        for rate, secs in self.phases:
            if rate <= 0:
                return t
            n = rate * secs
            if k <= n:
                return t + k / rate
            k -= int(n)
            t += secs
        return t

    async def take(self, n: int) -> None:
        delay = self.t0 + self.due(self.granted) - time.monotonic()
        self.granted += n
        if delay > 0:
            await asyncio.sleep(delay)

    @property
    def total(self) -> int:
        return int(sum(r * s for r, s in self.phases))


def descendants(root: int) -> list[int]:
    """``root`` and every process below it (workers start their own sessions)."""
    children: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
                children[ppid].append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


def ceilings() -> list[tuple[str, float, str]]:
    """One-core stage ceilings (orders/s) from the latest per-stage benchmark results."""
    out: list[tuple[str, float, str]] = []
    with contextlib.suppress(OSError, KeyError, ValueError):
        d = json.loads((RESULTS / "stages.json").read_text())
        out.append(("ingest (HTTP + journal)", d["ingest"]["fsync_8"]["orders_per_s"], "stages"))
        out.append(("normalise", d["normalise"]["orders_per_s"], "stages"))
        out.append(("exact dedup", d["dedup"]["exact_orders_per_s"], "stages"))
        out.append(("recipient dedup", d["dedup"]["recipient_orders_per_s"], "stages"))
        out.append(("order stage (flow)", d["order_stage"]["first_pass"]["orders_per_s"], "stages"))
    with contextlib.suppress(OSError, KeyError, ValueError):
        r = json.loads((RESULTS / "reserve.json").read_text())
        out.append(
            ("reserve (lines/s, fsynced)", r["results"]["rocksdb_fsync"]["lines_per_s"], "reserve")
        )
    with contextlib.suppress(OSError, KeyError, ValueError):
        e = json.loads((RESULTS / "state_events.json").read_text())
        out.append(("order events (events/s)", e["events_per_s"], "state_events"))
    return out


RSS_EVERY_S = 2.0


def process_rss(pids: list[int]) -> dict[str, float]:
    """Resident MiB by role (api, broker, worker summed)."""
    out: dict[str, float] = defaultdict(float)
    page = os.sysconf("SC_PAGE_SIZE")
    for pid in pids:
        try:
            pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        role = (
            "broker"
            if b"tansu" in cmd
            else "worker"
            if b" worker" in cmd.replace(b"\0", b" ")
            else "api"
        )
        out[role] += pages * page / 2**20
    return dict(out)


async def sample_rss(root: int, t0: float, out: list[dict[str, float]], every: float) -> None:
    while True:
        row = {"t": time.time() - t0, **process_rss(descendants(root))}
        out.append(row)
        await asyncio.sleep(every)


SWAP_SECONDS = re.compile(r"broker (?:replaced|swapped without a pause) in ([0-9.]+)s")


def longest_gap_s(start: float, arrivals: Iterable[float]) -> float:
    """The longest stretch, from ``start`` on, in which no order reached the subscriber."""
    times = sorted(arrivals)
    if not times:
        return 0.0
    return max(b - a for a, b in zip([start, *times], times, strict=False))


def dir_mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20


def memory_summary(
    rss: list[dict[str, float]], budget_mib: float, log: str, data: Path
) -> dict[str, Any]:
    """Did the service stay within its memory budget, and what did it do to stay there?"""
    totals = [sum(v for k, v in r.items() if k != "t") for r in rss]
    over = [t > budget_mib for t in totals] if budget_mib else []
    longest = run = 0
    for flag in over:
        run = run + 1 if flag else 0
        longest = max(longest, run)
    stores = data / "stores"
    return {
        "budget_mib": budget_mib or None,
        "peak_total_mib": max(totals, default=0.0),
        "median_total_mib": sorted(totals)[len(totals) // 2] if totals else 0.0,
        "peak_by_role_mib": {
            role: max((r.get(role, 0.0) for r in rss), default=0.0)
            for role in ("api", "worker", "broker")
        },
        "samples": len(totals),
        "samples_over_budget": sum(over),
        "longest_over_budget_s": longest * RSS_EVERY_S,
        "broker_replacements": log.count("broker replaced in") + log.count("broker swapped"),
        "broker_swaps_without_pause": log.count("broker swapped without a pause"),
        "swap_seconds": [float(x) for x in SWAP_SECONDS.findall(log)],
        "worker_recycles": log.count("to release its memory"),
        "stores_on_disk_mib": (
            {d.name: round(dir_mib(d), 1) for d in sorted(stores.iterdir()) if d.is_dir()}
            if stores.is_dir()
            else {}
        ),
    }


def process_cpu(pids: list[int]) -> dict[int, tuple[str, float]]:
    """CPU seconds (user + system) so far, and a role name, per live process."""
    out = {}
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        role = "broker" if "tansu" in cmd else "worker" if " worker" in cmd else "api"
        out[pid] = (role, (int(stat[11]) + int(stat[12])) / _CLK_TCK)
    return out


def cpu_by_role(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds each role used between two ``process_cpu`` readings (a process started in
    between, e.g. a restarted worker, counts whole)."""
    out: dict[str, float] = defaultdict(float)
    for pid, (role, secs) in after.items():
        out[role] += secs - before.get(pid, (role, 0.0))[1]
    return dict(out)


def stage_seconds(metrics_text: str) -> dict[str, float]:
    """orderstream_stage_envelope_seconds_sum by stage, from /metrics text."""
    out: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("orderstream_stage_envelope_seconds_sum{"):
            stage = line.split('stage="', 1)[1].split('"', 1)[0]
            out[stage] = out.get(stage, 0.0) + float(line.rsplit(" ", 1)[1])
    return out


async def kill_a_worker(root: int, at: float, t0: float, out: dict[str, Any]) -> None:
    """SIGKILL one worker ``at`` seconds after ``t0``: what a crash costs (rebalance, replay)."""
    await asyncio.sleep(max(0.0, t0 + at - time.time()))
    for pid in descendants(root):
        with contextlib.suppress(OSError):
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            if b" worker" in cmd:
                os.kill(pid, signal.SIGKILL)
                out.update(pid=pid, at_s=time.time() - t0)
                return


def worker_kill_cost(
    kill: dict[str, Any], first: dict[str, float], sent: dict[str, float], t0: float, bar_ms: float
) -> dict[str, Any]:
    """After the kill: the longest silence at the subscriber, and how long until orders sent
    after it arrive as fast as before it again (200 in a row within 1.5x the p99 of the ten
    seconds before the kill, or within ``bar_ms``)."""
    at = t0 + kill["at_s"]
    arrivals = sorted(t for t in first.values() if t >= at)
    gaps = [b - a for a, b in zip([at, *arrivals], arrivals, strict=False)]
    before = [(t - sent[o]) * 1000 for o, t in first.items() if at - 10 <= sent.get(o, 0) < at]
    bar = max(bar_ms, 1.5 * (_stats(before)["p99"] or 0))
    late = sorted(
        (sent[o], (t - sent[o]) * 1000) for o, t in first.items() if o in sent and sent[o] >= at
    )
    recovered = None
    for i, (ts, _) in enumerate(late):
        if all(x < bar for _, x in late[i : i + 200]):
            recovered = ts - at
            break
    return {
        **kill,
        "p99_before_ms": _stats(before)["p99"],
        "recovery_bar_ms": bar,
        "longest_silence_s": max(gaps, default=None),
        "back_to_normal_after_s": recovered,
    }


async def fetch_text(url: str) -> str:
    async with (
        aiohttp.ClientSession(
            headers=API_HEADERS, timeout=aiohttp.ClientTimeout(total=30)
        ) as session,
        session.get(url) as resp,
    ):
        return await resp.text()


def per_second(
    t0: float, acks: dict[str, float], first: dict[str, float], sent: dict[str, float]
) -> list[dict[str, Any]]:
    ins: dict[int, int] = defaultdict(int)
    outs: dict[int, int] = defaultdict(int)
    lats: dict[int, list[float]] = defaultdict(list)
    for t in acks.values():
        ins[int(t - t0)] += 1
    for oid, t in first.items():
        if oid in sent:
            sec = int(t - t0)
            outs[sec] += 1
            lats[sec].append((t - sent[oid]) * 1000)
    last = max([*ins, *outs], default=0)
    rows = []
    for sec in range(last + 1):
        st = _stats(lats[sec])
        rows.append(
            {"t": sec, "in": ins[sec], "out": outs[sec], "p50": st["p50"], "p99": st["p99"]}
        )
    return rows


def plot(
    rows: list[dict[str, Any]],
    title: str,
    path: Path,
    rss: list[dict[str, float]] | None = None,
    budget_mib: float | None = None,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t"] for r in rows]
    n = 3 if rss else 2
    fig, axes = plt.subplots(n, 1, figsize=(10, 3.3 * n), sharex=True)
    ax1, ax2 = axes[0], axes[1]
    if rss:
        ax3 = axes[2]
        for role in ("api", "worker", "broker"):
            ax3.plot([r["t"] for r in rss], [r.get(role, 0) for r in rss], label=role, lw=1.2)
        ax3.plot(
            [r["t"] for r in rss],
            [sum(v for k, v in r.items() if k != "t") for r in rss],
            label="total",
            lw=1.5,
            color="black",
        )
        if budget_mib:
            ax3.axhline(budget_mib, color="red", ls="--", lw=1, label="budget")
        ax3.set_ylabel("resident MiB")
        ax3.legend(loc="upper left")
        ax3.grid(alpha=0.3)
    ax1.plot(t, [r["in"] for r in rows], label="accepted / s", lw=1.2)
    ax1.plot(t, [r["out"] for r in rows], label="at the SSE subscriber / s", lw=1.2)
    ax1.set_ylabel("orders / s")
    ax1.legend(loc="upper right")
    ax1.grid(alpha=0.3)
    ax2.plot(t, [r["p50"] for r in rows], label="p50", lw=1.2)
    ax2.plot(t, [r["p99"] for r in rows], label="p99", lw=1.2)
    ax2.set_yscale("log")
    ax2.set_ylabel("sent -> subscriber (ms)")
    axes[-1].set_xlabel("seconds since the first send")
    ax2.legend(loc="upper right")
    ax2.grid(alpha=0.3, which="both")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def recovery_s(rows: list[dict[str, Any]], after: float, bar_ms: float) -> float | None:
    """Seconds after ``after`` until per-second p99 is back under ``bar_ms`` for good."""
    tail = [r for r in rows if r["t"] >= after and r["p99"] is not None]
    for i, r in enumerate(tail):
        if all(x["p99"] < bar_ms for x in tail[i:]):
            return r["t"] - after
    return None


class OpenConsole:
    """A headless chromium showing the console's Flow view (metrics every 2 s, the live stream):
    what an operator watching the flood costs the service. The browser is not the service's
    child, so its own CPU is not counted in the service's roles."""

    def __init__(self, pw: Any, browser: Any) -> None:
        self.pw = pw
        self.browser = browser

    async def aclose(self) -> None:
        await self.browser.close()
        await self.pw.stop()


async def drain_stream(url: str) -> None:
    """An SSE subscriber that reads and discards: N of them make the per-subscriber cost of the
    sync hub measurable above the run-to-run noise (the console's live list is one)."""
    async with (
        aiohttp.ClientSession(headers=API_HEADERS, timeout=aiohttp.ClientTimeout(total=None)) as s,
        s.get(url) as resp,
    ):
        async for _ in resp.content.iter_chunked(1 << 16):
            pass


async def open_console(url: str) -> OpenConsole:
    import shutil

    from playwright.async_api import async_playwright

    pw = await async_playwright().start()
    browser = await pw.chromium.launch(
        executable_path=shutil.which("chromium") or "/usr/bin/chromium",
        args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    )
    page = await browser.new_page()
    await page.goto(f"{url}/console")
    await page.fill("#key", API_HEADERS.get("Authorization", "Bearer -").split(" ", 1)[1])
    await page.click("#signin-form button[type=submit]")
    await page.wait_for_selector("#tabs:not([hidden])")
    print("console open on the Flow view", flush=True)
    return OpenConsole(pw, browser)


async def run(args: argparse.Namespace) -> int:
    if args.scenario == "sustained":
        phases = [(0.0, 0.0)]
        count = args.orders
    elif args.scenario == "paced":
        phases = [(args.rate, args.seconds)]
        count = int(args.rate * args.seconds)
    else:
        phases = [
            (args.rate, args.warmup_s),
            (args.rate * args.burst_x, args.burst_s),
            (args.rate, args.recover_s),
        ]
        count = int(sum(r * s for r, s in phases))
    schedule = Schedule(phases)
    seed = args.seed if args.seed is not None else time.time_ns() % 2**32
    gen = OrderGenerator(seed, duplicate_rate=args.dup_rate, sku_count=args.skus)
    # a long run is generated as it goes, a slice at a time (the whole of a 30-minute flood
    # would not fit in memory as payloads); a short one entirely before the clock starts
    per_slice = int(args.rate * args.slice_s) if args.slice_s else count
    per_slice = max(1, min(per_slice, count))

    def make_units(n: int) -> list[tuple[str, bytes, list[Any]]]:
        orders = gen.generate(n)
        bodies = ndjson_batches(orders, args.batch)
        groups = ndjson_batch_orders(orders, args.batch)
        return [(ch, body, grp) for (ch, body), grp in zip(bodies, groups, strict=True)]

    t = time.perf_counter()
    units = make_units(per_slice)
    print(f"generated {per_slice:,} orders in {time.perf_counter() - t:.1f}s", flush=True)

    env = {"ORDERSTREAM_WORKERS": str(args.workers)}
    for item in args.env:
        key, _, value = item.partition("=")
        env[key] = value
    service = Service(args.ready_timeout, env)
    machine = machine_info()
    console: OpenConsole | None = None
    code = 0
    result: dict[str, Any] = {}
    try:
        service.start()
        await service.wait_ready()
        print(f"service ready in {service.ready_s}s ({args.workers} worker(s))", flush=True)
        sub = Subscriber(service.url)
        await sub.start()
        if sub.error:
            raise RuntimeError(f"subscriber: {sub.error}")
        console = await open_console(service.url) if args.console else None
        extra = [
            asyncio.create_task(drain_stream(service.url + "/v1/stream?type=order"))
            for _ in range(args.extra_subscribers)
        ]
        assert service.proc is not None
        pids = descendants(service.proc.pid)
        cpu0 = process_cpu(pids)
        stages0 = stage_seconds(await fetch_text(service.url + "/metrics"))
        tally = Tally()
        sent_at: dict[str, float] = {}
        rss: list[dict[str, float]] = []
        sampler = asyncio.create_task(sample_rss(service.proc.pid, time.time(), rss, RSS_EVERY_S))
        gc.collect()
        gc.freeze()

        # the send time of each order: the moment its request was due (paced) or started
        orig_take = schedule.take

        async def take(n: int) -> None:
            idx = schedule.granted
            await orig_take(n)
            now = time.time()
            for o in units_by_start.pop(idx, ()):  # let the sent slice's orders go
                sent_at[o.order_id] = now

        units_by_start: dict[int, list[Any]] = {}
        k = 0

        def index(batch: list[tuple[str, bytes, list[Any]]]) -> None:
            nonlocal k
            for _, _, grp in batch:
                units_by_start[k] = grp
                k += len(grp)

        index(units)
        schedule.take = take  # type: ignore[method-assign]
        print(f"sending {count:,} orders ({args.scenario}) ...", flush=True)
        t_send = time.time()
        kill: dict[str, Any] = {}
        if args.kill_worker_at:
            killer = asyncio.create_task(
                kill_a_worker(service.proc.pid, args.kill_worker_at, t_send, kill)
            )
        left = count - per_slice
        while True:
            await send_http(service.url, units, True, args.concurrency, tally, schedule)  # type: ignore[arg-type]
            if left <= 0:
                break
            units = make_units(min(per_slice, left))
            left -= per_slice
            index(units)
        send_end = time.time()
        expected = {oid for oid in tally.ack}
        deadline = time.monotonic() + args.drain_timeout
        while time.monotonic() < deadline and not expected <= sub.first.keys():
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)  # late copies (duplicates) of orders already seen
        cpu1 = process_cpu(descendants(service.proc.pid))
        sampler.cancel()
        metrics_text = await fetch_text(service.url + "/metrics")
        stages1 = stage_seconds(metrics_text)
        budget = float(env.get("ORDERSTREAM_MEMORY_BUDGET_MB", 0))
        memory = memory_summary(rss, budget, service.log_text(0), service.data)
        await sub.stop()

        missing = sorted(expected - sub.first.keys())
        out_ids = expected & sub.first.keys()
        last_out = max((sub.first[o] for o in out_ids), default=t_send)
        lat = [(sub.first[o] - sent_at[o]) * 1000 for o in out_ids if o in sent_at]
        rows = per_second(t_send, tally.ack, sub.first, sent_at)
        n_out = len(out_ids)
        cpu = defaultdict(float, cpu_by_role(cpu0, cpu1))
        stage_us = {
            st: (stages1[st] - stages0.get(st, 0.0)) / max(n_out, 1) * 1e6 for st in stages1
        }
        window = last_out - t_send
        gap = longest_gap_s(t_send, (sub.first[o] for o in out_ids))
        lat_stats = _stats(lat)
        lat_stats["p999"] = sorted(lat)[min(len(lat) - 1, int(0.999 * len(lat)))] if lat else None
        result = {
            "scenario": args.scenario,
            "settings": {
                "console_open": args.console,
                "extra_subscribers": args.extra_subscribers,
                "workers": args.workers,
                "phases": phases,
                "orders": count,
                "batch": args.batch,
                "concurrency": args.concurrency,
                "dup_rate": args.dup_rate,
                "skus": args.skus,
                "seed": seed,
            },
            "machine": machine,
            "counts": {
                "sent": tally.sent,
                "accepted_lines": tally.accepted,
                "refused_lines": tally.refused,
                "http_errors": tally.errors,
                "retries": tally.retries,
                "distinct_ids_in": len(expected),
                "distinct_ids_out": n_out,
                "missing": len(missing),
                "changes_at_subscriber": sub.changes,
                "copies_at_subscriber": sub.copies,
            },
            "send_window_s": send_end - t_send,
            "accepted_per_s": tally.accepted / (send_end - t_send),
            "out_window_s": window,
            "longest_without_an_order_out_s": gap,
            "orders_out_per_s": n_out / window if window > 0 else None,
            "latency_sent_to_subscriber_ms": lat_stats,
            "latency_accepted_to_subscriber_ms": _stats(sub.server_lat),
            "cpu_s_per_1000_orders": {r: v / max(n_out, 1) * 1000 for r, v in cpu.items()},
            "stage_wall_us_per_order": stage_us,
            "stage_ceilings_one_core": ceilings(),
            "per_second": rows,
            "rss_mib": rss,
            "rss_peak_total_mib": memory["peak_total_mib"],
            "memory": memory,
            "service_env": env,
            "missing_sample": missing[:10],
            "load_avg_after": os.getloadavg(),
        }
        if kill:
            result["worker_kill"] = worker_kill_cost(kill, sub.first, sent_at, t_send, args.bar_ms)
        elif args.kill_worker_at:
            killer.cancel()
        if args.scenario == "burst":
            burst_end = args.warmup_s + args.burst_s
            result["recovery_s_to_p99_under_bar"] = recovery_s(rows, burst_end, args.bar_ms)
            # back to what the base rate gave before the burst (its per-second p99s' median,
            # from 5 s in): the absolute bar can be below what the box does at the base rate
            before = sorted(
                r["p99"] for r in rows if 5 <= r["t"] < args.warmup_s and r["p99"] is not None
            )
            if before:
                base = before[len(before) // 2]
                result["baseline_p99_ms"] = base
                result["recovery_s_to_baseline"] = recovery_s(rows, burst_end, 1.5 * base)
        if missing or tally.refused:
            code = 1
    finally:
        if console is not None:
            await console.aclose()
        for task in locals().get("extra", []):
            task.cancel()
        await asyncio.get_running_loop().run_in_executor(None, service.stop)
        left = service.leftovers()
        if left:
            print(f"! processes left after stop: {left}")
            code = code or 2
    if not result:
        return code or 2
    report(result)
    name = f"pipeline-{args.scenario}-w{args.workers}"
    out = Path(args.json) if args.json else RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    if not args.no_plot:
        png = out.with_suffix(".png")
        title = f"orderstream {args.scenario}, {args.workers} worker(s), {count:,} orders"
        plot(result["per_second"], title, png, result["rss_mib"], memory["budget_mib"])
        print(f"wrote {png}")
    return code


def report(r: dict[str, Any]) -> None:
    c, lat = r["counts"], r["latency_sent_to_subscriber_ms"]
    srv = r["latency_accepted_to_subscriber_ms"]
    m = r["machine"]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:,.0f}"

    print()
    print(
        f"orderstream pipeline — {r['scenario']}, {r['settings']['workers']} worker(s), "
        f"{r['settings']['orders']:,} orders; {m['nproc']} cores, commit {m['git_commit'][:10]}"
    )
    rows = [
        ("accepted lines / refused", f"{c['accepted_lines']:,} / {c['refused_lines']:,}"),
        ("distinct orders in / out", f"{c['distinct_ids_in']:,} / {c['distinct_ids_out']:,}"),
        ("missing", f"{c['missing']:,}"),
        ("accepted/s (send window)", f"{r['accepted_per_s']:,.0f} ({r['send_window_s']:.1f} s)"),
        (
            "orders/s at the subscriber",
            f"{(r['orders_out_per_s'] or 0):,.0f} ({r['out_window_s']:.1f} s)",
        ),
        (
            "sent -> subscriber (ms)",
            f"p50 {ms(lat['p50'])}  p99 {ms(lat['p99'])}  p999 {ms(lat['p999'])}  "
            f"max {ms(lat['max'])}",
        ),
        (
            "accepted -> subscriber (ms)",
            f"p50 {ms(srv['p50'])}  p99 {ms(srv['p99'])}  max {ms(srv['max'])}",
        ),
    ]
    if "worker_kill" in r:
        k = r["worker_kill"]
        back = k["back_to_normal_after_s"]
        rows.append(
            (
                f"worker SIGKILLed at {k['at_s']:.0f} s",
                f"longest silence {k['longest_silence_s'] or 0:.1f} s, sent-after-kill orders "
                f"back under {k['recovery_bar_ms']:.0f} ms after "
                f"{'never' if back is None else f'{back:.1f} s'}",
            )
        )
    if r.get("rss_peak_total_mib"):
        rows.append(("peak resident memory (all)", f"{r['rss_peak_total_mib']:,.0f} MiB"))
    mem = r.get("memory") or {}
    if mem.get("peak_by_role_mib"):
        rows.append(
            (
                "resident: median total / peaks",
                f"{mem['median_total_mib']:,.0f} MiB / "
                + ", ".join(f"{k} {v:,.0f}" for k, v in mem["peak_by_role_mib"].items()),
            )
        )
    if mem.get("budget_mib"):
        rows.append(
            (
                f"memory budget {mem['budget_mib']:,.0f} MiB",
                f"over it in {mem['samples_over_budget']} of {mem['samples']} samples "
                f"(longest {mem['longest_over_budget_s']:.0f} s); "
                f"{mem['broker_replacements']} broker replacements "
                f"({mem.get('broker_swaps_without_pause', 0)} without a pause), "
                f"{mem['worker_recycles']} worker restarts",
            )
        )
        if mem.get("swap_seconds"):
            secs = mem["swap_seconds"]
            rows.append(("broker swaps took", f"{min(secs):.1f}-{max(secs):.1f} s each"))
    if r.get("longest_without_an_order_out_s") is not None:
        rows.append(
            (
                "longest stretch with no order reaching the subscriber",
                f"{r['longest_without_an_order_out_s']:.2f} s",
            )
        )
    if mem.get("stores_on_disk_mib"):
        sizes = ", ".join(f"{k} {v:,.0f}" for k, v in mem["stores_on_disk_mib"].items())
        rows.append(("stores on disk at the end (MiB)", sizes))
    if "recovery_s_to_p99_under_bar" in r:
        rec = r["recovery_s_to_p99_under_bar"]
        rows.append(("p99 back under the bar after", "never" if rec is None else f"{rec:.0f} s"))
    if "recovery_s_to_baseline" in r:
        rec = r["recovery_s_to_baseline"]
        rows.append(
            (
                f"p99 back under 1.5 x pre-burst ({r['baseline_p99_ms']:.0f} ms) after",
                "never" if rec is None else f"{rec:.0f} s after the burst",
            )
        )
    cpu = ", ".join(f"{k} {v:.2f}" for k, v in sorted(r["cpu_s_per_1000_orders"].items()))
    rows.append(("CPU s per 1,000 orders", cpu))
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{w}}  {v}")
    print("  stage wall time per order in this run (envelope handling incl. awaiting its sends):")
    for st, us in sorted(r["stage_wall_us_per_order"].items(), key=lambda x: -x[1]):
        print(f"    {st:<28} {us:8.1f} µs")
    print("  one-core stage ceilings (latest per-stage benchmarks, bench/results):")
    for st, per_s, src in r["stage_ceilings_one_core"]:
        print(f"    {st:<28} {per_s:>10,.0f}/s   (bench.{src})")
    if r["missing_sample"]:
        print(f"  first missing: {r['missing_sample']}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.pipeline",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("scenario", choices=["sustained", "paced", "burst"])
    p.add_argument("--orders", type=int, default=200_000, help="sustained: how many")
    p.add_argument("--rate", type=float, default=2400.0, help="paced / burst base: orders/s")
    p.add_argument("--seconds", type=float, default=60.0, help="paced: how long")
    p.add_argument("--burst-x", type=float, default=10.0, help="burst: multiple of --rate")
    p.add_argument("--burst-s", type=float, default=30.0)
    p.add_argument("--warmup-s", type=float, default=10.0)
    p.add_argument("--recover-s", type=float, default=60.0)
    p.add_argument("--bar-ms", type=float, default=250.0, help="burst: p99 recovery bar")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument(
        "--kill-worker-at", type=float, default=0, help="SIGKILL a worker this many s in"
    )
    p.add_argument("--batch", type=int, default=100, help="orders per NDJSON request")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--dup-rate", type=float, default=0.058)
    p.add_argument("--skus", type=int, default=2000)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--ready-timeout", type=float, default=120.0)
    p.add_argument("--drain-timeout", type=float, default=600.0)
    p.add_argument("--json", default="", help="default bench/results/pipeline-<scenario>-w<N>")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument(
        "--extra-subscribers",
        type=int,
        default=0,
        help="SSE subscribers (type=order) that read and discard, beside the measuring one",
    )
    p.add_argument(
        "--console",
        action="store_true",
        help="keep the operator console open (headless chromium, Flow view) during the run",
    )
    p.add_argument(
        "--slice-s",
        type=float,
        default=0,
        help="generate orders this many seconds' worth at a time (long runs); 0 = all upfront",
    )
    p.add_argument(
        "--env",
        action="append",
        default=[],
        help="KEY=VALUE for the service, e.g. ORDERSTREAM_MEMORY_BUDGET_MB=600 (repeatable)",
    )
    args = p.parse_args(argv)
    import uvloop

    raise SystemExit(uvloop.run(run(args)))


if __name__ == "__main__":
    main()
