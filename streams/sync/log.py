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
one (``start_for``, ``streams.sync.cursor``).
"""

from __future__ import annotations

import asyncio
import struct
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
            batch.put(OLDEST_KEY, _SEQ.pack(trim_to))
        self.db.write(batch, self._write_opts)
        if trim_to > self.oldest:
            self.oldest = trim_to
        self.next_seq = seq
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
        self.db.put(CURSOR_KEY, _rows.encode((epoch, self.epoch_start, self.last_pos)))

    def cursor_now(self) -> str:
        """The position after every event this log holds: "from now on"."""
        return Cursor(self.epoch, self.last_pos).format()

    def start_for(self, text: str) -> tuple[int, Cursor, bool]:
        """Where to read from for a position named on any node: the first event it has not
        seen, and the position itself (events after that one it has seen are skipped with
        ``Cursor.delivered``), and False when some of what it has not seen is no longer kept
        (a reset). Raises CursorError for text that is not a position.

        Per partition the unseen events are the newest ones, so the search walks back from
        the head until each partition with unseen events shows one seen (or the epoch's or the
        log's beginning): that is about as far back as the client is behind.
        """
        cursor = parse(text, self.epoch, self.tps)
        if cursor is None:  # another epoch's positions: everything of this one is new
            start = max(self.epoch_start, self.oldest)
            return start, Cursor(self.epoch, [0] * self.tps), start == self.epoch_start
        pending = {tp for tp in range(self.tps) if cursor.next[tp] < self.last_pos[tp]}
        start = self.next_seq
        floor = max(self.epoch_start, self.oldest)
        hi = self.next_seq
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
