"""Webhooks: registered URLs get the sync events their filter matches, signed, at least once.

One delivery task per endpoint walks the sync log from the endpoint's cursor, POSTs batches of
matching events (JSON, HMAC-SHA256 signed, with an idempotency key), and moves the cursor only
once the endpoint answered 2xx. Failures are retried with exponential backoff and jitter; after
``max_attempts`` the batch goes to the endpoint's own dead-letter list (visible, redeliverable)
and the endpoint carries on, so one bad batch never blocks it forever. Registrations, cursors,
counters and dead letters live in the sync log's RocksDB, so they survive restarts.

On a cluster of nodes they live in the cluster's configuration topic instead
(``streams.cluster.webhook_store``), and each endpoint is delivered by one node at a time: the
node whose workers hold the partition its id hashes to (``owns``). A node that gains an endpoint
waits ``TAKEOVER_GRACE_S`` first, so the node losing it has stopped, then resumes from the
endpoint's cluster-wide position.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import secrets
import time
import urllib.parse
from collections.abc import Callable
from typing import Any, Protocol

import aiohttp
import msgspec
from rocksdict import Rdict, WriteBatch

from core.signing import SIGNATURE_HEADER, sign
from core.subscription import EventFilter
from streams import metrics
from streams.sync.cursor import CursorError, event_key
from streams.sync.log import SyncEvent, SyncLog

log = logging.getLogger("orderstream.webhooks")

HOOK_PREFIX = b"w:"
STATUS_PREFIX = b"ws:"
DEAD_PREFIX = b"wd:"
SCAN_BATCH = 5000  # events looked at per round when few match
# a node that has just gained an endpoint waits this long before it delivers: the node that
# lost it (its workers' partition moved in the same rebalance) notices within a second
TAKEOVER_GRACE_S = 3.0
# ... and while the node that delivered it is alive and has not released it (it finishes the
# batch in flight first), at most this long
HANDOVER_MAX_S = 60.0


class Webhook(msgspec.Struct, kw_only=True):
    id: str
    url: str
    secret: str
    filter: EventFilter
    description: str = ""
    created_at: int


class WebhookStatus(msgspec.Struct, kw_only=True):
    cursor: int  # the next event id to look at (in the delivering node's sync log)
    # on a cluster: where the endpoint is in the change topics, valid on every node's log
    position: str = ""
    node: str = ""  # on a cluster: the node delivering it
    delivered_batches: int = 0
    delivered_events: int = 0
    failed_attempts: int = 0
    consecutive_failures: int = 0
    dead_lettered_batches: int = 0
    last_status: int = 0  # HTTP status of the last attempt; 0 = no answer
    last_error: str = ""
    last_attempt_at: int = 0
    last_success_at: int = 0
    next_attempt_at: int = 0  # while retrying


class DeadBatch(msgspec.Struct, kw_only=True):
    first_id: int
    last_id: int
    events: int
    attempts: int
    reason: str
    at: int
    body: bytes  # exactly what was POSTed


_enc = msgspec.msgpack.Encoder()
_hook_dec = msgspec.msgpack.Decoder(Webhook)
_status_dec = msgspec.msgpack.Decoder(WebhookStatus)
_dead_dec = msgspec.msgpack.Decoder(DeadBatch)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


class HookStore(Protocol):
    """Where registrations, progress and dead batches are kept: one node's RocksDB, or the
    cluster's configuration topic."""

    def load(self) -> list[tuple[Webhook, WebhookStatus | None]]: ...

    async def save_hook(self, hook: Webhook, status: WebhookStatus) -> None: ...

    async def delete_hook(self, hook_id: str) -> None: ...

    async def save_status(
        self, hook_id: str, status: WebhookStatus, dead: DeadBatch | None = None
    ) -> None: ...

    def dead_letters(self, hook_id: str, limit: int) -> list[DeadBatch]: ...

    async def delete_dead(self, hook_id: str, first_id: int) -> None: ...


def dead_key(first_id: int) -> bytes:
    return b"%020d" % first_id


