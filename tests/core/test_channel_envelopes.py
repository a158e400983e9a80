"""Platform envelopes: the API response a gateway forwards unchanged is read like the bare order.

For every channel with an API, the response fixture (``tests/fixtures/<channel>/*response*``,
``*_wrapped``, ``*_get``) normalises to exactly the canonical order of the bare fixture it wraps,
and the door's ``order_no`` finds the same number in it (else the global id would differ, or the
door would answer 400 "missing order number"). The platform's error answers
(``tests/fixtures/<channel>/errors/``) are refused by both entry points naming the field and the
platform's code and message. Hostile values anywhere in these documents never crash either entry
point (the invariants of ``test_fuzz_adapters.check``).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from core.channels import ADAPTERS, NormaliseContext, normalise, order_no
from core.model import CanonicalOrder, Rejection, global_order_id
from core.skus import SkuCatalog
from tests.core.test_channels import EXPECTED
from tests.core.test_fuzz_adapters import (
    PLACEHOLDER,
    PLAIN_VALUES,
    RAW_VALUES,
    check,
    dumps,
    paths,
    replaced,
)

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"

# (channel, envelope fixture, bare fixture of the same order)
TWINS = [
    ("amazon", "unshipped_us_responses.json", "unshipped_us.json"),
    ("jd", "paid_masked_get_response.json", "paid_masked.json"),
    ("pdd", "presale_deposit_response.json", "presale_deposit.json"),
    ("shopify", "paid_get_response.json", "paid_webhook.json"),
    ("taobao", "presale_deposit_response.json", "presale_deposit.json"),
    ("tiktok", "awaiting_shipment_response.json", "awaiting_shipment_masked.json"),
]
# (channel, envelope fixture, its order number): the twins and the envelopes without a bare twin
ENVELOPES = [(c, env, EXPECTED[c, bare]["channel_order_no"]) for c, env, bare in TWINS] + [
    ("pdd", "paid_encrypted_wrapped.json", "261123-048573629104857"),
    ("shopify", "partially_paid_get.json", "5798723458999"),
    ("taobao", "paid_masked_wrapped.json", "4012345678901234567"),
    ("tiktok", "unpaid_preorder_wrapped.json", "577001234567890123"),
]

# (channel, error fixture, field, reason): what both entry points answer
ERRORS = [
    (
        "amazon",
        "errors.json",
        "$.errors",
        "the platform answered an error: Unauthorized: Access to requested resource is denied.",
    ),
    (
        "amazon",
        "items_quota_exceeded.json",
        "$.items.errors",
        "the platform answered an error: QuotaExceeded: You exceeded your quota for the requested"
        " resource.",
    ),
    (
        "jd",
        "error_response.json",
        "$.error_response",
        "the platform answered an error: 19: 无效的access_token (Invalid access_token)",
    ),
    (
        "jd",
        "api_result_failed.json",
        "$.jingdong_pop_order_get_responce.orderDetailInfo.apiResult",
        "the platform answered an error: 10400001: 订单不存在 (order not exist)",
    ),
    (
        "pdd",
        "error_response.json",
        "$.error_response",
        "the platform answered an error: 10019: access_token已过期",
    ),
    ("shopify", "not_found.json", "$.errors", "the platform answered an error: Not Found"),
    (
        "taobao",
        "error_response.json",
        "$.error_response",
        "the platform answered an error: 27: Invalid session (invalid-sessionkey: SessionKey非法)",
    ),
    (
        "tiktok",
        "error_response.json",
        "$.code",
        "the platform answered an error: 36009004: Invalid credentials. Invalid 'app_key' query"
        " parameter.",
    ),
    (
        "tiktok",
        "order_status_webhook.json",
        "$.data",
        "a webhook notification (type 1) of order 576472938475629384 carries no order: fetch the"
        " order with Get Order Detail and send that response",
    ),
]


@pytest.fixture
def ctx() -> NormaliseContext:
    return NormaliseContext(skus=SkuCatalog.from_toml(ROOT / "config" / "skus.toml"))


def load(channel: str, name: str) -> bytes:
    return (FIXTURES / channel / name).read_bytes()


def doc_of(channel: str, name: str) -> Any:
    return json.loads(load(channel, name))


def at(doc: Any, *path: Any) -> Any:
    for key in path:
        doc = doc[key]
    return doc


def refused(channel: str, doc: Any, ctx: NormaliseContext) -> tuple[Rejection, Rejection]:
    """Both entry points' answers to ``doc``, each asserted to be a Rejection."""
    payload = json.dumps(doc, ensure_ascii=False).encode()
    door, stream = order_no(channel, payload), normalise(channel, payload, ctx)
    assert isinstance(door, Rejection), door
    assert isinstance(stream, Rejection), stream
    return door, stream


# ---------------------------------------------------------------- the envelopes are read


