"""Crash soak: a bounded-time flood with faults injected, then an exact accounting (issue 9).

    python -m bench.soak --minutes 10            # the soak
    python -m bench.soak --minutes 1             # the CI variant (time-scaled fault schedule)
    python -m bench.soak --minutes 1 --rate 1200 --seed 7 --json /tmp/soak.json

Loopback only; it starts everything itself. In order:

1. ``orderstream serve`` (``--workers`` workers, embedded broker) in a temp data dir on free
   ports; the API key is ``--api-key`` / ``ORDERSTREAM_BENCH_KEY`` / ``ORDERSTREAM_API_KEY``,
   else the service's bootstrap key (``<data>/auth/bootstrap.key``), sent as
   ``Authorization: Bearer`` on every request.
2. A webhook (no filter, own secret) pointing at a receiver run here that answers **500 to 30 %**
   of deliveries and records every delivery: event ids, ``Idempotency-Key``, attempt, signature.
3. Stock for a Zipf catalogue (``bench.orders`` SKU ranks): the 3 hottest SKUs get 40 units
   (5 of them safety stock) per warehouse, the next ``--stocked`` SKUs plenty; the rest are
   untracked. So the hot SKUs sell out within seconds and stay contended all run.
4. Two live SSE subscribers: a fast one (``?type=order``) that times each order's first change
   (latency accepted -> subscriber, and fault recovery), and a deliberately **slow** one (no
   filter) that reads ~16 KB/s until the service drops it (back-pressure), then reconnects with
   ``Last-Event-ID``, catches up at full speed and turns slow again; its ids must stay contiguous.
5. The flood: realistic orders generated on the fly (7 channels, 5.8 % duplicates, near-dups,
   Zipf SKUs, ground-truth labels) at ``--rate`` orders/s for the duration, as 100-order NDJSON
   requests over 16 connections. Like a gateway, a request that is refused or fails is retried
   (connection refused, 503, timeouts) until it gets an answer; an order counts as accepted only
   with a 202 ``accepted`` result line. Orders in a request that failed *after* being sent are
   "ambiguous": the service may have journaled the first attempt, so a retry can record one
   extra channel copy (reported, not a failure).
6. The fault schedule, while the flood runs (``--minutes`` >= 3; shorter runs get one of each,
   time-scaled):

   - **worker SIGKILL** every 60 s (alternating workers; the supervisor restarts it);
   - **broker SIGKILL** at 25 % of the run (the supervisor restarts it at once, recreates the
     topics, replays the journal: a new epoch);
   - **broker down 20 s** at 70 %: the supervisor restarts a dead broker immediately, so it
     cannot be held *dead* for 20 s; it is held *hung* instead (SIGSTOP: connections open,
     nothing answered, the supervisor's probe times out and waits), then SIGKILLed;
   - **front-end restart** at 45 %: SIGTERM to the whole ``serve`` process, wait for it to
     exit, start it again on the same data dir and ports (journal, stores and sync log carry
     everything over; subscribers reconnect, the flood retries).

   Each fault's recovery is measured at the fast subscriber: ``flow`` = fault -> first order
   accepted after the fault seen; ``backlog`` = fault -> the last order accepted before the fault
   seen; ``normal`` = fault -> end-to-end latency back under 2.5 s (and staying there 5 s).
7. Drain: journal depth 0 in ``/health`` with every worker processing, every accepted order
   seen by the fast subscriber, no consumer lag on any topic for 5 s (reservation round trips
   queue behind the first changes under a backlog: the stores are checked at rest), the sync
   log head quiet for 2 s (SLA timers keep adding changes, so "quiet" gives up after 20 s).

Checks (any miss exits 1 and prints the ids involved):

- **accepted = recorded**: every accepted global id has exactly one order record. Exact and
  cheap: the order stores (``<data>/stores/orders/<partition>``, RocksDB) are opened read-only
  and every record key read; an id must be in exactly one partition, the one murmur2 gives it.
  Its ``copies`` must equal the 202-accepted copies of that id (plus at most one for an
  ambiguous retry). A random sample is also read over HTTP (``GET /v1/orders/{id}``).
- **0 oversold**: ``orderstream_oversold_total`` is 0 (scraped before the front-end restart
  too: counters restart with the process) and ``GET /v1/stock-audit`` has no problems.
- **0 double reservations**: the stock audit recomputes reserved from the reservation ledger;
  independently, the granted, tracked lines of every order record (order side) must add up to
  each stocked SKU's ``reserved`` per warehouse (stock side).
- **every ground-truth duplicate flagged**: ``bench.accuracy`` over the records (recall 1.0 for
  exact, cross-channel and near-duplicates; precision to the issue's bars).
- **audit history complete** for every order (from the store snapshot) and for a sample over
  HTTP (``GET /v1/orders/{id}/history``): seq runs 0..n-1 without a gap or an extra entry, n is
  the record's own entry counter, the first entry is the one ``order_received`` (from "" to
  the state the order was created in), each entry starts in the state the previous one ended
  in, the last ends in the record's current state, and no more ``channel_update`` entries than
  recorded copies. So every state change the record went through has exactly one entry.
- **webhooks**: every sync event id from the webhook's first cursor to the head (taken after
  the drain) was answered 2xx by the receiver at least once, with an ``Idempotency-Key`` and a
  valid signature; retries of one key carried the same events.
- **live subscribers**: the fast one saw every accepted order; the slow one got no gap across
  its reconnects; drops are reported from ``orderstream_subscriber_drops_total``.

Prints a figures table and writes JSON (``--json``, default ``bench/results/soak.json``).
Client, broker, API and workers share this machine's cores: figures are for the whole box.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import contextlib
import itertools
import json
import os
import random
import re
import secrets
import shutil
import signal
import sys
import time
import tomllib
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import msgspec
from aiohttp import web

from bench.accuracy import dedup_accuracy, meets_bars
from bench.flood import Service, _free_port
from bench.orders import OrderGenerator
from core.signing import SIGNATURE_HEADER, verify

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BATCH = 100  # orders per NDJSON request
CONCURRENCY = 16  # HTTP connections of the flood
HOT_SKUS = 3  # the hottest Zipf ranks: little stock
HOT_ON_HAND, HOT_SAFETY = 40, 5
PLENTY = 1_000_000
LATENCY_BAR_MS = 2500.0  # "normal" end-to-end latency after a fault
HTTP_SAMPLE = 400  # orders read (record + history) over HTTP
WEBHOOK_FAIL_RATE = 0.30
# One endpoint gets one batch at a time. With the defaults (500 events, first retry 0.5 s doubling
# to 60 s) and 30 % of POSTs failing, it moves ~1,500 events/s, while the flood at 2,400 orders/s
# makes ~6,300: it would never catch up within a bounded run. Bigger batches and short backoffs
# (the same retry logic) keep it level; more attempts keep a batch off the dead-letter list.
WEBHOOK_ENV = {
    "ORDERSTREAM_WEBHOOK_BATCH_MAX": "5000",
    "ORDERSTREAM_WEBHOOK_BACKOFF_S": "0.1",
    "ORDERSTREAM_WEBHOOK_BACKOFF_MAX_S": "2",
    "ORDERSTREAM_WEBHOOK_MAX_ATTEMPTS": "30",
}


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _pct(sorted_values: list[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def _ranges(ids: list[int], limit: int = 20) -> list[str]:
    """[1, 2, 3, 7] -> ["1-3", "7"] (the first ``limit`` runs)."""
    out: list[str] = []
    start = prev = None
    for i in ids:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            out.append(f"{start}-{prev}" if start != prev else f"{start}")
            start = prev = i
        if len(out) >= limit:
            return out
    if start is not None:
        out.append(f"{start}-{prev}" if start != prev else f"{start}")
    return out[:limit]


# ---------------------------------------------------------------------------------- the service


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class SoakService(Service):
    """``bench.flood.Service`` that knows its children: the soak kills and restarts them.

    Child pids are found by walking ``/proc`` for children of the serve process (workers and
    the broker run in their own sessions).
    """

    def __init__(self, env: dict[str, str], ready_timeout: float = 120.0) -> None:
        super().__init__(ready_timeout, env, prefix="soak-")
        self.starts: list[dict[str, Any]] = []
        self.seen_children: dict[int, str] = {}  # every child pid we ever saw -> role

    def start(self) -> None:
        super().start()
        assert self.proc is not None
        self.starts.append({"pid": self.proc.pid, "at_ms": _now_ms()})

    async def wait_ready(self) -> float:
        ready = await super().wait_ready()
        self.starts[-1]["ready_s"] = ready
        self.children()
        return ready

    def tail(self, n: int = 40) -> str:
        return super().tail(n)

    def children(self) -> dict[str, list[int]]:
        """Live children of the serve process by role ("broker", "worker")."""
        out: dict[str, list[int]] = {"broker": [], "worker": []}
        if self.proc is None or self.proc.poll() is not None:
            return out
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            pid = int(entry.name)
            if _ppid(pid) != self.proc.pid or not _alive(pid):
                continue
            cmd = _cmdline(pid)
            role = "broker" if "tansu" in cmd else "worker" if "streams.cli worker" in cmd else ""
            if role:
                out[role].append(pid)
                self.seen_children[pid] = role
        return out

    def workers_by_index(self) -> dict[int, int]:
        """Worker index -> pid, from the newest "worker I started (pid N" lines of this run."""
        found: dict[int, int] = {}
        for m in re.finditer(r"worker (\d+) started \(pid (\d+)", self.log_text()):
            found[int(m.group(1))] = int(m.group(2))
        live = set(self.children()["worker"])
        return {i: p for i, p in found.items() if p in live}

    def _ours(self, pid: int) -> bool:
        """A leftover is killed only if it is still one of this service's processes."""
        role = self.seen_children.get(pid)
        if role is None or not _alive(pid):
            return False
        if role == "broker":
            return f":{self.broker_port}" in _cmdline(pid)
        try:
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            return False
        return str(self.data).encode() in environ

    def stop(self, timeout: float = 90.0) -> dict[str, Any]:  # type: ignore[override]
        """SIGTERM, wait; report the exit code, how long it took and any leftover children."""
        if self.proc is None:
            return {"exit_code": None, "stop_s": None, "leftovers": []}
        self.children()
        out: dict[str, Any] = {}
        if super().stop(timeout):
            out["hung"] = True
        out["exit_code"] = self.exit_code
        out["stop_s"] = round(self.stop_s or 0.0, 2)
        time.sleep(0.3)
        left = [p for p in self.seen_children if self._ours(p)]
        for p in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(p, signal.SIGCONT)
                os.kill(p, signal.SIGKILL)
        out["leftovers"] = left
        return out


