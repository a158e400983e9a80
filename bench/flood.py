"""Flood the service with realistic orders and measure accepted/s, processed/s and latency.

    python -m bench.flood --spawn --orders 50000                      # NDJSON over HTTP
    python -m bench.flood --spawn --transport http-single --orders 10000
    python -m bench.flood --spawn --transport kafka-batch --orders 50000
    python -m bench.flood --url http://127.0.0.1:8080 --rate 2000     # a running service

The whole run is generated (bench.orders) before the clock starts. Processing is observed on
``orders.changes`` (assigned, seeked to its end before the first send); an accepted order that
never shows up there within ``--drain-timeout`` is *missing*, and any missing order makes the exit
code 1. On a 2-core box the client, broker, API and worker share the cores: the figures are
those of the whole machine, not of the service alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.accuracy import dedup_accuracy, meets_bars
from bench.orders import (
    DEFAULT_MIX,
    GeneratedOrder,
    OrderGenerator,
    ndjson_batch_orders,
    ndjson_batches,
    parse_mix,
)
from streams.kafka.broker import die_with_parent
from streams.kafka.envelope import CHANGES_CODEC, DLQ_CODEC
from streams.kafka.topics import CHANGES, DLQ, RAW

ROOT = Path(__file__).resolve().parents[1]
TRANSPORTS = ("http", "http-single", "kafka", "kafka-batch")


API_HEADERS: dict[str, str] = {}  # sent by every session a harness opens; see use_key()


def use_key(data_dir: Path | None = None) -> None:
    """The API key of this run: ORDERSTREAM_API_KEY, else the spawned service's bootstrap key
    (written to <data>/auth/bootstrap.key on its first start)."""
    key = os.environ.get("ORDERSTREAM_API_KEY", "")
    if not key and data_dir is not None:
        with contextlib.suppress(OSError):
            key = (data_dir / "auth" / "bootstrap.key").read_text().strip()
    API_HEADERS.clear()
    if key:
        API_HEADERS["Authorization"] = f"Bearer {key}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    values = sorted(values) if not getattr(values, "_sorted", False) else values
    return values[min(len(values) - 1, int(q * len(values)))]


def _stats(values: list[float]) -> dict[str, float | None]:
    v = sorted(values)
    return {
        "p50": _pct(v, 0.50),
        "p90": _pct(v, 0.90),
        "p99": _pct(v, 0.99),
        "max": v[-1] if v else None,
        "n": len(v),
    }


# ---------------------------------------------------------------------------- spawned service


def serve_argv(data: Path, http_port: int, broker_port: int) -> list[str]:
    """The command line of ``orderstream serve`` on a data dir and loopback ports."""
    return [
        sys.executable,
        "-m",
        "streams.cli",
        "serve",
        "--data-dir",
        str(data),
        "--http-port",
        str(http_port),
        "--broker-port",
        str(broker_port),
    ]


class Service:
    """``orderstream serve`` in a temp data dir on free ports; stopped with SIGTERM.

    ``env`` is added to (and wins over) this process's environment in the child, so a benchmark
    can set ``ORDERSTREAM_<KEY>`` settings without touching the caller's environment. It can be
    restarted in place (same data dir and ports); the log is appended to across starts.
    """

    def __init__(
        self, ready_timeout: float, env: dict[str, str] | None = None, prefix: str = "flood-"
    ) -> None:
        self.data = Path(tempfile.mkdtemp(prefix=prefix))
        self.http_port = _free_port()
        self.broker_port = _free_port()
        self.log_path = self.data / "serve.log"
        self.log_offset = 0  # where the current start's log begins
        self.ready_timeout = ready_timeout
        self.env = dict(env or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready_s: float | None = None
        self.exit_code: int | None = None
        self.stop_s: float | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        self.log_offset = self.log_size()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                serve_argv(self.data, self.http_port, self.broker_port),
                cwd=ROOT,
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=die_with_parent,  # never outlive the bench, however it ends
            )

    def log_text(self, since: int | None = None) -> str:
        """This start's log (or from byte ``since`` on)."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self.log_offset if since is None else since)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def log_size(self) -> int:
        try:
            return self.log_path.stat().st_size
        except OSError:
            return 0

    async def wait_ready(self) -> float:
        assert self.proc is not None
        t0 = time.monotonic()
        pat = re.compile(r"ready in ([0-9.]+)s")
        while time.monotonic() - t0 < self.ready_timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"service exited with code {self.proc.returncode} before ready:\n{self.tail()}"
                )
            m = pat.search(self.log_text())
            if m:
                self.ready_s = float(m.group(1))
                use_key(self.data)
                return self.ready_s
            await asyncio.sleep(0.2)
        raise TimeoutError(f"service not ready in {self.ready_timeout:.0f}s:\n{self.tail()}")

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log_text(0).splitlines()[-n:])

    def stop(self, timeout: float = 60.0) -> bool:
        """SIGTERM and wait; past ``timeout`` kill its whole session. True if it hung."""
        if self.proc is None:
            return False
        t0 = time.monotonic()
        hung = False
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                hung = True
                print(f"! service did not exit {timeout:.0f}s after SIGTERM: killing its group")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.exit_code = self.proc.returncode
        self.stop_s = time.monotonic() - t0
        return hung

    def leftovers(self) -> list[int]:
        """Processes still in the service's session (workers, broker) after it stopped."""
        if self.proc is None:
            return []
        left = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.getsid(int(entry.name)) == self.proc.pid:
                    left.append(int(entry.name))
            except (ProcessLookupError, PermissionError):
                continue
        return left


