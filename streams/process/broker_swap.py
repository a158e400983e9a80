"""The steps of a broker swap that never stops the flow (embedded broker, memory budget).

The embedded broker keeps everything it was sent until it exits, so under a long flood the
supervisor replaces it. It does so beside the running pipeline (``Supervisor._swap_broker``):

1. the next broker starts on a new port, its topics and epoch are created, and a standby
   worker per worker joins the group on it (``standby_ready``): the old pipeline keeps flowing;
2. the forwarder sends the next journal entries to the new broker;
3. the old workers finish what the old broker holds (``drain_old``): every entry sent to it
   recorded, every stage's committed offset at its end (they are asked to commit first: Faust
   commits only every 2.8 s), the sync feed at the end; then they are frozen (SIGSTOP), the
   old broker is read once more, and only if nothing moved are they killed;
4. the standby workers, blocked until then on the partition stores' RocksDB locks, open the
   stores the killed workers held and process what waited on the new broker; the journal's
   settles, the sync feed and the lag probe move to it; the old broker stops.

Per-key order across the switch: a partition's records are processed by the one worker that
holds its store. The old worker holds it until it has processed everything of that partition
on the old broker (step 3); the standby worker cannot open it before (the lock), so an order's
records on the old broker are processed before its records on the new one.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import aiohttp
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError

from streams.ingest.forwarder import close_in_background
from streams.kafka.lag import group_lag, group_reader
from streams.kafka.topics import RAW
from streams.sync.feed import SyncFeed

log = logging.getLogger("orderstream.swap")

STANDBY_GUESS_MB = 100  # one standby worker before a swap measured one (idle: ~76 MiB)
STANDBY_TIMEOUT_S = 90.0  # a standby worker's Faust start (~5 s idle; slower under a flood)
# The old pipeline gets as long as it makes progress (a swap under a backlog drains the
# backlog first: FIFO, as it would have been anyway); stalled this long, it is given up.
DRAIN_STALL_S = 30.0
DRAIN_MAX_S = 900.0
FREEZE_SETTLE_S = 0.05  # a produce the frozen worker had on the wire lands by then
PROBE_EVERY_S = 0.05


class Worker(Protocol):
    url: str

    def alive(self) -> bool: ...

    def start(self) -> None: ...

    def signal(self, sig: int) -> None: ...


async def standby_ready(workers: Sequence[Worker], partitions: int, timeout: float) -> bool:
    """Until the standby workers hold every partition between them (their group is formed)."""
    deadline = time.monotonic() + timeout
    stable = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            held: set[str] = set()
            answered = 0
            for w in workers:
                if not w.alive():
                    w.start()
                    continue
                try:
                    async with session.get(w.url + "/internal/health") as resp:
                        if resp.status == 200:
                            got = (await resp.json()).get("assigned") or []
                            # more workers than partitions: some hold nothing
                            answered += 1 if got or len(workers) > partitions else 0
                            held.update(got)
                except (TimeoutError, aiohttp.ClientError, ValueError):
                    pass
            covered = all(f"{RAW}:{p}" in held for p in range(partitions))
            # two rounds alike: a group that just formed may still rebalance once
            stable = stable + 1 if covered and answered == len(workers) else 0
            if stable >= 2:
                return True
    return False


async def little_in_flight(
    in_flight: Callable[[], int], most: int = 1500, timeout: float = 10.0
) -> None:
    """Until at most ``most`` journal entries are forwarded and not yet recorded: the old
    broker's remainder is what the next broker's first records wait behind. A standby start
    under a flood briefly slows the old pipeline; this lets it catch up first."""
    deadline = time.monotonic() + timeout
    while in_flight() > most and time.monotonic() < deadline:
        await asyncio.sleep(0.02)


class OldBroker:
    """The group's lag on the broker being retired, read often over one client."""

    def __init__(self, bootstrap: str, group: str, partitions: int) -> None:
        self.bootstrap = bootstrap
        self.group = group
        self.partitions = partitions
        self.consumer: AIOKafkaConsumer | None = None

    async def lag(self) -> int | None:
        """Messages not yet processed on every consumed topic; None when unreadable."""
        try:
            if self.consumer is None:
                self.consumer = await group_reader(self.bootstrap, self.group)
            lag = await asyncio.wait_for(group_lag(self.consumer, self.partitions), 5)
            return sum(lag.values())
        except (KafkaError, OSError, TimeoutError) as exc:
            log.debug("old broker lag probe failed: %s", exc)
            self.close()
            return None

    def close(self) -> None:
        if self.consumer is not None:
            close_in_background(self.consumer)
            self.consumer = None


