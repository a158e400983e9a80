"""The order state machine end to end: events over HTTP and Kafka, SLA timers, rules, audit.

SLA timers run in seconds here (a policy file with the shipped one's shape); everything else is
the real service: the deadline index lives in the order partition's RocksDB store and a worker
killed between the event and the timer must still fire it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.conftest import ROOT, Service
from tests.integration.helpers import FIXTURES, SHOPIFY, shopify_order

pytestmark = pytest.mark.integration


def _fast_sla(tmp: Path) -> Path:
    text = (ROOT / "config" / "sla.toml").read_text()
    text = text.replace('after = "15m"', 'after = "4s"', 1)  # payment_timeout
    text = text.replace('after = "7d"', 'after = "3s"', 1)  # auto_complete
    path = tmp / "sla.toml"
    path.write_text(text)
    return path


def _env(tmp: Path) -> dict[str, str]:
    routing = tmp / "warehouses.toml"
    routing.write_text('[warehouses]\nmain = "main"\n\n[routing]\ndefault = ["main"]\n')
    return {
        "ORDERSTREAM_SLA_POLICY": str(_fast_sla(tmp)),
        "ORDERSTREAM_WAREHOUSES": str(routing),
        "ORDERSTREAM_SLA_TICK_S": "0.2",
    }


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("life")
    service = Service(tmp / "data", _env(tmp))
    service.start()
    try:
        yield service
    finally:
        assert service.stop() == 0


def _event(svc: Service, oid: str, event: str, **body: object) -> tuple[int, dict]:
    resp = svc.request(
        "POST",
        f"/v1/orders/{oid}/events",
        json.dumps({"event": event, **body}).encode(),
        {"X-Actor": "wh-ana"},
    )
    return resp.status, resp.json()


def _until(svc: Service, oid: str, ok: Callable[[dict], bool], timeout: float = 30.0) -> dict:
    deadline = time.monotonic() + timeout
    doc: dict = {}
    while time.monotonic() < deadline:
        resp = svc.get_order(oid)
        if resp.status == 200 and resp.json().get("state") != "accepted":  # recorded
            doc = resp.json()
            if ok(doc):
                return doc
        time.sleep(0.1)
    raise AssertionError(f"{oid}: condition not reached: {json.dumps(doc)[:2000]}")


def _stock_until(svc: Service, sku: str, ok: Callable[[dict], bool]) -> None:
    """Stock moves in the SKU's partition, after the order stage asked: poll for it."""
    deadline = time.monotonic() + 20
    level: dict = {}
    while time.monotonic() < deadline:
        level = svc.request("GET", f"/v1/stock/{sku}").json()["warehouses"]["main"]
        if ok(level):
            return
        time.sleep(0.1)
    raise AssertionError(f"{sku}: {level}")


def _stocked(svc: Service, sku: str, units: int) -> None:
    body = json.dumps({"warehouse": "main", "on_hand": units}).encode()
    assert svc.request("PUT", f"/v1/stock/{sku}", body).status == 200


def _order(svc: Service, number: int, sku: str = "LIFE-1", **changes: object) -> str:
    line = dict(SHOPIFY["line_items"][0], sku=sku, quantity=1)
    resp = svc.post_order("shopify", shopify_order(number, line_items=[line], **changes))
    assert resp.status == 202, resp.body
    oid = resp.json()["id"]
    _until(svc, oid, lambda d: d["reservation"] and d["reservation"]["status"] != "pending")
    return oid


def test_pending_order_to_completed_over_http_with_history(svc: Service) -> None:
    _stocked(svc, "LIFE-1", 50)
    oid = _order(svc, 34_000_001, financial_status="pending")
    assert svc.get_order(oid).json()["state"] == "pending_payment"
    status, body = _event(svc, oid, "payment_received", data={"payment_status": "paid"})
    assert (status, body["state"]) == (200, "paid")
    status, body = _event(svc, oid, "ship", data={"tracking_no": "SF1"})
    assert status == 409 and body["state"] == "paid"  # not picked yet: refused, state unchanged
    assert _event(svc, oid, "pick_start")[0] == 200
    assert _event(svc, oid, "ship")[0] == 400  # a scan-out without a tracking number
    assert _event(svc, oid, "ship", data={"tracking_no": "SF1", "carrier": "SF"})[0] == 200
    _stock_until(svc, "LIFE-1", lambda lv: (lv["on_hand"], lv["reserved"]) == (49, 0))
    # the carrier's "delivered" arrives before its "picked up": passes through in_transit
    assert _event(svc, oid, "delivered", source="carrier")[0] == 200
    status, body = _event(svc, oid, "carrier_pickup", source="carrier")
    assert status == 200 and body["applied"] is False  # stale: already past it
    doc = _until(svc, oid, lambda d: d["state"] == "completed", timeout=20)  # auto-complete 3 s
    assert doc["tracking_no"] == "SF1"
    history = svc.request("GET", f"/v1/orders/{oid}/history").json()["history"]
    moves = [(h["from_state"], h["to_state"]) for h in history if h["from_state"] != h["to_state"]]
    assert moves == [
        ("", "pending_payment"),
        ("pending_payment", "paid"),
        ("paid", "picking"),
        ("picking", "shipped"),
        ("shipped", "in_transit"),
        ("in_transit", "delivered"),
        ("delivered", "completed"),
    ]
    assert [h["seq"] for h in history] == list(range(len(history)))
    picked = next(h for h in history if h["event"] == "pick_start")
    assert (picked["actor"], picked["source"]) == ("wh-ana", "api")
    assert history[-1]["source"] == "sla"
    assert svc.request("DELETE", f"/v1/orders/{oid}/history").status == 405  # read-only


