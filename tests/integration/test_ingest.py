"""Ingest end to end: HTTP and Kafka in, canonical order and state out, bad input dead-lettered."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.parse

import msgspec
import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.conftest import Service, pid_alive
from tests.integration.helpers import expected_id, fixture_files, shopify_order

pytestmark = pytest.mark.integration


@pytest.mark.parametrize(("channel", "path"), fixture_files(), ids=lambda v: getattr(v, "stem", v))
def test_each_channel_end_to_end(service: Service, channel: str, path) -> None:
    payload = path.read_bytes()
    resp = service.post_order(channel, payload)
    assert resp.status == 202, resp.body
    body = resp.json()
    assert body["status"] == "accepted"
    assert body["id"] == expected_id(channel, payload)
    found = service.wait_order(body["id"])
    assert found["id"] == body["id"]
    assert found["order"]["channel"] == channel
    assert found["order"]["channel_order_no"] == body["order_no"]
    assert found["state"] in ("pending_payment", "paid", "refunded")
    assert found["order"]["lines"], "canonical order has its lines"


def test_an_order_is_found_by_its_channel_and_order_number(service: Service) -> None:
    """What a merchant has is the channel's order number, not our id."""
    payload = shopify_order(71_000_001)
    accepted = service.post_order("shopify", payload).json()
    oid = accepted["id"]
    service.wait_order(oid)
    no = urllib.parse.quote(accepted["order_no"])
    found = service.request("GET", f"/v1/orders?channel=Shopify&order_no={no}")
    assert found.status == 200 and found.json()["id"] == oid
    unknown = service.request("GET", "/v1/orders?channel=shopify&order_no=never-sent")
    assert unknown.status == 404
    for query, field in (("order_no=1", "channel"), ("channel=ebay&order_no=1", "channel")):
        resp = service.request("GET", f"/v1/orders?{query}")
        assert resp.status == 400 and resp.json()["error"]["field"] == field
    resp = service.request("GET", "/v1/orders?channel=shopify")
    assert resp.status == 400 and resp.json()["error"]["field"] == "order_no"


def test_an_id_that_cannot_be_ours_is_404_at_once(service: Service) -> None:
    for bad in ("..%2F..%2Fetc%2Fpasswd", "os_x", "os_" + "g" * 24, "OS_" + "a" * 24):
        started = time.monotonic()
        for path in (f"/v1/orders/{bad}", f"/v1/orders/{bad}/history"):
            resp = service.request("GET", path)
            assert resp.status == 404, (path, resp.status)
            assert "not an orderstream order id" in resp.json()["error"]["reason"]
        resp = service.request("POST", f"/v1/orders/{bad}/events", b'{"event": "pick_start"}')
        assert resp.status == 404
        assert time.monotonic() - started < 2.0  # no worker was asked, nothing waited


def test_ndjson_batch_answers_one_result_per_line(service: Service) -> None:
    good = [shopify_order(9_100_000 + i) for i in range(3)]
    resp = service.post_batch("shopify", [good[0], b'{"id": 1, oops', good[1], good[2]])
    assert resp.status == 202
    assert resp.headers["X-Accepted"] == "3"
    assert resp.headers["X-Rejected"] == "1"
    lines = resp.lines()
    assert [ln["status"] for ln in lines] == ["accepted", "rejected", "accepted", "accepted"]
    assert lines[1]["line"] == 2
    assert "malformed JSON" in lines[1]["reason"]
    for ln, payload in zip([lines[0], lines[2], lines[3]], good, strict=True):
        assert ln["id"] == expected_id("shopify", payload)
        assert service.wait_order(ln["id"])["state"] == "paid"


def test_malformed_json_is_400_and_dead_lettered(service: Service) -> None:
    bad = b'{"id": 77, "line_items": [}'
    resp = service.post_order("shopify", bad)
    assert resp.status == 400
    err = resp.json()["error"]
    assert err["field"] == "$"
    assert "malformed JSON" in err["reason"]
    for _ in range(100):
        letters = service.request("GET", "/v1/dead-letters?limit=1000").json()
        match = [d for d in letters if d["payload"] == bad.decode()]
        if match:
            break
        asyncio.run(asyncio.sleep(0.1))
    assert match, "the refused payload is in the dead letters with its reason"
    assert match[0]["stage"] == "ingest"
    assert "malformed JSON" in match[0]["reason"]


def test_unnormalisable_payload_goes_to_dlq_with_field_and_reason(service: Service) -> None:
    payload = shopify_order(9_200_001, total_price="12.345.6")
    resp = service.post_order("shopify", payload)
    assert resp.status == 202  # syntactically fine: accepted, then dead-lettered by normalise
    found = service.wait_order(resp.json()["id"])
    assert found["state"] == "dead_lettered"
    letter = found["dead_letter"]
    assert letter["stage"] == "normalise"
    assert letter["field"] == "$.total_price"
    assert letter["reason"]
    assert json.loads(letter["payload"])["id"] == 9_200_001


def test_missing_or_unknown_channel_is_refused(service: Service) -> None:
    resp = service.request("POST", "/v1/orders", shopify_order(1))
    assert resp.status == 400
    assert resp.json()["error"]["field"] == "header X-Channel"
    resp = service.post_order("ebay", shopify_order(1))
    assert resp.status == 400
    assert "unknown channel" in resp.json()["error"]["reason"]


