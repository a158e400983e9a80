"""Topic creation against the real broker: wrong partition counts after a broker came back empty."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient

from streams.kafka.broker import EmbeddedBroker, free_port
from streams.kafka.cluster import ClusterError, ensure_cluster
from streams.kafka.topics import all_topics, changelog_topic

pytestmark = pytest.mark.integration


@pytest.fixture
def broker():  # type: ignore[no-untyped-def]
    b = EmbeddedBroker(free_port())
    b.start()
    yield b
    b.stop()


def test_a_topic_a_stray_client_auto_created_is_repaired_only_when_asked(broker) -> None:  # type: ignore[no-untyped-def]
    specs = all_topics(2, "orderstream")
    stray = changelog_topic("orders")

    async def scenario() -> None:
        # a worker of the previous broker, still sending its changelog, auto-creates the topic
        # with the broker's default partition count (4 on Tansu)
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()
        await producer.send_and_wait(stray, b"stray", partition=0)
        await producer.stop()
        with pytest.raises(ClusterError, match="has 4 partitions, expected 2"):
            await ensure_cluster(broker.bootstrap, specs)
        await ensure_cluster(broker.bootstrap, specs, repair=True)
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        try:
            described = await admin.describe_topics([s.name for s in specs])
        finally:
            await admin.close()
        counts = {t["topic"]: len(t["partitions"]) for t in described}
        assert counts == {s.name: s.partitions for s in specs}

    asyncio.run(scenario())
