"""The sync log: every order and stock change, numbered, kept on disk for resume and webhooks.

Subscribers resume with ``Last-Event-ID`` and webhooks deliver at least once; both need a
position that survives broker epochs (the embedded broker forgets its topics) and restarts of
this process. So the sync feed copies ``orders.changes`` / ``stock.changes`` into this log, one
RocksDB write batch per fetch that also records the broker offsets it came from, and every
reader works on event ids of this log, never on broker offsets.

The newest events are also kept in memory (readers near the head never touch RocksDB); the
disk keeps ``retention`` events, older ones are range-deleted.

On a cluster (``tps`` > 0) each event also keeps where it came from (``src``: topic partition,
offset, index in its message), so that a position from another node's log can be found in this
one (``start_for``, ``streams.sync.cursor``). Each append also records the cursor before it
(per partition, the position after the newest event already in the log), keyed by the append's
first event id: those start cursors only grow, so the first event a resumed cursor has not seen
is found by looking at a few of them, not at the events (the recent ones are in memory).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import msgspec
from rocksdict import Rdict, WriteBatch, WriteOptions

from streams.state import rocks
from streams.sync.cursor import Cursor, parse, split

CHUNK_PREFIX = b"c"  # + first event id (8 bytes big-endian) -> up to CHUNK events
CHUNK = 1000
NEXT_KEY = b"m:next"
OLDEST_KEY = b"m:oldest"
POSITION_PREFIX = b"p:"
SOURCE_PREFIX = b"s"  # + first event id: the chunk's sources (a cluster's logs only)
CURSOR_KEY = b"m:cursor"  # [epoch, first event id of the epoch, next position per partition]
BATCH_PREFIX = b"b:"  # + first event id of an append: the cursor before it (a cluster's logs)
BATCH_MEMORY = 4096  # the newest start cursors kept in memory (about as many appends)
_SEQ = struct.Struct(">Q")


class SyncEvent(NamedTuple):
    """One change as subscribers get it; ``body`` is its JSON, built once for every reader."""

    seq: int
    kind: str  # order | stock | stock_alert
    order_id: str
    sku: str
    channel: str
    body: bytes  # {"id": seq, "type": kind, "data": {...}}
    src: int = 0  # on a cluster: topic partition, offset, index (streams.sync.cursor)


class NewEvent(NamedTuple):
    kind: str
    order_id: str
    sku: str
    channel: str
    data: bytes  # the change as JSON
    src: int = 0


_rows = msgspec.msgpack.Encoder()
_rows_dec = msgspec.msgpack.Decoder(list[tuple[str, str, str, str, bytes]])
_srcs_dec = msgspec.msgpack.Decoder(list[int])
_cursor_dec = msgspec.msgpack.Decoder(tuple[str, int, list[int]])


def chunk_key(first: int) -> bytes:
    return CHUNK_PREFIX + _SEQ.pack(max(0, first))


class SyncLog:
    def __init__(self, path: Path, memory_events: int, retention_events: int, tps: int = 0) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db = Rdict(str(path), rocks.options())
        self._write_opts = WriteOptions()  # WAL, no fsync: survives a crash of this process
        self.memory_events = max(1000, memory_events)
        self.retention = max(self.memory_events, retention_events)
        next_raw = self.db.get(NEXT_KEY)
        self.next_seq = _SEQ.unpack(next_raw)[0] if next_raw else 1
        oldest_raw = self.db.get(OLDEST_KEY)
        self.oldest = _SEQ.unpack(oldest_raw)[0] if oldest_raw else 1
        self._mem: list[SyncEvent] = []  # a suffix of the log: seqs _mem_base .. next_seq - 1
        self._mem_base = self.next_seq
        self._changed = asyncio.Event()
        # a cluster's log: how many topic partitions feed it, the broker epoch, where that
        # epoch's events begin, and per partition the position after its newest event
        self.tps = tps
        self.epoch = ""
        self.epoch_start = self.next_seq
        self.last_pos = [0] * tps
        raw = self.db.get(CURSOR_KEY)
        if tps and raw:
            epoch, start, last = _cursor_dec.decode(raw)
            if len(last) == tps:
                self.epoch, self.epoch_start, self.last_pos = epoch, start, last
        # the newest appends' start cursors, oldest first: (first event id, cursor before it)
        self._starts: list[tuple[int, tuple[int, ...]]] = []

    @property
    def head(self) -> int:
        """The id of the newest event (0 when empty)."""
        return self.next_seq - 1

    def position(self, name: str) -> int | None:
        raw = self.db.get(POSITION_PREFIX + name.encode())
        return _SEQ.unpack(raw)[0] if raw else None

    def append(self, events: list[NewEvent], positions: dict[str, int]) -> list[SyncEvent]:
        """Number, store and publish ``events``; ``positions`` (source offsets) commit with them."""
        seq = self.next_seq
        out: list[SyncEvent] = []
        batch = WriteBatch(raw_mode=True)
        for e in events:
            body = b'{"id":%d,"type":"%s","data":%s}' % (seq, e.kind.encode(), e.data)
            out.append(SyncEvent(seq, e.kind, e.order_id, e.sku, e.channel, body, e.src))
            seq += 1
        # stored in chunks: one key per up to CHUNK events (a put per event cost more than
        # everything else the feed does per event)
        for i in range(0, len(out), CHUNK):
            part = out[i : i + CHUNK]
            batch.put(chunk_key(part[0].seq), _rows.encode([ev[1:6] for ev in part]))
            if self.tps:
                key = SOURCE_PREFIX + _SEQ.pack(part[0].seq)
                batch.put(key, _rows.encode([ev.src for ev in part]))
        if self.tps and out:
            last = self.last_pos
            before = tuple(last)
            batch.put(BATCH_PREFIX + _SEQ.pack(out[0].seq), _rows.encode(before))
            for ev in out:
                tp, pos = split(ev.src)
                if pos >= last[tp]:
                    last[tp] = pos + 1
            batch.put(CURSOR_KEY, _rows.encode((self.epoch, self.epoch_start, last)))
        for name, offset in positions.items():
            batch.put(POSITION_PREFIX + name.encode(), _SEQ.pack(offset))
        batch.put(NEXT_KEY, _SEQ.pack(seq))
        trim_to = seq - self.retention
        if trim_to > self.oldest:
            # whole chunks only: one that starts CHUNK or more before trim_to ends before it
            batch.delete_range(chunk_key(0), chunk_key(trim_to - CHUNK + 1))
            if self.tps:
                end = SOURCE_PREFIX + _SEQ.pack(max(0, trim_to - CHUNK + 1))
                batch.delete_range(SOURCE_PREFIX + _SEQ.pack(0), end)
                # an append that began before the oldest kept event: its start cursor no
                # longer describes what the log holds (start_for scans that stretch instead)
                batch.delete_range(BATCH_PREFIX + _SEQ.pack(0), BATCH_PREFIX + _SEQ.pack(trim_to))
            batch.put(OLDEST_KEY, _SEQ.pack(trim_to))
        self.db.write(batch, self._write_opts)
        if trim_to > self.oldest:
            self.oldest = trim_to
        self.next_seq = seq
        if self.tps and out:
            self._starts.append((out[0].seq, before))
            if len(self._starts) > 2 * BATCH_MEMORY:
                del self._starts[:BATCH_MEMORY]
        if out:
            self._mem += out
            if len(self._mem) > 2 * self.memory_events:
                drop = len(self._mem) - self.memory_events
                del self._mem[:drop]
                self._mem_base += drop
            self._changed.set()
            self._changed = asyncio.Event()
        return out

    def read(self, start: int, limit: int) -> list[SyncEvent]:
        """Up to ``limit`` events from id ``start`` on (the first may be later than ``start``
        when ``start`` was trimmed: compare to ``oldest``)."""
        start = max(start, self.oldest)
        if start >= self.next_seq:
            return []
        if start >= self._mem_base:
            i = start - self._mem_base
            return self._mem[i : i + limit]
        out: list[SyncEvent] = []
        end = min(self._mem_base, start + limit)
        it = self.db.iter()
        it.seek_for_prev(chunk_key(start))
        if not it.valid() or not it.key().startswith(CHUNK_PREFIX):
            it.seek(chunk_key(start))
        while it.valid() and it.key().startswith(CHUNK_PREFIX) and len(out) < limit:
            first = _SEQ.unpack(it.key()[1:])[0]
            if first >= end:
                break
            srcs: list[int] = []
            if self.tps:
                raw = self.db.get(SOURCE_PREFIX + _SEQ.pack(first))
                srcs = _srcs_dec.decode(raw) if raw else []
            rows = _rows_dec.decode(it.value())
            for j, (kind, order_id, sku, channel, body) in enumerate(rows):
                seq = first + j
                if start <= seq < end:
                    src = srcs[j] if j < len(srcs) else 0
                    out.append(SyncEvent(seq, kind, order_id, sku, channel, body, src))
            it.next()
        del it
        out = out[:limit]
        if len(out) < limit and end == self._mem_base:
            out += self._mem[: limit - len(out)]
        return out

    # -- a cluster's positions ----------------------------------------------------------------

    def set_epoch(self, epoch: str) -> None:
        """A broker epoch begins (offsets start again): positions are of this epoch from here."""
        if epoch == self.epoch or not self.tps:
            return
        self.epoch, self.epoch_start, self.last_pos = epoch, self.next_seq, [0] * self.tps
        self._starts.clear()  # the old epoch's start cursors name positions that mean nothing
        self.db.put(CURSOR_KEY, _rows.encode((epoch, self.epoch_start, self.last_pos)))

    def cursor_now(self) -> str:
        """The position after every event this log holds.

        A new registration that wants "events from now on" stores this instead of an event
        id, so that whichever node later delivers it starts at the same place."""
        return Cursor(self.epoch, self.last_pos).format()

    def start_for(self, text: str) -> tuple[int, Cursor, bool]:
        """Where to read from for a position named on any node.

        Returns the first event id to read (every event before it was seen), the position
        itself (events after that id that were seen, interleaved differently on the node that
        made the position, are skipped with ``Cursor.delivered``; ``Cursor.step`` then carries
        it on), and False when some of what it has not seen is no longer kept (a reset notice
        is due). Raises CursorError for text that is not a position of this service.

        The start is the first event of the newest append whose start cursor is <= the
        position in every partition: start cursors only grow, so that append is found by a
        binary search over the recent ones in memory, else by walking back over the stored
        ones (a resume that far back streams many more events than it walks). Only the stretch
        no start cursor covers (a log written before they were kept, or the append the
        retention cut through) is found by looking at the events themselves.
        """
        cursor = parse(text, self.epoch, self.tps)
        if cursor is None:  # another epoch's positions: everything of this one is new
            start = max(self.epoch_start, self.oldest)
            return start, Cursor(self.epoch, [0] * self.tps), start == self.epoch_start
        want = cursor.next
        if all(w >= last for w, last in zip(want, self.last_pos, strict=True)):
            return self.next_seq, cursor, True  # it has seen everything here
        floor = max(self.epoch_start, self.oldest)
        above: tuple[int, tuple[int, ...]] = (self.next_seq, tuple(self.last_pos))
        found: tuple[int, tuple[int, ...]] | None = None
        starts = self._starts
        lo, hi = 0, len(starts)  # starts[:lo] are <= want, starts[hi:] are not
        while lo < hi:
            mid = (lo + hi) // 2
            if _covers(want, starts[mid][1]):
                lo = mid + 1
            else:
                hi = mid
        if hi < len(starts):
            above = starts[hi]
        if hi > 0:
            found = starts[hi - 1]
        else:
            for entry in self._stored_starts(starts[0][0] if starts else above[0], floor):
                if _covers(want, entry[1]):
                    found = entry
                    break
                above = entry
        if found is not None and found[0] >= floor:
            return found[0], cursor, True
        # what it has not seen begins before ``above``, in a stretch no start cursor covers
        pending = {tp for tp in range(self.tps) if above[1][tp] > want[tp]}
        return self._scan_back(cursor, pending, floor, above[0])

    def _stored_starts(self, before: int, floor: int) -> Iterator[tuple[int, tuple[int, ...]]]:
        """The stored start cursors of appends that began before ``before`` and not before
        ``floor`` (older ones are another epoch's), newest first."""
        it = self.db.iter()
        try:
            it.seek_for_prev(BATCH_PREFIX + _SEQ.pack(max(0, before - 1)))
            while it.valid() and it.key().startswith(BATCH_PREFIX):
                first = _SEQ.unpack(it.key()[len(BATCH_PREFIX) :])[0]
                if first < floor or first >= before:
                    return
                vector = tuple(_srcs_dec.decode(it.value()))
                if len(vector) != self.tps:
                    return
                yield first, vector
                it.prev()
        finally:
            del it

    def _scan_back(
        self, cursor: Cursor, pending: set[int], floor: int, hi: int
    ) -> tuple[int, Cursor, bool]:
        """The first unseen event below ``hi`` of the ``pending`` partitions, from the events:
        walk back until each shows one it has seen (or the epoch's or the log's beginning)."""
        start = hi
        while pending and hi > floor:
            lo = max(floor, hi - 5000)
            for ev in reversed(self.read(lo, hi - lo)):
                tp, pos = split(ev.src)
                if tp not in pending:
                    continue
                if pos < cursor.next[tp]:
                    pending.discard(tp)
                    if not pending:
                        break
                else:
                    start = ev.seq
            hi = lo
        if pending:  # unseen events back to the epoch's start, or older than the log keeps
            return floor, cursor, floor == self.epoch_start
        return start, cursor, True

    async def wait_after(self, start: int, timeout: float) -> bool:
        """Wait until an event with id >= ``start`` exists; False on timeout."""
        if start < self.next_seq:
            return True
        try:
            await asyncio.wait_for(self._changed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def close(self) -> None:
        self.db.close()


def _covers(want: list[int], before: tuple[int, ...]) -> bool:
    """Whether a position has seen everything before an append that started at ``before``."""
    return all(b <= w for b, w in zip(before, want, strict=True))
