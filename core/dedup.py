"""De-duplication: is this order new, a later copy of one we have, or suspiciously like one?

Two stages, each pure over a batch (an envelope of up to ~500 orders) plus what its
partition-local store held for that batch; the stage does one multi-get before and one
WriteBatch of the returned ``updates`` after (value ``None`` = delete). Nothing here does I/O.

Stage 1, exact (partition = global id = channel + channel order no), rule 1:
    the seen-id store maps a global id to the newest ``updated_at`` seen and the recipient key
    its first copy was routed by. A later copy with a newer ``updated_at`` is an ``update``; an
    equal or older one is a ``repeat`` (recorded, changes nothing). This memory lasts as long as
    orders do: there is no window on exact ids.

Stage 2, recipient (partition = :func:`recipient_key`), only for orders stage 1 found new:
    rule 2 (``duplicate``): same channel order no and same E.164 phone as an order of another
    channel; the order-no+phone index that answers it is exact-id memory too, kept as long as
    orders are (one small key per order with a phone).
    rule 3 (``suspected``): same recipient, amount (total + currency) and SKU multiset as a
    different order created within ``window_ms`` of it; held for review, never dropped.
    Rule 2 wins where both hold (a relayed copy matches the near-duplicate predicate too).

Stage 2 state is bounded: near-duplicate window entries age out by *event time*. The
partition's watermark (max ``created_at`` seen) is stored with the state, every recipient
window has one expiry-index key (``EXPIRY_PREFIX`` + big-endian ms + recipient key) at the
time its newest entry expires, and the stage passes the oldest index rows in, so pruning is a
short range scan, never a full one. A recipient who never returns is pruned all the same.

Redelivery (a worker crashed between sending its outputs and committing its store, or stage 1
re-sent a batch): each window entry stores its order's id and verdict, so an id seen again gets
the verdict it got the first time, never "duplicate of itself"; a batch replayed onto the
uncommitted store is recomputed from the same state and input, so it gets the same verdicts.

Late orders: an entry is remembered until the watermark has moved ``window_ms + grace_ms``
past the watermark at the entry's arrival (``LATE_GRACE_MS``, 10 min by default, also covers
stage 1 re-sending after a crash). An order created up to ``grace_ms`` behind the watermark is
therefore checked against everything it could match; an older one is checked against what is
still remembered: it may miss a near-duplicate whose first copy has been pruned, but it can
never be flagged falsely, and it is itself remembered for a full window after its arrival, so
a burst of late copies (a channel catching up after an outage) is still caught among itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import msgspec

from core.model import CanonicalOrder
from core.recipient_match import (
    HOLD_AT,
    Match,
    block_key,
    cannot_hold,
    compare,
    pack,
    phone_tail,
    who_of,
)
from ext import recipient_fingerprint, sku_multiset_fingerprint

__all__ = [
    "DEFAULT_WINDOW_MS",
    "EXPIRY_PREFIX",
    "LATE_GRACE_MS",
    "NEW",
    "RULE_EXACT_CHANNEL",
    "RULE_EXACT_CROSS_CHANNEL",
    "RULE_NEAR_DUPLICATE",
    "WATERMARK_KEY",
    "WINDOW_PREFIX",
    "DedupFacts",
    "DedupVerdict",
    "ExactOutcome",
    "RecipientOutcome",
    "cross_channel_duplicate",
    "dedup_facts",
    "exact_dedup",
    "exact_store_key",
    "expiry_scan_stop",
    "recipient_dedup",
    "recipient_key",
    "recipient_lookup_keys",
]

VerdictKind = Literal["new", "update", "repeat", "duplicate", "suspected"]

RULE_EXACT_CHANNEL = "exact_channel"  # same (channel, order no): update or repeat
RULE_EXACT_CROSS_CHANNEL = "exact_cross_channel"  # same order no + phone, other channel
RULE_NEAR_DUPLICATE = "near_duplicate"  # same recipient, amount and SKUs within the window

DEFAULT_WINDOW_MS = 180_000  # issue 5: a double submit lands within 3 minutes
LATE_GRACE_MS = 600_000  # how late (behind the watermark) an order is still fully checked
MAX_FUTURE_SKEW_MS = 3_600_000  # created_at beyond now + this does not move the watermark
# entries kept per block + amount + SKUs: a flash sale of one item at one price in one city puts
# thousands of orders in one window key; comparing each new one with the newest few hundred
# keeps the stage's cost per order bounded (a copy arrives within minutes, so it is among them)
MAX_WINDOW_ENTRIES = 256


class DedupVerdict(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """What dedup decided about one order; travels with it to the order stage.

    ``rule`` is "" for ``new``, ``exact_channel`` for ``update``/``repeat`` (``original_id`` is
    then the order's own global id), ``exact_cross_channel`` for ``duplicate`` and
    ``near_duplicate`` for ``suspected`` (``original_id`` = the first order's global id).
    """

    kind: VerdictKind
    rule: str = ""
    original_id: str = ""
    score: int = 0  # near_duplicate: the recipient match score (core.recipient_match)
    agreed: tuple[str, ...] = ()  # near_duplicate: what counted for it, "field:outcome"


NEW = DedupVerdict("new")


# WHO_NOTE: the recipient travels and is stored as the msgpack of its packed string
# (``core.recipient_match.pack``), kept as ``msgspec.Raw``: an envelope or a window list is
# decoded and re-encoded without building the string, which is needed only to compare, and
# most orders are never compared.
_str_enc = msgspec.msgpack.Encoder()
_str_dec = msgspec.msgpack.Decoder(str)
NO_WHO = msgspec.Raw(_str_enc.encode(""))
_NOBODY = b"\x1f\x1f\x1f"  # a packed recipient with no name, phone or masked phone


def _candidates(entries: list[WindowEntry], tail: int) -> list[WindowEntry]:
    """The entries an order can match at all. Two phones whose last visible digits differ
    disagree (-10: never held), and every phone rendering shows its last digit, so in a busy
    key (a flash sale: one item, one price, one city) an order skips nine in ten entries
    without decoding their recipients."""
    if tail < 0 or len(entries) < 8:
        return entries
    return [e for e in entries if e.tail == tail or e.tail < 0]


def _shows_someone(who: msgspec.Raw) -> bool:
    """``comparable`` on the raw msgpack string, without decoding it (every new order asks)."""
    raw = bytes(who)
    if not raw:
        return False
    head = raw[0]
    start = 1 if 0xA0 <= head <= 0xBF else {0xD9: 2, 0xDA: 3, 0xDB: 5}.get(head, 1)
    return len(raw) > start and not raw.startswith(_NOBODY, start)


class DedupFacts(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The few facts of an order both dedup stages read, computed once by the normaliser.

    The dedup stages carry the canonical order itself through as encoded bytes (they never look
    inside it), so an order is decoded once, by the order stage, instead of three times. Every
    function here accepts these or a full :class:`CanonicalOrder`.
    """

    id: str
    channel_order_no: str
    created_at: int
    updated_at: int
    currency: str
    total: int
    phone: str  # E.164, "" when masked or absent
    rkey: bytes  # recipient_key(order): who, for the recipient history
    items: int  # sku_multiset_fingerprint of the lines
    block: bytes = b""  # route_key: block_key(recipient) + amount + SKUs, computed once
    who: msgspec.Raw = NO_WHO  # the recipient as rendered: see WHO_NOTE
    tail: int = -1  # last visible digit of its phone (full or masked), -1 = none: see _candidates


def dedup_facts(order: CanonicalOrder) -> DedupFacts:
    who = who_of(order.recipient)
    items = _items_fp(order)
    return DedupFacts(
        order.id,
        order.channel_order_no,
        order.created_at,
        order.updated_at,
        order.currency,
        order.total,
        order.recipient.phone,
        recipient_key(order),
        items,
        _route(block_key(who), order.currency, order.total, items),
        msgspec.Raw(_str_enc.encode(pack(who))),
        phone_tail(who),
    )


OrderLike = CanonicalOrder | DedupFacts


def _facts(orders: Sequence[OrderLike]) -> list[DedupFacts]:
    return [o if isinstance(o, DedupFacts) else dedup_facts(o) for o in orders]


def cross_channel_duplicate(original_id: str) -> DedupVerdict:
    return DedupVerdict("duplicate", RULE_EXACT_CROSS_CHANNEL, original_id)


# ------------------------------------------------------------------------------ recipient key


def recipient_key(order: OrderLike) -> bytes:
    """Partition key of the recipient stage: who the order ships to.

    The E.164 phone when the channel gave one (unique per person, stable across channels);
    otherwise ``b"h:"`` + a hex fingerprint of the normalised name, address, country, region,
    city, district, postcode and the visible digits of a masked phone. Masking channels render
    the same customer identically every time, so the fingerprint recognises them; it is never
    compared with a phone key (two renderings of one person may land in two partitions, which
    only costs a missed near-duplicate between a masked and an unmasked copy).
    """
    if isinstance(order, DedupFacts):
        return order.rkey
    r = order.recipient
    if r.phone:
        return r.phone.encode()
    fp = recipient_fingerprint(
        (r.name, r.address, r.country, r.region, r.city, r.district, r.postcode, r.phone_masked)
    )
    return b"h:%016x" % fp


def route_key(order: DedupFacts) -> bytes:
    """The recipient stage's partition key for a new order: its block (country + city) plus
    its amount and SKU multiset, the exact part of the near-duplicate predicate (computed once,
    by :func:`dedup_facts`).

    Every rendering of one purchase produces it (``core.recipient_match``), so the copies meet
    in one partition and in one window key; and it spreads orders evenly over partitions even
    when a few cities carry most of them (measured on the flood's generator: the busiest of 2
    partitions gets 1.01x its share, against 1.49x when keyed by the city alone). Rule 2's
    copies (same order no and phone) are one purchase, so they share it too.
    """
    return order.block or _route(order.rkey, order.currency, order.total, order.items)


def _route(block: bytes, currency: str, total: int, items: int) -> bytes:
    return (
        block
        + _amount_key(currency, total).to_bytes(8, "big")
        + (items & 0xFFFF_FFFF_FFFF_FFFF).to_bytes(8, "big")
    )


# ------------------------------------------------------------------------------ stage 1: exact


class SeenOrder(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Seen-id store value: newest channel ``updated_at``, where the first copy was routed, and
    which accepted copies were the first and the newest (so a replay of either is told apart
    from a repeat: it must take the same path and get the same verdict as the first time)."""

    updated_at: int
    route_key: bytes
    first_ref: str = ""
    last_ref: str = ""


class ExactOutcome(msgspec.Struct):
    verdicts: list[DedupVerdict]  # new | update | repeat, one per order
    route_keys: list[bytes]  # recipient partition key to send each order on with
    updates: list[tuple[bytes, bytes | None]]  # for the seen-id store


_seen_enc = msgspec.msgpack.Encoder()
_seen_dec = msgspec.msgpack.Decoder(SeenOrder)


def exact_store_key(order: OrderLike) -> bytes:
    """Seen-id store key: the global id (deterministic from channel + channel order no)."""
    return order.id.encode()


def exact_dedup(
    orders: Sequence[OrderLike],
    held: Sequence[bytes | None],
    refs: Sequence[str] | None = None,
) -> ExactOutcome:
    """Rule 1 over a batch; ``held[i]`` is the store value under ``exact_store_key(orders[i])``.

    A later copy keeps the route key of the first, so it follows the first copy through the
    same recipient partition and can never overtake it, even if the buyer edited the address.
    The same id twice in one batch is handled in order (the second is an update or a repeat).

    ``refs[i]`` names the accepted copy (``copy_ref``). The first copy replayed (its outputs
    were lost with a broker, and the journal sends it again) is ``new`` again and goes through
    the recipient stage again, which answers it as the first time (a cross-channel duplicate or
    a suspected near-duplicate stays one); the newest update replayed is an ``update`` again.
    """
    if len(held) != len(orders):
        raise ValueError(f"{len(orders)} orders but {len(held)} held values")
    seen: dict[str, SeenOrder] = {}
    changed: dict[str, SeenOrder] = {}
    verdicts: list[DedupVerdict] = []
    route_keys: list[bytes] = []
    copies = refs if refs is not None else [""] * len(orders)
    for order, raw, ref in zip(_facts(orders), held, copies, strict=True):
        oid = order.id
        prior = seen.get(oid)
        if prior is None and raw is not None:
            prior = _seen_dec.decode(raw)
        if prior is None:
            now = SeenOrder(order.updated_at, route_key(order), ref, ref)
            verdict = NEW
        elif ref and ref == prior.first_ref:
            now = prior
            verdict = NEW
        elif ref and ref == prior.last_ref:
            now = prior
            verdict = DedupVerdict("update", RULE_EXACT_CHANNEL, oid)
        elif order.updated_at > prior.updated_at:
            now = SeenOrder(order.updated_at, prior.route_key, prior.first_ref, ref)
            verdict = DedupVerdict("update", RULE_EXACT_CHANNEL, oid)
        else:
            now = prior
            verdict = DedupVerdict("repeat", RULE_EXACT_CHANNEL, oid)
        if now is not prior:
            changed[oid] = now
        seen[oid] = now
        verdicts.append(verdict)
        route_keys.append(now.route_key)
    updates: list[tuple[bytes, bytes | None]] = [
        (oid.encode(), _seen_enc.encode(s)) for oid, s in changed.items()
    ]
    return ExactOutcome(verdicts, route_keys, updates)


# -------------------------------------------------------------------------- stage 2: recipient

WATERMARK_KEY = b"m:watermark"  # the partition's event-time watermark, 8 bytes big-endian
WINDOW_PREFIX = b"w:"  # + recipient key -> the recipient's window entries, oldest first
EXPIRY_PREFIX = b"t:"  # + 8-byte big-endian expiry ms + recipient key -> entry count
CROSS_PREFIX = b"x:"  # + phone + 0x1f + channel order no -> first global id with them
_EXPIRY_AT = len(EXPIRY_PREFIX)
_EXPIRY_KEY_AT = _EXPIRY_AT + 8


class WindowEntry(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One order in a recipient's near-duplicate window, with the verdict it got."""

    id: str
    created_at: int
    amount: int  # the order's total (its currency is part of the window key)
    items: int  # sku_multiset_fingerprint of the lines
    expire_at: int  # when it is forgotten: wall clock in the service, else the watermark
    verdict: DedupVerdict
    who: msgspec.Raw = NO_WHO  # the recipient as rendered: see WHO_NOTE
    tail: int = -1  # last visible phone digit, -1 = none


class RecipientOutcome(msgspec.Struct):
    verdicts: list[DedupVerdict]  # new | duplicate | suspected, one per order
    updates: list[tuple[bytes, bytes | None]]  # for the recipient store, in write order
    pruned: int  # window entries forgotten because they aged out (or beyond the cap)
    uncomparable: int = 0  # new orders showing no name or phone (encrypted or absent)


_enc = msgspec.msgpack.Encoder()
_window_dec = msgspec.msgpack.Decoder(list[WindowEntry])
_int_dec = msgspec.msgpack.Decoder(int)


def _amount_key(currency: str, total: int) -> int:
    """Currency (3 bytes) and total (low 40 bits, ~1.1e12 minor units) in one 64-bit word."""
    cur = currency.encode()[:3].ljust(3, b"\0")
    return (int.from_bytes(cur, "big") << 40) | (total & 0xFF_FFFF_FFFF)


def _items_fp(order: CanonicalOrder) -> int:
    lines = order.lines
    return sku_multiset_fingerprint([ln.sku for ln in lines], [ln.quantity for ln in lines])


def _cross_key(order: DedupFacts) -> bytes | None:
    phone = order.phone
    if not phone:
        return None
    return CROSS_PREFIX + phone.encode() + b"\x1f" + order.channel_order_no.encode()


def _expiry_key(expire_at: int, rkey: bytes) -> bytes:
    return EXPIRY_PREFIX + max(expire_at, 0).to_bytes(8, "big") + rkey


def recipient_lookup_keys(
    orders: Sequence[OrderLike], rkeys: list[bytes] | None = None
) -> list[bytes]:
    """Every store key :func:`recipient_dedup` reads for this batch, each once, in order.

    ``rkeys``: the route keys the orders came by (:func:`route_key`), when the caller has them."""
    keys: dict[bytes, None] = {WATERMARK_KEY: None}
    facts = _facts(orders)
    rkeys = rkeys if rkeys is not None else [route_key(f) for f in facts]
    for order, rkey in zip(facts, rkeys, strict=True):
        keys[WINDOW_PREFIX + rkey] = None
        cross = _cross_key(order)
        if cross is not None:
            keys[cross] = None
    return list(keys)


def expiry_scan_stop(held: dict[bytes, bytes | None], now_ms: int | None = None) -> bytes:
    """Exclusive upper bound for the stage's expiry scan: rows past it are not due yet.

    Scanning ``[EXPIRY_PREFIX, expiry_scan_stop(held))`` instead of a fixed number of rows reads
    only what this batch can prune (rows due by the watermark before the batch; rows the batch's
    own orders make due are picked up by the next one), so a quiet partition costs one seek.
    """
    if now_ms is not None:
        return EXPIRY_PREFIX + (max(now_ms, -1) + 1).to_bytes(8, "big")
    raw = held.get(WATERMARK_KEY)
    watermark = int.from_bytes(raw, "big", signed=True) if raw else 0
    return EXPIRY_PREFIX + (max(watermark, -1) + 1).to_bytes(8, "big")


def recipient_dedup(
    orders: Sequence[OrderLike],
    held: dict[bytes, bytes | None],
    expiring: list[tuple[bytes, bytes]],
    window_ms: int = DEFAULT_WINDOW_MS,
    *,
    grace_ms: int = LATE_GRACE_MS,
    now_ms: int | None = None,
    rkeys: list[bytes] | None = None,
) -> RecipientOutcome:
    """Rules 2 and 3 over a batch of orders stage 1 found new (earlier records are "first").

    ``held`` holds the values of :func:`recipient_lookup_keys` (absent or None = not stored);
    ``expiring`` is ``store.scan(EXPIRY_PREFIX, limit)``, oldest first: the due rows among them
    are pruned (their windows deleted).

    ``now_ms`` (wall clock, what the service passes) also decides *when entries are forgotten*:
    ``window_ms + grace_ms`` of wall time after they arrived. Matching is always by event time
    (``created_at``), but retention by event time alone breaks when gateways lag differently:
    one channel's orders racing an hour ahead would push the watermark past another channel's
    entries before their double submits arrive (the flood bench's channel-grouped batches showed
    12 % of near-duplicates missed that way). Wall-clock retention keeps every entry for the same
    wall time, so memory is bounded by arrival rate x retention for a flood of any length.
    Without ``now_ms`` (pure tests, replays) the event-time watermark is the clock.
    """
    if window_ms < 0 or grace_ms < 0:
        raise ValueError("window_ms and grace_ms must be >= 0")
    raw_wm = held.get(WATERMARK_KEY)
    watermark0 = int.from_bytes(raw_wm, "big", signed=True) if raw_wm else 0
    watermark = watermark0
    retain = window_ms + grace_ms
    clock0 = watermark0 if now_ms is None else now_ms  # what "now" is for forgetting
    future_cap = None if now_ms is None else now_ms + MAX_FUTURE_SKEW_MS

    orders = _facts(orders)
    n = len(orders)
    verdicts: list[DedupVerdict | None] = [None] * n
    windows: dict[bytes, list[WindowEntry]] = {}  # recipient key -> live entries (+ this batch)
    held_expiry: dict[bytes, int | None] = {}  # recipient key -> its expiry row's time, if any
    held_count: dict[bytes, int] = {}  # recipient key -> entries stored before this batch
    dropped = 0
    uncomparable = 0
    known_ids: dict[bytes, dict[str, DedupVerdict]] = {}  # window key -> remembered verdicts
    first_of: dict[str, int] = {}  # id -> index of its first copy in this batch
    same_as: list[tuple[int, int]] = []  # (index, index of its first copy)
    crossed: dict[bytes, str] = {}  # order-no+phone keys first seen in this batch
    fresh: list[int] = []

    given = rkeys
    wkeys: list[bytes] = []
    for i, order in enumerate(orders):
        wkey = given[i] if given is not None else route_key(order)
        wkeys.append(wkey)
        entries = windows.get(wkey)
        if entries is None:
            raw = held.get(WINDOW_PREFIX + wkey)
            stored = _window_dec.decode(raw) if raw else []
            held_expiry[wkey] = max(e.expire_at for e in stored) if stored else None
            held_count[wkey] = len(stored)
            # what had aged out before this batch is forgotten even if not yet pruned, so a
            # verdict never depends on how far pruning has got
            entries = [e for e in stored if e.expire_at > clock0]
            windows[wkey] = entries
        oid = order.id
        if oid in first_of:
            same_as.append((i, first_of[oid]))
            continue
        first_of[oid] = i
        known = known_ids.get(wkey)
        if known is None:
            known = known_ids[wkey] = {e.id: e.verdict for e in entries}
        remembered = known.get(oid)
        if remembered is not None:
            verdicts[i] = remembered
            continue
        cross = _cross_key(order)
        if cross is not None:
            first = crossed.get(cross)
            if first is None:
                raw_first = held.get(cross)
                first = raw_first.decode() if raw_first else None
            if first is None:
                crossed[cross] = oid
            elif first != oid:
                verdicts[i] = cross_channel_duplicate(first)
        fresh.append(i)

    # Rule 3: compare with every remembered or earlier order of the same block, amount and
    # SKUs created within the window; the best score at HOLD_AT or above holds the order
    # (ties: the earliest, the first copy).
    added: dict[bytes, int] = {}  # window key -> entries this batch appended
    for i in fresh:
        order = orders[i]
        who_raw = order.who
        if not _shows_someone(who_raw):
            uncomparable += 1
        wkey = wkeys[i]
        entries = windows[wkey]
        verdict = verdicts[i]
        if verdict is None:
            best: Match | None = None
            best_id = ""
            who = ""
            for e in _candidates(entries, order.tail):
                if abs(e.created_at - order.created_at) > window_ms or e.id == order.id:
                    continue
                who = who or _str_dec.decode(who_raw)  # most orders have no candidate
                other = _str_dec.decode(e.who)
                if cannot_hold(who, other):
                    continue
                m = compare(who, other)
                if m.score >= HOLD_AT and (best is None or m.score > best.score):
                    best, best_id = m, e.id
            verdict = NEW
            if best is not None:
                verdict = DedupVerdict(
                    "suspected", RULE_NEAR_DUPLICATE, best_id, best.score, best.agreed
                )
            verdicts[i] = verdict
        t = order.created_at if future_cap is None else min(order.created_at, future_cap)
        if t > watermark:
            watermark = t
        forget_at = (watermark if now_ms is None else now_ms) + retain
        entries.append(
            WindowEntry(
                order.id,
                order.created_at,
                order.total,
                order.items,
                forget_at,
                verdict,
                who_raw,
                order.tail,
            )
        )
        added[wkey] = added.get(wkey, 0) + 1
    for i, first in same_as:
        verdicts[i] = verdicts[first]

    updates: dict[bytes, bytes | None] = {}
    if watermark != watermark0:
        updates[WATERMARK_KEY] = watermark.to_bytes(8, "big", signed=True)
    for cross, oid in crossed.items():
        updates[cross] = oid.encode()
    clock = watermark if now_ms is None else now_ms
    for rkey, entries in windows.items():
        live = [e for e in entries if e.expire_at > clock][-MAX_WINDOW_ENTRIES:]
        stored_count = held_count[rkey]
        if rkey not in added and len(live) == stored_count:
            continue  # only read (a redelivered order) and nothing aged out: nothing to write
        dropped += stored_count + added.get(rkey, 0) - len(live)
        old_expiry = held_expiry[rkey]
        if old_expiry is not None:
            updates[_expiry_key(old_expiry, rkey)] = None
        if live:
            updates[WINDOW_PREFIX + rkey] = _enc.encode(live)
            updates[_expiry_key(max(e.expire_at for e in live), rkey)] = _enc.encode(len(live))
        else:
            updates[WINDOW_PREFIX + rkey] = None

    for key, value in expiring:
        if not key.startswith(EXPIRY_PREFIX):
            break
        if int.from_bytes(key[_EXPIRY_AT:_EXPIRY_KEY_AT], "big") > clock:
            break  # rows are sorted by expiry: nothing further is due
        rkey = key[_EXPIRY_KEY_AT:]
        if rkey in windows:
            continue  # read by this batch: rewritten (or deleted) above
        updates[key] = None
        updates[WINDOW_PREFIX + rkey] = None
        dropped += _int_dec.decode(value) if value else 0

    return RecipientOutcome(
        [v if v is not None else NEW for v in verdicts],
        list(updates.items()),
        dropped,
        uncomparable,
    )
