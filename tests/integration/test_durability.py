"""Nothing accepted is lost: service restart, broker loss, worker SIGKILL, full journal."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.integration.conftest import Service, pid_alive
from tests.integration.helpers import expected_id, shopify_order

pytestmark = pytest.mark.integration


def post_many(svc: Service, first: int, count: int, batch: int = 250) -> list[str]:
    ids: list[str] = []
    for start in range(first, first + count, batch):
        payloads = [shopify_order(n) for n in range(start, min(start + batch, first + count))]
        resp = svc.post_batch("shopify", payloads)
        assert resp.status == 202, resp.body[:500]
        ids += [line["id"] for line in resp.lines()]
    return ids


def assert_all_recorded_once(svc: Service, ids: list[str]) -> None:
    svc.wait_drained(timeout=120)
    with ThreadPoolExecutor(8) as pool:
        found = list(pool.map(lambda oid: svc.get_order(oid), ids))
    missing = [
        oid
        for oid, r in zip(ids, found, strict=True)
        if r.status != 200 or r.json().get("state") == "accepted"  # accepted: not recorded
    ]
    assert not missing, f"{len(missing)} accepted orders missing, e.g. {missing[:5]}"
    copies = {r.json()["copies"] for r in found}
    assert copies == {1}, f"some order was recorded more than once: copies {copies}"


def test_restart_keeps_accepted_orders(make_service) -> None:
    svc: Service = make_service()
    svc.start()
    ids = post_many(svc, 20_000_000, 2000)
    assert svc.stop() == 0  # straight after accepting: most are not processed yet
    svc.start()  # same data dir, fresh embedded broker: the journal replays
    assert_all_recorded_once(svc, ids)
    # and a second restart finds everything in the stores, nothing replayed twice
    assert svc.stop() == 0
    svc.start()
    assert_all_recorded_once(svc, ids[:200])
    assert svc.stop() == 0


def test_broker_down_then_back_loses_nothing(make_service) -> None:
    svc: Service = make_service()
    svc.start()
    before = post_many(svc, 21_000_000, 500)
    assert_all_recorded_once(svc, before)
    broker = svc.child_pids()["broker"][-1]
    os.kill(broker, signal.SIGSTOP)  # the broker hangs: clients time out, nothing is acked
    try:
        during = post_many(svc, 21_100_000, 1000)  # the endpoint keeps accepting
        time.sleep(3)
        assert svc.health()["journal_depth"] >= 1000
    finally:
        os.kill(broker, signal.SIGKILL)  # ...then dies with everything it held in memory
    # the supervisor restarts the broker, recreates topics, replays the journal
    after = post_many(svc, 21_200_000, 500)
    assert_all_recorded_once(svc, before + during + after)
    assert not pid_alive(broker)
    assert svc.health()["epoch"] != ""
    assert "recovered onto broker epoch" in svc.log()
    assert svc.stop() == 0


def test_worker_killed_mid_flood_loses_nothing_records_nothing_twice(make_service) -> None:
    svc: Service = make_service()
    svc.start()
    ids: list[str] = []
    done = threading.Event()

    def flood() -> None:
        try:
            ids.extend(post_many(svc, 22_000_000, 20_000, batch=500))
        finally:
            done.set()

    sender = threading.Thread(target=flood)
    sender.start()
    time.sleep(1.0)
    victim = svc.child_pids()["worker"][0]
    os.kill(victim, signal.SIGKILL)
    sender.join(120)
    assert done.is_set()
    assert len(ids) == 20_000
    assert_all_recorded_once(svc, ids)
    assert "exited (code -9): restarting" in svc.log()
    assert svc.stop() == 0


def test_full_journal_refuses_with_503_and_retry_after(make_service) -> None:
    svc: Service = make_service(env={"ORDERSTREAM_JOURNAL_MAX_ENTRIES": "5"})
    svc.start()
    resp = svc.post_batch("shopify", [shopify_order(23_000_000 + i) for i in range(6)])
    assert resp.status == 503
    assert resp.headers["Retry-After"] == "2"
    assert resp.json()["error"]["field"] == "journal"
    ok = svc.post_batch("shopify", [shopify_order(23_000_100 + i) for i in range(5)])
    assert ok.status == 202
    assert_all_recorded_once(
        svc, [expected_id("shopify", shopify_order(23_000_100 + i)) for i in range(5)]
    )
    assert svc.stop() == 0