# ---------------------------------------------------------------------------- observing


class Observer:
    """Reads orders.changes (and orders.dlq) from their end; records first sight per order id."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.consumer: AIOKafkaConsumer | None = None
        self.created: dict[str, float] = {}  # order id -> wall time its "created" was consumed
        self.seen: set[str] = set()  # any change kind
        self.updated = 0
        self.lat_recorded: list[int] = []  # recorded_at - received_at (ms), created changes
        self.lat_priority: list[int] = []  # the same for priority-lane (high priority) orders
        self.dead: dict[str, int] = {}  # dead letters by stage
        self.dead_total = 0
        self.copies: dict[str, int] = {}  # order id -> channel copies recorded (dedup accuracy)
        self.flagged: dict[str, tuple[str, str]] = {}  # order id -> (rule, original id)
        self.reserved: set[str] = set()  # orders whose reservation got its answer
        self.changes_seen = 0
        self.lat_reserved: list[int] = []  # accepted at the door -> reservation answered (ms)
        self.last_created = 0.0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=20,  # Tansu holds each fetch this long: it adds to measured latency
            max_partition_fetch_bytes=8 * 1024 * 1024,
        )
        await self.consumer.start()
        tps = []
        for topic in (CHANGES, DLQ):
            parts = self.consumer.partitions_for_topic(topic)
            if not parts:
                await self.consumer._client.force_metadata_update()
                parts = self.consumer.partitions_for_topic(topic) or set()
            tps += [TopicPartition(topic, p) for p in sorted(parts)]
        if not any(tp.topic == CHANGES for tp in tps):
            raise RuntimeError(f"topic {CHANGES} has no partitions on {self.bootstrap}")
        self.consumer.assign(tps)
        await self.consumer.seek_to_end(*tps)
        for tp in tps:  # resolve the end offsets now, before anything is sent
            await self.consumer.position(tp)
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        assert self.consumer is not None
        decode_changes, decode_dlq = CHANGES_CODEC.decode, DLQ_CODEC.decode
        while True:
            batch = await self.consumer.getmany(timeout_ms=100, max_records=2000)
            now = time.time()
            for tp, msgs in batch.items():
                for msg in msgs:
                    if tp.topic == CHANGES:
                        for ch in decode_changes(msg.value):
                            self.changes_seen += 1
                            self.seen.add(ch.order_id)
                            if ch.kind in ("created", "updated", "duplicate_received"):
                                self.copies[ch.order_id] = self.copies.get(ch.order_id, 0) + 1
                            if ch.reservation not in ("", "pending") and (
                                ch.order_id not in self.reserved
                            ):
                                self.reserved.add(ch.order_id)
                                self.lat_reserved.append(ch.recorded_at - ch.received_at)
                            if ch.kind == "created" and ch.duplicate_of:
                                self.flagged[ch.order_id] = (ch.duplicate_rule, ch.duplicate_of)
                            if ch.kind == "created":
                                if ch.order_id not in self.created:
                                    self.created[ch.order_id] = now
                                    self.lat_recorded.append(ch.recorded_at - ch.received_at)
                                    if ch.priority == "high":
                                        self.lat_priority.append(ch.recorded_at - ch.received_at)
                                    self.last_created = now
                            else:
                                self.updated += 1
                    else:
                        for d in decode_dlq(msg.value):
                            self.dead[d.stage] = self.dead.get(d.stage, 0) + 1
                            self.dead_total += 1

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.consumer is not None:
            await self.consumer.stop()


# ---------------------------------------------------------------------------- sending


class Tally:
    def __init__(self) -> None:
        self.sent = 0
        self.accepted = 0
        self.refused = 0
        self.retries = 0
        self.errors: dict[str, int] = {}
        self.ack: dict[str, float] = {}  # order id -> wall time of its first acknowledgement
        self.first_send = 0.0
        self.last_ack = 0.0
        self.requests = 0

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1


class Pacer:
    """Holds senders to ``rate`` orders/s overall (0 = flat out)."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.t0 = 0.0
        self.granted = 0

    async def take(self, n: int) -> None:
        if self.rate <= 0:
            return
        due = self.t0 + self.granted / self.rate
        self.granted += n
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


