"""Fetch waits that are short while records flow and long while a consumer is idle.

A Kafka fetch names how long the broker may hold it when no record is there. Tansu holds a fetch
over several partitions for that whole wait even when records arrive meanwhile (measured here: a
record produced to one of 24 fetched partitions reached a consumer waiting 2,000 ms after
2-1,970 ms, median ~600), so a wait of a few ms is what keeps a hop's latency low while orders
flow. But a short wait also makes every idle consumer ask ~50 times a second; each empty fetch
of 24 partitions cost the broker ~2 ms of CPU (10 % of a core at 20 ms, 1 % at 500 ms, 0.3 % at
2,000 ms; the client a third of that). So every consumer of the process keeps the wait it was
built with while records come back, holds it for ``HOLD_S`` after the last one, then doubles it
on each empty fetch up to ``IDLE_WAIT_MS``. The price: the first record after a quiet spell
waits up to ``IDLE_WAIT_MS`` at each idle consumer it crosses; a flow with gaps under
``HOLD_S`` never pays it.
"""

from __future__ import annotations

import time
from typing import Any

from aiokafka.consumer import fetcher as aiokafka_fetcher

IDLE_WAIT_MS = 1000
HOLD_S = 1.0

_Fetcher = aiokafka_fetcher.Fetcher
# Until then every consumer of the process keeps its busy wait even while idle: a standby worker
# (``stay_busy_for``) must take its first records at once when a broker swap sends them.
_busy_until = 0.0
_proc_fetch_request = _Fetcher._proc_fetch_request


def next_wait_ms(current_ms: int, busy_ms: int, got_records: bool, quiet_s: float) -> int:
    """The wait of a consumer's next fetch: its busy wait while records come back and for
    ``HOLD_S`` after the last one, then doubled per empty fetch up to ``IDLE_WAIT_MS``."""
    if got_records or quiet_s <= HOLD_S:
        return busy_ms
    return min(max(IDLE_WAIT_MS, busy_ms), max(busy_ms, 2 * current_ms))


async def _proc_with_backoff(self: Any, assignment: Any, node_id: Any, request: Any) -> bool:
    global _busy_until
    got = await _proc_fetch_request(self, assignment, node_id, request)
    now = time.monotonic()
    if got:
        _busy_until = 0.0
    busy = self.__dict__.setdefault("_busy_wait_ms", self._fetch_max_wait_ms)
    if got or now < _busy_until:
        self._last_records_at = now
    quiet = now - self.__dict__.get("_last_records_at", 0.0)
    self._fetch_max_wait_ms = next_wait_ms(self._fetch_max_wait_ms, busy, got, quiet)
    return got


def stay_busy_for(seconds: float) -> None:
    """Keep the busy wait, records or not, for ``seconds`` (or until records came)."""
    global _busy_until
    _busy_until = time.monotonic() + seconds


def install() -> None:
    """Idempotent; every process calls it once before its first consumer starts."""
    _Fetcher._proc_fetch_request = _proc_with_backoff