class LocalHookStore:
    """One machine: in the sync log's RocksDB, beside the events."""

    def __init__(self, db: Rdict) -> None:
        self.db = db

    def load(self) -> list[tuple[Webhook, WebhookStatus | None]]:
        out = []
        it = self.db.iter()
        it.seek(HOOK_PREFIX)
        while it.valid() and it.key().startswith(HOOK_PREFIX):
            hook = _hook_dec.decode(it.value())
            raw = self.db.get(STATUS_PREFIX + hook.id.encode())
            out.append((hook, _status_dec.decode(raw) if raw else None))
            it.next()
        del it
        return out

    async def save_hook(self, hook: Webhook, status: WebhookStatus) -> None:
        batch = WriteBatch(raw_mode=True)
        batch.put(HOOK_PREFIX + hook.id.encode(), _enc.encode(hook))
        batch.put(STATUS_PREFIX + hook.id.encode(), _enc.encode(status))
        self.db.write(batch)

    async def delete_hook(self, hook_id: str) -> None:
        key = hook_id.encode()
        batch = WriteBatch(raw_mode=True)
        batch.delete(HOOK_PREFIX + key)
        batch.delete(STATUS_PREFIX + key)
        batch.delete_range(DEAD_PREFIX + key + b":", DEAD_PREFIX + key + b";")
        self.db.write(batch)

    async def save_status(
        self, hook_id: str, status: WebhookStatus, dead: DeadBatch | None = None
    ) -> None:
        batch = WriteBatch(raw_mode=True)
        batch.put(STATUS_PREFIX + hook_id.encode(), _enc.encode(status))
        if dead is not None:
            batch.put(
                DEAD_PREFIX + hook_id.encode() + b":" + dead_key(dead.first_id), _enc.encode(dead)
            )
        self.db.write(batch)

    def dead_letters(self, hook_id: str, limit: int) -> list[DeadBatch]:
        prefix = DEAD_PREFIX + hook_id.encode() + b":"
        out: list[DeadBatch] = []
        it = self.db.iter()
        it.seek(prefix)
        while it.valid() and it.key().startswith(prefix) and len(out) < limit:
            out.append(_dead_dec.decode(it.value()))
            it.next()
        del it
        return out

    async def delete_dead(self, hook_id: str, first_id: int) -> None:
        self.db.delete(DEAD_PREFIX + hook_id.encode() + b":" + dead_key(first_id))