async def send_http(
    url: str,
    units: list[tuple[str, bytes, list[GeneratedOrder]]],
    ndjson: bool,
    concurrency: int,
    tally: Tally,
    pacer: Pacer,
    max_retries: int = 20,
) -> None:
    queue: asyncio.Queue[tuple[str, bytes, list[GeneratedOrder]]] = asyncio.Queue()
    for u in units:
        queue.put_nowait(u)
    ctype = "application/x-ndjson" if ndjson else "application/json"
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    endpoint = url.rstrip("/") + "/v1/orders"

    async def worker(session: aiohttp.ClientSession) -> None:
        while True:
            try:
                channel, body, orders = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await pacer.take(len(orders))
            headers = {"X-Channel": channel, "Content-Type": ctype}
            for attempt in range(max_retries + 1):
                try:
                    async with session.post(endpoint, data=body, headers=headers) as resp:
                        status, text = resp.status, await resp.read()
                        retry_after = resp.headers.get("Retry-After")
                except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                    tally.error(type(exc).__name__)
                    status, text, retry_after = 0, b"", "0.5"
                tally.requests += 1
                if status in (503, 0) and attempt < max_retries:
                    tally.retries += 1
                    await asyncio.sleep(float(retry_after or 1))
                    continue
                break
            now = time.time()
            tally.sent += len(orders)
            if status == 202:
                if ndjson:
                    results = [json.loads(ln) for ln in text.splitlines() if ln.strip()]
                else:
                    results = [json.loads(text)]
                for r in results:
                    if r.get("status") == "accepted":
                        tally.accepted += 1
                        tally.ack.setdefault(r["id"], now)
                    else:
                        tally.refused += 1
                tally.last_ack = now
            else:
                tally.refused += len(orders)
                tally.error(f"HTTP {status}")

    async with aiohttp.ClientSession(
        headers=API_HEADERS, connector=connector, timeout=timeout
    ) as session:
        tally.first_send = tally.first_send or time.time()
        pacer.t0 = pacer.t0 or time.monotonic()  # a run sent in several calls keeps one clock
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))


