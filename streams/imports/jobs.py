"""Import jobs: an uploaded export, stored durably, then admitted order by order with a report.

The upload is on disk (fsynced) before the service answers, like an order in the journal: a
crash after "accepted" resumes the import from its last admitted row instead of losing it.
Rows are read and grouped in a worker thread, a chunk at a time, so the event loop keeps
answering webhooks while a 100 MB file goes through. Before a chunk is admitted the workers are
asked which of its orders they hold (and their ``updated_at``), which is what the report needs:
missing (now ingested), known (adds nothing: the re-delivery rule makes it a duplicate copy) and
newer (updates the held order).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import msgspec

from core.channels import ADAPTERS
from core.exports import FORMATS, HeaderError, ImportedOrder, columns, orders
from core.model import Limits, global_order_id
from streams import metrics
from streams.imports.files import FileError, Table, open_table
from streams.ingest.admit import admit, rejected
from streams.ingest.held import AskWorkers, held_orders
from streams.ingest.journal import IngestJournal, JournalEntry, JournalFull

log = logging.getLogger("orderstream.imports")

CHUNK_ORDERS = 2000  # orders per admission: one journal commit, one ownership question
PROBLEMS_KEPT = 100  # bad rows listed in the report (all of them go to the dead letters)

ImportState = Literal["stored", "importing", "done", "failed"]


class UploadRefused(Exception):
    """The upload cannot be an import (too large, empty): nothing of it is kept."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


class Problem(msgspec.Struct):
    row: int
    column: str
    reason: str


class ImportStatus(msgspec.Struct, kw_only=True):
    id: str
    channel: str
    filename: str
    bytes: int
    state: ImportState = "stored"
    created_at: int  # epoch ms
    started_at: int = 0
    finished_at: int = 0
    kind: str = ""  # csv, tsv, xlsx
    encoding: str = ""
    progress: float = 0.0  # share of the file read, 0..1
    rows: int = 0
    orders: int = 0
    accepted: int = 0
    rejected: int = 0  # bad rows' orders: in the dead letters, named by row and column
    missing: int = 0  # not in orderstream before this import: now ingested
    known: int = 0  # held already, same or older version: a duplicate copy, nothing added
    newer: int = 0  # held already, the file is newer: the held order is updated
    unchecked: int = 0  # admitted while no worker owned their partition: not classified
    rows_per_s: float = 0.0
    eta_s: float | None = None
    error: str = ""  # why the whole file failed (header, encoding)
    problems: list[Problem] = []
    resume_row: int = 0  # rows up to here are admitted (a restart skips them)


