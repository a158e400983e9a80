"""The hot-path shortcuts give the same answers as the plain decode-everything path.

- the dedup stages read ``RoutedRecord`` envelopes (the order left encoded, only its
  ``DedupFacts`` decoded) and re-send the order byte for byte;
- reservation answers fold into a ``StoredRecord`` (the order left encoded) unless the state
  machine needs the order (out of stock);
- the partition store's range scans stop inside RocksDB (an iterate upper bound).
"""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import msgspec
import pytest

from bench.orders import DEFAULT_MIX, OrderGenerator
from core.channels import NormaliseContext
from core.dedup import dedup_facts
from core.inventory import ReservationResult
from core.order_flow import Flow, FlowContext, on_event
from core.order_state import (
    StoredRecord,
    full_record,
    order_head,
    record_decoder,
    record_encoder,
    stored_decoder,
)
from core.routing import WarehouseRouting
from core.rules import RuleSet
from core.saga import apply_result
from core.skus import SkuCatalog
from core.sla import SlaPolicy
from core.state_machine import OrderEvent
from streams.kafka.envelope import CANONICAL_CODEC, ROUTED_CODEC, CanonicalRecord, RawRecord
from streams.stages import dedup as dedup_stage
from streams.stages import order_state
from streams.stages.normalise import normalise_records
from streams.state.store import ChangelogEntry, PartitionStore, Position, StoreManager

CONFIG = Path(__file__).resolve().parents[2] / "config"
CTX = FlowContext(
    SlaPolicy.from_toml(CONFIG / "sla.toml"),
    RuleSet.from_toml(CONFIG / "rules.toml"),
    WarehouseRouting.default(),
)
NOW = 1_795_400_000_000


def _canonical(n: int, seed: int = 5) -> list[CanonicalRecord]:
    orders = OrderGenerator(seed, dict(DEFAULT_MIX)).generate(n)
    ctx = NormaliseContext(skus=SkuCatalog(), default_country="CN")
    raw = [RawRecord(o.channel, o.payload, NOW - 1000) for o in orders]
    good, _ = normalise_records(raw, ctx)
    return good


def test_routed_envelopes_resend_the_order_byte_for_byte() -> None:
    records = _canonical(300)
    data = CANONICAL_CODEC.encode(records)
    routed = ROUTED_CODEC.decode(data)
    assert all(isinstance(r.order, msgspec.Raw) for r in routed)
    assert ROUTED_CODEC.encode(routed) == data
    assert CANONICAL_CODEC.decode(ROUTED_CODEC.encode(routed)) == records
    assert [r.facts for r in routed] == [dedup_facts(r.order) for r in records]


def test_a_record_without_facts_gets_them_from_its_order() -> None:
    (rec,) = _canonical(1)
    bare = msgspec.structs.replace(rec, facts=None)
    (routed,) = ROUTED_CODEC.decode(CANONICAL_CODEC.encode([bare]))
    assert routed.facts is None
    assert dedup_stage.facts_of(routed) == dedup_facts(rec.order)
    assert dedup_stage.facts_of(bare) == dedup_facts(rec.order)


def _dedup(tmp: Path, envelopes: list[bytes], codec: object) -> list[tuple[str, object, int]]:
    """Both dedup stages over envelopes decoded with ``codec``; the verdicts in order."""
    exact = PartitionStore(tmp, "seen", 0)
    recip = PartitionStore(tmp, "recipients", 0)
    out: list[tuple[str, object, int]] = []
    try:
        for data in envelopes:
            recs = codec.decode(data)  # type: ignore[attr-defined]
            o1 = dedup_stage.exact_envelope(recs, exact.get_many(dedup_stage.exact_keys(recs)))
            exact.write(ChangelogEntry(o1.updates, "c", None), None)
            onward = codec.decode(CANONICAL_CODEC.encode(o1.records))  # type: ignore[attr-defined]
            o2, _ = dedup_stage.recipient_step(recip, onward, 180_000, 120_000, NOW)
            recip.write(ChangelogEntry(o2.updates, "r", None), None)
            out += [
                (dedup_stage.facts_of(r).id, r.verdict, r.address_orders_24h) for r in o2.records
            ]
    finally:
        exact.close()
        recip.close()
    return out


