"""How many orders one recipient placed in the last 24 hours: the rules' recipient history.

Kept by the history stage under the recipient key (``core.dedup.recipient_key``: the E.164
phone, else a name + address fingerprint), on partitions of that key, so every order of one
recipient is counted in one place (the recipient dedup stage's partitions follow the route key,
which spreads one recipient's baskets). The stage sends the count to the order stage, off the
critical path. It feeds rules such as "three or more orders to the same address within a day:
hint to merge the shipments".

State: per recipient and day (of ``created_at``, UTC), the (created_at, order id) pairs of that
day. An order reads its day and the day before and writes its day, and the days before
yesterday (by the stage's clock) go in one range delete when a new day begins, so memory and
disk stay bounded by two days of orders with no expiry index to keep in step with every write.
A redelivered order (same id) is counted once; an order created before yesterday is counted
against what is kept and not stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from core.dedup import DELETE_RANGE, recipient_key


class Dated(Protocol):
    """What is counted of an order: its id and when it was placed (an order, its dedup facts,
    or the history stage's fact)."""

    @property
    def id(self) -> str: ...

    @property
    def created_at(self) -> int: ...


OrderLike = Dated

DAY_MS = 86_400_000
HISTORY = b"hist:"  # + 4-byte big-endian day + recipient key -> [(created_at, order id)]
KEPT_KEY = b"hkept"  # the oldest day not yet deleted (4 bytes)

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(list[tuple[int, str]])


def _day(t: int) -> int:
    return t // DAY_MS if t > 0 else 0


def _days(
    order: OrderLike, rkey: bytes, prefixes: dict[int, tuple[bytes, bytes]]
) -> tuple[int, bytes, bytes]:
    """The order's day and its keys for the day before and that day (b"" for none)."""
    day = _day(order.created_at)
    pair = prefixes.get(day)
    if pair is None:
        before = HISTORY + (day - 1).to_bytes(4, "big") if day > 0 else b""
        pair = prefixes[day] = (before, HISTORY + day.to_bytes(4, "big"))
    before, this = pair
    return day, before + rkey if before else b"", this + rkey


def history_keys(orders: Sequence[OrderLike], rkeys: list[bytes] | None = None) -> list[bytes]:
    rkeys = rkeys if rkeys is not None else [recipient_key(o) for o in orders]
    keys: dict[bytes, None] = {KEPT_KEY: None}
    prefixes: dict[int, tuple[bytes, bytes]] = {}
    for order, rkey in zip(orders, rkeys, strict=True):
        _, before, this = _days(order, rkey, prefixes)
        if before:
            keys[before] = None
        keys[this] = None
    return list(keys)


def count_recent(
    orders: Sequence[OrderLike],
    held: dict[bytes, bytes | None],
    now: int,
    rkeys: list[bytes] | None = None,
) -> tuple[list[int], list[tuple[bytes, bytes | None]]]:
    """Per order, the recipient's orders within 24 h up to it (itself included), and the store
    updates: the days written, and the days before yesterday deleted once a new day begins.

    ``held`` holds the values of :func:`history_keys`; ``now`` is the stage's clock."""
    lists: dict[bytes, list[tuple[int, str]]] = {b"": []}
    touched: dict[bytes, None] = {}  # keys written, in first-touch order
    counts: list[int] = []
    first_kept = _day(now) - 1
    prefixes: dict[int, tuple[bytes, bytes]] = {}
    for i, order in enumerate(orders):
        rkey = rkeys[i] if rkeys is not None else recipient_key(order)
        day, before, this = _days(order, rkey, prefixes)
        older = lists.get(before)
        if older is None:
            raw = held.get(before)
            older = lists[before] = [] if raw is None else _dec.decode(raw)
        newer = lists.get(this)
        if newer is None:
            raw = held.get(this)
            newer = lists[this] = [] if raw is None else _dec.decode(raw)
        t = order.created_at
        oid = order.id
        uncounted = 0
        if (not older and not newer) or all(o != oid for d in (older, newer) for _, o in d):
            if day >= first_kept:
                newer.append((t, oid))
                if len(newer) > 1:
                    newer.sort()
                touched[this] = None
            else:
                uncounted = 1  # too old to keep, but it is one of the recipient's orders
        horizon = t - DAY_MS
        n = uncounted
        for days in (older, newer):
            for ts, _ in days:
                if horizon < ts <= t:
                    n += 1
        counts.append(n)
    updates: list[tuple[bytes, bytes | None]] = [(k, _enc.encode(lists[k])) for k in touched]
    raw_kept = held.get(KEPT_KEY)
    kept = int.from_bytes(raw_kept, "big") if raw_kept else 0
    if raw_kept is None:  # a store from before day buckets: its rows by recipient alone
        updates[:0] = [
            (DELETE_RANGE + HISTORY + b"\x01", b"hist;"),
            (DELETE_RANGE + b"hexp:", b"hexp;"),
        ]
    if first_kept > kept or raw_kept is None:
        if first_kept > kept:
            start, stop = HISTORY + kept.to_bytes(4, "big"), HISTORY + first_kept.to_bytes(4, "big")
            updates.insert(0, (DELETE_RANGE + start, stop))
        updates.append((KEPT_KEY, max(first_kept, kept).to_bytes(4, "big")))
    return counts, updates
