"""core.dedup: every rule, redelivery, bounded state, and accuracy against the generator's labels.

Stores are dicts that apply the returned updates exactly as the stage's WriteBatch would
(``core.dedup.apply_updates``: range deletes too).
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import dedup
from core.channels import NormaliseContext, normalise
from core.dedup import (
    NEW,
    DedupVerdict,
    apply_updates,
    dedup_facts,
    exact_dedup,
    exact_store_key,
    recipient_dedup,
    recipient_key,
    recipient_lookup_keys,
    route_key,
    stored_watermark,
)
from core.model import CanonicalOrder, LineItem, Recipient, global_order_id
from core.recipient_match import HOLD_AT
from core.skus import SkuCatalog
from ext import kafka_partition

_ROOT = Path(__file__).resolve().parents[2]
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from bench.orders import GeneratedOrder, OrderGenerator  # noqa: E402

T0 = 1_795_363_200_000


def plain(v: DedupVerdict) -> DedupVerdict:
    """A verdict without its match score and fields (tests of which order it names)."""
    return DedupVerdict(v.kind, v.rule, v.original_id)


WINDOW = dedup.DEFAULT_WINDOW_MS


class FakeStore:
    """A partition store: get_many, and updates (range deletes too) applied in order."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        return [self.data.get(k) for k in keys]

    def apply(self, updates: list[tuple[bytes, bytes | None]]) -> None:
        apply_updates(self.data, updates)

    def count(self, prefix: bytes) -> int:
        return sum(1 for k in self.data if k.startswith(prefix))

    @property
    def windows(self) -> int:
        return self.count(dedup.WINDOW_PREFIX)


def exact_run(store: FakeStore, orders: list[CanonicalOrder]) -> dedup.ExactOutcome:
    out = exact_dedup(orders, store.get_many([exact_store_key(o) for o in orders]))
    store.apply(out.updates)
    return out


def recipient_run(
    store: FakeStore, orders: list[CanonicalOrder], window_ms: int = WINDOW, commit: bool = True
) -> dedup.RecipientOutcome:
    clock = stored_watermark(store.data.get(dedup.WATERMARK_KEY))
    keys = recipient_lookup_keys(orders, clock=clock, window_ms=window_ms)
    held = dict(zip(keys, store.get_many(keys), strict=True))
    out = recipient_dedup(orders, held, window_ms)
    if commit:
        store.apply(out.updates)
    return out


def order(
    no: str = "1001",
    *,
    channel: str = "taobao",
    created: int = T0,
    updated: int | None = None,
    total: int = 9900,
    currency: str = "CNY",
    lines: tuple[tuple[str, int], ...] = (("MB-C200", 1),),
    phone: str = "+8613812345678",
    masked: str = "",
    name: str = "张伟",
    address: str = "人民路323号 28栋2325室",
    city: str = "北京市",
    region: str = "北京市",
) -> CanonicalOrder:
    return CanonicalOrder(
        id=global_order_id(channel, no),
        channel=channel,
        channel_order_no=no,
        created_at=created,
        updated_at=created if updated is None else updated,
        currency=currency,
        total=total,
        payment_status="paid",
        lines=[
            LineItem(sku=s, channel_sku=s, quantity=q, unit_price=total, line_total=total)
            for s, q in lines
        ],
        recipient=Recipient(
            name=name,
            phone=phone,
            phone_masked=masked,
            country="CN",
            region=region,
            city=city,
            district="海淀区",
            address=address,
        ),
    )


# ------------------------------------------------------------------------ stage 1: exact


def test_exact_new_update_repeat_and_stale() -> None:
    store = FakeStore()
    first = order(updated=T0)
    assert exact_run(store, [first]).verdicts == [NEW]
    same = order(updated=T0)
    newer = order(updated=T0 + 5_000)
    stale = order(updated=T0 + 1_000)
    out = exact_run(store, [same, newer, stale])
    oid = first.id
    assert out.verdicts == [
        DedupVerdict("repeat", "exact_channel", oid),
        DedupVerdict("update", "exact_channel", oid),
        DedupVerdict("repeat", "exact_channel", oid),  # older than the update just before it
    ]
    # an identical copy after the update is still a repeat
    assert exact_run(store, [order(updated=T0 + 5_000)]).verdicts[0].kind == "repeat"
    assert exact_run(store, [order(updated=T0 + 9_000)]).verdicts[0].kind == "update"


