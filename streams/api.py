"""The HTTP API: ingest (answers 202 once the journal has the order on disk) and queries.

Ingest does the least work that still lets it answer with the global id and refuse what can never
become an order: decode the JSON, pull the channel order number, compute the id, journal. Full
normalisation happens in the stream (normalise stage), where rejections become dead letters.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from core.channels import ADAPTERS
from core.framing import split_orders
from core.model import Rejection, global_order_id
from streams import metrics
from streams.journal import IngestJournal, JournalEntry, JournalFull

log = logging.getLogger("orderstream.api")


class Accepted(msgspec.Struct, omit_defaults=True):
    status: str
    id: str | None = None
    order_no: str | None = None
    line: int | None = None
    field: str | None = None
    reason: str | None = None


_json = msgspec.json.Encoder()


class _Children(dict):  # type: ignore[type-arg]
    """A metric's labelled children, looked up once each (labels() takes a lock every call).

    Filled on first use, as labels() would: a series appears once it is first counted.
    """

    def __init__(self, metric: Any, *fixed: str) -> None:
        super().__init__()
        self.metric = metric
        self.fixed = fixed

    def __missing__(self, label: str) -> Any:
        child = self[label] = self.metric.labels(label, *self.fixed)
        return child


_REFUSED = _Children(metrics.HTTP_REFUSED)
_INGESTED = _Children(metrics.INGESTED, "http")


def _error(status: int, field: str, reason: str, **extra: Any) -> web.Response:
    body = {"error": {"field": field, "reason": reason}, **extra}
    return web.Response(status=status, body=_json.encode(body), content_type="application/json")


class IngestAPI:
    def __init__(
        self,
        journal: IngestJournal,
        on_accept: Any,
        worker_urls: list[str],
        retry_after_s: int,
        max_body_bytes: int,
    ) -> None:
        self.journal = journal
        self.on_accept = on_accept  # wakes the forwarder
        self.worker_urls = worker_urls
        self.retry_after_s = retry_after_s
        self.max_body_bytes = max_body_bytes
        self.session: aiohttp.ClientSession | None = None
        self.started = time.monotonic()
        self.status: dict[str, Any] = {}

    def build(self) -> web.Application:
        app = web.Application(client_max_size=self.max_body_bytes)
        app.add_routes(
            [
                web.post("/v1/orders", self.post_orders),
                web.get("/v1/orders/{order_id}", self.get_order),
                web.get("/v1/dead-letters", self.get_dead_letters),
                web.get("/metrics", self.get_metrics),
                web.get("/health", self.get_health),
            ]
        )
        app.on_cleanup.append(self._close_session)
        return app

    async def _close_session(self, _: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    # -- ingest ----------------------------------------------------------------------------------

    async def post_orders(self, request: web.Request) -> web.Response:
        channel = request.headers.get("X-Channel", "").strip().lower()
        if not channel:
            _REFUSED["no_channel"].inc()
            return _error(400, "header X-Channel", f"required; one of {sorted(ADAPTERS)}")
        adapter = ADAPTERS.get(channel)
        if adapter is None:
            _REFUSED["unknown_channel"].inc()
            return _error(
                400, "header X-Channel", f"unknown channel {channel!r}; one of {sorted(ADAPTERS)}"
            )
        body = await request.read()
        if not body.strip():
            _REFUSED["empty_body"].inc()
            return _error(400, "$", "empty body: send one JSON order, or NDJSON (one per line)")
        framed, batch = split_orders(body, request.content_type)
        lines = [(n, payload, adapter.order_no(payload)) for n, payload in framed]
        now = time.time_ns() // 1_000_000
        entries: list[JournalEntry] = []
        results: list[Accepted] = []
        add_entry, add_result = entries.append, results.append
        accepted = 0
        for line_no, payload, found in lines:
            if isinstance(found, Rejection):
                add_entry(JournalEntry(channel, payload, now, "", (found.field, found.reason)))
                add_result(
                    Accepted(
                        "rejected",
                        line=line_no if batch else None,
                        field=found.field,
                        reason=found.reason,
                    )
                )
            else:
                oid = global_order_id(channel, found)
                add_entry(JournalEntry(channel, payload, now, oid))
                add_result(Accepted("accepted", id=oid, order_no=found))
                accepted += 1
        try:
            await self.journal.append(entries)
        except JournalFull as exc:
            _REFUSED["journal_full"].inc()
            resp = _error(503, "journal", f"{exc}; retry later, nothing of this request was kept")
            resp.headers["Retry-After"] = str(self.retry_after_s)
            return resp
        except Exception as exc:  # disk error: nothing was kept, so never answer 202
            log.error("journal append failed: %s", exc)
            _REFUSED["journal_error"].inc()
            resp = _error(503, "journal", f"could not store the request durably: {exc}")
            resp.headers["Retry-After"] = str(self.retry_after_s)
            return resp
        self.on_accept()
        rejected = len(results) - accepted
        _INGESTED[channel].inc(accepted)
        if rejected:
            _REFUSED["unparseable_order"].inc(rejected)
        status = 202 if accepted else 400
        if not batch:
            r = results[0]
            if r.status == "accepted":
                return web.Response(
                    status=202, body=_json.encode(r), content_type="application/json"
                )
            return _error(400, r.field or "$", r.reason or "", dead_lettered=True)
        out = _json.encode_lines(results)  # one JSON document per line, each ending in \n
        return web.Response(
            status=status,
            body=out,
            content_type="application/x-ndjson",
            headers={"X-Accepted": str(accepted), "X-Rejected": str(rejected)},
        )

    # -- queries ---------------------------------------------------------------------------------

    async def _workers(self, path: str) -> list[tuple[int, bytes]]:
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))

        async def one(base: str) -> tuple[int, bytes]:
            try:
                async with self.session.get(base + path) as resp:  # type: ignore[union-attr]
                    return resp.status, await resp.read()
            except (TimeoutError, aiohttp.ClientError):
                return 599, b""

        return list(await asyncio.gather(*(one(u) for u in self.worker_urls)))

    async def get_order(self, request: web.Request) -> web.Response:
        oid = request.match_info["order_id"]
        answers = await self._workers(f"/internal/orders/{oid}")
        for status, body in answers:
            if status == 200:
                return web.Response(body=body, content_type="application/json")
        if any(status != 404 for status, _ in answers):
            resp = _error(503, "order_id", "a worker that may hold this order is not answering")
            resp.headers["Retry-After"] = "1"
            return resp
        return _error(
            404,
            "order_id",
            "no recorded order with this id (unknown, or accepted and not yet processed)",
        )

    async def get_dead_letters(self, request: web.Request) -> web.Response:
        try:
            limit = max(1, min(int(request.query.get("limit", "100")), 1000))
        except ValueError:
            return _error(400, "limit", "must be an integer 1..1000")
        rows: list[dict[str, Any]] = []
        for status, body in await self._workers(f"/internal/dead-letters?limit={limit}"):
            if status == 200:
                rows += msgspec.json.decode(body)
        rows.sort(key=lambda r: r["received_at"], reverse=True)
        return web.Response(body=_json.encode(rows[:limit]), content_type="application/json")

    async def get_metrics(self, request: web.Request) -> web.Response:
        metrics.JOURNAL_DEPTH.set(self.journal.depth)
        body, ctype = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": ctype})

    async def get_health(self, request: web.Request) -> web.Response:
        workers = []
        for status, body in await self._workers("/internal/health"):
            workers.append(msgspec.json.decode(body) if status == 200 else {"up": False})
        return web.Response(
            body=_json.encode(
                {**self.status, "journal_depth": self.journal.depth, "workers": workers}
            ),
            content_type="application/json",
        )
