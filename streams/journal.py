"""The ingest journal: what the HTTP endpoint accepted, durable before it answers 202.

An entry stays until a terminal stage (order state or dead letters) has *recorded* it, not
merely until the broker acknowledged it: the embedded broker keeps topics in memory, so after a
broker restart the forwarder replays every entry still here, and the order stage ignores what it
already has (global ids are deterministic).

Writes are group-committed: concurrent requests share one RocksDB WriteBatch and one fsync, done
in a worker thread so the event loop keeps accepting while the disk syncs.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import msgspec
from rocksdict import Options, Rdict, WriteBatch, WriteOptions

log = logging.getLogger("orderstream.journal")

_ENTRY = b"e"
_META_ID = b"m:id"


class JournalEntry(msgspec.Struct, array_like=True):
    channel: str
    payload: bytes
    received_at: int  # epoch ms
    order_id: str = ""  # "" when the payload was refused at the door (see rejection)
    # Set when the HTTP layer refused the payload (malformed JSON, no order number): it is
    # still journaled so that it reaches the dead-letter topic with its reason.
    rejection: tuple[str, str] | None = None  # (field, reason)


class JournalFull(Exception):
    """The journal holds ``max_entries`` unsettled orders: refuse with 503 + Retry-After."""


def _key(seq: int) -> bytes:
    return _ENTRY + seq.to_bytes(8, "big")


class IngestJournal:
    def __init__(self, path: Path, max_entries: int, fsync: bool = True) -> None:
        path.mkdir(parents=True, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        self.db = Rdict(str(path), opts)
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
        self.depth, last = self._scan()
        self.next_seq = last + 1
        # Highest seq on disk. Seqs are handed out before the group commit lands, so readers
        # (the forwarder) must never look past this one.
        self.durable_seq = last
        self._pending: WriteBatch | None = None
        self._pending_count = 0
        self._pending_last = last
        self._pending_waiters: list[asyncio.Future[None]] = []
        self._flushing = False
        self._closed = False
        log.info("ingest journal %s at %s: %d unsettled entries", self.id, path, self.depth)

    def _scan(self) -> tuple[int, int]:
        count, last = 0, 0
        it = self.db.iter()
        it.seek(_ENTRY)
        while it.valid():
            key = it.key()
            if not key.startswith(_ENTRY):
                break
            count += 1
            last = int.from_bytes(key[1:], "big")
            it.next()
        return count, last

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
        for i, entry in enumerate(entries):
            self._pending.put(_key(first + i), enc(entry))
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
                self._pending, self._pending_waiters = None, []
                try:
                    await loop.run_in_executor(None, self.db.write, batch, self._write_opts)
                except Exception as exc:  # disk full, I/O error: the caller must not say 202
                    log.exception("journal write failed")
                    self.depth -= count
                    for w in waiters:
                        if not w.done():
                            w.set_exception(exc)
                    continue
                self.durable_seq = last
                for w in waiters:
                    if not w.done():
                        w.set_result(None)
        finally:
            self._flushing = False

    # -- forwarding and trimming -----------------------------------------------------------------

    def read_after(self, seq: int, limit: int) -> list[tuple[int, JournalEntry]]:
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

    def settle(self, seqs: list[int]) -> int:
        """Delete entries a terminal stage recorded; repeats (after a replay) are harmless."""
        # A replay can put the same entry twice in one settle: count each entry once.
        keys = [_key(s) for s in set(seqs)]
        present = self.db.get(keys)
        batch = WriteBatch(raw_mode=True)
        n = 0
        for key, value in zip(keys, present, strict=True):
            if value is not None:
                batch.delete(key)
                n += 1
        if n:
            self.db.write(batch)
            self.depth -= n
        return n

    def get(self, seq: int) -> JournalEntry | None:
        raw = self.db.get(_key(seq))
        return None if raw is None else self._dec.decode(raw)

    async def close(self) -> None:
        self._closed = True
        while self._flushing:
            await asyncio.sleep(0.01)
        self.db.close()
