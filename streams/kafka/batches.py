"""Batches of events from a Faust stream that cost nothing while the topic is quiet.

Faust's ``Stream.take_events(max, within)`` wakes its agent every ``within`` whether or not an
event came: with a 5 ms window that is 200 wake-ups a second per agent, and with a dozen agents
per worker most of an idle core. Here the agent sleeps until the first event of a batch arrives
(no timer at all) and only then gives the batch ``within`` to fill up. Acks follow Faust's rule:
the events of a batch are acked when the agent asks for the next batch, i.e. after its handler
finished its sends and commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from mode.utils.aiter import aiter
from mode.utils.futures import notify


async def take_batches(stream: Any, max_: int, within: float) -> AsyncIterator[list[Any]]:
    """Yield lists of up to ``max_`` events: the first waited for without a deadline, the rest
    gathered for at most ``within`` seconds after it."""
    events: list[Any] = []
    arrived = asyncio.Event()  # the batch has its first event
    full = asyncio.Event()  # ...or all ``max_``
    consumed = asyncio.Event()
    consuming: asyncio.Future[None] | None = None
    acks_were = stream.enable_acks

    async def add_to_batch(value: Any) -> Any:
        # A processor of the stream: runs for every event the passive drainer reads.
        nonlocal consuming
        if consuming is not None:  # the agent is handling a batch: hold this event back
            try:
                await consuming
            finally:
                consuming = None
        event = stream.current_event
        if event is None:
            raise RuntimeError("a batched event has no current_event")
        events.append(event)
        arrived.set()
        if len(events) >= max_:
            full.set()
            consumed.clear()
            await stream.wait(consumed)  # never more than max_ events in one batch
        return value

    stream.enable_acks = False  # acked below, once the agent asks for the next batch
    stream.add_processor(add_to_batch)
    stream._enable_passive(aiter(stream.channel))
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(arrived)
            if not full.is_set() and within > 0:
                await stream.wait_for_stopped(full, timeout=within)
            if not events:
                continue
            consuming = stream.loop.create_future()
            try:
                yield list(events)
            finally:
                for event in events:
                    await stream.ack(event)
                events.clear()
                notify(consuming)
                arrived.clear()
                full.clear()
                consumed.set()
    finally:
        stream.enable_acks = acks_were
        stream._processors.remove(add_to_batch)