# ---------------------------------------------------------------------------------- HTTP client


class Api:
    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.url = url.rstrip("/")
        self.headers = headers
        self.session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self.session = aiohttp.ClientSession(
            headers=self.headers,
            timeout=aiohttp.ClientTimeout(total=60),
            connector=aiohttp.TCPConnector(limit=64),
        )

    async def close(self) -> None:
        if self.session is not None:
            await self.session.close()

    async def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        retry_s: float = 60.0,
        retry_on: tuple[int, ...] = (503,),
    ) -> tuple[int, Any]:
        """(status, decoded JSON or text); retries connection errors and ``retry_on``."""
        assert self.session is not None
        deadline = time.monotonic() + retry_s
        data = None if body is None else msgspec.json.encode(body)
        while True:
            try:
                async with self.session.request(method, self.url + path, data=data) as resp:
                    raw = await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError, OSError):
                status, raw = 0, b""
            if status in (0, *retry_on) and time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                continue
            if status in (401, 403):
                raise PermissionError(f"{method} {path}: HTTP {status} {raw[:300]!r}")
            try:
                return status, msgspec.json.decode(raw) if raw else None
            except msgspec.DecodeError:
                return status, raw.decode("utf-8", "replace")

    async def text(self, path: str) -> str:
        _, body = await self.call("GET", path)
        return body if isinstance(body, str) else ""


def metric_sums(text: str, name: str) -> dict[str, float]:
    """{label text: value} for one metric family's samples (``""`` for an unlabelled one)."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, _, value = line.rpartition(" ")
            labels = key[len(name) :].strip("{}")
            with contextlib.suppress(ValueError):
                out[labels] = out.get(labels, 0.0) + float(value)
    return out


# ---------------------------------------------------------------------------- webhook receiver


class _Ev(msgspec.Struct):
    id: int


class _Delivery(msgspec.Struct):
    events: list[_Ev]


class Receiver:
    """The merchant's endpoint: answers 500 to ``fail_rate`` of deliveries, records them all."""

    def __init__(self, secret: str, fail_rate: float, seed: int) -> None:
        self.secret = secret
        self.fail_rate = fail_rate
        self.rng = random.Random(seed ^ 0x5EED)
        self.port = _free_port()
        self.delivered = bytearray()  # event id -> times answered 2xx (capped at 255)
        self.posts = 0
        self.failed = 0  # answered 500 on purpose
        self.ok = 0
        self.retries = 0  # X-Orderstream-Attempt > 1
        self.no_key = 0
        self.bad_signature = 0
        self.key_mismatch: list[str] = []  # one key, different events
        self.keys: dict[str, tuple[int, int, int]] = {}  # key -> (first, last, count)
        self.dup_events = 0  # events answered 2xx more than once
        self.max_id = 0
        self.runner: web.AppRunner | None = None
        self._dec = msgspec.json.Decoder(_Delivery)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.posts += 1
        key = request.headers.get("Idempotency-Key", "")
        if not key:
            self.no_key += 1
        if request.headers.get("X-Orderstream-Attempt", "1") != "1":
            self.retries += 1
        if not verify(
            self.secret, body, request.headers.get(SIGNATURE_HEADER, ""), int(time.time())
        ):
            self.bad_signature += 1
        try:
            ids = [e.id for e in self._dec.decode(body).events]
        except msgspec.DecodeError:
            return web.Response(status=400, text="not a delivery")
        if ids and key:
            seen = (ids[0], ids[-1], len(ids))
            if self.keys.setdefault(key, seen) != seen and len(self.key_mismatch) < 20:
                self.key_mismatch.append(key)
        if self.rng.random() < self.fail_rate:
            self.failed += 1
            return web.Response(status=500, text="flaky on purpose")
        self.ok += 1
        if ids and key:  # an event counts as delivered only with an idempotency key
            top = max(ids)
            if top >= len(self.delivered):
                self.delivered.extend(bytes(top + 1 - len(self.delivered) + 65536))
            self.max_id = max(self.max_id, top)
            d = self.delivered
            for i in ids:
                if d[i]:
                    self.dup_events += 1
                if d[i] < 255:
                    d[i] += 1
        return web.Response(status=200, text="ok")

    def missing(self, first: int, last: int) -> list[int]:
        d = self.delivered
        return [i for i in range(first, last + 1) if i >= len(d) or not d[i]]


# ---------------------------------------------------------------------------------- SSE subscribers


class _Change(msgspec.Struct):
    order_id: str
    kind: str
    received_at: int = 0


class _Frame(msgspec.Struct):
    id: int
    data: _Change


