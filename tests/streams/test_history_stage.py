"""The history stage's glue and the order stage's side of recipient counts, without Kafka."""

from __future__ import annotations

from pathlib import Path

from core.audit import audit_decoder, audit_prefix
from core.dedup import dedup_facts, recipient_key
from core.order_flow import FlowContext
from core.order_state import record_decoder, record_encoder, record_order
from core.routing import WarehouseRouting
from core.rules import RuleSet
from core.sla import SlaPolicy
from streams.kafka.envelope import CanonicalRecord, HistoryFact, RecipientCount
from streams.stages import dedup as dedup_stage
from streams.stages import history, order_state
from tests.core.test_dedup import T0, FakeStore, order

CONFIG = Path(__file__).resolve().parents[2] / "config"
CTX = FlowContext(
    SlaPolicy.from_toml(CONFIG / "sla.toml"),
    RuleSet.from_toml(CONFIG / "rules.toml"),
    WarehouseRouting.default(),
)
MINUTE = 60_000
AUDIT = audit_prefix(order("1001").id)


def fact(no: str, at: int, phone: str = "+8613812345678") -> HistoryFact:
    o = order(no, created=at, phone=phone)
    return HistoryFact(recipient_key(o), o.id, at)


def run(store: FakeStore, facts: list[HistoryFact], threshold: int = 3) -> history.HistoryOutcome:
    out = history.history_step(store, facts, max(f.created_at for f in facts), threshold)
    store.apply(out.updates)
    return out


def test_a_recipients_orders_are_counted_and_only_a_count_a_rule_waits_for_is_sent() -> None:
    store = FakeStore()
    first = run(store, [fact("1", T0), fact("2", T0 + MINUTE)])
    assert first.counted == 2 and first.counts == []
    other = run(store, [fact("9", T0 + 2 * MINUTE, phone="+8613900000000")])
    assert other.counts == []
    third = run(store, [fact("3", T0 + 3 * MINUTE)])
    assert third.counts == [RecipientCount(order("3").id, 3)]


def test_a_redelivered_fact_is_counted_once_and_its_count_sent_again() -> None:
    store = FakeStore()
    facts = [fact("1", T0), fact("2", T0 + 1), fact("3", T0 + 2)]
    assert [c.count for c in run(store, facts).counts] == [3]
    assert [c.count for c in run(store, facts).counts] == [3]
    assert run(store, [fact("4", T0 + 3)]).counts == [RecipientCount(order("4").id, 4)]


def test_no_rule_reading_the_count_sends_nothing() -> None:
    store = FakeStore()
    facts = [fact(str(n), T0 + n) for n in range(5)]
    assert run(store, facts, threshold=0).counts == []
    assert store.count(b"hist:") == 1  # counted all the same: a rule may be loaded later


def test_the_recipient_stage_sends_new_orders_facts_and_no_count() -> None:
    recs = [CanonicalRecord(order(n, created=T0 + int(n)), T0) for n in ("1", "2")]
    for r in recs:
        r.facts = dedup_facts(r.order)
    out, _ = dedup_stage.recipient_step(FakeStore(), recs, 600_000, 120_000, T0 + 5)
    assert [(f.order_id, f.created_at) for f in out.history] == [
        (r.order.id, r.order.created_at) for r in recs
    ]
    assert {f.recipient_key for f in out.history} == {recipient_key(recs[0].order)}
    assert all(r.address_orders_24h == 0 for r in out.records)
    assert not any(k.startswith(b"hist:") for k, _ in out.updates)


def test_a_stale_history_in_the_recipient_store_is_range_deleted() -> None:
    store = FakeStore()
    store.data[b"hist:\x00\x00\x00\x01+86"] = b"\x90"
    store.data[b"hkept"] = (1).to_bytes(4, "big")
    rec = CanonicalRecord(order("1"), T0)
    rec.facts = dedup_facts(rec.order)
    out, _ = dedup_stage.recipient_step(store, [rec], 600_000, 120_000, T0)
    store.apply(out.updates)
    assert store.count(b"hist:") == 0 and b"hkept" not in store.data


def recorded(no: str = "1001") -> bytes:
    rec, _ = record_order(None, order(no), T0, T0)  # type: ignore[misc]
    return record_encoder.encode(rec)


def test_a_count_for_a_recorded_order_tags_audits_and_notifies_once() -> None:
    oid = order("1001").id
    out = order_state.apply_recipient_counts(
        [RecipientCount(oid, 3)], [recorded()], [None], T0 + 5, CTX
    )
    rec = out.records[oid]
    assert rec.labels == ["merge_shipment"] and rec.version == 2
    assert [a.kind for a in out.alerts] == ["notify"]
    assert [c.kind for c in out.changes] == ["event"]
    audit = [audit_decoder.decode(v) for k, v in out.updates.items() if k.startswith(AUDIT)]
    assert [(a.actor, a.source, a.rule) for a in audit] == [
        ("system", "rules", "same-address-merge-hint")
    ] * 2
    again = order_state.apply_recipient_counts(
        [RecipientCount(oid, 3)], [record_encoder.encode(rec)], [None], T0 + 6, CTX
    )
    assert again.records == {} and again.alerts == [] and again.changes == []


def test_a_count_before_its_order_waits_and_is_applied_at_creation() -> None:
    o = order("1001")
    out = order_state.apply_recipient_counts(
        [RecipientCount(o.id, 3), RecipientCount(o.id, 2)], [None, None], [None, None], T0, CTX
    )
    key = order_state.pending_count_key(o.id)
    assert list(out.updates) == [key] and out.records == {} and out.alerts == []
    assert order_state.pending_count(out.updates[key]) == 3
    created = order_state.record_envelope([CanonicalRecord(o, T0)], [None], T0 + 1, CTX, {o.id: 3})
    assert created.updates[key] is None
    rec = record_decoder.decode(created.store_updates()[0][1])
    assert "merge_shipment" in rec.labels and rec.address_orders_24h == 3
    assert any(a.kind == "notify" for a in created.alerts)


def test_a_pending_count_expires_when_its_order_never_comes() -> None:
    day = order_state.PENDING_COUNT_TTL_MS
    old = (T0).to_bytes(8, "big") + (3).to_bytes(4, "big")
    new = (T0 + day).to_bytes(8, "big") + (3).to_bytes(4, "big")
    rows = [(b"hcount:a", old), (b"hcount:b", new)]
    assert order_state.stale_pending_counts(rows, T0 + day + 1) == [b"hcount:a"]