def test_every_marketplace_has_an_envelope_and_its_errors() -> None:
    for channel in ADAPTERS:
        if channel == "ministore":  # our own schema: no platform, no envelope
            continue
        assert any(c == channel for c, _, _ in TWINS), channel
        assert any(c == channel for c, _, _, _ in ERRORS), channel
    listed = {(c, f) for c, f, _, _ in ERRORS}
    on_disk = {(p.parent.parent.name, p.name) for p in FIXTURES.glob("*/errors/*.json")}
    assert listed == on_disk


@pytest.mark.parametrize(("channel", "envelope", "bare"), TWINS)
def test_envelope_normalises_to_the_bare_order(
    channel: str, envelope: str, bare: str, ctx: NormaliseContext
) -> None:
    wrapped = normalise(channel, load(channel, envelope), ctx)
    assert isinstance(wrapped, CanonicalOrder), wrapped
    assert wrapped == normalise(channel, load(channel, bare), ctx)
    expected = EXPECTED[channel, bare]  # the hand-checked values
    assert {key: getattr(wrapped, key) for key in expected} == expected


@pytest.mark.parametrize(("channel", "envelope", "number"), ENVELOPES)
def test_door_reads_the_number_in_every_envelope(
    channel: str, envelope: str, number: str, ctx: NormaliseContext
) -> None:
    payload = load(channel, envelope)
    assert order_no(channel, payload) == number
    order = normalise(channel, payload, ctx)
    assert isinstance(order, CanonicalOrder), order
    assert order.id == global_order_id(channel, number)
    # as a gateway sends it: compact, on one NDJSON line
    assert order_no(channel, json.dumps(json.loads(payload)).encode()) == number


# ---------------------------------------------------------------- error answers are refused


@pytest.mark.parametrize(
    ("channel", "name", "field", "reason"), ERRORS, ids=[f"{c}-{n}" for c, n, _, _ in ERRORS]
)
def test_error_answer_is_refused_naming_the_error(
    channel: str, name: str, field: str, reason: str, ctx: NormaliseContext
) -> None:
    payload = load(channel, f"errors/{name}")
    expected = Rejection(channel=channel, field=field, reason=reason)
    assert order_no(channel, payload) == expected  # the door: 400, and a dead letter
    assert normalise(channel, payload, ctx) == expected  # a gateway's copy on orders.raw
    assert isinstance(check(channel, payload), Rejection)


def test_error_answer_is_quoted_bounded_and_on_one_line(ctx: NormaliseContext) -> None:
    doc = {"error_response": {"code": 15, "msg": "Remote service error\n" + "x" * 100_000}}
    door, stream = refused("taobao", doc, ctx)
    assert door == stream
    assert door.reason.startswith("the platform answered an error: 15: Remote service error x")
    assert len(door.reason) < 300 and "\n" not in door.reason
    door, _ = refused("pdd", {"error_response": {}}, ctx)
    assert door.reason == "the platform answered an error: no code or message"


@pytest.mark.parametrize(
    ("channel", "doc", "field", "reason"),
    [
        (
            "jd",
            {
                "jingdong_pop_order_get_responce": {
                    "code": "66",
                    "zh_desc": "后端服务不可用",
                }
            },
            "$.jingdong_pop_order_get_responce.code",
            "the platform answered an error: 66: 后端服务不可用",
        ),
        (
            "pdd",
            {"order_info_get_response": {"error_response": {"error_code": 50001}}},
            "$.order_info_get_response.error_response",
            "the platform answered an error: 50001",
        ),
        (
            "amazon",
            {"errors": [{"code": "InvalidInput", "message": "Invalid Input"}, {"code": "X"}]},
            "$.errors",
            "the platform answered an error: InvalidInput: Invalid Input (and 1 more)",
        ),
        (
            "shopify",
            {"errors": {"order": ["is invalid"]}},
            "$.errors",
            'the platform answered an error: {"order": ["is invalid"]}',
        ),
    ],
)
def test_other_error_shapes(
    channel: str, doc: Any, field: str, reason: str, ctx: NormaliseContext
) -> None:
    door, stream = refused(channel, doc, ctx)
    assert (door.field, door.reason) == (stream.field, stream.reason) == (field, reason)


# ---------------------------------------------------------------- envelopes without one order


def test_tiktok_response_with_several_orders_names_how_many(ctx: NormaliseContext) -> None:
    doc = doc_of("tiktok", "awaiting_shipment_response.json")
    doc["data"]["orders"] *= 3
    door, stream = refused("tiktok", doc, ctx)
    assert door.field == stream.field == "$.data.orders"
    assert door.reason == stream.reason
    assert door.reason.startswith("a response with 3 orders; one document is one order")
    doc["data"]["orders"] = []
    door, stream = refused("tiktok", doc, ctx)
    assert door == stream
    assert (door.field, door.reason) == (
        "$.data.orders",
        "the response holds no order (an unknown order id?)",
    )
    doc["data"] = None
    door, stream = refused("tiktok", doc, ctx)
    assert door == stream
    assert (door.field, door.reason) == ("$.data", "the response holds no data (no order)")


