"""Stock and the reservation ledger of one SKU partition: pure functions, no I/O.

The reserve stage is partitioned by SKU, so one worker is the only writer of a SKU's stock and
its reservations: a batch is granted or refused line by line without locks. Per batch the stage
does one multi-get of ``inventory_lookup_keys``, calls ``apply_batch`` and writes the returned
updates in one WriteBatch (value None = delete).

Invariant, for every (SKU, warehouse) after every batch: ``reserved <= on_hand - safety``, i.e.
``available >= 0``; the safety stock is never sold. Everything that could break it is refused
with a reason that names the numbers, including a downward correction or a safety raise (the
WMS or the operator must release or cancel first: the invariant is promised "always", and a
silently accepted oversell would be invisible until a parcel cannot be packed).

Decisions, each covered by a test:
- the stock of a SKU is ONE record holding all its warehouses (``stock_key(sku)``), so a release
  or deduct that does not know its warehouse still needs no second read;
- a reservation record is kept per (order id, SKU) after it ends (released / deducted /
  refused), so a redelivered reserve never reserves twice: it gets the original outcome back
  while the reservation lives (``granted`` / ``refused``), ``unchanged`` once it has ended;
- a release of a line never reserved changes no stock but records a tombstone, so a reserve
  arriving late (replay after a crash) for a cancelled order is not granted;
- release after deduct is refused (a shipped line comes back as a stock receipt), deduct after
  release is refused, a repeated release / deduct returns the same outcome;
- a line is never split across warehouses: the first candidate able to take the whole quantity
  grants it, the others are the fallback, and the reason says which were skipped and why;
- within a batch, stock adjustments are applied before reservation requests (a receipt and the
  orders waiting for it in one envelope should meet);
- per-channel holds (e.g. 20 units held for the live stream) are a preference, never a promise:
  other channels cannot use held units, the holding channel uses its hold first, and a hold
  larger than the free stock simply leaves the others nothing: it can never cause an oversell.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

import msgspec

# ----------------------------------------------------------------------------------- messages

ReserveOp = Literal["reserve", "release", "deduct"]
Outcome = Literal["granted", "refused", "released", "deducted", "unchanged"]
UntrackedPolicy = Literal["refuse", "allow"]
AdjustmentOp = Literal["set", "receipt", "correction", "safety", "alert_at", "hold"]


class ReserveRequest(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One order line's request to the SKU partition; idempotent on (order_id, sku).

    ``warehouses`` are the routing candidates in preference order (only read by ``reserve``);
    ``ttl_ms`` > 0 makes the reservation expire ``ttl_ms`` after ``requested_at`` (or after the
    batch time when ``requested_at`` is 0). ``quantity`` is only read by ``reserve``: a release
    or a deduct always covers the whole reservation.
    """

    op: ReserveOp
    order_id: str
    sku: str
    quantity: int
    warehouses: list[str] = []
    channel: str = ""
    reason: str = ""
    requested_at: int = 0  # epoch ms
    ttl_ms: int = 0  # 0 = no TTL
    attempt: int = 0  # the order's reservation attempt: a retry after out of stock starts anew


class StockAdjustment(msgspec.Struct, frozen=True, kw_only=True):
    """A stock change from HTTP (PUT stock, receipts, corrections) or the WMS ``stock.updates``.

    ``op``: ``set`` on_hand := quantity; ``receipt`` on_hand += quantity (> 0); ``correction``
    on_hand += quantity (signed, != 0); ``safety`` safety := quantity; ``alert_at`` low-stock
    alert threshold on available := quantity; ``hold`` units held for ``channel`` := quantity.
    ``adjustment_id`` (when given) makes a WMS redelivery a no-op.
    """

    sku: str
    warehouse: str
    op: AdjustmentOp
    quantity: int
    channel: str = ""
    reason: str = ""
    actor: str = ""
    at: int = 0
    adjustment_id: str = ""