async def send_kafka(
    bootstrap: str,
    units: list[tuple[str, bytes, list[GeneratedOrder]]],
    tally: Tally,
    pacer: Pacer,
) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        compression_type="gzip",
        linger_ms=5,
        max_batch_size=1024 * 1024,
        max_request_size=8 * 1024 * 1024,
        request_timeout_ms=60000,
    )
    await producer.start()
    pending: set[asyncio.Future[Any]] = set()
    try:
        tally.first_send = time.time()
        pacer.t0 = time.monotonic()

        def done(orders: list[GeneratedOrder], fut: asyncio.Future[Any]) -> None:
            pending.discard(fut)
            if fut.cancelled() or fut.exception() is not None:
                tally.refused += len(orders)
                tally.error(
                    "kafka " + type(fut.exception()).__name__
                    if not fut.cancelled()
                    else "cancelled"
                )
                return
            now = time.time()
            tally.accepted += len(orders)
            tally.last_ack = now
            for o in orders:
                if o.label != "invalid":  # the service computes the same id from the payload
                    tally.ack.setdefault(o.order_id, now)

        for channel, body, orders in units:
            await pacer.take(len(orders))
            key = f"{channel}:{orders[0].order_no}".encode() if len(orders) == 1 else None
            fut = await producer.send(RAW, body, key=key, headers=[("channel", channel.encode())])
            fut.add_done_callback(lambda f, os_=orders: done(os_, f))
            pending.add(fut)
            tally.sent += len(orders)
            tally.requests += 1
            if len(pending) > 20_000:
                await asyncio.wait(list(pending)[:10_000])
        await producer.flush()
        if pending:
            await asyncio.wait(list(pending))
    finally:
        await producer.stop()


# ---------------------------------------------------------------------------- reporting


def machine_info() -> dict[str, Any]:
    try:
        import ext

        impl = ext.IMPLEMENTATION
    except Exception as exc:  # pragma: no cover - a broken build must not hide the figures
        impl = f"unknown ({exc})"
    commit = ""
    dirty = None
    with contextlib.suppress(Exception):
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
        )
    return {
        "nproc": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "kernels": impl,
        "git_commit": commit,
        "git_dirty": dirty,
        "load_avg_before": os.getloadavg(),
    }


def fmt(v: float | None, unit: str = "", digits: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{digits}f}{unit}"


def print_report(r: dict[str, Any]) -> None:
    s, c, lat = r["settings"], r["counts"], r["latency_ms"]
    m = r["machine"]
    print()
    print(
        f"orderstream flood — transport {s['transport']}, {s['orders']:,} orders, "
        f"batch {s['batch']}, concurrency {s['concurrency']}, rate "
        f"{'flat out' if not s['rate'] else s['rate']}"
    )
    print(
        f"machine: {m['nproc']} cores, Python {m['python']}, kernels {m['kernels']}, "
        f"commit {m['git_commit'][:10]}{' (dirty)' if m['git_dirty'] else ''}"
    )
    if r.get("shared_cores_note"):
        print(f"note: {r['shared_cores_note']}")
    print(
        f"generated {c['generated']:,} orders in {r['generate_s']:.2f}s "
        f"({r['generate_per_s']:,.0f}/s, before the clock)  labels {r['labels']}"
    )
    if r.get("service"):
        sv = r["service"]
        print(
            f"service: ready in {fmt(sv.get('ready_s'), 's', 1)} (log), "
            f"stopped in {fmt(sv.get('stop_s'), 's', 1)} with exit code {sv.get('exit_code')}"
        )
    rows = [
        ("sent", fmt(c["sent"])),
        ("accepted", fmt(c["accepted"])),
        ("refused (non-202 lines)", fmt(c["refused"])),
        ("expected to be recorded", fmt(c["expected"])),
        ("processed (distinct created)", fmt(c["processed"])),
        ("updates seen", fmt(c["updated_seen"])),
        ("dead letters seen", fmt(c["dead_letters"])),
        ("missing", fmt(c["missing"])),
        ("requests / retries", f"{c['requests']:,} / {c['retries']:,}"),
        ("send window", fmt(r["send_window_s"], " s", 2)),
        ("accepted/s", fmt(r["accepted_per_s"])),
        ("requests/s", fmt(r["requests_per_s"])),
        ("processed/s (first send -> last created)", fmt(r["processed_per_s"])),
    ]
    for lbl, key in (
        ("recorded_at - received_at", "recorded_minus_received"),
        ("accepted -> reservation answered", "reservation_answered"),
        ("priority lane: recorded - received", "priority_lane_recorded"),
        ("ack -> change consumed (wall)", "ack_to_consumed"),
    ):
        st = lat[key]
        rows.append(
            (
                f"latency {lbl}",
                f"p50 {fmt(st['p50'])}  p90 {fmt(st['p90'])}  p99 {fmt(st['p99'])}  "
                f"max {fmt(st['max'])} ms",
            )
        )
    d = r["dedup"]
    ex, nd, rp = d["exact"], d["near_duplicate"], d["repeats"]
    rows += [
        (
            "dedup exact (id, cross-channel)",
            f"precision {ex['precision']:.4%}  recall {ex['recall']:.4%}  "
            f"({ex['correct']:,} of {ex['expected']:,}; cross-channel "
            f"{ex['cross_channel']['correct']:,}/{ex['cross_channel']['expected']:,})",
        ),
        (
            "dedup near-duplicate",
            f"precision {nd['precision']:.4%}  recall {nd['recall']:.4%}  "
            f"({nd['correct']:,} of {nd['expected']:,}, {nd['flagged']:,} flagged)",
        ),
        ("legitimate repeats flagged", f"{rp['flagged']:,} of {rp['total']:,} ({rp['rate']:.4%})"),
        ("dedup bars", "met" if not d["bars_failed"] else "; ".join(d["bars_failed"])),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{width}}  {v}")
    if c["errors"]:
        print(f"  errors: {c['errors']}")
    if r["missing_sample"]:
        print("  first missing ids (GET /v1/orders/{id} says):")
        for oid in r["missing_sample"]:
            print(f"    {oid}  {r['missing_lookup'].get(oid, '')}")


