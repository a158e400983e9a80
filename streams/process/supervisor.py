"""``orderstream serve``: the embedded broker, the HTTP API + journal, and the worker processes.

The API and the journal live in this process, which never restarts on its own: it keeps accepting
while the broker is down or being replaced and while workers restart. Workers are child processes
because a fresh broker epoch invalidates a Faust consumer's whole view of the cluster; restarting
a worker is simpler and safer than repairing one in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import aiohttp
import msgspec
from aiohttp import web
from aiokafka.errors import KafkaError

from core.routing import WarehouseRouting
from core.skus import SkuCatalog
from ext import kafka_partition
from streams import metrics
from streams.cluster.members import Membership, held_partitions
from streams.cluster.peers import Peers
from streams.cluster.shared_config import SharedConfig
from streams.cluster.table import CompactedTable
from streams.cluster.webhook_store import ClusterHookStore
from streams.cluster.webhook_store import follow as follow_webhooks
from streams.http import console_page, openapi
from streams.http.api import IngestAPI
from streams.http.auth import (
    Authenticator,
    channel_api_path,
    ensure_bootstrap_key,
    keys_path,
    load_channel_apis,
)
from streams.http.imports_api import ImportsAPI
from streams.http.reconcile_api import ReconcileAPI
from streams.http.sync_api import SyncAPI
from streams.imports.jobs import Imports
from streams.ingest.forwarder import Forwarder, SettleListener, wait_closed
from streams.ingest.journal import IngestJournal
from streams.ingest.replays import ReplayLog
from streams.kafka import client as kafka_client
from streams.kafka import fetch_wait
from streams.kafka.broker import EmbeddedBroker, die_with_parent, free_port
from streams.kafka.cluster import ClusterError, EpochProbe, ensure_cluster, wait_for_broker
from streams.kafka.lag import LagMonitor, lag_once
from streams.kafka.topics import CONFIG, MEMBERS, UNIQUE, service_topics
from streams.process import broker_swap, malloc
from streams.process.memory_budget import Action, memory_action
from streams.reconcile.runs import Reconciler
from streams.settings import Settings
from streams.sync.feed import SyncFeed
from streams.sync.log import SyncLog
from streams.sync.subscribers import SubscriberHub
from streams.sync.webhooks import Webhooks

log = logging.getLogger("orderstream.serve")


def _resident(pid: int) -> int:
    """Resident bytes of a process; 0 once it is gone."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        return int(open(f"/proc/{pid}/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    return 0


def settings_env(settings: Settings) -> dict[str, str]:
    """Settings as ORDERSTREAM_* variables, so a child sees exactly what the parent resolved."""
    env = {}
    for name, value in msgspec.structs.asdict(settings).items():
        if isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, list):
            text = ",".join(str(v) for v in value)
        else:
            text = str(value)
        env["ORDERSTREAM_" + name.upper()] = text
    return env


