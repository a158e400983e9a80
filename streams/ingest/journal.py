"""The ingest journal: what the HTTP endpoint accepted, durable before it answers 202.

An entry stays until a terminal stage (order state or dead letters) has *recorded* it, not
merely until the broker acknowledged it: the embedded broker keeps topics in memory, so after a
broker restart the forwarder replays every entry still here, and the order stage ignores what it
already has (global ids are deterministic).

Writes are group-committed: concurrent requests share one RocksDB WriteBatch and one fsync, done
in a worker thread so the event loop keeps accepting while the disk syncs.

Two in-memory aids keep the hot path off RocksDB reads, without changing what is on disk: a map
of which entries are still live (so settling does not read values back to learn whether an entry
is present), and the most recently committed entries themselves (so the forwarder does not
re-read and re-decode what it was just handed; a replay, or a forwarder that fell behind, still
reads RocksDB).
"""

from __future__ import annotations

import asyncio
import logging
import sys
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
from rocksdict import Rdict, WriteBatch, WriteOptions

from streams.state import rocks

log = logging.getLogger("orderstream.journal")

_ENTRY = b"e"
_META_ID = b"m:id"

# Committed entries kept in memory for the forwarder; beyond this it reads RocksDB instead.
RECENT_MAX = 25_000
# Order ids of the newest entries kept for lookups (~15 MB at this size): far more than are
# ever in flight between acceptance and recording, short of a broker outage.
RECENT_IDS_MAX = 100_000
# The group commit hands each batch to a writer thread and back. Both hops need the GIL, which the
# busy event loop gives up only every switch interval (5 ms by default): with an fsync of ~1-2 ms
# the hops, not the disk, set the commit rate. 0.5 ms makes a commit round trip GIL-bound no
# longer; it only matters while the writer thread waits for the GIL.
SWITCH_INTERVAL_S = 0.0005


class JournalEntry(msgspec.Struct, array_like=True):
    channel: str
    payload: bytes
    received_at: int  # epoch ms
    order_id: str = ""  # "" when the payload was refused at the door (see rejection)
    # Set when the HTTP layer refused the payload (malformed JSON, no order number): it is
    # still journaled so that it reaches the dead-letter topic with its reason.
    rejection: tuple[str, str] | None = None  # (field, reason)
    priority: bool = False  # sent with X-Priority: high: forwarded on the priority lane


class JournalFull(Exception):
    """The journal holds ``max_entries`` unsettled orders: refuse with 503 + Retry-After."""


def _key(seq: int) -> bytes:
    return _ENTRY + seq.to_bytes(8, "big")


