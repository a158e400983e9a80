"""Live subscribers: Server-Sent Events and WebSocket, with filters, resume and back-pressure.

Each subscriber is a cursor into the sync log plus a task that reads from the cursor and writes
what its filter matches. Nothing is queued per subscriber and the feed never waits for one, so a
slow subscriber cannot slow the pipeline; it only falls behind. A watchdog drops it, with the
reason, when it falls more than ``max_lag`` events behind the head (reading, but slower than
the flood) or when one write has been stuck for ``write_timeout_s`` (not reading at all). It can
reconnect with the id of the last event it got and continue without a gap, as long as the log
still holds that position.

On a cluster an event's id is a position every node understands (``streams.sync.cursor``), so
the client may reconnect to any node; the id in ``data`` is the same string.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Awaitable, Callable

import msgspec
from aiohttp import WSMsgType, web

from core.subscription import EventFilter, FilterError, parse_filter
from streams import metrics
from streams.http.errors import error
from streams.sync.cursor import Cursor, CursorError
from streams.sync.log import SyncEvent, SyncLog

log = logging.getLogger("orderstream.subscribers")

READ_BATCH = 1000
_ids = itertools.count(1)
_json = msgspec.json.Encoder()


class Subscriber:
    def __init__(self, transport: str, filter_: EventFilter, cursor: int, peer: str) -> None:
        self.id = next(_ids)
        self.transport = transport
        self.filter = filter_
        self.cursor = cursor  # the next event id to look at
        self.position: Cursor | None = None  # on a cluster: what it has seen, per partition
        self.reset_at = 0  # on a cluster: resumed past what the log keeps (0 = no)
        self.peer = peer
        self.sent = 0
        self.writing_since = 0.0  # monotonic start of the write in progress; 0 = not writing
        self.task: asyncio.Task[None] | None = None
        self.dropped = ""  # why orderstream disconnected it
        # events behind the head at the last check; none yet, so the first check only records
        self.behind: int | None = None


class SubscriberHub:
    def __init__(
        self,
        log_: SyncLog,
        max_lag: int,
        write_timeout_s: float,
        heartbeat_s: float = 15.0,
        canonical_sku: Callable[[str], str] = str,
    ) -> None:
        self.log = log_
        self.max_lag = max_lag
        self.write_timeout_s = write_timeout_s
        self.heartbeat_s = heartbeat_s
        self.canonical_sku = canonical_sku
        self.subscribers: dict[int, Subscriber] = {}

    # -- what a subscriber asks for ------------------------------------------------------------

    def _subscription(self, request: web.Request, transport: str) -> Subscriber | web.Response:
        params = {
            k: v for k, v in request.query.items() if k not in ("last_event_id", "access_token")
        }
        try:
            filter_ = parse_filter(params, self.canonical_sku)
        except FilterError as exc:
            return error(400, exc.field, exc.reason)
        resume = request.headers.get("Last-Event-ID") or request.query.get("last_event_id")
        if self.log.tps:
            return self._cluster_subscription(transport, filter_, resume, request.remote or "?")
        if resume is None or resume == "":
            cursor = self.log.next_seq  # live only
        else:
            try:
                last = int(resume)
            except ValueError:
                return error(400, "Last-Event-ID", f"must be an event id (integer), got {resume!r}")
            if last < 0 or last > self.log.head:
                return error(
                    400,
                    "Last-Event-ID",
                    f"no event {last}: ids run {self.log.oldest}..{self.log.head}",
                )
            cursor = last + 1  # 0 = from the oldest event still kept
        peer = request.remote or "?"
        return Subscriber(transport, filter_, cursor, peer)

    def _cluster_subscription(
        self, transport: str, filter_: EventFilter, resume: str | None, peer: str
    ) -> Subscriber | web.Response:
        log_ = self.log
        if not resume:  # live only
            sub = Subscriber(transport, filter_, log_.next_seq, peer)
            sub.position = Cursor(log_.epoch, log_.last_pos)
            return sub
        if resume == "0":  # from the oldest kept
            start, position, complete = log_.start_for(Cursor(log_.epoch, [0] * log_.tps).format())
        else:
            try:
                start, position, complete = log_.start_for(resume)
            except CursorError as exc:
                return error(400, "Last-Event-ID", str(exc))
        sub = Subscriber(transport, filter_, start, peer)
        sub.position = position
        sub.reset_at = 0 if complete or resume == "0" else start
        return sub

    # -- the pump ------------------------------------------------------------------------------

    async def _pump(
        self,
        sub: Subscriber,
        send: Callable[[list[SyncEvent]], Awaitable[None]],
        send_reset: Callable[[int, int], Awaitable[None]],
        heartbeat: Callable[[], Awaitable[None]],
    ) -> None:
        if sub.reset_at:  # a cluster position older than this node's log keeps
            await send_reset(0, sub.reset_at)
        while True:
            batch = self.log.read(sub.cursor, READ_BATCH)
            if not batch:
                if not await self.log.wait_after(sub.cursor, self.heartbeat_s):
                    sub.writing_since = time.monotonic()
                    await heartbeat()
                    sub.writing_since = 0.0
                continue
            if batch[0].seq > sub.cursor:
                # trimmed while it was away (or, far behind, while it read): say so, go on
                sub.writing_since = time.monotonic()
                await send_reset(sub.cursor, batch[0].seq)
                sub.writing_since = 0.0
            matched = self._matched(sub, batch)
            sub.cursor = batch[-1].seq + 1
            if matched:
                sub.writing_since = time.monotonic()
                await send(matched)
                sub.writing_since = 0.0
                sub.sent += len(matched)

    @staticmethod
    def _matched(sub: Subscriber, batch: list[SyncEvent]) -> list[SyncEvent]:
        """What of ``batch`` the subscriber gets. On a cluster each event's id becomes the
        position after it (the id to resume from on any node), and events of a resumed
        position it has already seen are skipped."""
        f = sub.filter
        position = sub.position
        if position is None:
            if f.everything:
                return batch
            return [e for e in batch if f.matches(e.kind, e.order_id, e.sku, e.channel)]
        out: list[SyncEvent] = []
        for e in batch:
            if position.delivered(e):
                continue
            position.step(e)
            if f.everything or f.matches(e.kind, e.order_id, e.sku, e.channel):
                cut = e.body.index(b',"type"')
                body = b'{"id":"%s"%s' % (position.format().encode(), e.body[cut:])
                out.append(e._replace(body=body))
        return out

    def _register(self, sub: Subscriber) -> None:
        self.subscribers[sub.id] = sub
        metrics.SUBSCRIBERS.labels(sub.transport).inc()
        log.info(
            "%s subscriber %d from %s at event %d", sub.transport, sub.id, sub.peer, sub.cursor
        )

    def _unregister(self, sub: Subscriber) -> None:
        if self.subscribers.pop(sub.id, None) is not None:
            metrics.SUBSCRIBERS.labels(sub.transport).dec()

    # -- Server-Sent Events --------------------------------------------------------------------

    async def sse(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/stream``: ``id:`` is the event id, ``event:`` its type, ``data:`` the JSON."""
        sub = self._subscription(request, "sse")
        if isinstance(sub, web.Response):
            return sub
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",
            }
        )
        await resp.prepare(request)
        # tells the browser how long to wait before reconnecting, and that the stream is live
        await resp.write(b"retry: 1000\n: subscribed at event %d\n\n" % sub.cursor)

        async def send(events: list[SyncEvent]) -> None:
            await resp.write(
                b"".join(
                    b"id: %d\nevent: %s\ndata: %s\n\n" % (e.seq, e.kind.encode(), e.body)
                    for e in events
                )
            )

        if sub.position is not None:  # a cluster: the id is the position, as in the data

            async def send(events: list[SyncEvent]) -> None:
                await resp.write(
                    b"".join(
                        b"id: %s\nevent: %s\ndata: %s\n\n"
                        % (e.body[7 : e.body.index(b'"', 7)], e.kind.encode(), e.body)
                        for e in events
                    )
                )

        async def send_reset(wanted: int, oldest: int) -> None:
            note = {"reason": "resume position no longer kept", "wanted": wanted, "oldest": oldest}
            await resp.write(b"event: reset\ndata: %s\n\n" % _json.encode(note))

        async def heartbeat() -> None:
            await resp.write(b": keep-alive\n\n")

        await self._serve(sub, send, send_reset, heartbeat)
        if sub.dropped:
            resume_from: object = sub.cursor - 1
            if sub.position is not None:
                resume_from = sub.position.format()
            note = {"reason": sub.dropped, "resume_from": resume_from}
            with contextlib.suppress(Exception):
                frame = b"event: dropped\ndata: %s\n\n" % _json.encode(note)
                await asyncio.wait_for(resp.write(frame), 1.0)
            resp.force_close()
            if request.transport is not None:
                request.transport.close()
        return resp

    # -- WebSocket -----------------------------------------------------------------------------

    async def websocket(self, request: web.Request) -> web.StreamResponse:
        """``GET /v1/ws``: one text message per event, the same JSON as SSE's ``data``."""
        sub = self._subscription(request, "websocket")
        if isinstance(sub, web.Response):
            return sub
        ws = web.WebSocketResponse(heartbeat=self.heartbeat_s, max_msg_size=64 * 1024)
        await ws.prepare(request)

        async def send(events: list[SyncEvent]) -> None:
            for e in events:
                await ws.send_str(e.body.decode())

        async def send_reset(wanted: int, oldest: int) -> None:
            note = {"type": "reset", "reason": "resume position no longer kept"}
            await ws.send_str(_json.encode({**note, "wanted": wanted, "oldest": oldest}).decode())

        async def heartbeat() -> None:  # aiohttp pings on its own (heartbeat=)
            return None

        async def read_until_closed() -> None:
            async for msg in ws:  # the client has nothing to say; this handles close and pings
                if msg.type == WSMsgType.ERROR:
                    break

        reader = asyncio.create_task(read_until_closed())
        try:
            await self._serve(sub, send, send_reset, heartbeat, also=reader)
        finally:
            reader.cancel()
        if sub.dropped:
            with contextlib.suppress(Exception):
                # a close reason has room for 123 bytes: too few for a cluster position, which
                # the last frame's "id" carries anyway
                resume = "the last frame's id" if sub.position else str(sub.cursor - 1)
                message = f"dropped: {sub.dropped}; resume from {resume}"
                await asyncio.wait_for(ws.close(code=1008, message=message.encode()), 1.0)
        elif not ws.closed:
            await ws.close()
        return ws

    # -- shared --------------------------------------------------------------------------------

    async def _serve(
        self,
        sub: Subscriber,
        send: Callable[[list[SyncEvent]], Awaitable[None]],
        send_reset: Callable[[int, int], Awaitable[None]],
        heartbeat: Callable[[], Awaitable[None]],
        also: asyncio.Task[None] | None = None,
    ) -> None:
        """Run the pump until the client goes away, ``also`` ends, or the watchdog drops it."""
        self._register(sub)
        sub.task = asyncio.create_task(self._pump(sub, send, send_reset, heartbeat))
        try:
            waits: set[asyncio.Task[None]] = {sub.task} | ({also} if also else set())
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sub.task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await sub.task
            self._unregister(sub)
            log.info(
                "%s subscriber %d gone after %d events%s",
                sub.transport,
                sub.id,
                sub.sent,
                f" (dropped: {sub.dropped})" if sub.dropped else "",
            )

    def check(self, now: float) -> None:
        """Drop subscribers that fell too far behind or stopped reading (called every second)."""
        head = self.log.next_seq
        for sub in list(self.subscribers.values()):
            if sub.dropped or sub.task is None:
                continue
            behind, before = head - sub.cursor, sub.behind
            sub.behind = behind
            if sub.writing_since and now - sub.writing_since > self.write_timeout_s:
                reason = "write_timeout"
            elif behind > self.max_lag and before is not None and behind >= before:
                reason = "lagging"  # far behind and not catching up (a replay from 0 does)
            else:
                continue
            sub.dropped = reason
            metrics.SUBSCRIBER_DROPS.labels(sub.transport, reason).inc()
            log.warning(
                "dropping %s subscriber %d (%s): %s, %d events behind",
                sub.transport,
                sub.id,
                sub.peer,
                reason,
                head - sub.cursor,
            )
            sub.task.cancel()

    async def close_all(self, _app: web.Application | None = None) -> None:
        """On shutdown: end every stream, so the server does not wait out its grace period."""
        for sub in list(self.subscribers.values()):
            if sub.task is not None:
                sub.task.cancel()

    async def watchdog(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            self.check(time.monotonic())

    def stats(self) -> list[dict[str, object]]:
        head = self.log.next_seq
        return [
            {
                "id": s.id,
                "transport": s.transport,
                "peer": s.peer,
                "filter": msgspec.to_builtins(s.filter),
                "sent": s.sent,
                "behind": head - s.cursor,
            }
            for s in self.subscribers.values()
        ]