class WorkerProcess:
    def __init__(
        self, index: int, web_port: int, settings: Settings, standby: bool = False
    ) -> None:
        self.index = index
        self.web_port = web_port
        self.settings = settings
        self.standby = standby  # started for the next broker of a swap (streams.cli --standby)
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0  # quick successive failures, for the restart backoff
        self.started_at = 0.0
        self.next_start = 0.0  # when a dead worker may start again; 0 = not scheduled

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    def start(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            metrics.reap(self.proc.pid)  # the last run's metrics stay, in the archive files
        env = dict(os.environ, **settings_env(self.settings))
        self.started_at = time.monotonic()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams.cli", "worker", "--web-port", str(self.web_port)]
            + (["--standby"] if self.standby else []),
            env=env,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        log.info("worker %d started (pid %d, internal web %s)", self.index, self.proc.pid, self.url)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        if self.proc is not None:
            self.proc.send_signal(sig)

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        if timeout <= 0:
            self.proc.kill()
            self.proc.wait()
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("worker %d did not stop in %.0fs: killing", self.index, timeout)
            self.proc.kill()
            self.proc.wait()


class Supervisor:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.t0 = time.monotonic()
        self.broker: EmbeddedBroker | None = None
        self.epoch = ""
        self.workers: list[WorkerProcess] = []
        self.stopping = asyncio.Event()
        self.journal: IngestJournal | None = None
        self.sync_log: SyncLog | None = None
        self.feed: SyncFeed | None = None
        self.lag: LagMonitor | None = None
        self.epoch_probe = EpochProbe(settings.bootstrap_servers)
        self._last_replacement = 0.0  # either kind
        self._last_broker_swap = 0.0
        self._budget_warned = 0.0
        self._generation = 0  # broker swaps so far: the workers' web ports alternate with it
        # what a swap's standby workers hold (measured at each swap; a first guess before)
        self._standby_bytes = broker_swap.STANDBY_GUESS_MB * 2**20 * settings.workers
        self._io_tasks: list[asyncio.Task[None]] = []
        self.tables: list[CompactedTable] = []  # a cluster's membership and configuration

    async def run(self) -> None:
        s = self.settings
        data = s.data_path
        data.mkdir(parents=True, exist_ok=True)
        if s.embedded:
            self.broker = EmbeddedBroker(s.broker_port, log_file=data / "broker.log")
            self.broker.start()
        try:
            await self._run_started()
        finally:
            await asyncio.get_running_loop().run_in_executor(None, self._stop_children)

    async def _run_started(self) -> None:
        s = self.settings
        data = s.data_path
        await wait_for_broker(s.bootstrap_servers, timeout=30)
        self.epoch = await ensure_cluster(s.bootstrap_servers, service_topics(s))
        log.info("broker %s ready, epoch %s", s.broker_url, self.epoch)

        self.journal = IngestJournal(data / "journal", s.journal_max_entries, s.journal_fsync)
        forwarder = Forwarder(self.journal, s)
        settler = SettleListener(self.journal, s)
        self.workers = [WorkerProcess(i, port, s) for i, port in enumerate(self._worker_ports(0))]
        api = IngestAPI(
            self.journal,
            forwarder.notify,
            [w.url for w in self.workers],
            s.retry_after_s,
            s.max_body_bytes,
        )
        api.status = {"broker": s.broker_url, "embedded": s.embedded, "epoch": self.epoch}
        api.limits = s.limits
        api.partitions = s.partitions
        api.replays = ReplayLog(data / "replays.jsonl")
        api.lights = (s.sla_red_hours, s.sla_yellow_hours)
        routing = WarehouseRouting.from_toml(s.warehouses) if s.warehouses else None
        api.warehouses = frozenset((routing or WarehouseRouting.default()).warehouses)
        if s.sku_aliases_path is not None:
            api.skus = SkuCatalog.from_toml(s.sku_aliases_path)
        # on a cluster every event keeps its place in the change topics (2 topics x partitions)
        self.sync_log = SyncLog(
            data / "sync",
            s.sync_memory_events,
            s.sync_retention_events,
            tps=2 * s.partitions if s.clustered else 0,
        )
        self.feed = SyncFeed(self.sync_log, s)
        self.feed.epoch = self.epoch
        feed, journal = self.feed, self.journal
        self.lag = LagMonitor(
            s, feed, activity=lambda: (journal.durable_seq, sum(feed.high_water.values()))
        )
        hub = SubscriberHub(
            self.sync_log,
            s.subscriber_max_lag,
            s.subscriber_write_timeout_s,
            canonical_sku=api.skus.canonical,
        )
        shared: SharedConfig | None = None
        membership: Membership | None = None
        if s.clustered:
            shared, membership = await self._join_cluster(api)
        webhooks = Webhooks(
            self.sync_log,
            s.webhook_batch_max,
            s.webhook_timeout_s,
            s.webhook_max_attempts,
            s.webhook_backoff_s,
            s.webhook_backoff_max_s,
            store=ClusterHookStore(shared.table) if shared is not None else None,
        )
        if shared is not None and membership is not None:
            _deliver_owned(webhooks, shared.table, membership, s.partitions)
        app = api.build()
        app.add_routes(SyncAPI(hub, webhooks, api.skus.canonical).routes())
        imports = Imports(
            data / "imports", self.journal, forwarder.notify, api.ask_workers, s.limits
        )
        app.add_routes(ImportsAPI(imports, s.import_max_bytes).routes())
        api_path = channel_api_path(data)
        reconciler = Reconciler(
            data / "reconcile",
            self.journal,
            forwarder.notify,
            api.ask_workers,
            s.limits,
            lambda: load_channel_apis(api_path),
            api.skus,
            s.partitions,
        )
        app.add_routes(ReconcileAPI(reconciler).routes())
        app.add_routes([openapi.route()])
        app.add_routes(console_page.routes())
        metrics.MEMORY_BUDGET.set(s.memory_budget_mb * 2**20)
        auth = Authenticator(
            keys_path(data),
            s.auth == "on",
            metrics_open=False,
            cluster_secret=(lambda: shared.secret(s.cluster_secret)) if shared else None,
        )
        if s.auth == "on":
            made = ensure_bootstrap_key(data)
            if made is not None:
                if shared is not None:
                    await shared.publish_local()  # the cluster's first key: every node's
                auth.reload()
                log.warning(
                    "no API keys yet: created key 'bootstrap' (ingest, read, write), written to"
                    " %s; make per-gateway keys with `orderstream keys add`",
                    made,
                )
        else:
            log.warning("auth = off: the API accepts requests without credentials")
        app.middlewares.append(auth.middleware)
        app.on_shutdown.append(hub.close_all)
        runner = web.AppRunner(app, access_log=None)
        metrics_runner: web.AppRunner | None = None
        await runner.setup()
        site = web.TCPSite(runner, s.http_host, s.http_port, backlog=1024)
        await site.start()
        log.info("HTTP API listening on http://%s:%d", s.http_host, s.http_port)
        if s.metrics_port:
            metrics_app = web.Application()
            metrics_app.router.add_get("/metrics", api.get_metrics)
            metrics_runner = web.AppRunner(metrics_app, access_log=None)
            await metrics_runner.setup()
            await web.TCPSite(metrics_runner, s.metrics_host, s.metrics_port).start()
            log.info("metrics on http://%s:%d/metrics", s.metrics_host, s.metrics_port)
        for w in self.workers:
            w.start()
        self._start_io(forwarder, settler)
        webhooks.start()
        imports.resume()
        tasks = [
            asyncio.create_task(self._watch(forwarder, settler, api), name="watch"),
            asyncio.create_task(self._announce_ready(), name="ready"),
            asyncio.create_task(hub.watchdog(), name="subscriber-watchdog"),
            asyncio.create_task(self._sync_gauges(webhooks, auth), name="sync-gauges"),
        ]
        if membership is not None:
            tasks.append(
                asyncio.create_task(self._membership(api, membership, webhooks), name="members")
            )
        if s.reconcile_every_s:
            tasks.append(
                asyncio.create_task(reconciler.schedule(s.reconcile_every_s), name="reconcile")
            )
        try:
            await self.stopping.wait()
        finally:
            log.info("stopping: HTTP API, workers, broker")
            # Stop accepting first; what was accepted is in the journal. Each step is bounded:
            # the 10-minute soak's front-end restart once hung here for its whole 90 s with the
            # workers and the broker still running, and nothing logged. Whatever holds a step
            # now gets named in the log, and the stop goes on.
            for r in (runner, metrics_runner):
                if r is not None:
                    await _bounded(
                        asyncio.ensure_future(r.cleanup()), what="the HTTP server's close"
                    )
            for t in tasks:
                t.cancel()
            await _bounded(*tasks)
            await _bounded(asyncio.ensure_future(imports.stop()), what="the file imports")
            await _bounded(asyncio.ensure_future(reconciler.stop()), what="the reconciliations")
            # Workers finish their batches and publish their changes first; the sync feed keeps
            # reading meanwhile and takes the last of them before the broker goes away.
            forwarder.paused = True
            await self._stop_workers(timeout=15.0)
            await self._feed_caught_up(timeout=10.0)
            await self._stop_io(forwarder, settler)
            await self.epoch_probe.close()
            await webhooks.stop()
            await self._leave_cluster(api, membership)
            await asyncio.get_running_loop().run_in_executor(None, self._stop_children)
            await self.journal.close()
            self.sync_log.close()
            log.info("stopped")

    async def _join_cluster(self, api: IngestAPI) -> tuple[SharedConfig, Membership]:
        """Read the cluster's configuration and membership; publish what only this node knew."""
        s = self.settings
        members = CompactedTable(s.bootstrap_servers, MEMBERS)
        config = CompactedTable(s.bootstrap_servers, CONFIG)
        self.tables = [members, config]
        for t in self.tables:
            t.start()
        if not await config.wait_caught_up(30):
            raise ClusterError(f"cannot read {CONFIG} from {s.broker_url} within 30 s")
        shared = SharedConfig(config, s.data_path)
        await shared.join(s.cluster_secret)
        membership = Membership(members, s.node_name, s.node_url)
        api.members = membership
        api.peers = Peers(lambda: shared.secret(s.cluster_secret))
        log.info("cluster node %s, reachable at %s", s.node_name, s.node_url)
        return shared, membership

    async def _membership(self, api: IngestAPI, membership: Membership, webhooks: Webhooks) -> None:
        """Once a second: what this node's workers hold, published when it changed (and as a
        heartbeat), so any node sends a key's requests straight here; and the webhooks this
        node delivers follow what it holds."""
        while True:
            held: dict[str, list[int]] = {}
            for status, body in await api.ask_local("/internal/health"):
                if status == 200:
                    for topic, parts in held_partitions(
                        msgspec.json.decode(body)["assigned"]
                    ).items():
                        held[topic] = sorted({*held.get(topic, []), *parts})
            try:
                await membership.publish(held)
            except Exception as exc:  # the broker away for a moment: the next round retries
                log.warning("cannot publish this node's membership: %s", exc)
            webhooks.assign()
            await asyncio.sleep(1.0)

    async def _leave_cluster(self, api: IngestAPI, membership: Membership | None) -> None:
        """Say this node is gone, so no node forwards here while the group rebalances."""
        if membership is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(membership.publish({}, leaving=True), 3.0)
        if api.peers is not None:
            await api.peers.close()
        for t in self.tables:
            await t.stop()

    async def _feed_caught_up(self, timeout: float) -> None:
        """Until the sync feed has fetched past everything on its topics (or ``timeout``)."""
        if self.feed is None or not self.broker_alive():
            return
        deadline = time.monotonic() + timeout
        start = self.feed.fetches
        while time.monotonic() < deadline:
            if self.feed.fetches > start + 1 and not any(self.feed.lag().values()):
                return
            await asyncio.sleep(0.05)
        log.warning("sync feed still behind at shutdown: %s", dict(self.feed.lag()))

    def broker_alive(self) -> bool:
        return self.broker is None or self.broker.alive()

    def _start_io(self, forwarder: Forwarder, settler: SettleListener) -> None:
        assert self.feed is not None and self.lag is not None
        self.feed.epoch = self.epoch
        self._io_tasks = [
            asyncio.create_task(forwarder.run(), name="forwarder"),
            *self._reader_tasks(settler),
        ]

    def _reader_tasks(self, settler: SettleListener) -> list[asyncio.Task[None]]:
        """What reads the broker for this process: journal settles, the sync feed, lag."""
        assert self.feed is not None and self.lag is not None
        return [
            asyncio.create_task(settler.run(), name="settle-listener"),
            asyncio.create_task(self.feed.run(), name="sync-feed"),
            asyncio.create_task(self.lag.run(), name="lag-monitor"),
        ]

    async def _sync_gauges(self, webhooks: Webhooks, auth: Authenticator) -> None:
        """Once a second: gauges, and the key file (new, rotated, revoked keys apply live)."""
        while True:
            metrics.WEBHOOK_BACKLOG.set(webhooks.backlog())
            auth.reload()
            await asyncio.sleep(1.0)

    async def _stop_io(self, forwarder: Forwarder, settler: SettleListener) -> None:
        """Cancel the journal's broker I/O and abandon its clients.

        Against a dead or hung broker, a pending send or fetch may never finish, and aiokafka's
        stop() waits for it; so the tasks are cancelled and the clients closed in the
        background. Nothing is lost: the journal keeps every entry until it is settled.
        """
        for t in self._io_tasks:
            t.cancel()
        await asyncio.wait(self._io_tasks, timeout=5)
        forwarder.abandon()
        settler.abandon()
        if self.feed is not None:
            self.feed.abandon()
        if self.lag is not None:
            self.lag.abandon()
        await wait_closed()

    async def _move_readers(self, settler: SettleListener, epoch: str) -> None:
        """A broker swap: the settle listener, the sync feed and the lag probe start reading the
        next broker (``settings`` names it now); the forwarder already sends there."""
        assert self.feed is not None and self.lag is not None
        readers = self._io_tasks[1:]
        for task in readers:
            task.cancel()
        await asyncio.wait(readers, timeout=5)
        settler.abandon()
        self.feed.abandon()
        self.lag.abandon()
        self.feed.epoch = epoch
        self._io_tasks[1:] = self._reader_tasks(settler)

    async def _stop_workers(self, timeout: float) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._stop_all_workers, timeout)

    def _stop_all_workers(self, timeout: float = 15.0) -> None:
        """In parallel: each gets its own graceful-stop window."""
        threads = [threading.Thread(target=w.stop, args=(timeout,)) for w in self.workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    def _stop_children(self) -> None:
        self._stop_all_workers()
        if self.broker is not None:
            self.broker.stop()

    async def _announce_ready(self) -> None:
        """Log once every worker has its partitions: accepting *and* processing."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
            while True:
                ready = 0
                for w in self.workers:
                    try:
                        async with session.get(w.url + "/internal/health") as resp:
                            if resp.status == 200 and (await resp.json()).get("assigned"):
                                ready += 1
                    except (TimeoutError, aiohttp.ClientError):
                        pass
                if ready == len(self.workers):
                    log.info(
                        "ready in %.1fs: http://%s:%d, %d worker(s), broker %s",
                        time.monotonic() - self.t0,
                        self.settings.http_host,
                        self.settings.http_port,
                        ready,
                        self.settings.broker_url,
                    )
                    return
                await asyncio.sleep(0.1)

    async def _watch(self, forwarder: Forwarder, settler: SettleListener, api: IngestAPI) -> None:
        """Restart what died; recover from a fresh broker epoch."""
        while True:
            try:
                await self._watch_once(forwarder, settler, api)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("supervision round failed; retrying")
                await asyncio.sleep(1.0)

    def _worker_rss(self) -> list[int]:
        """Resident bytes of each worker, by index (0 while one is down)."""
        return [_resident(w.proc.pid) if w.alive() else 0 for w in self.workers]  # type: ignore[union-attr]

    def _rss(self, workers: list[int] | None = None) -> dict[str, int]:
        """Resident bytes per role: this process (API, journal, sync), broker, workers."""
        broker = self.broker
        return {
            "api": _resident(os.getpid()),
            "broker": _resident(broker.proc.pid) if broker and broker.alive() else 0,  # type: ignore[union-attr]
            "workers": sum(self._worker_rss() if workers is None else workers),
        }

    def _over_budget(self, now: float) -> Action:
        """Sample memory (published as metrics); what the budget replaces
        (streams.process.memory_budget decides)."""
        sizes = self._worker_rss()
        rss = self._rss(sizes)
        for role, n in rss.items():
            metrics.PROCESS_RSS.labels(role).set(n)
        budget = self.settings.memory_budget_mb * 2**20
        action = memory_action(
            rss,
            [(size, now - w.started_at) for size, w in zip(sizes, self.workers, strict=True)],
            budget,
            since_broker_swap=now - self._last_broker_swap,
            since_replacement=now - self._last_replacement,
            embedded_broker=self.broker is not None,
            standby=self._standby_bytes,
        )
        if action.kind == "too_small" and now - self._budget_warned > 300:
            self._budget_warned = now
            log.warning(
                "memory %d MiB near the %d MiB budget, but neither the broker nor the workers"
                " hold a quarter of it: the budget is too small for this service",
                sum(rss.values()) >> 20,
                budget >> 20,
            )
        return action

    async def _recycle_worker(self, index: int) -> None:
        """Memory budget: restart the biggest worker (gracefully; its state is on disk)."""
        w = self.workers[index]
        rss = self._rss()
        log.warning(
            "memory %d MiB near the %d MiB budget: restarting worker %d to release its memory",
            sum(rss.values()) >> 20,
            self.settings.memory_budget_mb,
            index,
        )
        await asyncio.get_running_loop().run_in_executor(None, w.stop, 15.0)
        w.start()
        metrics.BROKER_REPLACEMENTS.labels("worker_memory").inc()
        self._last_replacement = time.monotonic()

    async def _drained(self, forwarder: Forwarder, timeout: float) -> bool:
        """Until everything forwarded is recorded and no consumer has anything left to read."""
        assert self.lag is not None and self.feed is not None
        deadline = time.monotonic() + timeout
        seen = self.lag.probes
        self.lag.eager = True
        try:
            return await self._drain_wait(forwarder, deadline, seen)
        finally:
            self.lag.eager = False

    async def _drain_wait(self, forwarder: Forwarder, deadline: float, seen: int) -> bool:
        assert self.lag is not None and self.feed is not None
        quiet = 0
        while time.monotonic() < deadline:
            await asyncio.sleep(0.25)
            if self.lag.probes == seen:
                continue
            seen = self.lag.probes
            lag = self.lag.last
            idle = (
                lag is not None
                and not any(lag.values())
                and forwarder.forwarded_settled()
                and not any(self.feed.lag().values())
            )
            quiet = quiet + 1 if idle else 0
            if quiet >= 2:
                return True
        return False

    def _log_near_budget(self, action: str) -> None:
        rss = self._rss()
        log.warning(
            "memory %d MiB near the %d MiB budget (broker %d MiB): %s",
            sum(rss.values()) >> 20,
            self.settings.memory_budget_mb,
            rss["broker"] >> 20,
            action,
        )

    def _worker_ports(self, generation: int) -> list[int]:
        base = self.settings.worker_web_port
        if not base:
            return [free_port() for _ in range(self.settings.workers)]
        # a swap runs both generations at once: odd ones take the ports after the even ones'
        first = base + (generation % 2) * self.settings.workers
        return [first + i for i in range(self.settings.workers)]

    async def _swap_broker(
        self, forwarder: Forwarder, settler: SettleListener, api: IngestAPI
    ) -> bool:
        """Memory budget: replace the embedded broker without stopping the flow.

        The steps and why an order's records keep their order: ``streams.process.broker_swap``.
        False when the next broker's workers could not be made ready (nothing changed then:
        the caller falls back to the drain-and-restart swap)."""
        assert self.broker is not None and self.feed is not None and self.journal is not None
        s = self.settings
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        self._log_near_budget("swapping in a new broker")
        # 1. the next broker, its topics and epoch, and its workers, beside the running ones
        nxt = EmbeddedBroker(free_port(), log_file=s.data_path / "broker.log")
        nxt.start()  # on the loop's thread (PR_SET_PDEATHSIG), ~0.1 s
        new_settings = msgspec.structs.replace(s, broker_port=nxt.port)
        standby: list[WorkerProcess] = []
        try:
            await wait_for_broker(new_settings.bootstrap_servers, timeout=30)
            new_epoch = await ensure_cluster(
                new_settings.bootstrap_servers, service_topics(s), repair=True
            )
            ports = self._worker_ports(self._generation + 1)
            standby = [
                WorkerProcess(i, port, new_settings, standby=True) for i, port in enumerate(ports)
            ]
            for w in standby:
                w.start()
            ready = await broker_swap.standby_ready(
                standby, s.partitions, broker_swap.STANDBY_TIMEOUT_S
            )
        except (ClusterError, KafkaError, OSError, TimeoutError) as exc:
            log.warning("the next broker did not come up (%s)", exc)
            ready = False
        except asyncio.CancelledError:  # stopping: nothing was switched yet
            for w in standby:
                w.stop(timeout=0.0)
            nxt.stop()
            raise
        if not ready:
            log.warning("swap abandoned: the next broker's workers were not ready in time")
            for w in standby:
                w.stop(timeout=0.0)
            await loop.run_in_executor(None, nxt.stop)
            return False
        # they grow a little once they take over: keep a margin on what they hold now
        held = sum(_resident(w.proc.pid) for w in standby if w.proc)
        if held:
            self._standby_bytes = held * 6 // 5
        t_ready = time.monotonic()
        # 2. the door's next entries go to the next broker - at a moment when little is in
        # flight on the old one (what is, the next broker's records wait for)
        await broker_swap.little_in_flight(lambda: self.journal.live_through(forwarder.cursor))  # type: ignore[union-attr]
        old_workers, old_broker = self.workers, self.broker
        old = broker_swap.OldBroker(s.bootstrap_servers, s.app_id, s.partitions)
        sent_before = await forwarder.redirect(new_settings)
        t_switch = time.monotonic()
        # 3. the old pipeline finishes what the old broker holds, then its workers go
        marks: dict[str, float] = {}
        drained = await broker_swap.drain_old(
            old_workers,
            lambda: self.journal.live_through(sent_before),  # type: ignore[union-attr]
            old,
            self.feed,
            marks=marks,
        )
        old.close()
        await broker_swap.reap(old_workers)
        t_drained = time.monotonic()
        metrics.BROKER_SWAP_DRAIN.observe(t_drained - t_switch)
        if drained and await broker_swap.feed_read_all(self.feed):
            self.feed.read_all()  # its kept changes need not be sent again
        elif not drained:
            log.warning("old broker's pipeline stalled: sending its unrecorded entries again")
            await forwarder.hold()
            oldest = self.journal.oldest_live()
            if oldest is not None:
                forwarder.cursor = min(forwarder.cursor, oldest - 1)
            forwarder.paused = False
        # 4. everything else follows to the next broker; the old one goes
        t_read = time.monotonic()
        s.broker_port = nxt.port  # one Settings object: the feed, settles and lag probe use it
        forwarder.settings = s  # the same broker as the one it was given: no reconnect
        await self._move_readers(settler, new_epoch)
        t_moved = time.monotonic()
        await self.epoch_probe.close()
        self.epoch_probe = EpochProbe(s.bootstrap_servers)
        for w in standby:
            w.settings = s
            w.standby = False
        self.workers, self.broker, self.epoch = standby, nxt, new_epoch
        self._generation += 1
        api.worker_urls = [w.url for w in standby]
        api.status["epoch"] = new_epoch
        api.status["broker"] = s.broker_url
        metrics.BROKER_EPOCHS.inc()
        metrics.BROKER_REPLACEMENTS.labels("memory_budget").inc()
        await loop.run_in_executor(None, old_broker.stop)
        for w in old_workers:
            shutil.rmtree(s.data_path / "worker" / f"faust-{w.web_port}", ignore_errors=True)
        self._last_replacement = self._last_broker_swap = time.monotonic()
        log.warning(
            "broker swapped without a pause in %.1fs (next ready %.1fs, switched %.1fs, old"
            " drained %.2fs (recorded %.2fs, frozen %.2fs), read %.2fs, readers moved %.2fs):"
            " epoch %s on port %d, memory now %d MiB",
            time.monotonic() - t0,
            t_ready - t0,
            t_switch - t_ready,
            t_drained - t_switch,
            marks.get("recorded", -1.0),
            marks.get("frozen", -1.0),
            t_read - t_drained,
            t_moved - t_read,
            new_epoch,
            nxt.port,
            sum(self._rss().values()) >> 20,
        )
        return True

    async def _replace_broker(
        self, forwarder: Forwarder, settler: SettleListener, api: IngestAPI
    ) -> None:
        """Memory budget: drain, then swap the embedded broker for an empty one.

        The API keeps accepting into the journal throughout; the forwarder holds new entries
        back until the new broker is up. Workers stop only once every stage is idle, and the
        group's offsets are read once more after they stopped, so no message between stages is
        left on the old broker (anything produced straight to it by an outside gateway in those
        seconds is: use an external cluster for long-running Kafka gateways).
        """
        assert self.broker is not None
        s = self.settings
        await self.epoch_probe.close()  # no client of the old broker may touch the new one
        t0 = time.monotonic()
        self._log_near_budget("draining to replace the broker")
        forwarder.paused = True
        try:
            for attempt in range(3):
                drained = await self._drained(forwarder, timeout=120)
                if not drained:
                    log.warning("pipeline did not drain in 120 s: replacing the broker anyway")
                # Drained: every offset is committed and the stores hold every write (they
                # survive SIGKILL by design), so a graceful stop buys nothing. It cost ~10 s
                # per swap and, in Faust's shutdown, ~200 MiB more resident in the workers:
                # the peak that overshot the budget in the 30-minute flood.
                await self._stop_workers(timeout=0.0 if drained else 15.0)
                left = await lag_once(s)
                if not any(left.values()) or attempt == 2:
                    break
                log.info("messages left after the workers stopped (%s): draining again", left)
                for w in self.workers:
                    w.start()
            await self._stop_io(forwarder, settler)
            self.broker.stop()
            await asyncio.sleep(0.5)
            self.broker.start()
            metrics.BROKER_REPLACEMENTS.labels("memory_budget").inc()
        finally:
            forwarder.paused = False
        await self._new_epoch(forwarder, settler, api, broker_timeout=60)
        self._last_replacement = self._last_broker_swap = time.monotonic()
        log.warning(
            "broker replaced in %.1fs (epoch %s): memory now %d MiB",
            time.monotonic() - t0,
            self.epoch,
            sum(self._rss().values()) >> 20,
        )

    async def _watch_once(
        self, forwarder: Forwarder, settler: SettleListener, api: IngestAPI
    ) -> None:
        last_probe = 0.0
        last_memory = last_trim = 0.0
        while True:
            await asyncio.sleep(0.25)
            if time.monotonic() - last_trim > 30.0:
                last_trim = time.monotonic()
                malloc.trim()  # after a flood the API's freed heap pages stay resident until then
            if time.monotonic() - last_memory > 2.0:
                last_memory = time.monotonic()
                action = self._over_budget(last_memory)
                if action.kind == "broker":
                    if not await self._swap_broker(forwarder, settler, api):
                        await self._replace_broker(forwarder, settler, api)
                    continue
                if action.kind == "worker":
                    await self._recycle_worker(action.worker)
                    continue
            broker_died = self.broker is not None and not self.broker.alive()
            now = time.monotonic()
            if broker_died or now - last_probe > 2.0:
                last_probe = now
                if broker_died:
                    reachable, epoch = False, None
                else:
                    reachable, epoch = await self.epoch_probe.probe()
                if broker_died or (reachable and epoch != self.epoch):
                    await self._recover_epoch(forwarder, settler, api, broker_died)
                    continue
            for t in self._io_tasks:
                if t.done() and not t.cancelled():
                    # Never let the journal's I/O stop silently while the API keeps saying 202.
                    log.error("%s stopped: %r; restarting it", t.get_name(), t.exception())
                    self._start_io(forwarder, settler)
                    break
            for w in self.workers:
                if w.alive() or self.stopping.is_set():
                    continue
                if w.next_start == 0.0:  # the exit was just noticed
                    # Back off when a worker keeps dying soon after start (bad config, port
                    # taken); a worker that ran for a while restarts at once.
                    quick = now - w.started_at < 30
                    w.restarts = w.restarts + 1 if quick else 0
                    delay = min(0.5 * 2**w.restarts, 30.0) if quick else 0.0
                    w.next_start = now + delay
                    code = w.proc.returncode if w.proc else None
                    log.warning(
                        "worker %d exited (code %s): restarting in %.1fs", w.index, code, delay
                    )
                if now >= w.next_start:
                    w.next_start = 0.0
                    w.start()

    async def _recover_epoch(
        self, forwarder: Forwarder, settler: SettleListener, api: IngestAPI, broker_died: bool
    ) -> None:
        """Fresh broker: topics and offsets are gone; stores and the journal are the truth.

        Workers stop first so that no client of theirs auto-creates a topic on the new broker
        with the wrong partition count; then topics are created, a new epoch is written, the
        journal replays everything not yet recorded, and workers start again.
        """
        why = "died" if broker_died else "came back empty (new epoch)"
        log.warning("broker %s: recovering", why)
        await self.epoch_probe.close()  # no client of the old broker may touch the new one
        # With the broker gone a worker cannot commit anything, and its state survives SIGKILL
        # by design: kill at once. Otherwise give it a short graceful stop.
        await self._stop_workers(timeout=0.0 if broker_died else 5.0)
        await self._stop_io(forwarder, settler)
        if broker_died and self.broker is not None:
            await asyncio.sleep(1.0)
            # On the loop's own thread: PR_SET_PDEATHSIG fires when the *thread* that started
            # the child exits, so a pool thread must not start it (it blocks ~0.1 s).
            self.broker.start()
        await self._new_epoch(forwarder, settler, api, broker_timeout=300)
        log.info("recovered onto broker epoch %s", self.epoch)

    async def _new_epoch(
        self,
        forwarder: Forwarder,
        settler: SettleListener,
        api: IngestAPI,
        broker_timeout: float,
    ) -> None:
        """A fresh (empty) broker with the workers stopped: create the topics, write a new
        epoch, replay the journal, then start the journal's I/O and the workers on it."""
        s = self.settings
        await wait_for_broker(s.bootstrap_servers, timeout=broker_timeout)
        self.epoch = await ensure_cluster(s.bootstrap_servers, service_topics(s), repair=True)
        api.status["epoch"] = self.epoch
        metrics.BROKER_EPOCHS.inc()
        forwarder.replay()
        self._start_io(forwarder, settler)
        for w in self.workers:
            if not w.alive():
                w.start()