class IngestJournal:
    def __init__(self, path: Path, max_entries: int, fsync: bool = True) -> None:
        path.mkdir(parents=True, exist_ok=True)
        self.db = Rdict(str(path), rocks.options())
        self.max_entries = max_entries
        self._write_opts = WriteOptions()
        self._write_opts.sync = fsync
        self._enc = msgspec.msgpack.Encoder()
        self._dec = msgspec.msgpack.Decoder(JournalEntry)
        jid = self.db.get(_META_ID)
        if jid is None:
            jid = uuid.uuid4().hex[:16].encode()
            self.db.put(_META_ID, jid, self._write_opts)
        self.id: str = jid.decode()
        # _live[seq - _live_base] == 1 while entry seq is on disk and not settled.
        self._live = bytearray()
        self._live_base = 1
        self.depth, last = self._scan()
        self.next_seq = last + 1
        # Highest seq on disk. Seqs are handed out before the group commit lands, so readers
        # (the forwarder) must never look past this one.
        self.durable_seq = last
        self._pending: WriteBatch | None = None
        self._pending_count = 0
        self._pending_last = last
        self._pending_waiters: list[asyncio.Future[None]] = []
        self._pending_entries: list[tuple[int, list[JournalEntry]]] = []
        # (first seq, entries) of recent commits, contiguous in seq order
        self._recent: deque[tuple[int, list[JournalEntry]]] = deque()
        self._recent_count = 0
        # order id -> seq of its newest entry, for the last RECENT_IDS_MAX accepted (oldest
        # first): answers "accepted, not yet recorded" without an index on disk. Settled
        # entries are not removed here; the live map says whether one still waits.
        self._recent_ids: dict[str, int] = {}
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="journal-writer")
        if fsync and sys.getswitchinterval() > SWITCH_INTERVAL_S:
            sys.setswitchinterval(SWITCH_INTERVAL_S)
        self._flushing = False
        self._closed = False
        log.info("ingest journal %s at %s: %d unsettled entries", self.id, path, self.depth)

    def _scan(self) -> tuple[int, int]:
        count, last = 0, 0
        seqs: list[int] = []
        it = self.db.iter()
        it.seek(_ENTRY)
        while it.valid():
            key = it.key()
            if not key.startswith(_ENTRY):
                break
            count += 1
            last = int.from_bytes(key[1:], "big")
            seqs.append(last)
            it.next()
        if seqs:
            base = self._live_base = seqs[0]
            live = self._live = bytearray(last - base + 1)
            for seq in seqs:
                live[seq - base] = 1
        else:
            self._live_base = last + 1
        return count, last

    def _mark_live(self, first: int, n: int) -> None:
        """Entries first..first+n-1 are on disk (called in seq order, after the write)."""
        live = self._live
        gap = first - (self._live_base + len(live))
        if not live:
            self._live_base = first
        elif gap > 0:  # seqs of a failed write: never on disk
            live.extend(bytes(gap))
        live.extend(b"\x01" * n)

    def live_through(self, seq: int) -> int:
        """Unsettled entries with a sequence number <= ``seq`` (C speed: a byte count)."""
        end = seq - self._live_base + 1
        return self._live.count(1, 0, end) if end > 0 else 0

    def oldest_live(self) -> int | None:
        """The oldest entry still waiting to be recorded, if any."""
        i = self._live.find(1)
        return None if i < 0 else self._live_base + i

    def _compact_live(self) -> None:
        live = self._live
        if live and not live[0]:
            i = live.find(1)
            if i < 0:
                self._live_base += len(live)
                live.clear()
            elif i >= 4096 or i * 4 >= len(live):
                del live[:i]
                self._live_base += i

    # -- accepting -------------------------------------------------------------------------------

    async def append(self, entries: list[JournalEntry]) -> list[int]:
        """Durably append; returns the entries' sequence numbers once they are on disk."""
        if self._closed:
            raise JournalFull("journal is closed (service stopping)")
        if self.depth + len(entries) > self.max_entries:
            raise JournalFull(f"journal holds {self.depth} of {self.max_entries} entries")
        first = self.next_seq
        self.next_seq += len(entries)
        self.depth += len(entries)
        if self._pending is None:
            self._pending = WriteBatch(raw_mode=True)
            self._pending_count = 0
        self._pending_count += len(entries)
        self._pending_last = first + len(entries) - 1
        enc = self._enc.encode
        put = self._pending.put
        for i, entry in enumerate(entries, first):
            put(_key(i), enc(entry))
        self._pending_entries.append((first, entries))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending_waiters.append(fut)
        if not self._flushing:
            self._flushing = True
            asyncio.get_running_loop().create_task(self._flush())
        await fut
        return list(range(first, first + len(entries)))

    async def _flush(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._pending is not None:
                batch, waiters = self._pending, self._pending_waiters
                count, last = self._pending_count, self._pending_last
                committed = self._pending_entries
                self._pending, self._pending_waiters, self._pending_entries = None, [], []
                try:
                    await loop.run_in_executor(self._writer, self.db.write, batch, self._write_opts)
                except Exception as exc:  # disk full, I/O error: the caller must not say 202
                    log.exception("journal write failed")
                    self.depth -= count
                    for w in waiters:
                        if not w.done():
                            w.set_exception(exc)
                    continue
                self.durable_seq = last
                recent = self._recent
                ids = self._recent_ids
                for first, entries in committed:
                    self._mark_live(first, len(entries))
                    recent.append((first, entries))
                    self._recent_count += len(entries)
                    for i, entry in enumerate(entries, first):
                        if entry.order_id:
                            ids.pop(entry.order_id, None)  # newest copy last: evicted last
                            ids[entry.order_id] = i
                while len(ids) > RECENT_IDS_MAX:
                    del ids[next(iter(ids))]
                while self._recent_count > RECENT_MAX:
                    self._recent_count -= len(recent.popleft()[1])
                for w in waiters:
                    if not w.done():
                        w.set_result(None)
        finally:
            self._flushing = False

    # -- forwarding and trimming -----------------------------------------------------------------

    def read_after(self, seq: int, limit: int) -> list[tuple[int, JournalEntry]]:
        """Up to ``limit`` unsettled entries after ``seq``, in order, each with its seq.

        Also tells the journal that everything up to ``seq`` was forwarded: recent entries kept
        in memory up to there are dropped (a replay reads them from RocksDB).
        """
        recent = self._recent
        while recent and recent[0][0] + len(recent[0][1]) - 1 <= seq:
            self._recent_count -= len(recent.popleft()[1])
        if recent and recent[0][0] <= seq + 1:
            return self._read_recent(seq, limit)
        return self._read_db(seq, limit)

    def _read_recent(self, seq: int, limit: int) -> list[tuple[int, JournalEntry]]:
        # Committed entries are contiguous from recent[0] on; skip the settled ones, as RocksDB
        # would (they are deleted there).
        out: list[tuple[int, JournalEntry]] = []
        live, base = self._live, self._live_base
        n_live = len(live)
        for first, entries in self._recent:
            for i, entry in enumerate(entries, first):
                if i <= seq:
                    continue
                j = i - base
                if 0 <= j < n_live and live[j]:
                    out.append((i, entry))
                    if len(out) >= limit:
                        return out
        return out

    def _read_db(self, seq: int, limit: int) -> list[tuple[int, JournalEntry]]:
        out: list[tuple[int, JournalEntry]] = []
        it = self.db.iter()
        it.seek(_key(seq + 1))
        dec = self._dec.decode
        while it.valid() and len(out) < limit:
            key = it.key()
            if not key.startswith(_ENTRY):
                break
            out.append((int.from_bytes(key[1:], "big"), dec(it.value())))
            it.next()
        return out

    def find_recent(self, order_id: str) -> tuple[int, JournalEntry] | None:
        """The newest unsettled entry of ``order_id`` among the last ``RECENT_IDS_MAX``
        accepted: an order on its way that no stage has recorded yet (``GET /v1/orders``)."""
        seq = self._recent_ids.get(order_id)
        if seq is None:
            return None
        j = seq - self._live_base
        if not (0 <= j < len(self._live) and self._live[j]):
            return None  # recorded (settled) since
        raw = self.db.get(_key(seq))
        return None if raw is None else (seq, self._dec.decode(raw))

    def settle(self, seqs: list[int]) -> int:
        """Delete entries a terminal stage recorded; repeats (after a replay) are harmless."""
        # A replay can put the same entry twice in one settle: count each entry once.
        # Presence comes from the live map, which mirrors the keys on disk.
        live, base = self._live, self._live_base
        n_live = len(live)
        batch: WriteBatch | None = None
        n = 0
        for s in set(seqs):
            j = s - base
            if 0 <= j < n_live and live[j]:
                live[j] = 0
                if batch is None:
                    batch = WriteBatch(raw_mode=True)
                batch.delete(_key(s))
                n += 1
        if batch is not None:
            self.db.write(batch)
            self.depth -= n
            self._compact_live()
        return n

    async def close(self) -> None:
        self._closed = True
        while self._flushing:
            await asyncio.sleep(0.01)
        self._writer.shutdown(wait=True)
        self.db.close()
