"""One purchase relayed by two channels that render the buyer differently is held for review.

Through the real service (HTTP door, journal, broker, both dedup stages on RocksDB, the order
stage): a Shopify order and its TikTok Shop copy (masked phone, the address as one string, one
line per unit), and a Taobao order and its Pinduoduo copy (masked phone, name and street beside
ciphertext). Each copy is held as a suspected duplicate of the first, and the review queue shows
the score and the fields that agreed. A household member at the same address is not held.
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

import pytest

from core.channels import NormaliseContext, normalise
from core.dedup import dedup_facts
from core.skus import SkuCatalog
from tests.integration.conftest import Service
from tests.integration.helpers import FIXTURES

pytestmark = pytest.mark.integration


def _fixture(path: str) -> dict[str, Any]:
    return json.loads((FIXTURES / path).read_bytes())


def shopify_original(number: int, phone: str = "+1 415 555 0134", first: str = "John") -> bytes:
    doc = _fixture("shopify/paid_webhook.json")
    doc["id"] = number
    doc["shipping_address"] = dict(
        doc["shipping_address"],
        first_name=first,
        last_name="Smith",
        name=f"{first} Smith",
        phone=phone,
        address1="1 Market St",
        address2="Apt 4",
        city="San Francisco",
        province="California",
        province_code="CA",
        zip="94105",
    )
    return json.dumps(doc).encode()


def tiktok_copy(number: int) -> bytes:
    """TikTok Shop's rendering of the same purchase: the phone masked, the whole address in
    ``full_address`` only, one line per unit, the same total."""
    shop = _fixture("shopify/paid_webhook.json")
    doc = _fixture("tiktok/awaiting_shipment_masked.json")
    doc["id"] = str(number)
    created = 1_795_446_000  # 2026-11-23T10:00:00-05:00, Shopify's created_at
    doc.update(create_time=created + 20, update_time=created + 25, paid_time=created + 21)
    doc["recipient_address"] = {
        "name": "John Smith",
        "phone_number": "(+1)415****134",
        "full_address": "1 Market Street #4, San Francisco, California, United States, 94105",
        "postal_code": "94105",
        "region_code": "US",
        "district_info": [
            {"address_level": "L0", "address_level_name": "Country", "address_name": "US"},
            {"address_level": "L1", "address_level_name": "State", "address_name": "California"},
            {"address_level": "L3", "address_level_name": "City", "address_name": "San Francisco"},
        ],
    }
    template = doc["line_items"][0]
    lines = []
    for n, item in enumerate(shop["line_items"]):
        for unit in range(item["quantity"]):
            lines.append(
                dict(
                    template,
                    id=f"{number}{n}{unit}",
                    seller_sku=item["sku"],
                    product_name=item["title"],
                    original_price=item["price"],
                    sale_price=item["price"],
                    seller_discount="0.00",
                )
            )
    doc["line_items"] = lines
    doc["payment"] = dict(
        doc["payment"],
        total_amount=shop["total_price"],
        sub_total=shop["subtotal_price"],
        tax=shop["total_tax"],
        product_tax=shop["total_tax"],
    )
    return json.dumps(doc).encode()


def taobao_original(number: int, name: str = "王小明", mobile: str = "13812345670") -> bytes:
    doc = _fixture("taobao/paid_masked_wrapped.json")
    trade = doc["trade_fullinfo_get_response"]["trade"]
    trade.update(
        tid=number,
        tid_str=str(number),
        receiver_name=name,
        receiver_mobile=mobile,
        receiver_state="浙江省",
        receiver_city="杭州市",
        receiver_district="西湖区",
        receiver_town="",
        receiver_address="文三路478号 3栋201室",
        receiver_zip="310012",
        payment="99.00",
        total_fee="109.00",
        discount_fee="10.00",
        num=1,
    )
    line = trade["orders"]["order"][0]
    line.update(
        oid=number + 1, oid_str=str(number + 1), outer_sku_id="HD-001-BK-L", num=1,
        price="109.00", total_fee="99.00", payment="99.00", discount_fee="10.00",
    )  # fmt: skip
    trade["orders"]["order"] = [line]
    return json.dumps(doc).encode()


def pdd_copy(order_sn: str) -> bytes:
    """Pinduoduo's rendering: ciphertext in the personal fields, masks beside them."""
    doc = _fixture("pdd/paid_encrypted_wrapped.json")
    info = doc["order_info_get_response"]["order_info"]
    info.update(
        order_sn=order_sn,
        receiver_name_mask="王*明",
        receiver_phone_mask="1*********0",
        receiver_address_mask="浙江省杭州市西湖区文三路***号",
        province="浙江省",
        city="杭州市",
        town="西湖区",
    )
    info["item_list"][0].update(outer_id="HD-001-BK-L", goods_count=1)
    return json.dumps(doc).encode()


