"""Webhooks: registered URLs get the sync events their filter matches, signed, at least once.

One delivery task per endpoint walks the sync log from the endpoint's cursor, POSTs batches of
matching events (JSON, HMAC-SHA256 signed, with an idempotency key), and moves the cursor only
once the endpoint answered 2xx. Failures are retried with exponential backoff and jitter; after
``max_attempts`` the batch goes to the endpoint's own dead-letter list (visible, redeliverable)
and the endpoint carries on, so one bad batch never blocks it forever. Registrations, cursors,
counters and dead letters live in the sync log's RocksDB, so they survive restarts.
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

import aiohttp
import msgspec
from rocksdict import WriteBatch

from core.signing import SIGNATURE_HEADER, sign
from core.subscription import EventFilter
from streams import metrics
from streams.sync.log import SyncEvent, SyncLog

log = logging.getLogger("orderstream.webhooks")

HOOK_PREFIX = b"w:"
STATUS_PREFIX = b"ws:"
DEAD_PREFIX = b"wd:"
SCAN_BATCH = 5000  # events looked at per round when few match


class Webhook(msgspec.Struct, kw_only=True):
    id: str
    url: str
    secret: str
    filter: EventFilter
    description: str = ""
    created_at: int


class WebhookStatus(msgspec.Struct, kw_only=True):
    cursor: int  # the next event id to look at
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


class Webhooks:
    def __init__(
        self,
        log_: SyncLog,
        batch_max: int = 500,
        timeout_s: float = 5.0,
        max_attempts: int = 8,
        backoff_s: float = 0.5,
        backoff_max_s: float = 60.0,
    ) -> None:
        self.log = log_
        self.db = log_.db
        self.batch_max = batch_max
        self.timeout_s = timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.backoff_max_s = backoff_max_s
        self.hooks: dict[str, Webhook] = {}
        self.status: dict[str, WebhookStatus] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.session: aiohttp.ClientSession | None = None
        it = self.db.iter()
        it.seek(HOOK_PREFIX)
        while it.valid() and it.key().startswith(HOOK_PREFIX):
            hook = _hook_dec.decode(it.value())
            self.hooks[hook.id] = hook
            raw = self.db.get(STATUS_PREFIX + hook.id.encode())
            self.status[hook.id] = _status_dec.decode(raw) if raw else WebhookStatus(cursor=1)
            it.next()
        del it

    # -- registry ------------------------------------------------------------------------------

    def register(
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
        status = WebhookStatus(cursor=self.log.next_seq)  # events from now on
        batch = WriteBatch(raw_mode=True)
        batch.put(HOOK_PREFIX + hook.id.encode(), _enc.encode(hook))
        batch.put(STATUS_PREFIX + hook.id.encode(), _enc.encode(status))
        self.db.write(batch)
        self.hooks[hook.id] = hook
        self.status[hook.id] = status
        self._start(hook.id)
        log.info("webhook %s registered for %s", hook.id, url)
        return hook

    def delete(self, hook_id: str) -> bool:
        if self.hooks.pop(hook_id, None) is None:
            return False
        task = self.tasks.pop(hook_id, None)
        if task is not None:
            task.cancel()
        self.status.pop(hook_id, None)
        key = hook_id.encode()
        batch = WriteBatch(raw_mode=True)
        batch.delete(HOOK_PREFIX + key)
        batch.delete(STATUS_PREFIX + key)
        batch.delete_range(DEAD_PREFIX + key + b":", DEAD_PREFIX + key + b";")
        self.db.write(batch)
        log.info("webhook %s deleted", hook_id)
        return True

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
            "backlog": max(0, self.log.next_seq - st.cursor),
            **msgspec.to_builtins(st),
        }

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

    async def redeliver(self, hook_id: str) -> tuple[int, int]:
        """POST every dead-lettered batch again (once each); delivered ones leave the list.

        Returns (delivered, still dead)."""
        hook = self.hooks[hook_id]
        prefix = DEAD_PREFIX + hook_id.encode() + b":"
        delivered = failed = 0
        for dead in self.dead_letters(hook_id, 1_000_000):
            status, _ = await self._post(hook, dead.body, f"redeliver-{dead.first_id}", 0)
            if 200 <= status < 300:
                self.db.delete(prefix + b"%020d" % dead.first_id)
                delivered += 1
                metrics.WEBHOOK_DELIVERIES.labels("delivered").inc()
            else:
                failed += 1
        return delivered, failed

    # -- delivery ------------------------------------------------------------------------------

    def start(self) -> None:
        for hook_id in self.hooks:
            self._start(hook_id)

    def _start(self, hook_id: str) -> None:
        self.tasks[hook_id] = asyncio.create_task(self._run(hook_id), name=f"webhook-{hook_id}")

    async def stop(self) -> None:
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
        head = self.log.next_seq
        return sum(max(0, head - st.cursor) for st in self.status.values())

    def _save(self, hook_id: str, dead: DeadBatch | None = None) -> None:
        batch = WriteBatch(raw_mode=True)
        batch.put(STATUS_PREFIX + hook_id.encode(), _enc.encode(self.status[hook_id]))
        if dead is not None:
            key = DEAD_PREFIX + hook_id.encode() + b":" + b"%020d" % dead.first_id
            batch.put(key, _enc.encode(dead))
        self.db.write(batch)

    async def _run(self, hook_id: str) -> None:
        hook = self.hooks[hook_id]
        st = self.status[hook_id]
        last_saved = time.monotonic()
        while True:
            events = self.log.read(st.cursor, SCAN_BATCH)
            if not events:
                await self.log.wait_after(st.cursor, 5.0)
                continue
            f = hook.filter
            matched: list[SyncEvent] = []
            for e in events:
                if f.everything or f.matches(e.kind, e.order_id, e.sku, e.channel):
                    matched.append(e)
                    if len(matched) == self.batch_max:
                        break
            if not matched:  # nothing for this endpoint here: skip ahead
                st.cursor = events[-1].seq + 1
                if time.monotonic() - last_saved > 1.0:
                    self._save(hook_id)
                    last_saved = time.monotonic()
                continue
            await self._deliver(hook, st, matched)
            # anything skipped between the batch's events is behind the cursor now, too
            st.cursor = (
                matched[-1].seq + 1 if len(matched) == self.batch_max else events[-1].seq + 1
            )
            self._save(hook_id)
            last_saved = time.monotonic()

    async def _deliver(self, hook: Webhook, st: WebhookStatus, events: list[SyncEvent]) -> None:
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
                return
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
                self._save(hook.id, dead)
                return
            metrics.WEBHOOK_DELIVERIES.labels("failed").inc()
            delay = min(self.backoff_s * 2 ** (attempt - 1), self.backoff_max_s)
            delay *= 0.5 + random.random() / 2  # jitter: endpoints recovering are not stampeded
            st.next_attempt_at = _now_ms() + int(delay * 1000)
            self._save(hook.id)
            await asyncio.sleep(delay)

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
