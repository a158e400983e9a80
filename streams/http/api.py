"""The HTTP API: ingest (answers 202 once the journal has the order on disk) and queries.

Ingest does the least work that still lets it answer with the global id and refuse what can never
become an order: decode the JSON, pull the channel order number, compute the id, journal. Full
normalisation happens in the stream (normalise stage), where rejections become dead letters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import urllib.parse
from typing import Any

import aiohttp
import msgspec
from aiohttp import web

from core.channels import ADAPTERS
from core.framing import TooManyLines, split_orders
from core.inventory import StockAdjustment, partition_key
from core.model import Limits, global_order_id, is_global_order_id
from core.skus import SkuCatalog
from core.state_machine import EventError, validate_event
from ext import kafka_partition
from streams import metrics
from streams.cluster import peers as cluster_peers
from streams.cluster.members import Membership
from streams.cluster.peers import NO_ANSWER, Answers, Peers
from streams.http.auth import KEY
from streams.http.errors import error, json_object
from streams.ingest.admit import admit
from streams.ingest.journal import IngestJournal, JournalFull
from streams.ingest.replays import Replay, ReplayLog
from streams.kafka.topics import DLQ, RESERVE, UNIQUE
from streams.stages import dead_letters, order_state

log = logging.getLogger("orderstream.api")


_json = msgspec.json.Encoder()


class _NotFound(msgspec.Struct):
    searched: list[str] = []


_searched = msgspec.json.Decoder(_NotFound)


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
# where an order id can be found: its record, or its dead letter (each partition has one owner)
ORDER_STORES = frozenset({order_state.STORE, dead_letters.STORE})


def _not_an_id() -> web.Response:
    return error(
        404,
        "order_id",
        "not an orderstream order id (os_ + 24 hex digits); by channel and its"
        " order number: GET /v1/orders?channel=...&order_no=...",
    )


# Raised by the service (timers, the reservation saga, dedup): a client sending them would forge
# what the service decides.
SYSTEM_EVENTS = frozenset({"payment_timeout", "stock_refused", "mark_duplicate"})
# Adjustment quantities that can never be right, answered 400 before they reach the ledger.
_QUANTITY_RULES = {
    "set": (lambda q: q >= 0, "on_hand must be >= 0"),
    "safety": (lambda q: q >= 0, "safety must be >= 0"),
    "alert_at": (lambda q: q >= 0, "alert_at must be >= 0"),
    "hold": (lambda q: q >= 0, "a hold must be >= 0 (0 clears it)"),
    "receipt": (lambda q: q > 0, "a receipt must be > 0"),
    "correction": (lambda q: q != 0, "a correction must not be 0"),
}
_FIELD_OF = {"set": "on_hand", "safety": "safety", "alert_at": "alert_at", "hold": "holds"}


# Sources of an event that say a person acted (the console sends "console"); events from
# systems (wms, carrier, payment, api integrations) are the flow itself, not an intervention.
MANUAL_SOURCES = frozenset({"manual", "console", "operator"})


def _actor(request: web.Request, default: str) -> str:
    """Who is audited: X-Actor when the caller names a person, else the API key's name."""
    named = request.headers.get("X-Actor", "").strip()[:200]
    if named:
        return named
    key = request.get(KEY)
    return key.name if key is not None else default


def _counted(resp: web.Response, kind: str) -> web.Response:
    """A person's action that took effect counts toward manual interventions per 1,000 orders."""
    if resp.status == 200:
        metrics.MANUAL_INTERVENTIONS.labels(kind).inc()
    return resp