def test_exact_batch_internal_copies_and_memory_without_window() -> None:
    store = FakeStore()
    a, a2, b = order("1"), order("1", updated=T0 + 1), order("2")
    out = exact_run(store, [a, a2, b, order("1")])
    assert [v.kind for v in out.verdicts] == ["new", "update", "new", "repeat"]
    assert len(out.updates) == 2  # one write per id: the newest state
    # a copy days later is still recognised: exact ids have no window
    late = order("2", created=T0, updated=T0)
    assert exact_run(store, [late]).verdicts[0].kind == "repeat"


def test_exact_later_copies_follow_the_first_copy_route() -> None:
    store = FakeStore()
    first = order("7")
    moved = order("7", updated=T0 + 1, region="上海市", city="上海市")  # delivery moved
    exact_run(store, [first])
    out = exact_run(store, [moved])
    assert out.verdicts[0].kind == "update"
    assert out.route_keys == [route_key(dedup_facts(first))] != [route_key(dedup_facts(moved))]
    with pytest.raises(ValueError):
        exact_dedup([first], [])


def test_exact_redelivery_onto_uncommitted_store_repeats_verdicts() -> None:
    store = FakeStore()
    batch = [order("1"), order("2"), order("1", updated=T0 + 1)]
    held = store.get_many([exact_store_key(o) for o in batch])
    first = exact_dedup(batch, held)
    again = exact_dedup(batch, held)  # crash after sending, before the WriteBatch
    assert first.verdicts == again.verdicts and first.updates == again.updates


# ------------------------------------------------------------------- stage 2: cross-channel


def test_cross_channel_copy_is_a_duplicate_of_the_first() -> None:
    store = FakeStore()
    a = order("555", channel="taobao")
    b = order("555", channel="jd")
    c = order("555", channel="pdd", total=1)  # rule 2 needs no amount match
    assert recipient_run(store, [a]).verdicts == [NEW]
    out = recipient_run(store, [b, c])
    assert out.verdicts == [
        DedupVerdict("duplicate", "exact_cross_channel", a.id),
        DedupVerdict("duplicate", "exact_cross_channel", a.id),
    ]
    # same order no, another phone: not the same order
    other = order("555", channel="ministore", phone="+8613900000000")
    assert recipient_run(store, [other]).verdicts == [NEW]


def test_cross_channel_needs_a_full_phone_and_wins_over_near_duplicate() -> None:
    store = FakeStore()
    a = order("9", channel="taobao", phone="", masked="138****5678")
    b = order("9", channel="jd", phone="", masked="138****5678", created=T0 + 1000)
    out = recipient_run(store, [a, b])
    assert out.verdicts[0] == NEW
    assert plain(out.verdicts[1]) == DedupVerdict("suspected", "near_duplicate", a.id)  # rule 3
    store = FakeStore()
    a, b = order("9", channel="taobao"), order("9", channel="jd", created=T0 + 1000)
    assert recipient_run(store, [a, b]).verdicts[1].kind == "duplicate"


def test_cross_channel_index_outlives_the_window() -> None:
    store = FakeStore()
    a = order("77", channel="taobao")
    recipient_run(store, [a])
    # hours of other traffic age the window out
    recipient_run(store, [order("x", phone="+8613700000000", created=T0 + 5 * 3_600_000)])
    assert store.count(b"w:+8613812345678") == 0
    late = order("77", channel="jd", created=T0 + 5 * 3_600_000)
    assert recipient_run(store, [late]).verdicts[0].kind == "duplicate"


# ------------------------------------------------------------------- stage 2: near-duplicate