@pytest.mark.parametrize(
    ("channel", "name", "path", "field", "reason"),
    [
        (
            "jd",
            "paid_masked_get_response.json",
            ("jingdong_pop_order_get_responce", "orderDetailInfo", "orderInfo"),
            "$.jingdong_pop_order_get_responce.orderDetailInfo.orderInfo",
            "missing orderInfo object",
        ),
        (
            "jd",
            "paid_masked_get_response.json",
            ("jingdong_pop_order_get_responce", "orderDetailInfo"),
            "$.jingdong_pop_order_get_responce.orderDetailInfo",
            "missing orderDetailInfo object",
        ),
        (
            "pdd",
            "presale_deposit_response.json",
            ("order_info_get_response", "order_info"),
            "$.order_info_get_response.order_info",
            "missing order_info object",
        ),
        (
            "taobao",
            "presale_deposit_response.json",
            ("trade_fullinfo_get_response", "trade"),
            "$.trade_fullinfo_get_response.trade",
            "missing trade object",
        ),
        (
            "amazon",
            "unshipped_us_responses.json",
            ("items", "payload"),
            "$.items.payload",
            "missing getOrderItems payload object",
        ),
    ],
)
def test_envelope_without_its_order_names_what_is_missing(
    channel: str, name: str, path: tuple[str, ...], field: str, reason: str, ctx: NormaliseContext
) -> None:
    doc = doc_of(channel, name)
    del at(doc, *path[:-1])[path[-1]]
    door, stream = refused(channel, doc, ctx)
    assert (door.field, door.reason) == (stream.field, stream.reason) == (field, reason)


# ---------------------------------------------------------------- Amazon's two responses


def amazon_responses() -> Any:
    return doc_of("amazon", "unshipped_us_responses.json")


def test_amazon_items_of_another_order_are_refused(ctx: NormaliseContext) -> None:
    doc = amazon_responses()
    doc["items"]["payload"]["AmazonOrderId"] = "113-0000000-0000000"
    door, stream = refused("amazon", doc, ctx)
    assert door == stream
    assert door.field == "$.items.payload.AmazonOrderId"
    assert "113-0000000-0000000" in door.reason and "113-4928374-1029384" in door.reason


def test_amazon_first_page_of_items_is_refused(ctx: NormaliseContext) -> None:
    doc = amazon_responses()
    doc["items"]["payload"]["NextToken"] = "2YgYW55IGNhcm5hbCBwbGVhc3VyZS4="
    door, stream = refused("amazon", doc, ctx)
    assert door == stream
    assert door.field == "$.items.payload.NextToken"
    assert "further pages" in door.reason


def test_amazon_half_responses_are_refused(ctx: NormaliseContext) -> None:
    bare = doc_of("amazon", "unshipped_us.json")
    doc = amazon_responses()
    door, stream = refused("amazon", {"order": doc["order"], "items": bare["items"]}, ctx)
    assert door == stream and door.field == "$.items" and door.reason.startswith("a list: ")
    door, stream = refused("amazon", {"order": doc["order"]}, ctx)
    assert door == stream and door.field == "$.items" and door.reason.startswith("missing: ")
    door, stream = refused("amazon", {"order": bare["order"], "items": doc["items"]}, ctx)
    assert door == stream and door.field == "$.order.payload"
    door, stream = refused("amazon", {"items": doc["items"]}, ctx)
    assert door == stream and door.field == "$.order"


# ---------------------------------------------------------------- paths inside an envelope

PRICE_PATHS = [
    (
        "amazon",
        "unshipped_us_responses.json",
        ("items", "payload", "OrderItems", 1, "ItemPrice", "Amount"),
        "$.items.payload.OrderItems[1].ItemPrice.Amount",
    ),
    (
        "amazon",
        "unshipped_us_responses.json",
        ("order", "payload", "OrderTotal", "Amount"),
        "$.order.payload.OrderTotal.Amount",
    ),
    (
        "jd",
        "paid_masked_get_response.json",
        ("jingdong_pop_order_get_responce", "orderDetailInfo", "orderInfo", "orderPayment"),
        "$.jingdong_pop_order_get_responce.orderDetailInfo.orderInfo.orderPayment",
    ),
    (
        "pdd",
        "presale_deposit_response.json",
        ("order_info_get_response", "order_info", "pay_amount"),
        "$.order_info_get_response.order_info.pay_amount",
    ),
    ("shopify", "paid_get_response.json", ("order", "total_price"), "$.order.total_price"),
    (
        "taobao",
        "presale_deposit_response.json",
        ("trade_fullinfo_get_response", "trade", "payment"),
        "$.trade_fullinfo_get_response.trade.payment",
    ),
    (
        "tiktok",
        "awaiting_shipment_response.json",
        ("data", "orders", 0, "payment", "total_amount"),
        "$.data.orders[0].payment.total_amount",
    ),
]


