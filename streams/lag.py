"""Consumer lag per topic, for operators: the workers' group and the sync hub.

Read from the broker (the group's committed offsets against each partition's end), so it is
the lag a rebalance would replay from, and it covers workers that are down. Offsets count
messages, which here are envelopes of up to ``envelope_max_records`` orders.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from streams import metrics
from streams.forwarder import close_in_background
from streams.settings import Settings
from streams.sync_feed import SyncFeed
from streams.topics import hot_topics

log = logging.getLogger("orderstream.lag")
_closing: set[asyncio.Future[None]] = set()


async def group_lag(
    admin: AIOKafkaAdminClient, consumer: AIOKafkaConsumer, group: str, partitions: int
) -> dict[str, int]:
    committed = await admin.list_consumer_group_offsets(group)
    tps = [TopicPartition(t, p) for t in hot_topics() for p in range(partitions)]
    ends = await consumer.end_offsets(tps)
    lag: dict[str, int] = defaultdict(int)
    for tp in tps:
        done = committed.get(tp)
        position = done.offset if done is not None and done.offset >= 0 else 0
        lag[tp.topic] += max(0, ends.get(tp, 0) - position)
    return lag


class LagMonitor:
    def __init__(self, settings: Settings, feed: SyncFeed, interval_s: float = 5.0) -> None:
        self.settings = settings
        self.feed = feed
        self.interval_s = interval_s
        self.admin: AIOKafkaAdminClient | None = None
        self.consumer: AIOKafkaConsumer | None = None

    async def run(self) -> None:
        s = self.settings
        while True:
            try:
                if self.admin is None or self.consumer is None:
                    self.admin = AIOKafkaAdminClient(bootstrap_servers=s.bootstrap_servers)
                    await self.admin.start()
                    self.consumer = AIOKafkaConsumer(
                        bootstrap_servers=s.bootstrap_servers, group_id=None
                    )
                    await self.consumer.start()
                lag = await group_lag(self.admin, self.consumer, s.app_id, s.partitions)
                for topic, n in lag.items():
                    metrics.CONSUMER_LAG.labels(s.app_id, topic).set(n)
            except (KafkaError, OSError, TimeoutError) as exc:
                log.debug("lag probe failed: %s", exc)
                self.abandon()
            for topic, n in self.feed.lag().items():
                metrics.CONSUMER_LAG.labels("sync", topic).set(n)
            await asyncio.sleep(self.interval_s)

    def abandon(self) -> None:
        if self.consumer is not None:
            close_in_background(self.consumer)
            self.consumer = None
        if self.admin is not None:
            admin, self.admin = self.admin, None
            task = asyncio.ensure_future(admin.close())
            _closing.add(task)
            task.add_done_callback(_closing.discard)