async def _feed_read(feed: SyncFeed, timeout: float) -> bool:
    """Has the sync feed read, from a fetch answered after now, every change to its end?"""
    since = time.time() * 1000
    rounds = feed.fetches
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if feed.read_to_end_since(since) or (feed.fetches >= rounds + 2 and feed.caught_up()):
            return True
        await asyncio.sleep(0.005)
    return False


async def commit_now(workers: Sequence[Worker]) -> None:
    """Ask each worker to commit the offsets of what it processed (``/internal/commit``)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:

        async def one(w: Worker) -> None:
            try:
                async with session.post(w.url + "/internal/commit") as resp:
                    await resp.read()
            except (TimeoutError, aiohttp.ClientError):
                pass  # its lag stays, and the drain looks again

        await asyncio.gather(*(one(w) for w in workers if w.alive()))


async def drain_old(
    workers: Sequence[Worker],
    unrecorded: Callable[[], int],
    old: OldBroker,
    feed: SyncFeed,
    stall: float = DRAIN_STALL_S,
    marks: dict[str, float] | None = None,
    commit: Callable[[Sequence[Worker]], Awaitable[None]] = commit_now,
) -> bool:
    """Until the old broker's pipeline has nothing left, then kill its workers.

    ``unrecorded``: journal entries sent to the old broker and not yet recorded. True when the
    old workers were killed with nothing left; False once nothing moved for ``stall`` seconds
    (they are killed anyway: the journal sends again what is not recorded, the outbox re-asks
    reservations)."""
    try:
        marks = {} if marks is None else marks
        return await _drain(workers, unrecorded, old, feed, stall, marks, commit)
    finally:  # never leave a worker frozen (a cancelled swap: the service is stopping)
        _signal_all(workers, signal.SIGCONT)


async def _drain(
    workers: Sequence[Worker],
    unrecorded: Callable[[], int],
    old: OldBroker,
    feed: SyncFeed,
    stall: float,
    marks: dict[str, float],
    commit: Callable[[Sequence[Worker]], Awaitable[None]],
) -> bool:
    """``marks``: seconds from the start until the sent entries were recorded ("recorded"),
    and until the workers were frozen for the last look ("frozen")."""
    t0 = time.monotonic()
    end = t0 + DRAIN_MAX_S
    deadline = t0 + stall
    best: tuple[int, int] = (unrecorded(), 2**62)  # (entries unrecorded, lag): less is progress
    quiet = 0
    while time.monotonic() < min(deadline, end):
        await asyncio.sleep(PROBE_EVERY_S)
        for w in workers:
            if not w.alive():
                log.warning("a worker of the old broker died during the swap: restarting it")
                w.start()
                quiet = 0
        left = unrecorded()
        if left < best[0]:
            best, deadline = (left, best[1]), time.monotonic() + stall
        if left or not feed.caught_up():
            quiet = 0
            continue
        marks.setdefault("recorded", time.monotonic() - t0)
        await commit(workers)
        lag = await old.lag()
        if lag is not None and lag < best[1]:
            best, deadline = (best[0], lag), time.monotonic() + stall
        quiet = quiet + 1 if lag == 0 else 0
        if quiet < 2:
            continue
        # Looks drained. Freeze the workers (no timer, no batch in flight may add anything),
        # let a send already on the wire land, and read the broker once more.
        await commit(workers)  # the last batch's offsets
        _signal_all(workers, signal.SIGSTOP)
        marks["frozen"] = time.monotonic() - t0
        await asyncio.sleep(FREEZE_SETTLE_S)
        lag = await old.lag()
        if lag == 0 and not unrecorded() and await _feed_read(feed, 1.0):
            _signal_all(workers, signal.SIGKILL)  # a stopped process dies of it as it is
            return True
        log.info("old broker's pipeline moved while frozen (lag %s): draining on", lag)
        _signal_all(workers, signal.SIGCONT)
        quiet = 0
    _signal_all(workers, signal.SIGKILL)
    return False


async def feed_read_all(feed: SyncFeed, timeout: float = 5.0) -> bool:
    """With the old broker's workers gone: has the feed read its change topics to the end?"""
    return await _feed_read(feed, timeout)


def _signal_all(workers: Sequence[Worker], sig: int) -> None:
    for w in workers:
        if w.alive():
            w.signal(sig)


async def reap(workers: Sequence[Worker], timeout: float = 5.0) -> None:
    """Wait for the killed workers' exit (their RocksDB locks go with it)."""
    deadline = time.monotonic() + timeout
    while any(w.alive() for w in workers) and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