@pytest.mark.parametrize(("channel", "name", "path", "field"), PRICE_PATHS)
def test_bad_value_inside_an_envelope_is_named_by_its_full_path(
    channel: str, name: str, path: tuple[Any, ...], field: str, ctx: NormaliseContext
) -> None:
    doc = doc_of(channel, name)
    number = order_no(channel, load(channel, name))
    at(doc, *path[:-1])[path[-1]] = "12.3.4"
    payload = json.dumps(doc).encode()
    assert order_no(channel, payload) == number  # the door accepts: the number is fine
    result = normalise(channel, payload, ctx)
    assert isinstance(result, Rejection), result
    assert (result.field, result.order_no) == (field, number), result.reason


@pytest.mark.parametrize(
    ("channel", "name", "path", "field"),
    [
        (
            "amazon",
            "unshipped_us_responses.json",
            ("order", "payload", "AmazonOrderId"),
            "$.order.payload.AmazonOrderId",
        ),
        (
            "jd",
            "paid_masked_get_response.json",
            ("jingdong_pop_order_get_responce", "orderDetailInfo", "orderInfo", "orderId"),
            "$.jingdong_pop_order_get_responce.orderDetailInfo.orderInfo.orderId",
        ),
        (
            "pdd",
            "presale_deposit_response.json",
            ("order_info_get_response", "order_info", "order_sn"),
            "$.order_info_get_response.order_info.order_sn",
        ),
        ("shopify", "paid_get_response.json", ("order", "id"), "$.order.id"),
        (
            "tiktok",
            "awaiting_shipment_response.json",
            ("data", "orders", 0, "id"),
            "$.data.orders[0].id",
        ),
    ],
)
def test_envelope_without_an_order_number_names_where_it_belongs(
    channel: str, name: str, path: tuple[Any, ...], field: str, ctx: NormaliseContext
) -> None:
    doc = doc_of(channel, name)
    del at(doc, *path[:-1])[path[-1]]
    door = order_no(channel, json.dumps(doc).encode())
    assert door == Rejection(channel=channel, field=field, reason="missing order number")


# ---------------------------------------------------------------- no false envelopes


@pytest.mark.parametrize(
    ("channel", "name", "path", "value"),
    [
        ("jd", "paid_masked.json", ("orderRemark",), 'say "error_response" and "jingdong_pop'),
        ("amazon", "unshipped_us.json", ("items", 0, "Title"), 'the "payload" and "errors" kit'),
        ("tiktok", "awaiting_shipment_masked.json", ("buyer_message",), 'no "data", "code"'),
        ("pdd", "presale_deposit.json", ("buyer_memo",), '"error_response"'),
        ("taobao", "presale_deposit.json", ("buyer_message",), '"error_response"'),
        ("shopify", "paid_webhook.json", ("note",), 'the "errors" and the "order"'),
    ],
)
def test_an_envelope_key_spelled_in_a_bare_order_is_no_envelope(
    channel: str, name: str, path: tuple[Any, ...], value: str, ctx: NormaliseContext
) -> None:
    doc = doc_of(channel, name)
    at(doc, *path[:-1])[path[-1]] = value
    payload = json.dumps(doc, ensure_ascii=False).encode()
    order = normalise(channel, payload, ctx)
    assert isinstance(order, CanonicalOrder), order
    assert order_no(channel, payload) == order.channel_order_no


# ---------------------------------------------------------------- hostile values never crash

CASES = [(c, n) for c, n, _ in ENVELOPES] + [(c, f"errors/{n}") for c, n, _, _ in ERRORS]


@pytest.mark.parametrize(("channel", "name"), CASES, ids=[f"{c}/{n}" for c, n in CASES])
def test_every_value_of_an_envelope_replaced_by_every_hostile_value(
    channel: str, name: str
) -> None:
    """``test_fuzz_adapters``' exhaustive pass over these documents: each path x each hostile
    value; ``check`` asserts the door and the stream agree on the number or refuse together."""
    doc = json.loads(load(channel, name))
    quoted = json.dumps(PLACEHOLDER).encode()
    for path in paths(doc):
        for value in PLAIN_VALUES:
            check(channel, dumps(replaced(doc, path, value)))
        template = dumps(replaced(doc, path, PLACEHOLDER))
        for raw in RAW_VALUES:
            check(channel, template.replace(quoted, raw, 1))
        check(channel, dumps(replaced(doc, path, copy.deepcopy(doc))))  # nested in itself