def test_order_driven_over_the_events_topic(svc: Service) -> None:
    oid = _order(svc, 34_000_002, financial_status="pending")

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{svc.broker_port}")
        await producer.start()
        try:
            at = time.time_ns() // 1_000_000
            for i, (event, data) in enumerate(
                [
                    ("payment_received", {"payment_status": "paid"}),
                    ("pick_start", {}),
                    ("ship", {"tracking_no": "YT9"}),
                    ("carrier_pickup", {}),
                    ("delivered", {}),
                    ("complete", {}),
                    ("cancel", {}),  # refused: completed is terminal -> dead letter
                ]
            ):
                ev = {
                    "order_id": oid,
                    "event": event,
                    "actor": "wms",
                    "source": "warehouse",
                    "at": at + i,
                    "event_id": f"k{i}",
                    "data": data,
                }
                await producer.send_and_wait(
                    "orders.events", json.dumps(ev).encode(), key=oid.encode()
                )
            await producer.send_and_wait("orders.events", b'{"event": "pick_start"}', key=b"x")
        finally:
            await producer.stop()

    asyncio.run(produce())
    _until(svc, oid, lambda d: d["state"] == "completed")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        letters = [
            d for d in svc.request("GET", "/v1/dead-letters").json() if d["stage"] == "order_events"
        ]
        if len(letters) >= 2:
            break
        time.sleep(0.2)
    reasons = " | ".join(d["field"] + ": " + d["reason"] for d in letters)
    assert "cancel refused" in reasons and "terminal" in reasons
    assert "order_id" in reasons  # the malformed one names its missing field


def test_unpaid_order_is_cancelled_by_its_timer_and_its_stock_released(svc: Service) -> None:
    _stocked(svc, "LIFE-2", 5)
    oid = _order(svc, 34_000_003, sku="LIFE-2", financial_status="pending")
    assert svc.get_order(oid).json()["state"] == "pending_payment"
    assert svc.request("GET", "/v1/stock/LIFE-2").json()["warehouses"]["main"]["reserved"] == 1
    doc = _until(svc, oid, lambda d: d["state"] == "cancelled", timeout=20)
    assert doc["reservation"]["status"] == "released"
    _stock_until(svc, "LIFE-2", lambda lv: lv["reserved"] == 0)
    history = svc.request("GET", f"/v1/orders/{oid}/history").json()["history"]
    assert history[-1]["event"] == "payment_timeout" and history[-1]["actor"] == "system"


def test_deposit_order_is_never_auto_cancelled(svc: Service) -> None:
    payload = (FIXTURES / "ministore" / "deposit_paid.json").read_bytes()
    doc = json.loads(payload)
    doc["order_no"] = "MS-DEPOSIT-1"
    resp = svc.post_order("ministore", json.dumps(doc).encode())
    oid = resp.json()["id"]
    _until(svc, oid, lambda d: d["state"] == "pending_payment")
    time.sleep(6)  # longer than the unpaid timer
    assert svc.get_order(oid).json()["state"] == "pending_payment"


def test_rules_hold_a_big_order_and_tag_urgent_ones(svc: Service) -> None:
    big = _order(svc, 34_000_004, total_price="9999.00")
    doc = svc.get_order(big).json()
    assert doc["state"] == "held" and "manager" in doc["hold_reason"]
    assert big in {r["order_id"] for r in svc.request("GET", "/v1/review").json()}
    urgent = _order(svc, 34_000_005, tags="urgent, gift")
    assert svc.get_order(urgent).json()["priority"] == "high"


def test_a_timer_survives_a_worker_killed_before_it_fires(make_service, tmp_path: Path) -> None:
    service: Service = make_service(env=_env(tmp_path))
    service.start()
    oid = _order(service, 34_000_010, financial_status="pending")
    for pid in service.child_pids()["worker"]:
        os.kill(pid, signal.SIGKILL)  # both: whoever owns the partition dies with the timer armed
    doc = _until(service, oid, lambda d: d["state"] == "cancelled", timeout=60)
    assert doc["reservation"]["status"] == "released"
    assert service.stop() == 0


def test_vip_and_flagged_orders_take_the_priority_lane(svc: Service) -> None:
    vip = _order(svc, 34_000_020, tags="vip")
    line = dict(SHOPIFY["line_items"][0], sku="LIFE-1", quantity=1)
    resp = svc.request(
        "POST",
        "/v1/orders",
        shopify_order(34_000_021, line_items=[line]),
        {"X-Channel": "shopify", "X-Priority": "high"},
    )
    flagged = resp.json()["id"]
    _until(svc, flagged, lambda d: d["state"] == "paid")
    assert svc.get_order(vip).json()["priority"] == "high"
    text = svc.request("GET", "/metrics").body.decode()
    count = next(
        float(ln.rsplit(" ", 1)[1])
        for ln in text.splitlines()
        if ln.startswith('orderstream_end_to_end_seconds_count{lane="priority"}')
    )
    assert count >= 2
