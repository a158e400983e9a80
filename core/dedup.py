"""De-duplication: is this order new, a later copy of one we have, or suspiciously like one?

Two stages, each pure over a batch (an envelope of up to ~500 orders) plus what its
partition-local store held for that batch; the stage does one multi-get before and one
WriteBatch of the returned ``updates`` after (value ``None`` = delete). Nothing here does I/O.

Stage 1, exact (partition = global id = channel + channel order no), rule 1:
    the seen-id store maps a global id to the newest ``updated_at`` seen and the recipient key
    its first copy was routed by. A later copy with a newer ``updated_at`` is an ``update``; an
    equal or older one is a ``repeat`` (recorded, changes nothing). This memory lasts as long as
    orders do: there is no window on exact ids.

Stage 2, recipient (partition = :func:`route_key`), only for orders stage 1 found new:
    rule 2 (``duplicate``): same channel order no and same E.164 phone as an order of another
    channel; the order-no+phone index that answers it is exact-id memory too, kept as long as
    orders are (one small key per order with a phone).
    rule 3 (``suspected``): same recipient, amount (total + currency) and SKU multiset as a
    different order created within ``window_ms`` of it; held for review, never dropped.
    Rule 2 wins where both hold (a relayed copy matches the near-duplicate predicate too).

Stage 2 state is bounded: near-duplicate window entries are kept ``window_ms + grace_ms``
(wall time in the service, else event time: the partition's watermark, max ``created_at`` seen,
stored with the state). Entries are stored under the time bucket they were written in, buckets
as wide as that retention, so only two buckets can hold live entries and everything older goes
in one range delete when the clock enters a new bucket: no per-key expiry index, no scan. A
recipient who never returns is forgotten all the same.

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
    "DELETE_RANGE",
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
    "recipient_dedup",
    "recipient_key",
    "recipient_lookup_keys",
    "window_bucket",
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
WINDOW_PREFIX = b"w:"  # + bucket (8 bytes) + route key -> entries written in that bucket
BUCKETS_KEY = b"m:wbuckets"  # WindowBuckets: which buckets are kept, entries in each
# what stores written before buckets held (window keys by route key alone, an expiry index, and
# the 24 h histories the history stage keeps now): deleted once, by the first batch on such a
# store (bucket keys start with a zero byte)
_LEGACY = (
    (WINDOW_PREFIX + b"\x01", b"w;"),
    (b"t:", b"t;"),
    (b"hist:", b"hist;"),
    (b"hexp:", b"hexp;"),
)
CROSS_PREFIX = b"x:"  # + phone + 0x1f + channel order no -> first global id with them
# Store update convention beside "value None = delete": the update (DELETE_RANGE + lo, hi)
# deletes every key in [lo, hi) (one RocksDB range tombstone, however many keys it covers).
DELETE_RANGE = b"\x00range:"


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


class WindowBuckets(msgspec.Struct, array_like=True):
    """The window buckets not yet deleted, and how many entries each stores (what its
    deletion prunes: the metric of forgotten entries, without reading them)."""

    kept: int  # the oldest bucket not yet deleted
    counts: dict[int, int]


class RecipientOutcome(msgspec.Struct):
    verdicts: list[DedupVerdict]  # new | duplicate | suspected, one per order
    updates: list[tuple[bytes, bytes | None]]  # for the recipient store, in write order
    pruned: int  # window entries forgotten because they aged out (or beyond the cap)
    uncomparable: int = 0  # new orders showing no name or phone (encrypted or absent)


_enc = msgspec.msgpack.Encoder()
_window_dec = msgspec.msgpack.Decoder(list[WindowEntry])
_buckets_dec = msgspec.msgpack.Decoder(WindowBuckets)


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


def _b8(bucket: int) -> bytes:
    return (bucket if bucket > 0 else 0).to_bytes(8, "big")


def window_bucket(clock: int, window_ms: int, grace_ms: int) -> int:
    """The window bucket ``clock`` falls in: buckets are ``window_ms + grace_ms`` wide, the
    time an entry is kept, so at any clock only its own bucket and the one before hold live
    entries (an entry written in bucket b is forgotten before bucket b + 2 begins)."""
    width = window_ms + grace_ms
    return (clock if clock > 0 else 0) // (width if width > 0 else 1)


def recipient_lookup_keys(
    orders: Sequence[OrderLike],
    rkeys: list[bytes] | None = None,
    *,
    clock: int,
    window_ms: int = DEFAULT_WINDOW_MS,
    grace_ms: int = LATE_GRACE_MS,
) -> list[bytes]:
    """Every store key :func:`recipient_dedup` reads for this batch, each once, in order.

    ``clock``: the ``now_ms`` the batch will be given (the service's wall clock), or without
    one the stored watermark (read it first: :data:`WATERMARK_KEY`). ``rkeys``: the route keys
    the orders came by (:func:`route_key`), when the caller has them."""
    cur = window_bucket(clock, window_ms, grace_ms)
    now_b, prev_b = _b8(cur), _b8(cur - 1)
    keys: dict[bytes, None] = {
        WATERMARK_KEY: None,
        BUCKETS_KEY: None,
    }
    facts = _facts(orders)
    rkeys = rkeys if rkeys is not None else [route_key(f) for f in facts]
    for order, rkey in zip(facts, rkeys, strict=True):
        keys[WINDOW_PREFIX + prev_b + rkey] = None
        keys[WINDOW_PREFIX + now_b + rkey] = None
        cross = _cross_key(order)
        if cross is not None:
            keys[cross] = None
    return list(keys)


def recipient_dedup(
    orders: Sequence[OrderLike],
    held: dict[bytes, bytes | None],
    window_ms: int = DEFAULT_WINDOW_MS,
    *,
    grace_ms: int = LATE_GRACE_MS,
    now_ms: int | None = None,
    rkeys: list[bytes] | None = None,
) -> RecipientOutcome:
    """Rules 2 and 3 over a batch of orders stage 1 found new (earlier records are "first").

    ``held`` holds the values of :func:`recipient_lookup_keys` (absent or None = not stored).

    ``now_ms`` (wall clock, what the service passes) also decides *when entries are forgotten*:
    ``window_ms + grace_ms`` of wall time after they arrived. Matching is always by event time
    (``created_at``), but retention by event time alone breaks when gateways lag differently:
    one channel's orders racing an hour ahead would push the watermark past another channel's
    entries before their double submits arrive (the flood bench's channel-grouped batches showed
    12 % of near-duplicates missed that way). Wall-clock retention keeps every entry for the same
    wall time, so memory is bounded by arrival rate x retention for a flood of any length.
    Without ``now_ms`` (pure tests, replays) the event-time watermark is the clock.

    Storage: a window key's entries live under the bucket of the clock they were written at
    (:func:`window_bucket`), so an order reads two keys (this bucket's and the previous one's)
    and writes one, and forgetting is one range delete of the buckets before those two when the
    clock enters a new bucket: no expiry index to keep in step with every write.
    """
    if window_ms < 0 or grace_ms < 0:
        raise ValueError("window_ms and grace_ms must be >= 0")
    raw_wm = held.get(WATERMARK_KEY)
    watermark0 = int.from_bytes(raw_wm, "big", signed=True) if raw_wm else 0
    watermark = watermark0
    retain = window_ms + grace_ms
    clock0 = watermark0 if now_ms is None else now_ms  # what "now" is for forgetting
    future_cap = None if now_ms is None else now_ms + MAX_FUTURE_SKEW_MS
    cur = window_bucket(clock0, window_ms, grace_ms)
    now_b, prev_b = _b8(cur), _b8(cur - 1)

    orders = _facts(orders)
    n = len(orders)
    verdicts: list[DedupVerdict | None] = [None] * n
    windows: dict[bytes, list[WindowEntry]] = {}  # route key -> live entries (+ this batch)
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
            older = held.get(WINDOW_PREFIX + prev_b + wkey) if cur > 0 else None
            newer = held.get(WINDOW_PREFIX + now_b + wkey)
            # what had aged out is forgotten even if its bucket is not yet deleted, so a
            # verdict never depends on how far pruning has got
            entries = windows[wkey] = [
                e
                for raw in (older, newer)
                if raw
                for e in _window_dec.decode(raw)
                if e.expire_at > clock0
            ]
        oid = order.id
        if oid in first_of:
            same_as.append((i, first_of[oid]))
            continue
        first_of[oid] = i
        if entries:
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
    added: dict[tuple[bytes, int], list[WindowEntry]] = {}  # (window key, bucket) -> new entries
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
        written = watermark if now_ms is None else now_ms
        entry = WindowEntry(
            order.id,
            order.created_at,
            order.total,
            order.items,
            written + retain,
            verdict,
            who_raw,
            order.tail,
        )
        entries.append(entry)
        slot = (wkey, cur if now_ms is not None else window_bucket(written, window_ms, grace_ms))
        new = added.get(slot)
        if new is None:
            added[slot] = [entry]
        else:
            new.append(entry)
    for i, first in same_as:
        verdicts[i] = verdicts[first]

    # Forget every bucket before the previous one, once per bucket the clock enters (range
    # deletes first in the batch: they never cover a key the batch writes).
    updates: dict[bytes, bytes | None] = {}
    raw_buckets = held.get(BUCKETS_KEY)
    if raw_buckets is None:
        buckets = WindowBuckets(max(cur - 1, 0), {})
        for lo, hi in _LEGACY:
            updates[DELETE_RANGE + lo] = hi
    else:
        buckets = _buckets_dec.decode(raw_buckets)
    first_kept = buckets.kept
    if cur - 1 > first_kept:
        updates[DELETE_RANGE + WINDOW_PREFIX + _b8(first_kept)] = WINDOW_PREFIX + prev_b
        for bucket in [b for b in buckets.counts if b < cur - 1]:
            dropped += buckets.counts.pop(bucket)
        buckets.kept = cur - 1

    if watermark != watermark0:
        updates[WATERMARK_KEY] = watermark.to_bytes(8, "big", signed=True)
    for cross, oid in crossed.items():
        updates[cross] = oid.encode()
    counts = buckets.counts
    for (wkey, bucket), new in added.items():
        key = WINDOW_PREFIX + _b8(bucket) + wkey
        raw = held.get(key) if bucket >= cur - 1 else None
        stored = _window_dec.decode(raw) if raw else []
        kept = (stored + new)[-MAX_WINDOW_ENTRIES:]
        capped = len(stored) + len(new) - len(kept)
        dropped += capped
        counts[bucket] = counts.get(bucket, 0) + len(new) - capped
        updates[key] = _enc.encode(kept)
    if raw_buckets is None or first_kept != buckets.kept or added:
        updates[BUCKETS_KEY] = _enc.encode(buckets)

    return RecipientOutcome(
        [v if v is not None else NEW for v in verdicts],
        list(updates.items()),
        dropped,
        uncomparable,
    )


def apply_updates(data: dict[bytes, bytes], updates: list[tuple[bytes, bytes | None]]) -> None:
    """Apply stage updates to a dict as the store's WriteBatch does (pure tests, benches)."""
    for key, value in updates:
        if value is None:
            data.pop(key, None)
        elif key.startswith(DELETE_RANGE):
            lo = key[len(DELETE_RANGE) :]
            for k in [k for k in data if lo <= k < value]:
                del data[k]
        else:
            data[key] = value


def stored_watermark(raw: bytes | None) -> int:
    """The clock of a batch given no ``now_ms``: what :data:`WATERMARK_KEY` holds."""
    return int.from_bytes(raw, "big", signed=True) if raw else 0
