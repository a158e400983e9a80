"""Partition-local state: one RocksDB per (store, partition), one WriteBatch per envelope.

Why not Faust Tables: they changelog every key write (~180 µs each here) and crash on start when
their persisted offsets outlive the embedded broker. Here a stage commits an envelope's updates
as one changelog message plus one atomic WriteBatch that also records which input offset it
applied, so:

- redelivery after a crash is recognised (input offset <= applied offset in this broker epoch);
- a worker that takes over a partition on another machine replays the changelog from the
  position its local copy holds (or from the start when it has none);
- on one machine every worker shares ``<data_dir>/stores``; RocksDB's lock file guarantees a
  single writer, and the store moves with the partition without any replay;
- after a fresh broker epoch the changelog is gone, the local store is the truth, and its
  positions (which name their epoch) are simply ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from rocksdict import Rdict, ReadOptions, WriteBatch, WriteOptions

from core.dedup import DELETE_RANGE
from streams.kafka import client as kafka_client
from streams.kafka.topics import changelog_topic
from streams.stages.dedup import EXACT_STORE, RECIPIENT_STORE
from streams.stages.history import STORE as HISTORY_STORE
from streams.state import rocks

log = logging.getLogger("orderstream.store")

_META = b"\x00meta:"
CHANGELOG_CHUNK = 500  # key updates per changelog message (~1 KB each, well under 4 MB)
_CHANGELOG_POS = _META + b"changelog"
_RANGE_AT = len(DELETE_RANGE)
LOCK_WAIT_S = 120.0  # a store held this long by another process is an error, not a handover
LOCK_POLL_S = 0.02


def _input_key(topic: str) -> bytes:
    return _META + b"in:" + topic.encode()


class Position(msgspec.Struct, array_like=True, frozen=True):
    epoch: str
    offset: int


class ChangelogEntry(msgspec.Struct, array_like=True):
    """One envelope's worth of key updates (value None = delete) and the input it came from."""

    updates: list[tuple[bytes, bytes | None]]
    input_topic: str
    input: Position | None  # None on all but the last chunk of a large commit


# fsync each commit: the journal deletes an order's entry once this write is reported, so after a
# power loss the store must not be older than the journal (one ~1-2 ms sync per partition batch).
_SYNC = WriteOptions()
_SYNC.sync = True
# Stores whose loss of the last commits in a power cut is harmless skip the fsync (the write-ahead
# log still survives a process crash): the dedup stores. A forgotten seen id is caught again by
# the order stage (same global id: recorded as a copy, never twice); a forgotten window entry can
# only miss a near-duplicate of an order accepted in the last second before the machine died.
# Measured: the fsync was ~40 % of the dedup stages' cost.
# The history store likewise: a lost last commit only undercounts a recipient by what it held.
UNSYNCED_STORES = frozenset({EXACT_STORE, RECIPIENT_STORE, HISTORY_STORE})
_NOSYNC = WriteOptions()
_NOSYNC.sync = False

_pos_enc = msgspec.msgpack.Encoder()
_pos_dec = msgspec.msgpack.Decoder(Position)
_cl_dec = msgspec.msgpack.Decoder(ChangelogEntry)

SendChangelog = Callable[[str, int, bytes], Awaitable[int]]  # (topic, partition, value) -> offset


