"""Sync end to end: SSE and WebSocket subscribers, resume, back-pressure, signed webhooks.

The real service (broker, workers, HTTP port) and real loopback clients: an SSE reader, a
WebSocket client, a raw socket that never reads, and a webhook receiver that fails on purpose.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from core.signing import SIGNATURE_HEADER, verify
from tests.integration.conftest import Service, free_port
from tests.integration.helpers import SHOPIFY, expected_id, shopify_order

pytestmark = pytest.mark.integration

SECRET = "test-secret-0123456789"


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    tmp = tmp_path_factory.mktemp("sync")
    routing = tmp / "warehouses.toml"
    routing.write_text('[warehouses]\nmain = "main"\n\n[routing]\ndefault = ["main"]\n')
    env = {
        "ORDERSTREAM_WAREHOUSES": str(routing),
        "ORDERSTREAM_WEBHOOK_BACKOFF_S": "0.2",
        "ORDERSTREAM_WEBHOOK_MAX_ATTEMPTS": "3",
        "ORDERSTREAM_SUBSCRIBER_MAX_LAG": "2000",
        "ORDERSTREAM_SUBSCRIBER_WRITE_TIMEOUT_S": "2",
    }
    service = Service(tmp / "data", env)
    service.start()
    try:
        yield service
    finally:
        assert service.stop() == 0


def _payload(number: int, sku: str) -> bytes:
    line = dict(SHOPIFY["line_items"][0], sku=sku, quantity=1)
    return shopify_order(number, line_items=[line], financial_status="pending")


async def _post(
    session: aiohttp.ClientSession, url: str, body: Any, method: str = "POST", **headers: str
) -> Any:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with session.request(method, url, data=data, headers=headers) as resp:
        return resp.status, await resp.json(content_type=None)


async def _stock(session: aiohttp.ClientSession, base: str, sku: str, **level: int) -> None:
    status, body = await _post(
        session, f"{base}/v1/stock/{sku}", {"warehouse": "main", **level}, "PUT"
    )
    assert status == 200, body


async def _order(session: aiohttp.ClientSession, base: str, payload: bytes) -> None:
    status, body = await _post(session, f"{base}/v1/orders", payload, **{"X-Channel": "shopify"})
    assert status == 202, body


async def _sse(session: aiohttp.ClientSession, url: str, out: list[dict], **headers: str) -> None:
    """Read SSE frames into ``out`` as {"id", "event", "data"} until cancelled."""
    async with session.get(url, headers=headers) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        frame: dict[str, Any] = {}
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if "data" in frame:
                    doc = frame["data"]
                    if "id" in frame:  # data carries the same event as WebSocket: id, type, data
                        assert (doc["id"], doc["type"]) == (frame["id"], frame["event"])
                        frame["data"] = doc["data"]
                    out.append(frame)
                frame = {}
            elif line.startswith("id: "):
                frame["id"] = int(line[4:])
            elif line.startswith("event: "):
                frame["event"] = line[7:]
            elif line.startswith("data: "):
                frame["data"] = json.loads(line[6:])


async def _until(check: Any, timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


LIFE = [
    ("payment_received", {"data": {"payment_status": "paid"}}),
    ("pick_start", {}),
    ("ship", {"data": {"tracking_no": "SF1", "carrier": "SF"}}),
    ("carrier_pickup", {"source": "carrier"}),
    ("delivered", {"source": "carrier"}),
    ("complete", {}),
]


def test_sse_and_websocket_follow_an_order_through_its_life(svc: Service) -> None:
    payload = _payload(51_000_001, "SYNC-1")
    oid = expected_id("shopify", payload)

    async def run() -> None:
        async with aiohttp.ClientSession(headers=svc.auth) as s:
            await _stock(s, svc.base, "SYNC-1", on_hand=10)
            sse: list[dict] = []
            ws_got: list[dict] = []
            reader = asyncio.create_task(_sse(s, f"{svc.base}/v1/stream?order={oid}", sse))

            async def ws_reader() -> None:
                async with s.ws_connect(f"{svc.base}/v1/ws?order={oid}") as ws:
                    async for msg in ws:
                        ws_got.append(json.loads(msg.data))

            ws_task = asyncio.create_task(ws_reader())
            await asyncio.sleep(0.5)  # both subscribed before the order exists
            await _order(s, svc.base, payload)

            def states(events: list[dict]) -> list[str]:
                return [e["data"]["state"] for e in events if e["type"] == "order"]

            await _until(
                lambda: any(
                    e["type"] == "order" and e["data"]["reservation"] == "reserved" for e in ws_got
                ),
                what="the reservation change",
            )
            for event, extra in LIFE:
                status, body = await _post(
                    s, f"{svc.base}/v1/orders/{oid}/events", {"event": event, **extra}
                )
                assert status == 200, body
            await _until(lambda: "completed" in states(ws_got), what="completed over WebSocket")
            await _until(
                lambda: "completed" in [f["data"]["state"] for f in sse if f["event"] == "order"],
                what="completed over SSE",
            )

            def deducted(events: list[dict], kind: str) -> bool:
                # the shipment's deduction is a stock change of its own: it may trail "completed"
                return any(
                    e[kind] == "stock" and e["data"]["on_hand"] == 9 and e["data"]["reserved"] == 0
                    for e in events
                )

            await _until(lambda: deducted(ws_got, "type"), what="the deduction over WebSocket")
            await _until(lambda: deducted(sse, "event"), what="the deduction over SSE")
            reader.cancel()
            ws_task.cancel()

            sse_states = [f["data"]["state"] for f in sse if f["event"] == "order"]
            want = ["pending_payment", "paid", "picking", "shipped", "in_transit", "delivered"]
            for state in [*want, "completed"]:
                assert state in sse_states, (state, sse_states)
            assert [x for x in dict.fromkeys(sse_states) if x in want] == want  # in order
            # ids increase, SSE and WebSocket saw the same events, every change of this order
            ids = [f["id"] for f in sse]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)
            assert [e["id"] for e in ws_got] == ids
            assert all(f["data"]["order_id"] == oid for f in sse)
            versions = [f["data"]["version"] for f in sse if f["event"] == "order"]
            assert versions == sorted(versions)
            # the stock it reserved and deducted on shipment came along (same order filter)
            stock = [f["data"] for f in sse if f["event"] == "stock"]
            assert stock and all(x["sku"] == "SYNC-1" for x in stock)
            assert stock[-1]["on_hand"] == 9 and stock[-1]["reserved"] == 0

            # resume after a disconnect: everything after the given id, nothing before
            resumed: list[dict] = []
            task = asyncio.create_task(
                _sse(
                    s,
                    f"{svc.base}/v1/stream?order={oid}",
                    resumed,
                    **{"Last-Event-ID": str(ids[1])},
                )
            )
            await _until(lambda: len(resumed) >= len(ids) - 2, what="the resumed stream")
            task.cancel()
            assert [f["id"] for f in resumed] == ids[2:]

    asyncio.run(run())


def test_stream_filters_and_bad_requests(svc: Service) -> None:
    async def run() -> None:
        async with aiohttp.ClientSession(headers=svc.auth) as s:
            for query, field in [
                ("type=orders", "type"),
                ("colour=red", "colour"),
            ]:
                async with s.get(f"{svc.base}/v1/stream?{query}") as resp:
                    assert resp.status == 400
                    assert (await resp.json())["error"]["field"] == field
            async with s.get(f"{svc.base}/v1/stream", headers={"Last-Event-ID": "abc"}) as resp:
                assert resp.status == 400
            stock_only: list[dict] = []
            task = asyncio.create_task(
                _sse(s, f"{svc.base}/v1/stream?sku=SYNC-2&type=stock,stock_alert", stock_only)
            )
            await asyncio.sleep(0.3)
            await _stock(s, svc.base, "SYNC-2", on_hand=5, alert_at=4)
            payload = _payload(51_000_101, "SYNC-2")
            await _order(s, svc.base, payload)
            await _until(
                lambda: any(f["event"] == "stock_alert" for f in stock_only), what="stock alert"
            )
            task.cancel()
            assert {f["event"] for f in stock_only} == {"stock", "stock_alert"}
            assert all(f["data"]["sku"] == "SYNC-2" for f in stock_only)

    asyncio.run(run())


def test_a_slow_subscriber_is_dropped_and_the_pipeline_keeps_going(svc: Service) -> None:
    # a client that subscribes to everything and never reads a byte
    sock = socket.create_connection(("127.0.0.1", svc.http_port))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    auth = f"Authorization: Bearer {svc.api_key}\r\n".encode()
    sock.sendall(b"GET /v1/stream HTTP/1.1\r\nHost: x\r\n" + auth + b"\r\n")
    try:
        time.sleep(0.3)
        assert len(svc.request("GET", "/v1/subscribers").json()["subscribers"]) >= 1
        lines = [_payload(52_000_000 + i, f"FLOOD-{i % 50}") for i in range(6000)]
        for i in range(0, len(lines), 500):
            assert svc.post_batch("shopify", lines[i : i + 500]).status == 202
        svc.wait_drained(timeout=120)  # the pipeline was not held up by the subscriber
        deadline = time.monotonic() + 30
        drops: dict[str, float] = {}
        while time.monotonic() < deadline and not drops:
            text = svc.request("GET", "/metrics").body.decode()
            for fam in text_string_to_metric_families(text):
                if fam.name == "orderstream_subscriber_drops":
                    drops = {
                        s.labels["reason"]: s.value
                        for s in fam.samples
                        if s.name.endswith("_total") and s.labels["transport"] == "sse"
                    }
            time.sleep(0.2)
        assert drops and sum(drops.values()) >= 1, text[-3000:]
        assert set(drops) <= {"lagging", "write_timeout"}
        peers = svc.request("GET", "/v1/subscribers").json()["subscribers"]
        assert not [p for p in peers if p["transport"] == "sse" and p["filter"] == {}]
    finally:
        sock.close()


class Receiver:
    """A webhook endpoint on loopback that answers from a script of statuses."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.port = free_port()

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.calls.append((dict(request.headers), body))
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status)

    async def __aenter__(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.runner.cleanup()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


def test_webhook_gets_signed_deliveries_and_retries_after_a_500(svc: Service) -> None:
    payload = _payload(53_000_001, "HOOK-1")
    oid = expected_id("shopify", payload)

    async def run() -> None:
        async with Receiver([500]) as rx, aiohttp.ClientSession(headers=svc.auth) as s:
            status, hook = await _post(
                s,
                f"{svc.base}/v1/webhooks",
                {"url": rx.url, "secret": SECRET, "filter": {"order": oid, "type": "order"}},
            )
            assert status == 201, hook
            assert hook["secret"] == SECRET
            await _order(s, svc.base, payload)
            await _until(lambda: len(rx.calls) >= 2, what="a retry after the 500")
            (h1, b1), (h2, b2) = rx.calls[:2]
            assert b1 == b2 and h1["Idempotency-Key"] == h2["Idempotency-Key"]
            assert (h1["X-Orderstream-Attempt"], h2["X-Orderstream-Attempt"]) == ("1", "2")
            now = int(time.time())
            assert verify(SECRET, b2, h2[SIGNATURE_HEADER], now)
            assert not verify(SECRET, b2 + b" ", h2[SIGNATURE_HEADER], now)  # tampered body
            assert not verify("another-secret-0000", b2, h2[SIGNATURE_HEADER], now)
            doc = json.loads(b2)
            assert doc["webhook"] == hook["id"]
            assert {e["data"]["order_id"] for e in doc["events"]} == {oid}
            async with s.get(f"{svc.base}/v1/webhooks/{hook['id']}") as resp:
                view = await resp.json()
            assert view["delivered_batches"] >= 1 and view["failed_attempts"] == 1
            assert view["last_status"] == 200 and "secret" not in view
            async with s.delete(f"{svc.base}/v1/webhooks/{hook['id']}") as resp:
                assert resp.status == 204

    asyncio.run(run())


def test_webhook_dead_letters_a_batch_after_n_failures_then_redelivers(svc: Service) -> None:
    payload = _payload(53_000_002, "HOOK-2")
    oid = expected_id("shopify", payload)

    async def run() -> None:
        async with Receiver([500, 503, 500]) as rx, aiohttp.ClientSession(headers=svc.auth) as s:
            _, hook = await _post(
                s, f"{svc.base}/v1/webhooks", {"url": rx.url, "filter": {"order": oid}}
            )
            assert len(hook["secret"]) >= 32  # generated, shown once
            await _order(s, svc.base, payload)
            dead: list[dict] = []

            async def poll() -> bool:
                async with s.get(f"{svc.base}/v1/webhooks/{hook['id']}/dead-letters") as resp:
                    dead[:] = await resp.json()
                return bool(dead)

            deadline = time.monotonic() + 30
            while not await poll():
                assert time.monotonic() < deadline, "no dead letter"
                await asyncio.sleep(0.1)
            assert dead[0]["attempts"] == 3 and dead[0]["reason"] == "HTTP 500"
            assert oid in dead[0]["body"]
            status, result = await _post(s, f"{svc.base}/v1/webhooks/{hook['id']}/redeliver", b"")
            assert status == 200 and result["delivered"] == 1
            assert not await poll()

    asyncio.run(run())


def test_bad_webhook_registrations_name_the_field(svc: Service) -> None:
    cases = [
        ({}, "url"),
        ({"url": "ftp://x/y"}, "url"),
        ({"url": "http://127.0.0.1:1/h", "secret": "short"}, "secret"),
        ({"url": "http://127.0.0.1:1/h", "filter": {"type": "nope"}}, "filter.type"),
        ({"url": "http://127.0.0.1:1/h", "colour": 1}, "colour"),
    ]
    for body, field in cases:
        resp = svc.request("POST", "/v1/webhooks", json.dumps(body).encode())
        assert resp.status == 400 and resp.json()["error"]["field"] == field, (body, resp.body)
    assert svc.request("GET", "/v1/webhooks/wh_nope").status == 404


def test_sync_metrics_count_what_was_published(svc: Service, tmp_path: Path) -> None:
    text = svc.request("GET", "/metrics").body.decode()
    values: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            key = sample.name + json.dumps(sample.labels, sort_keys=True)
            values[key] = sample.value
    published = sum(v for k, v in values.items() if k.startswith("orderstream_sync_events_total"))
    head = svc.request("GET", "/v1/subscribers").json()["head"]
    assert published == head > 0
    assert any(k.startswith("orderstream_change_published_seconds_count") for k in values)
