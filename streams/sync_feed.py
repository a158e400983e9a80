"""Copies ``orders.changes`` and ``stock.changes`` from the broker into the sync log.

Runs in the API process (the one that never restarts on its own), so live subscribers keep their
connections while workers restart or the broker is replaced. Positions are kept per broker epoch
in the sync log itself, committed in the same write as the events: a restart resumes exactly
where the log ends, and a fresh epoch (empty topics) starts its topics from the beginning.

It also turns what it sees into operator metrics: change-published latency (accepted at the door
until the change is here, ready for subscribers) and the count of stock levels below their alert
threshold.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict

import msgspec
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from core.inventory import StockAlert, StockChange
from streams import kafka_client, metrics
from streams.envelope import (
    CHANGES_CODEC,
    ENVELOPE_HEADER,
    STOCK_ALERT_CODEC,
    STOCK_CHANGE_CODEC,
    OrderChange,
)
from streams.forwarder import close_in_background
from streams.settings import Settings
from streams.sync_log import NewEvent, SyncLog
from streams.topics import CHANGES, STOCK_CHANGES

log = logging.getLogger("orderstream.sync")

_json = msgspec.json.Encoder()
# order-change kinds that follow an accepted copy: latency from the door is meaningful for these
# (an "event" change starts at the event, not at the order's acceptance)
_FROM_DOOR = frozenset({"created", "updated", "duplicate_received", "reservation"})
LANE_OF = {"high": "priority"}


Change = OrderChange | StockChange | StockAlert


def decode_changes(kind: bytes, value: bytes) -> list[Change]:
    """One broker message (an envelope) of either topic; unknown kinds yield nothing."""
    if kind == b"changes":
        return CHANGES_CODEC.decode(value)  # type: ignore[return-value]
    if kind == b"stock_change":
        return STOCK_CHANGE_CODEC.decode(value)  # type: ignore[return-value]
    if kind == b"stock_alert":
        return STOCK_ALERT_CODEC.decode(value)  # type: ignore[return-value]
    return []


def to_event(change: Change) -> NewEvent:
    data = _json.encode(change)
    if isinstance(change, OrderChange):
        return NewEvent("order", change.order_id, "", change.channel, data)
    if isinstance(change, StockChange):
        return NewEvent("stock", change.order_id, change.sku, "", data)
    return NewEvent("stock_alert", "", change.sku, "", data)


class SyncFeed:
    def __init__(self, log_: SyncLog, settings: Settings) -> None:
        self.log = log_
        self.settings = settings
        self.epoch = ""
        self.consumer: AIOKafkaConsumer | None = None
        self.high_water: dict[TopicPartition, int] = {}
        self.fetches = 0  # completed fetch rounds (shutdown waits for one past the workers')
        self._low: dict[tuple[str, str], bool] = {}  # (sku, warehouse) -> below alert threshold

    def _position_name(self, tp: TopicPartition) -> str:
        return f"{self.epoch}:{tp.topic}:{tp.partition}"

    def lag(self) -> dict[str, int]:
        """Messages behind the broker's high-water mark, per topic."""
        out: dict[str, int] = defaultdict(int)
        if self.consumer is None:
            return out
        for tp, high in self.high_water.items():
            pos = self.log.position(self._position_name(tp)) or 0
            out[tp.topic] += max(0, high - pos)
        return out

    async def run(self) -> None:
        parts = self.settings.partitions
        tps = [TopicPartition(t, p) for t in (CHANGES, STOCK_CHANGES) for p in range(parts)]
        while True:
            try:
                if self.consumer is None:
                    self.consumer = AIOKafkaConsumer(
                        bootstrap_servers=self.settings.bootstrap_servers,
                        group_id=None,
                        enable_auto_commit=False,
                        fetch_max_wait_ms=10,  # Tansu holds a fetch this long, data or not
                        max_partition_fetch_bytes=8 * 1024 * 1024,
                        **kafka_client.options(),
                    )
                    await self.consumer.start()
                    self.consumer.assign(tps)
                    for tp in tps:
                        pos = self.log.position(self._position_name(tp))
                        if pos is None:
                            await self.consumer.seek_to_beginning(tp)
                        else:
                            self.consumer.seek(tp, pos)
                batch = await self.consumer.getmany(*tps, timeout_ms=200, max_records=2000)
            except (KafkaError, OSError) as exc:
                log.warning("sync feed: %s; reconnecting", exc)
                self.abandon()
                await asyncio.sleep(0.5)
                continue
            for tp in tps:
                high = self.consumer.highwater(tp)
                if high is not None:
                    self.high_water[tp] = high
            if batch:
                self._take(batch)
            self.fetches += 1

    def _take(self, batch: dict[TopicPartition, list]) -> None:  # type: ignore[type-arg]
        changes: list[Change] = []
        positions: dict[str, int] = {}
        for tp, msgs in batch.items():
            for msg in msgs:
                kind = dict(msg.headers or ()).get(ENVELOPE_HEADER, b"")
                try:
                    changes += decode_changes(kind, msg.value)
                except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                    log.error(
                        "sync feed: skipping undecodable %s message at %s[%d]@%d: %s",
                        kind.decode(errors="replace"),
                        tp.topic,
                        tp.partition,
                        msg.offset,
                        exc,
                    )
            if msgs:
                positions[self._position_name(tp)] = msgs[-1].offset + 1
        self.log.append([to_event(c) for c in changes], positions)
        self._observe(changes)

    def _observe(self, changes: list[Change]) -> None:
        now = time.time_ns() // 1_000_000
        latencies: dict[tuple[str, str], list[float]] = defaultdict(list)
        counts: dict[str, int] = defaultdict(int)
        for c in changes:
            if isinstance(c, OrderChange):
                counts["order"] += 1
                if c.kind in _FROM_DOOR:
                    lane = LANE_OF.get(c.priority, "normal")
                    latencies[(lane, c.kind)].append((now - c.received_at) / 1000)
            elif isinstance(c, StockChange):
                counts["stock"] += 1
                if c.low_stock:
                    self._low[(c.sku, c.warehouse)] = True
                else:
                    self._low.pop((c.sku, c.warehouse), None)
            else:
                counts["stock_alert"] += 1
        for kind, n in counts.items():
            metrics.SYNC_EVENTS.labels(kind).inc(n)
        for (lane, kind), values in latencies.items():
            metrics.observe_many(metrics.CHANGE_PUBLISHED.labels(lane, kind), values)
        metrics.STOCK_BELOW_SAFETY.set(len(self._low))

    def abandon(self) -> None:
        """Drop the consumer (closed in the background: against a dead broker stop() hangs)."""
        if self.consumer is not None:
            close_in_background(self.consumer)
            self.consumer = None
        self.high_water.clear()
