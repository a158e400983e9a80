"""Per-class dedup accuracy: the maths on a hand-made example, the offline evaluator
(bench.linkage) and the peer library comparison (bench.peer; its Splink run is skipped when
Splink is not installed: it is an optional dependency)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, NamedTuple

import pytest

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from bench import linkage, peer  # noqa: E402
from bench.accuracy import dedup_accuracy, meets_bars  # noqa: E402
from bench.orders import MATCHABLE_VARIANTS, GeneratedOrder, OrderGenerator  # noqa: E402
from core.channels import NormaliseContext, normalise  # noqa: E402
from core.dedup import DELETE_RANGE, dedup_facts, route_key  # noqa: E402
from core.model import CanonicalOrder, Recipient  # noqa: E402
from core.recipient_match import folded, who_of  # noqa: E402
from core.skus import SkuCatalog  # noqa: E402


def g(oid: str, label: str, ref: int = -1, variant: str = "") -> GeneratedOrder:
    return GeneratedOrder("shopify", b"", oid, label, order_id=oid, ref=ref, variant=variant)


# index: order                      truth
CORPUS = [
    g("a", "unique"),  # 0           cluster {a, b, c}
    g("b", "near_dup", 0, "same_rendering"),  # 1
    g("c", "near_dup", 0, "cross_render_shopify_tiktok"),  # 2
    g("d", "unique"),  # 3           cluster {d, e}
    g("e", "near_dup", 3, "cross_render_taobao_pdd"),  # 4
    g("f", "repeat", 0, "same_basket"),  # 5  a's basket again, much later
    g("g", "household", 3, "family"),  # 6  d's sister
    g("h", "repeat", -1, "new_basket"),  # 7
    g("i", "unique"),  # 8
    g("a", "exact_resend", 0),  # 9   a webhook retry of a
    g("j", "invalid"),  # 10
]
COPIES = {"a": 2, "b": 1, "c": 1, "d": 1, "e": 1, "f": 1, "g": 1, "h": 1, "i": 1}
NEAR = "near_duplicate"


def test_classes_and_negatives_on_a_hand_made_example() -> None:
    flagged = {
        "b": (NEAR, "a"),  # right
        "c": (NEAR, "b"),  # right: b is in c's cluster
        "d": (NEAR, "e"),  # right, the other way round: e (PDD's copy) arrived first
        "g": (NEAR, "d"),  # wrong: the sister is held as d's duplicate
        "i": (NEAR, "h"),  # wrong: a stranger
    }
    acc = dedup_accuracy(CORPUS, COPIES, flagged)
    assert acc["missing"] == 0 and acc["exact"]["same_channel"] == {"tp": 1, "fp": 0, "fn": 0}
    classes = acc["classes"]
    assert set(classes) == {
        "same_rendering",
        "cross_render_shopify_tiktok",
        "cross_render_taobao_pdd",
    }
    for row in classes.values():
        assert (row["expected"], row["found"], row["recall"], row["wrong"]) == (1, 1, 1.0, 0)
    near = acc["near_duplicate"]
    assert (near["expected"], near["flagged"], near["correct"]) == (3, 5, 3)
    assert near["precision"] == pytest.approx(0.6) and near["recall"] == 1.0
    neg = acc["negatives"]
    assert set(neg) == {
        "household/family",
        "repeat/same_basket",
        "repeat/new_basket",
        "unique",
    }
    assert (neg["household/family"]["flagged"], neg["household/family"]["rate"]) == (1, 1.0)
    assert neg["household/family"]["flagged_ids"] == ["g"]
    assert neg["repeat/same_basket"]["rate"] == neg["repeat/new_basket"]["rate"] == 0.0
    # a, d, i are unique; d was flagged, but as the first of its own cluster: not a false flag
    assert (neg["unique"]["total"], neg["unique"]["flagged"]) == (3, 1)
    assert acc["households"] == {"total": 1, "flagged": 1, "rate": 1.0}
    assert acc["repeats"] == {"total": 2, "flagged": 0, "rate": 0.0}
    failed = meets_bars(acc)
    assert any("near_duplicate precision 0.60000 < 0.999" in f for f in failed)
    assert any(f.startswith("household/family flagged 100.0000%") for f in failed)
    assert not any("recall on" in f for f in failed)
    assert not any(f.startswith("unique") for f in failed)  # precision covers strangers


def test_a_missed_or_misattributed_copy_counts_against_its_class() -> None:
    flagged = {"b": (NEAR, "a"), "c": (NEAR, "i")}  # c held as a stranger's copy; e missed
    acc = dedup_accuracy(CORPUS, COPIES, flagged)
    tiktok = acc["classes"]["cross_render_shopify_tiktok"]
    assert (tiktok["found"], tiktok["wrong"], tiktok["missed_ids"]) == (0, 1, ["c"])
    pdd = acc["classes"]["cross_render_taobao_pdd"]
    assert (pdd["found"], pdd["recall"], pdd["missed_ids"]) == (0, 0.0, ["e"])
    assert acc["classes"]["same_rendering"]["recall"] == 1.0
    failed = meets_bars(acc)
    assert "near_duplicate recall on cross_render_taobao_pdd 0.00000 < 0.99 (0/1)" in failed
    assert "near_duplicate recall on cross_render_shopify_tiktok 0.00000 < 0.99 (0/1)" in failed


class Truth(NamedTuple):  # what bench.soak passes: no variant
    order_id: str
    label: str
    ref: int


def test_truth_records_without_a_variant_still_score() -> None:
    truth = [Truth("a", "unique", -1), Truth("b", "near_dup", 0), Truth("h", "repeat", -1)]
    acc = dedup_accuracy(truth, {"a": 1, "b": 1, "h": 1}, {"b": (NEAR, "a")})  # type: ignore[arg-type]
    assert acc["classes"]["unclassified"]["recall"] == 1.0
    assert set(acc["negatives"]) == {"unique", "repeat"}
    assert meets_bars(acc) == []


# ------------------------------------------------------------------ bench.linkage


def test_mem_store_applies_updates_as_the_store_does() -> None:
    store = linkage.MemStore()
    store.apply([(b"w:a", b"1"), (b"w:b", b"[]"), (b"w:c", b"2")])
    assert store.get_many([b"w:b", b"nope"]) == [b"[]", None]
    store.apply([(DELETE_RANGE + b"w:a", b"w:c"), (b"w:c", None), (b"absent", None)])
    assert store.data == {}


@pytest.fixture(scope="module")
def small_corpus() -> list[GeneratedOrder]:
    return OrderGenerator(seed=3, variant_rate=0.2, household_rate=0.05).generate(4000)


def test_linkage_feeds_the_accuracy_report(small_corpus: list[GeneratedOrder]) -> None:
    out = linkage.run_dedup(small_corpus, batch=250)
    acc = dedup_accuracy(small_corpus, out["copies"], out["flagged"])
    assert acc["missing"] == 0
    # the exact rules and identical renderings are the old behaviour: always caught
    assert acc["exact"]["precision"] == acc["exact"]["recall"] == 1.0
    assert acc["classes"]["same_rendering"]["recall"] == 1.0
    assert set(acc["classes"]) <= set(MATCHABLE_VARIANTS) and len(acc["classes"]) >= 8
    assert {"unique", "repeat/new_basket"} <= set(acc["negatives"])
    table = "\n".join(linkage.class_table(acc))
    for name in acc["classes"]:
        assert name in table
    assert "near-duplicate precision" in table


def test_linkage_cli_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "l.json"
    linkage.main(["--orders", "1500", "--seed", "5", "--json", str(target)])
    text = capsys.readouterr().out
    assert "near-duplicate class" in text and str(target) in text
    import json

    doc = json.loads(target.read_text())
    assert doc["settings"]["orders"] == 1500 and "classes" in doc["accuracy"]
    assert isinstance(doc["bars_failed"], list)


# ------------------------------------------------------------------ bench.peer


def test_peer_records_hold_the_fields_as_the_comparison_folds_them() -> None:
    """Splink is given what ``core.recipient_match.compare`` reads, blocked on the route key."""
    shopify = Recipient(
        name="John Smith", phone="+14155550134", country="US", region="CA",
        city="San Francisco", address="1 Market St, Apt 4", postcode="94105-1234",
    )  # fmt: skip
    tiktok = Recipient(
        name="SMITH, John", phone_masked="(+1)415****134", country="US", region="California",
        city="San Francisco",
        address="1 Market Street #4, San Francisco, California, United States, 94105",
        postcode="94105",
    )  # fmt: skip
    assert peer.phone_parts(shopify) == ("14155550134", "134", "4")
    assert peer.phone_parts(tiktok) == (None, "134", "4")
    assert peer.phone_parts(Recipient(phone_masked="1*********0")) == (None, None, "0")
    orders = OrderGenerator(seed=5, variant_rate=0.2).generate(300)
    records, _, _ = peer.build_records(orders, NormaliseContext(skus=SkuCatalog()))
    by_id = {r["unique_id"]: r for r in records}
    for g in orders[:50]:
        c = normalise(g.channel, g.payload, NormaliseContext(skus=SkuCatalog()))
        if not isinstance(c, CanonicalOrder) or c.id not in by_id:
            continue
        rec, f = by_id[c.id], folded(who_of(c.recipient))
        assert rec["name_clean"] == (f.name or None)
        assert rec["address_clean"] == (f.street or None)
        assert rec["postcode_clean"] == (f.postcode or None)
        assert rec["block"] == route_key(dedup_facts(c)).hex()


def test_peer_blocks_like_the_service(small_corpus: list[GeneratedOrder]) -> None:
    from core.channels import NormaliseContext
    from core.skus import SkuCatalog

    records, copies, exact = peer.build_records(small_corpus, NormaliseContext(skus=SkuCatalog()))
    by_id = {r["unique_id"]: r for r in records}
    assert len(by_id) == len(records) == len(copies)
    assert all(rule == "exact_cross_channel" for rule, _ in exact.values())
    linked = 0
    for o in small_corpus:
        if o.label == "near_dup" and o.variant in ("same_rendering", "province_suffix"):
            a, b = by_id[o.order_id], by_id[small_corpus[o.ref].order_id]
            assert a["block"] == b["block"] and a["cluster"] == b["cluster"]
            linked += 1
    assert linked > 20


def test_peer_flags_the_best_earlier_match() -> None:
    orders = [g("a", "unique"), g("b", "unique"), g("c", "near_dup", 0)]
    pairs = [(2, 0, 9.0), (2, 1, 12.0), (1, 0, 1.0)]
    assert peer.flags_at(pairs, 5.0, orders, {}) == {"c": (NEAR, "b")}
    assert peer.flags_at(pairs, 0.5, orders, {"b": ("exact_cross_channel", "a")}) == {
        "b": ("exact_cross_channel", "a"),
        "c": (NEAR, "b"),
    }


def test_peer_threshold_is_the_most_recall_the_bars_allow() -> None:
    orders = [
        g("a", "unique"),
        g("b", "near_dup", 0, "same_rendering"),
        g("c", "household", 0, "family"),
        g("d", "unique"),
        g("e", "near_dup", 3, "name_order"),
    ]
    # b and e are copies; c is a sister scored between them
    pairs = [(1, 0, 12.0), (2, 0, 7.0), (4, 3, 4.0), (2, 1, 6.5)]
    threshold, how, sweep = peer.choose_threshold(pairs, orders, {})
    assert (threshold, how) == (12.0, "most recall meeting the bars")
    by_t = {s["threshold"]: s for s in sweep}
    assert by_t[4.0]["recall"] == 1.0 and not by_t[4.0]["meets"]  # the sister is held
    assert by_t[4.0]["precision"] == pytest.approx(2 / 3)
    # without the sister every weight meets the bars: the lowest one gets all the recall
    threshold, _, _ = peer.choose_threshold([(1, 0, 12.0), (4, 3, 4.0)], orders, {})
    assert threshold == 4.0


def test_peer_run_with_splink(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("splink")
    target = tmp_path / "peer.json"
    peer.main(["--orders", "3000", "--u-pairs", "100000", "--json", str(target)])
    out = capsys.readouterr().out
    assert "splink" in out and "near-duplicate class" in out
    import json

    doc: dict[str, Any] = json.loads(target.read_text())
    acc = doc["accuracy"]
    assert acc["missing"] == 0 and "classes" in acc and "negatives" in acc
    assert acc["exact"]["precision"] == 1.0
    assert doc["library"]["name"] == "splink"
