"""One Faust default that the embedded broker cannot live with, overridden in one place.

Faust's aiokafka driver builds its worker consumer with ``fetch_max_wait_ms=1500`` hard-coded
(no setting reaches it). Kafka answers a fetch as soon as ``fetch_min_bytes`` (1) are there, but
Tansu holds every fetch for the wait whether or not data is waiting: measured here, produce →
consume took ~200 ms at 500 ms, ~23 ms at 100 ms and ~6.5 ms at 20 ms. With three hops per order
that wait, not CPU, set the pipeline's latency and, with batches processed one at a time, its
throughput. Against a real Kafka cluster a short wait only costs a few more idle fetches.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka

FETCH_MAX_WAIT_MS = 20

_ConsumerThread = faust_aiokafka.AIOKafkaConsumerThread
_create_worker_consumer = _ConsumerThread._create_worker_consumer


def _short_fetch_wait(self: Any, transport: Any) -> Any:
    consumer = _create_worker_consumer(self, transport)
    consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS  # read when the consumer starts its fetcher
    return consumer


def apply() -> None:
    """Idempotent; called once by ``streams.app`` before any consumer exists."""
    _ConsumerThread._create_worker_consumer = _short_fetch_wait