def _deliver_owned(
    webhooks: Webhooks, table: CompactedTable, membership: Membership, partitions: int
) -> None:
    """On a cluster: a webhook is delivered by the node whose workers hold the partition its id
    hashes to, so exactly one live node delivers it and another takes over when that one dies."""

    def owns(hook_id: str) -> bool:
        owner = membership.owner(UNIQUE, kafka_partition(hook_id.encode(), partitions))
        return owner is not None and owner.node == membership.node

    webhooks.owns = owns
    webhooks.is_live = lambda node: any(r.node == node for r in membership.records())
    webhooks.node = membership.node
    follow_webhooks(table, webhooks)


STOP_STEP_S = 10.0  # each step of a stop that waits on the loop's own tasks


async def _bounded(*tasks: asyncio.Future[Any], what: str = "") -> None:
    """Wait up to ``STOP_STEP_S`` for ``tasks``; name and cancel any still running."""
    _, pending = await asyncio.wait(tasks, timeout=STOP_STEP_S)
    for t in pending:
        name = what or (t.get_name() if isinstance(t, asyncio.Task) else repr(t))
        log.warning("stopping: %s did not finish in %.0fs; going on without it", name, STOP_STEP_S)
        t.cancel()


def serve(settings: Settings) -> None:
    import uvloop

    kafka_client.configure(settings)
    fetch_wait.install()

    async def main() -> None:
        sup = Supervisor(settings)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, sup.stopping.set)
        await sup.run()

    try:
        uvloop.run(main())
    except (RuntimeError, TimeoutError, OSError, ClusterError) as exc:
        log.error("cannot serve: %s", exc)
        raise SystemExit(1) from None