class FastSubscriber:
    """``GET /v1/stream?type=order`` at full speed: each order's first change, when it came."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.first: dict[str, tuple[int, int]] = {}  # order id -> (received_at, seen at) ms
        self.changes = 0
        self.last_id: int | None = None
        self.connects = 0
        self.dropped: list[str] = []
        self.errors: Counter[str] = Counter()
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        dec = msgspec.json.Decoder(_Frame)
        first = self.first
        timeout = aiohttp.ClientTimeout(total=None, sock_read=60)
        async with aiohttp.ClientSession(headers=self.api.headers, timeout=timeout) as session:
            while True:
                headers = {} if self.last_id is None else {"Last-Event-ID": str(self.last_id)}
                try:
                    async with session.get(
                        self.api.url + "/v1/stream?type=order", headers=headers
                    ) as resp:
                        if resp.status != 200:
                            self.errors[f"HTTP {resp.status}"] += 1
                            await asyncio.sleep(0.5)
                            continue
                        self.connects += 1
                        self.connected.set()
                        buf = b""
                        async for chunk in resp.content.iter_any():
                            now = _now_ms()
                            buf += chunk
                            *frames, buf = buf.split(b"\n\n")
                            for frame in frames:
                                i = frame.find(b"data: ")
                                if i < 0:
                                    continue
                                if b"event: dropped" in frame:
                                    self.dropped.append(frame[i + 6 :].decode())
                                    continue
                                if b"event: reset" in frame:
                                    continue
                                ev = dec.decode(frame[i + 6 :])
                                self.last_id = ev.id
                                self.changes += 1
                                ch = ev.data
                                if ch.kind == "created" and ch.order_id not in first:
                                    first[ch.order_id] = (ch.received_at, now)
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    self.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.3)


class SlowSubscriber:
    """Every event (no filter), read at ~16 KB/s for a slow phase (30-45 s: long enough for the
    service to drop it), then at full speed: it finds the service's ``dropped`` frame, reconnects
    with ``Last-Event-ID``, catches up, and turns slow again. Checks the ids stay contiguous."""

    def __init__(
        self, api: Api, slow_s: float, read_bytes: int = 8192, pause_s: float = 0.5
    ) -> None:
        self.api = api
        self.read_bytes = read_bytes
        self.pause_s = pause_s
        self.last_id: int | None = None
        self.received = 0
        self.connects = 0
        self.drops: list[dict[str, Any]] = []  # the service's "dropped" frames
        self.ends = Counter[str]()  # how connections ended
        self.gaps: list[tuple[int, int]] = []  # (expected, got)
        self.resets: list[str] = []
        self.resume_beyond: list[tuple[int, int]] = []  # (resume_from, last id we had)
        self.head = 0  # from GET /v1/subscribers
        self.slow = True
        self.slow_s = slow_s
        self.slow_until = 0.0
        self.slow_phases = 0
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._run()), asyncio.create_task(self._heads())]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    def _go_slow(self) -> None:
        self.slow = True
        self.slow_until = time.monotonic() + self.slow_s
        self.slow_phases += 1

    async def _heads(self) -> None:
        while True:
            with contextlib.suppress(Exception):
                status, body = await self.api.call("GET", "/v1/subscribers", retry_s=0)
                if status == 200:
                    self.head = int(body["head"])
            await asyncio.sleep(1.0)

    def _frames(self, frames: list[bytes]) -> None:
        for frame in frames:
            if frame.startswith(b"id: "):
                nl = frame.find(b"\n")
                seq = int(frame[4:nl])
                if self.last_id is not None and seq != self.last_id + 1:
                    self.gaps.append((self.last_id + 1, seq))
                self.last_id = seq
                self.received += 1
            elif b"event: dropped" in frame:
                i = frame.find(b"data: ")
                note = json.loads(frame[i + 6 :])
                note["at_ms"] = _now_ms()
                note["last_id"] = self.last_id
                self.drops.append(note)
                if self.last_id is not None and note.get("resume_from", 0) > self.last_id:
                    self.resume_beyond.append((note["resume_from"], self.last_id))
            elif b"event: reset" in frame:
                self.resets.append(frame.decode("utf-8", "replace"))
                self.last_id = None  # continue from the oldest kept: not a gap

    async def _run(self) -> None:
        timeout = aiohttp.ClientTimeout(total=None, sock_read=120)
        async with aiohttp.ClientSession(headers=self.api.headers, timeout=timeout) as session:
            while True:
                headers = {} if self.last_id is None else {"Last-Event-ID": str(self.last_id)}
                try:
                    async with session.get(self.api.url + "/v1/stream", headers=headers) as resp:
                        if resp.status != 200:
                            self.ends[f"HTTP {resp.status}"] += 1
                            await asyncio.sleep(0.5)
                            continue
                        self.connects += 1
                        # first connection: slow at once; after a reconnect: catch up first
                        if self.connects == 1:
                            self._go_slow()
                        else:
                            self.slow = False
                        buf = b""
                        while True:
                            if self.slow:
                                chunk = await resp.content.read(self.read_bytes)
                            else:
                                chunk = await resp.content.readany()
                            if not chunk:
                                self.ends["eof"] += 1
                                break
                            buf += chunk
                            *frames, buf = buf.split(b"\n\n")
                            self._frames(frames)
                            if self.slow:
                                await asyncio.sleep(self.pause_s)
                                # a slow phase ends: read what is buffered (the service may
                                # have dropped us long ago: the socket still holds megabytes)
                                if time.monotonic() > self.slow_until:
                                    self.slow = False
                            elif self.last_id is not None and self.head - self.last_id < 2000:
                                self._go_slow()
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    self.ends[type(exc).__name__] += 1
                await asyncio.sleep(0.3)


# ---------------------------------------------------------------------------------- the flood


class Truth(NamedTuple):
    """What bench.accuracy reads of a generated order (the payload is not kept)."""

    order_id: str
    label: str
    ref: int


class Flood:
    def __init__(self, api: Api, seed: int, rate: float, duration_s: float) -> None:
        self.api = api
        # the classic corpus (one rendering per customer): the soak checks what faults do to
        # exactly-once and dedup; how matching fares per rendering class is bench.linkage's
        self.gen = OrderGenerator(seed, variant_rate=0, household_rate=0)
        self.rate = rate
        self.total = int(rate * duration_s)
        self.truth: list[Truth] = []
        self.accepted: Counter[str] = Counter()  # id -> 202-accepted copies
        self.accepted_lines = 0
        self.rejected: list[dict[str, Any]] = []
        self.ambiguous: set[str] = set()  # in a request that failed after being sent
        self.unaccepted: list[str] = []  # gave up on (never got a 202)
        self.requests = 0
        self.retries = 0
        self.errors: Counter[str] = Counter()
        self.per_s: Counter[int] = Counter()  # accepted orders per second of the run
        self.t0 = 0.0  # monotonic start
        self.t0_ms = 0
        self.sent_all_s: float | None = None
        self.give_up_s = 0.0
        self.fatal = ""
        self.skus = self.gen.cat.codes

    async def run(self, give_up_after_s: float) -> None:
        self.t0 = time.monotonic()
        self.t0_ms = _now_ms()
        self.give_up_s = give_up_after_s
        queue: asyncio.Queue[tuple[float, str, bytes, list[str]] | None] = asyncio.Queue(64)
        senders = [asyncio.create_task(self._sender(queue)) for _ in range(CONCURRENCY)]
        try:
            await self._produce(queue)
            for _ in senders:
                await queue.put(None)
            await asyncio.gather(*senders)
        finally:
            for t in senders:
                t.cancel()
        self.sent_all_s = time.monotonic() - self.t0

    async def _produce(self, queue: asyncio.Queue[Any]) -> None:
        """Half a second of orders at a time, grouped by channel into <= BATCH-line bodies."""
        nxt = self.gen.next
        made = 0
        step = max(1, int(self.rate / 2))
        while made < self.total:
            n = min(step, self.total - made)
            chunk = [nxt() for _ in range(n)]
            by_channel: dict[str, list[Any]] = defaultdict(list)
            for o in chunk:
                self.truth.append(Truth(o.order_id, o.label, o.ref))
                by_channel[o.channel].append(o)
            units = []
            for ch, orders in by_channel.items():
                for i in range(0, len(orders), BATCH):
                    part = orders[i : i + BATCH]
                    body = b"\n".join(o.payload for o in part) + b"\n"
                    units.append((ch, body, [o.order_id for o in part]))
            random.Random(made).shuffle(units)  # channels interleaved within the half second
            k = made
            for ch, body, ids in units:
                await queue.put((self.t0 + k / self.rate, ch, body, ids))
                k += len(ids)
            made += n

    async def _sender(self, queue: asyncio.Queue[Any]) -> None:
        assert self.api.session is not None
        session = self.api.session
        endpoint = self.api.url + "/v1/orders"
        while True:
            unit = await queue.get()
            if unit is None:
                return
            due, channel, body, ids = unit
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            headers = {"X-Channel": channel, "Content-Type": "application/x-ndjson"}
            backoff = 0.2
            while True:
                self.requests += 1
                retry_after = None
                try:
                    async with session.post(
                        endpoint, data=body, headers=headers, timeout=aiohttp.ClientTimeout(30)
                    ) as resp:
                        status, text = resp.status, await resp.read()
                        retry_after = resp.headers.get("Retry-After")
                except aiohttp.ClientConnectorError as exc:  # never reached the service
                    self.errors[type(exc).__name__] += 1
                    status, text = 0, b""
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    self.errors[type(exc).__name__] += 1
                    self.ambiguous.update(ids)  # it may have been journaled
                    status, text = 0, b""
                if status == 202:
                    now_s = int(time.monotonic() - self.t0)
                    for line_no, ln in enumerate(text.splitlines()):
                        r = msgspec.json.decode(ln)
                        if r.get("status") == "accepted":
                            self.accepted[r["id"]] += 1
                            self.accepted_lines += 1
                            self.per_s[now_s] += 1
                        else:
                            self.rejected.append({"id": ids[line_no], **r})
                    break
                if status in (401, 403):
                    self.fatal = f"HTTP {status}: {text[:300]!r} (is the API key right?)"
                    self.unaccepted += ids
                    break
                if status == 400:
                    self.rejected.append({"ids": ids[:3], "body": text[:300].decode()})
                    self.unaccepted += ids
                    break
                self.errors[f"HTTP {status}"] += status != 0
                if time.monotonic() - self.t0 > self.give_up_s:
                    self.unaccepted += ids
                    break
                self.retries += 1
                wait = float(retry_after) if retry_after else backoff
                await asyncio.sleep(wait)
                backoff = min(backoff * 2, 2.0)


# ---------------------------------------------------------------------------------- faults


class Fault(NamedTuple):
    at_s: float  # seconds after the flood started
    kind: str  # worker_kill | broker_kill | broker_hang_kill | frontend_restart


def schedule(minutes: float, hang_s: float) -> list[Fault]:
    total = minutes * 60
    if minutes < 3:  # one of each, time-scaled
        return [
            Fault(0.15 * total, "worker_kill"),
            Fault(0.35 * total, "broker_hang_kill"),
            Fault(0.62 * total, "frontend_restart"),
        ]
    big = [
        Fault(0.25 * total, "broker_kill"),
        Fault(0.45 * total, "frontend_restart"),
        Fault(0.70 * total, "broker_hang_kill"),
    ]
    out = list(big)
    t = 60.0
    while t < total - 5:
        clash = any(-10 <= t - f.at_s <= 25 + (hang_s if "hang" in f.kind else 0) for f in big)
        if not clash:
            out.append(Fault(t, "worker_kill"))
        t += 60.0
    return sorted(out)


class FaultRunner:
    def __init__(
        self,
        svc: SoakService,
        api: Api,
        plan: list[Fault],
        hang_s: float,
        on_before_restart: Callable[[], Awaitable[None]],
    ) -> None:
        self.svc = svc
        self.api = api
        self.plan = plan
        self.hang_s = hang_s
        self.on_before_restart = on_before_restart
        self.done: list[dict[str, Any]] = []
        self.problems: list[str] = []
        self._worker_turn = 0
        self._stopped_pid: int | None = None

    async def run(self, t0: float) -> None:
        t0_ms = _now_ms() - int((time.monotonic() - t0) * 1000)
        try:
            for f in self.plan:
                delay = t0 + f.at_s - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                rec: dict[str, Any] = {"kind": f.kind, "planned_s": round(f.at_s, 1)}
                try:
                    await getattr(self, "_" + f.kind)(rec)
                except Exception as exc:  # a fault that could not be injected is a finding
                    rec["error"] = f"{type(exc).__name__}: {exc}"
                    self.problems.append(f"{f.kind}: {rec['error']}")
                rec["at_s"] = round((rec.get("at_ms", _now_ms()) - t0_ms) / 1000, 2)
                self.done.append(rec)
                print(f"  fault {f.kind} at {rec['at_s']:.1f}s: {_fault_note(rec)}", flush=True)
        finally:
            if self._stopped_pid is not None:  # never leave a broker stopped
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self._stopped_pid, signal.SIGKILL)

    async def _await_log(self, pattern: str, since: int, timeout: float) -> float | None:
        """Seconds until ``pattern`` shows up in the log written after offset ``since``."""
        t0 = time.monotonic()
        rx = re.compile(pattern)
        while time.monotonic() - t0 < timeout:
            if rx.search(self.svc.log_text(since)):
                return round(time.monotonic() - t0, 2)
            await asyncio.sleep(0.1)
        return None

    async def _worker_kill(self, rec: dict[str, Any]) -> None:
        workers = self.svc.workers_by_index()
        if not workers:
            raise RuntimeError("no live worker found")
        index = sorted(workers)[self._worker_turn % len(workers)]
        self._worker_turn += 1
        pid = workers[index]
        since = self.svc.log_size()
        rec.update(worker=index, pid=pid, at_ms=_now_ms())
        os.kill(pid, signal.SIGKILL)
        rec["restarted_after_s"] = await self._await_log(
            rf"worker {index} started \(pid", since, 60
        )

    def _broker_pid(self) -> int:
        pids = self.svc.children()["broker"]
        if len(pids) != 1:
            raise RuntimeError(f"expected one broker child, found {pids}")
        return pids[0]

    async def _broker_kill(self, rec: dict[str, Any]) -> None:
        pid = self._broker_pid()
        since = self.svc.log_size()
        rec.update(pid=pid, at_ms=_now_ms())
        os.kill(pid, signal.SIGKILL)
        rec["epoch_recovered_after_s"] = await self._await_log(
            "recovered onto broker epoch", since, 180
        )

    async def _broker_hang_kill(self, rec: dict[str, Any]) -> None:
        pid = self._broker_pid()
        rec.update(pid=pid, at_ms=_now_ms(), hang_s=self.hang_s)
        self._stopped_pid = pid
        os.kill(pid, signal.SIGSTOP)  # hung: the port is open, nothing answers
        await asyncio.sleep(self.hang_s)
        since = self.svc.log_size()
        rec["kill_ms"] = _now_ms()
        os.kill(pid, signal.SIGKILL)
        self._stopped_pid = None
        rec["epoch_recovered_after_kill_s"] = await self._await_log(
            "recovered onto broker epoch", since, 180
        )

    async def _frontend_restart(self, rec: dict[str, Any]) -> None:
        await self.on_before_restart()
        rec["at_ms"] = _now_ms()
        rec["pid"] = self.svc.proc.pid if self.svc.proc else None
        stopped = await asyncio.get_running_loop().run_in_executor(None, self.svc.stop)
        rec.update(stop=stopped)
        if stopped.get("hung") or stopped["exit_code"] != 0 or stopped["leftovers"]:
            self.problems.append(f"front-end restart: serve stop {stopped} ")
        self.svc.start()
        rec["ready_s"] = await self.svc.wait_ready()
        rec["down_s"] = round((_now_ms() - rec["at_ms"]) / 1000, 2)


def _fault_note(rec: dict[str, Any]) -> str:
    if "error" in rec:
        return "FAILED " + rec["error"]
    k = rec["kind"]
    if k == "worker_kill":
        return (
            f"worker {rec['worker']} (pid {rec['pid']}) restarted after {rec['restarted_after_s']}s"
        )
    if k == "broker_kill":
        return f"broker pid {rec['pid']}; new epoch after {rec['epoch_recovered_after_s']}s"
    if k == "broker_hang_kill":
        return (
            f"broker pid {rec['pid']} hung {rec['hang_s']:.0f}s then killed; new epoch "
            f"{rec['epoch_recovered_after_kill_s']}s after the kill"
        )
    return (
        f"serve stopped in {rec['stop']['stop_s']}s (exit {rec['stop']['exit_code']}), "
        f"ready again {rec['ready_s']}s after start, {rec['down_s']}s down in all"
    )


def recovery(
    faults: list[dict[str, Any]], first: dict[str, tuple[int, int]], run_end_ms: int
) -> None:
    """Adds flow / backlog / normal seconds to each fault (see the module docstring)."""
    rows = sorted(first.values())  # (received_at, seen_at), by acceptance
    by_seen = sorted(rows, key=lambda r: r[1])
    for f in faults:
        if "at_ms" not in f:
            continue
        t = f["at_ms"]
        after = [seen for recv, seen in rows if recv >= t]
        f["flow_s"] = round((min(after) - t) / 1000, 2) if after else None
        before = [seen for recv, seen in rows if t - 10_000 <= recv < t]
        f["backlog_s"] = round(max(0, max(before) - t) / 1000, 2) if before else None
        # first instant after which every order seen for 5 s had latency under the bar
        normal = None
        window = [(seen, seen - recv) for recv, seen in by_seen if seen >= t]
        bad_until = t
        for seen, lat in window:
            if lat >= LATENCY_BAR_MS:
                bad_until = seen
            elif seen - bad_until >= 5000:
                normal = bad_until
                break
        if normal is None and window and run_end_ms - bad_until >= 5000:
            normal = bad_until
        f["normal_s"] = round((normal - t) / 1000, 2) if normal is not None else None


def outside_faults(first: dict[str, tuple[int, int]], faults: list[dict[str, Any]]) -> list[float]:
    """Latencies (sorted, ms) of the orders accepted outside every fault's window: from the
    fault until the subscriber's latency was normal again (``normal_s``; to the end if never)."""
    merged: list[list[float]] = []
    for a, b in sorted(
        (f["at_ms"], f["at_ms"] + f["normal_s"] * 1000 if f.get("normal_s") is not None else 2e18)
        for f in faults
        if "at_ms" in f
    ):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    starts = [a for a, _ in merged]
    out = []
    for recv, seen in first.values():
        i = bisect.bisect_right(starts, recv) - 1
        if i < 0 or recv > merged[i][1]:
            out.append(seen - recv)
    return sorted(out)


