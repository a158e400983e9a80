"""Recording orders in the order stage: the first version creates, newer versions update.

Merge rule for re-deliveries (gateways retry webhooks for hours): the channel's ``updated_at``
decides. A copy newer than what is held replaces the order data (e.g. paid after pending); an
older or equal copy is stale and changes nothing, so a retry storm never rolls an order back and
a replay after a broker restart records nothing twice.
"""

from __future__ import annotations

from typing import Literal

import msgspec

from core.model import CanonicalOrder

OrderStateName = Literal[
    "pending_payment",
    "paid",
    "picking",
    "shipped",
    "in_transit",
    "delivered",
    "completed",
    "cancelled",
    "refund_requested",
    "refunded",
    "held",
]

# Only payment decides the state on arrival; later states come from fulfilment events.
_STATE_FOR_PAYMENT: dict[str, OrderStateName] = {
    "unpaid": "pending_payment",
    "deposit_paid": "pending_payment",
    "partially_paid": "pending_payment",
    "paid": "paid",
    "partially_refunded": "paid",
    "refunded": "refunded",
}
# States that a channel copy may still move (before fulfilment starts).
_PAYMENT_DRIVEN: frozenset[str] = frozenset({"pending_payment", "paid"})


class OrderRecord(msgspec.Struct, kw_only=True):
    order: CanonicalOrder
    state: OrderStateName
    version: int  # 1 on creation, +1 per recorded update
    recorded_at: int  # epoch ms of the first recording
    changed_at: int  # epoch ms of the last recorded change
    received_at: int  # when the newest version was accepted at the door


def initial_state(order: CanonicalOrder) -> OrderStateName:
    return _STATE_FOR_PAYMENT[order.payment_status]


def record_order(
    held: OrderRecord | None, incoming: CanonicalOrder, received_at: int, now: int
) -> tuple[OrderRecord, Literal["created", "updated"]] | None:
    """The new record and what happened, or None when ``incoming`` is stale or a repeat."""
    if held is None:
        rec = OrderRecord(
            order=incoming,
            state=initial_state(incoming),
            version=1,
            recorded_at=now,
            changed_at=now,
            received_at=received_at,
        )
        return rec, "created"
    if incoming.updated_at <= held.order.updated_at:
        return None
    state = held.state
    if state in _PAYMENT_DRIVEN:
        state = initial_state(incoming)
    rec = msgspec.structs.replace(
        held,
        order=incoming,
        state=state,
        version=held.version + 1,
        changed_at=now,
        received_at=received_at,
    )
    return rec, "updated"


record_encoder = msgspec.msgpack.Encoder()
record_decoder = msgspec.msgpack.Decoder(OrderRecord)
