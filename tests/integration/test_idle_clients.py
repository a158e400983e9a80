"""The clients an idle service keeps, against the real embedded broker.

- A consumer whose records stop backs its fetch wait off to ``IDLE_WAIT_MS`` (an idle consumer
  asks the broker about once a second, not fifty times) and a record produced meanwhile still
  arrives, within about one idle wait; then the wait is short again.
- The supervisor's epoch probe keeps its clients between probes and sees a new epoch marker.
"""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.consumer.fetcher import Fetcher

from streams.kafka import fetch_wait
from streams.kafka.broker import EmbeddedBroker
from streams.kafka.cluster import EpochProbe
from streams.kafka.topics import EPOCH
from tests.integration.conftest import free_port

pytestmark = pytest.mark.integration


@pytest.fixture
def broker():  # type: ignore[no-untyped-def]
    b = EmbeddedBroker(free_port())
    b.start()
    try:
        yield b
    finally:
        b.stop()


async def _create(bootstrap: str, topic: str, partitions: int) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, partitions, 1)])
    finally:
        await admin.close()


def test_an_idle_consumer_backs_off_and_still_gets_the_next_record(broker, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # what fetch_wait.install() does, undone after the test for the rest of this process
    monkeypatch.setattr(Fetcher, "_proc_fetch_request", fetch_wait._proc_with_backoff)

    async def run() -> None:
        await _create(broker.bootstrap, "idle.test", 3)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=broker.bootstrap, group_id=None, fetch_max_wait_ms=20
        )
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await consumer.start()
        await producer.start()
        try:
            consumer.assign([TopicPartition("idle.test", p) for p in range(3)])
            await consumer.seek_to_end()
            fetcher = consumer._fetcher
            deadline = time.monotonic() + 10
            while fetcher._fetch_max_wait_ms < fetch_wait.IDLE_WAIT_MS:
                assert time.monotonic() < deadline, fetcher._fetch_max_wait_ms
                await asyncio.sleep(0.2)
            t0 = time.monotonic()
            await producer.send_and_wait("idle.test", b"after a quiet spell", partition=2)
            batch = await consumer.getmany(timeout_ms=5000)
            took = time.monotonic() - t0
            assert [m.value for ms in batch.values() for m in ms] == [b"after a quiet spell"]
            assert took < fetch_wait.IDLE_WAIT_MS / 1000 + 1.0
            # records came back: the next fetch is short again
            deadline = time.monotonic() + 5
            while fetcher._fetch_max_wait_ms != 20:
                assert time.monotonic() < deadline, fetcher._fetch_max_wait_ms
                await asyncio.sleep(0.01)
        finally:
            await producer.stop()
            await consumer.stop()

    asyncio.run(run())


def test_the_epoch_probe_keeps_its_clients_and_sees_a_new_marker(broker) -> None:  # type: ignore[no-untyped-def]
    async def run() -> None:
        probe = EpochProbe(broker.bootstrap)
        try:
            assert await probe.probe() == (True, None)  # no epoch topic yet: a fresh broker
            await _create(broker.bootstrap, EPOCH, 1)
            producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
            await producer.start()
            first = uuid.uuid4().hex
            await producer.send_and_wait(EPOCH, first.encode(), partition=0)
            assert await probe.probe() == (True, first)
            clients = (probe._admin, probe._consumer)
            assert await probe.probe() == (True, first)
            assert (probe._admin, probe._consumer) == clients  # kept, not made again
            await producer.stop()
        finally:
            await probe.close()
        assert probe._admin is None and probe._consumer is None

    asyncio.run(run())


def test_the_epoch_probe_reports_a_dead_broker_unreachable(broker) -> None:  # type: ignore[no-untyped-def]
    async def run() -> None:
        probe = EpochProbe(broker.bootstrap)
        try:
            assert (await probe.probe())[0]
            broker.stop()
            reachable, epoch = await probe.probe()
            assert (reachable, epoch) == (False, None)
        finally:
            await probe.close()

    asyncio.run(run())