# ---------------------------------------------------------------------------------- store snapshot


class _Line(msgspec.Struct):
    sku: str
    quantity: int
    outcome: str = "pending"
    warehouse: str = ""
    tracked: bool = True


class _Saga(msgspec.Struct):
    status: str
    lines: list[_Line] = []


class _Record(msgspec.Struct):
    state: str
    version: int
    copies: int = 1
    duplicate_of: str = ""
    duplicate_rule: str = ""
    audit_seq: int = 0
    reservation: _Saga | None = None


class _Audit(msgspec.Struct):
    seq: int
    from_state: str
    to_state: str
    event: str


def audit_problems(state: str, n_expected: int, copies: int, entries: list[_Audit]) -> str:
    """Why an order's history is incomplete or inconsistent ("" when it is fine)."""
    seqs = [e.seq for e in entries]
    if seqs != list(range(len(entries))):
        return f"seq not 0..n-1: {seqs[:12]}"
    if len(entries) != n_expected:
        return f"{len(entries)} entries, the record counts {n_expected}"
    if not entries:
        return "no history"
    if entries[0].event != "order_received" or entries[0].from_state != "":
        return f"first entry is {entries[0].event} from {entries[0].from_state!r}"
    if sum(e.event == "order_received" for e in entries) != 1:
        return "order_received more than once"
    for a, b in itertools.pairwise(entries):
        if b.from_state != a.to_state:
            return f"seq {b.seq} starts in {b.from_state}, seq {a.seq} ended in {a.to_state}"
    if entries[-1].to_state != state:
        return f"history ends in {entries[-1].to_state}, the order is {state}"
    if sum(e.event == "channel_update" for e in entries) > copies - 1:
        return "more channel_update entries than recorded copies"
    return ""


