"""Partition-store changelog recovery against the real broker and real RocksDB files."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from streams.kafka.broker import EmbeddedBroker, free_port
from streams.kafka.cluster import ensure_cluster
from streams.kafka.topics import all_topics
from streams.state.store import ChangelogEntry, Position, StoreManager

pytestmark = pytest.mark.integration


@pytest.fixture
def broker() -> EmbeddedBroker:
    b = EmbeddedBroker(free_port())
    b.start()
    yield b
    b.stop()


def test_a_worker_without_the_local_copy_rebuilds_it_from_the_changelog(
    broker: EmbeddedBroker, tmp_path: Path
) -> None:
    async def scenario() -> None:
        epoch = await ensure_cluster(broker.bootstrap, all_topics(4, "orderstream"))
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap)
        await producer.start()

        async def send(topic: str, partition: int, value: bytes) -> int:
            return (await producer.send_and_wait(topic, value, partition=partition)).offset

        try:
            machine_a = StoreManager(tmp_path / "a", epoch, broker.bootstrap, send)
            async with machine_a.using("orders", 2) as store:
                for i in range(3):
                    updates = [(f"k{i}-{j}".encode(), f"v{i}".encode()) for j in range(700)]
                    await machine_a.commit(
                        store, ChangelogEntry(updates, "orders.canonical", Position(epoch, i))
                    )
                await machine_a.commit(
                    store,
                    ChangelogEntry([(b"k0-0", None)], "orders.canonical", Position(epoch, 3)),
                )
            machine_a.close_all()

            # machine B has no local copy at all: it replays the whole changelog
            machine_b = StoreManager(tmp_path / "b", epoch, broker.bootstrap, send)
            async with machine_b.using("orders", 2) as store:
                assert store.get(b"k0-0") is None  # the delete was replayed too
                assert store.get(b"k0-1") == b"v0"
                assert store.get(b"k2-699") == b"v2"
                assert store.applied("orders.canonical", epoch) == 3
            machine_b.close_all()

            # a copy that is behind replays only what it misses
            shutil.rmtree(tmp_path / "c", ignore_errors=True)
            shutil.copytree(tmp_path / "b", tmp_path / "c")
            machine_b2 = StoreManager(tmp_path / "b", epoch, broker.bootstrap, send)
            async with machine_b2.using("orders", 2) as store:
                await machine_b2.commit(
                    store,
                    ChangelogEntry([(b"new", b"1")], "orders.canonical", Position(epoch, 4)),
                )
            machine_b2.close_all()
            machine_c = StoreManager(tmp_path / "c", epoch, broker.bootstrap, send)
            async with machine_c.using("orders", 2) as store:
                assert store.get(b"new") == b"1"
                assert store.applied("orders.canonical", epoch) == 4
            machine_c.close_all()

            # after a fresh broker epoch the local store is the truth: nothing is replayed
            fresh = StoreManager(tmp_path / "c", "another-epoch", broker.bootstrap, send)
            async with fresh.using("orders", 2) as store:
                assert store.get(b"new") == b"1"
                assert store.applied("orders.canonical", "another-epoch") == -1
            fresh.close_all()
        finally:
            await producer.stop()

    asyncio.run(scenario())
