"""Topics and broker epochs.

The embedded broker forgets everything when it restarts. A marker record on ``orderstream.epoch``
names the broker's lifetime: absent marker = fresh broker. Offsets stored anywhere belong to an
epoch; when the epoch changes, the RocksDB stores and the ingest journal are the truth and the
journal replays whatever no terminal stage has recorded yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, TopicAlreadyExistsError

from streams.kafka import client as kafka_client
from streams.kafka.topics import EPOCH, TopicSpec

log = logging.getLogger("orderstream.cluster")


class ClusterError(RuntimeError):
    pass


async def _admin(bootstrap: str) -> AIOKafkaAdminClient:
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap, request_timeout_ms=5000, **kafka_client.options()
    )
    await admin.start()
    return admin


async def create_topics(bootstrap: str, specs: list[TopicSpec], repair: bool = False) -> list[str]:
    """Create missing topics with their partition counts; refuse to run on a wrong count.

    ``repair``: only after a broker came back empty. A client of the previous epoch that was
    still sending (a worker's changelog or output, before it noticed) makes the broker
    auto-create that topic with its default count; what it holds is only that client's stray
    records, which the journal and the stores replay anyway. Such a topic is deleted and created
    again with the right count. Without ``repair`` (start-up, a real cluster) a wrong count is
    an error: orderstream never deletes a topic it did not just lose.
    """
    if repair:
        wrong = await _wrong_counts(bootstrap, specs)
        if wrong:
            log.warning("recreating topics auto-created with the wrong partition count: %s", wrong)
            admin = await _admin(bootstrap)
            try:
                await admin.delete_topics(wrong)
            finally:
                await admin.close()
            await asyncio.sleep(0.5)
    admin = await _admin(bootstrap)
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs if s.name not in existing]
        created = []
        if missing:
            resp = await admin.create_topics(
                [
                    NewTopic(s.name, s.partitions, s.replication, topic_configs=s.configs)
                    for s in missing
                ]
            )
            for name, code, msg in resp.topic_errors:
                if code == 0:
                    created.append(name)
                elif code != TopicAlreadyExistsError.errno:
                    raise ClusterError(f"cannot create topic {name}: error {code} {msg}")
        described = await admin.describe_topics([s.name for s in specs])
        counts = {t["topic"]: len(t["partitions"]) for t in described}
        for s in specs:
            if counts.get(s.name) != s.partitions:
                raise ClusterError(
                    f"topic {s.name} has {counts.get(s.name)} partitions, expected {s.partitions}"
                    " (was it auto-created by a client before orderstream created it?)"
                )
        return created
    finally:
        await admin.close()


class EpochUnread(KafkaError):
    """The epoch topic exists but no record came back in time: slow broker, or still empty.

    Never to be taken for "fresh broker": under a flood a slow fetch would otherwise trigger a
    full recovery (workers killed, journal replayed).
    """


async def read_epoch(bootstrap: str, attempts: int = 4) -> str | None:
    """The epoch marker; None when the epoch topic does not exist (a fresh broker)."""
    admin = await _admin(bootstrap)
    consumer = kafka_client.reader(bootstrap, 50)
    try:
        await consumer.start()
        return await _read_marker(admin, consumer, attempts)
    finally:
        await admin.close()
        await consumer.stop()


async def _read_marker(
    admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer, attempts: int
) -> str | None:
    if EPOCH not in set(await admin.list_topics()):
        return None
    tp = TopicPartition(EPOCH, 0)
    if tp not in consumer.assignment():
        consumer.assign([tp])
    await consumer.seek_to_beginning(tp)
    for _ in range(attempts):  # an empty topic answers each fetch after the fetch wait
        batch = await consumer.getmany(tp, timeout_ms=100, max_records=1)
        for msgs in batch.values():
            if msgs:
                return msgs[0].value.decode()
    raise EpochUnread(f"{EPOCH} exists but returned no marker")


async def _wrong_counts(bootstrap: str, specs: list[TopicSpec]) -> list[str]:
    admin = await _admin(bootstrap)
    try:
        existing = set(await admin.list_topics())
        present = [s for s in specs if s.name in existing]
        if not present:
            return []
        described = await admin.describe_topics([s.name for s in present])
        counts = {t["topic"]: len(t["partitions"]) for t in described}
        return [s.name for s in present if counts.get(s.name) != s.partitions]
    finally:
        await admin.close()


async def ensure_cluster(bootstrap: str, specs: list[TopicSpec], repair: bool = False) -> str:
    """Create every topic, then agree on the epoch: the first marker record written wins."""
    await create_topics(bootstrap, specs, repair)
    try:
        epoch = await read_epoch(bootstrap)
        if epoch:
            return epoch
    except EpochUnread:
        pass  # empty (or slow: a second marker is harmless, the first one written wins)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", **kafka_client.options())
    await producer.start()
    try:
        await producer.send_and_wait(EPOCH, uuid.uuid4().hex.encode(), partition=0)
    finally:
        await producer.stop()
    try:
        epoch = await read_epoch(bootstrap, attempts=50)
    except EpochUnread:
        epoch = None
    if not epoch:
        raise ClusterError("wrote the broker epoch marker but cannot read it back")
    log.info("new broker epoch %s", epoch)
    return epoch


async def wait_for_broker(bootstrap: str, timeout: float) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    last: Exception | None = None
    while asyncio.get_running_loop().time() < deadline:
        try:
            admin = await _admin(bootstrap)
            await admin.close()
            return
        except (KafkaError, OSError) as exc:
            last = exc
            await asyncio.sleep(0.25)
    raise ClusterError(f"broker {bootstrap} not reachable within {timeout}s: {last}")


class EpochProbe:
    """The supervisor's look at the broker's epoch, every 2 s, over clients it keeps.

    A fresh admin client and consumer per probe (as ``read_epoch`` makes) cost both sides a TCP
    handshake, ApiVersions and metadata each time: one new connection a second on an idle
    service. These two live until a probe fails, and are then made again.
    """

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def probe(self) -> tuple[bool, str | None]:
        """(reachable, epoch) without raising."""
        try:
            return True, await asyncio.wait_for(self._read(), 5)
        except (TimeoutError, KafkaError, OSError):
            await self.close()
            return False, None

    async def _read(self) -> str | None:
        if self._admin is None:
            self._admin = await _admin(self.bootstrap)
        if self._consumer is None:
            self._consumer = kafka_client.reader(self.bootstrap, 50)
            await self._consumer.start()
        return await _read_marker(self._admin, self._consumer, attempts=4)

    async def close(self) -> None:
        """Against a dead broker a client's close can hang: give each a second."""
        clients = [c for c in (self._admin, self._consumer) if c is not None]
        self._admin = self._consumer = None
        for client in clients:
            stop = client.close if isinstance(client, AIOKafkaAdminClient) else client.stop
            with contextlib.suppress(Exception):
                await asyncio.wait_for(stop(), 1)