def read_order_stores(data: Path) -> dict[str, Any]:
    """Every order record and audit entry, from the order stores opened read-only."""
    from rocksdict import AccessType, Options, Rdict

    from core.audit import AUDIT_PREFIX, parse_audit_key

    rec_dec = msgspec.msgpack.Decoder(_Record)
    audit_dec = msgspec.msgpack.Decoder(_Audit)
    records: dict[str, list[tuple[int, _Record]]] = defaultdict(list)
    audits: dict[str, list[_Audit]] = defaultdict(list)
    root = data / "stores" / "orders"
    parts = sorted(int(p.name) for p in root.iterdir() if p.name.isdigit())
    for part in parts:
        db = Rdict(
            str(root / str(part)), Options(raw_mode=True), access_type=AccessType.read_only()
        )
        try:
            it = db.iter()
            it.seek(b"os_")
            while it.valid():
                key = it.key()
                if not key.startswith(b"os_"):
                    break
                records[key.decode()].append((part, rec_dec.decode(it.value())))
                it.next()
            it.seek(AUDIT_PREFIX)
            while it.valid():
                key = it.key()
                if not key.startswith(AUDIT_PREFIX):
                    break
                oid, _ = parse_audit_key(key)
                audits[oid].append(audit_dec.decode(it.value()))
                it.next()
            del it
        finally:
            db.close()
    return {"partitions": parts, "records": records, "audits": audits}


# ---------------------------------------------------------------------------------- the run


def warehouses() -> list[str]:
    path = ROOT / "config" / "warehouses.toml"
    return sorted(tomllib.loads(path.read_text())["warehouses"])


def resolve_key(arg: str) -> str:
    return (
        arg
        or os.environ.get("ORDERSTREAM_BENCH_KEY", "")
        or os.environ.get("ORDERSTREAM_API_KEY", "")
    )