def test_near_duplicate_inside_window_is_suspected() -> None:
    store = FakeStore()
    a = order("1", lines=(("A", 2), ("B", 1)))
    b = order("2", created=T0 + 170_000, lines=(("B", 1), ("A", 1), ("A", 1)))  # same multiset
    assert recipient_run(store, [a]).verdicts == [NEW]
    (got,) = recipient_run(store, [b]).verdicts
    assert plain(got) == DedupVerdict("suspected", "near_duplicate", a.id)
    assert got.score >= HOLD_AT and "phone:agree" in got.agreed


@pytest.mark.parametrize(
    "change",
    [
        {"created": T0 + WINDOW + 1_000},  # outside the window
        {"total": 9901},  # another amount
        {"currency": "USD"},  # same number, another currency
        {"lines": (("MB-C200", 2),)},  # another quantity
        {"lines": (("MB-C200", 1), ("X", 1))},  # another SKU multiset
        {"phone": "+8613900000000"},  # another recipient
    ],
)
def test_repeat_purchases_are_not_flagged(change: dict[str, object]) -> None:
    store = FakeStore()
    recipient_run(store, [order("1")])
    assert recipient_run(store, [order("2", **change)]).verdicts == [NEW]  # type: ignore[arg-type]


def test_window_edge_and_configurable_window() -> None:
    store = FakeStore()
    recipient_run(store, [order("1")])
    assert recipient_run(store, [order("2", created=T0 + WINDOW)]).verdicts[0].kind == "suspected"
    store = FakeStore()
    recipient_run(store, [order("1")], window_ms=60_000)
    out = recipient_run(store, [order("2", created=T0 + 61_000)], window_ms=60_000)
    assert out.verdicts == [NEW]


def test_masked_renderings_of_one_customer_match() -> None:
    store = FakeStore()
    kw = {"phone": "", "masked": "138****5678", "name": "张**", "address": "人民路3**号"}
    a = order("1", **kw)  # type: ignore[arg-type]
    # the same customer rendered with other widths, spacing and punctuation
    b = order("2", created=T0 + 30_000, **{**kw, "address": "人民路３**号 "})  # type: ignore[arg-type]
    assert recipient_key(a) == recipient_key(b) and recipient_key(a).startswith(b"h:")
    assert recipient_run(store, [a, b]).verdicts[1].kind == "suspected"
    c = order("3", created=T0 + 60_000, **{**kw, "masked": "139****5678"})  # type: ignore[arg-type]
    assert recipient_key(c) != recipient_key(a)
    assert recipient_run(store, [c]).verdicts == [NEW]
    assert recipient_key(order()) == b"+8613812345678"


def test_batch_internal_near_duplicates_point_at_the_first() -> None:
    store = FakeStore()
    a, b, c = order("1"), order("2", created=T0 + 10_000), order("3", created=T0 + 20_000)
    out = recipient_run(store, [a, b, c])
    assert [v.kind for v in out.verdicts] == ["new", "suspected", "suspected"]
    assert {v.original_id for v in out.verdicts[1:]} == {a.id}


def test_late_order_is_checked_against_what_is_remembered() -> None:
    store = FakeStore()
    a = order("1", created=T0)
    recipient_run(store, [a])
    recipient_run(store, [order("2", phone="+8613700000000", created=T0 + 5 * 60_000)])
    # 5 minutes behind the watermark, 60 s after a: still within the grace, still caught
    late = order("3", created=T0 + 60_000)
    assert recipient_run(store, [late]).verdicts[0].kind == "suspected"
    # far behind (an hour): a's entry is gone, so at worst a miss, never a false flag
    recipient_run(store, [order("4", phone="+8613700000000", created=T0 + 3_600_000)])
    very_late = order("5", created=T0 + 1_000)
    assert recipient_run(store, [very_late]).verdicts == [NEW]
    # ... and it is remembered for a window after it arrived: its own late copy is caught
    copy = order("6", created=T0 + 2_000)
    assert plain(recipient_run(store, [copy]).verdicts[0]) == DedupVerdict(
        "suspected", "near_duplicate", very_late.id
    )


# --------------------------------------------------------------------------- redelivery


