"""Moves journal entries to the broker as envelopes, and trims entries once settled.

Forwarding is at-least-once: a broker outage, a restart of this process or a fresh broker epoch
resets the cursor and re-sends what is still in the journal; the order stage is idempotent on the
global id, so a re-sent order is recognised, not recorded twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import msgspec
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from streams import metrics
from streams.ingest.journal import IngestJournal, JournalEntry
from streams.kafka import client as kafka_client
from streams.kafka.envelope import (
    DLQ_CODEC,
    ENVELOPE_HEADER,
    RAW_CODEC,
    SETTLE_CODEC,
    DeadLetter,
    Origin,
    RawRecord,
    group_by_partition,
)
from streams.kafka.topics import DLQ, RAW, RAW_PRIORITY, SETTLED
from streams.settings import Settings

log = logging.getLogger("orderstream.forwarder")

READ_BATCH = 5000  # entries read from the journal per round
SEND_TIMEOUT_S = 30.0
REFORWARD_AFTER_S = 120.0  # an unsettled entry this old (and not moving) is forwarded again
# Under sustained load (entries arrived while the previous round was in flight), wait this long
# before reading unless a full round is already waiting: rounds of a few records cost the
# forwarder, the broker and every stage a fixed overhead per envelope, which at one order per
# request dominated. After an idle spell the first entries go at once.
COALESCE_S = 0.03
COALESCE_RECORDS = 2000  # a hung broker must not hold the forwarder forever


# Payload bytes per envelope: well under the producer's max_request_size (4 MiB) whatever the
# orders weigh (up to max_order_bytes each), so one batch of big orders can never be unsendable
# and hold the journal's head forever.
ENVELOPE_MAX_BYTES = 1024 * 1024


def sized_chunks(
    records: list[RawRecord] | list[DeadLetter], max_records: int, max_bytes: int
) -> list[list[Any]]:
    """Envelopes of at most ``max_records`` records and ``max_bytes`` payload bytes (a single
    record bigger than that travels alone)."""
    out: list[list[Any]] = []
    current: list[Any] = []
    weight = 0
    for rec in records:
        n = len(rec.payload)
        if current and (len(current) >= max_records or weight + n > max_bytes):
            out.append(current)
            current, weight = [], 0
        current.append(rec)
        weight += n
    if current:
        out.append(current)
    return out


def make_producer(settings: Settings) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=settings.bootstrap_servers,
        acks="all",
        compression_type=None if settings.compression == "none" else settings.compression,
        linger_ms=settings.forward_linger_ms,
        max_request_size=4 * 1024 * 1024,
        max_batch_size=1024 * 1024,
        request_timeout_ms=15000,
        **kafka_client.options(),
    )


def split_entries(
    entries: list[tuple[int, JournalEntry]], journal_id: str
) -> tuple[list[RawRecord], list[DeadLetter]]:
    raw: list[RawRecord] = []
    dead: list[DeadLetter] = []
    for seq, e in entries:
        origin = Origin(journal_id, seq)
        if e.rejection is None:
            raw.append(RawRecord(e.channel, e.payload, e.received_at, origin))
        else:
            field, reason = e.rejection
            dead.append(
                DeadLetter(
                    stage="ingest",
                    channel=e.channel,
                    field=field,
                    reason=reason,
                    payload=e.payload,
                    received_at=e.received_at,
                    origin=origin,
                )
            )
    return raw, dead


class Forwarder:
    def __init__(self, journal: IngestJournal, settings: Settings) -> None:
        self.journal = journal
        self.settings = settings
        self.cursor = 0  # highest seq the broker acknowledged in this epoch
        self._wakeup = asyncio.Event()
        self.producer: AIOKafkaProducer | None = None
        self._stuck: tuple[int | None, float] = (None, 0.0)  # oldest unsettled seq, seen since
        self.paused = False  # set while the broker is replaced on purpose (memory budget)
        self._sending = False  # a round's send is in flight (``hold`` waits for it)

    def notify(self) -> None:
        self._wakeup.set()

    def forwarded_settled(self, through: int | None = None) -> bool:
        """Everything sent in this epoch (or up to ``through``) has been recorded (settled)."""
        oldest = self.journal.oldest_live()
        return oldest is None or oldest > (self.cursor if through is None else through)

    async def hold(self) -> None:
        """Pause, once the send in flight (if any) is acknowledged: the cursor is exact then."""
        self.paused = True
        while self._sending:
            await asyncio.sleep(0.005)

    async def redirect(self, settings: Settings) -> int:
        """Send what comes next to another broker (a swap); returns the last seq sent before.

        Entries already sent stay with the old broker's pipeline, which records them; the
        cursor is kept, so nothing is sent twice and nothing is skipped."""
        await self.hold()
        self.abandon()
        self.settings = settings
        self.paused = False
        self._wakeup.set()
        return self.cursor

    def replay(self) -> None:
        """Send everything still in the journal again (new broker epoch, or our restart)."""
        log.info("replaying %d unsettled journal entries", self.journal.depth)
        self.cursor = 0
        self._wakeup.set()

    async def _send(self, entries: list[tuple[int, JournalEntry]]) -> None:
        assert self.producer is not None
        raw, dead = split_entries(entries, self.journal.id)
        parts = self.settings.partitions
        size = self.settings.envelope_max_records
        futures = []
        # Raw records are routed by their order id (kafka_partition of the id) so the partition a
        # record travels on matches where the canonical order will live.
        accepted = [e for _, e in entries if e.rejection is None]
        for topic, urgent in ((RAW, False), (RAW_PRIORITY, True)):
            lane = [(r, e) for r, e in zip(raw, accepted, strict=True) if e.priority is urgent]
            if not lane:
                continue
            ids = [e.order_id.encode() for _, e in lane]
            for part, recs in group_by_partition([r for r, _ in lane], ids, parts).items():
                for chunk in sized_chunks(recs, size, ENVELOPE_MAX_BYTES):
                    futures.append(
                        await self.producer.send(
                            topic,
                            RAW_CODEC.encode(chunk),
                            partition=part,
                            headers=[(ENVELOPE_HEADER, b"raw")],
                        )
                    )
        for chunk in sized_chunks(dead, size, ENVELOPE_MAX_BYTES):
            futures.append(
                await self.producer.send(
                    DLQ, DLQ_CODEC.encode(chunk), partition=0, headers=[(ENVELOPE_HEADER, b"dlq")]
                )
            )
        await asyncio.gather(*futures)

    async def run(self) -> None:
        backoff = 0.2
        busy = False  # the previous round found entries waiting: more are on their way
        while True:
            if self.paused:
                await asyncio.sleep(0.01)
                continue
            self._reforward_if_stuck()
            if self.cursor >= self.journal.durable_seq:
                busy = False
                self._wakeup.clear()
                try:
                    await asyncio.wait_for(self._wakeup.wait(), 0.5)
                except TimeoutError:
                    pass
                continue
            if self.journal.live_through(self.cursor) >= self.settings.forward_window:
                # Flow control: the broker holds at most a window of unrecorded orders; the
                # journal (on disk) holds the rest of a flood, a backlog or a replay, so the
                # broker's memory and the workers' fetch buffers track the processing rate.
                await asyncio.sleep(0.02)
                continue
            if busy and self.journal.durable_seq - self.cursor < COALESCE_RECORDS:
                await asyncio.sleep(COALESCE_S)
            busy = True
            durable = self.journal.durable_seq
            entries = [
                e for e in self.journal.read_after(self.cursor, READ_BATCH) if e[0] <= durable
            ]
            if not entries:
                self.cursor = durable  # everything up to it was settled already
                continue
            if self.paused:  # held during the coalescing wait above: the cursor must stay
                continue
            self._sending = True
            try:
                if self.producer is None:
                    self.producer = make_producer(self.settings)
                    await self.producer.start()
                t0 = time.perf_counter()
                await asyncio.wait_for(self._send(entries), SEND_TIMEOUT_S)
                metrics.FORWARD_SECONDS.observe(time.perf_counter() - t0)
            except (TimeoutError, KafkaError, OSError) as exc:
                log.warning("forwarding failed (%s); retrying in %.1fs", exc, backoff)
                self.abandon()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            finally:
                self._sending = False
            backoff = 0.2
            self.cursor = entries[-1][0]
            metrics.FORWARDED.inc(len(entries))

    def _reforward_if_stuck(self) -> None:
        """Re-send from the oldest unsettled entry when it has not settled for a long time.

        Forwarding is acknowledged by the broker, but a record can still fail to be recorded
        (a settle lost in a worker crash, a message the embedded broker dropped); without this
        such an entry would wait for the next restart or broker epoch. A backlog that is being
        worked through moves its oldest entry, so only a truly stuck one triggers this.
        """
        oldest = self.journal.oldest_live()
        now = time.monotonic()
        if oldest is None or oldest > self.cursor:
            self._stuck = (None, now)
            return
        if oldest != self._stuck[0]:
            self._stuck = (oldest, now)
        elif now - self._stuck[1] > REFORWARD_AFTER_S:
            log.warning(
                "journal entry %d unsettled for %.0fs: forwarding again",
                oldest,
                now - self._stuck[1],
            )
            self.cursor = oldest - 1
            self._stuck = (oldest, now)

    def abandon(self) -> None:
        """Drop the producer (closed in the background); the next round makes a new one."""
        if self.producer is not None:
            close_in_background(self.producer)
            self.producer = None


class SettleListener:
    """Reads ``ingest.settled`` and trims the journal of entries a terminal stage recorded."""

    def __init__(self, journal: IngestJournal, settings: Settings) -> None:
        self.journal = journal
        self.settings = settings
        self.consumer: AIOKafkaConsumer | None = None

    async def run(self) -> None:
        tp = TopicPartition(SETTLED, 0)
        while True:
            try:
                if self.consumer is None:
                    self.consumer = kafka_client.reader(self.settings.bootstrap_servers, 20)
                    await self.consumer.start()
                    self.consumer.assign([tp])
                    await self.consumer.seek_to_beginning(tp)
                batch = await self.consumer.getmany(tp, timeout_ms=500)
            except (KafkaError, OSError) as exc:
                log.warning("settle listener: %s; reconnecting", exc)
                self.abandon()
                await asyncio.sleep(0.5)
                continue
            for msgs in batch.values():
                for msg in msgs:
                    try:
                        settles = SETTLE_CODEC.decode(msg.value)
                    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                        log.error("skipping undecodable settle at offset %d: %s", msg.offset, exc)
                        continue
                    for settle in settles:
                        if settle.journal == self.journal.id:
                            self.journal.settle(settle.seqs)

    def abandon(self) -> None:
        """Drop the consumer (closed in the background; against a dead broker its stop() can
        hang); the next round re-reads ``ingest.settled`` from its beginning."""
        if self.consumer is not None:
            close_in_background(self.consumer)
            self.consumer = None


_closing: set[asyncio.Task[None]] = set()


async def force_close(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    """Close a client without waiting for in-flight requests.

    aiokafka's stop() flushes pending batches (producer) or waits on the running fetch
    (consumer), which never ends against a hung broker. Worse, a client left alive retries its
    batches against the *next* broker on the same address and races our topic creation there
    (Tansu then loses acknowledged messages, design.md). So its tasks are cancelled and its
    connections closed through aiokafka's internals; the journal still holds every entry.
    """
    with contextlib.suppress(Exception):
        if isinstance(client, AIOKafkaProducer):
            client._closed = True
            if client._sender is not None:
                await client._sender.close()
            await client.client.close()
        else:
            client._closed = True
            if client._coordinator is not None:
                await client._coordinator.close()
            if client._fetcher is not None:
                await client._fetcher.close()
            await client._client.close()


def close_in_background(client: AIOKafkaConsumer | AIOKafkaProducer) -> None:
    async def close() -> None:
        try:
            await asyncio.wait_for(force_close(client), 10)
        except (Exception, asyncio.CancelledError):
            log.debug("closing a Kafka client failed", exc_info=True)

    task = asyncio.get_running_loop().create_task(close())
    _closing.add(task)
    task.add_done_callback(_closing.discard)


async def wait_closed(timeout: float = 10.0) -> None:
    """Wait for clients being closed in the background (before a broker restart)."""
    if _closing:
        await asyncio.wait(set(_closing), timeout=timeout)