def test_dedup_stages_give_the_same_verdicts_on_encoded_orders(tmp_path: Path) -> None:
    records = _canonical(1500, seed=11)
    envelopes = [CANONICAL_CODEC.encode(records[i : i + 250]) for i in range(0, 1500, 250)]
    plain = _dedup(tmp_path / "plain", envelopes, CANONICAL_CODEC)
    routed = _dedup(tmp_path / "routed", envelopes, ROUTED_CODEC)
    assert routed == plain
    kinds = {v.kind for _, v, _ in plain}  # type: ignore[attr-defined]
    assert {"new", "repeat", "duplicate", "suspected"} <= kinds  # the generator's mix


def test_stored_records_encode_back_byte_for_byte() -> None:
    records = _canonical(50)
    held = [None] * len(records)
    out = order_state.record_envelope(records, held, NOW, CTX)
    checked = 0
    for key, data in out.store_updates():
        if data is None or not key.startswith(b"os_"):  # records, not audit / index rows
            continue
        checked += 1
        stored = stored_decoder.decode(data)
        assert isinstance(stored, StoredRecord)
        assert record_encoder.encode(stored) == data
        full = record_decoder.decode(data)
        assert full_record(stored) == full
        head = order_head(stored)
        assert (head.id, head.channel, head.payment_status) == (
            full.order.id,
            full.order.channel,
            full.order.payment_status,
        )
    assert checked == len({r.order.id for r in records})


