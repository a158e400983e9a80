"""Changes the sync hub had not read when the embedded broker died still reach subscribers.

The window is made wide on purpose: the API process (home of the sync hub) is stopped with
SIGSTOP while a gateway produces orders straight onto ``orders.raw``; the workers record them
and publish their changes to the broker, which is then SIGKILLed with those changes unread.
After SIGCONT the supervisor recovers onto a new broker epoch and the workers send again, from
their publication log, what the old broker took with it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from typing import Any

import aiohttp
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from tests.integration.conftest import Service
from tests.integration.helpers import expected_id, shopify_order
from tests.integration.test_sync import _sse, _until

pytestmark = pytest.mark.integration


async def _published(broker: str, ids: set[str], timeout: float = 60.0) -> None:
    """Wait until every order in ``ids`` has a change on orders.changes (read as a stranger)."""
    consumer = AIOKafkaConsumer(
        "orders.changes", bootstrap_servers=broker, auto_offset_reset="earliest"
    )
    await consumer.start()
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + timeout
        while not ids <= seen:
            assert time.monotonic() < deadline, f"{len(ids - seen)} orders not published"
            batch = await consumer.getmany(timeout_ms=500)
            for msgs in batch.values():
                for m in msgs:
                    seen.update(i for i in ids if i.encode() in m.value)
    finally:
        await consumer.stop()


def test_changes_unread_when_the_broker_dies_are_sent_again(make_service) -> None:
    svc: Service = make_service()
    svc.start()
    broker = f"127.0.0.1:{svc.broker_port}"
    warm = shopify_order(31_000_000)
    payloads = [shopify_order(31_000_001 + i) for i in range(300)]
    ids = {expected_id("shopify", p) for p in payloads}

    async def scenario() -> list[dict[str, Any]]:
        frames: list[dict[str, Any]] = []
        async with aiohttp.ClientSession(headers=svc.auth) as session:
            reader = asyncio.create_task(_sse(session, f"{svc.base}/v1/stream?type=order", frames))
            async with session.post(
                f"{svc.base}/v1/orders", data=warm, headers={"X-Channel": "shopify"}
            ) as resp:
                assert resp.status == 202
            warm_id = expected_id("shopify", warm)
            await _until(lambda: any(f["data"]["order_id"] == warm_id for f in frames), 60, "warm")

            os.kill(svc.proc.pid, signal.SIGSTOP)  # the sync hub reads nothing from here on
            try:
                producer = AIOKafkaProducer(bootstrap_servers=broker)
                await producer.start()
                try:
                    for p in payloads:
                        await producer.send("orders.raw", p, headers=[("channel", b"shopify")])
                    await producer.flush()
                finally:
                    await producer.stop()
                await _published(broker, ids)
                await asyncio.sleep(2)  # acknowledged, then committed with the state
                os.kill(svc.child_pids()["broker"][-1], signal.SIGKILL)
            finally:
                os.kill(svc.proc.pid, signal.SIGCONT)
            got = lambda: ids <= {f["data"]["order_id"] for f in frames}  # noqa: E731
            await _until(got, 120, "the changes lost with the broker")
            await asyncio.sleep(6)  # a later sweep must not send them a third time
            reader.cancel()
        return frames

    frames = asyncio.run(scenario())
    seen = [(f["data"]["order_id"], f["data"]["version"]) for f in frames]
    assert len(seen) == len(set(seen)), "a change reached the subscriber twice"
    assert "recovered onto broker epoch" in svc.log()
    assert "sending them again" in svc.log()
    assert svc.stop() == 0
