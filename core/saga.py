"""The order side of a multi-SKU reservation: one request per SKU out, one result per SKU back.

The order stage owns one ``ReservationSaga`` per order (stored in the order record) and is its
only writer. SKU partitions answer independently and in any order, so the saga is a fold over
results that is idempotent (a repeated result changes nothing and asks for nothing) and ends in
a clear state, never half-reserved:

- ``reserved``: every line granted;
- ``out_of_stock``: some line refused (``refused`` lists the SKUs); every granted line is
  released, including lines granted after the refusal arrived;
- ``released``: cancelled, payment timed out, refunded before shipment, or a line's TTL ran out
  (then the other lines are released too: an order is reserved whole or not at all);
- ``deducted``: shipped, the reservations became stock deductions.

A line is marked ``released`` / ``deducted`` when the request is sent, not when it is answered:
release is always possible for a granted reservation and the ledger makes it idempotent, so the
saga never has to wait, and a late ``granted`` for a released line asks for nothing more.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from core.inventory import UNTRACKED, ReservationResult, ReserveRequest
from core.model import CanonicalOrder
from core.routing import WarehouseRouting

SagaStatus = Literal["pending", "reserved", "out_of_stock", "released", "deducted"]
LineOutcome = Literal["pending", "granted", "refused", "released", "deducted"]


class LineReservation(msgspec.Struct, kw_only=True, gc=False):
    sku: str
    quantity: int
    outcome: LineOutcome = "pending"
    warehouse: str = ""
    reason: str = ""
    tracked: bool = True  # False: granted as not stock-managed; nothing to release or deduct


class ReservationSaga(msgspec.Struct, kw_only=True, gc=False):
    status: SagaStatus
    lines: list[LineReservation]
    warehouses: list[str]  # the order's routing candidates (SKU classes may differ per line)
    routed_by: str  # why those warehouses, for operators
    refused: list[str] = []  # SKUs refused (out of stock, no record, failed deduct)
    channel: str = ""
    reason: str = ""  # why the saga was released, when it was
    attempt: int = 0  # 0 first; a retry after out of stock is a new attempt (fresh ledger rows)

    @property
    def warehouse(self) -> str:
        """The one warehouse serving every granted line, "split" when several, "" when none."""
        whs = {ln.warehouse for ln in self.lines if ln.warehouse}
        return whs.pop() if len(whs) == 1 else ("split" if whs else "")


def _request(
    op: Literal["reserve", "release", "deduct"],
    order_id: str,
    line: LineReservation,
    channel: str,
    reason: str,
    now: int,
    warehouses: list[str] | None = None,
    ttl_ms: int = 0,
    attempt: int = 0,
) -> ReserveRequest:
    return ReserveRequest(
        op,
        order_id,
        line.sku,
        line.quantity,
        warehouses or [],
        channel,
        reason,
        now,
        ttl_ms,
        attempt,
    )


def start_reservation(
    order: CanonicalOrder, routing: WarehouseRouting, now: int, ttl_ms: int = 0, attempt: int = 0
) -> tuple[ReservationSaga, list[ReserveRequest]]:
    """One request per distinct SKU (quantities of same-SKU lines summed), routed.

    ``attempt`` > 0 retries an order that ran out of stock: the SKU partitions treat it as new
    although they remember the earlier attempt's refusal for the same (order, SKU).
    """
    route = routing.route(order)
    qty: dict[str, int] = {}
    for item in order.lines:
        qty[item.sku] = qty.get(item.sku, 0) + item.quantity
    lines = [LineReservation(sku=sku, quantity=q) for sku, q in qty.items()]
    saga = ReservationSaga(
        status="pending" if lines else "reserved",
        lines=lines,
        warehouses=route.warehouses,
        routed_by=route.why,
        channel=order.channel,
        attempt=attempt,
    )
    requests = [
        _request(
            "reserve",
            order.id,
            ln,
            order.channel,
            "order",
            now,
            route.for_sku(ln.sku),
            ttl_ms,
            attempt,
        )
        for ln in lines
    ]
    return saga, requests


def _settle(saga: ReservationSaga) -> None:
    if saga.status in ("released", "deducted"):
        return
    outcomes = {ln.outcome for ln in saga.lines}
    if "pending" in outcomes:
        saga.status = "pending"
    elif saga.refused:
        saga.status = "out_of_stock"
    else:
        saga.status = "reserved"


def _release_granted(
    saga: ReservationSaga, order_id: str, reason: str, now: int, pending_too: bool
) -> list[ReserveRequest]:
    out = []
    for ln in saga.lines:
        if ln.outcome == "granted" or (pending_too and ln.outcome == "pending"):
            if ln.tracked:
                out.append(
                    _request(
                        "release", order_id, ln, saga.channel, reason, now, attempt=saga.attempt
                    )
                )
            ln.outcome = "released"
    return out


def apply_result(
    saga: ReservationSaga, result: ReservationResult
) -> tuple[ReservationSaga, list[ReserveRequest]]:
    """Fold one partition answer into the saga; returns the releases it now needs."""
    saga = msgspec.structs.replace(
        saga, lines=[msgspec.structs.replace(ln) for ln in saga.lines], refused=list(saga.refused)
    )
    line = next((ln for ln in saga.lines if ln.sku == result.sku), None)
    if line is None or result.outcome == "unchanged" or result.attempt != saga.attempt:
        return saga, []
    out: list[ReserveRequest] = []
    now = result.at
    if result.op == "reserve":
        if line.outcome != "pending":
            return saga, []  # a repeat, or a line already released by the saga
        if result.outcome == "granted":
            line.outcome, line.warehouse, line.reason = "granted", result.warehouse, result.reason
            line.tracked = result.reason != UNTRACKED
            if saga.refused or saga.status == "released":
                # the order already failed or was cancelled: give this line back at once
                reason = "out_of_stock" if saga.refused else saga.reason
                out = _release_granted(saga, result.order_id, reason, now, pending_too=False)
        elif result.outcome == "refused":
            line.outcome, line.reason = "refused", result.reason
            saga.refused.append(line.sku)
            out = _release_granted(saga, result.order_id, "out_of_stock", now, pending_too=False)
    elif result.op == "release":
        if result.outcome == "released" and line.outcome == "granted":
            # the partition released it on its own (TTL): the order cannot stay half-reserved
            line.outcome, line.reason = "released", result.reason
            saga.status, saga.reason = "released", result.reason
            out = _release_granted(saga, result.order_id, result.reason, now, pending_too=True)
        elif result.outcome in ("released", "refused"):
            line.reason = result.reason
    elif result.op == "deduct":
        if result.outcome == "refused" and line.outcome != "refused":
            # shipped without a live reservation (e.g. it expired first): operators must look
            line.outcome, line.reason = "refused", result.reason
            saga.refused.append(line.sku)
        elif result.outcome == "deducted":
            line.outcome = "deducted"
    _settle(saga)
    return saga, out


def release_reservation(
    saga: ReservationSaga, order_id: str, reason: str, now: int
) -> tuple[ReservationSaga, list[ReserveRequest]]:
    """Cancel, payment timeout, refund before shipment: give every held or pending line back.

    Pending lines are released too: if their grant is on its way the release follows it in the
    same SKU partition; if not, the ledger records the release and a late reserve is refused.
    A saga that is shipped, out of stock or already released asks for nothing.
    """
    if saga.status not in ("pending", "reserved"):
        return saga, []
    saga = msgspec.structs.replace(
        saga, lines=[msgspec.structs.replace(ln) for ln in saga.lines], refused=list(saga.refused)
    )
    out = _release_granted(saga, order_id, reason, now, pending_too=True)
    saga.status, saga.reason = "released", reason
    return saga, out


def deduct_reservation(
    saga: ReservationSaga, order_id: str, now: int
) -> tuple[ReservationSaga, list[ReserveRequest]]:
    """Shipment: every granted line becomes a stock deduction. Only a reserved saga ships."""
    if saga.status != "reserved":
        return saga, []
    saga = msgspec.structs.replace(
        saga, lines=[msgspec.structs.replace(ln) for ln in saga.lines], refused=list(saga.refused)
    )
    out = []
    for ln in saga.lines:
        if ln.outcome == "granted":
            if ln.tracked:
                out.append(
                    _request(
                        "deduct", order_id, ln, saga.channel, "shipped", now, attempt=saga.attempt
                    )
                )
            ln.outcome = "deducted"
    saga.status = "deducted"
    return saga, out
