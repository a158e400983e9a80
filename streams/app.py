"""The Faust worker: agents for each stage over envelopes, partition stores, internal web.

Faust owns the consumer group, partition assignment, agents and the web server; stage logic lives
in ``streams.stages`` and ``core``; state lives in ``streams.store``. Each agent handles one
envelope at a time and finishes its sends and state commit before asking for the next, so the
event Faust acks (on the next iteration) is always fully processed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Iterable
from typing import Any

import faust
import msgspec
from aiohttp import web as aioweb

from core.channels import NormaliseContext
from core.order_state import record_decoder
from core.skus import SkuCatalog
from ext import kafka_partition
from streams import faust_tuning, metrics
from streams.cluster import probe_epoch
from streams.envelope import (
    CANONICAL_CODEC,
    CHANGES_CODEC,
    DLQ_CODEC,
    ENVELOPE_HEADER,
    SETTLE_CODEC,
    CanonicalRecord,
    DeadLetter,
    OrderChange,
    Settle,
    chunks,
    group_by_partition,
)
from streams.settings import Settings
from streams.stages import dead_letters, normalise, order_state
from streams.store import ChangelogEntry, Position, StoreManager
from streams.topics import CANONICAL, CHANGES, DLQ, RAW, SETTLED

log = logging.getLogger("orderstream.worker")
faust_tuning.apply()

EPOCH_EXIT_CODE = 75  # exit code of a worker that saw a new broker epoch (it is restarted)
TAKE_WITHIN_S = 0.005  # how long an agent waits to fill a batch when the topic is quiet


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _log_send_failure(fut: Any) -> None:
    if not fut.cancelled() and fut.exception() is not None:
        log.warning(
            "a settle message was not delivered (%s); replay will settle again", fut.exception()
        )


def _by_partition(messages: list[Any]) -> dict[int, list[Any]]:
    out: dict[int, list[Any]] = {}
    for m in messages:
        out.setdefault(m.partition, []).append(m)
    return out


def _headers(message: Any) -> dict[str, bytes]:
    raw = message.headers or []
    items = raw.items() if isinstance(raw, dict) else raw
    return {str(k).lower(): (v or b"") for k, v in items}


class Pipeline:
    """Everything one worker process runs; built once at start-up."""

    def __init__(self, settings: Settings, epoch: str, web_port: int) -> None:
        self.settings = settings
        self.epoch = epoch
        self.partitions = settings.partitions
        data = settings.data_path
        (data / "worker").mkdir(parents=True, exist_ok=True)
        self.app = faust.App(
            settings.app_id,
            broker=settings.broker_url,
            value_serializer="raw",
            key_serializer="raw",
            # Measured in design.md: Tansu holds JoinGroup for half the session timeout.
            broker_session_timeout=settings.session_timeout_s,
            broker_heartbeat_interval=settings.heartbeat_interval_s,
            consumer_auto_offset_reset="earliest",
            topic_partitions=settings.partitions,
            topic_allow_declare=False,  # streams.cluster creates every topic first
            topic_disable_leader=False,
            datadir=str(data / "worker" / f"faust-{web_port}"),
            web_enabled=True,
            web_port=web_port,
            web_bind="127.0.0.1",
            web_host="127.0.0.1",
            producer_compression_type=(
                None if settings.compression == "none" else settings.compression
            ),
            producer_max_request_size=4 * 1024 * 1024,
            producer_linger_ms=2,
            producer_acks=-1,
            consumer_max_fetch_size=4 * 1024 * 1024,
            # Bounds memory in messages: envelopes are ~100-250 KB, but a gateway may send one
            # order per message on orders.raw, where a small buffer starves the agent.
            stream_buffer_maxsize=256,
            broker_max_poll_records=500,
            stream_wait_empty=False,
        )
        self.stores = StoreManager(
            data / "stores", epoch, settings.bootstrap_servers, send=self._send_changelog
        )
        skus = SkuCatalog.from_toml(settings.sku_aliases) if settings.sku_aliases else SkuCatalog()
        self.ctx = NormaliseContext(skus=skus, default_country=settings.default_country)
        self._register()

    # -- I/O helpers -----------------------------------------------------------------------------

    async def _send(self, topic: str, partition: int, value: bytes, kind: bytes) -> Awaitable[Any]:
        return await self.app.producer.send(
            topic, None, value, partition, None, [(ENVELOPE_HEADER, kind)]
        )

    async def _send_changelog(self, topic: str, partition: int, value: bytes) -> int:
        meta = await (await self._send(topic, partition, value, b"changelog"))
        return meta.offset

    async def _send_grouped(
        self,
        topic: str,
        records: list[Any],
        keys: list[bytes],
        codec: Any,
        kind: bytes,
    ) -> list[Awaitable[Any]]:
        futs = []
        size = self.settings.envelope_max_records
        for part, recs in group_by_partition(records, keys, self.partitions).items():
            for chunk in chunks(recs, size):
                futs.append(await self._send(topic, part, codec.encode(chunk), kind))
        return futs

    async def _send_dead(self, letters: list[DeadLetter]) -> list[Awaitable[Any]]:
        if not letters:
            return []
        for (stage, channel), n in Counter(
            (d.stage, d.channel or "unknown") for d in letters
        ).items():
            metrics.DEAD_LETTERS.labels(stage, channel).inc(n)
        keys = [normalise.dead_letter_key(d) or d.channel.encode() for d in letters]
        return await self._send_grouped(DLQ, letters, keys, DLQ_CODEC, b"dlq")

    async def _send_settles(self, settles: list[Settle]) -> None:
        """Queue settles without waiting for the broker.

        The state they confirm is already committed; a settle lost in a crash only keeps the
        journal entry until the next replay, when the order stage recognises it and settles it
        again. Not waiting saves a broker round trip per batch.
        """
        if settles:
            fut = await self._send(SETTLED, 0, SETTLE_CODEC.encode(settles), b"settle")
            fut.add_done_callback(_log_send_failure)

    # -- stages ----------------------------------------------------------------------------------

    async def normalise_batch(self, messages: list[Any]) -> None:
        """Raw messages (journal envelopes or single gateway orders) -> canonical envelopes."""
        t0 = time.perf_counter()
        records: list[Any] = []
        dead: list[DeadLetter] = []
        for m in messages:
            recs, bad = normalise.decode_raw_message(
                m.key, m.value, _headers(m), int(m.timestamp * 1000)
            )
            records += recs
            dead += bad
        good, rejected = normalise.normalise_records(records, self.ctx)
        dead += rejected
        futs = await self._send_grouped(
            CANONICAL, good, [r.order.id.encode() for r in good], CANONICAL_CODEC, b"canonical"
        )
        futs += await self._send_dead(dead)
        await asyncio.gather(*futs)
        # One metric update per channel per batch: multiprocess metrics cost ~3 µs a call.
        for channel, n in Counter(r.order.channel for r in good).items():
            metrics.NORMALISED.labels(channel).inc(n)
        for channel, n in Counter(r.order.channel for r in good if r.origin is None).items():
            metrics.INGESTED.labels(channel, "kafka").inc(n)
        metrics.ENVELOPE_SECONDS.labels(normalise.STAGE).observe(time.perf_counter() - t0)

    def _owned_batches(self, topic: str, messages: list[Any]) -> dict[int, list[Any]]:
        """Group by partition, dropping partitions revoked since the batch was taken.

        Their events are redelivered to the new owner; processing them here would reopen a
        store this worker no longer owns (and hold its lock against the owner).
        """
        return {p: ms for p, ms in _by_partition(messages).items() if self._owned(topic, p)}

    async def record_batch(self, messages: list[Any]) -> None:
        t0 = time.perf_counter()
        results = await asyncio.gather(
            *(
                self._record_partition(p, ms)
                for p, ms in self._owned_batches(CANONICAL, messages).items()
            )
        )
        await self._send_settles([s for settles, _ in results for s in settles])
        changes = [c for _, cs in results for c in cs]
        for kind, n in Counter(c.kind for c in changes).items():
            metrics.RECORDED.labels(kind).inc(n)
        now = _now_ms()
        metrics.observe_many(metrics.E2E_SECONDS, [(now - c.received_at) / 1000 for c in changes])
        metrics.ENVELOPE_SECONDS.labels(order_state.STAGE).observe(time.perf_counter() - t0)

    async def _record_partition(
        self, part: int, messages: list[Any]
    ) -> tuple[list[Settle], list[OrderChange]]:
        """One partition's envelopes: changes out, then state committed, then settles."""
        async with self.stores.using(order_state.STORE, part) as store:
            applied = store.applied(CANONICAL, self.epoch)
            records: list[CanonicalRecord] = []
            replayed: list[CanonicalRecord] = []
            for m in messages:
                # Applied before a crash: only its settles may be missing.
                (replayed if m.offset <= applied else records).extend(
                    CANONICAL_CODEC.decode(m.value)
                )
            settles = order_state.settles_of(replayed)
            if not records:
                return settles, []
            held = store.get_many([r.order.id.encode() for r in records])
            out = order_state.record_envelope(records, held, _now_ms())
            futs = await self._send_grouped(
                CHANGES,
                out.changes,
                [c.order_id.encode() for c in out.changes],
                CHANGES_CODEC,
                b"changes",
            )
            last = max(m.offset for m in messages)
            await self.stores.commit(
                store,
                ChangelogEntry(list(out.updates.items()), CANONICAL, Position(self.epoch, last)),
                outputs=futs,
            )
        return settles + out.settles, out.changes

    async def store_dead_letter_batch(self, messages: list[Any]) -> None:
        settles = await asyncio.gather(
            *(
                self._store_dead_partition(p, ms)
                for p, ms in self._owned_batches(DLQ, messages).items()
            )
        )
        await self._send_settles([s for group in settles for s in group])

    async def _store_dead_partition(self, part: int, messages: list[Any]) -> list[Settle]:
        async with self.stores.using(dead_letters.STORE, part) as store:
            applied = store.applied(DLQ, self.epoch)
            updates: dict[bytes, bytes] = {}
            settles: list[Settle] = []
            fresh = False
            for m in messages:
                ups, sts = dead_letters.store_letters(DLQ_CODEC.decode(m.value), m.offset)
                settles += sts
                if m.offset > applied:
                    updates.update(ups)
                    fresh = True
            if fresh:
                last = max(m.offset for m in messages)
                await self.stores.commit(
                    store, ChangelogEntry(list(updates.items()), DLQ, Position(self.epoch, last))
                )
        return settles

    # -- wiring ----------------------------------------------------------------------------------

    def _register(self) -> None:
        app = self.app
        raw = app.topic(RAW, partitions=self.partitions)
        canonical = app.topic(CANONICAL, partitions=self.partitions)
        dlq = app.topic(DLQ, partitions=self.partitions)

        def agent(topic: Any, name: str, handler: Any, max_events: int) -> None:
            # take_events acks a batch only when the loop asks for the next one, i.e. after
            # the handler finished its sends and commits. An exception - or the cancellation
            # of a graceful stop - would still ack it on the way out (the generator's finally),
            # so an unfinished batch ends the process instead: state survives that by design,
            # the supervisor restarts the worker and the batch is redelivered.
            async def run(stream: Any) -> None:
                async for events in stream.take_events(max_events, TAKE_WITHIN_S):
                    try:
                        await handler([e.message for e in events])
                    except asyncio.CancelledError:
                        log.warning("%s stopped mid-batch: exiting so it is redelivered", name)
                        os._exit(70)
                    except Exception:
                        log.exception("%s failed on a batch: exiting so it is redelivered", name)
                        os._exit(70)

            run.__name__ = name
            run.__qualname__ = name
            app.agent(topic, name=name)(run)

        # Raw messages may be single gateway orders, so take many; canonical and dlq messages
        # are envelopes of up to envelope_max_records each.
        agent(raw, "normalise", self.normalise_batch, 2000)
        agent(canonical, "order_state", self.record_batch, 16)
        agent(dlq, "dead_letters", self.store_dead_letter_batch, 16)

        store_of = {CANONICAL: order_state.STORE, DLQ: dead_letters.STORE}

        @app.on_partitions_revoked.connect
        async def on_revoked(sender: Any, revoked: Iterable[Any], **_: Any) -> None:
            for tp in revoked:
                name = store_of.get(tp.topic)
                if name is not None:
                    await self.stores.release(name, tp.partition)

        @app.timer(interval=2.0)
        async def watch_epoch() -> None:
            reachable, epoch = await probe_epoch(self.settings.bootstrap_servers)
            if reachable and epoch != self.epoch:
                log.warning("broker epoch changed (%s -> %s): restarting", self.epoch, epoch)
                os._exit(EPOCH_EXIT_CODE)

        @app.page("/internal/orders/{order_id}")
        async def get_order(web: Any, request: Any, order_id: str) -> Any:
            found = await self.lookup_order(order_id)
            if found is None:
                return aioweb.json_response({"found": False}, status=404)
            return aioweb.Response(body=found, content_type="application/json")

        @app.page("/internal/dead-letters")
        async def list_dead_letters(web: Any, request: Any) -> Any:
            limit = int(request.query.get("limit", "100"))
            body = msgspec.json.encode(await self.recent_dead_letters(limit))
            return aioweb.Response(body=body, content_type="application/json")

        @app.page("/internal/health")
        async def health(web: Any, request: Any) -> Any:
            assigned = sorted(f"{tp.topic}:{tp.partition}" for tp in self.app.consumer.assignment())
            return aioweb.json_response({"epoch": self.epoch, "assigned": assigned})

    # -- queries ---------------------------------------------------------------------------------

    def _owned(self, topic: str, partition: int) -> bool:
        try:
            return any(
                tp.topic == topic and tp.partition == partition
                for tp in self.app.consumer.assignment()
            )
        except Exception:
            return False

    async def lookup_order(self, order_id: str) -> bytes | None:
        part = kafka_partition(order_id.encode(), self.partitions)
        key = order_id.encode()
        if self._owned(CANONICAL, part):
            async with self.stores.using(order_state.STORE, part) as store:
                raw = store.get(key)
            if raw is not None:
                rec = record_decoder.decode(raw)
                return msgspec.json.encode(
                    {
                        "id": order_id,
                        "state": rec.state,
                        "version": rec.version,
                        "recorded_at": rec.recorded_at,
                        "changed_at": rec.changed_at,
                        "order": rec.order,
                    }
                )
        if self._owned(DLQ, part):
            async with self.stores.using(dead_letters.STORE, part) as store:
                raw = store.get(dead_letters.BY_ID + key)
            if raw is not None:
                letter = dead_letters.letter_decoder.decode(raw)
                return msgspec.json.encode(
                    {
                        "id": order_id,
                        "state": "dead_lettered",
                        "dead_letter": _letter_json(letter),
                    }
                )
        return None

    async def recent_dead_letters(self, limit: int) -> list[dict[str, Any]]:
        out: list[tuple[bytes, dict[str, Any]]] = []
        for part in range(self.partitions):
            if not self._owned(DLQ, part):
                continue
            async with self.stores.using(dead_letters.STORE, part) as store:
                rows = store.scan_last(dead_letters.BY_TIME, limit)
            out += [(k, _letter_json(dead_letters.letter_decoder.decode(v))) for k, v in rows]
        out.sort(key=lambda kv: kv[0], reverse=True)
        return [v for _, v in out[:limit]]


def _letter_json(letter: DeadLetter) -> dict[str, Any]:
    return {
        "stage": letter.stage,
        "channel": letter.channel,
        "field": letter.field,
        "reason": letter.reason,
        "order_no": letter.order_no,
        "received_at": letter.received_at,
        "payload": letter.payload.decode("utf-8", "replace"),
    }
