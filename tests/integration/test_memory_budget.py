"""The memory budget: past it the supervisor drains the pipeline and replaces the embedded broker
with an empty one, and no accepted order is lost on the way (count in = count out)."""

from __future__ import annotations

import json
import time
import urllib.request

import pytest

from tests.integration.conftest import Service
from tests.integration.helpers import SHOPIFY, expected_id, shopify_order

pytestmark = pytest.mark.integration


def _changes_since_start(svc: Service) -> set[str]:
    """Every order id with a recorded change, read back from the sync log (it outlives epochs):
    the stream from the oldest event, until it goes quiet."""
    req = urllib.request.Request(
        svc.base + "/v1/stream?type=order&last_event_id=0", headers=svc.auth
    )
    ids: set[str] = set()
    with urllib.request.urlopen(req, timeout=5) as resp:
        try:
            while True:
                line = resp.readline()
                if line.startswith(b"data: "):
                    event = json.loads(line[6:])
                    assert "data" in event, event  # not a reset or a drop
                    ids.add(event["data"]["order_id"])
        except TimeoutError:
            pass
    return ids


def test_a_broker_over_budget_is_replaced_and_nothing_is_lost(make_service) -> None:  # type: ignore[no-untyped-def]
    # 256 MiB: the API and workers alone are over it, so the broker is replaced as soon as it
    # holds a quarter of the budget, and at most once a minute after that
    svc: Service = make_service({"ORDERSTREAM_MEMORY_BUDGET_MB": "256"})
    svc.start()
    sent: list[str] = []
    n = 0
    deadline = time.monotonic() + 240
    while "broker swapped without a pause" not in svc.log():
        assert time.monotonic() < deadline, svc.log()[-3000:]
        line = dict(SHOPIFY["line_items"][0], sku=f"MEM-{n % 97}", quantity=1)
        batch = [shopify_order(70_000_000 + n + i, line_items=[line]) for i in range(500)]
        n += 500
        resp = svc.post_batch("shopify", batch)
        assert resp.status == 202  # the door stays open while the broker is drained/replaced
        sent += [expected_id("shopify", p) for p in batch]
        time.sleep(0.05)
    for i in range(5):  # and after it
        batch = [shopify_order(71_000_000 + i * 100 + k) for k in range(100)]
        assert svc.post_batch("shopify", batch).status == 202
        sent += [expected_id("shopify", p) for p in batch]
    svc.wait_drained(timeout=240)
    text = svc.request("GET", "/metrics").body.decode()
    assert 'orderstream_broker_replacements_total{reason="memory_budget"}' in text
    assert 'orderstream_process_resident_bytes{role="broker"}' in text
    recorded = _changes_since_start(svc)
    missing = set(sent) - recorded
    assert not missing, f"{len(missing)} of {len(sent)} accepted orders never recorded"
    assert svc.request("GET", "/v1/stock-audit").json()["ok"]
