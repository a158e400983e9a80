"""The rules' 24 h recipient count is exact across the recipient stage's partitions.

Through the real service: three Taobao orders from one buyer (same phone and address) with
different baskets and amounts, so their route keys send them to different recipient dedup
partitions; the history stage counts them together, and the third order gets the shipped rule
``same-address-merge-hint`` (tag ``merge_shipment``, an audit entry, a notification). An
order from another buyer in the same minute gets nothing.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from core.channels import NormaliseContext, normalise
from core.dedup import dedup_facts, route_key
from core.skus import SkuCatalog
from ext import kafka_partition
from tests.integration.conftest import Service
from tests.integration.helpers import FIXTURES

pytestmark = pytest.mark.integration

PARTITIONS = 4
SHANGHAI = timezone(timedelta(hours=8))
BASKETS = [("HOODIE-BLK-L", "99.00"), ("MB-C200", "129.00"), ("MUG-350-WHT", "59.00")]


def taobao(
    number: int,
    sku: str,
    price: str,
    mobile: str,
    at: datetime,
    name: str = "王小明",
    street: str = "文三路478号 3栋201室",
) -> bytes:
    doc = json.loads((FIXTURES / "taobao/paid_masked_wrapped.json").read_bytes())
    trade = doc["trade_fullinfo_get_response"]["trade"]
    stamp = at.strftime("%Y-%m-%d %H:%M:%S")
    trade.update(
        tid=number, tid_str=str(number), receiver_name=name, receiver_mobile=mobile,
        receiver_state="浙江省", receiver_city="杭州市", receiver_district="西湖区",
        receiver_town="", receiver_address=street, receiver_zip="310012",
        payment=price, total_fee=price, discount_fee="0.00", num=1,
        created=stamp, modified=stamp, pay_time=stamp,
    )  # fmt: skip
    line = trade["orders"]["order"][0]
    line.update(
        oid=number + 1, oid_str=str(number + 1), outer_sku_id=sku, num=1,
        price=price, total_fee=price, payment=price, discount_fee="0.00",
    )  # fmt: skip
    trade["orders"]["order"] = [line]
    return json.dumps(doc).encode()


def _accepted(resp: Any) -> str:
    assert resp.status == 202, resp.body[:300]
    return resp.json()["id"]


def _wait_tagged(svc: Service, oid: str, timeout: float = 30.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        doc = svc.wait_order(oid)
        if "merge_shipment" in doc["labels"]:
            return doc
        time.sleep(0.2)
    raise AssertionError(f"{oid} never tagged merge_shipment: {doc}\n{svc.log()[-2000:]}")


def test_three_orders_to_one_buyer_on_different_partitions_hint_a_merge(
    make_service: Any,
) -> None:
    now = datetime.now(SHANGHAI).replace(microsecond=0)
    mine = [
        taobao(4_077_000_000_000_000_001 + 10 * n, sku, price, "13812345670", now)
        for n, (sku, price) in enumerate(BASKETS)
    ]
    other = taobao(
        4_077_000_000_000_000_101, *BASKETS[0], "13900000001", now, "李四", "莫干山路100号"
    )
    ctx = NormaliseContext(skus=SkuCatalog())
    parts = {
        kafka_partition(route_key(dedup_facts(normalise("taobao", p, ctx))), PARTITIONS)  # type: ignore[arg-type]
        for p in mine
    }
    assert len(parts) > 1  # the case the recipient stage alone could not count

    svc = make_service(args=["--partitions", str(PARTITIONS)])
    svc.start()
    ids = []
    for payload in mine:
        ids.append(_accepted(svc.post_order("taobao", payload)))
        svc.wait_order(ids[-1])
    stranger = _accepted(svc.post_order("taobao", other))

    third = _wait_tagged(svc, ids[2])
    assert third["state"] == "paid" and third["address_orders_24h"] == 3
    history = svc.request("GET", f"/v1/orders/{ids[2]}/history").json()["history"]
    fired = [h for h in history if h["rule"] == "same-address-merge-hint"]
    assert {(h["actor"], h["source"]) for h in fired} == {("system", "rules")}
    assert any(h["reason"] == "merge_shipment" for h in fired)
    svc.wait_drained()
    for oid in (ids[0], ids[1], stranger):
        doc = svc.wait_order(oid)
        assert "merge_shipment" not in doc["labels"], doc
    assert svc.wait_order(stranger)["address_orders_24h"] == 0  # below every rule: not sent
    assert svc.stop() == 0
