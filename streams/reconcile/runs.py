"""Reconciliation passes in the service: fetch a channel's window, admit what was missed, report.

A pass runs in the front end, where the journal is: what it ingests is durable like any webhook.
Each fetched order is normalised (to compare it) and classified against what the owning workers
hold (``core.reconcile.classify``); missing and newer orders are admitted, so the pipeline creates
or updates them by the usual rules, and nothing else is sent (a same copy would only add a
duplicate count). Then orderstream's own orders of the window that the channel did not list are
flagged. The cursor (the newest update seen, per channel) and every report are kept in the data
dir, so a restart neither loses the next starting point nor the history of passes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from pathlib import Path
from typing import Literal

import aiohttp
import msgspec

from core.channels import ADAPTERS, NormaliseContext
from core.credentials import ChannelApi
from core.model import CanonicalOrder, Limits
from core.reconcile import OVERLAP_MS, Finding, classify, next_cursor, summary_of
from core.skus import SkuCatalog
from streams import metrics
from streams.ingest.admit import admit
from streams.ingest.held import AskWorkers, held_orders
from streams.ingest.journal import IngestJournal, JournalFull
from streams.reconcile.channels import CLIENTS, ChannelError

log = logging.getLogger("orderstream.reconcile")

FINDINGS_KEPT = 1000
RUNS_KEPT = 200
RunState = Literal["running", "done", "failed"]


class ReconcileRun(msgspec.Struct, kw_only=True):
    id: str
    channel: str
    since: int  # epoch ms: the window fetched is [since, until)
    until: int
    trigger: str  # "api" (POST /v1/reconciliations, the command) or "schedule"
    state: RunState = "running"
    started_at: int
    finished_at: int = 0
    pages: int = 0
    fetched: int = 0
    missing: int = 0  # in the channel, not in orderstream: now ingested
    same: int = 0
    newer: int = 0  # the channel's is newer: admitted, the held order is updated
    different: int = 0  # not newer, yet amount / status / lines differ: listed, not changed
    unknown: int = 0  # in orderstream for the window, not listed by the channel: flagged
    rejected: int = 0  # fetched but unreadable by the adapter: dead-lettered with the reason
    unchecked: int = 0  # no worker owned their partition: admitted, not classified
    unknown_complete: bool = True  # every partition was searched for unknown orders
    rate_limited_s: float = 0.0  # time spent waiting out the channel's rate limits
    cursor: int = 0  # where the next scheduled pass starts (before its overlap)
    error: str = ""
    findings: list[Finding] = []


_encode = msgspec.json.Encoder().encode
_decode_run = msgspec.json.Decoder(ReconcileRun).decode
_decode_cursors = msgspec.json.Decoder(dict[str, int]).decode


class _Window(msgspec.Struct):
    searched: list[int] = []
    orders: list[tuple[str, str, int]] = []


_decode_window = msgspec.json.Decoder(_Window).decode


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class Reconciler:
    def __init__(
        self,
        root: Path,
        journal: IngestJournal,
        on_accept: callable,  # type: ignore[valid-type]
        ask_workers: AskWorkers,
        limits: Limits,
        apis: callable,  # type: ignore[valid-type]  # () -> dict[channel, ChannelApi]
        skus: SkuCatalog,
        partitions: int,
        timeout_s: float = 30.0,
    ) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.journal = journal
        self.on_accept = on_accept
        self.ask_workers = ask_workers
        self.limits = limits
        self.apis = apis
        self.ctx = NormaliseContext(skus=skus, limits=limits)
        self.partitions = partitions
        self.timeout_s = timeout_s
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.runs: dict[str, ReconcileRun] = {}
        self.cursors: dict[str, int] = {}
        cursors = root / "cursors.json"
        if cursors.exists():
            self.cursors = _decode_cursors(cursors.read_bytes())
        for path in sorted(root.glob("rec_*.json")):
            try:
                run = _decode_run(path.read_bytes())
            except (OSError, msgspec.DecodeError):
                continue
            if run.state == "running":  # the service stopped during it: say so, it is not lost
                run.state, run.error = "failed", "the service stopped during this pass"
            self.runs[run.id] = run

    # -- starting passes ---------------------------------------------------------------------

    def channels(self) -> list[str]:
        """Channels with API credentials configured and a client to use them."""
        return sorted(c for c in self.apis() if c in CLIENTS)

    def start(self, channel: str, since: int | None, trigger: str = "api") -> ReconcileRun:
        """A pass over [since, now); ``since`` None: from the channel's cursor (minus the
        overlap), or the last day on a channel's first pass. ValueError names what is wrong."""
        if channel not in CLIENTS:
            raise ValueError(f"{channel!r}: reconciliation pulls from {sorted(CLIENTS)}")
        if channel not in self.apis():
            raise ValueError(
                f"no API credentials for {channel}: orderstream keys channel-api {channel}"
                " --base-url … --set …"
            )
        busy = [r for r in self.runs.values() if r.channel == channel and r.state == "running"]
        if busy:
            raise ValueError(f"a {channel} pass is running: {busy[0].id}")
        now = _now_ms()
        if since is None:
            cursor = self.cursors.get(channel)
            since = cursor - OVERLAP_MS if cursor else now - 86_400_000
        run = ReconcileRun(
            id="rec_" + uuid.uuid4().hex[:16],
            channel=channel,
            since=since,
            until=now,
            trigger=trigger,
            started_at=now,
        )
        self.runs[run.id] = run
        self._save(run)
        self.tasks[run.id] = asyncio.create_task(self._run(run), name=f"reconcile-{run.id}")
        return run

    async def schedule(self, every_s: float) -> None:
        """``reconcile_every``: a pass per configured channel, each from its cursor."""
        while True:
            await asyncio.sleep(every_s)
            for channel in self.channels():
                with contextlib.suppress(ValueError):  # a pass still running: next time
                    self.start(channel, None, "schedule")

    async def stop(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()
        for task in list(self.tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def listing(self, limit: int = 100) -> list[ReconcileRun]:
        runs = sorted(self.runs.values(), key=lambda r: r.started_at, reverse=True)
        return runs[:limit]

    # -- a pass ------------------------------------------------------------------------------

    def _save(self, run: ReconcileRun) -> None:
        _write_atomic(self.root / f"{run.id}.json", _encode(run))

    def _save_cursor(self, channel: str, cursor: int) -> None:
        self.cursors[channel] = cursor
        _write_atomic(self.root / "cursors.json", _encode(self.cursors))

    async def _run(self, run: ReconcileRun) -> None:
        api: ChannelApi = self.apis()[run.channel]
        client = CLIENTS[run.channel](api)
        seen: dict[str, str] = {}  # id -> order number, of everything the channel listed
        updated: list[int] = []
        timeout = aiohttp.ClientTimeout(total=self.timeout_s)
        try:
            async with aiohttp.ClientSession(timeout=timeout) as session:
                async for page in client.fetch(session, run.since, run.until):
                    run.pages = client.pages
                    await self._page(run, page, seen, updated)
                    self._save(run)
            await self._flag_unknown(run, seen)
            run.cursor = next_cursor(self.cursors.get(run.channel, 0), updated, run.started_at)
            self._save_cursor(run.channel, run.cursor)
            run.state = "done"
        except ChannelError as exc:
            run.state, run.error = "failed", str(exc)
            metrics.RECONCILE_ERRORS.labels(run.channel).inc()
            log.warning("reconciliation %s (%s) failed: %s", run.id, run.channel, exc)
        except asyncio.CancelledError:
            run.state, run.error = "failed", "the service stopped during this pass"
            raise
        except Exception as exc:
            run.state, run.error = "failed", f"{type(exc).__name__}: {exc}"
            metrics.RECONCILE_ERRORS.labels(run.channel).inc()
            log.exception("reconciliation %s (%s) failed", run.id, run.channel)
        finally:
            run.rate_limited_s = round(sum(client.waited), 1)
            run.pages = client.pages
            run.finished_at = _now_ms()
            self._save(run)
            self.tasks.pop(run.id, None)
            metrics.RECONCILE_RUNS.labels(run.channel, run.state).inc()
            if run.state == "done":
                metrics.RECONCILE_LAST_SUCCESS.labels(run.channel).set(run.finished_at / 1000)
            self._forget_old()
        log.info(
            "reconciliation %s (%s): %s, %d fetched: %d missing (ingested), %d newer, %d"
            " different, %d unknown",
            run.id,
            run.channel,
            run.state,
            run.fetched,
            run.missing,
            run.newer,
            run.different,
            run.unknown,
        )

    def _forget_old(self) -> None:
        runs = sorted(self.runs.values(), key=lambda r: r.started_at)
        for run in runs[: max(0, len(runs) - RUNS_KEPT)]:
            if run.state != "running":
                self.runs.pop(run.id, None)
                with contextlib.suppress(OSError):
                    (self.root / f"{run.id}.json").unlink()

    def _find(self, run: ReconcileRun, finding: Finding) -> None:
        if len(run.findings) < FINDINGS_KEPT:
            run.findings.append(finding)

    async def _page(
        self, run: ReconcileRun, page: list[bytes], seen: dict[str, str], updated: list[int]
    ) -> None:
        channel = run.channel
        adapter = ADAPTERS[channel]
        orders: list[tuple[bytes, CanonicalOrder]] = []
        unreadable: list[bytes] = []
        for payload in page:
            order = adapter.normalise(payload, self.ctx)
            if isinstance(order, CanonicalOrder):
                orders.append((payload, order))
            else:
                unreadable.append(payload)
        run.fetched += len(page)
        metrics.RECONCILE_ORDERS.labels(channel, "fetched").inc(len(page))
        held, unchecked = await held_orders(self.ask_workers, [o.id for _, o in orders])
        send: list[bytes] = []
        counts: dict[str, int] = {}
        for payload, order in orders:
            seen[order.id] = order.channel_order_no
            updated.append(order.updated_at)
            if order.id in unchecked:
                outcome, diff = "unchecked", []
            else:
                outcome, diff = classify(summary_of(order, ""), held.get(order.id))
            counts[outcome] = counts.get(outcome, 0) + 1
            if outcome in ("missing", "newer", "unchecked"):
                send.append(payload)
            if outcome in ("missing", "newer", "different"):
                self._find(run, Finding(order.id, order.channel_order_no, outcome, diff))
        # unreadable payloads go in too: admission journals them and the normalise stage
        # dead-letters each with its field and reason, where operators already look
        send += unreadable
        counts["rejected"] = len(unreadable)
        for payload in unreadable:
            self._find(
                run, Finding("", "", "rejected", reason=_rejection(adapter, payload, self.ctx))
            )
        if send:
            entries, _ = admit(channel, adapter, ((None, p) for p in send), self.limits, _now_ms())
            await self._append(entries)
        for outcome, n in counts.items():
            setattr(run, outcome, getattr(run, outcome) + n)
            if n and outcome != "same":
                metrics.RECONCILE_ORDERS.labels(channel, outcome).inc(n)

    async def _append(self, entries: list) -> None:  # type: ignore[type-arg]
        while True:
            try:
                await self.journal.append(entries)
            except JournalFull:
                await asyncio.sleep(1.0)
                continue
            self.on_accept()
            return

    async def _flag_unknown(self, run: ReconcileRun, seen: dict[str, str]) -> None:
        """orderstream's orders created in the window that the channel did not list."""
        path = f"/internal/orders-window?channel={run.channel}&since={run.since}&until={run.until}"
        searched: set[int] = set()
        for status, body in await self.ask_workers(path, None):  # type: ignore[arg-type]
            if status != 200:
                continue
            window = _decode_window(body)
            searched.update(window.searched)
            for oid, order_no, _created in window.orders:
                if oid not in seen:
                    run.unknown += 1
                    self._find(run, Finding(oid, order_no, "unknown"))
        run.unknown_complete = len(searched) >= self.partitions
        if run.unknown:
            metrics.RECONCILE_ORDERS.labels(run.channel, "unknown").inc(run.unknown)


def _rejection(adapter: object, payload: bytes, ctx: NormaliseContext) -> str:
    got = adapter.normalise(payload, ctx)  # type: ignore[attr-defined]
    return f"{getattr(got, 'field', '$')}: {getattr(got, 'reason', '')}"
