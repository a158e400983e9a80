"""Stock reservation end to end: HTTP stock API, the SKU partitions, sagas, a hot-SKU flood.

The flood is the seed case: one hoodie with 100 units sold on several channels at once, two
worker processes sharing the partitions, one of them killed (SIGKILL) mid-flood and restarted
by the supervisor: exactly 100 orders get stock, the rest are refused, nothing is lost and
nothing reserved twice (the audit recomputes stock from the ledger).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from tests.integration.conftest import ROOT, Service
from tests.integration.helpers import FIXTURES, SHOPIFY, shopify_order

pytestmark = pytest.mark.integration

ROUTING = """
[warehouses]
main = "The one warehouse of this test"
spare = "An empty second warehouse"

[routing]
default = ["spare", "main"]
"""


def _routing(tmp: Path) -> dict[str, str]:
    path = tmp / "warehouses.toml"
    path.write_text(ROUTING)
    return {"ORDERSTREAM_WAREHOUSES": str(path)}


def _shopify(number: int, sku: str, qty: int = 1) -> bytes:
    line = dict(SHOPIFY["line_items"][0], sku=sku, quantity=qty)
    return shopify_order(number, line_items=[line])


def _ministore(number: int, sku: str, qty: int = 1) -> bytes:
    doc = json.loads((FIXTURES / "ministore" / "paid_warehouse.json").read_bytes())
    doc.pop("warehouse", None)
    doc["order_no"] = f"MS-{number}"
    doc["recipient"] = dict(doc["recipient"], phone=f"+86 139{number % 100_000_000:08d}")
    doc["lines"] = [{"sku": sku, "title": "hot", "qty": qty, "unit_price": "438.00"}]
    return json.dumps(doc).encode()


def _put(svc: Service, sku: str, body: dict) -> dict:
    resp = svc.request("PUT", f"/v1/stock/{sku}", json.dumps(body).encode())
    assert resp.status == 200, resp.body
    return resp.json()


def _reservation(svc: Service, oid: str, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    doc: dict = {}
    while time.monotonic() < deadline:
        resp = svc.get_order(oid)
        if resp.status == 200 and resp.json().get("state") != "accepted":  # recorded
            doc = resp.json()
            if doc["reservation"] and doc["reservation"]["status"] != "pending":
                return doc
        time.sleep(0.1)
    raise AssertionError(f"{oid}: reservation not settled: {doc}")


def test_stock_api_and_a_multi_sku_order_that_cannot_be_filled(make_service, tmp_path) -> None:
    svc: Service = make_service(env=_routing(tmp_path))
    svc.start()
    level = _put(svc, "MUG-1", {"warehouse": "main", "on_hand": 10, "safety": 2})
    assert level["warehouses"]["main"]["available"] == 8
    receipt = svc.request(
        "POST",
        "/v1/stock/MUG-1/receipts",
        json.dumps({"warehouse": "main", "quantity": 5}).encode(),
    )
    assert receipt.status == 200 and receipt.json()["warehouses"]["main"]["on_hand"] == 15
    _put(svc, "TEE-1", {"warehouse": "main", "on_hand": 1})
    # one order: 3 mugs (there) + 2 tees (only 1): refused whole, the mugs given back
    line = SHOPIFY["line_items"][0]
    payload = shopify_order(
        32_000_001,
        line_items=[dict(line, sku="MUG-1", quantity=3), dict(line, sku="TEE-1", quantity=2)],
    )
    oid = svc.post_order("shopify", payload).json()["id"]
    doc = _reservation(svc, oid)
    assert doc["state"] == "out_of_stock"
    assert doc["reservation"]["status"] == "out_of_stock"
    assert doc["reservation"]["refused"] == ["TEE-1"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        mug = svc.request("GET", "/v1/stock/MUG-1").json()["warehouses"]["main"]
        if mug["reserved"] == 0:
            break
        time.sleep(0.1)
    assert (mug["reserved"], mug["available"]) == (0, 13), mug
    # a correction that would leave reserved above on_hand - safety is refused, nothing changes
    ok = svc.post_order("shopify", _shopify(32_000_002, "MUG-1", 10)).json()["id"]
    assert _reservation(svc, ok)["reservation"]["status"] == "reserved"
    bad = svc.request(
        "POST",
        "/v1/stock/MUG-1/corrections",
        json.dumps({"warehouse": "main", "quantity": -5}).encode(),
    )
    assert bad.status == 409, bad.body
    assert "reserved" in bad.json()["error"]["reason"]
    missing = svc.request("PUT", "/v1/stock/MUG-1", json.dumps({"on_hand": 3}).encode())
    assert missing.status == 400 and missing.json()["error"]["field"] == "warehouse"
    assert svc.request("GET", "/v1/stock-audit").json()["ok"] is True
    assert svc.stop() == 0


def test_wms_stock_updates_topic_applies_and_dead_letters_bad_lines(make_service, tmp_path) -> None:
    svc: Service = make_service(env=_routing(tmp_path))
    svc.start()

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{svc.broker_port}")
        await producer.start()
        try:
            good = {"sku": "WMS-1", "warehouse": "main", "op": "set", "quantity": 40}
            body = json.dumps(good) + "\n" + json.dumps({"sku": "WMS-1", "op": "set"}) + "\n"
            await producer.send_and_wait(
                "stock.updates",
                body.encode(),
                key=b"WMS-1",
                headers=[("content-type", b"application/x-ndjson")],
            )
        finally:
            await producer.stop()

    asyncio.run(produce())
    deadline = time.monotonic() + 20
    level: dict = {}
    while time.monotonic() < deadline:
        level = svc.request("GET", "/v1/stock/WMS-1").json()["warehouses"]
        if level:
            break
        time.sleep(0.1)
    assert level["main"]["on_hand"] == 40
    while time.monotonic() < deadline:
        letters = svc.request("GET", "/v1/dead-letters").json()
        if any(d["stage"] == "reserve" for d in letters):
            break
        time.sleep(0.1)
    wms = [d for d in letters if d["stage"] == "reserve"]
    assert wms and "warehouse" in wms[0]["reason"] + wms[0]["field"]
    assert svc.stop() == 0


def test_hot_sku_flood_two_workers_one_killed_grants_exactly_the_stock(
    make_service, tmp_path
) -> None:
    svc: Service = make_service(env=_routing(tmp_path))
    svc.start()
    _put(svc, "HOODIE-HOT", {"warehouse": "main", "on_hand": 100})
    makers = [_shopify, _ministore]
    channels = ["shopify", "ministore"]
    ids: list[str] = []
    lock = threading.Lock()

    def flood(k: int) -> None:
        for start in range(0, 5000, 250):
            payloads = [
                makers[k](33_000_000 + k * 10_000 + n, "HOODIE-HOT")
                for n in range(start, start + 250)
            ]
            resp = svc.post_batch(channels[k], payloads)
            assert resp.status == 202, resp.body[:300]
            with lock:
                ids.extend(line["id"] for line in resp.lines())

    senders = [threading.Thread(target=flood, args=(k,)) for k in range(2)]
    for t in senders:
        t.start()
    time.sleep(1.5)
    victim = svc.child_pids()["worker"][0]
    os.kill(victim, signal.SIGKILL)
    for t in senders:
        t.join(180)
    assert len(ids) == 10_000 and len(set(ids)) == 10_000
    svc.wait_drained(timeout=180)
    with ThreadPoolExecutor(8) as pool:
        docs = list(pool.map(lambda oid: _reservation(svc, oid, 120), ids))
    statuses = [d["reservation"]["status"] for d in docs]
    assert statuses.count("reserved") == 100, {s: statuses.count(s) for s in set(statuses)}
    assert statuses.count("out_of_stock") == 9_900
    assert all(d["version"] == 2 for d in docs)  # created, then reserved or refused: once each
    level = svc.request("GET", "/v1/stock/HOODIE-HOT").json()["warehouses"]["main"]
    assert (level["on_hand"], level["reserved"], level["available"]) == (100, 100, 0)
    cli = [sys.executable, "-m", "streams.cli", "audit-stock"]
    audit = subprocess.run(
        [*cli, "--url", svc.base, "--api-key", svc.api_key],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    text = svc.request("GET", "/metrics").body.decode()
    assert "orderstream_oversold_total 0.0" in text
    assert "exited (code -9): restarting" in svc.log()
    assert svc.stop() == 0


def _purged(svc: Service) -> float:
    text = svc.request("GET", "/metrics").body.decode()
    lines = [
        ln for ln in text.splitlines() if ln.startswith("orderstream_reservations_purged_total")
    ]
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines)


def test_ended_reservations_leave_the_ledger_after_the_retention(make_service, tmp_path) -> None:
    env = {**_routing(tmp_path), "ORDERSTREAM_RESERVATION_RETENTION_S": "60"}
    svc: Service = make_service(env=env)
    svc.start()
    _put(svc, "KEEP-1", {"warehouse": "main", "on_hand": 10})
    oids = [
        svc.post_order("shopify", _shopify(33_000_000 + i, "KEEP-1")).json()["id"] for i in range(4)
    ]
    for oid in oids:
        assert _reservation(svc, oid)["reservation"]["status"] == "reserved"
    for oid in oids[:2]:
        resp = svc.request(
            "POST", f"/v1/orders/{oid}/events", json.dumps({"event": "cancel"}).encode()
        )
        assert resp.status == 200, resp.body
    deadline = time.monotonic() + 120
    while _purged(svc) < 2:  # the two released lines, once they ended 60 s ago
        assert time.monotonic() < deadline, "ended reservations were never purged"
        time.sleep(1)
    level = svc.request("GET", "/v1/stock/KEEP-1").json()["warehouses"]["main"]
    assert (level["reserved"], level["available"]) == (2, 8), level  # live ones untouched
    assert svc.request("GET", "/v1/stock-audit").json()["ok"] is True
    # the orders themselves are kept: only the SKU partition's ledger forgets them
    assert svc.get_order(oids[0]).json()["state"] == "cancelled"
    assert svc.stop() == 0
