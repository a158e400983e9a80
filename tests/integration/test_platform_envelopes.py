"""Platform envelopes end to end, against the real service.

A gateway forwards each platform's API response unchanged: the door must read the order number
inside the envelope (the 202 carries the global id of the order, not a 400 "missing order number"),
and the order is recorded with that number, its total and its lines. The platforms' error answers
are refused at the door naming the error, and dead-lettered. A gateway producing an envelope to
``orders.raw`` gets the same treatment in the stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from core.model import global_order_id
from tests.integration.conftest import Service
from tests.integration.helpers import FIXTURES

pytestmark = pytest.mark.integration

# (channel, fixture, channel order number, total in minor units, canonical lines)
ENVELOPES = [
    ("amazon", "unshipped_us_responses.json", "113-4928374-1029384", 12078, 2),
    ("jd", "paid_masked_get_response.json", "302938475610", 43800, 2),
    ("pdd", "presale_deposit_response.json", "261111-000123456789012", 19990, 1),
    ("pdd", "paid_encrypted_wrapped.json", "261123-048573629104857", 9900, 1),
    ("shopify", "paid_get_response.json", "5798723458123", 23623, 2),
    ("shopify", "partially_paid_get.json", "5798723458999", 10170, 1),
    ("taobao", "presale_deposit_response.json", "4012345678901234999", 29900, 1),
    ("taobao", "paid_masked_wrapped.json", "4012345678901234567", 42800, 2),
    ("tiktok", "awaiting_shipment_response.json", "576472938475629384", 11831, 2),
    ("tiktok", "unpaid_preorder_wrapped.json", "577001234567890123", 7900, 1),
]

# (channel, error fixture, field the 400 names, what its reason starts with)
ERRORS = [
    ("amazon", "errors.json", "$.errors", "the platform answered an error: Unauthorized"),
    (
        "amazon",
        "items_quota_exceeded.json",
        "$.items.errors",
        "the platform answered an error: QuotaExceeded",
    ),
    ("jd", "error_response.json", "$.error_response", "the platform answered an error: 19"),
    (
        "jd",
        "api_result_failed.json",
        "$.jingdong_pop_order_get_responce.orderDetailInfo.apiResult",
        "the platform answered an error: 10400001",
    ),
    ("pdd", "error_response.json", "$.error_response", "the platform answered an error: 10019"),
    ("shopify", "not_found.json", "$.errors", "the platform answered an error: Not Found"),
    ("taobao", "error_response.json", "$.error_response", "the platform answered an error: 27"),
    ("tiktok", "error_response.json", "$.code", "the platform answered an error: 36009004"),
    ("tiktok", "order_status_webhook.json", "$.data", "a webhook notification (type 1)"),
]


def fixture(channel: str, name: str) -> bytes:
    return (FIXTURES / channel / name).read_bytes()


def dead_letter(service: Service, payload: bytes, timeout: float = 30.0) -> dict[str, Any]:
    """The dead letter holding ``payload`` (newest first), once it is there."""
    text = payload.decode()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        letters = service.request("GET", "/v1/dead-letters?limit=1000").json()
        found = [d for d in letters if d["payload"] == text]
        if found:
            return found[0]
        time.sleep(0.1)
    raise AssertionError(f"no dead letter for {text[:200]!r} within {timeout}s")


@pytest.mark.parametrize(
    ("channel", "name", "number", "total", "lines"),
    ENVELOPES,
    ids=[f"{c}-{n.removesuffix('.json')}" for c, n, *_ in ENVELOPES],
)
def test_platform_envelope_is_accepted_and_recorded(
    service: Service, channel: str, name: str, number: str, total: int, lines: int
) -> None:
    resp = service.post_order(channel, fixture(channel, name))  # unchanged, as forwarded
    assert resp.status == 202, resp.body
    body = resp.json()
    assert body["status"] == "accepted"
    assert body["order_no"] == number
    assert body["id"] == global_order_id(channel, number)
    found = service.wait_order(body["id"])
    assert found["state"] != "dead_lettered", found.get("dead_letter")
    order = found["order"]
    assert (order["channel"], order["channel_order_no"]) == (channel, number)
    assert order["total"] == total
    assert len(order["lines"]) == lines


@pytest.mark.parametrize(
    ("channel", "name", "field", "reason"),
    ERRORS,
    ids=[f"{c}-{n.removesuffix('.json')}" for c, n, *_ in ERRORS],
)
def test_platform_error_answer_is_refused_naming_it(
    service: Service, channel: str, name: str, field: str, reason: str
) -> None:
    payload = fixture(channel, f"errors/{name}")
    resp = service.post_order(channel, payload)
    assert resp.status == 400, resp.body
    error = resp.json()["error"]
    assert error["field"] == field
    assert error["reason"].startswith(reason), error
    assert "missing order number" not in error["reason"]
    letter = dead_letter(service, payload)
    assert (letter["stage"], letter["field"]) == ("ingest", field)
    assert letter["reason"] == error["reason"]


def test_envelopes_in_one_ndjson_batch(service: Service) -> None:
    """A gateway batching responses: one compact envelope per line, an error answer among them."""
    good = json.loads(fixture("jd", "paid_masked_get_response.json"))
    info = good["jingdong_pop_order_get_responce"]["orderDetailInfo"]["orderInfo"]
    lines = []
    for n in range(3):
        info["orderId"] = str(302938480000 + n)
        info["consigneeInfo"]["mobile"] = f"138****{5600 + n}"  # three buyers, not near-copies
        lines.append(json.dumps(good, ensure_ascii=False).encode())
    lines.insert(1, json.dumps(json.loads(fixture("jd", "errors/error_response.json"))).encode())
    resp = service.post_batch("jd", lines)
    assert resp.status == 202, resp.body
    assert (resp.headers["X-Accepted"], resp.headers["X-Rejected"]) == ("3", "1")
    results = resp.lines()
    assert [r["status"] for r in results] == ["accepted", "rejected", "accepted", "accepted"]
    assert (results[1]["line"], results[1]["field"]) == (2, "$.error_response")
    for r, n in zip([results[0], *results[2:]], range(3), strict=True):
        assert r["order_no"] == str(302938480000 + n)
        assert service.wait_order(r["id"])["order"]["channel_order_no"] == r["order_no"]


def test_gateway_producing_envelopes_to_orders_raw(service: Service) -> None:
    """The stream's normaliser reads the same envelopes, and dead-letters an error answer with the
    same field the door names."""
    tiktok = json.loads(fixture("tiktok", "awaiting_shipment_response.json"))
    tiktok["data"]["orders"][0]["id"] = "576472938475700001"
    amazon = json.loads(fixture("amazon", "unshipped_us_responses.json"))
    amazon["order"]["payload"]["AmazonOrderId"] = "113-4928374-7000001"
    amazon["items"]["payload"]["AmazonOrderId"] = "113-4928374-7000001"
    amazon["order"]["payload"]["ShippingAddress"]["Name"] = "Gateway Buyer"
    sent = [
        ("tiktok", json.dumps(tiktok).encode(), "576472938475700001"),
        ("amazon", json.dumps(amazon).encode(), "113-4928374-7000001"),
    ]
    error = fixture("taobao", "errors/error_response.json")

    async def produce() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{service.broker_port}")
        await producer.start()
        try:
            for channel, payload, _ in sent:
                await producer.send_and_wait(
                    "orders.raw", payload, headers=[("channel", channel.encode())]
                )
            await producer.send_and_wait("orders.raw", error, headers=[("channel", b"taobao")])
        finally:
            await producer.stop()

    asyncio.run(produce())
    for channel, _, number in sent:
        found = service.wait_order(global_order_id(channel, number))
        assert (found["order"]["channel"], found["order"]["channel_order_no"]) == (channel, number)
    letter = dead_letter(service, error)
    assert (letter["stage"], letter["field"]) == ("normalise", "$.error_response")
    assert letter["reason"].startswith("the platform answered an error: 27")