_decode_status = msgspec.json.Decoder(ImportStatus).decode
_encode = msgspec.json.Encoder().encode


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class Imports:
    def __init__(
        self,
        root: Path,
        journal: IngestJournal,
        on_accept: Callable[[], None],
        ask_workers: AskWorkers,
        limits: Limits,
        retry_after_s: float = 1.0,
    ) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.journal = journal
        self.on_accept = on_accept
        self.ask_workers = ask_workers
        self.limits = limits
        self.retry_after_s = retry_after_s
        self.jobs: dict[str, ImportStatus] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        for status_file in sorted(root.glob("*/status.json")):
            try:
                job = _decode_status(status_file.read_bytes())
            except (OSError, msgspec.DecodeError) as exc:
                log.error("import status %s unreadable (%s): skipped", status_file, exc)
                continue
            self.jobs[job.id] = job

    # -- files -----------------------------------------------------------------------------------

    def _dir(self, job_id: str) -> Path:
        return self.root / job_id

    def _save(self, job: ImportStatus) -> None:
        _write_atomic(self._dir(job.id) / "status.json", _encode(job))

    async def receive(
        self, channel: str, filename: str, chunks: Callable[[], object], max_bytes: int
    ) -> ImportStatus:
        """Store an upload (``chunks`` is an async iterator of bytes) and start its import.

        Raises ``UploadRefused`` for an upload over ``max_bytes`` or an empty one."""
        job_id = "imp_" + uuid.uuid4().hex[:16]
        folder = self._dir(job_id)
        folder.mkdir(parents=True)
        path = folder / "file"
        size = 0
        try:
            with path.open("wb") as f:
                async for chunk in chunks():  # type: ignore[attr-defined]
                    size += len(chunk)
                    if size > max_bytes:
                        raise UploadRefused(413, f"over {max_bytes:,} bytes (import_max_bytes)")
                    f.write(chunk)
                f.flush()
                await asyncio.to_thread(os.fsync, f.fileno())
            if size == 0:
                raise UploadRefused(400, "empty: send the export file as the request body")
        except BaseException:
            for p in folder.iterdir():
                p.unlink()
            folder.rmdir()
            raise
        job = ImportStatus(
            id=job_id,
            channel=channel,
            filename=filename,
            bytes=size,
            created_at=time.time_ns() // 1_000_000,
        )
        self._save(job)
        self.jobs[job_id] = job
        self.start(job_id)
        return job

    def start(self, job_id: str) -> None:
        self.tasks[job_id] = asyncio.create_task(self._run(job_id), name=f"import-{job_id}")

    def resume(self) -> None:
        """Imports the service accepted but had not finished when it stopped go on."""
        for job in self.jobs.values():
            if job.state in ("stored", "importing") and job.id not in self.tasks:
                log.info(
                    "import %s (%s) resumes after row %d", job.id, job.filename, job.resume_row
                )
                self.start(job.id)

    async def stop(self) -> None:
        for task in self.tasks.values():
            task.cancel()
        for task in self.tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    def listing(self) -> list[ImportStatus]:
        return sorted(self.jobs.values(), key=lambda j: j.created_at, reverse=True)

    # -- the import ------------------------------------------------------------------------------

    async def _run(self, job_id: str) -> None:
        job = self.jobs[job_id]
        fmt = FORMATS[job.channel]
        table: Table | None = None
        try:
            table = await asyncio.to_thread(open_table, self._dir(job_id) / "file")
            cols = columns(fmt, table.header)
            job.kind, job.encoding = table.kind, table.encoding
            job.state = "importing"
            job.started_at = job.started_at or time.time_ns() // 1_000_000
            self._save(job)
            stream = orders(fmt, cols, table.rows)
            started = time.monotonic()
            rows_at_start = job.rows
            while True:
                chunk = await asyncio.to_thread(_take, stream, CHUNK_ORDERS)
                if not chunk:
                    break
                fresh = [o for o in chunk if o.last_row > job.resume_row]
                if fresh:
                    await self._admit(job, fresh)
                job.resume_row = max(job.resume_row, chunk[-1].last_row)
                job.rows = job.resume_row - 1  # data rows: the header is row 1
                job.progress = table.progress()
                elapsed = time.monotonic() - started
                if elapsed > 0:
                    job.rows_per_s = round((job.rows - rows_at_start) / elapsed, 1)
                    done = max(job.progress, 1e-9)
                    job.eta_s = round(elapsed * (1 - done) / done, 1) if done < 1 else 0.0
                self._save(job)
            job.state, job.progress, job.eta_s = "done", 1.0, 0.0
        except (HeaderError, FileError) as exc:
            job.state, job.error = "failed", str(exc)
            log.warning("import %s (%s) failed: %s", job.id, job.filename, exc)
        except asyncio.CancelledError:
            raise  # stopping: the status on disk says where to resume
        except Exception as exc:
            job.state, job.error = "failed", f"{type(exc).__name__}: {exc}"
            log.exception("import %s (%s) failed", job.id, job.filename)
        finally:
            if table is not None:
                table.close()
            self.tasks.pop(job_id, None)
        job.finished_at = time.time_ns() // 1_000_000
        self._save(job)
        log.info(
            "import %s (%s): %s, %d rows, %d orders (%d missing, %d known, %d newer, %d rejected)",
            job.id,
            job.filename,
            job.state,
            job.rows,
            job.orders,
            job.missing,
            job.known,
            job.newer,
            job.rejected,
        )

    async def _admit(self, job: ImportStatus, chunk: list[ImportedOrder]) -> None:
        channel = job.channel
        now = time.time_ns() // 1_000_000
        good = [o for o in chunk if o.payload]
        ids = [global_order_id(channel, o.order_no) for o in good]
        held, unchecked = await held_orders(self.ask_workers, ids)
        entries, results = admit(
            channel,
            ADAPTERS[channel],
            ((o.first_row, o.payload) for o in good),
            self.limits,
            now,
        )
        outcomes: dict[str, int] = {}
        for o, oid, r in zip(good, ids, results, strict=True):
            if r.status != "accepted":
                outcome = "rejected"
                self._problem(job, o.first_row, r.field or "$", r.reason or "")
            elif oid in unchecked:
                outcome = "unchecked"
            elif oid not in held:
                outcome = "missing"
            elif o.updated_at > held[oid].updated_at:
                outcome = "newer"
            else:
                outcome = "known"
            outcomes[outcome] = outcomes.get(outcome, 0) + 1
        for o in chunk:
            if not o.payload:
                where = f"{job.filename} row {o.first_row}, column {o.column!r}"
                entries.append(rejected(channel, o.raw, where, o.reason, now))
                outcomes["rejected"] = outcomes.get("rejected", 0) + 1
                self._problem(job, o.first_row, o.column, o.reason)
        await self._append(entries)
        job.orders += len(chunk)
        job.accepted += sum(1 for r in results if r.status == "accepted")
        for outcome, n in outcomes.items():
            setattr(job, outcome, getattr(job, outcome) + n)
            metrics.IMPORTED.labels(channel, outcome).inc(n)

    def _problem(self, job: ImportStatus, row: int, column: str, reason: str) -> None:
        if len(job.problems) < PROBLEMS_KEPT:
            job.problems.append(Problem(row, column, reason))

    async def _append(self, entries: list[JournalEntry]) -> None:
        """Into the journal, waiting while it is full: an import is a backlog, never a refusal."""
        while True:
            try:
                await self.journal.append(entries)
            except JournalFull:
                await asyncio.sleep(self.retry_after_s)
                continue
            self.on_accept()
            return


def _take(stream: Iterator[ImportedOrder], n: int) -> list[ImportedOrder]:
    out: list[ImportedOrder] = []
    for order in stream:
        out.append(order)
        if len(out) >= n:
            break
    return out