def test_redelivered_order_gets_its_first_verdict_never_itself() -> None:
    store = FakeStore()
    a, b = order("1"), order("2", created=T0 + 1_000)
    dup = order("1", channel="jd", created=T0 + 2_000)
    first = recipient_run(store, [a, b, dup]).verdicts
    assert [v.kind for v in first] == ["new", "suspected", "duplicate"]
    # stage 1 re-sends the whole batch (it crashed before committing): same verdicts
    before = dict(store.data)
    again = recipient_run(store, [a, b, dup])
    assert again.verdicts == first
    # nothing remembered changes (the clock moved from 0 to the watermark: old buckets go)
    assert all(k.startswith((b"m:", dedup.DELETE_RANGE)) for k, _ in again.updates)
    assert {k: v for k, v in store.data.items() if not k.startswith(b"m:")} == {
        k: v for k, v in before.items() if not k.startswith(b"m:")
    }
    # the same id twice inside one batch: the second copy shares the first's verdict
    out = recipient_run(store, [order("3", created=T0 + 3_000), order("3", created=T0 + 3_000)])
    assert out.verdicts[0] == out.verdicts[1]
    assert plain(out.verdicts[0]) == DedupVerdict("suspected", "near_duplicate", a.id)


def test_crash_between_output_and_commit_changes_no_verdict() -> None:
    store = FakeStore()
    recipient_run(store, [order("1")])
    batch = [order("2", created=T0 + 1_000), order("1", channel="jd"), order("3", total=1)]
    first = recipient_run(store, batch, commit=False)  # outputs sent, store not written
    again = recipient_run(store, batch)  # the redelivered envelope
    assert again.verdicts == first.verdicts
    assert again.updates == first.updates
    # and a third delivery after the commit still agrees
    assert recipient_run(store, batch).verdicts == first.verdicts


def test_inputs_are_checked() -> None:
    with pytest.raises(ValueError):
        recipient_dedup([], {}, -1)
    assert recipient_dedup([], {}, WINDOW).verdicts == []
    keys = recipient_lookup_keys([order("1"), order("1")], clock=T0)
    assert keys[0] == dedup.WATERMARK_KEY
    # watermark, the buckets kept, the window in this bucket and the one before, index
    assert len(keys) == 5


# --------------------------------------------------------------------------- boundedness


def test_state_stays_bounded_over_hours_of_orders() -> None:
    """200,000 orders over ~2.8 simulated hours at 20/s: window keys track the retention span."""
    store = FakeStore()
    rate_ms = 50  # 20 orders/s of event time
    retained = (WINDOW + dedup.LATE_GRACE_MS) // rate_ms  # orders inside window + grace
    peak = 0
    total_pruned = 0
    n, batch = 200_000, 500
    for start in range(0, n, batch):
        orders = []
        for i in range(start, start + batch):
            phone = f"+86138{(i * 7919) % 150_000:08d}"  # some customers come back, most not
            orders.append(order(str(i), created=T0 + i * rate_ms, phone=phone, total=i % 997))
        out = recipient_run(store, orders)
        total_pruned += out.pruned
        peak = max(peak, store.windows)
    # two buckets of retention at most: the one the clock is in and the one before
    assert peak <= 2 * retained + batch
    assert store.windows <= 2 * retained + batch
    stored_entries = sum(
        len(msgspec.msgpack.decode(v)) for k, v in store.data.items() if k.startswith(b"w:")
    )
    assert total_pruned + stored_entries == n  # every entry is either remembered or pruned


# ------------------------------------------------------------------ accuracy vs the labels


def _normalised(n: int, seed: int) -> list[tuple[GeneratedOrder, CanonicalOrder]]:
    ctx = NormaliseContext(skus=SkuCatalog.from_toml(_ROOT / "config" / "skus.toml"))
    out = []
    for g in OrderGenerator(seed=seed).generate(n):
        o = normalise(g.channel, g.payload, ctx)
        if isinstance(o, CanonicalOrder):  # "invalid" labels are dead letters, never deduped
            out.append((g, o))
    return out


