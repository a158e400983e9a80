"""The flood generator's ground truth: labels mean what bench/orders.py says they mean."""

from __future__ import annotations

import json
import re
import sys
import time
import unicodedata
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

# bench/ is not an installed package: make the repo root importable under plain `pytest` too
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from bench.orders import (  # noqa: E402
    HOUSEHOLD_VARIANTS,
    MATCHABLE_VARIANTS,
    NEAR_DUP_MAX_S,
    REPEAT_OUTSIDE_S,
    REPEAT_VARIANTS,
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
def generator() -> OrderGenerator:
    # rates raised so every label and class shows up often enough in a small run; 4 orders/s so
    # the run spans 25 minutes (same-basket repeats come >= 10 minutes after their basket)
    return OrderGenerator(
        seed=42,
        sku_count=50,
        duplicate_rate=0.08,
        near_dup_rate=0.05,
        repeat_rate=0.2,
        bad_rate=0.02,
        orders_per_s=4,
        variant_rate=0.15,
        household_rate=0.04,
        repeat_basket_rate=0.02,
    )


@pytest.fixture(scope="module")
def orders(generator: OrderGenerator) -> list[GeneratedOrder]:
    return generator.generate(N)


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
        "household",
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
        assert o.ref < i and src.order_no != o.order_no and o.customer == src.customer
        assert src.label in ("unique", "repeat", "household")
        assert o.variant in MATCHABLE_VARIANTS
        if o.variant == "same_rendering":
            assert src.channel == o.channel
            assert _recipient(c) == _recipient(cs)
        assert c.total == cs.total and c.currency == cs.currency
        assert _multiset(c) == _multiset(cs)
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


# ------------------------------------------------------------------ rendering classes


def _doc(o: GeneratedOrder) -> dict[str, Any]:
    """The order object of a payload, out of its API envelope if it has one."""
    doc = json.loads(o.payload)
    if o.channel == "tiktok" and "data" in doc:
        return doc["data"]["orders"][0]
    if o.channel == "pdd" and "order_info_get_response" in doc:
        return doc["order_info_get_response"]["order_info"]
    if o.channel == "taobao" and "trade_fullinfo_get_response" in doc:
        return doc["trade_fullinfo_get_response"]["trade"]
    return doc


def _of(orders: list[GeneratedOrder], label: str, variant: str) -> list[int]:
    return [i for i, o in enumerate(orders) if o.label == label and o.variant == variant]


def _fold(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).casefold().replace(",", " ").split())


def test_every_class_appears(orders: list[GeneratedOrder]) -> None:
    classes = Counter((o.label, o.variant) for o in orders)
    for variant in MATCHABLE_VARIANTS:
        assert classes["near_dup", variant] >= 10, (variant, classes)
    for variant in HOUSEHOLD_VARIANTS:
        assert classes["household", variant] >= 10, (variant, classes)
    for variant in REPEAT_VARIANTS:
        assert classes["repeat", variant] >= 10, (variant, classes)
    labelled = {"near_dup", "household", "repeat"}
    assert all(bool(o.variant) == (o.label in labelled) for o in orders)


def test_tiktok_copy_of_a_shopify_order(
    orders: list[GeneratedOrder], canon: list[CanonicalOrder | None]
) -> None:
    for i in _of(orders, "near_dup", "cross_render_shopify_tiktok"):
        o, src = orders[i], orders[orders[i].ref]
        assert (src.channel, o.channel) == ("shopify", "tiktok")
        assert o.created_at - src.created_at <= 60_000
        addr = _doc(o)["recipient_address"]
        assert "address_line1" not in addr and "address_line2" not in addr
        assert "address_detail" not in addr
        assert re.fullmatch(r"\(\+\d+\)\d{3}\*{4}\d{3}", addr["phone_number"])
        c, cs = canon[i], canon[o.ref]
        assert c is not None and cs is not None
        assert c.recipient.address == addr["full_address"]
        assert cs.recipient.city in addr["full_address"]
        # one line per unit, the same multiset and total
        assert len(_doc(o)["line_items"]) == sum(q for _, q in o.skus)
        assert not c.recipient.phone and c.recipient.phone_masked
        assert c.recipient.name == cs.recipient.name


