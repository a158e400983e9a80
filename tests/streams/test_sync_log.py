"""The sync log on a real RocksDB directory: ids, memory/disk reads, trimming, restart."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from streams.sync.log import NewEvent, SyncLog
from streams.sync.webhooks import delivery_body, idempotency_key


def _events(n: int, start: int = 0) -> list[NewEvent]:
    return [
        NewEvent("order", f"o{i}", "", "shopify", b'{"n":%d}' % i) for i in range(start, start + n)
    ]


def test_ids_bodies_and_reads_across_memory_and_disk(tmp_path: Path) -> None:
    log = SyncLog(tmp_path / "sync", memory_events=1000, retention_events=5000)
    out = log.append(_events(3000), {"e1:orders.changes:0": 42})
    assert [e.seq for e in out[:3]] == [1, 2, 3] and log.head == 3000
    assert json.loads(out[0].body) == {"id": 1, "type": "order", "data": {"n": 0}}
    # the oldest are no longer in memory (kept: the newest 1000..2000): read from disk
    got = log.read(1, 2500)
    assert [e.seq for e in got] == list(range(1, 2501))
    assert got[10] == out[10]
    assert log.read(2990, 100) == out[2989:]
    assert log.read(3001, 10) == []
    assert log.position("e1:orders.changes:0") == 42


def test_trimmed_positions_start_at_the_oldest_and_survive_a_restart(tmp_path: Path) -> None:
    log = SyncLog(tmp_path / "sync", memory_events=1000, retention_events=2000)
    for i in range(5):
        log.append(_events(1000, i * 1000), {"p": i})
    assert log.oldest == 3001
    assert log.read(1, 5)[0].seq == 3001  # gone: the reader sees where it resumes
    log.close()
    again = SyncLog(tmp_path / "sync", memory_events=1000, retention_events=2000)
    assert (again.head, again.oldest, again.position("p")) == (5000, 3001, 4)
    assert [e.seq for e in again.read(4999, 10)] == [4999, 5000]  # from disk after restart
    assert again.append(_events(1), {})[0].seq == 5001  # ids continue, never reused


def test_waiting_readers_wake_on_append(tmp_path: Path) -> None:
    log = SyncLog(tmp_path / "sync", 1000, 1000)

    async def run() -> tuple[bool, bool]:
        timed_out = await log.wait_after(1, 0.05)
        waiter = asyncio.create_task(log.wait_after(1, 5))
        await asyncio.sleep(0.01)
        log.append(_events(1), {})
        return timed_out, await waiter

    assert asyncio.run(run()) == (False, True)


def test_webhook_batches_are_named_by_their_events(tmp_path: Path) -> None:
    log = SyncLog(tmp_path / "sync", 1000, 1000)
    events = log.append(_events(3), {})
    key = idempotency_key("wh_1", events)
    assert key == idempotency_key("wh_1", list(events)) != idempotency_key("wh_2", events)
    assert key.startswith("1-3-")
    doc = json.loads(delivery_body("wh_1", key, events))
    assert doc["delivery"] == key and [e["id"] for e in doc["events"]] == [1, 2, 3]
