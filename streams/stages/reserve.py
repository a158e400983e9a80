"""Reserve stage glue: per-SKU requests and WMS stock updates in, results and stock changes out.

Partitioned by SKU (``core.inventory.partition_key``), so the worker owning a partition is the
only writer of its SKUs' stock and reservation ledger: grants need no lock and can never race.
Results go back to the order stage on ``reservations.results`` keyed by order id; every touched
(SKU, warehouse) level goes to ``stock.changes`` keyed by SKU, low-stock alerts with it.

``stock.updates`` is what a WMS produces to: one JSON ``StockAdjustment`` per message, or NDJSON
lines (README, "Stock"). A line that is not a valid adjustment is dead-lettered with the field
and the reason; the others in the message still apply.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from core.framing import split_orders
from core.inventory import StockAdjustment, partition_key
from ext import kafka_partition
from streams.kafka.envelope import DeadLetter

STAGE = "reserve"
STORE = "stock"

_adjustment = msgspec.json.Decoder(StockAdjustment)


def validate_adjustment(adj: StockAdjustment) -> tuple[str, str] | None:
    """(field, reason) when an adjustment can never apply, before it reaches the ledger."""
    if not adj.sku.strip():
        return "sku", "must not be empty"
    if not adj.warehouse.strip():
        return "warehouse", "must not be empty"
    if adj.op == "hold" and not adj.channel:
        return "channel", "a hold names the channel it holds stock for"
    return None


def decode_stock_updates(
    value: bytes, content_type: str, received_at: int
) -> tuple[list[StockAdjustment], list[DeadLetter]]:
    """A WMS message: one adjustment or NDJSON lines; bad lines become dead letters."""
    good: list[StockAdjustment] = []
    dead: list[DeadLetter] = []
    lines, _ = split_orders(value, content_type)
    for line_no, line in lines:
        try:
            adj = _adjustment.decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            msg = str(exc)
            field = "$"
            if " - at `" in msg:
                msg, _, where = msg.rpartition(" - at `")
                field = where.rstrip("`")
            dead.append(_letter(line, f"{field}", f"line {line_no}: {msg}", received_at))
            continue
        problem = validate_adjustment(adj)
        if problem is not None:
            dead.append(_letter(line, f"$.{problem[0]}", problem[1], received_at))
            continue
        good.append(adj if adj.at else msgspec.structs.replace(adj, at=received_at))
    return good, dead


def _letter(payload: bytes, field: str, reason: str, received_at: int) -> DeadLetter:
    return DeadLetter(
        stage=STAGE,
        channel="wms",
        field=field,
        reason=reason,
        payload=payload,
        received_at=received_at,
    )


class Placed(msgspec.Struct):
    good: list[StockAdjustment]
    dead: list[DeadLetter]


def check_placement(
    adjustments: list[StockAdjustment],
    partition: int,
    partitions: int,
    canonical: Callable[[str], str],
    received_at: int,
) -> Placed:
    """Keep only adjustments this partition owns, under the SKU orders use.

    A SKU's stock has one writer: the owner of ``partition_key(sku)``'s partition. An
    adjustment naming an alias, or produced to another partition (a WMS keying by something
    else), would create a second record that no order ever reserves from, so it is
    dead-lettered with what to send instead.
    """
    out = Placed([], [])
    for adj in adjustments:
        sku = canonical(adj.sku)
        payload = msgspec.json.encode(adj)
        if sku != adj.sku:
            why = f"{adj.sku!r} is an alias of {sku!r}: send the canonical SKU"
            out.dead.append(_letter(payload, "$.sku", why, received_at))
        elif kafka_partition(partition_key(sku), partitions) != partition:
            why = f"produced to partition {partition}; key stock.updates by the SKU ({sku!r})"
            out.dead.append(_letter(payload, "key", why, received_at))
        else:
            out.good.append(adj)
    return out