def test_pinduoduo_copy_of_a_taobao_order(
    orders: list[GeneratedOrder], canon: list[CanonicalOrder | None]
) -> None:
    for i in _of(orders, "near_dup", "cross_render_taobao_pdd"):
        o, src = orders[i], orders[orders[i].ref]
        assert (src.channel, o.channel) == ("taobao", "pdd")
        cs = canon[o.ref]
        assert cs is not None and cs.recipient.phone  # a readable original
        d = _doc(o)
        name = cs.recipient.name
        assert d["receiver_phone_mask"] == f"1{'*' * 9}{cs.recipient.phone[-1]}"
        if len(name) > 2:
            assert d["receiver_name_mask"] == name[0] + "*" * (len(name) - 2) + name[-1]
        else:
            assert d["receiver_name_mask"] == name[0] + "*"
        assert d["receiver_address_mask"].endswith("***号")
        assert d["receiver_name"].startswith("~") and d["receiver_phone"].startswith("$")
        assert d["address"].startswith("~")
        c = canon[i]
        assert c is not None and not c.recipient.phone and c.recipient.phone_masked


def test_jd_copy_of_a_taobao_order(
    orders: list[GeneratedOrder], canon: list[CanonicalOrder | None]
) -> None:
    municipal = 0
    for i in _of(orders, "near_dup", "cross_render_taobao_jd"):
        o, src = orders[i], orders[orders[i].ref]
        assert (src.channel, o.channel) == ("taobao", "jd")
        cs = canon[o.ref]
        assert cs is not None
        info = _doc(o)["consigneeInfo"]
        assert not info["province"].endswith(("省", "市"))
        assert info["fullAddress"].startswith(info["province"])
        if cs.recipient.city in ("北京市", "上海市"):  # JD's city level is the district
            municipal += 1
            assert info["city"] == cs.recipient.district and info["county"] == ""
    assert municipal > 0


def test_amazon_copy_of_a_shopify_order(
    orders: list[GeneratedOrder], canon: list[CanonicalOrder | None]
) -> None:
    for i in _of(orders, "near_dup", "cross_render_shopify_amazon"):
        o, src = orders[i], orders[orders[i].ref]
        assert (src.channel, o.channel) == ("shopify", "amazon")
        ship = _doc(o)["order"]["ShippingAddress"]
        assert "Phone" not in ship and not o.phone
        assert re.fullmatch(r"\d{5}-\d{4}", ship["PostalCode"])
        cs = canon[o.ref]
        assert cs is not None and ship["PostalCode"].startswith(cs.recipient.postcode)


def test_formatting_classes_change_only_their_field(
    orders: list[GeneratedOrder], canon: list[CanonicalOrder | None]
) -> None:
    other_channel = 0
    for i, o in enumerate(orders):
        if o.label != "near_dup":
            continue
        c, cs = canon[i], canon[o.ref]
        assert c is not None and cs is not None
        r, rs = c.recipient, cs.recipient
        other_channel += o.channel != orders[o.ref].channel
        if o.variant == "name_order":
            assert r.name != rs.name
            assert sorted(_fold(r.name).split()) == sorted(_fold(rs.name).split())
        elif o.variant == "case_width_spacing":
            assert (r.name, r.address) != (rs.name, rs.address)
            assert "".join(_fold(r.name).split()) == "".join(_fold(rs.name).split())
            assert "".join(_fold(r.address).split()) == "".join(_fold(rs.address).split())
        elif o.variant == "street_abbrev":
            assert r.address != rs.address and r.name == rs.name
            assert r.address.split()[0] == rs.address.split()[0]  # the house number
        elif o.variant == "unit_format":
            unit = rs.address.rsplit(" ", 1)[-1]
            assert "Apt" in rs.address and r.address != rs.address and r.address.endswith(unit)
        elif o.variant == "province_suffix":
            assert rs.region.endswith(("省", "市")) and not r.region.endswith(("省", "市"))
            assert r.region == rs.region[:-1]
        elif o.variant == "missing_postcode":
            assert rs.postcode and not r.postcode and o.channel == orders[o.ref].channel
            # (a TikTok full_address without the postcode is otherwise the same)
            assert r.name == rs.name
            assert r.address == rs.address.replace(f", {rs.postcode}", "")
        elif o.variant == "line_per_unit":
            assert len(c.lines) > len(cs.lines) and all(li.quantity == 1 for li in c.lines)
            assert _recipient(c) == _recipient(cs)
    assert other_channel > 10  # formatting copies also come through another channel


