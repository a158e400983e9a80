"""A compacted topic read whole into memory: the last value per key is the state.

Every node reads the topic from its start and keeps reading, so a record any node writes is
every node's within about a second (the reader's idle fetch wait). Values are opaque bytes; a
``None`` value (a tombstone) removes the key. Small topics only: membership and configuration.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from streams.ingest.forwarder import close_in_background
from streams.kafka import client as kafka_client

log = logging.getLogger("orderstream.cluster")

Listener = Callable[[dict[str, bytes | None]], None]


class CompactedTable:
    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.tp = TopicPartition(topic, 0)
        self.values: dict[str, bytes] = {}
        self.caught_up = asyncio.Event()  # read to the end at least once since start
        self.listeners: list[Listener] = []
        self._producer: AIOKafkaProducer | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"table-{self.topic}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._producer is not None:
            close_in_background(self._producer)
            self._producer = None

    async def wait_caught_up(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self.caught_up.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def put(self, key: str, value: bytes | None) -> None:
        """Write and wait for the broker's acknowledgement; applied here at once as well, so
        this node answers with it before its reader has come round to it."""
        if self._producer is None:
            self._producer = AIOKafkaProducer(
                bootstrap_servers=self.bootstrap,
                acks="all",
                request_timeout_ms=10000,
                **kafka_client.options(),
            )
            await self._producer.start()
        await self._producer.send_and_wait(self.topic, value, key=key.encode(), partition=0)
        self._apply({key: value})

    def _apply(self, changed: dict[str, bytes | None]) -> None:
        real: dict[str, bytes | None] = {}
        for key, value in changed.items():
            if value is None:
                if self.values.pop(key, None) is not None:
                    real[key] = None
            elif self.values.get(key) != value:
                self.values[key] = value
                real[key] = value
        if real:
            for listener in self.listeners:
                try:
                    listener(real)
                except Exception:
                    log.exception("%s: a listener failed on %s", self.topic, sorted(real))

    async def _run(self) -> None:
        while True:
            consumer = kafka_client.reader(self.bootstrap, 200)
            try:
                await consumer.start()
                consumer.assign([self.tp])
                await consumer.seek_to_beginning(self.tp)
                while True:
                    batch = await consumer.getmany(self.tp, timeout_ms=1000, max_records=5000)
                    changed: dict[str, bytes | None] = {}
                    for msg in batch.get(self.tp, ()):
                        if msg.key is not None:
                            changed[msg.key.decode()] = msg.value
                    self._apply(changed)
                    high = consumer.highwater(self.tp)
                    if high is not None and await consumer.position(self.tp) >= high:
                        self.caught_up.set()
            except asyncio.CancelledError:
                close_in_background(consumer)
                raise
            except (KafkaError, OSError) as exc:
                log.warning("%s: %s; reading again", self.topic, exc)
                close_in_background(consumer)
                await asyncio.sleep(1.0)
