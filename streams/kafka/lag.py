"""Consumer lag per topic, for operators: the workers' group and the sync hub.

Read from the broker (the group's committed offsets against each partition's end), so it is
the lag a rebalance would replay from, and it covers workers that are down. Offsets count
messages, which here are envelopes of up to ``envelope_max_records`` orders.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Callable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError

from streams import metrics
from streams.ingest.forwarder import close_in_background
from streams.kafka import client as kafka_client
from streams.kafka.topics import consumed_topics
from streams.settings import Settings
from streams.sync.feed import SyncFeed

log = logging.getLogger("orderstream.lag")


async def group_reader(bootstrap: str, group: str) -> AIOKafkaConsumer:
    """A started consumer of ``group`` that never subscribes: it reads the group's offsets."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        **kafka_client.options(),
    )
    try:
        await consumer.start()
    except BaseException:
        close_in_background(consumer)  # a broker that just went away: never leak the client
        raise
    return consumer


async def group_lag(consumer: AIOKafkaConsumer, partitions: int) -> dict[str, int]:
    """Lag of ``consumer``'s group (it must not subscribe: it only reads the group's offsets)."""
    tps = [TopicPartition(t, p) for t in consumed_topics() for p in range(partitions)]
    ends = await consumer.end_offsets(tps)
    # one OffsetFetch per partition (Tansu answers aiokafka's admin variant malformed), all at
    # once: one after another they took 20-80 ms, and a broker swap's drain waits on this
    positions = await asyncio.gather(*(consumer.committed(tp) for tp in tps))
    lag: dict[str, int] = defaultdict(int)
    for tp, position in zip(tps, positions, strict=True):
        lag[tp.topic] += max(0, ends.get(tp, 0) - (position or 0))
    return lag


# With nothing moving (no order accepted, no change published) and no lag at the last probe,
# the group's lag cannot have grown: probe only this often. A probe reads every partition's end
# and committed offset (~20 requests), the largest thing an idle service still asked the broker.
QUIET_PROBE_S = 30.0


class LagMonitor:
    def __init__(
        self,
        settings: Settings,
        feed: SyncFeed,
        activity: Callable[[], object] = lambda: None,
        interval_s: float = 2.0,
    ) -> None:
        self.settings = settings
        self.feed = feed
        self.activity = activity  # changes whenever orders are accepted or changes published
        self.interval_s = interval_s
        self.last: dict[str, int] | None = None  # the workers' lag at the last probe
        self.probes = 0
        self.eager = False  # a drain waits for fresh probes: never skip one meanwhile
        self.consumer: AIOKafkaConsumer | None = None
        self._probed: tuple[float, object] = (0.0, object())

    def _quiet(self) -> bool:
        at, seen = self._probed
        return (
            not self.eager
            and self.last is not None
            and not any(self.last.values())
            and self.activity() == seen
            and time.monotonic() - at < QUIET_PROBE_S
        )

    async def run(self) -> None:
        s = self.settings
        while True:
            if self._quiet():
                await asyncio.sleep(self.interval_s)
                continue
            self._probed = (time.monotonic(), self.activity())
            try:
                if self.consumer is None:
                    self.consumer = await group_reader(s.bootstrap_servers, s.app_id)
                lag = await group_lag(self.consumer, s.partitions)
                self.last = dict(lag)
                self.probes += 1
                for topic, n in lag.items():
                    metrics.CONSUMER_LAG.labels(s.app_id, topic).set(n)
            except (KafkaError, OSError, TimeoutError) as exc:
                log.debug("lag probe failed: %s", exc)
                self.last = None
                self.abandon()
            for topic, n in self.feed.lag().items():
                metrics.CONSUMER_LAG.labels("sync", topic).set(n)
            await asyncio.sleep(self.interval_s)

    def abandon(self) -> None:
        if self.consumer is not None:
            close_in_background(self.consumer)
            self.consumer = None


async def lag_once(settings: Settings) -> dict[str, int]:
    """One reading with a client of its own (e.g. right after the workers stopped)."""
    consumer = await group_reader(settings.bootstrap_servers, settings.app_id)
    try:
        return await group_lag(consumer, settings.partitions)
    finally:
        close_in_background(consumer)
