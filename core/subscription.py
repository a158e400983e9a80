"""Which sync events a subscriber (SSE, WebSocket, webhook) wants.

A filter has up to four dimensions: event types, order ids, SKUs, channels. An event matches
when, for every dimension the filter names, the event has a value in that set. Events lack
some dimensions: an order change has no SKU, a stock change no channel. So ``?sku=X`` yields
stock changes and alerts for X, ``?channel=shopify`` yields Shopify order changes, and
``?order=A`` yields A's changes plus the stock changes A caused.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import msgspec

EVENT_TYPES = ("order", "stock", "stock_alert")
MAX_VALUES = 1000  # per dimension: a filter is a subscription, not a query language


class FilterError(ValueError):
    def __init__(self, field: str, reason: str) -> None:
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


class EventFilter(msgspec.Struct, frozen=True, omit_defaults=True):
    types: frozenset[str] = frozenset()
    orders: frozenset[str] = frozenset()
    skus: frozenset[str] = frozenset()
    channels: frozenset[str] = frozenset()

    def matches(self, kind: str, order_id: str, sku: str, channel: str) -> bool:
        if self.types and kind not in self.types:
            return False
        if self.orders and order_id not in self.orders:
            return False
        if self.skus and sku not in self.skus:
            return False
        return not self.channels or channel in self.channels

    @property
    def everything(self) -> bool:
        return not (self.types or self.orders or self.skus or self.channels)


def _values(raw: object, field: str) -> frozenset[str]:
    if raw is None or raw == "":
        return frozenset()
    if isinstance(raw, str):
        items = [v.strip() for v in raw.split(",")]
    elif isinstance(raw, list) and all(isinstance(v, str) for v in raw):
        items = [v.strip() for v in raw]
    else:
        raise FilterError(field, "must be a string (comma-separated) or a list of strings")
    values = frozenset(v for v in items if v)
    if len(values) > MAX_VALUES:
        raise FilterError(field, f"at most {MAX_VALUES} values")
    return values


def parse_filter(
    params: Mapping[str, object], canonical_sku: Callable[[str], str] = str
) -> EventFilter:
    """From query parameters or a webhook's ``filters`` object: ``type``, ``order``, ``sku``,
    ``channel`` (plural spellings accepted). SKUs are mapped to canonical ones, as stock is kept."""

    def get(name: str) -> object:
        return params.get(name, params.get(name + "s"))

    unknown = set(params) - {
        f"{n}{s}" for n in ("type", "order", "sku", "channel") for s in ("", "s")
    }
    if unknown:
        raise FilterError(sorted(unknown)[0], "unknown filter; use type, order, sku, channel")
    types = _values(get("type"), "type")
    bad = types - set(EVENT_TYPES)
    if bad:
        raise FilterError("type", f"unknown event type {sorted(bad)[0]!r}; one of {EVENT_TYPES}")
    return EventFilter(
        types=types,
        orders=_values(get("order"), "order"),
        skus=frozenset(canonical_sku(s) for s in _values(get("sku"), "sku")),
        channels=frozenset(c.lower() for c in _values(get("channel"), "channel")),
    )
