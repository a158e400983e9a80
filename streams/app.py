"""The Faust worker: agents for each stage over envelopes, partition stores, internal web.

Faust owns the consumer group, partition assignment, agents and the web server; stage logic lives
in ``streams.stages`` and ``core``; state lives in ``streams.state.store``. Each agent handles one
envelope at a time and finishes its sends and state commit before asking for the next, so the
event Faust acks (on the next iteration) is always fully processed.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any

import faust
import msgspec
from aiohttp import web as aioweb
from faust.web import View

from core.audit import audit_prefix
from core.channels import NormaliseContext
from core.framing import split_orders
from core.inventory import (
    ENDED_PREFIX,
    RESERVATION_PREFIX,
    STOCK_PREFIX,
    TTL_PREFIX,
    InventoryOutcome,
    ReservationResult,
    ReserveRequest,
    StockAdjustment,
    apply_batch,
    decode_stock,
    expired,
    inventory_lookup_keys,
    partition_key,
    purgeable,
    stock_key,
)
from core.inventory import (
    audit as inventory_audit,
)
from core.order_flow import FlowContext, ship_by
from core.order_state import record_decoder
from core.reconcile import HeldSummary, summary_of
from core.routing import WarehouseRouting
from core.rules import RulesFile
from core.skus import SkuCatalog
from core.sla import DEADLINE_PREFIX, SlaPolicy, decode_deadline, due_until
from core.state_machine import EventError, OrderEvent, Refusal, validate_event
from ext import kafka_partition, kafka_partitions
from streams import metrics
from streams.kafka import client as kafka_client
from streams.kafka import faust_tuning, fetch_wait
from streams.kafka.batches import take_batches
from streams.kafka.envelope import (
    ALERT_CODEC,
    CANONICAL_CODEC,
    CHANGES_CODEC,
    COUNT_CODEC,
    DLQ_CODEC,
    ENVELOPE_HEADER,
    HISTORY_CODEC,
    RESERVE_CODEC,
    RESULT_CODEC,
    REVIEW_CODEC,
    ROUTED_CODEC,
    SETTLE_CODEC,
    STOCK_ALERT_CODEC,
    STOCK_CHANGE_CODEC,
    CanonicalRecord,
    DeadLetter,
    HistoryFact,
    OrderChange,
    RawRecord,
    RecipientCount,
    ReviewItem,
    RoutedRecord,
    Settle,
    chunks,
    fitting_envelopes,
    group_by_partition,
)
from streams.kafka.topics import (
    ALERTS,
    CANONICAL,
    CHANGES,
    DLQ,
    EVENTS,
    HISTORY,
    RAW,
    RAW_PRIORITY,
    RECIPIENT,
    RECIPIENT_COUNTS,
    RESERVE,
    RESERVED,
    REVIEW,
    SETTLED,
    STOCK_CHANGES,
    STOCK_UPDATES,
    UNIQUE,
)
from streams.process import malloc
from streams.settings import Settings
from streams.stages import dead_letters, dedup, history, normalise, order_state, reserve
from streams.state.store import ChangelogEntry, Position, StoreManager
from streams.sync import publications
from streams.sync.publications import Publication

log = logging.getLogger("orderstream.worker")
faust_tuning.apply()
fetch_wait.install()

API_INPUT = "api"  # input name of commits made by operator requests rather than a topic
TIMER_INPUT = "timer"  # ...and by timers (reservation TTLs, SLA deadlines)
# Envelopes shrink as they fan out (each stage splits its output over every partition: 500 raw
# orders reach the order stage as envelopes of ~8), so a stage takes many at once: one commit
# (fsync) and one output envelope per destination partition for all of them.
ENVELOPE_TAKE = 128  # how long an agent waits to fill a batch when the topic is quiet
# The cyclic GC: a flood decodes and drops ~10 objects per order per stage, so with the default
# gen0 threshold (700) the collector ran every few dozen orders and, through the promotions,
# kept re-scanning the whole long-lived heap (Faust, aiokafka, the modules: ~12 % of a worker in
# py-spy --native). The start-up heap is frozen out of the collector once the worker runs, and
# young collections run less often (their total cost is the same; fewer transient objects survive
# into the older generations).
GC_THRESHOLDS = (20_000, 20, 20)
GC_FREEZE_AFTER_S = 3.0
PURGE_EVERY_S = 5.0  # ended ledger rows: up to PURGE_PAGES pages per SKU partition per tick
PURGE_PAGE = 2000  # rows per commit: the store lock is held for one page at a time
PURGE_PAGES = 5  # 2,000 rows/s per partition, above the rate reservations end in a flood
MALLOC_TRIM_S = 30.0  # returning free heap pages costs a few ms; the budget samples every 2 s


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


def _canonical(message: Any) -> list[CanonicalRecord]:
    return CANONICAL_CODEC.decode(message.value)


def _routed(message: Any) -> list[RoutedRecord]:
    """The dedup stages' view of a canonical envelope: orders left encoded (one decode per
    order in the whole pipeline, by the order stage, instead of three)."""
    return ROUTED_CODEC.decode(message.value)


def _history_facts(message: Any) -> list[HistoryFact]:
    return HISTORY_CODEC.decode(message.value)


def _counts(message: Any) -> list[RecipientCount]:
    return COUNT_CODEC.decode(message.value)


def _letters(message: Any) -> list[tuple[int, list[DeadLetter]]]:
    """Dead letters keep their input offset: it names letters a gateway sent without an id."""
    return [(message.offset, DLQ_CODEC.decode(message.value))]


def _results(message: Any) -> list[ReservationResult]:
    return RESULT_CODEC.decode(message.value)


def _requests(message: Any) -> list[ReserveRequest]:
    return RESERVE_CODEC.decode(message.value)


def _events(message: Any) -> list[OrderEvent | DeadLetter]:
    """``orders.events``: one JSON event per message or NDJSON lines; bad lines dead-lettered."""
    ctype = _headers(message).get("content-type", b"").decode("ascii", "replace").lower()
    lines, _ = split_orders(message.value, ctype)
    out: list[OrderEvent | DeadLetter] = []
    for n, line in lines:
        ev = validate_event(line)
        if isinstance(ev, EventError):
            out.append(
                DeadLetter(
                    stage="order_events",
                    channel="",
                    field=ev.field,
                    reason=f"line {n}: {ev.reason}",
                    payload=line,
                    received_at=int(message.timestamp * 1000),
                )
            )
        else:
            out.append(ev)
    return out


def _refused_letter(event: OrderEvent, refusal: Refusal | str) -> DeadLetter:
    reason = refusal if isinstance(refusal, str) else f"{refusal.reason} (state {refusal.state})"
    return DeadLetter(
        stage="order_events",
        channel="",
        field="event",
        reason=f"{event.event} refused: {reason}",
        payload=msgspec.json.encode(event),
        received_at=event.at,
    )


Decode = Callable[[Any], list[Any]]


class StepResult:
    """What a stage step produced for one partition batch."""

    __slots__ = ("changes", "outputs", "settles", "updates")

    def __init__(
        self,
        updates: list[tuple[bytes, bytes | None]] | None = None,
        outputs: list[Awaitable[Any]] | None = None,
        *,
        settles: list[Settle] | None = None,
        changes: list[OrderChange] | None = None,
    ) -> None:
        self.updates = updates or []  # for the partition store (value None = delete)
        self.outputs = outputs or []  # pending sends, acknowledged before the store commits
        self.settles = settles or []  # journal entries to settle once committed
        self.changes = changes or []


Step = Callable[[Any, list[Any], list[Any]], Awaitable[StepResult]]


class Pipeline:
    """Everything one worker process runs; built once at start-up."""

    def __init__(self, settings: Settings, epoch: str, web_port: int) -> None:
        self.settings = settings
        self.epoch = epoch
        self.partitions = settings.partitions
        self._purged_through: dict[int, bytes] = {}  # SKU partition -> ledger purge position
        data = settings.data_path
        (data / "worker").mkdir(parents=True, exist_ok=True)
        self.app = faust.App(
            settings.app_id,
            broker=settings.broker_url,
            broker_credentials=kafka_client.faust_credentials(settings),
            topic_replication_factor=settings.replication_factor,
            value_serializer="raw",
            key_serializer="raw",
            # Measured in design.md: Tansu holds JoinGroup for half the session timeout.
            broker_session_timeout=settings.session_timeout_s,
            broker_heartbeat_interval=settings.heartbeat_interval_s,
            consumer_auto_offset_reset="earliest",
            topic_partitions=settings.partitions,
            topic_allow_declare=False,  # streams.kafka.cluster creates every topic first
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
        order_state.outbox_epoch = epoch  # unanswered requests of an older epoch: sent again
        self.stores = StoreManager(
            data / "stores",
            epoch,
            settings.bootstrap_servers,
            send=self._send_changelog if settings.changelog_enabled else None,
        )
        aliases = settings.sku_aliases_path
        skus = SkuCatalog.from_toml(aliases) if aliases else SkuCatalog()
        self.ctx = NormaliseContext(
            skus=skus, default_country=settings.default_country, limits=settings.limits
        )
        self.window_ms = int(settings.near_duplicate_window_s * 1000)
        self.grace_ms = int(settings.near_duplicate_grace_s * 1000)
        self.priority_tags = frozenset(settings.priority_tags)
        routing = (
            WarehouseRouting.from_toml(settings.warehouses)
            if settings.warehouses
            else WarehouseRouting.default()
        )
        self.rules_file = RulesFile(settings.rules_path)
        self._rules_error: Any = None
        self.flow = FlowContext(
            SlaPolicy.from_toml(settings.sla_path),
            self.rules_file.rules,
            routing,
            int(settings.reservation_ttl_s * 1000),
        )
        self._register()
        gc.set_threshold(*GC_THRESHOLDS)

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
        keep: list[Publication] | None = None,
    ) -> list[Awaitable[Any]]:
        """Envelopes per partition; ``keep`` collects what was sent (the publication log)."""
        futs = []
        size = self.settings.envelope_max_records
        for part, recs in group_by_partition(records, keys, self.partitions).items():
            for chunk in chunks(recs, size):
                for value in fitting_envelopes(codec, chunk):
                    futs.append(await self._send(topic, part, value, kind))
                    if keep is not None:
                        keep.append(Publication(topic, part, kind, value))
        return futs

    def _kept(self, pubs: list[Publication]) -> list[tuple[bytes, bytes | None]]:
        """The publication-log row for the commit that sent ``pubs`` (embedded broker only:
        an external cluster keeps what it acknowledged)."""
        if not pubs or not self.settings.embedded:
            return []
        return [publications.row(pubs, _now_ms(), self.epoch)]

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

    def _where(self, message: Any) -> str:
        """A gateway message's position, naming its orders' copies (``copy_ref``)."""
        return f"raw:{self.epoch[:8]}:{message.partition}:{message.offset}"

    def _raw(self, message: Any) -> list[RawRecord | DeadLetter]:
        """A raw message's orders, or the dead letter of a message that holds none."""
        recs, bad = normalise.decode_raw_message(
            message.key,
            message.value,
            _headers(message),
            int(message.timestamp * 1000),
            self._where(message),
        )
        return [*recs, *bad]

    async def intake_batch(self, messages: list[Any], topic: str = RAW) -> None:
        """``orders.raw``: normalise, then de-duplicate exactly, in one hop where the keys allow.

        The forwarder puts each journal envelope on the partition of its orders' global ids, so
        an order from the HTTP door meets its partition's ``seen`` store right here: no hop
        between normalisation and exact dedup. A gateway's message (keyed channel:order_no, or
        not keyed) lands wherever its key says; its orders are re-keyed once, through
        ``orders.canonical``, where ``exact_dedup_batch`` reads them. VIP/urgent orders (from
        ``orders.raw.priority``, or tagged with a priority tag) go first in every envelope.
        """
        t0 = time.perf_counter()
        step = partial(self._intake, urgent_lane=topic == RAW_PRIORITY)
        await self._stateful(topic, dedup.EXACT_STORE, self._raw, messages, step)
        metrics.ENVELOPE_SECONDS.labels(normalise.STAGE).observe(time.perf_counter() - t0)

    async def _intake(
        self, store: Any, fresh: list[Any], replayed: list[Any], urgent_lane: bool
    ) -> StepResult:
        if not fresh:
            return StepResult()  # normalised and routed before: the outputs exist
        dead = [r for r in fresh if isinstance(r, DeadLetter)]
        good, rejected = normalise.normalise_records(
            [r for r in fresh if not isinstance(r, DeadLetter)], self.ctx
        )
        for rec in good:
            rec.priority = urgent_lane or self._urgent(rec.order)
        good.sort(key=lambda r: not r.priority)  # stable: VIP first, otherwise arrival order
        ids = [r.order.id.encode() for r in good]
        here: list[CanonicalRecord] = []
        elsewhere: list[CanonicalRecord] = []
        elsewhere_ids: list[bytes] = []
        for rec, oid, part in zip(good, ids, kafka_partitions(ids, self.partitions), strict=True):
            if part == store.partition:
                here.append(rec)
            else:
                elsewhere.append(rec)
                elsewhere_ids.append(oid)
        futs = await self._send_dead(dead + rejected)
        if elsewhere:
            futs += await self._send_grouped(
                CANONICAL, elsewhere, elsewhere_ids, CANONICAL_CODEC, b"canonical"
            )
        result = await self._deduplicate_exactly(store, here)
        # One metric update per channel per batch: multiprocess metrics cost ~3 µs a call.
        for channel, n in Counter(r.order.channel for r in good).items():
            metrics.NORMALISED.labels(channel).inc(n)
        for channel, n in Counter(r.order.channel for r in good if r.origin is None).items():
            metrics.INGESTED.labels(channel, "kafka").inc(n)
        result.outputs += futs
        return result

    async def _deduplicate_exactly(self, store: Any, records: list[Any]) -> StepResult:
        """Exact verdicts against the partition's ``seen`` store; on to the recipient stage."""
        if not records:
            return StepResult()
        out = dedup.exact_envelope(records, store.get_many(dedup.exact_keys(records)))
        futs = await self._send_grouped(
            RECIPIENT, out.records, out.keys, ROUTED_CODEC, b"canonical"
        )
        return StepResult(out.updates, futs)

    def _urgent(self, order: Any) -> bool:
        return bool(self.priority_tags) and not self.priority_tags.isdisjoint(order.tags)

    def _owned_batches(self, topic: str, messages: list[Any]) -> dict[int, list[Any]]:
        """Group by partition, dropping partitions revoked since the batch was taken.

        Their events are redelivered to the new owner; processing them here would reopen a
        store this worker no longer owns (and hold its lock against the owner).
        """
        return {p: ms for p, ms in _by_partition(messages).items() if self._owned(topic, p)}

    async def _stateful(
        self, topic: str, store_name: str, decode: Decode, messages: list[Any], step: Step
    ) -> list[StepResult]:
        """Run ``step`` on each owned partition's records under that partition's store."""
        return list(
            await asyncio.gather(
                *(
                    self._stateful_partition(topic, store_name, decode, p, ms, step)
                    for p, ms in self._owned_batches(topic, messages).items()
                )
            )
        )

    async def _stateful_partition(
        self,
        topic: str,
        store_name: str,
        decode: Decode,
        part: int,
        messages: list[Any],
        step: Step,
    ) -> StepResult:
        """Decode, split off what the store already applied, step, then commit.

        Records at offsets the store has applied (a redelivery after a crash between commit and
        ack) are passed as ``replayed``: their state and outputs exist, only their settles may
        be missing. The commit sends the changelog together with the step's outputs and writes
        the local batch once all are acknowledged (``StoreManager.commit``).
        """
        async with self.stores.using(store_name, part) as store:
            applied = store.applied(topic, self.epoch)
            fresh: list[Any] = []
            replayed: list[Any] = []
            for m in messages:
                (replayed if m.offset <= applied else fresh).extend(decode(m))
            result = await step(store, fresh, replayed)
            if fresh:
                last = max(m.offset for m in messages)
                await self.stores.commit(
                    store,
                    ChangelogEntry(result.updates, topic, Position(self.epoch, last)),
                    outputs=result.outputs,
                )
            else:
                await asyncio.gather(*result.outputs)
        return result

    async def exact_dedup_batch(self, messages: list[Any]) -> None:
        """``orders.canonical``: gateway orders re-keyed by global id (see ``intake_batch``)."""
        t0 = time.perf_counter()

        async def step(store: Any, fresh: list[Any], replayed: list[Any]) -> StepResult:
            return await self._deduplicate_exactly(store, fresh)

        await self._stateful(CANONICAL, dedup.EXACT_STORE, _routed, messages, step)
        metrics.ENVELOPE_SECONDS.labels(dedup.EXACT_STAGE).observe(time.perf_counter() - t0)

    async def recipient_dedup_batch(self, messages: list[Any]) -> None:
        t0 = time.perf_counter()

        async def step(store: Any, fresh: list[Any], replayed: list[Any]) -> StepResult:
            if not fresh:
                return StepResult()
            out, pruned = dedup.recipient_step(
                store, fresh, self.window_ms, self.grace_ms, _now_ms()
            )
            if pruned:
                metrics.WINDOW_PRUNED.inc(pruned)
            if out.uncomparable:
                metrics.UNCOMPARABLE.inc(out.uncomparable)
            futs = await self._send_grouped(UNIQUE, out.records, out.keys, ROUTED_CODEC, b"unique")
            if out.history:  # off the critical path: the order does not wait for its count
                keys = [f.recipient_key for f in out.history]
                futs += await self._send_grouped(
                    HISTORY, out.history, keys, HISTORY_CODEC, b"history"
                )
            return StepResult(out.updates, futs)

        await self._stateful(RECIPIENT, dedup.RECIPIENT_STORE, _routed, messages, step)
        metrics.ENVELOPE_SECONDS.labels(dedup.RECIPIENT_STAGE).observe(time.perf_counter() - t0)

    async def history_batch(self, messages: list[Any]) -> None:
        """``orders.history``: count each recipient's orders in 24 h; counts a rule may act on
        go to the order stage."""
        t0 = time.perf_counter()

        async def step(store: Any, fresh: list[Any], replayed: list[Any]) -> StepResult:
            if not fresh:
                return StepResult()
            threshold = self.flow.rules.history_min  # read per batch: rules may be reloaded
            out = history.history_step(store, fresh, _now_ms(), threshold)
            metrics.HISTORY_FACTS.inc(out.counted)
            futs: list[Awaitable[Any]] = []
            if out.counts:
                metrics.HISTORY_COUNTS_SENT.inc(len(out.counts))
                keys = [c.order_id.encode() for c in out.counts]
                futs = await self._send_grouped(
                    RECIPIENT_COUNTS, out.counts, keys, COUNT_CODEC, b"count"
                )
            return StepResult(out.updates, futs)

        await self._stateful(HISTORY, history.STORE, _history_facts, messages, step)
        metrics.ENVELOPE_SECONDS.labels(history.STAGE).observe(time.perf_counter() - t0)

    async def record_batch(self, messages: list[Any]) -> None:
        t0 = time.perf_counter()
        results = await self._stateful(
            UNIQUE, order_state.STORE, _canonical, messages, self._record
        )
        await self._send_settles([s for r in results for s in r.settles])
        changes = [c for r in results for c in r.changes]
        for kind, n in Counter(c.kind for c in changes).items():
            metrics.RECORDED.labels(kind).inc(n)
        dups = Counter(
            (c.duplicate_rule, c.channel)
            for c in changes
            if c.duplicate_rule and c.kind in ("created", "duplicate_received")
        )
        for (rule, channel), n in dups.items():
            metrics.DUPLICATES.labels(rule, channel).inc(n)
        now = _now_ms()
        latencies: dict[str, list[float]] = {}
        for c in changes:
            if c.kind == "created":
                lane = metrics.lane_of(c.priority)
                latencies.setdefault(lane, []).append((now - c.received_at) / 1000)
        for lane, values in latencies.items():
            metrics.observe_many(metrics.E2E_SECONDS.labels(lane), values)
        metrics.ENVELOPE_SECONDS.labels(order_state.STAGE).observe(time.perf_counter() - t0)

    async def _record(self, store: Any, fresh: list[Any], replayed: list[Any]) -> StepResult:
        """One partition's envelopes: changes out, then state committed, then settles."""
        settles = order_state.settles_of(replayed)
        if not fresh:
            return StepResult(settles=settles)
        held = store.get_many([r.order.id.encode() for r in fresh])
        new_ids = list(
            {r.order.id: None for r, raw in zip(fresh, held, strict=True) if raw is None}
        )
        waiting = store.get_many([order_state.pending_count_key(oid) for oid in new_ids])
        pending = {
            oid: order_state.pending_count(raw)
            for oid, raw in zip(new_ids, waiting, strict=True)
            if raw is not None
        }
        out = order_state.record_envelope(fresh, held, _now_ms(), self.flow, pending)
        futs = await self._send_order_outputs(out)
        return StepResult(
            out.store_updates(), futs, settles=settles + out.settles, changes=out.changes
        )

    async def _send_order_outputs(self, out: order_state.EnvelopeOutcome) -> list[Awaitable[Any]]:
        """Everything an order-stage outcome publishes: changes, review items, alerts, requests."""
        futs: list[Awaitable[Any]] = []
        by_order = (
            (CHANGES, out.changes, CHANGES_CODEC, b"changes"),
            (REVIEW, out.reviews, REVIEW_CODEC, b"review"),
            (ALERTS, out.alerts, ALERT_CODEC, b"alert"),
        )
        kept: list[Publication] = []
        for topic, records, codec, kind in by_order:  # all keyed by order id
            keys = [r.order_id.encode() for r in records]
            keep = kept if topic == CHANGES else None
            futs += await self._send_grouped(topic, records, keys, codec, kind, keep)
        out.updates.update(self._kept(kept))
        for kind, n in Counter(a.kind for a in out.alerts).items():
            metrics.ALERTS.labels(kind).inc(n)
        for b in out.breaches:
            metrics.SLA_BREACHES.labels(b.kind, b.state, str(b.level)).inc()
        for kpi, n in Counter(out.kpis).items():
            if kpi == "flow_break":
                metrics.FLOW_BREAKS.inc(n)
            else:
                metrics.SHIPMENTS.labels("true" if kpi == "shipped_on_time" else "false").inc(n)
        transitions = Counter(c.state for c in out.changes if c.kind in ("event", "created"))
        for state, n in transitions.items():
            metrics.TRANSITIONS.labels(state).inc(n)
        futs += await self._send_requests(out.requests)
        return futs

    async def _send_requests(self, requests: list[ReserveRequest]) -> list[Awaitable[Any]]:
        if not requests:
            return []
        keys = [partition_key(r.sku) for r in requests]
        return await self._send_grouped(RESERVE, requests, keys, RESERVE_CODEC, b"reserve")

    async def reservation_results_batch(self, messages: list[Any]) -> None:
        t0 = time.perf_counter()
        results = await self._stateful(
            RESERVED, order_state.STORE, _results, messages, self._reservation_results
        )
        changes = [c for r in results for c in r.changes]
        for status, n in Counter(c.reservation for c in changes).items():
            metrics.ORDER_RESERVATIONS.labels(status).inc(n)
        metrics.ENVELOPE_SECONDS.labels("reservation_results").observe(time.perf_counter() - t0)

    async def _reservation_results(
        self, store: Any, fresh: list[Any], replayed: list[Any]
    ) -> StepResult:
        if not fresh:
            return StepResult()
        held = store.get_many([r.order_id.encode() for r in fresh])
        out = order_state.apply_reservation_results(fresh, held, _now_ms(), self.flow)
        futs = await self._send_order_outputs(out)
        return StepResult(out.store_updates(), futs, changes=out.changes)

    async def recipient_counts_batch(self, messages: list[Any]) -> None:
        t0 = time.perf_counter()
        await self._stateful(
            RECIPIENT_COUNTS, order_state.STORE, _counts, messages, self._recipient_counts
        )
        metrics.ENVELOPE_SECONDS.labels("recipient_counts").observe(time.perf_counter() - t0)

    async def _recipient_counts(
        self, store: Any, fresh: list[Any], replayed: list[Any]
    ) -> StepResult:
        if not fresh:
            return StepResult()
        ids = [c.order_id for c in fresh]
        held = store.get_many([oid.encode() for oid in ids])
        waiting = store.get_many([order_state.pending_count_key(oid) for oid in ids])
        out = order_state.apply_recipient_counts(fresh, held, waiting, _now_ms(), self.flow)
        recorded = sum(1 for raw in held if raw is not None)
        if recorded:
            metrics.HISTORY_COUNTS_APPLIED.labels("recorded").inc(recorded)
        if recorded < len(held):
            metrics.HISTORY_COUNTS_APPLIED.labels("pending").inc(len(held) - recorded)
        futs = await self._send_order_outputs(out)
        return StepResult(out.store_updates(), futs, changes=out.changes)

    async def forget_stale_counts(self) -> None:
        """Pending recipient counts whose order never came (``PENDING_COUNT_TTL_MS``)."""
        now = _now_ms()
        for part in range(self.partitions):
            if not self._owned(UNIQUE, part):
                continue
            async with self.stores.using(order_state.STORE, part) as store:
                rows = store.scan(order_state.PENDING_COUNT_PREFIX, 500)
                stale = order_state.stale_pending_counts(rows, now)
                if stale:
                    await self.stores.commit(
                        store,
                        ChangelogEntry(
                            [(k, None) for k in stale], TIMER_INPUT, Position(self.epoch, now)
                        ),
                    )

    # -- events (orders.events, HTTP) and SLA timers ---------------------------------------------

    async def events_batch(self, messages: list[Any]) -> None:
        t0 = time.perf_counter()
        await self._stateful(EVENTS, order_state.STORE, _events, messages, self._events)
        metrics.ENVELOPE_SECONDS.labels("order_events").observe(time.perf_counter() - t0)

    async def _events(self, store: Any, fresh: list[Any], replayed: list[Any]) -> StepResult:
        events = [e for e in fresh if isinstance(e, OrderEvent)]
        dead = [d for d in fresh if isinstance(d, DeadLetter)]
        out = order_state.apply_events(
            events, store.get_many([e.order_id.encode() for e in events]), _now_ms(), self.flow
        )
        for event, refusal in out.refusals:
            stale = isinstance(refusal, Refusal) and refusal.stale
            metrics.EVENTS_REFUSED.labels("stale" if stale else "refused").inc()
            if not stale:
                dead.append(_refused_letter(event, refusal))
        futs = await self._send_order_outputs(out)
        futs += await self._send_dead(dead)
        refused = {id(e) for e, _ in out.refusals}
        for name, n in Counter(e.event for e in events if id(e) not in refused).items():
            metrics.EVENTS_APPLIED.labels(name).inc(n)
        return StepResult(out.store_updates(), futs, changes=out.changes)

    async def apply_event_now(self, event: OrderEvent) -> tuple[int, dict[str, Any]]:
        """An event from HTTP, applied by this worker as the order's single writer.

        Answers like the state machine decided: 200 applied (or a repeat / stale: nothing to
        do), 409 refused with the current state and why, 404 unknown order, 421 not ours.
        """
        part = kafka_partition(event.order_id.encode(), self.partitions)
        if not self._owned(UNIQUE, part):
            return 421, {"reason": "not the owner of this order's partition"}
        async with self.stores.using(order_state.STORE, part) as store:
            now = _now_ms()
            raw = store.get(event.order_id.encode())
            out = order_state.apply_events([event], [raw], now, self.flow)
            if out.refusals:
                _, refusal = out.refusals[0]
                if isinstance(refusal, str):
                    return 404, {"error": {"field": "order_id", "reason": refusal}}
                state = refusal.state
                if refusal.stale:
                    metrics.EVENTS_REFUSED.labels("stale").inc()
                    return 200, {"applied": False, "state": state, "reason": refusal.reason}
                metrics.EVENTS_REFUSED.labels("refused").inc()
                return 409, {
                    "error": {"field": "event", "reason": refusal.reason},
                    "state": state,
                    "event": event.event,
                }
            if not out.records:
                rec = record_decoder.decode(raw) if raw else None
                return 200, {
                    "applied": False,
                    "reason": "event id already applied",
                    "state": rec.state if rec else "",
                }
            futs = await self._send_order_outputs(out)
            await self.stores.commit(
                store,
                ChangelogEntry(out.store_updates(), API_INPUT, Position(self.epoch, now)),
                outputs=futs,
            )
        metrics.EVENTS_APPLIED.labels(event.event).inc()
        rec = out.records[event.order_id]
        return 200, {
            "applied": True,
            "id": event.order_id,
            "state": rec.state,
            "version": rec.version,
        }

    async def fire_due_timers(self) -> None:
        """Deadlines due now in every owned order partition (a range scan of the index)."""
        now = _now_ms()
        for part in range(self.partitions):
            if not self._owned(UNIQUE, part):
                continue
            async with self.stores.using(order_state.STORE, part) as store:
                rows = store.scan_range(DEADLINE_PREFIX, due_until(now), 500)
                if not rows:
                    continue
                due = [decode_deadline(v) for _, v in rows]
                metrics.observe_many(metrics.TIMER_LATENESS, [(now - d.at) / 1000 for d in due])
                out = order_state.fire_deadlines(
                    due, store.get_many([d.order_id.encode() for d in due]), now, self.flow
                )
                futs = await self._send_order_outputs(out)
                await self.stores.commit(
                    store,
                    ChangelogEntry(out.store_updates(), TIMER_INPUT, Position(self.epoch, now)),
                    outputs=futs,
                )

    async def resend_unanswered(self) -> None:
        """Reservation requests whose answer never came (lost with a broker): send again.

        Runs every 10 s over the whole outbox, a page at a time (the store is free between
        pages): after a broker loss under a backlog it holds tens of thousands of requests, and
        a scan of only its first page left the rest pending for good."""
        now = _now_ms()
        page = 5000
        for part in range(self.partitions):
            start = order_state.OUTBOX_PREFIX
            while self._owned(UNIQUE, part):
                async with self.stores.using(order_state.STORE, part) as store:
                    rows = store.scan(order_state.OUTBOX_PREFIX, page, start)
                    requests, updates = order_state.due_resends(rows, now, self.epoch)
                    if requests:
                        log.warning(
                            "partition %d: %d reservation requests unanswered, resending",
                            part,
                            len(requests),
                        )
                        metrics.RESERVATION_RESENDS.inc(len(requests))
                        futs = await self._send_requests(requests)
                        await self.stores.commit(
                            store,
                            ChangelogEntry(updates, TIMER_INPUT, Position(self.epoch, now)),
                            outputs=futs,
                        )
                if len(rows) < page:
                    break
                start = rows[-1][0] + b"\x00"

    async def republish_unread(self) -> None:
        """Changes the sync hub had not read when a broker epoch ended: send them again.

        Also deletes what the hub has read (``streams.sync.publications``). Runs every few seconds;
        only with the embedded broker."""
        if not self.settings.embedded:
            return
        through = publications.read_through(self.settings.data_path)
        for store_name, topic in ((order_state.STORE, UNIQUE), (reserve.STORE, RESERVE)):
            for part in range(self.partitions):
                if self._owned(topic, part):
                    async with self.stores.using(store_name, part) as store:
                        await self._sweep_publications(store, through)

    async def _sweep_publications(self, store: Any, through: dict[str, int]) -> None:
        now = _now_ms()
        _, start = store.scan_hints.get(publications.PREFIX, (0, publications.PREFIX))
        done = publications.sweep(
            store.iter_keys(start, publications.END), self.epoch, through, now
        )
        store.scan_hints[publications.PREFIX] = (0, done.next_start)
        if not done.delete and not done.resend:
            return
        updates: list[tuple[bytes, bytes | None]] = [(k, None) for k in done.delete + done.resend]
        pubs: list[Publication] = []
        for key, value in zip(done.resend, store.get_many(done.resend), strict=True):
            got = publications.decode_pubs(value) if value is not None else []
            if got is None:
                log.error("%s: undecodable publication row %r dropped", store.name, key[:11])
                continue
            pubs += got
        futs = [await self._send(p.topic, p.partition, p.value, p.kind) for p in pubs]
        if pubs:
            log.warning(
                "%s partition %d: %d messages of changes unread when the broker epoch ended:"
                " sending them again",
                store.name,
                store.partition,
                len(pubs),
            )
            metrics.CHANGES_RESENT.inc(len(pubs))
            updates.append(publications.row(pubs, now, self.epoch))
        await self.stores.commit(
            store, ChangelogEntry(updates, TIMER_INPUT, Position(self.epoch, now)), outputs=futs
        )

    def reload_rules(self) -> None:
        if self.rules_file.poll():
            self.flow.rules = self.rules_file.rules
            log.info("rules reloaded from %s: %d rules", self.rules_file.path, len(self.flow.rules))
            metrics.RULE_RELOADS.labels("ok").inc()
        elif self.rules_file.error is not None and self.rules_file.error is not self._rules_error:
            self._rules_error = self.rules_file.error
            log.error("rules file invalid, keeping the rules in force: %s", self.rules_file.error)
            metrics.RULE_RELOADS.labels("invalid").inc()

    async def order_history(self, order_id: str) -> tuple[int, Any]:
        part = kafka_partition(order_id.encode(), self.partitions)
        if not self._owned(UNIQUE, part):
            return 421, {"reason": "not the owner of this order's partition"}
        async with self.stores.using(order_state.STORE, part) as store:
            if store.get(order_id.encode()) is None:
                return 404, {"error": {"field": "order_id", "reason": "no recorded order"}}
            rows = store.scan(audit_prefix(order_id), 100_000)
        return 200, {"id": order_id, "history": order_state.history(rows)}

    # -- reserve stage (partition = SKU) ---------------------------------------------------------

    async def reserve_batch(self, messages: list[Any]) -> None:
        t0 = time.perf_counter()
        await self._stateful(RESERVE, reserve.STORE, _requests, messages, self._inventory)
        metrics.ENVELOPE_SECONDS.labels(reserve.STAGE).observe(time.perf_counter() - t0)

    async def stock_updates_batch(self, messages: list[Any]) -> None:
        await self._stateful(
            STOCK_UPDATES, reserve.STORE, self._adjustments, messages, self._inventory
        )

    def _adjustments(self, message: Any) -> list[StockAdjustment | DeadLetter]:
        """A WMS message's adjustments; each must name a canonical SKU of this partition."""
        ctype = _headers(message).get("content-type", b"").decode("ascii", "replace").lower()
        received = int(message.timestamp * 1000)
        good, dead = reserve.decode_stock_updates(message.value, ctype, received)
        placed = reserve.check_placement(
            good, message.partition, self.partitions, self.ctx.skus.canonical, received
        )
        return [*placed.good, *dead, *placed.dead]

    async def _inventory(self, store: Any, fresh: list[Any], replayed: list[Any]) -> StepResult:
        requests = [x for x in fresh if isinstance(x, ReserveRequest)]
        adjustments = [x for x in fresh if isinstance(x, StockAdjustment)]
        dead = [x for x in fresh if isinstance(x, DeadLetter)]
        step, _ = await self._apply_inventory(store, requests, adjustments)
        step.outputs += await self._send_dead(dead)
        return step

    async def _apply_inventory(
        self,
        store: Any,
        requests: list[ReserveRequest],
        adjustments: list[StockAdjustment],
        all_or_nothing: bool = False,
    ) -> tuple[StepResult, InventoryOutcome]:
        """Grant/refuse/release in the SKU partition; results out, stock changes out.

        ``all_or_nothing`` (an operator's PUT): if any adjustment is refused, nothing is
        applied or published and the caller answers 409 with the reasons.
        """
        if not requests and not adjustments:
            return StepResult(), apply_batch([], [], {}, _now_ms())
        keys = inventory_lookup_keys(requests, adjustments)
        held = dict(zip(keys, store.get_many(keys), strict=True))
        out = apply_batch(
            requests,
            adjustments,
            held,
            _now_ms(),
            self.settings.untracked_skus,  # type: ignore[arg-type]
        )
        if all_or_nothing and any(a.outcome == "refused" for a in out.adjustment_results):
            return StepResult(), out
        futs = await self._send_grouped(
            RESERVED,
            out.results,
            [r.order_id.encode() for r in out.results],
            RESULT_CODEC,
            b"result",
        )
        kept: list[Publication] = []
        futs += await self._send_grouped(
            STOCK_CHANGES,
            out.stock_changes,
            [partition_key(c.sku) for c in out.stock_changes],
            STOCK_CHANGE_CODEC,
            b"stock_change",
            kept,
        )
        if out.alerts:
            futs += await self._send_grouped(
                STOCK_CHANGES,
                out.alerts,
                [partition_key(a.sku) for a in out.alerts],
                STOCK_ALERT_CODEC,
                b"stock_alert",
                kept,
            )
        out.updates += self._kept(kept)
        for outcome, n in Counter(r.outcome for r in out.results).items():
            metrics.RESERVATIONS.labels(outcome).inc(n)
        for outcome, n in Counter(a.outcome for a in out.adjustment_results).items():
            metrics.STOCK_ADJUSTMENTS.labels(outcome).inc(n)
        if out.alerts:
            metrics.STOCK_ALERTS.inc(len(out.alerts))
        if out.oversold:  # cannot happen: the invariant is checked per grant; shout if it does
            metrics.OVERSOLD.inc(out.oversold)
            log.error("OVERSOLD: %d (SKU, warehouse) levels broke the invariant", out.oversold)
        return StepResult(out.updates, futs), out

    async def expire_reservations(self) -> None:
        """Release reservations whose TTL passed, in every owned SKU partition."""
        now = _now_ms()
        for part in range(self.partitions):
            if not self._owned(RESERVE, part):
                continue
            async with self.stores.using(reserve.STORE, part) as store:
                requests = expired(store.scan(TTL_PREFIX, 500), now)
                if not requests:
                    continue
                step, _ = await self._apply_inventory(store, requests, [])
                await self.stores.commit(
                    store,
                    ChangelogEntry(step.updates, TIMER_INPUT, Position(self.epoch, now)),
                    outputs=step.outputs,
                )

    async def purge_ended_reservations(self) -> None:
        """Drop ledger rows that ended longer ago than the retention (core.inventory.purgeable),
        a few pages per owned SKU partition per tick, committed like any other change."""
        retention_ms = int(self.settings.reservation_retention_s * 1000)
        if not retention_ms:
            return
        now = _now_ms()
        cutoff = now - retention_ms
        end = ENDED_PREFIX + (cutoff + 1).to_bytes(8, "big")
        for part in range(self.partitions):
            if not self._owned(RESERVE, part):
                continue
            for _ in range(PURGE_PAGES):
                async with self.stores.using(reserve.STORE, part) as store:
                    # from past the last purged row: a scan from the prefix would step over
                    # every tombstone left since the last compaction
                    start = self._purged_through.get(part, ENDED_PREFIX)
                    index = store.scan_range(start, end, PURGE_PAGE)
                    ledger = [rkey for _, rkey in index]
                    found = dict(zip(ledger, store.get_many(ledger), strict=True))
                    updates = purgeable(index, found, cutoff)
                    if not updates:
                        break
                    await self.stores.commit(
                        store, ChangelogEntry(updates, TIMER_INPUT, Position(self.epoch, now))
                    )
                self._purged_through[part] = index[-1][0] + b"\x00"
                metrics.RESERVATIONS_PURGED.inc(
                    sum(1 for k, _ in updates if k.startswith(RESERVATION_PREFIX))
                )
                if len(index) < PURGE_PAGE:
                    break

    async def audit_stock(self) -> dict[str, Any]:
        """Recompute each owned SKU level from its reservation ledger (core.inventory.audit)."""
        problems: list[str] = []
        partitions = []
        for part in range(self.partitions):
            if not self._owned(RESERVE, part):
                continue
            async with self.stores.using(reserve.STORE, part) as store:
                problems += inventory_audit(
                    store.scan(STOCK_PREFIX, 10**9), store.scan(RESERVATION_PREFIX, 10**9)
                )
            partitions.append(part)
        return {"partitions": partitions, "problems": problems}

    async def stock_command(
        self, sku: str, adjustments: list[StockAdjustment]
    ) -> tuple[int, dict[str, Any]]:
        """An operator's stock change (or, with no adjustments, a read) at the SKU's owner."""
        part = kafka_partition(partition_key(sku), self.partitions)
        if not self._owned(RESERVE, part):
            return 421, {"reason": "not the owner of this SKU's partition"}
        async with self.stores.using(reserve.STORE, part) as store:
            if adjustments:
                step, out = await self._apply_inventory(store, [], adjustments, True)
                refused = [a for a in out.adjustment_results if a.outcome == "refused"]
                if refused:
                    return 409, {
                        "error": {"field": refused[0].field, "reason": refused[0].reason},
                        "results": [msgspec.structs.asdict(a) for a in out.adjustment_results],
                    }
                now = _now_ms()
                await self.stores.commit(
                    store,
                    ChangelogEntry(step.updates, API_INPUT, Position(self.epoch, now)),
                    outputs=step.outputs,
                )
            raw = store.get(stock_key(sku))
        levels = {} if raw is None else decode_stock(raw).levels
        return 200, {
            "sku": sku,
            "warehouses": {
                wh: {**msgspec.structs.asdict(lv), "available": lv.available, "low": lv.low}
                for wh, lv in levels.items()
            },
        }

    async def store_dead_letter_batch(self, messages: list[Any]) -> None:
        results = await self._stateful(
            DLQ, dead_letters.STORE, _letters, messages, self._store_dead
        )
        await self._send_settles([s for r in results for s in r.settles])

    async def _store_dead(self, store: Any, fresh: list[Any], replayed: list[Any]) -> StepResult:
        updates: dict[bytes, bytes | None] = {}
        settles: list[Settle] = []
        for offset, letters in replayed:
            settles += dead_letters.store_letters(letters, offset)[1]
        for offset, letters in fresh:
            ups, sts = dead_letters.store_letters(letters, offset)
            updates.update(ups)
            settles += sts
        return StepResult(list(updates.items()), settles=settles)

    # -- wiring ----------------------------------------------------------------------------------

    def _register(self) -> None:
        app = self.app
        window = self.settings.batch_window_ms / 1000

        def topic(name: str) -> Any:
            return app.topic(name, partitions=self.partitions)

        def agent(topic: Any, name: str, handler: Any, max_events: int) -> None:
            # take_batches acks a batch only when the loop asks for the next one, i.e. after
            # the handler finished its sends and commits. An exception - or the cancellation
            # of a graceful stop - would still ack it on the way out (the generator's finally),
            # so an unfinished batch ends the process instead: state survives that by design,
            # the supervisor restarts the worker and the batch is redelivered.
            async def run(stream: Any) -> None:
                async for events in take_batches(stream, max_events, window):
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

        # Raw messages may be single gateway orders, so take many; the other topics carry
        # envelopes of up to envelope_max_records each. orders.raw.priority has an agent of its
        # own, so VIP/urgent orders never queue behind a flood on orders.raw.
        agent(topic(RAW), "intake", self.intake_batch, 2000)
        agent(
            topic(RAW_PRIORITY),
            "intake_priority",
            partial(self.intake_batch, topic=RAW_PRIORITY),
            2000,
        )
        agent(topic(CANONICAL), "exact_dedup", self.exact_dedup_batch, ENVELOPE_TAKE)
        agent(topic(RECIPIENT), "recipient_dedup", self.recipient_dedup_batch, ENVELOPE_TAKE)
        agent(topic(HISTORY), "history", self.history_batch, ENVELOPE_TAKE)
        agent(topic(UNIQUE), "order_state", self.record_batch, 16)
        agent(
            topic(RECIPIENT_COUNTS), "recipient_counts", self.recipient_counts_batch, ENVELOPE_TAKE
        )
        agent(topic(RESERVE), "reserve", self.reserve_batch, ENVELOPE_TAKE)
        agent(topic(STOCK_UPDATES), "stock_updates", self.stock_updates_batch, 500)
        agent(topic(RESERVED), "reservation_results", self.reservation_results_batch, ENVELOPE_TAKE)
        agent(topic(EVENTS), "order_events", self.events_batch, 500)
        agent(topic(DLQ), "dead_letters", self.store_dead_letter_batch, ENVELOPE_TAKE)

        store_of = {
            RAW: dedup.EXACT_STORE,
            RAW_PRIORITY: dedup.EXACT_STORE,
            CANONICAL: dedup.EXACT_STORE,
            RECIPIENT: dedup.RECIPIENT_STORE,
            HISTORY: history.STORE,
            UNIQUE: order_state.STORE,
            RESERVE: reserve.STORE,
            DLQ: dead_letters.STORE,
        }

        @app.on_partitions_revoked.connect
        async def on_revoked(sender: Any, revoked: Iterable[Any], **_: Any) -> None:
            for tp in revoked:
                name = store_of.get(tp.topic)
                if name is not None:
                    await self.stores.release(name, tp.partition)

        @app.task
        async def freeze_heap() -> None:
            # once the worker's own long-lived objects exist (consumer, producer, agents)
            await asyncio.sleep(GC_FREEZE_AFTER_S)
            gc.collect()
            gc.freeze()

        @app.timer(interval=1.0)
        async def reservation_ttls() -> None:
            await self.expire_reservations()

        @app.timer(interval=self.settings.sla_tick_s)
        async def sla_timers() -> None:
            await self.fire_due_timers()

        @app.timer(interval=PURGE_EVERY_S)
        async def reservation_purge() -> None:
            await self.purge_ended_reservations()

        @app.timer(interval=10.0)
        async def reservation_resends() -> None:
            await self.resend_unanswered()

        @app.timer(interval=5.0)
        async def changes_republish() -> None:
            await self.republish_unread()

        @app.timer(interval=MALLOC_TRIM_S)
        async def release_free_memory() -> None:
            # after a backlog the heap's freed pages stay resident until trimmed
            malloc.trim()

        @app.timer(interval=60.0)
        async def pending_counts_expiry() -> None:
            await self.forget_stale_counts()

        @app.timer(interval=2.0)
        async def rules_reload() -> None:
            self.reload_rules()

        @app.page("/internal/orders/{order_id}")
        async def get_order(web: Any, request: Any, order_id: str) -> Any:
            found, searched = await self.lookup_order(order_id)
            if found is not None:
                return aioweb.Response(body=found, content_type="application/json")
            if not searched:  # owns neither partition that could hold it
                return aioweb.json_response({"reason": "not the owner"}, status=421)
            return aioweb.json_response({"found": False, "searched": searched}, status=404)

        @app.page("/internal/orders-window")
        async def orders_window(web: Any, request: Any) -> Any:
            q = request.query
            body = await self.orders_in_window(
                q.get("channel", ""), int(q.get("since", "0")), int(q.get("until", "0"))
            )
            return _json_response(200, body)

        @app.page("/internal/orders-known")
        class Known(View):  # POST: a file import's batch of ids can be thousands long
            async def post(self, request: Any) -> Any:
                ids = msgspec.json.decode(await request.read(), type=list[str])
                return _json_response(200, await pipeline.known_orders(ids))

        @app.page("/internal/commit")
        class Commit(View):
            # A broker swap's drain reads the group's committed offsets: commit what is
            # processed now rather than at Faust's next round (every 2.8 s).
            async def post(self, request: Any) -> Any:
                await pipeline.app.consumer.commit()
                return _json_response(200, {"committed": True})

        @app.page("/internal/review")
        async def list_review(web: Any, request: Any) -> Any:
            limit = int(request.query.get("limit", "100"))
            body = msgspec.json.encode(await self.review_queue(limit))
            return aioweb.Response(body=body, content_type="application/json")

        pipeline = self

        @app.page("/internal/orders/{order_id}/events")
        class Events(View):  # a class: function pages only answer GET
            async def post(self, request: Any, order_id: str) -> Any:
                event = validate_event(await request.read())
                if isinstance(event, EventError):
                    return _json_response(400, {"error": msgspec.structs.asdict(event)})
                return _json_response(*await pipeline.apply_event_now(event))

        @app.page("/internal/orders/{order_id}/history")
        async def order_history(web: Any, request: Any, order_id: str) -> Any:
            return _json_response(*await self.order_history(order_id))

        @app.page("/internal/stock/{sku}")
        class Stock(View):
            async def get(self, request: Any, sku: str) -> Any:
                return _json_response(*await pipeline.stock_command(sku, []))

            async def post(self, request: Any, sku: str) -> Any:
                adjustments = msgspec.json.decode(await request.read(), type=list[StockAdjustment])
                return _json_response(*await pipeline.stock_command(sku, adjustments))

        @app.page("/internal/stock-audit")
        async def stock_audit(web: Any, request: Any) -> Any:
            return _json_response(200, await self.audit_stock())

        @app.page("/internal/dead-letters")
        async def list_dead_letters(web: Any, request: Any) -> Any:
            limit = int(request.query.get("limit", "100"))
            body = msgspec.json.encode(await self.recent_dead_letters(limit))
            return aioweb.Response(body=body, content_type="application/json")

        @app.page("/internal/stock-levels")
        async def stock_levels(web: Any, request: Any) -> Any:
            limit = int(request.query.get("limit", "500"))
            return _json_response(200, await self.stock_levels(limit))

        @app.page("/internal/sla")
        async def sla(web: Any, request: Any) -> Any:
            limit = int(request.query.get("limit", "500"))
            return _json_response(200, await self.sla_board(limit))

        @app.page("/internal/dead-letters/{key}")
        async def one_dead_letter(web: Any, request: Any, key: str) -> Any:
            try:
                raw_key = bytes.fromhex(key)
            except ValueError:
                return _json_response(404, {"error": {"field": "key", "reason": "not hex"}})
            return _json_response(*await self.dead_letter(raw_key))

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

    async def lookup_order(self, order_id: str) -> tuple[bytes | None, list[str]]:
        """The order's view (or its dead letter), and which of the two stores that could hold
        it this worker owns: "not found" is only an answer once both owners said so."""
        part = kafka_partition(order_id.encode(), self.partitions)
        key = order_id.encode()
        searched = []
        if self._owned(UNIQUE, part):
            searched.append(order_state.STORE)
            async with self.stores.using(order_state.STORE, part) as store:
                raw = store.get(key)
            if raw is not None:
                return msgspec.json.encode(order_state.order_view(record_decoder.decode(raw))), []
        if self._owned(DLQ, part):
            searched.append(dead_letters.STORE)
            async with self.stores.using(dead_letters.STORE, part) as store:
                raw = store.get(dead_letters.BY_ID + key)
            if raw is not None:
                letter = _letter_json(dead_letters.letter_decoder.decode(raw))
                view = {"id": order_id, "state": "dead_lettered", "dead_letter": letter}
                return msgspec.json.encode(view), []
        return None, searched

    async def known_orders(self, ids: list[str]) -> dict[str, Any]:
        """Of ``ids``, those whose order-stage partition this worker owns, and a summary of each
        it holds: imports and reconciliations classify what they bring from the owners'
        answers (an id nobody owned is asked again)."""
        by_part: dict[int, list[str]] = {}
        for oid in ids:
            by_part.setdefault(kafka_partition(oid.encode(), self.partitions), []).append(oid)
        owned: list[str] = []
        held: dict[str, HeldSummary] = {}
        for part, some in by_part.items():
            if not self._owned(UNIQUE, part):
                continue
            owned += some
            async with self.stores.using(order_state.STORE, part) as store:
                for oid in some:
                    raw = store.get(oid.encode())
                    if raw is not None:
                        rec = record_decoder.decode(raw)
                        held[oid] = summary_of(rec.order, rec.state)
        return {"owned": owned, "held": held}

    async def orders_in_window(self, channel: str, since: int, until: int) -> dict[str, Any]:
        """A channel's orders created in [since, until) on this worker's partitions, with the
        partitions it searched: a reconciliation flags those the channel did not list. A scan of
        the order store, paid once per reconciliation pass."""
        found: list[tuple[str, str, int]] = []
        searched: list[int] = []
        for part in range(self.partitions):
            if not self._owned(UNIQUE, part):
                continue
            searched.append(part)
            async with self.stores.using(order_state.STORE, part) as store:
                start: bytes | None = None
                while True:
                    rows = store.scan(b"os_", 5000, start)
                    for key, raw in rows:
                        head = order_state.window_head(raw)
                        if head.channel == channel and since <= head.created_at < until:
                            found.append((key.decode(), head.channel_order_no, head.created_at))
                    if len(rows) < 5000:
                        break
                    start = rows[-1][0] + b"\x00"
                await asyncio.sleep(0)  # a big store: let the worker's agents run between parts
        return {"searched": searched, "orders": found}

    async def review_queue(self, limit: int) -> list[ReviewItem]:
        out: list[ReviewItem] = []
        for part in range(self.partitions):
            if self._owned(UNIQUE, part):
                async with self.stores.using(order_state.STORE, part) as store:
                    rows = store.scan(order_state.REVIEW_PREFIX, limit)
                out += [order_state.review_decoder.decode(v) for _, v in rows]
        out.sort(key=lambda r: r.held_at)
        return out[:limit]

    async def recent_dead_letters(self, limit: int) -> list[dict[str, Any]]:
        out: list[tuple[bytes, dict[str, Any]]] = []
        for part in range(self.partitions):
            if not self._owned(DLQ, part):
                continue
            async with self.stores.using(dead_letters.STORE, part) as store:
                rows = store.scan_last(dead_letters.BY_TIME, limit)
            out += [
                (k, {"key": k.hex(), **_letter_json(dead_letters.letter_decoder.decode(v))})
                for k, v in rows
            ]
        out.sort(key=lambda kv: kv[0], reverse=True)
        return [v for _, v in out[:limit]]

    async def stock_levels(self, limit: int) -> list[dict[str, Any]]:
        """Every SKU level on this worker's partitions, low ones first (the console's stock
        view); a scan of the stock records only, not the reservation ledger."""
        out: list[dict[str, Any]] = []
        for part in range(self.partitions):
            if not self._owned(RESERVE, part):
                continue
            async with self.stores.using(reserve.STORE, part) as store:
                rows = store.scan(STOCK_PREFIX, 100_000)
            for key, raw in rows:
                levels = decode_stock(raw).levels
                warehouses = {
                    wh: {**msgspec.structs.asdict(lv), "available": lv.available, "low": lv.low}
                    for wh, lv in levels.items()
                }
                low = any(lv.low for lv in levels.values())
                out.append(
                    {"sku": key[len(STOCK_PREFIX) :].decode(), "low": low, "warehouses": warehouses}
                )
        out.sort(key=lambda r: (not r["low"], r["sku"]))
        return out[:limit]

    async def sla_board(self, limit: int) -> list[dict[str, Any]]:
        """Orders with armed SLA timers, soonest due first, with their state and the time they
        must ship by: the console's SLA view (breaches, escalations, red and yellow lights)."""
        out: list[dict[str, Any]] = []
        for part in range(self.partitions):
            if not self._owned(UNIQUE, part):
                continue
            async with self.stores.using(order_state.STORE, part) as store:
                rows = store.scan(DEADLINE_PREFIX, limit)
                seen: dict[str, dict[str, Any]] = {}
                for _key, raw in rows:
                    d = decode_deadline(raw)
                    entry = seen.get(d.order_id)
                    if entry is None:
                        rec_raw = store.get(d.order_id.encode())
                        if rec_raw is None:
                            continue
                        rec = record_decoder.decode(rec_raw)
                        entry = seen[d.order_id] = {
                            "id": d.order_id,
                            "channel": rec.order.channel,
                            "order_no": rec.order.channel_order_no,
                            "state": rec.state,
                            "state_since": rec.state_since,
                            "ship_by": ship_by(rec, self.flow.policy),
                            "timers": [],
                        }
                    entry["timers"].append(
                        {
                            "kind": d.kind,
                            "state": d.state,
                            "at": d.at,
                            "since": d.since,
                            "level": d.level,
                        }
                    )
            out += seen.values()
        out.sort(key=lambda e: min(t["at"] for t in e["timers"]))
        return out[:limit]

    async def dead_letter(self, key: bytes) -> tuple[int, dict[str, Any]]:
        """One dead letter by its time key, from whichever owned partition holds it (a replay
        reads it back to journal its payload again)."""
        if not key.startswith(dead_letters.BY_TIME):
            return 404, {"error": {"field": "key", "reason": "not a dead letter's key"}}
        searched = False
        for part in range(self.partitions):
            if not self._owned(DLQ, part):
                continue
            searched = True
            async with self.stores.using(dead_letters.STORE, part) as store:
                raw = store.get(key)
            if raw is not None:
                return 200, {
                    "key": key.hex(),
                    **_letter_json(dead_letters.letter_decoder.decode(raw)),
                }
        return (404 if searched else 421), {"error": {"field": "key", "reason": "not here"}}


def _json_response(status: int, payload: Any) -> aioweb.Response:
    return aioweb.Response(
        status=status, body=msgspec.json.encode(payload), content_type="application/json"
    )


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