def run_pipeline(
    pairs: list[tuple[GeneratedOrder, CanonicalOrder]], partitions: int = 4, envelope: int = 500
) -> list[DedupVerdict]:
    """Both stages as the service runs them, partitions and envelopes included.

    Stage 2 sees stage 1's new orders in input order (stage 1 keeping pace). Across stage-1
    partitions nothing orders two copies created in the same second, so "first" is whichever
    reaches the recipient partition first; the labels call the earlier-generated one first.
    """
    exact_stores = [FakeStore() for _ in range(partitions)]
    recipient_stores = [FakeStore() for _ in range(partitions)]
    verdicts: list[DedupVerdict | None] = [None] * len(pairs)
    for start in range(0, len(pairs), envelope):
        idx = range(start, min(start + envelope, len(pairs)))
        by_part: dict[int, list[int]] = {}
        for i in idx:
            by_part.setdefault(kafka_partition(pairs[i][1].id.encode(), partitions), []).append(i)
        onward: dict[int, list[int]] = {}
        for part, members in by_part.items():
            out = exact_run(exact_stores[part], [pairs[i][1] for i in members])
            for i, v, route in zip(members, out.verdicts, out.route_keys, strict=True):
                verdicts[i] = v
                if v.kind == "new":
                    onward.setdefault(kafka_partition(route, partitions), []).append(i)
        for part, members in onward.items():
            members.sort()
            out2 = recipient_run(recipient_stores[part], [pairs[i][1] for i in members])
            for i, v in zip(members, out2.verdicts, strict=True):
                verdicts[i] = v
    assert all(v is not None for v in verdicts)
    return verdicts  # type: ignore[return-value]


def test_accuracy_against_generator_labels() -> None:
    pairs = _normalised(50_000, seed=5)
    verdicts = run_pipeline(pairs)
    got = Counter((g.label, v.kind) for (g, _), v in zip(pairs, verdicts, strict=True))
    labels = Counter(g.label for g, _ in pairs)

    def ratio(hit: int, of: int) -> float:
        return hit / of if of else 1.0

    exact_hit = got["exact_resend", "update"] + got["exact_resend", "repeat"]
    exact_flagged = sum(c for (_, k), c in got.items() if k in ("update", "repeat"))
    cross_hit = got["cross_channel", "duplicate"]
    cross_flagged = sum(c for (_, k), c in got.items() if k == "duplicate")
    near_hit = got["near_dup", "suspected"]
    near_flagged = sum(c for (_, k), c in got.items() if k == "suspected")
    repeats_flagged = labels["repeat"] - got["repeat", "new"]
    assert labels["exact_resend"] > 1000 and labels["cross_channel"] > 300
    assert labels["near_dup"] > 300 and labels["repeat"] > 5000
    assert ratio(exact_hit + cross_hit, labels["exact_resend"] + labels["cross_channel"]) >= 0.9999
    assert ratio(exact_hit + cross_hit, exact_flagged + cross_flagged) >= 0.9999
    assert ratio(near_hit, labels["near_dup"]) >= 0.995
    assert ratio(near_hit, near_flagged) >= 0.995
    assert ratio(repeats_flagged, labels["repeat"]) <= 0.0001
    assert got["unique", "new"] == labels["unique"]


def test_with_a_wall_clock_entries_outlive_a_watermark_jump() -> None:
    """Gateways lag differently: one channel racing an hour ahead in event time must not
    push another channel's window entries out before their double submits arrive."""
    store = FakeStore()
    now = 10**12

    def run(orders: list[CanonicalOrder], at: int) -> dedup.RecipientOutcome:
        keys = recipient_lookup_keys(orders, clock=at)
        held = dict(zip(keys, store.get_many(keys), strict=True))
        out = recipient_dedup(orders, held, WINDOW, now_ms=at)
        store.apply(out.updates)
        return out

    first = order("1", created=T0)
    ahead = order("2", created=T0 + 3_600_000, phone="+8613900000001")  # another recipient
    double = order("3", created=T0 + 60_000)
    run([first], now)
    run([ahead], now + 1_000)
    assert run([double], now + 2_000).verdicts[0].kind == "suspected"
    # ...and after window + grace of wall time they are forgotten, whatever the event times
    later = order("4", created=T0 + 61_000)
    retain = WINDOW + dedup.LATE_GRACE_MS
    assert run([later], now + retain + 10_000).verdicts[0].kind == "new"
    # their bucket is deleted (and counted as pruned) once the clock is two buckets on
    assert run([], now + 3 * retain).pruned == 4


