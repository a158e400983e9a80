"""How many orders one recipient placed in the last 24 hours: the rules' recipient history.

Kept by the recipient dedup stage, whose partitions are keyed by recipient (``core.dedup
.recipient_key``: the E.164 phone, else a name + address fingerprint), so the count is local and
exact for that key. It feeds rules such as "three or more orders to the same address within a
day: hint to merge the shipments"; the count travels with the order to the order stage.

State per recipient: the (created_at, order id) pairs of the last day, plus one expiry-index key
(``EXPIRY`` + big-endian ms + recipient key) so a recipient who never orders again is forgotten
by a range scan of due keys, never a full scan: memory and disk stay bounded by a day of orders.
A redelivered order (same id) is counted once.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from core.dedup import OrderLike, recipient_key

DAY_MS = 86_400_000
HISTORY = b"hist:"  # + recipient key -> [(created_at, order id)], oldest first
EXPIRY = b"hexp:"  # + 8-byte big-endian forget-at ms + recipient key -> b""

_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(list[tuple[int, str]])


def history_keys(orders: Sequence[OrderLike], rkeys: list[bytes] | None = None) -> list[bytes]:
    rkeys = rkeys if rkeys is not None else [recipient_key(o) for o in orders]
    return list(dict.fromkeys(HISTORY + k for k in rkeys))


def _expiry_key(forget_at: int, rkey: bytes) -> bytes:
    return EXPIRY + max(0, forget_at).to_bytes(8, "big") + rkey


def due_bound(now: int) -> bytes:
    """Exclusive upper bound of the expiry keys due at ``now``."""
    return EXPIRY + (now + 1).to_bytes(8, "big")


def count_recent(
    orders: Sequence[OrderLike],
    held: dict[bytes, bytes | None],
    due: list[tuple[bytes, bytes]],
    window_ms: int = DAY_MS,
    rkeys: list[bytes] | None = None,
) -> tuple[list[int], list[tuple[bytes, bytes | None]]]:
    """Per order, the recipient's orders within ``window_ms`` up to it (itself included), and
    the store updates: histories written, expired recipients (``due`` rows) forgotten."""
    lists: dict[bytes, list[tuple[int, str]]] = {}
    before: dict[bytes, int] = {}  # rkey -> forget-at of the stored history
    counts: list[int] = []
    for i, order in enumerate(orders):
        rkey = rkeys[i] if rkeys is not None else recipient_key(order)
        entries = lists.get(rkey)
        if entries is None:
            raw = held.get(HISTORY + rkey)
            entries = lists[rkey] = [] if raw is None else _dec.decode(raw)
            if entries:
                before[rkey] = entries[-1][0] + window_ms
        if all(oid != order.id for _, oid in entries):
            entries.append((order.created_at, order.id))
            entries.sort()
        horizon = order.created_at - window_ms
        counts.append(sum(1 for t, _ in entries if horizon < t <= order.created_at))
    updates: dict[bytes, bytes | None] = {}
    for key, _ in due:
        rkey = key[len(EXPIRY) + 8 :]
        if rkey not in lists:  # not touched by this batch: forget it
            updates[key] = None
            updates[HISTORY + rkey] = None
    for rkey, entries in lists.items():
        newest = entries[-1][0]
        entries[:] = [(t, oid) for t, oid in entries if t > newest - window_ms]
        updates[HISTORY + rkey] = _enc.encode(entries)
        forget_at = newest + window_ms
        if rkey in before and before[rkey] != forget_at:
            updates[_expiry_key(before[rkey], rkey)] = None
        updates[_expiry_key(forget_at, rkey)] = b""
    return counts, list(updates.items())