# ---------------------------------------------------------------------------- main


async def run(args: argparse.Namespace) -> int:
    mix = parse_mix(args.mix) if args.mix else dict(DEFAULT_MIX)
    seed = args.seed if args.seed is not None else time.time_ns() % 2**32
    gen = OrderGenerator(
        seed,
        mix,
        sku_count=args.skus,
        zipf_s=args.zipf,
        duplicate_rate=args.dup_rate,
        near_dup_rate=args.near_dup_rate,
        vip_rate=args.vip_rate,
        repeat_rate=args.repeat_rate,
        bad_rate=args.bad_rate,
    )
    t = time.perf_counter()
    orders = gen.generate(args.orders)
    gen_s = time.perf_counter() - t
    labels: dict[str, int] = {}
    for o in orders:
        labels[o.label] = labels.get(o.label, 0) + 1

    if args.transport in ("http", "kafka-batch"):
        bodies = ndjson_batches(orders, args.batch)
        groups = ndjson_batch_orders(orders, args.batch)
        units = [(ch, body, grp) for (ch, body), grp in zip(bodies, groups, strict=True)]
    else:
        units = [(o.channel, o.payload, [o]) for o in orders]

    machine = machine_info()
    service: Service | None = None
    url = args.url
    use_key()  # a running service (--url): ORDERSTREAM_API_KEY
    result: dict[str, Any] = {}
    code = 0
    try:
        if args.spawn:
            service = Service(args.ready_timeout)
            print(
                f"starting the service (data {service.data}, http {service.http_port}, "
                f"broker {service.broker_port}) ...",
                flush=True,
            )
            service.start()
            await service.wait_ready()
            url = service.url
            print(f"service ready in {service.ready_s}s", flush=True)
        async with aiohttp.ClientSession(
            headers=API_HEADERS, timeout=aiohttp.ClientTimeout(total=10)
        ) as session:
            async with session.get(url.rstrip("/") + "/health") as resp:
                health = await resp.json()
        bootstrap = str(health["broker"]).removeprefix("kafka://")
        observer = Observer(bootstrap)
        await observer.start()

        tally = Tally()
        pacer = Pacer(args.rate)
        gc.collect()
        gc.freeze()  # the pre-generated run is long-lived: keep the GC off it
        print(f"sending {len(orders):,} orders over {args.transport} ...", flush=True)
        if args.transport in ("http", "http-single"):
            await send_http(url, units, args.transport == "http", args.concurrency, tally, pacer)
        else:
            await send_kafka(bootstrap, units, tally, pacer)
        send_end = time.time()

        # which ids must show up: accepted, and not generated invalid (those go to the DLQ)
        invalid_ids = {o.order_id for o in orders if o.label == "invalid"}
        expected = {oid for oid in tally.ack if oid not in invalid_ids}
        deadline = time.monotonic() + args.drain_timeout
        print(
            f"draining: waiting up to {args.drain_timeout:.0f}s for {len(expected):,} orders",
            flush=True,
        )
        while time.monotonic() < deadline:
            if expected <= observer.seen:
                break
            await asyncio.sleep(0.1)
        # later copies (updates, duplicates) are recorded after the first: wait for the journal
        # to hold nothing unsettled before counting them
        async with aiohttp.ClientSession(
            headers=API_HEADERS, timeout=aiohttp.ClientTimeout(total=10)
        ) as session:
            while time.monotonic() < deadline:
                async with session.get(url.rstrip("/") + "/health") as resp:
                    if (await resp.json())["journal_depth"] == 0:
                        break
                await asyncio.sleep(0.2)
        # reservation answers and later copies follow the first recording: wait until the
        # changes stop coming (quiet for 1.5 s) so they are all counted
        last, quiet_since = -1, time.monotonic()
        while time.monotonic() < deadline:
            n = observer.changes_seen
            if n != last:
                last, quiet_since = n, time.monotonic()
            elif time.monotonic() - quiet_since > 1.5:
                break
            await asyncio.sleep(0.1)
        await observer.stop()
        dedup = dedup_accuracy(orders, observer.copies, observer.flagged)
        dedup["bars_failed"] = meets_bars(dedup) if args.transport != "http-single" else []
        missing = sorted(expected - observer.seen)
        # ask the service about a few missing ones: recorded without a change event, or lost?
        missing_lookup: dict[str, str] = {}
        async with aiohttp.ClientSession(
            headers=API_HEADERS, timeout=aiohttp.ClientTimeout(total=10)
        ) as session:
            for oid in missing[:10]:
                try:
                    async with session.get(f"{url.rstrip('/')}/v1/orders/{oid}") as resp:
                        body = await resp.json(content_type=None)
                        missing_lookup[oid] = (
                            f"{resp.status} {body.get('state', '')} v{body.get('version', '')}"
                            if resp.status == 200
                            else f"{resp.status}"
                        )
                except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                    missing_lookup[oid] = f"lookup failed: {exc!r}"

        processed = len(expected & observer.created.keys())
        wall_lat = [
            (observer.created[oid] - tally.ack[oid]) * 1000
            for oid in expected
            if oid in observer.created
        ]
        send_window = max(tally.last_ack, send_end) - tally.first_send
        last_created = max(
            (observer.created[o] for o in expected if o in observer.created), default=0.0
        )
        proc_window = last_created - tally.first_send if last_created else 0.0
        nproc = os.cpu_count() or 1
        result = {
            "settings": {
                "transport": args.transport,
                "orders": args.orders,
                "rate": args.rate,
                "batch": args.batch,
                "concurrency": args.concurrency,
                "mix": mix,
                "dup_rate": args.dup_rate,
                "near_dup_rate": args.near_dup_rate,
                "vip_rate": args.vip_rate,
                "repeat_rate": args.repeat_rate,
                "bad_rate": args.bad_rate,
                "skus": args.skus,
                "zipf": args.zipf,
                "seed": seed,
                "spawn": args.spawn,
                "url": url,
                "drain_timeout_s": args.drain_timeout,
            },
            "machine": machine,
            "shared_cores_note": (
                f"client, broker, API and worker(s) share this machine's {nproc} cores; "
                "figures are for the whole box"
                if args.spawn or nproc <= 2
                else ""
            ),
            "generate_s": gen_s,
            "generate_per_s": len(orders) / gen_s if gen_s else None,
            "labels": labels,
            "counts": {
                "generated": len(orders),
                "sent": tally.sent,
                "accepted": tally.accepted,
                "refused": tally.refused,
                "expected": len(expected),
                "processed": processed,
                "updated_seen": observer.updated,
                "dead_letters": observer.dead_total,
                "dead_letters_by_stage": observer.dead,
                "missing": len(missing),
                "requests": tally.requests,
                "retries": tally.retries,
                "errors": tally.errors,
            },
            "send_window_s": send_window,
            "accepted_per_s": tally.accepted / send_window if send_window > 0 else None,
            "requests_per_s": tally.requests / send_window if send_window > 0 else None,
            "processing_window_s": proc_window,
            "processed_per_s": processed / proc_window if proc_window > 0 else None,
            "latency_ms": {
                "recorded_minus_received": _stats([float(x) for x in observer.lat_recorded]),
                "reservation_answered": _stats([float(x) for x in observer.lat_reserved]),
                "priority_lane_recorded": _stats([float(x) for x in observer.lat_priority]),
                "ack_to_consumed": _stats(wall_lat),
            },
            "dedup": dedup,
            "missing_sample": missing[:10],
            "missing_lookup": missing_lookup,
            "load_avg_after": os.getloadavg(),
        }
        if missing:
            code = 1
        elif dedup["bars_failed"]:
            code = 3
    finally:
        if service is not None:
            print("stopping the service (SIGTERM) ...", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, service.stop)
            left = service.leftovers()
            svc = {
                "ready_s": service.ready_s,
                "stop_s": service.stop_s,
                "exit_code": service.exit_code,
                "leftover_pids": left,
                "data_dir": str(service.data),
            }
            if result:
                result["service"] = svc
            if service.exit_code != 0 or left:
                print(f"! service exit code {service.exit_code}, leftover processes {left}")
                print(service.tail())
                code = code or 2
            if not args.keep_data:
                shutil.rmtree(service.data, ignore_errors=True)
    if result:
        print_report(result)
        if args.json:
            path = Path(args.json)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(result, indent=2, default=str) + "\n")
            print(f"wrote {path}")
    return code


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.flood",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--url", default="http://127.0.0.1:8080", help="service (without --spawn)")
    p.add_argument("--transport", choices=TRANSPORTS, default="http")
    p.add_argument("--orders", type=int, default=100_000)
    p.add_argument("--rate", type=float, default=0, help="orders/s overall; 0 = flat out")
    p.add_argument("--batch", type=int, default=500, help="orders per NDJSON body")
    p.add_argument("--concurrency", type=int, default=8, help="HTTP connections")
    p.add_argument("--mix", default="", help="e.g. shopify=0.3,tiktok=0.2,taobao=0.5")
    p.add_argument("--dup-rate", type=float, default=0.058)
    p.add_argument("--near-dup-rate", type=float, default=0.01)
    p.add_argument(
        "--vip-rate",
        type=float,
        default=0.0,
        help="share of shopify/ministore orders tagged vip: they take the priority lane and their"
        " latency is reported apart",
    )
    p.add_argument("--repeat-rate", type=float, default=0.15)
    p.add_argument("--bad-rate", type=float, default=0.0, help="invalid payloads (dead letters)")
    p.add_argument("--skus", type=int, default=2000)
    p.add_argument("--zipf", type=float, default=1.1)
    p.add_argument("--seed", type=int, default=None, help="default: from the clock")
    p.add_argument("--json", default="", help="write the results here too")
    p.add_argument("--spawn", action="store_true", help="start (and stop) the service ourselves")
    p.add_argument("--ready-timeout", type=float, default=120.0)
    p.add_argument("--drain-timeout", type=float, default=60.0)
    p.add_argument("--keep-data", action="store_true", help="keep the spawned service's data dir")
    args = p.parse_args(argv)
    if args.orders < 1 or args.batch < 1 or args.concurrency < 1:
        p.error("--orders, --batch and --concurrency must be >= 1")
    try:
        import uvloop

        runner = uvloop.run
    except ImportError:  # pragma: no cover
        runner = asyncio.run
    sys.exit(runner(run(args)))


if __name__ == "__main__":
    main()
