"""The SKU partition's ledger: every outcome and refusal, and a stateful test of the invariant.

The stateful test drives ``apply_batch`` over a dict store (applying its updates as the stage
writes its WriteBatch) together with order-side sagas, with random interleavings of orders,
partial deliveries, redeliveries, duplicate results, cancels, shipments, stock adjustments and
TTL expiry, and checks the invariant after every step.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Sequence

import msgspec
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from core.inventory import (
    ENDED_PREFIX,
    RESERVATION_PREFIX,
    STOCK_PREFIX,
    TTL_PREFIX,
    InventoryOutcome,
    ReservationResult,
    ReserveRequest,
    StockAdjustment,
    apply_batch,
    audit,
    decode_reservation,
    decode_stock,
    expired,
    inventory_lookup_keys,
    partition_key,
    purgeable,
    reservation_key,
    stock_key,
)
from core.model import CanonicalOrder, LineItem, Recipient
from core.routing import WarehouseRouting
from core.saga import (
    ReservationSaga,
    apply_result,
    deduct_reservation,
    release_reservation,
    start_reservation,
)

T0 = 1_700_000_000_000


class Ledger:
    """A dict-backed SKU partition store, written the way the stage writes its WriteBatch."""

    def __init__(self) -> None:
        self.db: dict[bytes, bytes] = {}

    def run(
        self,
        requests: Sequence[ReserveRequest] = (),
        adjustments: Sequence[StockAdjustment] = (),
        now: int = T0,
    ) -> InventoryOutcome:
        keys = inventory_lookup_keys(requests, adjustments)
        held = {k: self.db.get(k) for k in keys}
        out = apply_batch(requests, adjustments, held, now)
        for key, value in out.updates:
            if value is None:
                self.db.pop(key, None)
            else:
                self.db[key] = value
        assert out.oversold == 0
        return out

    def rows(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        return sorted((k, v) for k, v in self.db.items() if k.startswith(prefix))

    def level(self, sku: str, wh: str):
        return decode_stock(self.db[stock_key(sku)]).levels[wh]

    def audit(self) -> list[str]:
        return audit(self.rows(STOCK_PREFIX), self.rows(RESERVATION_PREFIX))

    def stock(self, sku: str, wh: str, on_hand: int, safety: int = 0, **kw: object) -> None:
        adj = [StockAdjustment(sku=sku, warehouse=wh, op="set", quantity=on_hand)]
        if safety:
            adj.append(StockAdjustment(sku=sku, warehouse=wh, op="safety", quantity=safety))
        out = self.run(adjustments=adj)
        assert all(r.outcome == "applied" for r in out.adjustment_results), out


def reserve(order: str, sku: str, qty: int, whs: list[str], **kw: object) -> ReserveRequest:
    return ReserveRequest("reserve", order, sku, qty, whs, **kw)  # type: ignore[arg-type]


def release(order: str, sku: str, reason: str = "cancelled") -> ReserveRequest:
    return ReserveRequest("release", order, sku, 0, [], reason=reason)


def deduct(order: str, sku: str) -> ReserveRequest:
    return ReserveRequest("deduct", order, sku, 0, [])


@pytest.fixture
def ledger() -> Ledger:
    led = Ledger()
    led.stock("MUG", "hz", 10, safety=2)
    led.stock("MUG", "sh", 5)
    return led


# ------------------------------------------------------------------------------ reservations


def test_grant_takes_first_candidate_with_stock(ledger: Ledger) -> None:
    out = ledger.run([reserve("o1", "MUG", 3, ["hz", "sh"])])
    (res,) = out.results
    assert (res.outcome, res.warehouse, res.quantity) == ("granted", "hz", 3)
    lv = ledger.level("MUG", "hz")
    assert (lv.on_hand, lv.reserved, lv.safety, lv.available) == (10, 3, 2, 5)
    assert ledger.audit() == []
    assert out.granted == 1 and out.refused == 0


def test_fallback_to_next_warehouse_says_why(ledger: Ledger) -> None:
    (res,) = ledger.run([reserve("o1", "MUG", 9, ["hz", "sh"])]).results
    assert res.outcome == "refused"  # hz: 8 sellable (10 - safety 2); sh: 5
    assert res.reason == "out of stock: hz: available 8 < 9; sh: available 5 < 9"
    (res,) = ledger.run([reserve("o2", "MUG", 5, ["nowhere", "hz", "sh"])]).results
    assert (res.outcome, res.warehouse) == ("granted", "hz")
    (res,) = ledger.run([reserve("o3", "MUG", 4, ["hz", "sh"])]).results
    assert (res.outcome, res.warehouse) == ("granted", "sh")
    assert res.reason == "sh after hz: available 3 < 4"


def test_safety_stock_is_never_sold(ledger: Ledger) -> None:
    assert ledger.run([reserve("o1", "MUG", 8, ["hz"])]).results[0].outcome == "granted"
    (res,) = ledger.run([reserve("o2", "MUG", 1, ["hz"])]).results
    assert res.outcome == "refused" and "available 0 < 1" in res.reason
    lv = ledger.level("MUG", "hz")
    assert lv.reserved == lv.on_hand - lv.safety


def test_unknown_sku_has_no_stock_record(ledger: Ledger) -> None:
    (res,) = ledger.run([reserve("o1", "TEE", 1, ["hz", "sh"])]).results
    assert (res.outcome, res.reason) == ("refused", "no stock record for TEE in any warehouse")
    (res,) = ledger.run([reserve("o2", "MUG", 1, ["bj", "gz"])]).results
    assert (res.outcome, res.reason) == ("refused", "no stock record for MUG in bj, gz")


@pytest.mark.parametrize("qty", [0, -3])
def test_quantity_must_be_positive(ledger: Ledger, qty: int) -> None:
    (res,) = ledger.run([reserve("o1", "MUG", qty, ["hz"])]).results
    assert res.outcome == "refused"
    assert res.reason == f"quantity must be a positive integer, got {qty}"


def test_no_candidates_is_refused(ledger: Ledger) -> None:
    (res,) = ledger.run([reserve("o1", "MUG", 1, [])]).results
    assert res.reason == "no candidate warehouse (routing gave none)"


def test_redelivered_reserve_never_reserves_twice(ledger: Ledger) -> None:
    first = ledger.run([reserve("o1", "MUG", 3, ["hz"])]).results[0]
    again = ledger.run([reserve("o1", "MUG", 3, ["hz"])], now=T0 + 5).results
    both = ledger.run([reserve("o1", "MUG", 3, ["hz"]), reserve("o1", "MUG", 3, ["hz"])]).results
    for r in (*again, *both):
        assert (r.outcome, r.warehouse, r.quantity) == (first.outcome, "hz", 3)
    assert ledger.level("MUG", "hz").reserved == 3
    refused = ledger.run([reserve("o2", "MUG", 99, ["hz"])]).results[0]
    ledger.stock("MUG", "hz", 500)
    again2 = ledger.run([reserve("o2", "MUG", 99, ["hz"])]).results[0]
    assert (refused.outcome, again2.outcome, again2.reason) == (
        "refused",
        "refused",
        refused.reason,
    )
    assert ledger.audit() == []


def test_release_returns_stock_and_is_idempotent(ledger: Ledger) -> None:
    ledger.run([reserve("o1", "MUG", 3, ["hz"])])
    (res,) = ledger.run([release("o1", "MUG")]).results
    assert (res.outcome, res.warehouse, res.quantity, res.reason) == (
        "released",
        "hz",
        3,
        "cancelled",
    )
    assert ledger.level("MUG", "hz").reserved == 0
    (res,) = ledger.run([release("o1", "MUG")]).results
    assert res.outcome == "released" and ledger.level("MUG", "hz").reserved == 0
    (res,) = ledger.run([reserve("o1", "MUG", 3, ["hz"])]).results
    assert (res.outcome, res.reason) == ("unchanged", "reservation already released")
    assert ledger.level("MUG", "hz").reserved == 0


def test_release_of_never_reserved_line_blocks_a_late_reserve(ledger: Ledger) -> None:
    (res,) = ledger.run([release("o1", "MUG")]).results
    assert (res.outcome, res.reason) == ("unchanged", "no reservation held; release recorded")
    (res,) = ledger.run([reserve("o1", "MUG", 1, ["hz"])]).results
    assert res.outcome == "unchanged"
    assert ledger.level("MUG", "hz").reserved == 0


def test_release_of_refused_line_is_a_no_op(ledger: Ledger) -> None:
    ledger.run([reserve("o1", "MUG", 50, ["hz"])])
    (res,) = ledger.run([release("o1", "MUG")]).results
    assert (res.outcome, res.reason) == ("unchanged", "reservation was refused; nothing held")


def test_deduct_converts_reserved_into_on_hand_decrement(ledger: Ledger) -> None:
    ledger.run([reserve("o1", "MUG", 3, ["hz"])])
    (res,) = ledger.run([deduct("o1", "MUG")]).results
    assert (res.outcome, res.quantity) == ("deducted", 3)
    lv = ledger.level("MUG", "hz")
    assert (lv.on_hand, lv.reserved, lv.available) == (7, 0, 5)
    assert ledger.run([deduct("o1", "MUG")]).results[0].outcome == "deducted"
    assert ledger.level("MUG", "hz").on_hand == 7
    (res,) = ledger.run([release("o1", "MUG")]).results
    assert res.outcome == "refused"
    assert res.reason == "reservation already shipped (deducted); a return is a stock receipt"
    assert ledger.audit() == []


def test_deduct_refusals(ledger: Ledger) -> None:
    (res,) = ledger.run([deduct("o1", "MUG")]).results
    assert (res.outcome, res.reason) == ("refused", "no reservation to deduct")
    ledger.run([reserve("o2", "MUG", 3, ["hz"]), release("o2", "MUG", "payment_timeout")])
    (res,) = ledger.run([deduct("o2", "MUG")]).results
    assert (res.outcome, res.reason) == (
        "refused",
        "reservation already released (payment_timeout)",
    )
    ledger.run([reserve("o3", "MUG", 300, ["hz"])])
    (res,) = ledger.run([deduct("o3", "MUG")]).results
    assert res.reason == "reservation was refused; nothing to deduct"


def test_ttl_expiry_releases(ledger: Ledger) -> None:
    ledger.run([reserve("o1", "MUG", 2, ["hz"], requested_at=T0, ttl_ms=1000)])
    ledger.run([reserve("o2", "MUG", 1, ["hz"], requested_at=T0, ttl_ms=5000)])
    rows = ledger.rows(TTL_PREFIX)
    assert len(rows) == 2
    assert expired(rows, T0 + 999) == []
    due = expired(rows, T0 + 1000)
    assert [(r.op, r.order_id, r.reason) for r in due] == [("release", "o1", "ttl_expired")]
    (res,) = ledger.run(due, now=T0 + 1000).results
    assert res.outcome == "released"
    assert ledger.level("MUG", "hz").reserved == 1
    assert len(ledger.rows(TTL_PREFIX)) == 1
    # the timer fired twice before the commit: nothing released twice
    assert ledger.run(due, now=T0 + 1001).results[0].outcome == "released"
    assert ledger.level("MUG", "hz").reserved == 1
    # deduct removes the TTL row too
    ledger.run([deduct("o2", "MUG")])
    assert ledger.rows(TTL_PREFIX) == []
    assert ledger.audit() == []


def test_ttl_index_is_time_ordered() -> None:
    led = Ledger()
    led.stock("A", "w", 100)
    for i, ttl in enumerate([300, 10, 70_000_000, 2]):
        led.run([reserve(f"o{i}", "A", 1, ["w"], requested_at=T0, ttl_ms=ttl)])
    due = expired(led.rows(TTL_PREFIX), T0 + 1_000)
    assert [r.order_id for r in due] == ["o3", "o1", "o0"]


def purge(led: Ledger, cutoff: int) -> None:
    index = led.rows(ENDED_PREFIX)
    for key, value in purgeable(index, {rkey: led.db.get(rkey) for _, rkey in index}, cutoff):
        assert value is None
        led.db.pop(key, None)


def test_ended_reservations_leave_the_ledger_after_the_retention(ledger: Ledger) -> None:
    ledger.run([reserve(o, "MUG", 1, ["hz"]) for o in ("o1", "o2", "o3")])
    ledger.run([reserve("o4", "NOPE", 1, ["hz"])])  # no stock record anywhere: refused
    ledger.run([release("o1", "MUG")], now=T0 + 10)
    ledger.run([deduct("o2", "MUG")], now=T0 + 20)
    ledger.run([release("o9", "MUG")], now=T0 + 5)  # never reserved: a tombstone row
    kept = {decode_reservation(v).order_id for _, v in ledger.rows(RESERVATION_PREFIX)}
    assert kept == {"o1", "o2", "o3", "o4", "o9"}
    assert len(ledger.rows(ENDED_PREFIX)) == 4  # o3 is live: not indexed
    purge(ledger, T0 + 15)
    kept = {decode_reservation(v).order_id for _, v in ledger.rows(RESERVATION_PREFIX)}
    assert kept == {"o2", "o3"}  # o2 ended after the cutoff; o3 still holds stock
    assert ledger.audit() == []
    purge(ledger, T0 + 10**6)
    assert [decode_reservation(v).order_id for _, v in ledger.rows(RESERVATION_PREFIX)] == ["o3"]
    assert ledger.rows(ENDED_PREFIX) == []
    assert ledger.level("MUG", "hz").reserved == 1
    assert ledger.audit() == []


def test_a_reservation_granted_again_after_it_ended_is_kept(ledger: Ledger) -> None:
    ledger.run([reserve("o1", "MUG", 1, ["hz"])])
    ledger.run([release("o1", "MUG")], now=T0 + 1)
    # the order was re-opened: a later attempt reserves again
    ledger.run([reserve("o1", "MUG", 1, ["hz"], attempt=1)], now=T0 + 2)
    purge(ledger, T0 + 100)
    (row,) = ledger.rows(RESERVATION_PREFIX)
    assert decode_reservation(row[1]).state == "granted"
    assert ledger.rows(ENDED_PREFIX) == []  # indexed anew when it ends
    again = ReserveRequest("release", "o1", "MUG", 0, [], reason="cancelled", attempt=1)
    ledger.run([again], now=T0 + 200)
    assert len(ledger.rows(ENDED_PREFIX)) == 1
    purge(ledger, T0 + 150)
    assert len(ledger.rows(RESERVATION_PREFIX)) == 1  # ended after this cutoff
    purge(ledger, T0 + 200)
    assert ledger.rows(RESERVATION_PREFIX) == []


def test_purge_stops_at_the_cutoff() -> None:
    led = Ledger()
    led.stock("A", "w", 100)
    for i in range(5):
        led.run([reserve(f"o{i}", "A", 1, ["w"])])
        led.run([release(f"o{i}", "A")], now=T0 + 1000 * i)
    purge(led, T0 + 2500)
    left = sorted(decode_reservation(v).order_id for _, v in led.rows(RESERVATION_PREFIX))
    assert left == ["o3", "o4"]
    assert len(led.rows(ENDED_PREFIX)) == 2


# ------------------------------------------------------------------------------- adjustments


def adj(op: str, qty: int, **kw: object) -> StockAdjustment:
    return StockAdjustment(sku="MUG", warehouse="hz", op=op, quantity=qty, **kw)  # type: ignore[arg-type]


def test_receipt_set_and_correction(ledger: Ledger) -> None:
    out = ledger.run(adjustments=[adj("receipt", 5), adj("correction", -3), adj("set", 20)])
    assert [r.outcome for r in out.adjustment_results] == ["applied"] * 3
    assert [r.on_hand for r in out.adjustment_results] == [15, 12, 20]
    assert len(out.stock_changes) == 1 and out.stock_changes[0].changes == 3


def test_adjustment_that_would_break_the_invariant_is_refused(ledger: Ledger) -> None:
    ledger.run([reserve("o1", "MUG", 6, ["hz"])])  # on_hand 10, safety 2, reserved 6
    out = ledger.run(adjustments=[adj("correction", -3), adj("safety", 5), adj("set", 7)])
    reasons = [(r.outcome, r.field, r.reason) for r in out.adjustment_results]
    assert reasons[0] == (
        "refused",
        "quantity",
        "would break reserved <= on_hand - safety: reserved 6 > on_hand 7 - safety 2; "
        "release or cancel reservations first",
    )
    assert reasons[1][2].startswith(
        "would break reserved <= on_hand - safety: reserved 6 > on_hand 10 - safety 5"
    )
    assert reasons[2][0] == "refused"
    lv = ledger.level("MUG", "hz")
    assert (lv.on_hand, lv.safety) == (10, 2)
    assert (
        ledger.run(adjustments=[adj("correction", -2)]).adjustment_results[0].outcome == "applied"
    )


@pytest.mark.parametrize(
    ("a", "field", "reason"),
    [
        (adj("receipt", 0), "quantity", "a receipt must be > 0, got 0"),
        (adj("set", -1), "quantity", "must be >= 0 for set, got -1"),
        (adj("safety", -1), "quantity", "must be >= 0 for safety, got -1"),
        (adj("correction", 0), "quantity", "a correction must not be 0"),
        (adj("correction", -11), "quantity", "on_hand would be -1 (< 0)"),
        (adj("hold", 3), "channel", "a hold names the channel it holds for"),
        (
            StockAdjustment(sku="MUG", warehouse="", op="set", quantity=1),
            "warehouse",
            "must not be empty",
        ),
        (
            StockAdjustment(sku="MUG", warehouse="bj", op="correction", quantity=1),
            "warehouse",
            "no stock record for MUG in bj",
        ),
    ],
)
def test_adjustment_refusals(ledger: Ledger, a: StockAdjustment, field: str, reason: str) -> None:
    (res,) = ledger.run(adjustments=[a]).adjustment_results
    assert (res.outcome, res.field, res.reason) == ("refused", field, reason)


def test_wms_redelivery_is_idempotent(ledger: Ledger) -> None:
    a = adj("receipt", 5, adjustment_id="wms-123")
    assert ledger.run(adjustments=[a]).adjustment_results[0].outcome == "applied"
    out = ledger.run(adjustments=[a, a])
    assert [r.outcome for r in out.adjustment_results] == ["duplicate", "duplicate"]
    assert out.adjustment_results[0].reason == "already applied"
    assert ledger.level("MUG", "hz").on_hand == 15


def test_adjustments_apply_before_requests_in_a_batch() -> None:
    led = Ledger()
    out = led.run(
        [reserve("o1", "NEW", 2, ["hz"])],
        [StockAdjustment(sku="NEW", warehouse="hz", op="receipt", quantity=2)],
    )
    assert out.results[0].outcome == "granted"


def test_low_stock_alert_on_crossing_only(ledger: Ledger) -> None:
    ledger.run(adjustments=[adj("alert_at", 3)])  # hz: sellable 8
    out = ledger.run([reserve("o1", "MUG", 4, ["hz"])])
    assert out.alerts == [] and not out.stock_changes[0].low_stock
    out = ledger.run([reserve("o2", "MUG", 2, ["hz"]), reserve("o3", "MUG", 1, ["hz"])])
    (alert,) = out.alerts
    assert (alert.sku, alert.warehouse, alert.available, alert.alert_at) == ("MUG", "hz", 1, 3)
    assert out.stock_changes[0].low_stock and out.stock_changes[0].changes == 2
    assert ledger.run([reserve("o4", "MUG", 1, ["hz"])]).alerts == []  # still low: no repeat
    ledger.run([release("o1", "MUG")])  # back above
    assert len(ledger.run([reserve("o5", "MUG", 4, ["hz"])]).alerts) == 1


def test_default_alert_when_only_safety_stock_is_left(ledger: Ledger) -> None:
    (alert,) = ledger.run([reserve("o1", "MUG", 8, ["hz"])]).alerts
    assert (alert.available, alert.safety, alert.on_hand) == (0, 2, 10)


def test_channel_hold(ledger: Ledger) -> None:
    ledger.run(adjustments=[adj("hold", 5, channel="tiktok")])  # hz: sellable 8, 5 held
    (r,) = ledger.run([reserve("o1", "MUG", 4, ["hz"], channel="shopify")]).results
    assert r.outcome == "refused" and "available 3 < 4" in r.reason
    (r,) = ledger.run([reserve("o2", "MUG", 6, ["hz"], channel="tiktok")]).results
    assert r.outcome == "granted"  # its hold (5) plus the free pool
    lv = ledger.level("MUG", "hz")
    assert lv.hold_used == {"tiktok": 5} and lv.available_for("shopify") == 2
    ledger.run([release("o2", "MUG")])
    assert ledger.level("MUG", "hz").hold_used == {"tiktok": 0}
    ledger.run([reserve("o3", "MUG", 2, ["hz"], channel="tiktok"), deduct("o3", "MUG")])
    lv = ledger.level("MUG", "hz")
    assert (lv.holds, lv.hold_used, lv.on_hand) == ({"tiktok": 3}, {"tiktok": 0}, 8)
    # a hold bigger than the stock leaves others nothing but never oversells
    ledger.run(adjustments=[adj("hold", 100, channel="tiktok")])
    assert ledger.level("MUG", "hz").available_for("jd") == 0
    assert ledger.audit() == []


def test_audit_finds_discrepancies(ledger: Ledger) -> None:
    ledger.run([reserve("o1", "MUG", 3, ["hz"])])
    key = reservation_key("o1", "MUG")
    rsv = decode_reservation(ledger.db[key])
    ledger.db[key] = msgspec.msgpack.encode(msgspec.structs.replace(rsv, quantity=4))
    assert ledger.audit() == ["MUG@hz: reserved 3 but live reservations sum to 4"]
    stock = decode_stock(ledger.db[stock_key("MUG")])
    stock.levels["hz"].reserved = 9
    ledger.db[stock_key("MUG")] = msgspec.msgpack.encode(stock)
    assert "MUG@hz: oversold: reserved 9 > on_hand 10 - safety 2" in ledger.audit()
    del ledger.db[stock_key("MUG")]
    assert ledger.audit() == ["MUG@hz: 4 reserved with no stock record"]


def test_lookup_keys_cover_everything_read() -> None:
    reqs = [reserve("o1", "A", 1, ["w"]), release("o1", "A"), reserve("o2", "A", 1, ["w"])]
    adjs = [StockAdjustment(sku="A", warehouse="w", op="set", quantity=1, adjustment_id="x")]
    keys = inventory_lookup_keys(reqs, adjs)
    assert len(keys) == len(set(keys)) == 4
    with pytest.raises(KeyError):
        apply_batch(reqs, adjs, {}, T0)
    assert partition_key("A") == b"A"


# ------------------------------------------------------------------------------ stateful test

SKUS = ("A", "B", "C")
WHS = ("w1", "w2")
ROUTING = WarehouseRouting.from_dict(
    {
        "warehouses": {"w1": "one", "w2": "two"},
        "routing": {"default": ["w1", "w2"]},
        "zones": [
            {
                "name": "CN",
                "countries": ["CN"],
                "warehouses": ["w1", "w2"],
                "regions": {"south": ["w2", "w1"]},
            }
        ],
    }
)


def _order(n: int, items: list[tuple[str, int]], region: str) -> CanonicalOrder:
    return CanonicalOrder(
        id=f"o{n}",
        channel="taobao",
        channel_order_no=str(n),
        created_at=T0,
        updated_at=T0,
        currency="CNY",
        total=100,
        payment_status="paid",
        lines=[
            LineItem(sku=s, channel_sku=s, quantity=q, unit_price=1, line_total=q) for s, q in items
        ],
        recipient=Recipient(country="CN", region=region),
    )


class InventoryMachine(RuleBasedStateMachine):
    """Orders, partitions and the order stage as queues; every step keeps the invariant."""

    @initialize()
    def setup(self) -> None:
        self.ledger = Ledger()
        self.now = T0
        self.n = 0
        self.inbox: dict[str, deque[ReserveRequest]] = {s: deque() for s in SKUS}  # per SKU
        self.results: dict[str, deque[ReservationResult]] = defaultdict(deque)  # per order
        self.sagas: dict[str, ReservationSaga] = {}
        self.history: list[ReserveRequest] = []
        self.seen_results: list[ReservationResult] = []
        self.ever_granted: set[bytes] = set()
        for s in SKUS:
            for w in WHS:
                self.ledger.stock(s, w, 4, safety=1)

    def _send(self, reqs: list[ReserveRequest]) -> None:
        for r in reqs:
            self.inbox[r.sku].append(r)

    def _apply(
        self,
        reqs: list[ReserveRequest],
        adjs: Sequence[StockAdjustment] = (),
    ) -> InventoryOutcome:
        before = {k: v for k, v in self.ledger.db.items() if k.startswith(RESERVATION_PREFIX)}
        out = self.ledger.run(reqs, adjs, now=self.now)
        for key, value in out.updates:
            if value is None or not key.startswith(RESERVATION_PREFIX):
                continue
            rsv = decode_reservation(value)
            if rsv.state == "granted" and before.get(key) != value:
                # no (order, sku) is ever granted a second time
                assert key not in self.ever_granted, key
                self.ever_granted.add(key)
        for res in out.results:
            self.results[res.order_id].append(res)
            self.seen_results.append(res)
        return out

    @rule(
        items=st.lists(st.tuples(st.sampled_from(SKUS), st.integers(1, 3)), min_size=1, max_size=4),
        region=st.sampled_from(["north", "south"]),
        ttl=st.sampled_from([0, 0, 1_000, 5_000]),
    )
    def new_order(self, items: list[tuple[str, int]], region: str, ttl: int) -> None:
        self.n += 1
        order = _order(self.n, items, region)
        saga, reqs = start_reservation(order, ROUTING, self.now, ttl_ms=ttl)
        assert sorted(r.sku for r in reqs) == sorted({s for s, _ in items})
        self.sagas[order.id] = saga
        self._send(reqs)

    @rule(sku=st.sampled_from(SKUS), k=st.integers(1, 6), data=st.data())
    def deliver(self, sku: str, k: int, data: st.DataObject) -> None:
        """A partition takes up to k requests (in order) plus maybe a stock adjustment."""
        box = self.inbox[sku]
        reqs = [box.popleft() for _ in range(min(k, len(box)))]
        adjs = data.draw(
            st.lists(
                st.builds(
                    StockAdjustment,
                    sku=st.just(sku),
                    warehouse=st.sampled_from(WHS),
                    op=st.sampled_from(["set", "receipt", "correction", "safety"]),
                    quantity=st.integers(-3, 6),
                ),
                max_size=1,
            )
        )
        self.history.extend(reqs)
        self._apply(reqs, adjs)

    @precondition(lambda self: self.history)
    @rule(data=st.data())
    def redeliver(self, data: st.DataObject) -> None:
        """At-least-once: an old request arrives again (out of order, even)."""
        req = data.draw(st.sampled_from(self.history))
        self._apply([req])

    @precondition(lambda self: any(self.results.values()))
    @rule(data=st.data())
    def order_stage(self, data: st.DataObject) -> None:
        oid = data.draw(st.sampled_from(sorted(o for o, q in self.results.items() if q)))
        res = self.results[oid].popleft()
        saga, reqs = apply_result(self.sagas[oid], res)
        self.sagas[oid] = saga
        self._send(reqs)

    @precondition(lambda self: self.seen_results)
    @rule(data=st.data())
    def duplicate_result(self, data: st.DataObject) -> None:
        res = data.draw(st.sampled_from(self.seen_results))
        saga, reqs = apply_result(self.sagas[res.order_id], res)
        again, more = apply_result(saga, res)
        assert more == [] and again == saga  # a repeated result changes nothing
        self.sagas[res.order_id] = saga
        self._send(reqs)

    @precondition(lambda self: self.sagas)
    @rule(data=st.data(), reason=st.sampled_from(["cancelled", "payment_timeout", "refunded"]))
    def cancel(self, data: st.DataObject, reason: str) -> None:
        oid = data.draw(st.sampled_from(sorted(self.sagas)))
        saga, reqs = release_reservation(self.sagas[oid], oid, reason, self.now)
        self.sagas[oid] = saga
        self._send(reqs)

    @precondition(lambda self: any(s.status == "reserved" for s in self.sagas.values()))
    @rule(data=st.data())
    def ship(self, data: st.DataObject) -> None:
        oid = data.draw(
            st.sampled_from(sorted(o for o, s in self.sagas.items() if s.status == "reserved"))
        )
        saga, reqs = deduct_reservation(self.sagas[oid], oid, self.now)
        assert saga.status == "deducted" and reqs
        self.sagas[oid] = saga
        self._send(reqs)

    @rule(ms=st.integers(0, 3_000))
    def tick(self, ms: int) -> None:
        """Time passes; the TTL timer scans the index and releases what is due."""
        self.now += ms
        due = expired(self.ledger.rows(TTL_PREFIX), self.now)
        for sku in SKUS:
            reqs = [r for r in due if r.sku == sku]
            if reqs:
                self._apply(reqs)

    @rule()
    def drain(self) -> None:
        """Deliver everything; then no saga may be half-reserved."""
        while any(self.inbox.values()) or any(self.results.values()):
            for sku in SKUS:
                reqs = list(self.inbox[sku])
                self.inbox[sku].clear()
                if reqs:
                    self.history.extend(reqs)
                    self._apply(reqs)
            for oid, box in self.results.items():
                while box:
                    saga, reqs = apply_result(self.sagas[oid], box.popleft())
                    self.sagas[oid] = saga
                    self._send(reqs)
        live: dict[str, set[str]] = defaultdict(set)
        for _key, raw in self.ledger.rows(RESERVATION_PREFIX):
            rsv = decode_reservation(raw)
            if rsv.state == "granted":
                live[rsv.order_id].add(rsv.sku)
        for oid, saga in self.sagas.items():
            assert saga.status != "pending", (oid, saga)
            skus = {ln.sku for ln in saga.lines}
            if saga.status == "reserved":
                assert live[oid] == skus, (oid, saga, live[oid])
                assert all(ln.outcome == "granted" for ln in saga.lines)
            else:
                assert not live[oid], (oid, saga, live[oid])

    @invariant()
    def stock_invariant(self) -> None:
        if not hasattr(self, "ledger"):
            return
        for _key, raw in self.ledger.rows(STOCK_PREFIX):
            for lv in decode_stock(raw).levels.values():
                assert lv.on_hand >= 0 and lv.safety >= 0
                assert lv.reserved <= lv.on_hand - lv.safety
        assert self.ledger.audit() == []
        # every TTL row belongs to a live reservation (ended ones leave no timer behind)
        for key, raw in self.ledger.rows(TTL_PREFIX):
            (req,) = expired([(key, raw)], 2**62)
            rsv = decode_reservation(self.ledger.db[reservation_key(req.order_id, req.sku)])
            assert rsv.state == "granted" and rsv.expires_at == req.requested_at


InventoryMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=50,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestInventoryMachine = InventoryMachine.TestCase