def _reference_results(
    results: list[ReservationResult], held_raw: list[bytes | None], now: int
) -> order_state.EnvelopeOutcome:
    """``apply_reservation_results`` as it was: every record fully decoded."""
    out = order_state.EnvelopeOutcome()
    held = order_state._Held()
    for res, raw in zip(results, held_raw, strict=True):
        rec = held.get(res.order_id, raw)
        if rec is None or rec.reservation is None:
            continue
        saga, releases = apply_result(rec.reservation, res)
        out.requests += releases
        if saga == rec.reservation:
            continue
        moved = saga.status != rec.reservation.status
        rec2 = msgspec.structs.replace(rec, reservation=saga)
        if moved and saga.status == "out_of_stock":
            event = OrderEvent(
                order_id=rec.order.id,
                event="stock_refused",
                actor="system",
                source="inventory",
                reason="out of stock: " + ", ".join(saga.refused),
                at=now,
                event_id=f"stock_refused:{saga.attempt}",
            )
            flow = on_event(rec2, event, CTX, now)
            if isinstance(flow, Flow):
                order_state._moved(out, held, rec, flow, now)
                continue
        if moved:
            rec2.version += 1
            rec2.changed_at = now
            out.changes.append(order_state.change_of(rec2, "reservation", rec2.received_at, now))
        held.current[rec.order.id] = rec2
        out.put_record(rec2)
    return out


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_reservation_answers_fold_the_same_without_decoding_the_order(seed: int) -> None:
    records = _canonical(200, seed=seed)
    created = order_state.record_envelope(records, [None] * len(records), NOW, CTX)
    store = {k: v for k, v in created.store_updates() if v is not None}
    rnd = random.Random(seed)
    results = [
        ReservationResult(
            q.order_id,
            q.sku,
            q.op,
            "granted" if rnd.random() < 0.8 else "refused",
            "wh",
            q.quantity,
            "",
            NOW,
            q.attempt,
        )
        for q in created.requests
        if q.op == "reserve"
    ]
    results += rnd.sample(results, len(results) // 5)  # redeliveries
    rnd.shuffle(results)
    for start in range(0, len(results), 64):  # envelopes, each folded both ways
        batch = results[start : start + 64]
        held = [store.get(r.order_id.encode()) for r in batch]
        new = order_state.apply_reservation_results(batch, held, NOW + start, CTX)
        ref = _reference_results(batch, held, NOW + start)

        # the reference predates the outbox: compare everything else
        def state(out: order_state.EnvelopeOutcome) -> list[tuple[bytes, bytes | None]]:
            return [u for u in out.store_updates(1) if not u[0].startswith(b"ob:")]

        assert state(new) == state(ref)
        assert new.changes == ref.changes
        assert new.requests == ref.requests
        assert new.alerts == ref.alerts
        store.update({k: v for k, v in new.store_updates() if v is not None})
    states = {record_decoder.decode(v).state for k, v in store.items() if k.startswith(b"os_")}
    assert "out_of_stock" in states and "paid" in states


def test_bounded_scans_agree_with_a_model(tmp_path: Path) -> None:
    store = PartitionStore(tmp_path, "orders", 0)
    rnd = random.Random(4)
    keys: set[bytes] = set()
    try:
        for i in range(3000):
            if rnd.random() < 0.3 and keys:
                gone = rnd.choice(sorted(keys))
                store.db.delete(gone)
                keys.discard(gone)
            else:
                key = bytes(rnd.choice(b"ab:\xff\x00") for _ in range(rnd.randint(1, 5)))
                store.db[key] = b"v" * rnd.randint(1, 300)
                keys.add(key)
            if i % 10:
                continue
            prefix = bytes(rnd.choice(b"ab:\xff") for _ in range(rnd.randint(1, 2)))
            assert [k for k, _ in store.scan(prefix, 10**6)] == sorted(
                k for k in keys if k.startswith(prefix)
            )
            start = bytes(rnd.choice(b"ab:\xff\x00") for _ in range(rnd.randint(0, 4)))
            assert [k for k, _ in store.scan(prefix, 10**6, start)] == sorted(
                k for k in keys if k.startswith(prefix) and k >= start
            )
            lo, hi = sorted([prefix, bytes(rnd.choice(b"ab:\xff") for _ in range(2))])
            assert [k for k, _ in store.scan_range(lo, hi, 10**6)] == sorted(
                k for k in keys if lo <= k < hi
            )
            assert [k for k, _ in store.scan_last(prefix, 3)] == sorted(
                (k for k in keys if k.startswith(prefix)), reverse=True
            )[:3]
    finally:
        store.close()


def test_commits_write_off_the_loop_and_are_there_when_awaited(tmp_path: Path) -> None:
    async def main() -> None:
        stores = StoreManager(tmp_path, "e1", "unused:0", send=None)
        try:
            for name in ("orders", "seen"):  # a synced and an unsynced store
                store = await stores.get(name, 0)
                for n in range(20):
                    entry = ChangelogEntry([(b"k%d" % n, b"v")], "t", Position("e1", n))
                    await stores.commit(store, entry)
                    assert store.get(b"k%d" % n) == b"v"
                assert store.applied("t", "e1") == 19
        finally:
            stores.close_all()

    asyncio.run(main())
    asyncio.run(main())  # a manager's writer threads come back after close_all


def test_a_range_delete_update_deletes_its_range(tmp_path: Path) -> None:
    from core.dedup import DELETE_RANGE

    store = PartitionStore(tmp_path, "recipients", 0)
    try:
        puts: list[tuple[bytes, bytes | None]] = [(b"w:%d" % n, b"v") for n in range(10)]
        store.write(ChangelogEntry(puts, "t", Position("e1", 0)), None)
        cut: list[tuple[bytes, bytes | None]] = [(DELETE_RANGE + b"w:2", b"w:7"), (b"w:3", b"3")]
        store.write(ChangelogEntry(cut, "t", Position("e1", 1)), None)
        left = [k for k, _ in store.scan(b"w:", 100)]
        assert left == [b"w:0", b"w:1", b"w:3", b"w:7", b"w:8", b"w:9"]
    finally:
        store.close()
