"""Copies ``orders.changes`` and ``stock.changes`` from the broker into the sync log.

Runs in the API process (the one that never restarts on its own), so live subscribers keep their
connections while workers restart or the broker is replaced. Positions are kept per broker epoch
in the sync log itself, committed in the same write as the events: a restart resumes exactly
where the log ends, and a fresh epoch (empty topics) starts its topics from the beginning.

It also says how far it has read, per broker epoch (``streams.sync.publications``): workers keep
what they published until the hub has it, and send again what a dead broker took with it; the copies
this hub already holds (same JSON) are dropped here.

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
from streams import metrics
from streams.ingest.forwarder import close_in_background
from streams.kafka import client as kafka_client
from streams.kafka.envelope import (
    CHANGES_CODEC,
    ENVELOPE_HEADER,
    STOCK_ALERT_CODEC,
    STOCK_CHANGE_CODEC,
    OrderChange,
)
from streams.kafka.topics import CHANGES, STOCK_CHANGES
from streams.settings import Settings
from streams.sync import publications
from streams.sync.cursor import source
from streams.sync.log import NewEvent, SyncEvent, SyncLog

log = logging.getLogger("orderstream.sync")

_json = msgspec.json.Encoder()
# order-change kinds that follow an accepted copy: latency from the door is meaningful for these
# (an "event" change starts at the event, not at the order's acceptance)
_FROM_DOOR = frozenset({"created", "updated", "duplicate_received", "reservation"})


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


def to_event(change: Change, src: int = 0) -> NewEvent:
    data = _json.encode(change)
    if isinstance(change, OrderChange):
        return NewEvent("order", change.order_id, "", change.channel, data, src)
    if isinstance(change, StockChange):
        return NewEvent("stock", change.order_id, change.sku, "", data, src)
    return NewEvent("stock_alert", "", change.sku, "", data, src)


# How many of the newest events a changed epoch checks resent copies against: the workers send
# again what they kept from MARGIN_MS before the hub's read position on; that must fit.
DEDUPE_EVENTS = 100_000
THROUGH_WRITE_S = 1.0


def event_data(ev: SyncEvent) -> bytes:
    """The change's JSON inside an event's body (``{"id":..,"type":..,"data":<this>}``)."""
    return ev.body[ev.body.index(b',"data":') + 8 : -1]


class SyncFeed:
    def __init__(self, log_: SyncLog, settings: Settings) -> None:
        self.log = log_
        self.settings = settings
        self._epoch = ""
        self.consumer: AIOKafkaConsumer | None = None
        self.high_water: dict[TopicPartition, int] = {}
        self.fetches = 0  # completed fetch rounds (shutdown waits for one past the workers')
        self.resent_dropped = 0  # copies of changes the hub already held
        self._low: dict[tuple[str, str], bool] = {}  # (sku, warehouse) -> below alert threshold
        # per partition: ms before which every message of this epoch has been read
        self._through: dict[TopicPartition, int] = {}
        self._read: dict[TopicPartition, int] = {}  # next offset to read, per partition
        self._epochs = publications.read_through(settings.data_path)  # earlier epochs' final
        self._written = 0.0
        self._known: set[int] = set()  # hashes of the newest events' JSON (after a new epoch)
        self._complete = False  # this epoch was read to its end (``read_all``)
        self._tp_index = {tp: i for i, tp in enumerate(self._tps())}

    @property
    def epoch(self) -> str:
        return self._epoch

    @epoch.setter
    def epoch(self, epoch: str) -> None:
        """A new broker epoch: freeze how far the old one was read (workers resend the rest)
        and remember the newest events, so that the resent copies the hub has are dropped."""
        if epoch == self._epoch:
            return
        self.log.set_epoch(epoch)  # a cluster's positions are per epoch
        complete, self._complete = self._complete, False
        if self._epoch:
            self._epochs[self._epoch] = publications.ALL_READ if complete else self.read_through()
        self._epoch = epoch
        self._through.clear()
        self._read.clear()
        self.high_water.clear()  # the old broker's ends say nothing of the new one
        self._epochs.pop(epoch, None)
        self._epochs[epoch] = 0
        self._write_through(force=True)
        if complete:  # nothing will be sent again: no copies to recognise
            self._known = set()
            return
        start = max(self.log.oldest, self.log.head - DEDUPE_EVENTS + 1)
        self._known = {hash(event_data(ev)) for ev in self.log.read(start, DEDUPE_EVENTS)}

    def read_all(self) -> None:
        """This epoch's change topics are read to their end and nothing writes to them any
        more (a broker swap: its workers are gone): workers drop its kept changes at the next
        epoch instead of sending them again."""
        self._complete = True

    def caught_up(self) -> bool:
        """At the end of every change partition, as of the last fetch."""
        return bool(self.high_water) and not any(self.lag().values())

    def read_to_end_since(self, t_ms: float) -> bool:
        """Every change partition was fetched after ``t_ms`` (epoch ms) and is read to the end
        the broker reported then: with its writers gone before ``t_ms``, nothing is unread."""
        consumer = self.consumer
        if consumer is None:
            return False
        for tp in self._tps():
            polled = consumer.last_poll_timestamp(tp)
            high = consumer.highwater(tp)
            if not polled or polled <= t_ms or high is None or self._read.get(tp, 0) < high:
                return False
        return True

    def read_through(self) -> int:
        """ms before which every change of this epoch is here (0: not known yet)."""
        if not self._through or len(self._through) < len(self._tps()):
            return 0
        return min(self._through.values())

    def _write_through(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._written < THROUGH_WRITE_S:
            return
        self._written = now
        if self._epoch:
            self._epochs[self._epoch] = self.read_through()
        try:
            publications.write_through(self.settings.data_path, self._epochs)
        except OSError as exc:
            log.warning("sync feed: cannot write %s: %s", publications.THROUGH_FILE, exc)

    def _tps(self) -> list[TopicPartition]:
        parts = self.settings.partitions
        return [TopicPartition(t, p) for t in (CHANGES, STOCK_CHANGES) for p in range(parts)]

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
        tps = self._tps()
        while True:
            try:
                if self.consumer is None:
                    self.consumer = kafka_client.reader(
                        self.settings.bootstrap_servers,
                        10,
                        max_partition_fetch_bytes=8 * 1024 * 1024,
                    )
                    await self.consumer.start()
                    self.consumer.assign(tps)
                    for tp in tps:
                        pos = self.log.position(self._position_name(tp))
                        self._read[tp] = pos or 0
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
            if batch:
                self._take(batch)
            for tp in tps:
                high = self.consumer.highwater(tp)
                if high is not None:
                    self.high_water[tp] = high
                    polled = self.consumer.last_poll_timestamp(tp)
                    # everything the broker held when it answered that fetch is read
                    if polled and self._read.get(tp, 0) >= high:
                        self._through[tp] = max(self._through.get(tp, 0), polled - 1000)
            self._write_through()
            self.fetches += 1

    def _take(self, batch: dict[TopicPartition, list]) -> None:  # type: ignore[type-arg]
        changes: list[Change] = []
        srcs: list[int] = []  # on a cluster: where each change sits in its topic partition
        sourced = self.log.tps > 0
        positions: dict[str, int] = {}
        for tp, msgs in batch.items():
            if msgs:
                # the producer's timestamp: a worker's row of it is no older (MARGIN_MS)
                newest = max(m.timestamp for m in msgs)
                self._through[tp] = max(self._through.get(tp, 0), newest)
            for msg in msgs:
                kind = dict(msg.headers or ()).get(ENVELOPE_HEADER, b"")
                try:
                    decoded = decode_changes(kind, msg.value)
                    changes += decoded
                    if sourced:
                        at = self._tp_index[tp]
                        srcs += [source(at, msg.offset, j) for j in range(len(decoded))]
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
                self._read[tp] = msgs[-1].offset + 1
        if sourced:
            events = [to_event(c, src) for c, src in zip(changes, srcs, strict=True)]
        else:
            events = [to_event(c) for c in changes]
        if self._known:
            fresh = [i for i, e in enumerate(events) if hash(e.data) not in self._known]
            if len(fresh) < len(events):
                self.resent_dropped += len(events) - len(fresh)
                events = [events[i] for i in fresh]
                changes = [changes[i] for i in fresh]
        self.log.append(events, positions)
        self._observe(changes)

    def _observe(self, changes: list[Change]) -> None:
        now = time.time_ns() // 1_000_000
        latencies: dict[tuple[str, str], list[float]] = defaultdict(list)
        counts: dict[str, int] = defaultdict(int)
        for c in changes:
            if isinstance(c, OrderChange):
                counts["order"] += 1
                if c.kind in _FROM_DOOR:
                    lane = metrics.lane_of(c.priority)
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