class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.seed = args.seed if args.seed is not None else time.time_ns() % 2**32
        self.duration = args.minutes * 60.0
        self.hang_s = 20.0 if args.minutes >= 3 else max(5.0, 20.0 * args.minutes / 10)
        env = {"ORDERSTREAM_WORKERS": str(args.workers), **WEBHOOK_ENV}
        self.svc = SoakService(env, args.ready_timeout)
        self.failures: list[str] = []
        self.result: dict[str, Any] = {}
        self.metrics_before_restart: list[str] = []

    def fail(self, what: str) -> None:
        self.failures.append(what)
        print(f"  MISS: {what}", flush=True)

    async def run(self) -> int:
        args = self.args
        print(
            f"soak: {args.minutes:g} min at {args.rate:,.0f} orders/s, {args.workers} workers, "
            f"seed {self.seed}, data {self.svc.data}",
            flush=True,
        )
        self.svc.start()
        receiver: Receiver | None = None
        api: Api | None = None
        fast = slow = None
        try:
            ready = await self.svc.wait_ready()
            print(f"service ready in {ready}s on {self.svc.url}", flush=True)
            key = resolve_key(args.api_key)
            if not key:
                with contextlib.suppress(OSError):
                    key = (self.svc.data / "auth" / "bootstrap.key").read_text().strip()
            headers = {"Authorization": f"Bearer {key}"} if key else {}
            api = Api(self.svc.url, headers)
            await api.open()

            secret = secrets.token_hex(24)
            receiver = Receiver(secret, WEBHOOK_FAIL_RATE, self.seed)
            await receiver.start()
            status, hook = await api.call(
                "POST",
                "/v1/webhooks",
                {"url": receiver.url, "secret": secret, "description": "soak receiver"},
            )
            if status != 201:
                raise RuntimeError(f"webhook registration: HTTP {status} {hook}")
            hook_id, hook_first = hook["id"], int(hook["cursor"])

            flood = Flood(api, self.seed, args.rate, self.duration)
            stocked = await self._stock(api, flood.skus[: HOT_SKUS + args.stocked])

            fast = FastSubscriber(api)
            fast.start()
            await asyncio.wait_for(fast.connected.wait(), 30)
            slow = SlowSubscriber(api, slow_s=30.0 if args.minutes < 3 else 45.0)
            slow.start()

            plan = schedule(args.minutes, self.hang_s)
            faults = FaultRunner(self.svc, api, plan, self.hang_s, self._snapshot_metrics)
            print(
                f"flooding {flood.total:,} orders; faults: "
                + ", ".join(f"{f.kind}@{f.at_s:.0f}s" for f in plan),
                flush=True,
            )
            t0 = time.monotonic()
            fault_task = asyncio.create_task(faults.run(t0))
            progress = asyncio.create_task(self._progress(flood, fast, t0))
            await flood.run(give_up_after_s=self.duration + 240)
            await fault_task
            send_end_ms = _now_ms()
            print(
                f"flood done in {flood.sent_all_s:.1f}s: {flood.accepted_lines:,} accepted, "
                f"{flood.retries:,} retried requests",
                flush=True,
            )
            if flood.fatal:
                raise RuntimeError(flood.fatal)

            drain = await self._drain(api, flood, fast)
            progress.cancel()
            run_end_ms = _now_ms()
            recovery(faults.done, fast.first, run_end_ms)
            for p in faults.problems:
                self.fail(p)

            checks = await self._checks(
                api, flood, fast, slow, receiver, hook_id, hook_first, stocked
            )
            self.result = self._figures(
                flood, fast, slow, receiver, faults, drain, checks, send_end_ms, ready
            )
        except Exception as exc:
            self.fail(f"run aborted: {type(exc).__name__}: {exc}")
            print(self.svc.tail(), flush=True)
        finally:
            for sub in (fast, slow):
                if sub is not None:
                    await sub.stop()
            if api is not None:
                await api.close()
            if receiver is not None:
                await receiver.stop()
            stopped = await asyncio.get_running_loop().run_in_executor(None, self.svc.stop)
            if stopped.get("hung") or stopped["exit_code"] != 0 or stopped["leftovers"]:
                self.fail(f"final stop: {stopped}")
            self.result.setdefault("service", {})["final_stop"] = stopped
        self.result["failures"] = self.failures
        self.result["ok"] = not self.failures
        self.result["data_dir"] = str(self.svc.data)
        if "figures" in self.result:
            report(self.result)
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(self.result, indent=2, default=str) + "\n")
        print(f"wrote {out}")
        if self.failures:
            kept = self.svc.data / "serve.log"
            print(f"\nSOAK FAILED ({len(self.failures)} miss(es)); service log kept: {kept}")
            for f in self.failures:
                print(f"  - {f}")
            return 1
        if not args.keep_data:
            shutil.rmtree(self.svc.data, ignore_errors=True)
        print("\nSOAK PASSED")
        return 0

    # -- phases -------------------------------------------------------------------------------

    async def _stock(self, api: Api, skus: list[str]) -> dict[str, dict[str, int]]:
        """PUT stock for the hottest SKUs in every warehouse; returns sku -> {wh: on_hand}."""
        whs = warehouses()
        jobs = []
        stocked: dict[str, dict[str, int]] = {}
        for rank, sku in enumerate(skus):
            hot = rank < HOT_SKUS
            on_hand, safety = (HOT_ON_HAND, HOT_SAFETY) if hot else (PLENTY, 0)
            stocked[sku] = {}
            for wh in whs:
                stocked[sku][wh] = on_hand
                body = {"warehouse": wh, "on_hand": on_hand, "safety": safety, "reason": "soak"}
                jobs.append((sku, body))
        sem = asyncio.Semaphore(16)

        async def put(sku: str, body: dict[str, Any]) -> None:
            async with sem:
                status, answer = await api.call("PUT", f"/v1/stock/{sku}", body)
                if status != 200:
                    raise RuntimeError(f"PUT /v1/stock/{sku}: HTTP {status} {answer}")

        t = time.monotonic()
        await asyncio.gather(*(put(s, b) for s, b in jobs))
        print(
            f"stocked {len(skus)} SKUs x {len(whs)} warehouses ({HOT_SKUS} hot with "
            f"{HOT_ON_HAND} units, {HOT_SAFETY} safety) in {time.monotonic() - t:.1f}s",
            flush=True,
        )
        return stocked

    async def _snapshot_metrics(self) -> None:
        """Counters restart with the process: keep what they said before the front end goes."""
        assert self.svc.proc is not None
        with contextlib.suppress(Exception):
            api = Api(self.svc.url, self._headers())
            await api.open()
            try:
                self.metrics_before_restart.append(await api.text("/metrics"))
            finally:
                await api.close()

    def _headers(self) -> dict[str, str]:
        key = resolve_key(self.args.api_key)
        if not key:
            with contextlib.suppress(OSError):
                key = (self.svc.data / "auth" / "bootstrap.key").read_text().strip()
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def _progress(self, flood: Flood, fast: FastSubscriber, t0: float) -> None:
        last = 0
        while True:
            await asyncio.sleep(10)
            seen = len(fast.first)
            print(
                f"  t={time.monotonic() - t0:5.0f}s accepted {flood.accepted_lines:>9,}  "
                f"at subscriber {seen:>9,} (+{seen - last:,})  retries {flood.retries:,}",
                flush=True,
            )
            last = seen

    async def _drain(self, api: Api, flood: Flood, fast: FastSubscriber) -> dict[str, Any]:
        t = time.monotonic()
        limit = self.args.drain_timeout
        depth = None
        while time.monotonic() - t < limit:
            status, health = await api.call("GET", "/health", retry_on=())
            if isinstance(health, dict):
                depth = health.get("journal_depth")
                if status == 200 and health.get("processing") and depth == 0:
                    break
            await asyncio.sleep(0.5)
        else:
            self.fail(f"journal not drained after {limit:.0f}s (depth {depth})")
        journal_s = time.monotonic() - t
        expected = set(flood.accepted)
        while time.monotonic() - t < limit and not expected <= fast.first.keys():
            await asyncio.sleep(0.25)
        unseen = sorted(expected - fast.first.keys())
        seen_s = time.monotonic() - t
        # The first change of every order is out; reservation round trips (order -> SKU
        # partition -> order) may still queue behind them: wait until no consumer group lags
        # on any topic for 5 s (the lag gauges refresh every 2 s), so the stores are checked at
        # rest; then for the sync log to stop growing (SLA timers may keep it growing: 20 s).
        lag: dict[str, float] = {}
        still_since = time.monotonic()
        while time.monotonic() - t < limit:
            lag = metric_sums(await api.text("/metrics"), "orderstream_consumer_lag")
            if any(lag.values()):
                still_since = time.monotonic()
            elif time.monotonic() - still_since >= 5.0:
                break
            await asyncio.sleep(0.5)
        at_rest = not any(lag.values())
        settled_s = time.monotonic() - t
        head = -1
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < 2.0 and time.monotonic() - t < settled_s + 20:
            _, subs = await api.call("GET", "/v1/subscribers")
            if subs["head"] != head:
                head, quiet_since = subs["head"], time.monotonic()
            await asyncio.sleep(0.25)
        quiet = time.monotonic() - quiet_since >= 2.0
        print(
            f"drained: journal empty after {journal_s:.1f}s, all accepted orders at the "
            f"subscriber after {seen_s:.1f}s ({len(unseen)} never), "
            + (f"no consumer lag after {settled_s:.1f}s" if at_rest else f"consumer lag {lag}")
            + ", changes "
            + ("quiet" if quiet else "still flowing (SLA timers)"),
            flush=True,
        )
        if not at_rest:
            self.fail(f"pipeline not at rest after {limit:.0f}s: consumer lag {lag}")
        return {
            "journal_empty_s": round(journal_s, 1),
            "all_seen_s": round(seen_s, 1),
            "settled_s": round(settled_s, 1),
            "unseen": unseen,
            "quiet": quiet,
        }

    async def _checks(
        self,
        api: Api,
        flood: Flood,
        fast: FastSubscriber,
        slow: SlowSubscriber,
        receiver: Receiver,
        hook_id: str,
        hook_first: int,
        stocked: dict[str, dict[str, int]],
    ) -> dict[str, Any]:
        c: dict[str, Any] = {}
        accepted = flood.accepted
        if flood.unaccepted:
            self.fail(
                f"{len(flood.unaccepted)} orders never accepted (gave up retrying), e.g. "
                f"{flood.unaccepted[:10]}"
            )
        if flood.rejected:
            self.fail(f"{len(flood.rejected)} lines rejected, e.g. {flood.rejected[:3]}")

        # -- live subscriber saw every accepted order
        unseen = sorted(set(accepted) - fast.first.keys())
        if unseen:
            self.fail(
                f"{len(unseen)} accepted orders never reached the SSE subscriber: {unseen[:10]}"
            )

        # -- metrics: oversold, drops (before the front-end restart too)
        metrics_now = await api.text("/metrics")
        texts = [*self.metrics_before_restart, metrics_now]
        oversold = sum(sum(metric_sums(t, "orderstream_oversold_total").values()) for t in texts)
        drops: Counter[str] = Counter()
        for t in texts:
            for labels, v in metric_sums(t, "orderstream_subscriber_drops_total").items():
                drops[labels] += int(v)
        webhook_metric: Counter[str] = Counter()
        for t in texts:
            for labels, v in metric_sums(t, "orderstream_webhook_deliveries_total").items():
                webhook_metric[labels] += int(v)
        c["oversold_total"] = oversold
        c["subscriber_drops"] = dict(drops)
        c["webhook_deliveries_metric"] = dict(webhook_metric)
        if oversold:
            self.fail(f"orderstream_oversold_total = {oversold}")
        if slow.drops and not drops:
            self.fail(f"the slow subscriber was dropped {len(slow.drops)}x, metrics count none")

        # -- stock audit (ledger vs levels)
        status, audit = await api.call("GET", "/v1/stock-audit")
        c["stock_audit"] = {"status": status, "ok": bool(audit and audit.get("ok"))}
        if status != 200 or not audit.get("ok"):
            problems = audit.get("problems") if isinstance(audit, dict) else audit
            self.fail(f"stock audit: HTTP {status}, problems {str(problems)[:1000]}")

        # -- stock levels of the stocked SKUs (read now, compared with the records below)
        levels: dict[str, dict[str, dict[str, int]]] = {}
        sem = asyncio.Semaphore(16)

        async def level(sku: str) -> None:
            async with sem:
                st, doc = await api.call("GET", f"/v1/stock/{sku}")
                levels[sku] = doc["warehouses"] if st == 200 else {}

        await asyncio.gather(*(level(s) for s in stocked))
        oversold_levels = [
            f"{sku}@{wh}: reserved {lv['reserved']} > on_hand {lv['on_hand']} - safety "
            f"{lv['safety']}"
            for sku, whs in levels.items()
            for wh, lv in whs.items()
            if lv["reserved"] > lv["on_hand"] - lv["safety"]
        ]
        if oversold_levels:
            self.fail(f"levels oversold: {oversold_levels[:10]}")

        # -- webhooks: every event id up to the head answered 2xx, with a key
        _, subs = await api.call("GET", "/v1/subscribers")
        head, oldest = int(subs["head"]), int(subs["oldest"])
        t = time.monotonic()
        view: dict[str, Any] = {}
        redelivered: list[Any] = []
        while time.monotonic() - t < self.args.webhook_timeout:
            _, view = await api.call("GET", f"/v1/webhooks/{hook_id}")
            if view["cursor"] > head:
                break
            await asyncio.sleep(0.5)
        if view.get("dead_lettered_batches"):
            for _ in range(5):  # the operator's redeliver; the receiver still fails 30 %
                _, answer = await api.call("POST", f"/v1/webhooks/{hook_id}/redeliver")
                redelivered.append(answer)
                if isinstance(answer, dict) and not answer.get("still_dead"):
                    break
        webhook_wait = time.monotonic() - t
        missing_ids = receiver.missing(hook_first, head)
        c["webhook"] = {
            "id": hook_id,
            "first_id": hook_first,
            "head": head,
            "oldest": oldest,
            "caught_up_s": round(webhook_wait, 1),
            "status": view,
            "redelivered": redelivered,
            "missing": len(missing_ids),
            "missing_ranges": _ranges(missing_ids),
        }
        if view.get("cursor", 0) <= head:
            self.fail(
                f"webhook {hook_id} still behind after {self.args.webhook_timeout:.0f}s: "
                f"cursor {view.get('cursor')}, head {head}"
            )
        if missing_ids:
            self.fail(
                f"{len(missing_ids)} webhook events of {hook_first}..{head} never answered 2xx: "
                f"ids {_ranges(missing_ids)}"
            )
        if receiver.no_key or receiver.bad_signature or receiver.key_mismatch:
            self.fail(
                f"webhook deliveries without Idempotency-Key {receiver.no_key}, bad signature "
                f"{receiver.bad_signature}, one key with other events {receiver.key_mismatch}"
            )

        # -- slow subscriber: resumes lose nothing
        if slow.gaps:
            self.fail(f"slow subscriber: gaps across reconnects (expected, got): {slow.gaps[:10]}")

        # -- the order stores: accepted = recorded, copies, dedup, audit trail, reservations
        t = time.monotonic()
        snap = await asyncio.get_running_loop().run_in_executor(
            None, read_order_stores, self.svc.data
        )
        c["store_read_s"] = round(time.monotonic() - t, 1)
        await self._check_records(api, flood, snap, levels, c)
        return c

    async def _check_records(
        self,
        api: Api,
        flood: Flood,
        snap: dict[str, Any],
        levels: dict[str, dict[str, dict[str, int]]],
        c: dict[str, Any],
    ) -> None:
        from ext import kafka_partition

        records: dict[str, list[tuple[int, _Record]]] = snap["records"]
        audits: dict[str, list[_Audit]] = snap["audits"]
        nparts = len(snap["partitions"])
        accepted = flood.accepted
        missing = [oid for oid in accepted if oid not in records]
        twice = [oid for oid, rs in records.items() if len(rs) > 1]
        wrong_part = [
            oid for oid, rs in records.items() if rs[0][0] != kafka_partition(oid.encode(), nparts)
        ]
        unacked = [oid for oid in records if oid not in accepted]
        c["records"] = {
            "accepted_ids": len(accepted),
            "recorded_ids": len(records),
            "missing": len(missing),
            "in_two_partitions": len(twice),
            "wrong_partition": len(wrong_part),
            "recorded_not_acknowledged": len(unacked),
        }
        if missing:
            looked = {}
            for oid in missing[:10]:
                st, doc = await api.call("GET", f"/v1/orders/{oid}")
                looked[oid] = f"HTTP {st} {str(doc)[:120]}"
            self.fail(f"{len(missing)} accepted orders have no record: {looked}")
        if twice:
            self.fail(f"{len(twice)} orders recorded in two partitions: {twice[:10]}")
        if wrong_part:
            self.fail(f"{len(wrong_part)} orders in the wrong partition: {wrong_part[:10]}")
        bad_unacked = [oid for oid in unacked if oid not in flood.ambiguous]
        if bad_unacked:
            self.fail(f"{len(bad_unacked)} orders recorded but never sent: {bad_unacked[:10]}")

        # copies: one per 202-accepted copy; one more allowed after an ambiguous retry
        lost_copy, extra_copy, explained = [], [], []
        copies: dict[str, int] = {}
        flagged: dict[str, tuple[str, str]] = {}
        for oid, rs in records.items():
            rec = rs[0][1]
            n = accepted.get(oid, 0)
            if rec.copies < n:
                lost_copy.append(oid)
            elif rec.copies > n:
                (explained if oid in flood.ambiguous else extra_copy).append(oid)
            copies[oid] = min(rec.copies, n) if oid in flood.ambiguous else rec.copies
            if rec.duplicate_of:
                flagged[oid] = (rec.duplicate_rule, rec.duplicate_of)
        c["records"].update(
            copies_lost=len(lost_copy),
            copies_extra=len(extra_copy),
            copies_extra_after_ambiguous_retry=len(explained),
        )
        if lost_copy:
            self.fail(
                f"{len(lost_copy)} orders recorded fewer copies than accepted: {lost_copy[:10]}"
            )
        if extra_copy:
            self.fail(
                f"{len(extra_copy)} orders recorded more copies than accepted (no retry "
                f"explains it): {extra_copy[:10]}"
            )

        # dedup against the ground truth (only what was accepted)
        truth = [o for o in flood.truth if o.order_id in accepted]
        acc = dedup_accuracy(truth, copies, flagged)  # type: ignore[arg-type]
        bars = meets_bars(acc)
        c["dedup"] = acc
        recall_misses = [
            f"{what} recall {acc[what]['recall']:.5f}"
            for what in ("exact", "near_duplicate")
            if acc[what]["recall"] < 1.0
        ]
        if acc["exact"]["cross_channel"]["recall"] < 1.0:
            recall_misses.append(f"cross-channel recall {acc['exact']['cross_channel']['recall']}")
        if recall_misses:
            self.fail(f"ground-truth duplicates not flagged: {recall_misses}")
        if bars:
            self.fail(f"dedup bars: {bars}; false flags {acc['false_flags'][:10]}")

        # audit trail, every order
        bad_audit: dict[str, str] = {}
        for oid, rs in records.items():
            rec = rs[0][1]
            entries = sorted(audits.get(oid, []), key=lambda e: e.seq)
            why = audit_problems(rec.state, rec.audit_seq, rec.copies, entries)
            if why:
                bad_audit[oid] = why
        entries_total = sum(len(v) for v in audits.values())
        orphan = [oid for oid in audits if oid not in records]
        c["audit"] = {
            "orders_checked": len(records),
            "entries": entries_total,
            "incomplete": len(bad_audit),
            "orphan_histories": len(orphan),
            "sample_problems": dict(list(bad_audit.items())[:10]),
        }
        if bad_audit:
            self.fail(
                f"{len(bad_audit)} audit trails incomplete: {dict(list(bad_audit.items())[:5])}"
            )
        if orphan:
            self.fail(f"{len(orphan)} audit histories without an order: {orphan[:10]}")

        # reservations: order side (granted tracked lines) vs stock side (reserved)
        held: Counter[tuple[str, str]] = Counter()
        for rs in records.values():
            saga = rs[0][1].reservation
            if saga is None:
                continue
            for ln in saga.lines:
                if ln.outcome == "granted" and ln.tracked:
                    held[(ln.sku, ln.warehouse)] += ln.quantity
        mismatch = []
        reserved_total = 0
        for sku, whs in levels.items():
            for wh, lv in whs.items():
                reserved_total += lv["reserved"]
                if lv["reserved"] != held.get((sku, wh), 0):
                    mismatch.append(
                        f"{sku}@{wh}: stock reserved {lv['reserved']}, orders hold "
                        f"{held.get((sku, wh), 0)}"
                    )
        stray = [k for k in held if k[0] not in levels]
        hot = {
            sku: sum(lv["reserved"] for lv in whs.values())
            for sku, whs in list(levels.items())[:HOT_SKUS]
        }
        sagas = Counter(
            rs[0][1].reservation.status for rs in records.values() if rs[0][1].reservation
        )
        c["reservations"] = {
            "reserved_units_stocked_skus": reserved_total,
            "hot_skus_reserved": hot,
            "order_vs_stock_mismatches": len(mismatch),
            "saga_status": dict(sagas),
        }
        if mismatch:
            self.fail(f"order-side vs stock-side reservations differ: {mismatch[:10]}")
        if stray:
            self.fail(f"granted tracked lines of unstocked SKUs: {stray[:10]}")

        # an HTTP sample: the API serves the same records and histories
        rng = random.Random(self.seed)
        ids = rng.sample(sorted(records), min(HTTP_SAMPLE, len(records)))
        sem = asyncio.Semaphore(16)
        http_bad: dict[str, str] = {}

        async def probe(oid: str) -> None:
            async with sem:
                for _attempt in range(3):  # a timer may move the order between the two reads
                    st, doc = await api.call("GET", f"/v1/orders/{oid}")
                    st2, hist = await api.call("GET", f"/v1/orders/{oid}/history")
                    if st != 200 or st2 != 200:
                        why = f"GET order {st}, history {st2}"
                        continue
                    rows = hist.get("history", []) if isinstance(hist, dict) else hist
                    entries = [msgspec.convert(e, _Audit) for e in rows]
                    why = audit_problems(doc["state"], len(entries), doc["copies"], entries)
                    if not why and doc["id"] != oid:
                        why = f"answered for {doc['id']}"
                    if not why:
                        return
                http_bad[oid] = why

        await asyncio.gather(*(probe(oid) for oid in ids))
        c["http_sample"] = {"orders": len(ids), "problems": http_bad}
        if http_bad:
            self.fail(f"HTTP sample: {len(http_bad)} bad, e.g. {dict(list(http_bad.items())[:5])}")

    # -- figures ------------------------------------------------------------------------------

    def _figures(
        self,
        flood: Flood,
        fast: FastSubscriber,
        slow: SlowSubscriber,
        receiver: Receiver,
        faults: FaultRunner,
        drain: dict[str, Any],
        checks: dict[str, Any],
        send_end_ms: int,
        ready_s: float,
    ) -> dict[str, Any]:
        lat = sorted(seen - recv for recv, seen in fast.first.values())
        calm = outside_faults(fast.first, faults.done)
        per_s = [flood.per_s.get(s, 0) for s in range(max(flood.per_s, default=0) + 1)]
        wh = checks["webhook"]
        return {
            "settings": {
                "minutes": self.args.minutes,
                "rate": self.args.rate,
                "workers": self.args.workers,
                "seed": self.seed,
                "batch": BATCH,
                "concurrency": CONCURRENCY,
                "webhook_fail_rate": WEBHOOK_FAIL_RATE,
                "broker_hang_s": self.hang_s,
                "stocked_skus": self.args.stocked,
            },
            "machine": {"nproc": os.cpu_count(), "load_avg_after": os.getloadavg()},
            "service": {"ready_s": ready_s, "starts": self.svc.starts},
            "figures": {
                "generated": flood.total,
                "accepted": flood.accepted_lines,
                "accepted_ids": len(flood.accepted),
                "recorded_ids": checks["records"]["recorded_ids"],
                "requests": flood.requests,
                "retried_requests": flood.retries,
                "client_errors": dict(flood.errors),
                "ambiguous_orders": len(flood.ambiguous),
                "accepted_per_s_min_max": [min(per_s, default=0), max(per_s, default=0)],
                "latency_accepted_to_subscriber_ms": {
                    "p50": _pct(lat, 0.5),
                    "p99": _pct(lat, 0.99),
                    "max": lat[-1] if lat else None,
                    "n": len(lat),
                },
                "latency_outside_fault_windows_ms": {
                    "p50": _pct(calm, 0.5),
                    "p99": _pct(calm, 0.99),
                    "max": calm[-1] if calm else None,
                    "n": len(calm),
                },
                "oversold": checks["oversold_total"],
                "stock_audit_ok": checks["stock_audit"]["ok"],
                "webhook": {
                    "posts": receiver.posts,
                    "answered_500": receiver.failed,
                    "answered_2xx": receiver.ok,
                    "retries_received": receiver.retries,
                    "events_delivered_twice": receiver.dup_events,
                    "events_expected": max(0, wh["head"] - wh["first_id"] + 1),
                    "events_missing": wh["missing"],
                    "service_status": {
                        k: wh["status"].get(k)
                        for k in (
                            "delivered_batches",
                            "delivered_events",
                            "failed_attempts",
                            "dead_lettered_batches",
                        )
                    },
                    "caught_up_after_drain_s": wh["caught_up_s"],
                },
                "subscriber_drops_metric": checks["subscriber_drops"],
                "slow_subscriber": {
                    "connects": slow.connects,
                    "slow_phases": slow.slow_phases,
                    "events": slow.received,
                    "dropped_frames": len(slow.drops),
                    "drop_reasons": dict(Counter(d.get("reason") for d in slow.drops)),
                    "gaps": len(slow.gaps),
                    "resets": len(slow.resets),
                    "resume_from_beyond_received": slow.resume_beyond[:10],
                    "connection_ends": dict(slow.ends),
                },
                "fast_subscriber": {
                    "connects": fast.connects,
                    "changes": fast.changes,
                    "errors": dict(fast.errors),
                },
                "faults": faults.done,
                "drain": {k: v for k, v in drain.items() if k != "unseen"},
                "send_window_s": round((send_end_ms - flood.t0_ms) / 1000, 1),
            },
            "checks": checks,
        }