def test_gateway_producing_to_orders_raw(service: Service) -> None:
    single = shopify_order(9_300_001)
    batch = [shopify_order(9_300_100 + i) for i in range(5)]
    pretty = json.dumps(json.loads(shopify_order(9_300_300)), indent=2).encode()

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{service.broker_port}")
        await producer.start()
        try:
            await producer.send_and_wait(
                "orders.raw", single, key=b"shopify:9300001", headers=[("channel", b"shopify")]
            )
            await producer.send_and_wait(
                "orders.raw", b"\n".join(batch), headers=[("channel", b"shopify")]
            )
            # a pretty-printed order is one order, not one per line
            await producer.send_and_wait("orders.raw", pretty, headers=[("channel", b"shopify")])
            # no header: the channel comes from the key prefix
            await producer.send_and_wait(
                "orders.raw", shopify_order(9_300_200), key=b"shopify:9300200"
            )
        finally:
            await producer.stop()

    asyncio.run(produce())
    for payload in [single, *batch, pretty, shopify_order(9_300_200)]:
        found = service.wait_order(expected_id("shopify", payload))
        assert found["order"]["channel"] == "shopify"


def test_one_order_from_the_door_and_from_a_gateway_is_recorded_once(service: Service) -> None:
    """The door's journal envelopes are deduplicated where they land (orders.raw, on the global
    id's partition); a gateway's message keyed by channel:order_no is re-keyed through
    orders.canonical. Both paths must meet the same ``seen`` store: the second copy is a resent
    copy of the first, whichever path it took."""
    for n, (first, second) in enumerate((("door", "gateway"), ("gateway", "door"))):
        payload = shopify_order(9_310_001 + n)
        oid = expected_id("shopify", payload)
        number = str(9_310_001 + n).encode()

        async def produce(payload: bytes = payload, number: bytes = number) -> None:
            producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{service.broker_port}")
            await producer.start()
            try:
                await producer.send_and_wait(
                    "orders.raw",
                    payload,
                    key=b"shopify:" + number,
                    headers=[("channel", b"shopify")],
                )
            finally:
                await producer.stop()

        for path in (first, second):
            if path == "door":
                assert service.post_order("shopify", payload).status == 202
            else:
                asyncio.run(produce())
            service.wait_order(oid)
        deadline = time.monotonic() + 30
        while True:
            doc = service.get_order(oid).json()
            if doc["duplicate_count"] == 1 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert doc["duplicate_count"] == 1, (first, second, doc)
        assert doc["duplicates"][0]["rule"] == "exact_channel"
        assert doc["state"] == "paid"


def test_redelivered_newer_copy_updates_stale_copy_does_not(service: Service) -> None:
    first = shopify_order(
        9_400_001, financial_status="pending", updated_at="2026-11-23T10:05:00-05:00"
    )
    oid = service.post_order("shopify", first).json()["id"]
    assert service.wait_order(oid)["state"] == "pending_payment"
    newer = shopify_order(
        9_400_001, financial_status="paid", updated_at="2026-11-23T10:09:00-05:00"
    )
    service.post_order("shopify", newer)
    for _ in range(100):
        found = service.wait_order(oid)
        if found["copies"] == 2:
            break
        asyncio.run(asyncio.sleep(0.1))
    assert found["state"] == "paid" and found["copies"] == 2
    stale = shopify_order(
        9_400_001, financial_status="pending", updated_at="2026-11-23T10:06:00-05:00"
    )
    service.post_order("shopify", stale)
    service.wait_drained()
    found = service.wait_order(oid)
    assert (found["state"], found["copies"], found["duplicate_count"]) == ("paid", 3, 1)


def test_metrics_exposition(service: Service) -> None:
    resp = service.request("GET", "/metrics")
    assert resp.status == 200
    text = resp.body.decode()
    assert 'orderstream_ingested_total{channel="shopify",transport="http"}' in text
    assert "orderstream_journal_depth" in text
    assert "orderstream_end_to_end_seconds_bucket" in text


def test_health_lists_workers_and_partitions(service: Service) -> None:
    assert service.request("GET", "/health").status == 200
    health = service.health()
    assert health["processing"] is True
    assert health["embedded"] is True
    assert len(health["workers"]) == 2
    assigned = {tp for w in health["workers"] for tp in w.get("assigned", [])}
    assert {f"orders.canonical:{p}" for p in range(2)} <= assigned
    assert msgspec.json.decode(msgspec.json.encode(health))  # plain JSON


def test_the_service_log_is_readable(service: Service) -> None:
    """The lines an operator reads: the service's own, no terminal codes in a file, and none of
    Faust's start-up narration at INFO."""
    text = service.log()
    assert "ready in" in text
    assert "\x1b" not in text and "\b" not in text
    assert " INFO faust." not in text and " INFO mode." not in text


def test_an_accepted_order_not_yet_processed_answers_accepted(service: Service) -> None:
    """Durable in the journal, no stage has recorded it yet (the workers are paused): the
    lookup says so instead of "unknown"; once they resume it is the recorded order."""
    workers = [p for p in service.child_pids()["worker"] if pid_alive(p)]
    payload = shopify_order(71_000_002)
    for pid in workers:
        os.kill(pid, signal.SIGSTOP)
    try:
        oid = service.post_order("shopify", payload).json()["id"]
        resp = service.get_order(oid)
        assert resp.status == 200, resp.body
        body = resp.json()
        assert body["state"] == "accepted" and body["channel"] == "shopify"
        assert body["id"] == oid and body["journal"]["seq"] >= 1
    finally:
        for pid in workers:
            os.kill(pid, signal.SIGCONT)
    deadline = time.monotonic() + 60
    while (found := service.get_order(oid).json()).get("state") == "accepted":
        assert time.monotonic() < deadline, found
        time.sleep(0.2)
    assert found["order"]["channel"] == "shopify"