def test_households_are_other_people_at_the_address(
    generator: OrderGenerator, orders: list[GeneratedOrder]
) -> None:
    for variant in HOUSEHOLD_VARIANTS:
        for i in _of(orders, "household", variant):
            o, src = orders[i], orders[orders[i].ref]
            me, them = generator.customers[o.customer], generator.customers[src.customer]
            assert me.cid != them.cid and me.e164 != them.e164 and me.name != them.name
            assert (me.country, me.city, me.street) == (them.country, them.city, them.street)
            assert (o.total, o.currency, o.skus) == (src.total, src.currency, src.skus)
            assert 0 <= o.created_at - src.created_at <= NEAR_DUP_MAX_S * 1000
            if me.country == "CN":
                mine, theirs = me.name[0], them.name[0]
            else:
                mine, theirs = me.name.split()[-1], them.name.split()[-1]
            if variant == "family":
                assert mine == theirs and me.unit == them.unit
            elif variant == "office":
                assert mine != theirs and me.unit == them.unit
            else:
                assert mine != theirs and me.unit != them.unit
    relayed = [o for o in orders if o.label == "household" and o.channel != orders[o.ref].channel]
    assert relayed  # some come through PDD/JD/TikTok/Amazon, rendered like the copies


def test_same_basket_repeats_come_after_the_window(orders: list[GeneratedOrder]) -> None:
    for i in _of(orders, "repeat", "same_basket"):
        o, src = orders[i], orders[orders[i].ref]
        assert o.customer == src.customer and o.channel == src.channel
        assert (o.total, o.currency, o.skus) == (src.total, src.currency, src.skus)
        assert o.created_at - src.created_at >= REPEAT_OUTSIDE_S * 1000


def test_new_classes_off_leave_the_old_labels() -> None:
    gen = OrderGenerator(seed=9, variant_rate=0, household_rate=0, repeat_basket_rate=0)
    out = gen.generate(3000)
    assert {(o.label, o.variant) for o in out if o.label in ("near_dup", "repeat")} <= {
        ("near_dup", "same_rendering"),
        ("repeat", "new_basket"),
    }
    assert not any(o.label == "household" for o in out)


def test_class_mixes() -> None:
    only = OrderGenerator(seed=2, variant_rate=0.3, variant_mix={"street_abbrev": 1.0})
    out = only.generate(2000)
    assert {o.variant for o in out if o.label == "near_dup"} == {
        "same_rendering",
        "street_abbrev",
    }
    # a mix of one channel can only produce same-channel classes
    jd = OrderGenerator(seed=2, channel_mix={"jd": 1.0}, variant_rate=0.3).generate(2000)
    assert {o.channel for o in jd} == {"jd"}
    assert not any(o.variant.startswith("cross_render") for o in jd)
    assert {"province_suffix", "line_per_unit"} <= {o.variant for o in jd}
    with pytest.raises(ValueError):
        OrderGenerator(seed=1, variant_mix={"telepathy": 1.0})
    with pytest.raises(ValueError):
        OrderGenerator(seed=1, household_mix={"family": -1.0})


def test_generation_stays_fast() -> None:
    """The flood never waits for its generator: tens of thousands of orders/s (the bar is kept
    low here for loaded CI machines; bench.linkage and bench.flood print the real figure)."""
    gen = OrderGenerator(seed=7)
    t = time.perf_counter()
    gen.generate(20_000)
    assert 20_000 / (time.perf_counter() - t) > 8_000