def report(r: dict[str, Any]) -> None:
    f = r["figures"]
    s = r["settings"]
    lat = f["latency_accepted_to_subscriber_ms"]
    calm = f["latency_outside_fault_windows_ms"]
    wh = f["webhook"]
    ck = r["checks"]
    rec = ck["records"]

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:,.0f}"

    print()
    print(
        f"orderstream soak — {s['minutes']:g} min at {s['rate']:,.0f} orders/s, "
        f"{s['workers']} workers, seed {s['seed']}, {r['machine']['nproc']} cores (shared)"
    )
    rows = [
        ("orders generated / accepted", f"{f['generated']:,} / {f['accepted']:,}"),
        (
            "accepted ids / recorded ids",
            f"{f['accepted_ids']:,} / {f['recorded_ids']:,} (missing {rec['missing']}, in two "
            f"partitions {rec['in_two_partitions']})",
        ),
        (
            "copies lost / extra",
            f"{rec['copies_lost']} / {rec['copies_extra']} "
            f"(+{rec['copies_extra_after_ambiguous_retry']} after an ambiguous retry)",
        ),
        (
            "requests / retried",
            f"{f['requests']:,} / {f['retried_requests']:,}  errors {f['client_errors']}",
        ),
        (
            "accepted -> SSE subscriber",
            f"p50 {ms(lat['p50'])} ms  p99 {ms(lat['p99'])} ms  max {ms(lat['max'])} ms",
        ),
        (
            "  outside the fault windows",
            f"p50 {ms(calm['p50'])} ms  p99 {ms(calm['p99'])} ms  ({calm['n']:,} orders)",
        ),
        (
            "oversold (metric) / stock audit",
            f"{f['oversold']:.0f} / {'ok' if f['stock_audit_ok'] else 'PROBLEMS'}",
        ),
        (
            "reservations order vs stock",
            f"{ck['reservations']['order_vs_stock_mismatches']} mismatches; hot SKUs reserved "
            f"{ck['reservations']['hot_skus_reserved']}",
        ),
        (
            "dedup recall exact / cross / near",
            f"{ck['dedup']['exact']['recall']:.5f} / "
            f"{ck['dedup']['exact']['cross_channel']['recall']:.5f} / "
            f"{ck['dedup']['near_duplicate']['recall']:.5f} "
            f"(precision {ck['dedup']['exact']['precision']:.5f} / "
            f"{ck['dedup']['near_duplicate']['precision']:.5f})",
        ),
        (
            "audit trails complete",
            f"{ck['audit']['orders_checked'] - ck['audit']['incomplete']:,} of "
            f"{ck['audit']['orders_checked']:,} ({ck['audit']['entries']:,} entries); HTTP "
            f"sample {ck['http_sample']['orders'] - len(ck['http_sample']['problems'])}/"
            f"{ck['http_sample']['orders']}",
        ),
        (
            "webhook events delivered",
            f"{wh['events_expected'] - wh['events_missing']:,} of {wh['events_expected']:,}; "
            f"posts {wh['posts']:,}, 500s {wh['answered_500']:,}, "
            f"retries {wh['retries_received']:,}, twice {wh['events_delivered_twice']:,}, "
            "dead-lettered "
            f"{wh['service_status']['dead_lettered_batches']}",
        ),
        ("subscriber drops (metric)", f"{f['subscriber_drops_metric'] or 0}"),
        (
            "slow subscriber",
            f"{f['slow_subscriber']['connects']} connects, {f['slow_subscriber']['dropped_frames']}"
            f" dropped frames {f['slow_subscriber']['drop_reasons']}, "
            f"{f['slow_subscriber']['gaps']} gaps",
        ),
        (
            "drain",
            f"journal empty {f['drain']['journal_empty_s']}s, all at subscriber "
            f"{f['drain']['all_seen_s']}s after the flood",
        ),
    ]
    w = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"  {k:<{w}}  {v}")
    print("  faults (seconds after the flood started; recovery at the SSE subscriber):")
    print(f"    {'at':>6}  {'fault':<18} {'flow':>6} {'backlog':>8} {'normal':>7}  detail")
    for x in f["faults"]:

        def sec(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        print(
            f"    {x.get('at_s', 0):6.1f}  {x['kind']:<18} {sec(x.get('flow_s')):>6} "
            f"{sec(x.get('backlog_s')):>8} {sec(x.get('normal_s')):>7}  {_fault_note(x)}"
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--minutes", type=float, default=10.0, help="flood duration")
    p.add_argument("--rate", type=float, default=2400.0, help="orders/s")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=None, help="default: from the clock")
    p.add_argument("--json", default=str(RESULTS / "soak.json"))
    p.add_argument(
        "--api-key",
        default="",
        help="sent as Authorization: Bearer (default ORDERSTREAM_BENCH_KEY, then "
        "ORDERSTREAM_API_KEY, then the spawned service's bootstrap key)",
    )
    p.add_argument("--stocked", type=int, default=20, help="SKUs stocked plentifully")
    p.add_argument("--ready-timeout", type=float, default=120.0)
    p.add_argument("--drain-timeout", type=float, default=300.0)
    p.add_argument("--webhook-timeout", type=float, default=300.0, help="catch-up after drain")
    p.add_argument("--keep-data", action="store_true", help="keep the data dir on success too")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.rate <= 0 or args.workers < 1:
        p.error("--minutes and --rate must be > 0, --workers >= 1")
    import uvloop

    async def run() -> int:
        """SIGTERM / Ctrl-C cancel the run; its cleanup still stops the service."""
        task = asyncio.create_task(Soak(args).run())
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        try:
            return await task
        except asyncio.CancelledError:
            print("soak interrupted: service stopped", flush=True)
            return 2

    sys.exit(uvloop.run(run()))


if __name__ == "__main__":
    main()