def test_a_replayed_first_copy_takes_the_first_path_again() -> None:
    """Its outputs were lost with a broker: the journal replays it, and it must get ``new``
    again (so the recipient stage re-derives its cross-channel / near-dup verdict), not
    ``repeat`` (which would skip that stage and record it unflagged)."""
    from core.dedup import exact_dedup

    first = order("A1", updated=T0 + 1000)
    out1 = exact_dedup([first], [None], ["j:1"])
    assert out1.verdicts[0].kind == "new"
    held = dict(out1.updates)[first.id.encode()]
    replay = exact_dedup([first], [held], ["j:1"])
    assert replay.verdicts[0].kind == "new" and replay.updates == []
    assert replay.route_keys == out1.route_keys
    other_copy = exact_dedup([first], [held], ["j:2"])  # a different accepted copy: a repeat
    assert other_copy.verdicts[0].kind == "repeat"
    newer = order("A1", updated=T0 + 2000)
    upd = exact_dedup([newer], [held], ["j:3"])
    assert upd.verdicts[0].kind == "update"
    held2 = dict(upd.updates)[first.id.encode()]
    assert exact_dedup([newer], [held2], ["j:3"]).verdicts[0].kind == "update"  # replayed
    assert exact_dedup([first], [held2], ["j:1"]).verdicts[0].kind == "new"


@given(
    name=st.text(max_size=40),
    phone=st.sampled_from(["", "+8613812345678"]),
    masked=st.sampled_from(["", "1*********0"]),
    address=st.text(max_size=3000),
)
def test_shows_someone_reads_the_raw_recipient_like_comparable(
    name: str, phone: str, masked: str, address: str
) -> None:
    from core.recipient_match import Who, comparable, pack

    who = Who(name=name, phone=phone, phone_masked=masked, address=address)
    raw = msgspec.Raw(msgspec.msgpack.encode(pack(who)))
    assert dedup._shows_someone(raw) == comparable(pack(who))


def test_orders_showing_no_name_or_phone_are_counted_and_held_on_the_address() -> None:
    """JD/PDD ciphertext without masks: nothing personal to compare (counted for operators);
    the same full address, basket and minutes is still enough to ask a person."""
    store = FakeStore()
    sealed = {"phone": "", "masked": "", "name": ""}
    a = order("1", **sealed)  # type: ignore[arg-type]
    b = order("2", created=T0 + 10_000, **sealed)  # type: ignore[arg-type]
    out = recipient_run(store, [a, b, order("3", created=T0 + 20_000, phone="+8613700000000")])
    assert out.uncomparable == 2
    assert [v.kind for v in out.verdicts] == ["new", "suspected", "suspected"]
    assert out.verdicts[1].agreed == out.verdicts[2].agreed == ("address:agree",)


def test_a_store_from_before_buckets_is_cleaned_by_its_first_batch() -> None:
    store = FakeStore()
    legacy = {
        dedup.WINDOW_PREFIX + b"b:0123456789abcdef" + b"\x00" * 16: b"\x90",  # by route key
        b"t:" + (T0).to_bytes(8, "big") + b"b:0123": b"\x01",  # its expiry row
        b"hist:+8613800000000": b"\x90",  # a 24 h history, the history stage's now
        b"hexp:" + (T0).to_bytes(8, "big") + b"+8613800000000": b"",
        b"x:+8613800000000\x1f1001": b"os_kept",  # the cross-channel index stays
    }
    store.data.update(legacy)
    recipient_run(store, [order("1")])
    assert not [k for k in legacy if k in store.data and not k.startswith(b"x:")]
    assert store.data[b"x:+8613800000000\x1f1001"] == b"os_kept"
    assert store.windows == 1  # the batch's own entry, in its bucket
