"""The reconciliation rules, without a channel: classification, the cursor, durations, links."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.reconcile import (
    HeldSummary,
    classify,
    link_next,
    next_cursor,
    parse_duration_ms,
)


def summary(updated: int = 1000, total: int = 500, status: str = "paid", lines=None) -> HeldSummary:
    return HeldSummary(updated, 0, "USD", total, status, "paid", lines or [("A", 1)], "paid")


def test_missing_same_newer_different() -> None:
    assert classify(summary(), None) == ("missing", [])
    assert classify(summary(), summary()) == ("same", [])
    outcome, diff = classify(summary(updated=2000, status="refunded"), summary(status="paid"))
    assert outcome == "newer" and [d.field for d in diff] == ["payment_status"]
    outcome, diff = classify(summary(total=600, lines=[("A", 2)]), summary())
    assert outcome == "different"
    assert [(d.field, d.channel, d.orderstream) for d in diff] == [
        ("total", "600 USD", "500 USD"),
        ("lines", "A×2", "A×1"),
    ]


def test_line_order_does_not_matter() -> None:
    a = summary(lines=[("A", 1), ("B", 2)])
    b = summary(lines=[("B", 2), ("A", 1)])
    assert classify(a, b) == ("same", [])


@given(
    st.integers(0, 10**13),
    st.lists(st.integers(0, 10**13), max_size=20),
    st.integers(0, 10**13),
)
def test_cursor_never_goes_back_nor_past_the_start(
    prev: int, seen: list[int], started: int
) -> None:
    cur = next_cursor(prev, seen, started)
    assert cur >= prev
    assert cur <= max(prev, started)


@pytest.mark.parametrize(
    ("text", "ms"), [("2h", 7_200_000), ("30m", 1_800_000), ("1d", 86_400_000), ("90", 90_000)]
)
def test_durations(text: str, ms: int) -> None:
    assert parse_duration_ms(text) == ms


def test_bad_duration_is_named() -> None:
    with pytest.raises(ValueError, match="'soon'"):
        parse_duration_ms("soon")


def test_link_header() -> None:
    header = (
        "<https://shop.myshopify.com/admin/api/2024-07/orders.json?limit=250&page_info=abc>;"
        ' rel="previous", <https://shop.myshopify.com/admin/api/2024-07/orders.json?limit=250'
        '&page_info=def>; rel="next"'
    )
    assert link_next(header).endswith("page_info=def")
    assert link_next('<https://x/a?page_info=abc>; rel="previous"') is None
    assert link_next(None) is None
