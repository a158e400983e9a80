"""Warehouse routing: region rules, SKU classes, the catch-all, and a table that fails loudly."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from bench.orders import _Catalog
from core.model import CanonicalOrder, LineItem, Recipient
from core.routing import RoutingConfigError, WarehouseRouting, region_key
from core.skus import SkuCatalog

CONFIG = Path(__file__).resolve().parents[2] / "config"


@pytest.fixture(scope="module")
def routing() -> WarehouseRouting:
    return WarehouseRouting.default()


def order(country: str, region: str = "", skus: tuple[str, ...] = ("MUG",)) -> CanonicalOrder:
    return CanonicalOrder(
        id="os_1",
        channel="shopify",
        channel_order_no="1",
        created_at=0,
        updated_at=0,
        currency="USD",
        total=1,
        payment_status="paid",
        lines=[
            LineItem(sku=s, channel_sku=s, quantity=1, unit_price=1, line_total=1) for s in skus
        ],
        recipient=Recipient(country=country, region=region),
    )


def test_region_rule_then_zone_fallback(routing: WarehouseRouting) -> None:
    route = routing.route(order("CN", "浙江省"))
    assert route.warehouses == [
        "hz-east",
        "sh-main",
        "wh-central",
        "gz-south",
        "bj-north",
        "cd-west",
    ]
    assert route.why == (
        "CN/浙江省 -> [hz-east, sh-main, wh-central, gz-south, bj-north, cd-west] "
        "by region rule 浙江 of zone CN"
    )
    assert routing.route(order("CN", "北京市")).warehouses[0] == "bj-north"
    assert routing.route(order("US", "CA")).warehouses == ["us-ca", "us-tx", "us-nj"]
    assert routing.route(order("US", "California")).warehouses[0] == "us-ca"


def test_zone_without_region_rule(routing: WarehouseRouting) -> None:
    route = routing.route(order("CN", "西藏自治区"))
    assert route.warehouses[0] == "sh-main" and route.why.endswith("by zone CN")
    route = routing.route(order("DE", "Bayern"))
    assert route.warehouses == ["eu-rtm", "uk-mnc"]


def test_catch_all_default(routing: WarehouseRouting) -> None:
    route = routing.route(order("BR"))
    assert route.warehouses == ["sh-main", "us-nj"]
    assert route.why == "BR -> [sh-main, us-nj] by catch-all default"
    assert routing.route(order("")).why.startswith("(no country) ->")


def test_sku_classes(routing: WarehouseRouting) -> None:
    route = routing.route(order("CN", "广东省", ("MUG", "LAMP-BK-S-00006", "SOCK-RD-00005")))
    assert route.for_sku("MUG")[0] == "gz-south"
    assert route.for_sku("LAMP-BK-S-00006") == ["hz-bulky", "gz-bulky"]
    assert route.for_sku("SOCK-RD-00005") == ["nb-bonded", "gz-bonded"]
    assert "SKU LAMP-BK-S-00006 class bulky-cn -> [hz-bulky, gz-bulky]" in route.why
    assert "SKU SOCK-RD-00005 class bonded -> [nb-bonded, gz-bonded]" in route.why
    us = routing.route(order("US", "NY", ("LAMP-BK-S-00006", "SOCK-RD-00005")))
    assert us.for_sku("LAMP-BK-S-00006") == ["us-bulky", "us-nj"]
    assert us.for_sku("SOCK-RD-00005") == us.warehouses  # bonded applies to CN buyers only


def test_every_known_sku_routes_somewhere(routing: WarehouseRouting) -> None:
    skus = list(SkuCatalog.from_toml(CONFIG / "skus.toml")._index.values())
    skus += _Catalog(200, 1.0, random.Random(1)).codes
    for country, region in [
        ("CN", "上海市"),
        ("US", "TX"),
        ("GB", "England"),
        ("JP", "Tokyo"),
        ("ZA", ""),
    ]:
        route = routing.route(order(country, region, tuple(skus)))
        for sku in skus:
            assert route.for_sku(sku), (country, sku)
            assert all(w in routing.warehouses for w in route.for_sku(sku))


def test_region_key() -> None:
    assert region_key(" 浙江省 ") == region_key("浙江") == "浙江"
    assert region_key("广西壮族自治区") == "广西"
    assert region_key("上海市") == "上海"
    assert region_key("California") == "california"


BASE: dict[str, Any] = {
    "warehouses": {"a": "A", "b": "B"},
    "routing": {"default": ["a"]},
    "zones": [{"name": "CN", "countries": ["CN"], "warehouses": ["a", "b"]}],
}


@pytest.mark.parametrize(
    ("patch", "key", "reason"),
    [
        ({"routing": {"default": []}}, "routing.default", "must be a non-empty list"),
        ({"routing": {"default": ["zz"]}}, "routing.default", "'zz' is not declared"),
        ({"routing": {"default": ["a"], "x": 1}}, "routing.x", "unknown key"),
        ({"routing": None}, "routing", "missing"),
        ({"warehouses": {}}, "warehouses", "must be a table"),
        ({"zone": []}, "zone", "unknown key"),
        (
            {"zones": [{"name": "CN", "countries": ["CN"], "warehouses": ["a", "a"]}]},
            "zones[0].warehouses",
            "lists a warehouse twice",
        ),
        (
            {"zones": [{"name": "CN", "countries": ["cn"], "warehouses": ["a"]}]},
            "zones[0].countries",
            "'cn' is not an ISO 3166-1 alpha-2 code",
        ),
        (
            {
                "zones": [
                    {"name": "CN", "countries": ["CN"], "warehouses": ["a"]},
                    {"name": "X", "countries": ["CN"], "warehouses": ["b"]},
                ]
            },
            "zones[1].countries",
            "CN is already in zone CN",
        ),
        (
            {
                "zones": [
                    {
                        "name": "CN",
                        "countries": ["CN"],
                        "warehouses": ["a"],
                        "regions": {"浙江": ["a"], "浙江省": ["b"]},
                    }
                ]
            },
            "zones[0].regions.浙江省",
            "same region as '浙江'",
        ),
        (
            {
                "zones": [
                    {
                        "name": "CN",
                        "countries": ["CN"],
                        "warehouses": ["a"],
                        "regions": {"x": ["q"]},
                    }
                ]
            },
            "zones[0].regions.x",
            "'q' is not declared",
        ),
        (
            {"sku_classes": [{"name": "bulky", "warehouses": ["a"]}]},
            "sku_classes[0]",
            "matches no SKU",
        ),
        (
            {
                "sku_classes": [
                    {"name": "k", "skus": ["X"], "warehouses": ["a"]},
                    {"name": "k", "skus": ["Y"], "warehouses": ["a"]},
                ]
            },
            "sku_classes[1].name",
            "defined twice",
        ),
        (
            {"sku_classes": [{"name": "k", "skus": ["X"], "warehouses": ["a"], "mode": 1}]},
            "sku_classes[0].mode",
            "unknown key",
        ),
    ],
)
def test_config_errors_name_the_key(patch: dict[str, Any], key: str, reason: str) -> None:
    data = {**BASE, **patch}
    data = {k: v for k, v in data.items() if v is not None}
    with pytest.raises(RoutingConfigError) as err:
        WarehouseRouting.from_dict(data, source="t.toml")
    assert err.value.key == key
    assert reason in err.value.reason
    assert str(err.value).startswith(f"t.toml: {key}: ")


def test_broken_toml_file(tmp_path: Path) -> None:
    bad = tmp_path / "w.toml"
    bad.write_text("[warehouses\n")
    with pytest.raises(RoutingConfigError, match="not valid TOML"):
        WarehouseRouting.from_toml(bad)