class ReservationResult(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The partition's answer to one request; goes to ``reservations.results`` keyed by order."""

    order_id: str
    sku: str
    op: str
    outcome: Outcome
    warehouse: str
    quantity: int
    reason: str
    at: int
    attempt: int = 0  # echoes the request's, so a saga ignores answers to an earlier attempt


class AdjustmentResult(msgspec.Struct, frozen=True, kw_only=True):
    """Applied, refused (``field`` + ``reason``, for the HTTP 4xx body) or duplicate."""

    sku: str
    warehouse: str
    op: str
    adjustment_id: str
    outcome: Literal["applied", "refused", "duplicate"]
    field: str = ""
    reason: str = ""
    on_hand: int = 0
    reserved: int = 0
    safety: int = 0
    available: int = 0


# -------------------------------------------------------------------------------------- state


class StockLevel(msgspec.Struct, array_like=True, gc=False):
    """One SKU in one warehouse. ``available`` is what a new reservation may take."""

    warehouse: str
    on_hand: int = 0
    reserved: int = 0
    safety: int = 0
    alert_at: int = 0  # low stock when available <= alert_at (0: when only safety stock is left)
    holds: dict[str, int] = {}  # channel -> units held for it
    hold_used: dict[str, int] = {}  # channel -> units of its hold currently reserved
    version: int = 0
    updated_at: int = 0

    @property
    def available(self) -> int:
        return self.on_hand - self.safety - self.reserved

    @property
    def low(self) -> bool:
        return self.available <= self.alert_at

    def available_for(self, channel: str) -> int:
        """Units a reservation of ``channel`` may take: the free pool plus its own hold."""
        free = self.available
        if not self.holds:
            return free
        held_for_others = 0
        for ch, units in self.holds.items():
            if ch != channel:
                held_for_others += max(0, units - self.hold_used.get(ch, 0))
        return max(0, free - held_for_others)


class SkuStock(msgspec.Struct, array_like=True, gc=False):
    """All warehouses of one SKU: one record, one key, one read per batch."""

    sku: str
    levels: dict[str, StockLevel] = {}


class Reservation(msgspec.Struct, array_like=True, gc=False):
    """The ledger entry of (order id, SKU); kept after it ends so redeliveries are recognised."""

    order_id: str
    sku: str
    state: Literal["granted", "refused", "released", "deducted"]
    warehouse: str
    quantity: int
    channel: str = ""
    from_hold: int = 0  # units taken from the channel's hold
    expires_at: int = 0  # 0 = no TTL
    granted_at: int = 0
    changed_at: int = 0
    reason: str = ""
    attempt: int = 0


class StockChange(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Event for ``stock.changes``: a (SKU, warehouse)'s level after a batch touched it.

    Coalesced per batch (a hot SKU gets one event per envelope, not one per line): subscribers
    want the current level; ``changes`` counts what the batch did and ``cause``/``order_id``
    name the last of it.
    """

    sku: str
    warehouse: str
    on_hand: int
    reserved: int
    safety: int
    available: int
    cause: str
    order_id: str
    at: int
    low_stock: bool
    changes: int = 1
    version: int = 0


class StockAlert(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """Available stock crossed down to the alert threshold during this batch."""

    sku: str
    warehouse: str
    available: int
    alert_at: int
    on_hand: int
    reserved: int
    safety: int
    at: int


class InventoryOutcome(msgspec.Struct, kw_only=True):
    results: list[ReservationResult]  # one per request, in request order
    adjustment_results: list[AdjustmentResult]  # one per adjustment, in order
    stock_changes: list[StockChange]
    alerts: list[StockAlert]
    updates: list[tuple[bytes, bytes | None]]  # for one WriteBatch; None = delete
    oversold: int  # (SKU, warehouse) pairs breaking the invariant after the batch: must be 0
    granted: int = 0
    refused: int = 0


# --------------------------------------------------------------------------------------- keys

STOCK_PREFIX = b"s:"
RESERVATION_PREFIX = b"r:"
ADJUSTMENT_PREFIX = b"a:"
TTL_PREFIX = b"t:"  # + 8-byte big-endian expiry ms + sku \x00 order id; value: TtlEntry
# + 8-byte big-endian ms the reservation ended + sku \x00 order id; value: its reservation key
ENDED_PREFIX = b"e:"
_SEP = b"\x00"


def stock_key(sku: str) -> bytes:
    return STOCK_PREFIX + sku.encode()


def reservation_key(order_id: str, sku: str) -> bytes:
    return RESERVATION_PREFIX + sku.encode() + _SEP + order_id.encode()


def adjustment_key(sku: str, adjustment_id: str) -> bytes:
    return ADJUSTMENT_PREFIX + sku.encode() + _SEP + adjustment_id.encode()


def _time_index_key(prefix: bytes, at: int, order_id: str, sku: str) -> bytes:
    """Time first, big-endian: a range scan of the prefix reads the index in time order."""
    return prefix + at.to_bytes(8, "big") + sku.encode() + _SEP + order_id.encode()


def ttl_key(expires_at: int, order_id: str, sku: str) -> bytes:
    return _time_index_key(TTL_PREFIX, expires_at, order_id, sku)


def ended_key(ended_at: int, order_id: str, sku: str) -> bytes:
    return _time_index_key(ENDED_PREFIX, ended_at, order_id, sku)


def partition_key(sku: str) -> bytes:
    """What requests and adjustments are partitioned by: all of a SKU's state is local."""
    return sku.encode()


class TtlEntry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    order_id: str
    sku: str
    quantity: int
    attempt: int = 0


_enc = msgspec.msgpack.Encoder()
_stock_dec = msgspec.msgpack.Decoder(SkuStock)
_rsv_dec = msgspec.msgpack.Decoder(Reservation)
_adj_dec = msgspec.msgpack.Decoder(AdjustmentResult)
_ttl_dec = msgspec.msgpack.Decoder(TtlEntry)


def decode_stock(value: bytes) -> SkuStock:
    return _stock_dec.decode(value)


def decode_reservation(value: bytes) -> Reservation:
    return _rsv_dec.decode(value)


def inventory_lookup_keys(
    requests: Sequence[ReserveRequest], adjustments: Sequence[StockAdjustment] = ()
) -> list[bytes]:
    """Every key ``apply_batch`` reads, deduplicated, for one multi-get."""
    keys: dict[bytes, None] = {}
    for adj in adjustments:
        keys[stock_key(adj.sku)] = None
        if adj.adjustment_id:
            keys[adjustment_key(adj.sku, adj.adjustment_id)] = None
    for req in requests:
        keys[stock_key(req.sku)] = None
        keys[reservation_key(req.order_id, req.sku)] = None
    return list(keys)


# ------------------------------------------------------------------------------------- batch


class _Batch:
    """Decoded state of one batch; dirty records are encoded once at the end."""

    __slots__ = (
        "at",
        "cause",
        "changes",
        "dirty",
        "held",
        "last_order",
        "rsv",
        "start_low",
        "stock",
    )

    def __init__(self, held: dict[bytes, bytes | None]) -> None:
        self.held = held
        self.stock: dict[bytes, SkuStock | None] = {}
        self.rsv: dict[bytes, Reservation | None] = {}
        self.dirty: dict[bytes, bytes | None] = {}  # key -> None (delete) or b"" (encode later)
        self.start_low: dict[tuple[str, str], bool] = {}
        self.changes: dict[tuple[str, str], int] = {}
        self.cause: dict[tuple[str, str], str] = {}
        self.last_order: dict[tuple[str, str], str] = {}

    def sku_stock(self, sku: str) -> SkuStock | None:
        key = stock_key(sku)
        try:
            return self.stock[key]
        except KeyError:
            raw = self.held[key]  # KeyError here = the caller did not read inventory_lookup_keys
            value = None if raw is None else _stock_dec.decode(raw)
            self.stock[key] = value
            return value

    def reservation(self, key: bytes) -> Reservation | None:
        try:
            return self.rsv[key]
        except KeyError:
            raw = self.held[key]
            value = None if raw is None else _rsv_dec.decode(raw)
            self.rsv[key] = value
            return value

    def touch(self, sku: str, level: StockLevel, cause: str, order_id: str, now: int) -> None:
        pair = (sku, level.warehouse)
        self.changes[pair] = self.changes.get(pair, 0) + 1
        self.cause[pair] = cause
        self.last_order[pair] = order_id
        level.version += 1
        level.updated_at = now
        self.dirty[stock_key(sku)] = b""

    def before(self, sku: str, level: StockLevel) -> None:
        """Remember whether a level was low before the batch first changed it."""
        self.start_low.setdefault((sku, level.warehouse), level.low if level.version else False)

    def put_reservation(self, key: bytes, rsv: Reservation) -> None:
        self.rsv[key] = rsv
        self.dirty[key] = b""


def _positive(quantity: int) -> str:
    if type(quantity) is not int or quantity <= 0:
        return f"quantity must be a positive integer, got {quantity!r}"
    return ""


def _result(
    req: ReserveRequest, outcome: Outcome, wh: str, qty: int, why: str, now: int
) -> ReservationResult:
    return ReservationResult(req.order_id, req.sku, req.op, outcome, wh, qty, why, now, req.attempt)


UNTRACKED = "untracked: no stock record, so not stock-managed"


def _reserve(
    b: _Batch, req: ReserveRequest, now: int, untracked: UntrackedPolicy = "refuse"
) -> ReservationResult:
    key = reservation_key(req.order_id, req.sku)
    held = b.reservation(key)
    retry = (
        held is not None and req.attempt > held.attempt and held.state in ("refused", "released")
    )
    if held is not None and not retry:
        if held.state in ("granted", "refused"):
            # redelivery: the same answer again, nothing reserved twice
            return _result(req, held.state, held.warehouse, held.quantity, held.reason, now)
        return _result(
            req,
            "unchanged",
            held.warehouse,
            held.quantity,
            f"reservation already {held.state}",
            now,
        )
    bad = _positive(req.quantity)
    if not bad and not req.warehouses:
        bad = "no candidate warehouse (routing gave none)"
    stock = b.sku_stock(req.sku)
    if not bad and stock is None:
        if untracked == "allow" and held is None:
            # nothing to oversell and nothing to hold: answered without a ledger row, so a
            # redelivery gets the same answer and a release / deduct has nothing to undo
            return _result(req, "granted", "", req.quantity, UNTRACKED, now)
        bad = f"no stock record for {req.sku} in any warehouse"
    grant: StockLevel | None = None
    skipped: list[str] = []
    if not bad:
        assert stock is not None
        for wh in req.warehouses:
            level = stock.levels.get(wh)
            if level is None:
                skipped.append(f"{wh}: no stock record")
                continue
            can = level.available_for(req.channel)
            if can >= req.quantity:
                grant = level
                break
            skipped.append(f"{wh}: available {can} < {req.quantity}")
        if grant is None and all(s.endswith("no stock record") for s in skipped):
            bad = f"no stock record for {req.sku} in {', '.join(req.warehouses)}"
        elif grant is None:
            bad = "out of stock: " + "; ".join(skipped)
    if grant is None:
        rsv = Reservation(
            req.order_id,
            req.sku,
            "refused",
            "",
            req.quantity,
            req.channel,
            changed_at=now,
            reason=bad,
            attempt=req.attempt,
        )
        b.put_reservation(key, rsv)
        return _result(req, "refused", "", req.quantity, bad, now)
    b.before(req.sku, grant)
    from_hold = 0
    if grant.holds and req.channel in grant.holds:
        own = max(0, grant.holds[req.channel] - grant.hold_used.get(req.channel, 0))
        from_hold = min(own, req.quantity)
        if from_hold:
            grant.hold_used = {
                **grant.hold_used,
                req.channel: grant.hold_used.get(req.channel, 0) + from_hold,
            }
    grant.reserved += req.quantity
    why = grant.warehouse if not skipped else f"{grant.warehouse} after {'; '.join(skipped)}"
    expires = (req.requested_at or now) + req.ttl_ms if req.ttl_ms > 0 else 0
    rsv = Reservation(
        req.order_id,
        req.sku,
        "granted",
        grant.warehouse,
        req.quantity,
        req.channel,
        from_hold,
        expires,
        now,
        now,
        why,
        req.attempt,
    )
    b.put_reservation(key, rsv)
    if expires:
        b.dirty[ttl_key(expires, req.order_id, req.sku)] = _enc.encode(
            TtlEntry(req.order_id, req.sku, req.quantity, req.attempt)
        )
    b.touch(req.sku, grant, "reserve", req.order_id, now)
    return _result(req, "granted", grant.warehouse, req.quantity, why, now)


def _end(b: _Batch, req: ReserveRequest, now: int) -> ReservationResult:
    """Release (cancel, refund, payment timeout, TTL) or deduct (shipment) a reservation."""
    key = reservation_key(req.order_id, req.sku)
    held = b.reservation(key)
    release = req.op == "release"
    done: Outcome = "released" if release else "deducted"
    if held is not None and req.attempt < held.attempt:
        why = f"request of attempt {req.attempt}; the reservation is attempt {held.attempt}"
        return _result(req, "unchanged", held.warehouse, 0, why, now)
    if held is None:
        if not release:
            return _result(req, "refused", "", 0, "no reservation to deduct", now)
        # tombstone: a reserve replayed after this cancel must not be granted
        b.put_reservation(
            key,
            Reservation(
                req.order_id,
                req.sku,
                "released",
                "",
                0,
                req.channel,
                changed_at=now,
                reason=req.reason or "released",
                attempt=req.attempt,
            ),
        )
        return _result(req, "unchanged", "", 0, "no reservation held; release recorded", now)
    if held.state == "refused":
        if release:
            return _result(req, "unchanged", "", 0, "reservation was refused; nothing held", now)
        return _result(
            req, "refused", "", held.quantity, "reservation was refused; nothing to deduct", now
        )
    if held.state == done:
        return _result(req, done, held.warehouse, held.quantity, held.reason, now)
    if held.state != "granted":
        what = (
            "shipped (deducted); a return is a stock receipt"
            if release
            else f"{held.state} ({held.reason})"
        )
        return _result(
            req, "refused", held.warehouse, held.quantity, f"reservation already {what}", now
        )
    stock = b.sku_stock(req.sku)
    level = None if stock is None else stock.levels.get(held.warehouse)
    if level is None:  # cannot happen while the ledger is consistent; audit() reports it
        return _result(req, "refused", held.warehouse, held.quantity, "stock record missing", now)
    b.before(req.sku, level)
    level.reserved -= held.quantity
    if held.from_hold:
        used = level.hold_used.get(held.channel, 0) - held.from_hold
        level.hold_used = {**level.hold_used, held.channel: max(0, used)}
    if not release:
        level.on_hand -= held.quantity
        if held.from_hold:  # the held units were sold to their channel: the hold is consumed
            level.holds = {
                **level.holds,
                held.channel: max(0, level.holds.get(held.channel, 0) - held.from_hold),
            }
    reason = req.reason or ("released" if release else "shipped")
    b.put_reservation(key, msgspec.structs.replace(held, state=done, changed_at=now, reason=reason))
    if held.expires_at:
        b.dirty[ttl_key(held.expires_at, held.order_id, held.sku)] = None
    b.touch(req.sku, level, req.op, req.order_id, now)
    return _result(req, done, held.warehouse, held.quantity, reason, now)


def _adjust(b: _Batch, adj: StockAdjustment, now: int) -> AdjustmentResult:
    def answer(
        outcome: Literal["applied", "refused"], field: str, reason: str, lv: StockLevel | None
    ) -> AdjustmentResult:
        res = AdjustmentResult(
            sku=adj.sku,
            warehouse=adj.warehouse,
            op=adj.op,
            adjustment_id=adj.adjustment_id,
            outcome=outcome,
            field=field,
            reason=reason,
            on_hand=lv.on_hand if lv else 0,
            reserved=lv.reserved if lv else 0,
            safety=lv.safety if lv else 0,
            available=lv.available if lv else 0,
        )
        if adj.adjustment_id:
            b.dirty[adjustment_key(adj.sku, adj.adjustment_id)] = _enc.encode(res)
        return res

    if adj.adjustment_id:
        raw = b.held[adjustment_key(adj.sku, adj.adjustment_id)]
        if raw is not None:
            first = _adj_dec.decode(raw)
            return msgspec.structs.replace(
                first, outcome="duplicate", reason=f"already {first.outcome}"
            )
    if not adj.sku:
        return answer("refused", "sku", "must not be empty", None)
    if not adj.warehouse:
        return answer("refused", "warehouse", "must not be empty", None)
    q = adj.quantity
    if type(q) is not int:
        return answer("refused", "quantity", f"must be an integer, got {q!r}", None)
    stock = b.sku_stock(adj.sku)
    level = None if stock is None else stock.levels.get(adj.warehouse)
    if level is None and adj.op == "correction":
        return answer(
            "refused", "warehouse", f"no stock record for {adj.sku} in {adj.warehouse}", None
        )
    new = level if level is not None else StockLevel(adj.warehouse)
    on_hand, safety = new.on_hand, new.safety
    if adj.op in ("set", "safety", "alert_at", "hold") and q < 0:
        return answer("refused", "quantity", f"must be >= 0 for {adj.op}, got {q}", level)
    if adj.op == "receipt" and q <= 0:
        return answer("refused", "quantity", f"a receipt must be > 0, got {q}", level)
    if adj.op == "correction" and q == 0:
        return answer("refused", "quantity", "a correction must not be 0", level)
    if adj.op == "hold" and not adj.channel:
        return answer("refused", "channel", "a hold names the channel it holds for", level)
    if adj.op == "set":
        on_hand = q
    elif adj.op in ("receipt", "correction"):
        on_hand += q
    elif adj.op == "safety":
        safety = q
    if on_hand < 0:
        return answer("refused", "quantity", f"on_hand would be {on_hand} (< 0)", level)
    if new.reserved > on_hand - safety:
        return answer(
            "refused",
            "quantity",
            f"would break reserved <= on_hand - safety: reserved {new.reserved} > "
            f"on_hand {on_hand} - safety {safety}; release or cancel reservations first",
            level,
        )
    if stock is None:
        stock = SkuStock(adj.sku, {})
        b.stock[stock_key(adj.sku)] = stock
    if level is None:
        stock.levels[adj.warehouse] = new
    b.before(adj.sku, new)
    new.on_hand, new.safety = on_hand, safety
    if adj.op == "alert_at":
        new.alert_at = q
    elif adj.op == "hold":
        new.holds = {**new.holds, adj.channel: q}
    b.touch(adj.sku, new, adj.op, "", now)
    return answer("applied", "", adj.reason, new)


def apply_batch(
    requests: Sequence[ReserveRequest],
    adjustments: Sequence[StockAdjustment],
    held: dict[bytes, bytes | None],
    now: int,
    untracked: UntrackedPolicy = "refuse",
) -> InventoryOutcome:
    """Apply one batch of a SKU partition: adjustments first, then requests in order.

    ``untracked``: what a reserve of a SKU with no stock record in any warehouse gets:
    ``refuse`` (the order goes out of stock) or ``allow`` (granted as not stock-managed, for
    merchants who track only some SKUs here; such a line never touches a stock level).

    ``held`` maps every key of ``inventory_lookup_keys(requests, adjustments)`` to its stored
    value (None when absent); a key missing from it raises KeyError (a stage bug, not data).
    """
    b = _Batch(held)
    adjustment_results = [_adjust(b, adj, now) for adj in adjustments]
    results: list[ReservationResult] = []
    granted = refused = 0
    for req in requests:
        if req.op == "reserve":
            res = _reserve(b, req, now, untracked)
            if res.outcome == "granted":
                granted += 1
            elif res.outcome == "refused":
                refused += 1
        else:
            res = _end(b, req, now)
        results.append(res)

    updates: list[tuple[bytes, bytes | None]] = []
    for key, value in b.dirty.items():
        if value != b"":
            updates.append((key, value))
        elif key.startswith(STOCK_PREFIX):
            updates.append((key, _enc.encode(b.stock[key])))
        else:
            rsv = b.rsv[key]
            assert rsv is not None
            updates.append((key, _enc.encode(rsv)))
            if rsv.state != "granted":  # ended: index it for the ledger's retention
                updates.append((ended_key(now, rsv.order_id, rsv.sku), key))

    changes: list[StockChange] = []
    alerts: list[StockAlert] = []
    oversold = 0
    for (sku, wh), n in b.changes.items():
        stock = b.stock[stock_key(sku)]
        assert stock is not None
        lv = stock.levels[wh]
        if lv.available < 0:
            oversold += 1
        low = lv.low
        changes.append(
            StockChange(
                sku=sku,
                warehouse=wh,
                on_hand=lv.on_hand,
                reserved=lv.reserved,
                safety=lv.safety,
                available=lv.available,
                cause=b.cause[(sku, wh)],
                order_id=b.last_order[(sku, wh)],
                at=now,
                low_stock=low,
                changes=n,
                version=lv.version,
            )
        )
        if low and not b.start_low.get((sku, wh), False):
            alerts.append(
                StockAlert(
                    sku=sku,
                    warehouse=wh,
                    available=lv.available,
                    alert_at=lv.alert_at,
                    on_hand=lv.on_hand,
                    reserved=lv.reserved,
                    safety=lv.safety,
                    at=now,
                )
            )
    return InventoryOutcome(
        results=results,
        adjustment_results=adjustment_results,
        stock_changes=changes,
        alerts=alerts,
        updates=updates,
        oversold=oversold,
        granted=granted,
        refused=refused,
    )


# ------------------------------------------------------------------------------------- timers


def expired(rows: Iterable[tuple[bytes, bytes]], now: int) -> list[ReserveRequest]:
    """Release requests for reservations whose TTL has passed.

    ``rows`` come from an ascending scan of ``TTL_PREFIX`` (big-endian ms, so oldest first);
    the scan can stop at the first row not yet due. ``apply_batch`` deletes a TTL row when the
    reservation ends, so a row seen twice (timer fired before the commit) releases nothing twice.
    """
    out: list[ReserveRequest] = []
    start = len(TTL_PREFIX)
    for key, value in rows:
        if not key.startswith(TTL_PREFIX):
            continue
        due = int.from_bytes(key[start : start + 8], "big")
        if due > now:
            break
        entry = _ttl_dec.decode(value)
        out.append(
            ReserveRequest(
                "release",
                entry.order_id,
                entry.sku,
                entry.quantity,
                [],
                reason="ttl_expired",
                requested_at=due,
                attempt=entry.attempt,
            )
        )
    return out


def purgeable(
    index_rows: Iterable[tuple[bytes, bytes]],
    ledger: dict[bytes, bytes | None],
    cutoff: int,
) -> list[tuple[bytes, bytes | None]]:
    """Deletes for ledger rows that ended at or before ``cutoff`` and stayed ended.

    The ledger keeps ended reservations (released, deducted, refused) so that a redelivered
    request is recognised; past the retention no request can still be redelivered, and keeping
    them would grow the SKU partitions with every order ever placed. ``index_rows`` come from an
    ascending scan of ``ENDED_PREFIX`` (the scan can stop at the first row after ``cutoff``);
    ``ledger`` maps each row's reservation key to its current value. A reservation granted again
    since (a new attempt) is kept, and its index row goes: it is indexed anew when it ends.
    """
    out: list[tuple[bytes, bytes | None]] = []
    start = len(ENDED_PREFIX)
    for key, rkey in index_rows:
        if int.from_bytes(key[start : start + 8], "big") > cutoff:
            break
        out.append((key, None))
        raw = ledger.get(rkey)
        if raw is None:
            continue
        rsv = _rsv_dec.decode(raw)
        if rsv.state != "granted" and rsv.changed_at <= cutoff:
            out.append((rkey, None))
    return out


# -------------------------------------------------------------------------------------- audit


def audit(
    stock_rows: Iterable[tuple[bytes, bytes]], reservation_rows: Iterable[tuple[bytes, bytes]]
) -> list[str]:
    """Recompute every level's reserved (and hold use) from the ledger; [] when consistent.

    Run over a partition's ``STOCK_PREFIX`` and ``RESERVATION_PREFIX`` scans; each discrepancy
    is one line naming the SKU, the warehouse and both numbers.
    """
    reserved: dict[tuple[str, str], int] = {}
    hold_used: dict[tuple[str, str, str], int] = {}
    problems: list[str] = []
    for _key, raw in reservation_rows:
        rsv = _rsv_dec.decode(raw)
        if rsv.state != "granted":
            continue
        pair = (rsv.sku, rsv.warehouse)
        reserved[pair] = reserved.get(pair, 0) + rsv.quantity
        if rsv.from_hold:
            k = (rsv.sku, rsv.warehouse, rsv.channel)
            hold_used[k] = hold_used.get(k, 0) + rsv.from_hold
    seen: set[tuple[str, str]] = set()
    for _key, raw in stock_rows:
        stock = _stock_dec.decode(raw)
        for wh, lv in stock.levels.items():
            pair = (stock.sku, wh)
            seen.add(pair)
            expect = reserved.get(pair, 0)
            where = f"{stock.sku}@{wh}"
            if lv.reserved != expect:
                problems.append(
                    f"{where}: reserved {lv.reserved} but live reservations sum to {expect}"
                )
            if lv.reserved > lv.on_hand - lv.safety:
                problems.append(
                    f"{where}: oversold: reserved {lv.reserved} > "
                    f"on_hand {lv.on_hand} - safety {lv.safety}"
                )
            if lv.on_hand < 0 or lv.safety < 0:
                problems.append(f"{where}: negative on_hand {lv.on_hand} or safety {lv.safety}")
            for ch in set(lv.hold_used) | {c for (s, w, c) in hold_used if (s, w) == pair}:
                used, want = lv.hold_used.get(ch, 0), hold_used.get((stock.sku, wh, ch), 0)
                if used != want:
                    problems.append(
                        f"{where}: hold of {ch!r} used {used} but reservations say {want}"
                    )
    for pair, qty in reserved.items():
        if pair not in seen:
            problems.append(f"{pair[0]}@{pair[1]}: {qty} reserved with no stock record")
    return problems
