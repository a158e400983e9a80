"""The order side of a multi-SKU reservation: whole or nothing, idempotent on repeated results."""

from __future__ import annotations

import pytest

from core.inventory import ReservationResult, ReserveRequest
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


@pytest.fixture(scope="module")
def routing() -> WarehouseRouting:
    return WarehouseRouting.default()


def order(*items: tuple[str, int], warehouse: str = "", region: str = "浙江省") -> CanonicalOrder:
    return CanonicalOrder(
        id="os_1",
        channel="taobao",
        channel_order_no="1",
        created_at=T0,
        updated_at=T0,
        currency="CNY",
        total=1,
        payment_status="paid",
        lines=[
            LineItem(sku=s, channel_sku=s, quantity=q, unit_price=1, line_total=q) for s, q in items
        ],
        recipient=Recipient(country="CN", region=region),
        warehouse=warehouse,
    )


def answer(
    req: ReserveRequest, outcome: str, warehouse: str = "hz-east", reason: str = ""
) -> ReservationResult:
    return ReservationResult(
        req.order_id, req.sku, req.op, outcome, warehouse, req.quantity, reason, T0 + 1
    )  # type: ignore[arg-type]


def fold(
    saga: ReservationSaga, *results: ReservationResult
) -> tuple[ReservationSaga, list[ReserveRequest]]:
    out: list[ReserveRequest] = []
    for res in results:
        saga, reqs = apply_result(saga, res)
        out.extend(reqs)
    return saga, out


def test_one_request_per_distinct_sku(routing: WarehouseRouting) -> None:
    saga, reqs = start_reservation(
        order(("MUG", 1), ("TEE", 2), ("MUG", 3)), routing, T0, ttl_ms=900_000
    )
    assert [(r.op, r.sku, r.quantity) for r in reqs] == [
        ("reserve", "MUG", 4),
        ("reserve", "TEE", 2),
    ]
    assert all(
        r.warehouses == ["hz-east", "sh-main", "wh-central", "gz-south", "bj-north", "cd-west"]
        for r in reqs
    )
    assert all(r.ttl_ms == 900_000 and r.requested_at == T0 and r.channel == "taobao" for r in reqs)
    assert saga.status == "pending" and saga.routed_by.startswith("CN/浙江省 -> [hz-east")


def test_sku_class_candidates_per_line(routing: WarehouseRouting) -> None:
    _, reqs = start_reservation(order(("MUG", 1), ("LAMP-WH-M-00006", 1)), routing, T0)
    assert reqs[1].warehouses == ["hz-bulky", "gz-bulky"]
    assert reqs[0].warehouses[0] == "hz-east"


def test_all_granted_is_reserved(routing: WarehouseRouting) -> None:
    saga, reqs = start_reservation(order(("A", 1), ("B", 1)), routing, T0)
    saga, more = fold(saga, answer(reqs[0], "granted"))
    assert saga.status == "pending" and more == []
    saga, more = fold(saga, answer(reqs[1], "granted", "sh-main"))
    assert saga.status == "reserved" and more == []
    assert saga.warehouse == "split"


def test_refusal_releases_granted_lines_and_late_grants(routing: WarehouseRouting) -> None:
    saga, reqs = start_reservation(order(("A", 1), ("B", 1), ("C", 1)), routing, T0)
    saga, rel = fold(saga, answer(reqs[0], "granted"))
    saga, rel = fold(saga, answer(reqs[1], "refused", "", "out of stock: hz-east: available 0 < 1"))
    assert [(r.op, r.sku, r.reason) for r in rel] == [("release", "A", "out_of_stock")]
    assert saga.status == "pending" and saga.refused == ["B"]
    saga, rel = fold(saga, answer(reqs[2], "granted"))  # granted after the refusal
    assert [(r.op, r.sku) for r in rel] == [("release", "C")]
    assert saga.status == "out_of_stock"
    assert [ln.outcome for ln in saga.lines] == ["released", "refused", "released"]
    assert saga.lines[1].reason == "out of stock: hz-east: available 0 < 1"