def check_url(url: str) -> str:
    """Why ``url`` cannot be a webhook target, or "" when it can."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return "must be an absolute http:// or https:// URL"
    if not parts.hostname:
        return "has no host"
    if len(url) > 2048:
        return "longer than 2048 characters"
    return ""


def delivery_body(hook_id: str, key: str, events: list[SyncEvent]) -> bytes:
    head = b'{"webhook":"%s","delivery":"%s","events":[' % (hook_id.encode(), key.encode())
    return head + b",".join(e.body for e in events) + b"]}"


def idempotency_key(hook_id: str, events: list[SyncEvent]) -> str:
    """Names the batch by its events: a redelivery of the same batch carries the same key."""
    digest = hashlib.sha256(hook_id.encode())
    for e in events:
        digest.update(b"%d," % e.seq)
    return f"{events[0].seq}-{events[-1].seq}-{digest.hexdigest()[:16]}"


def cluster_events(events: list[SyncEvent]) -> list[SyncEvent]:
    """On a cluster an event's id is its place in its topic partition (``event_key``): the same
    whichever node delivers it, so a receiver can tell a batch sent again after a takeover."""
    out = []
    for e in events:
        cut = e.body.index(b',"type"')
        out.append(e._replace(body=b'{"id":"%s"%s' % (event_key(e.src).encode(), e.body[cut:])))
    return out


def cluster_idempotency_key(hook_id: str, events: list[SyncEvent]) -> str:
    digest = hashlib.sha256(hook_id.encode())
    for e in events:
        digest.update(b"%d," % e.src)
    return f"{event_key(events[0].src)}-{len(events)}-{digest.hexdigest()[:16]}"


class Webhooks:
    def __init__(
        self,
        log_: SyncLog,
        batch_max: int = 500,
        timeout_s: float = 5.0,
        max_attempts: int = 8,
        backoff_s: float = 0.5,
        backoff_max_s: float = 60.0,
        store: HookStore | None = None,
    ) -> None:
        self.log = log_
        self.store: HookStore = store or LocalHookStore(log_.db)
        self.batch_max = batch_max
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.hooks: dict[str, Webhook] = {}
        self.status: dict[str, WebhookStatus] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.session: aiohttp.ClientSession | None = None
        # a cluster sets these: which endpoints this node delivers, and its name
        self.owns: Callable[[str], bool] = lambda _hook_id: True
        self.is_live: Callable[[str], bool] = lambda _node: False
        self.node = ""
        self._owned_since: dict[str, float] = {}
        self._busy: set[str] = set()  # endpoints with a batch in flight
        self._handing_over: set[str] = set()  # to release once the batch in flight is done
        self._writes: set[asyncio.Task[None]] = set()
        self._running = False
        for hook, status in self.store.load():
            self.hooks[hook.id] = hook
            self.status[hook.id] = status or WebhookStatus(cursor=1)

    @property
    def clustered(self) -> bool:
        return self.node != ""

    # -- registry ------------------------------------------------------------------------------

    async def register(
        self, url: str, filter_: EventFilter, secret: str = "", description: str = ""
    ) -> Webhook:
        hook = Webhook(
            id="wh_" + secrets.token_hex(8),
            url=url,
            secret=secret or secrets.token_urlsafe(32),
            filter=filter_,
            description=description,
            created_at=_now_ms(),
        )
        # events from now on; on a cluster as a position every node's log understands
        status = WebhookStatus(cursor=self.log.next_seq)
        if self.clustered:
            status.position = self.log.cursor_now()
        await self.store.save_hook(hook, status)
        self.added(hook, status)
        log.info("webhook %s registered for %s", hook.id, url)
        return hook

    def added(self, hook: Webhook, status: WebhookStatus | None) -> None:
        """A registration made here, or (on a cluster) by another node."""
        self.hooks[hook.id] = hook
        self.status.setdefault(hook.id, status or WebhookStatus(cursor=self.log.next_seq))
        self.assign()

    async def delete(self, hook_id: str) -> bool:
        if hook_id not in self.hooks:
            return False
        await self.store.delete_hook(hook_id)
        self.removed(hook_id)
        log.info("webhook %s deleted", hook_id)
        return True

    def removed(self, hook_id: str) -> None:
        self.hooks.pop(hook_id, None)
        self._stop(hook_id)
        self.status.pop(hook_id, None)

    def progressed(self, hook_id: str, status: WebhookStatus) -> None:
        """Another node's progress on an endpoint it delivers (for views; ignored while this
        node delivers it)."""
        if hook_id in self.hooks and hook_id not in self.tasks:
            self.status[hook_id] = status

    def view(self, hook_id: str) -> dict[str, object] | None:
        hook = self.hooks.get(hook_id)
        if hook is None:
            return None
        st = self.status[hook_id]
        state = "retrying" if st.consecutive_failures else "active"
        return {
            "id": hook.id,
            "url": hook.url,
            "description": hook.description,
            "filter": msgspec.to_builtins(hook.filter),
            "created_at": hook.created_at,
            "state": state,
            "backlog": self._backlog(hook_id, st),
            **msgspec.to_builtins(st),
        }

    def _backlog(self, hook_id: str, st: WebhookStatus) -> int:
        if self.clustered and hook_id not in self.tasks:
            # another node's sync log numbers events its own way: place its position in ours
            try:
                start = self.log.start_for(st.position)[0] if st.position else self.log.next_seq
            except CursorError:  # written by a node with another partition count
                return 0
            return max(0, self.log.next_seq - start)
        return max(0, self.log.next_seq - st.cursor)

    def dead_letters(self, hook_id: str, limit: int) -> list[DeadBatch]:
        return self.store.dead_letters(hook_id, limit)

    async def redeliver(self, hook_id: str) -> tuple[int, int]:
        """POST every dead-lettered batch again (once each); delivered ones leave the list.

        Returns (delivered, still dead)."""
        hook = self.hooks[hook_id]
        delivered = failed = 0
        for dead in self.dead_letters(hook_id, 1_000_000):
            status, _ = await self._post(hook, dead.body, f"redeliver-{dead.first_id}", 0)
            if 200 <= status < 300:
                await self.store.delete_dead(hook_id, dead.first_id)
                delivered += 1
                metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
            else:
                failed += 1
        return delivered, failed

    # -- delivery ------------------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self.assign()

    def assign(self) -> None:
        """Deliver the endpoints this node owns, and only those (on one machine: all).

        On a cluster an endpoint changes hands like this: the node losing it finishes the batch
        in flight, writes its progress and releases it (``node`` ""); the node gaining it waits
        ``TAKEOVER_GRACE_S``, then until the release, or until the holder is no longer a live
        node (it crashed: its last progress record is where to go on), then claims it. So two
        live nodes never POST the same endpoint at once, and a handover repeats nothing.
        """
        if not self._running:
            return
        now = time.monotonic()
        for hook_id in self.hooks:
            st = self.status[hook_id]
            if not self.owns(hook_id):
                self._owned_since.pop(hook_id, None)
                if hook_id in self.tasks:
                    self._hand_over(hook_id)
                elif self.clustered and st.node == self.node:
                    self._release(hook_id)  # held before this node restarted
                continue
            if hook_id in self.tasks:
                continue
            waited = now - self._owned_since.setdefault(hook_id, now)
            if self.clustered:
                if waited < TAKEOVER_GRACE_S:
                    continue
                held = st.node not in ("", self.node) and self.is_live(st.node)
                if held and waited < HANDOVER_MAX_S:
                    continue
            self._start(hook_id)

    def _hand_over(self, hook_id: str) -> None:
        if hook_id in self._busy:
            self._handing_over.add(hook_id)  # the task releases it after this batch
            return
        self._stop(hook_id)
        self._release(hook_id)

    def _release(self, hook_id: str) -> None:
        st = self.status.get(hook_id)
        if st is None:
            return
        st.node = ""
        self._background(self._save(hook_id))
        log.info("webhook %s: released by this node", hook_id)

    def _background(self, write: Any) -> None:
        task = asyncio.create_task(write)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    def _start(self, hook_id: str) -> None:
        self.tasks[hook_id] = asyncio.create_task(self._run(hook_id), name=f"webhook-{hook_id}")

    def _stop(self, hook_id: str) -> None:
        task = self.tasks.pop(hook_id, None)
        if task is not None:
            task.cancel()

    async def stop(self) -> None:
        self._running = False
        if self.clustered and self.tasks:
            # hand every endpoint over cleanly: batches in flight finish and are recorded
            for hook_id in list(self.tasks):
                self._hand_over(hook_id)
            running = [t for t in self.tasks.values() if not t.done()]
            if running:
                await asyncio.wait(running, timeout=5.0)
            if self._writes:
                await asyncio.wait(set(self._writes), timeout=5.0)
        for task in self.tasks.values():
            task.cancel()
        for task in list(self.tasks.values()):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self.tasks.clear()
        if self.session is not None:
            await self.session.close()
            self.session = None

    def backlog(self) -> int:
        """Events not yet delivered to the endpoints this node delivers."""
        head = self.log.next_seq
        return sum(max(0, head - self.status[h].cursor) for h in self.tasks if h in self.status)

    async def _save(self, hook_id: str, dead: DeadBatch | None = None) -> None:
        await self.store.save_status(hook_id, self.status[hook_id], dead)

    async def _run(self, hook_id: str) -> None:
        hook = self.hooks[hook_id]
        st = self.status[hook_id]
        cursor = None
        if self.clustered:
            # resume where the endpoint is, whichever node delivered it last
            try:
                st.cursor, cursor, _ = self.log.start_for(st.position or self.log.cursor_now())
            except CursorError as exc:  # a partition count changed under it: from now on
                log.warning(
                    "webhook %s: position %r unusable (%s): from now on", hook_id, st.position, exc
                )
                st.cursor, cursor, _ = self.log.start_for(self.log.cursor_now())
            st.node = self.node
            await self._save(hook_id)  # claimed: the others see who delivers it
            log.info("webhook %s: delivering from this node (event %d on)", hook_id, st.cursor)
        last_saved = time.monotonic()
        while True:
            if hook_id in self._handing_over:
                self._handing_over.discard(hook_id)
                self.tasks.pop(hook_id, None)
                st.node = ""
                await self._save(hook_id)
                log.info("webhook %s: handed over after its batch in flight", hook_id)
                return
            events = self.log.read(st.cursor, SCAN_BATCH)
            if not events:
                await self.log.wait_after(st.cursor, 5.0)
                continue
            if cursor is not None:
                fresh = [e for e in events if not cursor.delivered(e)]
            else:
                fresh = events
            f = hook.filter
            matched: list[SyncEvent] = []
            for e in fresh:
                if f.everything or f.matches(e.kind, e.order_id, e.sku, e.channel):
                    matched.append(e)
                    if len(matched) == self.batch_max:
                        break
            # anything skipped between the batch's events is behind the cursor now, too
            last = matched[-1] if len(matched) == self.batch_max else events[-1]
            passed = events[: events.index(last) + 1]
            if matched:
                self._busy.add(hook_id)
                try:
                    delivered = await self._deliver(hook, st, matched)
                finally:
                    self._busy.discard(hook_id)
                if not delivered:  # handed over between attempts: the next node sends it
                    continue
            st.cursor = last.seq + 1
            if cursor is not None:
                cursor.advance(passed)
                st.position = cursor.format()
            if matched or time.monotonic() - last_saved > 1.0:
                await self._save(hook_id)
                last_saved = time.monotonic()

    async def _deliver(self, hook: Webhook, st: WebhookStatus, events: list[SyncEvent]) -> bool:
        """POST the batch until a 2xx or ``max_attempts`` (then it is dead-lettered): True;
        False when the endpoint is being handed to another node between two attempts."""
        if self.clustered:
            key = cluster_idempotency_key(hook.id, events)
            body = delivery_body(hook.id, key, cluster_events(events))
        else:
            key = idempotency_key(hook.id, events)
            body = delivery_body(hook.id, key, events)
        attempt = 0
        while True:
            attempt += 1
            status, why = await self._post(hook, body, key, attempt)
            st.last_status = status
            st.last_attempt_at = _now_ms()
            if 200 <= status < 300:
                st.delivered_batches += 1
                st.delivered_events += len(events)
                st.consecutive_failures = 0
                st.last_error = ""
                st.last_success_at = st.last_attempt_at
                st.next_attempt_at = 0
                metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
                return True
            st.failed_attempts += 1
            st.consecutive_failures += 1
            st.last_error = why
            if attempt >= self.max_attempts:
                st.dead_lettered_batches += 1
                st.next_attempt_at = 0
                metrics.WEBHOOK_DELIVERIES.labels("dead_lettered").inc()
                log.warning(
                    "webhook %s: events %d..%d dead-lettered after %d attempts: %s",
                    hook.id,
                    events[0].seq,
                    events[-1].seq,
                    attempt,
                    why,
                )
                dead = DeadBatch(
                    first_id=events[0].seq,
                    last_id=events[-1].seq,
                    events=len(events),
                    attempts=attempt,
                    reason=why,
                    at=st.last_attempt_at,
                    body=body,
                )
                await self._save(hook.id, dead)
                return True
            metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
            delay = min(self.backoff_s * 2 ** (attempt - 1), self.backoff_max_s)
            delay *= 0.5 + random.random() / 2  # jitter: endpoints recovering are not stampeded
            st.next_attempt_at = _now_ms() + int(delay * 1000)
            await self._save(hook.id)
            await asyncio.sleep(delay)
            if hook.id in self._handing_over:
                return False

    async def _post(self, hook: Webhook, body: bytes, key: str, attempt: int) -> tuple[int, str]:
        """(HTTP status, why it failed); status 0 when the endpoint did not answer."""
        if self.session is None:
            self.session = aiohttp.ClientSession()
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "orderstream-webhooks",
            "Idempotency-Key": key,
            "X-Orderstream-Webhook": hook.id,
            "X-Orderstream-Attempt": str(attempt),
            "X-Orderstream-Node": self.node or "local",
            SIGNATURE_HEADER: sign(hook.secret, body, int(time.time())),
        }
        try:
            async with self.session.post(
                hook.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                allow_redirects=False,
            ) as resp:
                await resp.read()
                if 200 <= resp.status < 300:
                    return resp.status, ""
                return resp.status, f"HTTP {resp.status}"
        except TimeoutError:
            return 0, f"no answer in {self.timeout_s:g}s"
        except (aiohttp.ClientError, OSError) as exc:
            return 0, f"{type(exc).__name__}: {exc}"[:300]
