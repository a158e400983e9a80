"""A storm of hostile payloads against the real service: every one is refused at the door (4xx,
with a JSON error naming the field and the limit) or accepted and then dead-lettered with a field
and reason; no worker restarts; and a good order sent after the storm is processed normally.

The service runs with a 16 MiB body limit (instead of 64 MiB) so the oversized bodies stay cheap.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from core.model import global_order_id
from tests.integration.conftest import Response, Service
from tests.integration.helpers import FIXTURES, SHOPIFY, expected_id, shopify_order

BODY_LIMIT = 16 * 2**20
AMAZON_JP = json.loads((FIXTURES / "amazon" / "pending_fba_jp.json").read_bytes())
TIKTOK = json.loads((FIXTURES / "tiktok" / "awaiting_shipment_masked.json").read_bytes())


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    s = Service(
        tmp_path_factory.mktemp("hostile") / "data",
        env={"ORDERSTREAM_MAX_BODY_BYTES": str(BODY_LIMIT)},
    )
    s.start()
    try:
        yield s
    finally:
        assert s.stop() == 0


def error_of(resp: Response, status: int) -> dict[str, Any]:
    assert resp.status == status, (resp.status, resp.body[:300])
    assert resp.headers.get("Content-Type", "").startswith("application/json")
    err = resp.json()["error"]
    assert err["field"] and err["reason"]
    return err


def raw_http(svc: Service, head: bytes, body_parts: list[bytes]) -> tuple[int, bytes]:
    """Send a request by hand (a declared length we never send, chunked bodies) and read the
    answer; the server may answer and close before the body is complete."""
    with socket.create_connection(("127.0.0.1", svc.http_port), timeout=30) as sock:
        sock.sendall(head)
        try:
            for part in body_parts:
                sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass
        data = b""
        while b"\r\n\r\n" not in data or len(data) < _length(data):
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def _length(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    m = re.search(rb"(?i)content-length: *(\d+)", head)
    return len(head) + 4 + int(m.group(1)) if m else 1 << 62


def headers(svc: Service, extra: str) -> bytes:
    return (
        f"POST /v1/orders HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Channel: shopify\r\n"
        f"Authorization: Bearer {svc.api_key}\r\n{extra}\r\n"
    ).encode()


def dead_letters(svc: Service) -> list[dict[str, Any]]:
    resp = svc.request("GET", "/v1/dead-letters?limit=1000")
    assert resp.status == 200
    return resp.json()


def wait_letter(svc: Service, stage: str, reason_part: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for letter in dead_letters(svc):
            if letter["stage"] == stage and reason_part in letter["reason"]:
                return letter
        time.sleep(0.2)
    raise AssertionError(f"no {stage} dead letter with {reason_part!r}:\n{svc.log()[-2000:]}")


def wait_dead_lettered(svc: Service, oid: str) -> dict[str, Any]:
    found = svc.wait_order(oid)
    assert found["state"] == "dead_lettered", found
    letter = found["dead_letter"]
    assert letter["field"] and letter["reason"]
    return letter


def shopify_doc(number: int, **changes: Any) -> dict[str, Any]:
    return json.loads(shopify_order(number, **changes))


def test_hostile_storm(svc: Service) -> None:
    started_workers = svc.child_pids()["worker"]
    base = 9_700_000
    door: list[tuple[str, Response, str]] = []  # (what, response, reason part)

    # -- request limits: 413 with a JSON error naming the limit -------------------------------
    status, body = raw_http(
        svc, headers(svc, f"Content-Length: {BODY_LIMIT + 1}\r\n"), [b"{" * 65536]
    )
    assert status == 413, body[:300]
    err = json.loads(body)["error"]
    assert err["field"] == "body" and f"{BODY_LIMIT:,} bytes (max_body_bytes)" in err["reason"]
    chunk = b"x" * 2**20
    parts = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * 17 + [b"0\r\n\r\n"]
    status, body = raw_http(svc, headers(svc, "Transfer-Encoding: chunked\r\n"), parts)
    assert status == 413, body[:300]
    assert "max_body_bytes" in json.loads(body)["error"]["reason"]
    resp = svc.post_batch("shopify", [b"{}"] * 5001)
    err = error_of(resp, 413)
    assert err["field"] == "body" and "at most 5,000 per request (max_batch_lines)" in err["reason"]

    # -- refused at the door: 400 + an ingest dead letter --------------------------------------
    good = shopify_order(base)
    cases: dict[str, tuple[bytes, str]] = {
        "truncated": (good[: len(good) // 2], "malformed JSON"),
        "NaN literal": (good.replace(b'"total_price": "', b'"total_price": NaN, "x": "'), "JSON"),
        "Infinity": (b'{"id": Infinity}', "malformed JSON"),
        "1e400 order no": (b'{"id": 1e400}', "out of range"),
        "invalid UTF-8 in the number": (b'{"id": "12\xff\xfe34"}', "invalid UTF-8"),
        "deep nesting": (b'{"x":' + b"[" * 10_000 + b"]" * 10_000 + b"}", "nested too deeply"),
        "10 MB string": (
            json.dumps(
                shopify_doc(base + 1, note="\u5730" * (10 * 2**20 // 3)), ensure_ascii=False
            ).encode(),
            "(max_order_bytes)",
        ),
        "long order number": (shopify_order(base, id="9" * 200), "at most 128"),
        "control chars in the number": (shopify_order(base, id="12\u000034"), "control"),
        "wrong type": (b'{"id": {"a": [1, 2]}}', "Expected"),
        "not an object": (b"[1, 2, 3]", "Expected"),
    }
    for what, (payload, why) in cases.items():
        resp = svc.post_order("shopify", payload)
        err = error_of(resp, 400)
        assert why in err["reason"], (what, err)
        assert resp.json()["dead_lettered"] is True
        door.append((what, resp, why))

    # -- accepted, then dead-lettered by the normalise stage (visible by id) --------------------
    long_line = [{"quantity": 1, "price": "1.00", "sku": f"S{i}"} for i in range(501)]
    accepted_cases: dict[str, tuple[str, bytes, str]] = {
        "amount 2**70": ("shopify", shopify_order(base + 10, total_price=2**70), "$.total_price"),
        "amount 1e308": ("shopify", shopify_order(base + 11, total_price=1e308), "$.total_price"),
        "quantity 2**70": (
            "shopify",
            shopify_order(base + 12, line_items=[dict(SHOPIFY["line_items"][0], quantity=2**70)]),
            "$.line_items[0].quantity",
        ),
        "total 1e400": (
            "shopify",
            shopify_order(base + 13).replace(b'"total_price": "', b'"total_price": 1e400, "y": "'),
            "$.total_price",
        ),
        "line_items a string": (
            "shopify",
            shopify_order(base + 14, line_items="lots"),
            "$.line_items",
        ),
        "501 line items": (
            "shopify",
            shopify_order(base + 15, line_items=long_line),
            "$.line_items",
        ),
        "1001-char name": (
            "shopify",
            shopify_order(
                base + 16, shipping_address=dict(SHOPIFY["shipping_address"], name="N" * 1001)
            ),
            "$.shipping_address.name",
        ),
        "NUL in a SKU": (
            "shopify",
            shopify_order(base + 17, line_items=[dict(SHOPIFY["line_items"][0], sku="A\x00B")]),
            "$.line_items[0].sku",
        ),
        "duplicate key, bad first value": (
            "shopify",
            b'{"line_items": 7, ' + shopify_order(base + 18)[1:],
            "$.line_items",
        ),
        # the door skips the name (it reads only the number); the normaliser decodes it
        "invalid UTF-8 in the name": (
            "shopify",
            shopify_order(base + 19, shipping_address={"name": "@@NAME@@"}).replace(
                b"@@NAME@@", b"Ana \xc3\x28"
            ),
            "$",
        ),
        "JPY amount 1e999999": (
            "amazon",
            json.dumps(
                {
                    **AMAZON_JP,
                    "order": {**AMAZON_JP["order"], "AmazonOrderId": "hostile-1e999999"},
                    "items": [
                        dict(
                            AMAZON_JP["items"][0],
                            ItemPrice={"CurrencyCode": "JPY", "Amount": "1e999999"},
                        )
                    ],
                }
            ).encode(),
            "$.items[0].ItemPrice.Amount",
        ),
        "unix time 2**62": (
            "tiktok",
            json.dumps({**TIKTOK, "id": "hostile-time", "create_time": 2**62}).encode(),
            "$.create_time",
        ),
    }
    ids = {}
    for what, (channel, payload, _) in accepted_cases.items():
        resp = svc.post_order(channel, payload)
        assert resp.status == 202, (what, resp.status, resp.body[:300])
        ids[what] = resp.json()["id"]
    assert len(ids) == len(accepted_cases), ids

    # -- a batch mixing good and hostile lines ------------------------------------------------
    batch = [
        shopify_order(base + 30),
        b'{"id": 1e400}',
        b"[" * 5000,
        shopify_order(base + 31, total_price=2**70),
        json.dumps(shopify_doc(base + 32, note="x" * 300_000)).encode(),
        shopify_order(base + 33),
    ]
    resp = svc.post_batch("shopify", batch)
    assert resp.status == 202
    results = resp.lines()
    assert [r["status"] for r in results] == [
        "accepted",
        "rejected",
        "rejected",
        "accepted",
        "rejected",
        "accepted",
    ]
    assert "(max_order_bytes)" in results[4]["reason"]

    # -- gateway messages straight onto orders.raw (no door): the normalise stage alone --------
    huge_amount = shopify_order(base + 40, total_price=2**70)
    oversized = json.dumps(shopify_doc(base + 41, note="y" * 300_000)).encode()
    nested = b'{"id": 9700042, "x":' + b"[" * 10_000 + b"]" * 10_000 + b"}"

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{svc.broker_port}")
        await producer.start()
        try:
            for value in (huge_amount, oversized, nested, b"\xff\xfe{not json"):
                await producer.send_and_wait("orders.raw", value, headers=[("channel", b"shopify")])
        finally:
            await producer.stop()

    asyncio.run(produce())

    # -- every accepted hostile order is dead-lettered with its field and reason ---------------
    for what, oid in ids.items():
        letter = wait_dead_lettered(svc, oid)
        want = accepted_cases[what][2]
        assert letter["stage"] == "normalise"
        assert letter["field"].startswith(want), (what, letter["field"], letter["reason"])
    assert wait_dead_lettered(svc, results[3]["id"])["field"] == "$.total_price"
    for r in (results[0], results[5]):
        assert svc.wait_order(r["id"])["state"] == "paid"
    assert wait_dead_lettered(svc, expected_id("shopify", huge_amount))["field"] == "$.total_price"
    wait_letter(svc, "normalise", "nested too deeply")
    wait_letter(svc, "normalise", "(max_order_bytes)")
    wait_letter(svc, "normalise", "invalid UTF-8")

    # -- the door's refusals are in the dead letters too; the 10 MB one kept only 4 KiB ---------
    for what, _, why in door:
        letter = wait_letter(svc, "ingest", why)
        assert letter["field"], what
    big = wait_letter(svc, "ingest", "order of 10,")
    assert len(big["payload"].encode()) <= 4096 + 3

    # -- after the storm: a good order goes through, nothing restarted -------------------------
    after = shopify_order(base + 99)
    resp = svc.post_order("shopify", after)
    assert resp.status == 202
    assert resp.json()["id"] == global_order_id("shopify", str(base + 99))
    assert svc.wait_order(resp.json()["id"])["state"] == "paid"
    svc.wait_drained()
    health = svc.request("GET", "/health")
    assert health.status == 200 and health.json()["processing"] is True
    log = svc.log()
    assert not re.search(r"worker \d+ exited", log), log[-3000:]
    assert svc.child_pids()["worker"] == started_workers


def test_a_batch_of_big_orders_is_forwarded_in_envelopes_that_fit(svc: Service) -> None:
    """60 orders of ~200 KB in one 12 MB request (each under max_order_bytes): the journal must
    split them into messages the broker takes, or its head is stuck and nothing moves."""
    note = "x" * 4000
    big = [
        dict(SHOPIFY["line_items"][0], sku=f"BIG-{i}", quantity=1, title=note) for i in range(45)
    ]
    payloads = [shopify_order(81_000_000 + n, line_items=big, note="n" * 4000) for n in range(60)]
    assert all(150_000 < len(p) < 256 * 1024 for p in payloads), len(payloads[0])
    resp = svc.post_batch("shopify", payloads)
    assert resp.status == 202 and resp.headers["X-Accepted"] == "60", resp.body[:500]
    svc.wait_drained(timeout=120)
    good = shopify_order(81_000_999)
    assert svc.post_order("shopify", good).status == 202
    svc.wait_order(expected_id("shopify", good))
    assert svc.get_order(expected_id("shopify", payloads[-1])).status == 200
