"""The flood generator's ground truth: labels mean what bench/orders.py says they mean."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import pytest

# bench/ is not an installed package: make the repo root importable under plain `pytest` too
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from bench.orders import (  # noqa: E402
    NEAR_DUP_MAX_S,
    WINDOW_S,
    GeneratedOrder,
    OrderGenerator,
    ndjson_batch_orders,
    ndjson_batches,
    parse_mix,
)
from core.channels import NormaliseContext, normalise, order_no  # noqa: E402
from core.model import CanonicalOrder, global_order_id  # noqa: E402
from core.skus import SkuCatalog  # noqa: E402

N = 6000


@pytest.fixture(scope="module")
def orders() -> list[GeneratedOrder]:
    # rates raised so every label shows up often enough in a small run
    gen = OrderGenerator(
        seed=42,
        sku_count=50,
        duplicate_rate=0.08,
        near_dup_rate=0.05,
        repeat_rate=0.2,
        bad_rate=0.02,
    )
    return gen.generate(N)


@pytest.fixture(scope="module")
def canon(orders: list[GeneratedOrder]) -> list[CanonicalOrder | None]:
    ctx = NormaliseContext(skus=SkuCatalog())
    out: list[CanonicalOrder | None] = []
    for o in orders:
        r = normalise(o.channel, o.payload, ctx)
        out.append(r if isinstance(r, CanonicalOrder) else None)
    return out


def _multiset(c: CanonicalOrder) -> tuple[tuple[str, int], ...]:
    acc: Counter[str] = Counter()
    for li in c.lines:
        acc[li.sku] += li.quantity
    return tuple(sorted(acc.items()))


def _recipient(c: CanonicalOrder) -> tuple[str, ...]:
    r = c.recipient
    return (r.name, r.phone, r.phone_masked, r.country, r.address)


def test_every_label_and_channel_appears(orders: list[GeneratedOrder]) -> None:
    labels = Counter(o.label for o in orders)
    assert set(labels) == {
        "unique",
        "exact_resend",
        "cross_channel",
        "near_dup",
        "repeat",
        "invalid",
    }
    assert {o.channel for o in orders} == {
        "shopify",
        "tiktok",
        "amazon",
        "taobao",
        "jd",
        "pdd",
        "ministore",
    }


def test_valid_payloads_normalise_and_match_metadata(
    orders: list[GeneratedOrder], canon: list[CanonicalOrder | None]
) -> None:
    for o, c in zip(orders, canon, strict=True):
        if o.label == "invalid":
            assert c is None, f"invalid order {o.order_no} ({o.invalid}) normalised"
            continue
        assert c is not None, f"{o.channel} {o.label} {o.order_no} was dead-lettered"
        assert c.channel_order_no == o.order_no
        assert c.id == o.order_id == global_order_id(o.channel, o.order_no)
        assert c.total == o.total and c.currency == o.currency
        assert c.created_at == o.created_at and c.updated_at == o.updated_at
        assert _multiset(c) == o.skus
        assert c.recipient.phone == o.phone
        assert (c.payment_status != "unpaid") == o.paid or o.channel == "pdd"


def test_ingest_reads_order_numbers(orders: list[GeneratedOrder]) -> None:
    for o in orders:
        found = order_no(o.channel, o.payload)
        if o.invalid == "malformed":
            assert not isinstance(found, str)
        else:
            assert found == o.order_no


def test_exact_resends_repeat_an_earlier_channel_order(
    orders: list[GeneratedOrder], canon: list[CanonicalOrder | None]
) -> None:
    first: dict[tuple[str, str], int] = {}
    for i, o in enumerate(orders):
        key = (o.channel, o.order_no)
        if o.label == "exact_resend":
            assert key in first, "resend of nothing"
            src = orders[o.ref]
            assert (src.channel, src.order_no) == key and o.ref < i
            assert o.updated_at >= src.updated_at
            assert canon[i].total == canon[o.ref].total  # type: ignore[union-attr]
        elif o.label != "invalid":
            assert key not in first, f"{o.label} re-uses {key}"
        first.setdefault(key, i)


def test_cross_channel_copies_share_order_no_and_phone(
    orders: list[GeneratedOrder], canon: list[CanonicalOrder | None]
) -> None:
    n = 0
    for i, o in enumerate(orders):
        if o.label != "cross_channel":
            continue
        n += 1
        src, c, cs = orders[o.ref], canon[i], canon[o.ref]
        assert c is not None and cs is not None
        assert o.ref < i and src.channel != o.channel and src.order_no == o.order_no
        assert c.recipient.phone and c.recipient.phone == cs.recipient.phone
        assert c.total == cs.total and c.currency == cs.currency
        assert _multiset(c) == _multiset(cs)
    assert n > 10


def test_near_dups_match_recipient_amount_skus_within_window(
    orders: list[GeneratedOrder], canon: list[CanonicalOrder | None]
) -> None:
    n = 0
    for i, o in enumerate(orders):
        if o.label != "near_dup":
            continue
        n += 1
        src, c, cs = orders[o.ref], canon[i], canon[o.ref]
        assert c is not None and cs is not None
        assert o.ref < i and src.channel == o.channel and src.order_no != o.order_no
        assert src.label in ("unique", "repeat")
        assert _recipient(c) == _recipient(cs)
        assert c.total == cs.total and _multiset(c) == _multiset(cs)
        assert 0 <= c.created_at - cs.created_at <= NEAR_DUP_MAX_S * 1000 < WINDOW_S * 1000
    assert n > 50


def test_unique_and_repeat_never_satisfy_the_near_dup_predicate(
    orders: list[GeneratedOrder],
) -> None:
    """No earlier order of the same customer within the window has the same amount and SKUs."""
    history: dict[int, list[GeneratedOrder]] = {}
    seen_customers: set[int] = set()
    for o in orders:
        if o.label == "invalid":
            continue
        if o.label in ("unique", "repeat"):
            for e in history.get(o.customer, ()):
                close = abs(o.created_at - e.created_at) <= WINDOW_S * 1000
                assert not (close and e.total == o.total and e.skus == o.skus), (o, e)
            if o.label == "unique":
                assert o.customer not in seen_customers
            else:
                assert o.customer in seen_customers
        if o.label != "exact_resend":
            history.setdefault(o.customer, []).append(o)
        seen_customers.add(o.customer)


def test_deterministic_for_a_seed() -> None:
    a = OrderGenerator(seed=3).generate(300)
    b = OrderGenerator(seed=3).generate(300)
    c = OrderGenerator(seed=4).generate(300)
    assert a == b
    assert {o.order_no for o in a}.isdisjoint({o.order_no for o in c})


def test_channel_mix_is_respected() -> None:
    orders = OrderGenerator(seed=1, channel_mix=parse_mix("jd=1")).generate(200)
    assert {o.channel for o in orders} == {"jd"}
    with pytest.raises(ValueError):
        OrderGenerator(seed=1, channel_mix={"ebay": 1.0})


def test_ndjson_batches_group_by_channel(orders: list[GeneratedOrder]) -> None:
    batches = ndjson_batches(orders, 100)
    groups = ndjson_batch_orders(orders, 100)
    assert len(batches) == len(groups)
    total = 0
    for (channel, body), group in zip(batches, groups, strict=True):
        lines = body.rstrip(b"\n").split(b"\n")
        assert 1 <= len(lines) <= 100 and len(lines) == len(group)
        assert all(g.channel == channel for g in group)
        assert lines == [g.payload for g in group]
        total += len(lines)
    assert total == len(orders)