def test_repeated_results_change_nothing(routing: WarehouseRouting) -> None:
    saga, reqs = start_reservation(order(("A", 1), ("B", 1)), routing, T0)
    results = [answer(reqs[0], "granted"), answer(reqs[1], "refused", "", "x")]
    saga, rel = fold(saga, *results)
    assert len(rel) == 1
    for res in results:
        again, more = apply_result(saga, res)
        assert again == saga and more == []
    unchanged = answer(reqs[0], "unchanged")
    assert apply_result(saga, unchanged) == (saga, [])


def test_result_for_unknown_sku_is_ignored(routing: WarehouseRouting) -> None:
    saga, _ = start_reservation(order(("A", 1)), routing, T0)
    stray = ReservationResult("os_1", "ZZZ", "reserve", "granted", "hz", 1, "", T0)
    assert apply_result(saga, stray) == (saga, [])


def test_cancel_releases_pending_and_granted(routing: WarehouseRouting) -> None:
    saga, reqs = start_reservation(order(("A", 1), ("B", 1)), routing, T0)
    saga, _ = fold(saga, answer(reqs[0], "granted"))
    saga, rel = release_reservation(saga, "os_1", "payment_timeout", T0 + 9)
    assert [(r.op, r.sku, r.reason) for r in rel] == [
        ("release", "A", "payment_timeout"),
        ("release", "B", "payment_timeout"),
    ]
    assert saga.status == "released" and saga.reason == "payment_timeout"
    saga, more = fold(saga, answer(reqs[1], "granted"))  # its grant was already on the way
    assert more == [] and saga.status == "released"
    assert release_reservation(saga, "os_1", "again", T0) == (saga, [])


def test_ship_deducts_every_line(routing: WarehouseRouting) -> None:
    saga, reqs = start_reservation(order(("A", 1), ("B", 2)), routing, T0)
    pending_ship = deduct_reservation(saga, "os_1", T0)
    assert pending_ship == (saga, [])  # only a reserved order ships
    saga, _ = fold(saga, *(answer(r, "granted") for r in reqs))
    saga, ded = deduct_reservation(saga, "os_1", T0 + 5)
    assert [(r.op, r.sku, r.quantity) for r in ded] == [("deduct", "A", 1), ("deduct", "B", 2)]
    assert saga.status == "deducted"
    assert release_reservation(saga, "os_1", "refund after shipment", T0) == (saga, [])
    saga, _ = fold(saga, *(answer(r, "deducted") for r in ded))
    assert saga.status == "deducted" and saga.refused == []


def test_refused_deduct_is_flagged(routing: WarehouseRouting) -> None:
    saga, reqs = start_reservation(order(("A", 1)), routing, T0)
    saga, _ = fold(saga, answer(reqs[0], "granted"))
    saga, ded = deduct_reservation(saga, "os_1", T0)
    saga, _ = fold(saga, answer(ded[0], "refused", reason="reservation already released (ttl)"))
    assert saga.refused == ["A"] and saga.lines[0].outcome == "refused"


def test_ttl_release_of_one_line_releases_the_order(routing: WarehouseRouting) -> None:
    saga, reqs = start_reservation(order(("A", 1), ("B", 1)), routing, T0, ttl_ms=1000)
    saga, _ = fold(saga, *(answer(r, "granted") for r in reqs))
    ttl = ReserveRequest("release", "os_1", "A", 1, [], reason="ttl_expired")
    saga, rel = fold(saga, answer(ttl, "released", reason="ttl_expired"))
    assert [(r.sku, r.reason) for r in rel] == [("B", "ttl_expired")]
    assert saga.status == "released" and saga.reason == "ttl_expired"


def test_order_without_lines_is_trivially_reserved(routing: WarehouseRouting) -> None:
    saga, reqs = start_reservation(order(), routing, T0)
    assert saga.status == "reserved" and reqs == []


def test_named_warehouse_wins(routing: WarehouseRouting) -> None:
    saga, reqs = start_reservation(order(("LAMP-X", 1), warehouse="bj-north"), routing, T0)
    assert reqs[0].warehouses == ["bj-north"] and saga.routed_by == "bj-north named by the order"