def _quote(segment: str) -> str:
    return urllib.parse.quote(segment, safe="")


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
        self.warehouses: frozenset[str] = frozenset()  # declared by the routing table (if any)
        # stock is kept under canonical SKUs, as orders name them: an alias in a stock call
        # must reach the same record, never create a second one nobody orders from
        self.skus = SkuCatalog()
        self.status: dict[str, Any] = {}
        self.replays: ReplayLog | None = None  # set by the service: replays of dead letters
        self.lights = (2.0, 6.0)  # the console's red / yellow thresholds, hours before ship-by
        # per-request and per-order bounds (settings max_batch_lines, max_order_bytes, ...)
        self.limits = Limits()
        # many nodes, one service (an external cluster): who holds which partition, and how
        # to ask another node's workers; None on one machine
        self.members: Membership | None = None
        self.peers: Peers | None = None
        self.partitions = 1

    def build(self) -> web.Application:
        # the body limit's middleware comes first, so it also answers for a body another
        # middleware (a channel's signature check) reads
        app = web.Application(client_max_size=self.max_body_bytes, middlewares=[self._body_limit])
        app.add_routes(
            [
                web.post("/v1/orders", self.post_orders),
                web.get("/v1/orders", self.find_order),
                web.get("/v1/orders/{order_id}", self.get_order),
                web.post("/v1/orders/{order_id}/events", self.post_event),
                web.get("/v1/orders/{order_id}/history", self.get_history),
                web.get("/v1/dead-letters", self.get_dead_letters),
                web.post("/v1/dead-letters/{key}/replay", self.post_replay),
                web.get("/v1/review", self.get_review),
                web.get("/v1/stock-audit", self.get_stock_audit),
                web.get("/v1/stock", self.list_stock),
                web.get("/v1/sla", self.get_sla),
                web.get("/v1/whoami", self.whoami),
                web.get("/v1/stock/{sku}", self.get_stock),
                web.put("/v1/stock/{sku}", self.put_stock),
                web.post("/v1/stock/{sku}/receipts", self.post_stock_receipt),
                web.post("/v1/stock/{sku}/corrections", self.post_stock_correction),
                web.post("/v1/review/{order_id}/{decision}", self.post_review),
                web.get("/metrics", self.get_metrics),
                web.get("/health", self.get_health),
                web.get("/v1/cluster", self.get_cluster),
                web.post(cluster_peers.WORKERS_PATH, self.post_cluster_workers),
                web.get(cluster_peers.ACCEPTED_PATH + "{order_id}", self.get_cluster_accepted),
            ]
        )
        app.on_cleanup.append(self._close_session)
        return app

    async def _close_session(self, _: web.Application) -> None:
        if self.session is not None:
            await self.session.close()

    # -- ingest ----------------------------------------------------------------------------------

    @web.middleware
    async def _body_limit(self, request: web.Request, handler: Any) -> web.StreamResponse:
        """413 with a JSON error naming the limit, for any endpoint: at once when the declared
        length is over it (nothing is read), else when reading passes it (chunked bodies)."""
        if request.path == "/v1/imports":  # a file upload streams to disk under its own limit
            return await handler(request)
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            return self._body_too_large(f"{length:,} bytes")
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return self._body_too_large("more")

    def _body_too_large(self, size: str) -> web.Response:
        _REFUSED["body_too_large"].inc()
        return error(
            413,
            "body",
            f"request body of {size}; at most {self.max_body_bytes:,} bytes (max_body_bytes):"
            " send fewer orders per request",
        )

    async def post_orders(self, request: web.Request) -> web.Response:
        channel = request.headers.get("X-Channel", "").strip().lower()
        if not channel:
            _REFUSED["no_channel"].inc()
            return error(400, "header X-Channel", f"required; one of {sorted(ADAPTERS)}")
        adapter = ADAPTERS.get(channel)
        if adapter is None:
            _REFUSED["unknown_channel"].inc()
            return error(
                400, "header X-Channel", f"unknown channel {channel!r}; one of {sorted(ADAPTERS)}"
            )
        body = await request.read()
        if not body.strip():
            _REFUSED["empty_body"].inc()
            return error(400, "$", "empty body: send one JSON order, or NDJSON (one per line)")
        limits = self.limits
        try:
            framed, batch = split_orders(body, request.content_type, limits.max_batch_lines)
        except TooManyLines as exc:
            _REFUSED["too_many_lines"].inc()
            return error(413, "body", f"{exc} (max_batch_lines): split the batch")
        # a gateway that knows an order is urgent (a VIP live-stream buyer) says so up front:
        # it rides the priority lane from the first topic on
        urgent = request.headers.get("X-Priority", "").strip().lower() == "high"
        now = time.time_ns() // 1_000_000
        entries, results = admit(
            channel,
            adapter,
            ((n if batch else None, p) for n, p in framed),
            limits,
            now,
            urgent,
        )
        accepted = sum(1 for e in entries if e.rejection is None)
        try:
            await self.journal.append(entries)
        except JournalFull as exc:
            _REFUSED["journal_full"].inc()
            resp = error(503, "journal", f"{exc}; retry later, nothing of this request was kept")
            resp.headers["Retry-After"] = str(self.retry_after_s)
            return resp
        except Exception as exc:  # disk error: nothing was kept, so never answer 202
            log.error("journal append failed: %s", exc)
            _REFUSED["journal_error"].inc()
            resp = error(503, "journal", f"could not store the request durably: {exc}")
            resp.headers["Retry-After"] = str(self.retry_after_s)
            return resp
        self.on_accept()
        rejected = len(results) - accepted
        _INGESTED[channel].inc(accepted)
        if rejected:
            _REFUSED["unparseable_order"].inc(rejected)
            metrics.DEAD_LETTERS.labels("ingest", channel).inc(rejected)
        status = 202 if accepted else 400
        if not batch:
            r = results[0]
            if r.status == "accepted":
                return web.Response(
                    status=202, body=_json.encode(r), content_type="application/json"
                )
            return error(400, r.field or "$", r.reason or "", dead_lettered=True)
        out = _json.encode_lines(results)  # one JSON document per line, each ending in \n
        return web.Response(
            status=status,
            body=out,
            content_type="application/x-ndjson",
            headers={"X-Accepted": str(accepted), "X-Rejected": str(rejected)},
        )

    # -- queries ---------------------------------------------------------------------------------

    async def ask_workers(self, path: str, body: bytes | None = None) -> Answers:
        """Ask every worker of the service (GET, or POST with ``body``): this node's, and on a
        cluster every other live node's; 599 stands for "did not answer"."""
        local = self.ask_local(path, body)
        if self.members is None or self.peers is None:
            return await local
        remote = self.peers.all_workers(self.members.peers(), path, body)
        mine, theirs = await asyncio.gather(local, remote)
        return mine + theirs

    async def ask_local(self, path: str, body: bytes | None = None) -> Answers:
        """Ask this node's workers (GET, or POST with ``body``); 599: did not answer."""
        if self.session is None:
            self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5))
        method = "GET" if body is None else "POST"

        async def one(base: str) -> tuple[int, bytes]:
            try:
                async with self.session.request(  # type: ignore[union-attr]
                    method, base + path, data=body
                ) as resp:
                    return resp.status, await resp.read()
            except (TimeoutError, aiohttp.ClientError):
                return 599, b""

        return list(await asyncio.gather(*(one(u) for u in self.worker_urls)))

    async def ask_owner(
        self, topic: str, partition: int, path: str, body: bytes | None = None
    ) -> Answers:
        """The answers of the workers of the node holding ``topic``'s ``partition``.

        On one machine that is this node. On a cluster the request goes straight to the owner
        the membership names; if that node no longer holds it (a rebalance moved it on) or does
        not answer, it is asked once more after the records had a moment to catch up, and then
        every node is asked.
        """
        members, peers = self.members, self.peers
        if members is None or peers is None:
            return await self.ask_local(path, body)
        for attempt in range(2):
            owner = members.owner(topic, partition)
            if owner is None:
                break
            if owner.node == members.node:
                answers = await self.ask_local(path, body)
            else:
                answers = await peers.workers(owner, path, body)
            if any(status not in (421, NO_ANSWER) for status, _ in answers):
                return answers
            if attempt == 0:
                await asyncio.sleep(0.3)
        return await self.ask_workers(path, body)

    async def _owner(
        self, path: str, body: bytes | None, topic: str, partition: int, what: tuple[str, str]
    ) -> web.Response:
        """The answer of the worker that owns the key's partition (the others answer 421);
        ``what`` names the key for an error: ("order_id", "order") or ("sku", "SKU")."""
        answers = await self.ask_owner(topic, partition, path, body)
        answers = [a for a in answers if a[0] != 421]
        if len(answers) != 1 or answers[0][0] == NO_ANSWER:
            field, noun = what
            reason = (
                f"no worker holds this {noun}'s partition ({partition}) right now"
                if not answers
                else f"the worker holding this {noun}'s partition ({partition}) is not answering"
            )
            resp = error(503, field, reason + "; retry shortly")
            resp.headers["Retry-After"] = "1"
            return resp
        status, payload = answers[0]
        return web.Response(status=status, body=payload, content_type="application/json")

    def _order_part(self, oid: str) -> int:
        return kafka_partition(oid.encode(), self.partitions)

    def _sku_part(self, sku: str) -> int:
        return kafka_partition(partition_key(sku), self.partitions)

    async def _order_owner(self, oid: str, path: str, body: bytes | None = None) -> web.Response:
        part = self._order_part(oid)
        return await self._owner(path, body, UNIQUE, part, ("order_id", "order"))

    async def _sku_owner(self, sku: str, path: str, body: bytes | None = None) -> web.Response:
        part = self._sku_part(sku)
        return await self._owner(path, body, RESERVE, part, ("sku", "SKU"))

    async def find_order(self, request: web.Request) -> web.Response:
        """``GET /v1/orders?channel=C&order_no=N``: what a merchant has is the channel's order
        number; the global id follows from it (``global_order_id``), so this is one lookup."""
        channel = request.query.get("channel", "").strip().lower()
        order_no = request.query.get("order_no", "").strip()
        if not channel:
            return error(400, "channel", f"required; one of {sorted(ADAPTERS)}")
        if channel not in ADAPTERS:
            return error(400, "channel", f"unknown channel {channel!r}; one of {sorted(ADAPTERS)}")
        if not order_no:
            return error(400, "order_no", "required: the channel's own order number")
        return await self._order(global_order_id(channel, order_no))

    async def get_order(self, request: web.Request) -> web.Response:
        oid = request.match_info["order_id"]
        if not is_global_order_id(oid):
            return _not_an_id()
        return await self._order(oid)

    async def _order(self, oid: str) -> web.Response:
        part = self._order_part(oid)
        path = f"/internal/orders/{oid}"
        answers = await self.ask_owner(UNIQUE, part, path)
        if self.members is not None and all(status != 200 for status, _ in answers):
            # a dead letter lives in the same partition number of its own topic: on another
            # node only while the assignment is out of step
            record, dead = self.members.owner(UNIQUE, part), self.members.owner(DLQ, part)
            if dead is not None and (record is None or dead.node != record.node):
                answers += await self.ask_owner(DLQ, part, path)
        searched: set[str] = set()
        for status, body in answers:
            if status == 200:
                return web.Response(body=body, content_type="application/json")
            if status == 404:
                with contextlib.suppress(msgspec.DecodeError):  # not the lookup's own 404
                    searched.update(_searched.decode(body).searched)
        if searched != ORDER_STORES:
            accepted = await self._accepted_anywhere(oid)
            if accepted is not None:  # known to be on its way, whoever owns its partition
                return accepted
            # a worker down, or a partition between owners (a rebalance after a worker crash):
            # "unknown" would be a guess, so say when to ask again
            resp = error(
                503, "order_id", "the partitions that may hold this order are changing owners"
            )
            resp.headers["Retry-After"] = "1"
            return resp
        accepted = await self._accepted_anywhere(oid)
        if accepted is not None:
            return accepted
        backlog = self.journal.depth
        return error(
            404,
            "order_id",
            "no order with this id: not recorded, and not among the recently accepted"
            + (f" ({backlog:,} accepted orders are still being processed)" if backlog else ""),
        )

    async def _accepted_anywhere(self, oid: str) -> web.Response | None:
        """Accepted by this node, or on a cluster by any node, and not recorded yet."""
        found = self._accepted(oid)
        if found is not None or self.members is None or self.peers is None:
            return found
        body = await self.peers.accepted(self.members.peers(), oid)
        if body is None:
            return None
        return web.Response(body=body, content_type="application/json")

    def _accepted(self, oid: str) -> web.Response | None:
        """An order accepted (durable in the journal) that no stage has recorded yet."""
        found = self.journal.find_recent(oid)
        if found is None:
            return None
        seq, entry = found
        body = {
            "id": oid,
            "state": "accepted",
            "channel": entry.channel,
            "received_at": entry.received_at,
            "journal": {"id": self.journal.id, "seq": seq},
        }
        return web.Response(body=_json.encode(body), content_type="application/json")

    async def get_dead_letters(self, request: web.Request) -> web.Response:
        try:
            limit = max(1, min(int(request.query.get("limit", "100")), 1000))
        except ValueError:
            return error(400, "limit", "must be an integer 1..1000")
        rows: list[dict[str, Any]] = []
        for status, body in await self.ask_workers(f"/internal/dead-letters?limit={limit}"):
            if status == 200:
                rows += msgspec.json.decode(body)
        rows.sort(key=lambda r: r["received_at"], reverse=True)
        if self.replays is not None:
            for row in rows:
                done = self.replays.get(row.get("key", ""))
                if done is not None:
                    row["replayed"] = done
        return web.Response(body=_json.encode(rows[:limit]), content_type="application/json")

    async def list_stock(self, request: web.Request) -> web.Response:
        """Every SKU's levels per warehouse, low-stock SKUs first."""
        try:
            limit = max(1, min(int(request.query.get("limit", "500")), 5000))
        except ValueError:
            return error(400, "limit", "must be an integer 1..5000")
        rows: list[dict[str, Any]] = []
        for status, body in await self.ask_workers(f"/internal/stock-levels?limit={limit}"):
            if status == 200:
                rows += msgspec.json.decode(body)
        rows.sort(key=lambda r: (not r["low"], r["sku"]))
        return web.Response(body=_json.encode(rows[:limit]), content_type="application/json")

    async def get_sla(self, request: web.Request) -> web.Response:
        """Orders with armed SLA timers, soonest due first, with ship-by times and the light
        thresholds (red: not yet picked and less than red_hours left; yellow: not yet shipped
        and less than yellow_hours left)."""
        try:
            limit = max(1, min(int(request.query.get("limit", "500")), 5000))
        except ValueError:
            return error(400, "limit", "must be an integer 1..5000")
        rows: list[dict[str, Any]] = []
        for status, body in await self.ask_workers(f"/internal/sla?limit={limit}"):
            if status == 200:
                rows += msgspec.json.decode(body)
        rows.sort(key=lambda e: min(t["at"] for t in e["timers"]))
        body = {
            "now": time.time_ns() // 1_000_000,
            "red_hours": self.lights[0],
            "yellow_hours": self.lights[1],
            "orders": rows[:limit],
        }
        return web.Response(body=_json.encode(body), content_type="application/json")

    async def whoami(self, request: web.Request) -> web.Response:
        """The key this request came with: the console shows actions only to write keys."""
        key = request.get(KEY)
        if key is None:  # auth = off: everything is allowed
            body = {"name": "anonymous", "scopes": ["ingest", "read", "write"], "channels": []}
        else:
            body = {"name": key.name, "scopes": key.scopes, "channels": key.channels}
        return web.Response(body=_json.encode(body), content_type="application/json")

    async def post_replay(self, request: web.Request) -> web.Response:
        """Send a dead letter through ingest again: its payload, or the corrected one in the
        body. Durable (journaled) before the answer, audited in the replay log (X-Actor),
        refused the second time (409 with the first replay)."""
        key = request.match_info["key"]
        if self.replays is None:
            return error(503, "key", "replays are not available")
        earlier = self.replays.get(key)
        if earlier is not None:
            return web.Response(
                status=409,
                body=_json.encode(
                    {"error": {"field": "key", "reason": "already replayed"}, "replayed": earlier}
                ),
                content_type="application/json",
            )
        found: dict[str, Any] | None = None
        for status, body in await self.ask_workers(f"/internal/dead-letters/{_quote(key)}"):
            if status == 200:
                found = msgspec.json.decode(body)
        if found is None:
            return error(404, "key", "no dead letter with this key (GET /v1/dead-letters)")
        channel = found.get("channel", "")
        adapter = ADAPTERS.get(channel)
        if adapter is None:
            return error(400, "channel", f"the letter names no channel we read ({channel!r})")
        corrected = await request.read()
        payload = corrected if corrected.strip() else found["payload"].encode()
        now = time.time_ns() // 1_000_000
        entries, results = admit(channel, adapter, [(None, payload)], self.limits, now)
        try:
            await self.journal.append(entries)
        except JournalFull as exc:
            resp = error(503, "journal", f"{exc}; retry later")
            resp.headers["Retry-After"] = str(self.retry_after_s)
            return resp
        self.on_accept()
        r = results[0]
        replay = Replay(
            key=key,
            at=now,
            actor=_actor(request, "operator"),
            status=r.status,
            id=r.id or "",
            corrected=bool(corrected.strip()),
            reason=r.reason or "",
        )
        self.replays.add(replay)
        metrics.MANUAL_INTERVENTIONS.labels("replay").inc()
        log.info(
            "dead letter %s replayed by %s: %s %s", key, replay.actor, r.status, r.id or r.reason
        )
        return web.Response(status=202, body=_json.encode(replay), content_type="application/json")

    async def get_review(self, request: web.Request) -> web.Response:
        """Suspected near-duplicates held for an operator, oldest first."""
        try:
            limit = max(1, min(int(request.query.get("limit", "100")), 1000))
        except ValueError:
            return error(400, "limit", "must be an integer 1..1000")
        rows: list[dict[str, Any]] = []
        for status, body in await self.ask_workers(f"/internal/review?limit={limit}"):
            if status == 200:
                rows += msgspec.json.decode(body)
        rows.sort(key=lambda r: r["held_at"])
        return web.Response(body=_json.encode(rows[:limit]), content_type="application/json")

    async def post_review(self, request: web.Request) -> web.Response:
        """``POST /v1/review/{id}/approve`` (fulfil it) or ``/reject`` (cancel it).

        The same as posting a ``review_approve`` / ``review_reject`` event: audited with the
        ``X-Actor`` header as the actor.
        """
        decision = request.match_info["decision"]
        if decision not in ("approve", "reject"):
            return error(404, "decision", "use /v1/review/{id}/approve or /v1/review/{id}/reject")
        oid = request.match_info["order_id"]
        if not is_global_order_id(oid):
            return _not_an_id()
        event = {
            "order_id": oid,
            "event": f"review_{decision}",
            "actor": _actor(request, "operator"),
            "source": "api",
            "reason": request.query.get("reason", "")[:500],
            "at": time.time_ns() // 1_000_000,
        }
        resp = await self._order_owner(
            oid, f"/internal/orders/{_quote(oid)}/events", _json.encode(event)
        )
        return _counted(resp, "review")

    async def post_event(self, request: web.Request) -> web.Response:
        """An order event (payment callback, pick, scan-out, carrier, cancel, refund, ...).

        200 applied (or already applied / already past: ``applied`` false), 409 not allowed in
        the order's state (with the state and why), 400 malformed, 404 unknown order.
        """
        oid = request.match_info["order_id"]
        if not is_global_order_id(oid):
            return _not_an_id()
        body = await json_object(request)
        if isinstance(body, web.Response):
            return body
        if body.get("order_id", oid) != oid:
            return error(400, "order_id", "differs from the order id in the path")
        body["order_id"] = oid
        body.setdefault("at", time.time_ns() // 1_000_000)
        body.setdefault("source", "api")
        body.setdefault("actor", _actor(request, "api"))
        event = validate_event(body)
        if isinstance(event, EventError):
            return error(400, event.field.replace("$.", "", 1), event.reason)
        if event.event in SYSTEM_EVENTS:
            return error(
                400, "event", f"{event.event} is raised by orderstream itself, not accepted here"
            )
        resp = await self._order_owner(
            oid, f"/internal/orders/{_quote(oid)}/events", _json.encode(event)
        )
        if event.event.startswith("review_"):
            return _counted(resp, "review")
        return _counted(resp, "event") if event.source in MANUAL_SOURCES else resp

    async def get_history(self, request: web.Request) -> web.Response:
        """The order's audit trail, oldest first: read-only by construction."""
        oid = request.match_info["order_id"]
        if not is_global_order_id(oid):
            return _not_an_id()
        return await self._order_owner(oid, f"/internal/orders/{_quote(oid)}/history")

    # -- stock -----------------------------------------------------------------------------------

    async def get_stock_audit(self, request: web.Request) -> web.Response:
        """Stock recomputed from the reservation ledger on every worker: ``problems`` is empty
        when reserved == live reservations and reserved <= on_hand - safety everywhere."""
        problems: list[str] = []
        covered: list[int] = []
        for status, body in await self.ask_workers("/internal/stock-audit"):
            if status != 200:
                resp = error(503, "workers", "a worker did not answer: the audit is incomplete")
                resp.headers["Retry-After"] = "1"
                return resp
            doc = msgspec.json.decode(body)
            problems += doc["problems"]
            covered += doc["partitions"]
        body = {"ok": not problems, "partitions": sorted(covered), "problems": problems}
        return web.Response(body=_json.encode(body), content_type="application/json")

    async def get_stock(self, request: web.Request) -> web.Response:
        """A SKU's level per warehouse (on_hand, reserved, safety, available, holds), live."""
        sku = self._sku(request)
        return await self._sku_owner(sku, f"/internal/stock/{_quote(sku)}")

    async def put_stock(self, request: web.Request) -> web.Response:
        """Set a SKU's level in one warehouse: any of on_hand, safety, alert_at, holds.

        All or nothing: if one value would break reserved <= on_hand - safety, nothing is
        changed and the answer is 409 with the numbers.
        """
        body = await json_object(request)
        if isinstance(body, web.Response):
            return body
        fields = {"on_hand": "set", "safety": "safety", "alert_at": "alert_at"}
        unknown = set(body) - {*fields, "warehouse", "holds", "reason", "adjustment_id"}
        if unknown:
            return error(400, sorted(unknown)[0], "unknown field")
        adjustments = []
        for name, op in fields.items():
            if name in body:
                adjustments.append(self._adjustment(request, body, op, body[name], suffix=name))
        holds = body.get("holds", {})
        if not isinstance(holds, dict):
            return error(400, "holds", "must be an object: channel -> units")
        for channel, units in holds.items():
            adjustments.append(
                self._adjustment(request, body, "hold", units, channel=channel, suffix=channel)
            )
        if not adjustments:
            return error(400, "$", "nothing to set: give on_hand, safety, alert_at or holds")
        return await self._stock_write(request, body, adjustments)

    async def post_stock_receipt(self, request: web.Request) -> web.Response:
        return await self._stock_delta(request, "receipt")

    async def post_stock_correction(self, request: web.Request) -> web.Response:
        return await self._stock_delta(request, "correction")

    async def _stock_delta(self, request: web.Request, op: str) -> web.Response:
        body = await json_object(request)
        if isinstance(body, web.Response):
            return body
        if "quantity" not in body:
            return error(400, "quantity", "required")
        return await self._stock_write(
            request, body, [self._adjustment(request, body, op, body["quantity"])]
        )

    def _adjustment(
        self,
        request: web.Request,
        body: dict[str, Any],
        op: str,
        quantity: Any,
        channel: str = "",
        suffix: str = "",
    ) -> dict[str, Any]:
        adj_id = body.get("adjustment_id", "")
        return {
            "sku": self._sku(request),
            "warehouse": body.get("warehouse", ""),
            "op": op,
            "quantity": quantity,
            "channel": channel,
            "reason": body.get("reason", ""),
            "actor": _actor(request, ""),
            "at": time.time_ns() // 1_000_000,
            "adjustment_id": f"{adj_id}:{suffix}" if adj_id and suffix else adj_id,
        }

    async def _stock_write(
        self, request: web.Request, body: dict[str, Any], adjustments: list[dict[str, Any]]
    ) -> web.Response:
        if not isinstance(body.get("warehouse"), str) or not body["warehouse"].strip():
            return error(400, "warehouse", "required: the warehouse this stock is in")
        if self.warehouses and body["warehouse"] not in self.warehouses:
            return error(
                400,
                "warehouse",
                f"unknown warehouse {body['warehouse']!r}; the routing table declares "
                f"{sorted(self.warehouses)}",
            )
        for adj in adjustments:
            field = _FIELD_OF.get(adj["op"], "quantity")
            if type(adj["quantity"]) is not int:
                return error(400, field, f"must be an integer, got {adj['quantity']!r}")
            ok, why = _QUANTITY_RULES[adj["op"]]
            if not ok(adj["quantity"]):
                return error(400, field, f"{why}, got {adj['quantity']}")
        checked = msgspec.convert(adjustments, list[StockAdjustment])
        sku = self._sku(request)
        resp = await self._sku_owner(sku, f"/internal/stock/{_quote(sku)}", _json.encode(checked))
        # a count corrected or a level set by hand; goods received are the warehouse's routine
        return resp if adjustments[0]["op"] == "receipt" else _counted(resp, "stock")

    def _sku(self, request: web.Request) -> str:
        return self.skus.canonical(request.match_info["sku"])

    async def get_metrics(self, request: web.Request) -> web.Response:
        metrics.JOURNAL_DEPTH.set(self.journal.depth)
        body, ctype = metrics.exposition()
        return web.Response(body=body, headers={"Content-Type": ctype})

    async def get_health(self, request: web.Request) -> web.Response:
        """200 when every worker answers and holds partitions: accepting *and* processing.

        503 otherwise (a worker down, restarting or crash-looping, or partitions unassigned):
        the API still accepts into the journal then, but nothing moves, and a probe must see it.
        """
        workers = []
        for status, body in await self.ask_local("/internal/health"):
            workers.append(msgspec.json.decode(body) if status == 200 else {"up": False})
        processing = all(w.get("assigned") for w in workers)
        extra: dict[str, Any] = {}
        if self.members is not None:
            # on a cluster a worker may hold nothing (more workers than partitions): this node
            # serves when its workers answer and every partition has a live holder somewhere
            view = extra["cluster"] = self._cluster_view()
            processing = all("assigned" in w for w in workers) and not view["unowned_partitions"]
        return web.Response(
            status=200 if processing else 503,
            body=_json.encode(
                {
                    **self.status,
                    "processing": processing,
                    "journal_depth": self.journal.depth,
                    "workers": workers,
                    **extra,
                }
            ),
            content_type="application/json",
        )

    # -- many nodes, one service -------------------------------------------------------------

    def _cluster_view(self) -> dict[str, Any]:
        assert self.members is not None
        nodes = sorted(self.members.records(), key=lambda r: r.node)
        return {
            "node": self.members.node,
            "nodes": [
                {
                    "node": r.node,
                    "url": r.url,
                    "partitions": r.partitions.get(UNIQUE, []),
                    "seen_ms_ago": max(0, time.time_ns() // 1_000_000 - r.at),
                }
                for r in nodes
            ],
            "unowned_partitions": self.members.unowned(UNIQUE, self.partitions),
        }

    async def get_cluster(self, request: web.Request) -> web.Response:
        """The nodes of the service and the partitions each one's workers hold."""
        if self.members is None:
            body: dict[str, Any] = {"node": "", "nodes": [], "unowned_partitions": []}
            body["single_machine"] = True
        else:
            body = self._cluster_view()
        return web.Response(body=_json.encode(body), content_type="application/json")

    async def post_cluster_workers(self, request: web.Request) -> web.Response:
        """Another node asks this node's workers (the cluster secret was checked by auth)."""
        try:
            query = cluster_peers.query_codec.decode(await request.read())
        except msgspec.DecodeError as exc:
            return error(400, "$", f"not a worker query: {exc}")
        if not query.path.startswith("/internal/") or ".." in query.path:
            return error(400, "path", "must be a worker's /internal/ path")
        answers = await self.ask_local(query.path, query.body)
        return web.Response(
            body=cluster_peers.encode_answers(answers), content_type="application/msgpack"
        )

    async def get_cluster_accepted(self, request: web.Request) -> web.Response:
        found = self._accepted(request.match_info["order_id"])
        return found if found is not None else error(404, "order_id", "not in this journal")
