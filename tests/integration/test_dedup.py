"""De-duplication end to end: exact copies, cross-channel copies, near-duplicates and review.

Through the real service: HTTP ingest, the journal, the embedded broker, both dedup stages with
their RocksDB stores, the order stage; and a worker killed mid-flood with ground truth.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from bench.accuracy import dedup_accuracy
from bench.orders import OrderGenerator, ndjson_batches
from tests.integration.conftest import Service
from tests.integration.helpers import FIXTURES, SHOPIFY, shopify_order, unique_phone

pytestmark = pytest.mark.integration


def _accepted_id(resp) -> str:  # type: ignore[no-untyped-def]
    assert resp.status == 202, resp.body[:300]
    return resp.json()["id"]


def _wait(svc: Service, oid: str, until: Callable[[dict], bool], timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    doc: dict = {}
    while time.monotonic() < deadline:
        resp = svc.get_order(oid)
        if resp.status == 200 and resp.json().get("state") != "accepted":  # recorded
            doc = resp.json()
            if until(doc):
                return doc
        time.sleep(0.1)
    raise AssertionError(f"{oid} never got there: {doc}")


def _near_copy(number: int, like: int, **changes: object) -> bytes:
    """A new Shopify order number with the same recipient, amount and items as ``like``."""
    addr = dict(SHOPIFY["shipping_address"], phone=unique_phone(like))
    return shopify_order(number, shipping_address=addr, **changes)


def test_resent_copy_is_recorded_on_the_order_not_as_a_new_one(service: Service) -> None:
    payload = shopify_order(31_000_001)
    oid = _accepted_id(service.post_order("shopify", payload))
    service.wait_order(oid)
    assert _accepted_id(service.post_order("shopify", payload)) == oid  # a webhook retry
    doc = _wait(service, oid, lambda d: d["duplicate_count"] == 1)
    assert doc["state"] == "paid"
    assert doc["duplicates"][0]["rule"] == "exact_channel"


def test_newer_copy_updates_and_stale_copy_changes_nothing(service: Service) -> None:
    pending = shopify_order(
        31_000_002, financial_status="pending", updated_at="2026-11-23T10:00:00-05:00"
    )
    paid = shopify_order(31_000_002, updated_at="2026-11-23T10:05:00-05:00")
    oid = _accepted_id(service.post_order("shopify", pending))
    assert service.wait_order(oid)["state"] == "pending_payment"
    service.post_order("shopify", paid)
    doc = _wait(service, oid, lambda d: d["state"] == "paid")
    assert doc["duplicate_count"] == 0
    service.post_order("shopify", pending)  # an old retry arriving late
    doc = _wait(service, oid, lambda d: d["duplicate_count"] == 1)
    assert doc["state"] == "paid" and doc["order"]["payment_status"] == "paid"


def test_cross_channel_copy_is_a_duplicate_of_the_first(service: Service) -> None:
    number = 31_000_003
    first = _accepted_id(service.post_order("shopify", shopify_order(number)))
    service.wait_order(first)
    ministore = json.loads((FIXTURES / "ministore" / "paid_warehouse.json").read_bytes())
    ministore["order_no"] = str(number)  # the own store relays the same purchase
    addr = SHOPIFY["shipping_address"]
    ministore["recipient"] = dict(
        ministore["recipient"],  # the same buyer at the same address, in the store's layout
        name=addr["name"],
        phone=unique_phone(number),
        country="US",
        region=addr["province"],
        city=addr["city"],
        address=f"{addr['address1']}, {addr['address2']}",
        postcode=addr["zip"],
    )
    copy = _accepted_id(service.post_order("ministore", json.dumps(ministore).encode()))
    doc = service.wait_order(copy)
    assert doc["state"] == "duplicate"
    assert (doc["duplicate_of"], doc["duplicate_rule"]) == (first, "exact_cross_channel")
    assert service.get_order(first).json()["state"] == "paid"


def test_near_duplicate_is_held_for_review_then_decided(service: Service) -> None:
    original = _accepted_id(service.post_order("shopify", shopify_order(31_000_010)))
    service.wait_order(original)
    suspects = [
        _accepted_id(service.post_order("shopify", _near_copy(31_000_011 + i, 31_000_010)))
        for i in range(2)
    ]
    for oid in suspects:
        doc = service.wait_order(oid)
        assert doc["state"] == "held" and doc["hold_reason"] == "near_duplicate"
        assert doc["duplicate_rule"] == "near_duplicate"
        assert doc["duplicate_of"] in [original, *suspects]
    queue = service.request("GET", "/v1/review").json()
    assert set(suspects) <= {item["order_id"] for item in queue}
    ok = service.request("POST", f"/v1/review/{suspects[0]}/approve", b"", {"X-Actor": "ana"})
    assert ok.status == 200, ok.body
    assert service.get_order(suspects[0]).json()["state"] == "paid"
    no = service.request("POST", f"/v1/review/{suspects[1]}/reject", b"")
    assert no.status == 200, no.body
    assert service.get_order(suspects[1]).json()["state"] == "cancelled"
    again = service.request("POST", f"/v1/review/{suspects[1]}/approve", b"")
    assert again.status == 409 and again.json()["state"] == "cancelled"
    queue = service.request("GET", "/v1/review").json()
    assert not set(suspects) & {item["order_id"] for item in queue}
    bad = service.request("POST", f"/v1/review/{suspects[0]}/maybe", b"")
    assert bad.status == 404
    missing = service.request("POST", "/v1/review/os_000000000000000000000000/approve", b"")
    assert missing.status == 404


def test_repeat_purchase_outside_the_window_goes_through(service: Service) -> None:
    first = _accepted_id(service.post_order("shopify", shopify_order(31_000_020)))
    later = _near_copy(
        31_000_021,
        31_000_020,
        created_at="2026-11-23T10:30:00-05:00",  # the fixture's order is from 10:00
        processed_at="2026-11-23T10:30:00-05:00",
        updated_at="2026-11-23T10:31:00-05:00",
    )
    second = _accepted_id(service.post_order("shopify", later))
    service.wait_order(first)
    doc = service.wait_order(second)
    assert doc["state"] == "paid" and doc["duplicate_of"] == ""


def test_metrics_count_duplicates_by_rule(service: Service) -> None:
    text = service.request("GET", "/metrics").body.decode()
    rules = {
        line.split('rule="')[1].split('"')[0]
        for line in text.splitlines()
        if line.startswith("orderstream_duplicates_total{")
    }
    assert {"exact_channel", "exact_cross_channel", "near_duplicate"} <= rules


def _post_in_order(svc: Service, orders: list, stop: threading.Event) -> None:
    """NDJSON batches per channel, each channel's orders in generation order (resends and double
    submits are same-channel, so they arrive after their originals; cross-channel pairs may
    arrive either way round, which the accuracy check allows)."""
    for channel, body in ndjson_batches(orders, 200):
        resp = svc.request(
            "POST",
            "/v1/orders",
            body,
            {"X-Channel": channel, "Content-Type": "application/x-ndjson"},
        )
        assert resp.status == 202, resp.body[:300]
        if stop.is_set():
            return


def test_worker_killed_mid_flood_creates_no_false_duplicate_and_misses_none(
    make_service,
) -> None:
    svc: Service = make_service()
    svc.start()
    # one rendering per customer: this test is about replays after a crash, not matching
    orders = OrderGenerator(
        seed=11, orders_per_s=50, near_dup_rate=0.03, variant_rate=0, household_rate=0
    ).generate(6000)
    stop = threading.Event()
    sender = threading.Thread(target=_post_in_order, args=(svc, orders, stop))
    sender.start()
    time.sleep(1.5)
    victim = svc.child_pids()["worker"][0]
    os.kill(victim, signal.SIGKILL)
    sender.join(180)
    assert not sender.is_alive()
    svc.wait_drained(timeout=180)
    # every order is recorded; the killed worker may still be rejoining (its partitions are
    # answered 404/503 meanwhile): read once every worker holds partitions again
    deadline = time.monotonic() + 120
    while not svc.health().get("processing") and time.monotonic() < deadline:
        time.sleep(0.2)
    ids = sorted({o.order_id for o in orders if o.label != "invalid"})
    with ThreadPoolExecutor(8) as pool:
        docs = list(pool.map(lambda oid: svc.get_order(oid), ids))
    copies: dict[str, int] = {}
    flagged: dict[str, tuple[str, str]] = {}
    for oid, resp in zip(ids, docs, strict=True):
        if resp.status != 200 or resp.json().get("state") == "accepted":
            continue  # not recorded: counted as missing
        doc = resp.json()
        copies[oid] = doc["copies"]
        if doc["duplicate_of"]:
            flagged[oid] = (doc["duplicate_rule"], doc["duplicate_of"])
    acc = dedup_accuracy(orders, copies, flagged)
    assert acc["missing"] == 0, acc["missing_ids"]
    assert acc["exact"]["same_channel"]["fp"] == 0, acc  # no replay counted as a copy
    assert acc["exact"]["same_channel"]["fn"] == 0, acc
    assert acc["exact"]["precision"] == 1.0 and acc["exact"]["recall"] == 1.0, acc
    assert acc["near_duplicate"]["expected"] > 50
    assert acc["near_duplicate"]["precision"] == 1.0, acc
    assert acc["near_duplicate"]["recall"] == 1.0, acc
    assert acc["repeats"]["flagged"] == 0, acc
    assert "exited (code -9): restarting" in svc.log()
    assert svc.stop() == 0