def _prefix_end(prefix: bytes) -> bytes | None:
    """The smallest key greater than every key starting with ``prefix`` (None: no bound)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


class PartitionStore:
    def __init__(self, root: Path, name: str, partition: int) -> None:
        self.name = name
        self.partition = partition
        self.path = root / name / str(partition)
        self.path.mkdir(parents=True, exist_ok=True)
        # Most point reads of the hot path miss (new order ids, new recipients, new SKUs'
        # reservations): a bloom filter answers those without reading every SST's index.
        opts = rocks.options(bloom=True)
        self.db = Rdict(str(self.path), opts)
        # per-process scan positions of the stages' due-row index scans (streams.stages.dedup)
        self.scan_hints: dict[bytes, tuple[int, bytes]] = {}
        self.writing: Future[None] | None = None  # a write running on a writer thread

    def get(self, key: bytes) -> bytes | None:
        return self.db.get(key)

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        return self.db.get(keys) if keys else []

    def _meta(self, key: bytes) -> Position | None:
        raw = self.db.get(key)
        return None if raw is None else _pos_dec.decode(raw)

    def applied(self, topic: str, epoch: str) -> int:
        """Highest input offset of ``topic`` applied in ``epoch``; -1 when none."""
        pos = self._meta(_input_key(topic))
        return pos.offset if pos is not None and pos.epoch == epoch else -1

    def changelog_position(self) -> Position | None:
        return self._meta(_CHANGELOG_POS)

    @property
    def synced(self) -> bool:
        return self.name not in UNSYNCED_STORES

    def write(self, entry: ChangelogEntry, changelog: Position | None) -> None:
        batch = WriteBatch(raw_mode=True)
        for key, value in entry.updates:
            if value is None:
                batch.delete(key)
            elif key.startswith(DELETE_RANGE):  # (DELETE_RANGE + lo, hi): delete [lo, hi)
                batch.delete_range(key[_RANGE_AT:], value)
            else:
                batch.put(key, value)
        if entry.input is not None:
            batch.put(_input_key(entry.input_topic), _pos_enc.encode(entry.input))
        if changelog is not None:
            batch.put(_CHANGELOG_POS, _pos_enc.encode(changelog))
        self.db.write(batch, _SYNC if self.synced else _NOSYNC)

    def _bounded_iter(self, end: bytes | None) -> tuple[Any, ReadOptions | None]:
        """An iterator that stops at ``end`` inside RocksDB: without the bound, a scan whose
        range holds only deleted keys (an expiry or deadline index: rewritten and pruned all
        the time) walks every tombstone after it too, until the next live key (measured: ~5 ms
        per scan after a flood, ~2 µs with the bound).

        The caller must keep the returned ``ReadOptions`` alive while it iterates: the
        iterator reads the bound from it (dropping it early truncated scans in a test)."""
        if end is None:
            return self.db.iter(), None
        ro = ReadOptions()
        ro.set_iterate_upper_bound(end)
        return self.db.iter(ro), ro

    def scan(
        self, prefix: bytes, limit: int, start: bytes | None = None
    ) -> list[tuple[bytes, bytes]]:
        """Keys under ``prefix``, ascending, from ``start`` on (a page after the previous)."""
        out = []
        it, _bound = self._bounded_iter(_prefix_end(prefix))  # _bound: alive while iterating
        it.seek(max(prefix, start or prefix))
        while it.valid() and len(out) < limit:
            key = it.key()
            if not key.startswith(prefix):
                break
            out.append((key, it.value()))
            it.next()
        return out

    def scan_range(self, start: bytes, end: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """Keys in [start, end), ascending: e.g. the deadlines due by now."""
        out = []
        it, _bound = self._bounded_iter(end)  # _bound: alive while iterating
        it.seek(start)
        while it.valid() and len(out) < limit:
            key = it.key()
            if key >= end:
                break
            out.append((key, it.value()))
            it.next()
        return out

    def iter_keys(self, start: bytes, end: bytes) -> Iterator[bytes]:
        """Keys in [start, end), ascending, read lazily: the caller stops when it knows enough."""
        it, bound = self._bounded_iter(end)
        it.seek(start)
        while it.valid():
            key = it.key()
            if key >= end:
                break
            yield key
            it.next()
        del bound

    def scan_last(self, prefix: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """The ``limit`` greatest keys under ``prefix``, newest first."""
        out = []
        it = self.db.iter()
        it.seek_for_prev(prefix + b"\xff" * 24)
        while it.valid() and len(out) < limit:
            key = it.key()
            if not key.startswith(prefix):
                break
            out.append((key, it.value()))
            it.prev()
        return out

    def close(self) -> None:
        # a commit cancelled while its write ran on a thread (a stop) left the write going:
        # let it finish before the store closes under it
        if self.writing is not None:
            with contextlib.suppress(Exception):
                self.writing.result()
            self.writing = None
        self.db.close()


class StoreManager:
    """Opens a partition's store when its first envelope arrives, recovering it if needed."""

    def __init__(self, root: Path, epoch: str, bootstrap: str, send: SendChangelog | None) -> None:
        self.root = root
        self.epoch = epoch
        self.bootstrap = bootstrap
        self.send = send
        self.open: dict[tuple[str, int], PartitionStore] = {}
        self._lock = asyncio.Lock()
        self._in_use: dict[tuple[str, int], asyncio.Lock] = {}
        # Writes run on these threads: RocksDB releases the GIL while it writes (and, for the
        # synced stores, fsyncs: ~0.5-3 ms here), so the loop keeps the other stages moving
        # meanwhile (py-spy: ~9 % of a worker's loop was blocked in writes). The commit still
        # waits for its write, under the store's lock, before the batch is acked.
        self._writers: ThreadPoolExecutor | None = None

    @contextlib.asynccontextmanager
    async def using(self, name: str, partition: int) -> AsyncIterator[PartitionStore]:
        """Hold a store for one envelope; a revocation waits until the envelope is done."""
        lock = self._in_use.setdefault((name, partition), asyncio.Lock())
        async with lock:
            yield await self.get(name, partition)

    async def release(self, name: str, partition: int) -> None:
        """Close a revoked partition's store so another worker on this machine can open it."""
        lock = self._in_use.setdefault((name, partition), asyncio.Lock())
        async with lock:
            self.close(name, partition)

    async def get(self, name: str, partition: int) -> PartitionStore:
        store = self.open.get((name, partition))
        if store is not None:
            return store
        async with self._lock:
            store = self.open.get((name, partition))
            if store is None:
                store = await self._open(name, partition)
                self.open[(name, partition)] = store
            return store

    async def _open(self, name: str, partition: int) -> PartitionStore:
        # Another worker on this machine may still hold the RocksDB lock while it finishes a
        # rebalance, or - in a broker swap - while the old broker's worker drains it: wait for
        # it rather than fail the partition, and look often (the swap's handover waits on this).
        deadline = time.monotonic() + LOCK_WAIT_S
        while True:
            try:
                store = PartitionStore(self.root, name, partition)
                break
            except Exception as exc:
                if "lock" not in str(exc).lower():
                    raise
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"store {name}/{partition} stayed locked by another process"
                    ) from None
                await asyncio.sleep(LOCK_POLL_S)
        await self._recover(store)
        return store

    async def _recover(self, store: PartitionStore) -> None:
        """Replay changelog entries newer than the local copy, within this broker epoch."""
        if self.send is None:
            return
        pos = store.changelog_position()
        if pos is not None and pos.epoch != self.epoch:
            return  # fresh broker: the changelog is gone and the local store is the truth
        start = 0 if pos is None else pos.offset + 1
        tp = TopicPartition(changelog_topic(store.name), store.partition)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=20,
            **kafka_client.options(),
        )
        await consumer.start()
        replayed = 0
        # A commit is one or more chunks; only its last chunk names the input it applied. Apply
        # a commit only once its last chunk is seen: a crash mid-commit leaves chunks whose input
        # will be redelivered and recommitted (later in the changelog), never half a commit.
        group: list[tuple[ChangelogEntry, int]] = []
        try:
            consumer.assign([tp])
            # Tansu may report the last batch's base offset as the end rather than last + 1, so
            # end == start can still hide one entry: fetch once more in that case.
            end = (await consumer.end_offsets([tp]))[tp]
            if end < start:
                return
            consumer.seek(tp, start)
            idle = 0
            while idle < (1 if end == start else 3):
                batch = await consumer.getmany(tp, timeout_ms=200, max_records=500)
                msgs = batch.get(tp, [])
                if not msgs:
                    idle += 1
                    continue
                idle = 0
                for msg in msgs:
                    entry = _cl_dec.decode(msg.value)
                    group.append((entry, msg.offset))
                    if entry.input is not None:
                        for part, offset in group:
                            store.write(part, Position(self.epoch, offset))
                        replayed += len(group)
                        group.clear()
        finally:
            await consumer.stop()
            if group:
                log.warning(
                    "store %s/%d: ignored %d changelog chunks of an unfinished commit",
                    store.name,
                    store.partition,
                    len(group),
                )
            if replayed:
                log.info(
                    "store %s/%d: replayed %d changelog entries from offset %d",
                    store.name,
                    store.partition,
                    replayed,
                    start,
                )

    async def commit(
        self,
        store: PartitionStore,
        entry: ChangelogEntry,
        outputs: Sequence[Awaitable[Any]] = (),
    ) -> None:
        """Changelog and the stage's outputs first, then the local batch.

        ``outputs`` are the stage's pending sends: they and the changelog travel to the broker
        together (one round trip, not two), and the local batch is written only once all are
        acknowledged, so a crash in between is repaired by redelivery or changelog replay.
        """
        changelog: Position | None = None
        pending_outputs = asyncio.gather(*outputs)
        if self.send is not None and entry.updates:
            # Chunks keep each message under the producer's request size; only the last one
            # carries the input position, so a replay of a partial commit re-processes input.
            n = CHANGELOG_CHUNK
            parts = [entry.updates[i : i + n] for i in range(0, len(entry.updates), n)]
            topic = changelog_topic(store.name)
            offsets = await asyncio.gather(
                *(
                    self.send(
                        topic,
                        store.partition,
                        msgspec.msgpack.encode(
                            ChangelogEntry(
                                part,
                                entry.input_topic,
                                entry.input if i == len(parts) - 1 else None,
                            )
                        ),
                    )
                    for i, part in enumerate(parts)
                )
            )
            changelog = Position(self.epoch, max(offsets))
        await pending_outputs
        if self._writers is None:
            self._writers = ThreadPoolExecutor(max_workers=4, thread_name_prefix="store-write")
        store.writing = self._writers.submit(store.write, entry, changelog)
        await asyncio.wrap_future(store.writing)
        store.writing = None

    def close(self, name: str, partition: int) -> None:
        store = self.open.pop((name, partition), None)
        if store is not None:
            store.close()

    def close_all(self) -> None:
        if self._writers is not None:  # a write still in flight finishes before its close
            self._writers.shutdown(wait=True)
            self._writers = None
        for key in list(self.open):
            self.open.pop(key).close()
