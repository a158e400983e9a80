from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.subscription import EventFilter, FilterError, parse_filter


def test_each_named_dimension_must_match_and_missing_ones_do_not() -> None:
    f = parse_filter({"order": "A,B", "type": "order,stock"})
    assert f.matches("order", "A", "", "shopify")
    assert f.matches("stock", "B", "SKU-1", "")  # a stock change caused by order B
    assert not f.matches("order", "C", "", "shopify")
    assert not f.matches("stock_alert", "A", "SKU-1", "")
    sku = parse_filter({"sku": "SKU-1"})
    assert sku.matches("stock", "A", "SKU-1", "") and sku.matches("stock_alert", "", "SKU-1", "")
    assert not sku.matches("order", "A", "", "shopify")  # order changes carry no SKU
    channel = parse_filter({"channel": "Shopify"})
    assert channel.matches("order", "A", "", "shopify")
    assert not channel.matches("stock", "A", "SKU-1", "")


def test_aliases_become_canonical_skus_and_lists_are_accepted() -> None:
    f = parse_filter({"skus": ["mb c200", " X "]}, lambda s: s.strip().upper().replace(" ", "-"))
    assert f.skus == {"MB-C200", "X"}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"type": "orders"}, "type"),
        ({"colour": "red"}, "colour"),
        ({"order": 5}, "order"),
        ({"sku": ",".join(str(i) for i in range(1001))}, "sku"),
    ],
)
def test_bad_filters_name_the_field(params: dict, field: str) -> None:
    with pytest.raises(FilterError) as err:
        parse_filter(params)
    assert err.value.field == field


@given(st.sampled_from(["order", "stock", "stock_alert"]), st.text(), st.text(), st.text())
def test_the_empty_filter_matches_everything(kind: str, order: str, sku: str, channel: str) -> None:
    assert EventFilter().everything
    assert EventFilter().matches(kind, order, sku, channel)
