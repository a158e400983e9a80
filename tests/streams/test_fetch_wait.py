from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from streams.kafka import fetch_wait
from streams.kafka.fetch_wait import HOLD_S, IDLE_WAIT_MS, next_wait_ms


def test_records_keep_the_busy_wait() -> None:
    assert next_wait_ms(IDLE_WAIT_MS, 20, True, 0.0) == 20


def test_a_short_gap_keeps_the_busy_wait() -> None:
    assert next_wait_ms(20, 20, False, HOLD_S / 2) == 20


def test_an_idle_consumer_doubles_its_wait_up_to_the_cap() -> None:
    waits = [20]
    for _ in range(12):
        waits.append(next_wait_ms(waits[-1], 20, False, HOLD_S + 1))
    assert waits[:7] == [20, 40, 80, 160, 320, 640, IDLE_WAIT_MS]
    assert set(waits[6:]) == {IDLE_WAIT_MS}


def test_a_wait_longer_than_the_cap_is_never_chosen_for_a_short_busy_wait() -> None:
    assert next_wait_ms(10, 10, False, 10.0) == 20
    assert next_wait_ms(IDLE_WAIT_MS, 5, False, 10.0) == IDLE_WAIT_MS


def test_a_consumer_built_with_a_long_wait_keeps_it() -> None:
    assert next_wait_ms(1500, 1500, False, 10.0) == 1500


def _fetch(fetcher: Any, got: bool) -> None:
    """One fetch round through the installed hook, with a stand-in for aiokafka's."""

    async def original(*_: Any) -> bool:
        return got

    saved = fetch_wait._proc_fetch_request
    fetch_wait._proc_fetch_request = original
    try:
        asyncio.run(fetch_wait._proc_with_backoff(fetcher, None, None, None))
    finally:
        fetch_wait._proc_fetch_request = saved


def test_a_standby_worker_keeps_its_busy_wait_until_records_come() -> None:
    """A broker swap's standby worker must take its first records at once, not after an idle
    consumer's 1 s wait; once records came, idling backs off as usual."""
    fetcher = SimpleNamespace(_fetch_max_wait_ms=20)
    fetch_wait.stay_busy_for(60.0)
    try:
        for _ in range(10):
            _fetch(fetcher, got=False)
        assert fetcher._fetch_max_wait_ms == 20
        _fetch(fetcher, got=True)
        fetcher._last_records_at -= HOLD_S + 1  # a quiet spell after the first records
        _fetch(fetcher, got=False)
        assert fetcher._fetch_max_wait_ms == 40
    finally:
        fetch_wait.stay_busy_for(0.0)
