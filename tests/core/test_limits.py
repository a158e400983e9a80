"""Each hostile-input limit: where it is checked, the field it names, the limit in its reason."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.channels import ADAPTERS, NormaliseContext
from core.framing import TooManyLines, count_lines, split_ndjson, split_orders
from core.model import DEFAULT_LIMITS, MAX_MINOR, CanonicalOrder, Limits, Rejection
from core.skus import SkuCatalog
from streams.settings import Settings, SettingsError, load_settings

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
CTX = NormaliseContext(skus=SkuCatalog())


def fixture(channel: str, name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / channel / name).read_bytes())


SHOPIFY = fixture("shopify", "paid_webhook.json")
TIKTOK = fixture("tiktok", "awaiting_shipment_masked.json")
JD = fixture("jd", "paid_masked.json")


def shopify(ctx: NormaliseContext = CTX, **changes: Any) -> CanonicalOrder | Rejection:
    return ADAPTERS["shopify"].normalise(json.dumps({**SHOPIFY, **changes}).encode(), ctx)


def rejected(result: CanonicalOrder | Rejection) -> Rejection:
    assert isinstance(result, Rejection), result
    assert not result.reason.startswith("internal error"), result
    return result


# ------------------------------------------------------------------------------------ settings


def test_settings_defaults_are_the_model_defaults() -> None:
    s = Settings()
    for name in Limits.__struct_fields__:
        assert getattr(s, name) == getattr(DEFAULT_LIMITS, name), name


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_batch_lines", 0),
        ("max_order_bytes", 100),
        ("max_order_bytes", 128 * 2**20),  # over max_body_bytes (64 MiB)
        ("max_order_lines", 0),
        ("max_string_chars", 10),
        ("max_note_chars", 100),  # under max_string_chars
        ("max_body_bytes", 10),
    ],
)
def test_settings_refuse_unusable_limits(key: str, value: int) -> None:
    with pytest.raises(SettingsError, match=f"config key '{key}'"):
        load_settings(overrides={key: value})


# ------------------------------------------------------------------------------------- framing


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from([b"", b" ", b"\t", b"\r", b"x", b"{}", b" a ", b"\x0b"]), max_size=30)
)
def test_count_lines_counts_what_split_ndjson_returns(parts: list[bytes]) -> None:
    body = b"\n".join(parts)
    assert count_lines(body) == len(split_ndjson(body))


def test_batch_line_limit() -> None:
    body = b"\n".join([b"{}"] * 10) + b"\n\n  \n"
    assert len(split_orders(body, "application/x-ndjson", max_lines=10)[0]) == 10
    with pytest.raises(TooManyLines, match="more than 9 NDJSON lines; at most 9"):
        split_orders(body, "application/x-ndjson", max_lines=9)
    with pytest.raises(TooManyLines):  # no content type: still a batch
        split_orders(body, "", max_lines=9)
    assert len(split_orders(body, "application/x-ndjson")[0]) == 10  # 0 = no limit


def test_count_lines_is_linear_on_a_flood_of_newlines() -> None:
    body = b"\n \n" * 10_000_000  # 30 MB: 20 million lines, all blank
    started = time.perf_counter()
    assert count_lines(body) == 0
    assert time.perf_counter() - started < 5


def test_deeply_nested_multiline_body_is_one_document() -> None:
    body = b"[\n" * 5000 + b"]\n" * 5000
    assert split_orders(body) == ([(1, body)], False)


# ------------------------------------------------------------------------ per-order, normalise


def test_order_bytes() -> None:
    small = NormaliseContext(skus=SkuCatalog(), limits=Limits(max_order_bytes=2048))
    result = rejected(shopify(small, note="x" * 100))
    assert result.field == "$"
    assert "at most 2,048 (max_order_bytes)" in result.reason


def test_line_items_per_order() -> None:
    lines = [{"quantity": 1, "price": "1.00", "sku": f"SKU-{i}"} for i in range(501)]
    result = rejected(shopify(line_items=lines))
    assert result.field == "$.line_items"
    assert result.reason == "501 line items; at most 500 per order (max_order_lines)"
    assert isinstance(shopify(line_items=lines[:500]), CanonicalOrder)


def test_tiktok_counts_folded_lines() -> None:
    """TikTok sends one entry per unit: 600 units of one SKU are one line, not 600."""
    unit = {k: TIKTOK["line_items"][0][k] for k in ("seller_sku", "sale_price", "original_price")}
    doc = {**TIKTOK, "line_items": [unit] * 600}
    doc["payment"] = {**TIKTOK["payment"], "total_amount": "1", "sub_total": "1"}
    result = ADAPTERS["tiktok"].normalise(json.dumps(doc).encode(), CTX)
    assert isinstance(result, CanonicalOrder), result
    assert result.lines[0].quantity == 600


def test_string_fields_name_the_payload_field() -> None:
    address = dict(SHOPIFY["shipping_address"], name="N" * 1001)
    result = rejected(shopify(shipping_address=address))
    assert result.field == "$.shipping_address.name"
    assert result.reason == "1,001 characters; at most 1,000 (max_string_chars)"
    assert result.order_no == str(SHOPIFY["id"])
    assert isinstance(shopify(shipping_address=dict(address, name="N" * 1000)), CanonicalOrder)


def test_joined_string_names_the_canonical_field() -> None:
    address = dict(SHOPIFY["shipping_address"], address1="a" * 600, address2="b" * 600)
    result = rejected(shopify(shipping_address=address))
    assert result.field == "canonical recipient.address"


def test_line_title_and_sku() -> None:
    line = dict(SHOPIFY["line_items"][0], title="t" * 2000)
    result = rejected(shopify(line_items=[line]))
    assert result.field == "$.line_items[0].title"
    line = dict(SHOPIFY["line_items"][0], sku="S" * 1001)
    assert rejected(shopify(line_items=[line])).field == "$.line_items[0].sku"
    line = dict(SHOPIFY["line_items"][0], sku="HOODIE\x00os_1")
    result = rejected(shopify(line_items=[line]))
    assert (result.field, "control characters" in result.reason) == ("$.line_items[0].sku", True)


def test_note_has_its_own_limit() -> None:
    assert isinstance(shopify(note="n" * 5000), CanonicalOrder)
    result = rejected(shopify(note="n" * 5001))
    assert (result.field, result.reason) == (
        "$.note",
        "5,001 characters; at most 5,000 (max_note_chars)",
    )


def test_tags() -> None:
    result = rejected(shopify(tags=",".join(f"t{i}" for i in range(251))))
    assert (result.field, result.reason) == ("canonical tags", "251 tags; at most 250 per order")


def test_limits_from_the_context_apply() -> None:
    strict = NormaliseContext(skus=SkuCatalog(), limits=Limits(max_string_chars=64))
    address = dict(SHOPIFY["shipping_address"], city="C" * 65)
    assert rejected(shopify(strict, shipping_address=address)).field == "$.shipping_address.city"
    assert isinstance(shopify(shipping_address=address), CanonicalOrder)


# ------------------------------------------------------------------- order numbers (the door)


@pytest.mark.parametrize(
    ("number", "why"),
    [
        ("9" * 129, "order number of 129 characters; at most 128"),
        ("5798\n723", "contains control characters"),
        ("A\x00B", "contains control characters"),
        ("x" * 10_000, "order number of 10,000 characters; at most 128"),
        (10**200, "order number of about"),
    ],
)
def test_order_number_at_the_door_and_in_normalise(number: object, why: str) -> None:
    payload = json.dumps({**SHOPIFY, "id": number}).encode()
    at_door = ADAPTERS["shopify"].order_no(payload)
    assert isinstance(at_door, Rejection)
    assert at_door.field == "$.id" and why in at_door.reason
    result = rejected(ADAPTERS["shopify"].normalise(payload, CTX))
    assert result.field == "$.id" and why in result.reason
    assert result.order_no == ""  # not a usable number: the dead letter is filed by time


def test_order_number_of_128_characters_is_fine() -> None:
    payload = json.dumps({**SHOPIFY, "id": "9" * 128}).encode()
    assert ADAPTERS["shopify"].order_no(payload) == "9" * 128


# ------------------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("value", "why"),
    [
        (2**70, "out of range"),
        ("1e999999", "out of range"),
        ("1E+30", "out of range"),
        ("9" * 41, "amount of 41 characters is not a price"),
        (1e308, "out of range"),
        (MAX_MINOR, "out of range"),  # x100 for USD cents
    ],
)
def test_amounts_out_of_range(value: object, why: str) -> None:
    started = time.perf_counter()
    result = rejected(shopify(total_price=value))
    assert time.perf_counter() - started < 1
    assert result.field == "$.total_price" and why in result.reason


def test_amount_products_out_of_range() -> None:
    """Each value in range, the product not: caught on the finished order."""
    line = dict(SHOPIFY["line_items"][0], price="90000000000000.00", quantity=1000)
    line.pop("discount_allocations", None)
    line.pop("total_discount", None)
    result = rejected(shopify(line_items=[line]))
    assert result.field == "canonical lines[0].line_total"
    assert "outside 0..9007199254740991" in result.reason


def test_jpy_amount_with_a_huge_exponent_is_refused_fast() -> None:
    """int(Decimal("1e999999")) took 67 s for a zero-decimal currency."""
    doc = fixture("amazon", "pending_fba_jp.json")
    doc["items"][0]["ItemPrice"]["Amount"] = "1e999999"
    started = time.perf_counter()
    result = rejected(ADAPTERS["amazon"].normalise(json.dumps(doc).encode(), CTX))
    assert time.perf_counter() - started < 1
    assert result.field == "$.items[0].ItemPrice.Amount"


@pytest.mark.parametrize(("value", "why"), [(10**7, "at most 1000000"), ("9" * 30, "whole number")])
def test_quantity(value: object, why: str) -> None:
    doc = {**JD, "itemInfoList": [dict(JD["itemInfoList"][0], itemTotal=value)]}
    result = rejected(ADAPTERS["jd"].normalise(json.dumps(doc).encode(), CTX))
    assert result.field == "$.itemInfoList[0].itemTotal" and why in result.reason


@pytest.mark.parametrize("value", [2**62, "9" * 300, 10**17])
def test_unix_timestamps_past_9999(value: object) -> None:
    doc = {**TIKTOK, "create_time": value}
    result = rejected(ADAPTERS["tiktok"].normalise(json.dumps(doc).encode(), CTX))
    assert result.field == "$.create_time"


# ------------------------------------------------------------------------------------ nesting


@pytest.mark.parametrize("channel", sorted(ADAPTERS))
def test_deep_nesting(channel: str) -> None:
    payload = b'{"x":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    for result in (ADAPTERS[channel].order_no(payload), ADAPTERS[channel].normalise(payload, CTX)):
        assert isinstance(result, Rejection)
        assert (result.field, result.reason) == (
            "$",
            "malformed JSON: nested too deeply (over ~1,000 levels)",
        )


def test_a_limited_order_still_encodes() -> None:
    """What passes the limits encodes for every later stage (64-bit msgpack ints)."""
    order = shopify(total_price=str(MAX_MINOR // 100))
    assert isinstance(order, CanonicalOrder)
    msgspec.msgpack.encode(order)


def test_undecodable_order_keeps_the_number_the_door_read() -> None:
    """Invalid UTF-8 in a field the door skips: accepted with an id, so the normaliser's
    rejection must carry the number (GET /v1/orders/{id} then shows the dead letter)."""
    payload = json.dumps({**SHOPIFY, "note": "@@"}).encode().replace(b"@@", b"\xc3\x28")
    assert ADAPTERS["shopify"].order_no(payload) == str(SHOPIFY["id"])
    result = rejected(ADAPTERS["shopify"].normalise(payload, CTX))
    assert "invalid UTF-8" in result.reason
    assert result.order_no == str(SHOPIFY["id"])