def _facts(channel: str, payload: bytes):  # type: ignore[no-untyped-def]
    order = normalise(channel, payload, NormaliseContext(skus=SkuCatalog()))
    assert not hasattr(order, "field"), order
    return dedup_facts(order)  # type: ignore[arg-type]


def test_payloads_are_one_purchase_to_the_matcher() -> None:
    """The pairs below agree on block, amount and SKUs: only the recipient comparison decides."""
    for (c1, p1), (c2, p2) in (
        (("shopify", shopify_original(1)), ("tiktok", tiktok_copy(2))),
        (("taobao", taobao_original(3)), ("pdd", pdd_copy("261123-000000000000004"))),
    ):
        a, b = _facts(c1, p1), _facts(c2, p2)
        assert (a.block, a.currency, a.total, a.items) == (b.block, b.currency, b.total, b.items)
        assert abs(a.created_at - b.created_at) < 60_000
        assert not b.phone  # the copy's phone is masked: the exact rule cannot see it


def _accepted(resp) -> str:  # type: ignore[no-untyped-def]
    assert resp.status == 202, resp.body[:300]
    return resp.json()["id"]


def _review_row(svc: Service, oid: str, timeout: float = 60.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    rows: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        rows = svc.request("GET", "/v1/review?limit=1000").json()
        for row in rows:
            if row["order_id"] == oid:
                return row
        time.sleep(0.2)
    raise AssertionError(f"{oid} never reached the review queue: {rows}")


@pytest.mark.parametrize(
    ("first", "second", "expect"),
    [
        pytest.param(
            ("shopify", shopify_original(41_000_001)),
            ("tiktok", tiktok_copy(576_000_000_041_000_001)),
            {"phone:compatible", "name:agree", "address:agree", "postcode:agree"},
            id="shopify-tiktok",
        ),
        pytest.param(
            ("taobao", taobao_original(4_041_000_000_000_000_001)),
            ("pdd", pdd_copy("261123-041000000000001")),
            {"phone:weak", "name:compatible", "address:compatible"},
            id="taobao-pdd",
        ),
    ],
)
def test_copy_rendered_by_another_channel_is_held_as_suspected_duplicate(
    service: Service,
    first: tuple[str, bytes],
    second: tuple[str, bytes],
    expect: set[str],
) -> None:
    original = _accepted(service.post_order(*first))
    service.wait_order(original)
    suspect = _accepted(service.post_order(*second))
    doc = service.wait_order(suspect)
    assert doc["state"] == "held", doc
    assert doc["duplicate_of"] == original and doc["duplicate_rule"] == "near_duplicate"
    row = _review_row(service, suspect)
    assert row["suspected_of"] == original and row["reason"] == "near_duplicate"
    assert row["match_score"] >= 6
    assert set(row["match_fields"]) == expect
    assert service.wait_order(original)["state"] == "paid"  # the first goes on


def test_household_member_at_the_same_address_is_not_held(service: Service) -> None:
    """Same address, basket and minute; another name and phone: two people, two orders."""
    first = _accepted(service.post_order("shopify", shopify_original(41_000_101)))
    service.wait_order(first)
    sister = shopify_original(41_000_102, phone="+1 415 555 0199", first="Jane")
    second = _accepted(service.post_order("shopify", sister))
    doc = service.wait_order(second)
    assert doc["state"] == "paid" and not doc["duplicate_of"], doc
    relayed = copy.deepcopy(json.loads(tiktok_copy(576_000_000_041_000_102)))
    relayed["recipient_address"]["name"] = "Jane Smith"
    relayed["recipient_address"]["phone_number"] = "(+1)415****199"
    third = _accepted(service.post_order("tiktok", json.dumps(relayed).encode()))
    doc = service.wait_order(third)
    # Jane's own TikTok copy is held as hers, not John's
    assert doc["state"] == "held" and doc["duplicate_of"] == second, doc
