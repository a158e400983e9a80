"""The old broker's workers are killed only when nothing is left for them (a swap's drain)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from streams.process import broker_swap


class FakeWorker:
    url = "http://127.0.0.1:1"

    def __init__(self) -> None:
        self.signals: list[int] = []
        self.dead = False

    def alive(self) -> bool:
        return not self.dead

    def start(self) -> None:
        self.dead = False

    def signal(self, sig: int) -> None:
        self.signals.append(sig)
        if sig == signal.SIGKILL:
            self.dead = True


class FakeFeed:
    def __init__(self) -> None:
        self.fetches = 0
        self.behind = False

    def caught_up(self) -> bool:
        return not self.behind

    def read_to_end_since(self, t_ms: float) -> bool:
        return False  # decided by fetch rounds then


class Lags:
    """The old broker's lag, one reading per probe."""

    def __init__(self, readings: list[int | None]) -> None:
        self.readings = readings
        self.probes = 0

    async def lag(self) -> int | None:
        self.probes += 1
        return self.readings.pop(0) if self.readings else 0

    def close(self) -> None:
        pass


async def _drain(readings: list[int | None], unrecorded: Any = lambda: 0) -> tuple[bool, Any]:
    feed = FakeFeed()

    async def fetching() -> None:
        while True:
            feed.fetches += 1
            await asyncio.sleep(0.002)

    fetcher = asyncio.create_task(fetching())
    workers = [FakeWorker(), FakeWorker()]

    async def committed(ws: Any) -> None:
        for w in ws:
            w.signals.append(COMMIT)  # only ever asked while running

    try:
        done = await broker_swap.drain_old(
            workers,  # type: ignore[arg-type]
            unrecorded,
            Lags(readings),  # type: ignore[arg-type]
            feed,  # type: ignore[arg-type]
            stall=1.0,
            commit=committed,
        )
    finally:
        fetcher.cancel()
    return done, workers


COMMIT = 0


def test_quiet_twice_then_still_quiet_while_frozen_kills_the_workers() -> None:
    done, workers = asyncio.run(_drain([3, 0, 0, 0]))
    assert done
    for w in workers:
        # asked to commit before every look, the last one just before the freeze
        assert w.signals == [COMMIT] * 4 + [signal.SIGSTOP, signal.SIGKILL] and w.dead


def test_a_stage_that_moved_while_frozen_is_thawed_and_drained_again() -> None:
    # quiet, quiet, then the frozen read shows a message a stage had on the wire
    done, workers = asyncio.run(_drain([0, 0, 1, 0, 0, 0]))
    assert done
    for w in workers:
        assert w.signals == [COMMIT] * 3 + [signal.SIGSTOP, signal.SIGCONT] + [COMMIT] * 3 + [
            signal.SIGSTOP,
            signal.SIGKILL,
        ]


def test_entries_not_yet_recorded_keep_the_workers_running_while_they_get_recorded() -> None:
    # a backlog: 40 entries, one recorded every probe - far longer than the stall limit (1 s
    # here), but never stalled, so the drain waits it out and ends drained
    left = iter(list(range(40, 0, -1)) + [0] * 1000)
    done, workers = asyncio.run(_drain([], lambda: next(left)))
    assert done and workers[0].dead


def test_a_stalled_pipeline_is_given_up_after_the_stall_limit() -> None:
    done, workers = asyncio.run(_drain([], lambda: 7))
    assert not done and all(w.dead for w in workers)
    assert signal.SIGSTOP not in workers[0].signals


def test_an_unreadable_broker_is_not_taken_for_drained_and_the_drain_times_out() -> None:
    done, workers = asyncio.run(_drain([None] * 10_000))
    assert not done
    assert all(w.dead for w in workers)  # killed anyway: the journal sends again what is left
    assert signal.SIGSTOP not in workers[0].signals
