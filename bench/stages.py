"""CPU cost of each stage's per-envelope work, in one process on one core, without the broker.

    python -m bench.stages                                   # 100,000 orders, envelopes of 500
    python -m bench.stages --mix taobao=0.5,shopify=0.5 --json bench/results/stages.json
    python -m bench.stages --orders 20000 --profile          # cProfile of the normalise stage

Each stage runs the worker's own code (``streams.stages``, ``streams.kafka.envelope``,
``streams.state.store``, ``streams.ingest.journal``) in the order ``streams.app`` /
``streams.http.api`` / ``streams.ingest.forwarder`` run it; only the Kafka sends and the Faust
event plumbing are left out (a fake changelog ``send`` hands out offsets). Orders come from the
flood's generator (``bench.orders``) and everything the timed loops consume (journal entries, raw
envelopes, NDJSON bodies) is built before the clock starts.

1. normalise: RAW_CODEC envelopes as the forwarder builds them (``split_entries``, grouped by
   order id, chunks of ``--envelope``) -> ``decode_raw_message`` -> ``normalise_records`` ->
   ``group_by_partition`` -> CANONICAL_CODEC / DLQ_CODEC encode; plus ``core.channels.normalise``
   alone per channel.
2. order stage: CANONICAL_CODEC decode -> ``PartitionStore.get_many`` -> ``record_envelope``
   (with the order flow: audit, SLA deadlines, rules, reservation requests) ->
   CHANGES_CODEC encode -> ``StoreManager.commit`` (changelog entry encode + WriteBatch) on a real
   RocksDB per partition in a temp dir; a first pass (creates) and a second pass over the same
   envelopes at new offsets (re-deliveries after a replay, which must change nothing).
3. ingest without HTTP: NDJSON split -> ``adapter.order_no`` -> ``global_order_id`` ->
   ``JournalEntry`` -> ``IngestJournal.append`` per ``--batch``-order request, fsync on and off.
4. compression (``aiokafka.codec`` at the levels the producer uses) of the envelopes.

Every measurement is repeated ``--repeat`` times (default 3) and the best is reported: CI and
other benchmarks may share the cores. The cyclic GC stays on but the pre-generated data is frozen
out of it (``gc.freeze``), like a worker whose heap holds little besides the envelope at hand.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import io
import json
import os
import pstats
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka import codec as kcodec

from bench.flood import fmt, machine_info
from bench.orders import DEFAULT_MIX, GeneratedOrder, OrderGenerator, ndjson_batches, parse_mix
from core.channels import ADAPTERS, NormaliseContext, normalise, order_no
from core.dedup import DEFAULT_WINDOW_MS
from core.framing import split_ndjson
from core.model import CanonicalOrder, Rejection, global_order_id
from core.order_flow import FlowContext
from core.routing import WarehouseRouting
from core.rules import RuleSet
from core.skus import SkuCatalog
from core.sla import SlaPolicy
from streams.ingest.forwarder import READ_BATCH, split_entries
from streams.ingest.journal import IngestJournal, JournalEntry
from streams.kafka.envelope import (
    CANONICAL_CODEC,
    CHANGES_CODEC,
    COUNT_CODEC,
    DLQ_CODEC,
    ENVELOPE_HEADER,
    HISTORY_CODEC,
    RAW_CODEC,
    ROUTED_CODEC,
    SETTLE_CODEC,
    chunks,
    group_by_partition,
)
from streams.kafka.topics import CANONICAL, HISTORY, RECIPIENT
from streams.stages import dedup as dedup_stage
from streams.stages import history as history_stage
from streams.stages import normalise as normalise_stage
from streams.stages import order_state
from streams.state.store import ChangelogEntry, PartitionStore, Position, StoreManager

ROOT = Path(__file__).resolve().parents[1]
GRACE_MS = 120_000  # the service's default near_duplicate_grace_s
# the order stage as the service runs it: shipped SLA policy, rules and routing table
FLOW = FlowContext(
    SlaPolicy.from_toml(ROOT / "config" / "sla.toml"),
    RuleSet.from_toml(ROOT / "config" / "rules.toml"),
    WarehouseRouting.default(),
)
HISTORY_THRESHOLD = FLOW.rules.history_min  # the counts the shipped rules wait for
FAUST_US_PER_MESSAGE = 300.0  # measured in design.md ("Hot paths"): one agent event, one send
NORMALISE_BAR = 20_000  # issue: "normalise stage >= 20,000 orders/s per worker process"
DEDUP_BAR = 20_000  # issue 5: both dedup stages together >= 20,000 orders/s per worker
RAW_HEADERS = {ENVELOPE_HEADER: b"raw"}
EPOCH = "bench"
# (name, encode, decode) at the levels aiokafka's producer uses (gzip 9, lz4 9, zstd 3)
CODECS: list[tuple[str, Callable[[bytes], bytes], Callable[[bytes], bytes]]] = [
    ("none", bytes, bytes),
    ("zstd", kcodec.zstd_encode, kcodec.zstd_decode),
    ("lz4", kcodec.lz4_encode, kcodec.lz4_decode),
    ("gzip", kcodec.gzip_encode, kcodec.gzip_decode),
]


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


# ---------------------------------------------------------------------------- inputs


@dataclass
class Inputs:
    """Everything the timed loops consume, built before any clock starts."""

    orders: list[GeneratedOrder]
    ctx: NormaliseContext
    partitions: int
    envelope: int
    batch: int
    journal_entries: list[tuple[int, JournalEntry]]  # (seq, entry), as the journal holds them
    ingest_dead: int  # refused at the door (rejection set): straight to the DLQ, never to raw
    raw_envelopes: list[bytes]  # orders.raw message values, in forwarding order
    bodies: list[tuple[str, bytes]]  # NDJSON request bodies (channel, body)
    by_channel: dict[str, list[bytes]] = field(default_factory=dict)  # payloads per channel


def build_inputs(
    orders: list[GeneratedOrder],
    ctx: NormaliseContext,
    *,
    partitions: int = 4,
    envelope: int = 500,
    batch: int = 500,
    journal_id: str = "benchjournal0001",
) -> Inputs:
    """What the ingest would have journaled and the forwarder produced for ``orders``."""
    received = _now_ms()
    entries: list[tuple[int, JournalEntry]] = []
    for seq, o in enumerate(orders, 1):
        found = order_no(o.channel, o.payload)
        if isinstance(found, Rejection):
            entry = JournalEntry(o.channel, o.payload, received, "", (found.field, found.reason))
        else:
            entry = JournalEntry(o.channel, o.payload, received, global_order_id(o.channel, found))
        entries.append((seq, entry))
    raw_envelopes: list[bytes] = []
    ingest_dead = 0
    for start in range(0, len(entries), READ_BATCH):  # Forwarder.run reads READ_BATCH at a time
        group = entries[start : start + READ_BATCH]
        raw, dead = split_entries(group, journal_id)
        ingest_dead += len(dead)
        ids = [e.order_id.encode() for _, e in group if e.rejection is None]
        for _part, recs in group_by_partition(raw, ids, partitions).items():
            for chunk in chunks(recs, envelope):
                raw_envelopes.append(RAW_CODEC.encode(chunk))
    by_channel: dict[str, list[bytes]] = {}
    for o in orders:
        by_channel.setdefault(o.channel, []).append(o.payload)
    return Inputs(
        orders=orders,
        ctx=ctx,
        partitions=partitions,
        envelope=envelope,
        batch=batch,
        journal_entries=entries,
        ingest_dead=ingest_dead,
        raw_envelopes=raw_envelopes,
        bodies=ndjson_batches(orders, batch),
        by_channel=by_channel,
    )


def _best(runs: list[dict[str, Any]]) -> dict[str, Any]:
    best = min(runs, key=lambda r: r["wall_s"])
    return {**best, "runs_wall_s": [round(r["wall_s"], 4) for r in runs]}


def _repeat(fn: Callable[[], dict[str, Any]], repeat: int) -> dict[str, Any]:
    runs = []
    for _ in range(repeat):
        gc.collect()
        runs.append(fn())
    return _best(runs)


class _Clock:
    """Wall and process CPU time of a block."""

    def __enter__(self) -> _Clock:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self.wall0
        self.cpu_s = time.process_time() - self.cpu0


# ---------------------------------------------------------------------------- 1. normalise


@dataclass
class NormaliseOutput:
    canonical: list[tuple[int, bytes]]  # (partition, orders.canonical message value)
    dlq: list[tuple[int, bytes]]
    records_in: int
    good: int
    dead: int
    canonical_envelopes: int
    dlq_envelopes: int


def normalise_stage_run(inp: Inputs, keep: bool = True) -> NormaliseOutput:
    """The normalising half of ``Pipeline.intake_batch`` per raw envelope, minus sends and metrics.

    With ``keep=False`` each encoded envelope is dropped at once, as after its send: keeping
    ~70 MB of output per 100,000 orders would time page faults the worker never pays.
    """
    canonical: list[tuple[int, bytes]] = []
    dlq: list[tuple[int, bytes]] = []
    n_in = n_good = n_dead = n_canonical_env = n_dlq_env = 0
    ctx, parts, size = inp.ctx, inp.partitions, inp.envelope
    now_s = time.time()
    for value in inp.raw_envelopes:
        records, dead = normalise_stage.decode_raw_message(
            None, value, RAW_HEADERS, int(now_s * 1000)
        )
        n_in += len(records)
        good, rejected = normalise_stage.normalise_records(records, ctx)
        dead += rejected
        keys = [r.order.id.encode() for r in good]
        for part, recs in group_by_partition(good, keys, parts).items():
            for chunk in chunks(recs, size):
                data = CANONICAL_CODEC.encode(chunk)
                if keep:
                    canonical.append((part, data))
                n_canonical_env += 1
        if dead:
            dkeys = [normalise_stage.dead_letter_key(d) or d.channel.encode() for d in dead]
            for part, recs in group_by_partition(dead, dkeys, parts).items():
                for chunk in chunks(recs, size):
                    data = DLQ_CODEC.encode(chunk)
                    if keep:
                        dlq.append((part, data))
                    n_dlq_env += 1
        # the per-batch metric counts (the .inc() calls themselves are left out)
        Counter(r.order.channel for r in good)
        Counter(r.order.channel for r in good if r.origin is None)
        n_good += len(good)
        n_dead += len(dead)
    return NormaliseOutput(canonical, dlq, n_in, n_good, n_dead, n_canonical_env, n_dlq_env)


def bench_normalise(inp: Inputs, repeat: int) -> tuple[dict[str, Any], NormaliseOutput]:
    def once() -> dict[str, Any]:
        with _Clock() as c:
            normalise_stage_run(inp, keep=False)
        return {"wall_s": c.wall_s, "cpu_s": c.cpu_s}

    best = _repeat(once, repeat)
    res = normalise_stage_run(inp)  # untimed: the envelopes the order stage consumes
    n = res.records_in
    best.update(
        orders=n,
        raw_envelopes=len(inp.raw_envelopes),
        canonical_envelopes=res.canonical_envelopes,
        dlq_envelopes=res.dlq_envelopes,
        canonical_records=res.good,
        dead_letters=res.dead,
        orders_per_s=n / best["wall_s"],
        us_per_order=best["wall_s"] / n * 1e6,
        cpu_us_per_order=best["cpu_s"] / n * 1e6,
    )
    return best, res


def bench_normalise_channels(inp: Inputs, repeat: int) -> dict[str, dict[str, Any]]:
    """``core.channels.normalise`` alone (what ``normalise_records`` calls), per channel."""
    out: dict[str, dict[str, Any]] = {}
    ctx = inp.ctx
    for channel, payloads in sorted(inp.by_channel.items()):

        def once(channel: str = channel, payloads: list[bytes] = payloads) -> dict[str, Any]:
            dead = 0
            with _Clock() as c:
                for p in payloads:
                    if not isinstance(normalise(channel, p, ctx), CanonicalOrder):
                        dead += 1
            return {"wall_s": c.wall_s, "cpu_s": c.cpu_s, "dead": dead}

        best = _repeat(once, repeat)
        n = len(payloads)
        sizes = sum(len(p) for p in payloads)
        best.update(
            orders=n,
            avg_payload_bytes=sizes / n,
            orders_per_s=n / best["wall_s"],
            us_per_order=best["wall_s"] / n * 1e6,
        )
        out[channel] = best
    return out


# ---------------------------------------------------------------------------- 2. order stage


class _FakeChangelog:
    """``StoreManager``'s send: hands out offsets per partition instead of producing."""

    def __init__(self) -> None:
        self.offsets: Counter[tuple[str, int]] = Counter()
        self.messages = 0
        self.bytes = 0

    async def __call__(self, topic: str, partition: int, value: bytes) -> int:
        self.messages += 1
        self.bytes += len(value)
        self.offsets[(topic, partition)] += 1
        return self.offsets[(topic, partition)] - 1


@dataclass
class OrderPassResult:
    records: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0  # stale or repeated versions: nothing recorded
    keys_written: int = 0
    changes_envelopes: int = 0
    settled: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0


async def _order_pass(
    stores: StoreManager,
    envelopes: list[tuple[int, bytes]],
    offsets: dict[int, int],
    partitions: int,
    size: int,
) -> OrderPassResult:
    """``Pipeline._record_partition`` + ``record_batch`` per canonical envelope, minus sends."""
    res = OrderPassResult()
    with _Clock() as c:
        for part, value in envelopes:
            offset = offsets[part]
            offsets[part] = offset + 1
            async with stores.using(order_state.STORE, part) as store:
                applied = store.applied(CANONICAL, EPOCH)
                if offset <= applied:  # never here: each pass uses fresh offsets
                    raise AssertionError("bench offsets must be new")
                records = CANONICAL_CODEC.decode(value)
                held = store.get_many([r.order.id.encode() for r in records])
                out = order_state.record_envelope(records, held, _now_ms(), FLOW)
                keys = [ch.order_id.encode() for ch in out.changes]
                for _p, recs in group_by_partition(out.changes, keys, partitions).items():
                    for chunk in chunks(recs, size):
                        CHANGES_CODEC.encode(chunk)
                        res.changes_envelopes += 1
                await stores.commit(
                    store,
                    ChangelogEntry(out.store_updates(), CANONICAL, Position(EPOCH, offset)),
                )
            settles = out.settles
            if settles:
                SETTLE_CODEC.encode(settles)
            kinds = Counter(ch.kind for ch in out.changes)
            res.records += len(records)
            res.created += kinds["created"]
            res.updated += kinds["updated"] + kinds["duplicate_received"]  # copies count too
            res.unchanged += len(records) - len(out.changes)
            res.keys_written += len(out.records) + len(out.updates)
            res.settled += sum(len(s.seqs) for s in settles)
    res.wall_s, res.cpu_s = c.wall_s, c.cpu_s
    return res


def _store_digest(stores: StoreManager, partitions: int) -> dict[int, int]:
    """Order keys per partition plus a hash of their values: what a pass may not change."""
    out: dict[int, int] = {}
    for part in range(partitions):
        store = stores.open.get((order_state.STORE, part))
        if store is None:
            continue
        h = 0
        n = 0
        for key, value in store.scan(b"os_", 10**9):
            h ^= hash((key, value))
            n += 1
        out[part] = hash((n, h))
    return out


def order_stage_run(
    envelopes: list[tuple[int, bytes]], root: Path, partitions: int, size: int
) -> tuple[OrderPassResult, OrderPassResult, bool, int]:
    """First pass then a re-delivery pass over fresh stores under ``root``.

    Returns both passes, whether the second left every stored order untouched, and the number
    of order keys stored.
    """
    send = _FakeChangelog()
    stores = StoreManager(root, EPOCH, "unused:0", send=send)
    offsets = dict.fromkeys(range(partitions), 0)

    # open every store before the clock, without StoreManager._recover (no broker to replay)
    for part in range(partitions):
        stores.open[(order_state.STORE, part)] = PartitionStore(root, order_state.STORE, part)

    async def both() -> tuple[OrderPassResult, OrderPassResult, bool, int]:
        first = await _order_pass(stores, envelopes, offsets, partitions, size)
        before = _store_digest(stores, partitions)
        second = await _order_pass(stores, envelopes, offsets, partitions, size)
        unchanged = _store_digest(stores, partitions) == before
        stored = sum(len(s.scan(b"os_", 10**9)) for s in stores.open.values())
        return first, second, unchanged, stored

    try:
        return asyncio.run(both())
    finally:
        stores.close_all()


def bench_order_stage(
    canonical: list[tuple[int, bytes]], inp: Inputs, repeat: int, tmp: Path
) -> dict[str, Any]:
    firsts, seconds = [], []
    checks: list[dict[str, Any]] = []
    for i in range(repeat):
        root = tmp / f"stores-{i}"
        gc.collect()
        first, second, unchanged, stored = order_stage_run(
            canonical, root, inp.partitions, inp.envelope
        )
        shutil.rmtree(root, ignore_errors=True)
        firsts.append(first)
        seconds.append(second)
        checks.append({"unchanged": unchanged, "stored": stored})

    def best(passes: list[OrderPassResult]) -> dict[str, Any]:
        b = min(passes, key=lambda p: p.wall_s)
        n = b.records
        return {
            **b.__dict__,
            "runs_wall_s": [round(p.wall_s, 4) for p in passes],
            "orders_per_s": n / b.wall_s if n else 0.0,
            "us_per_order": b.wall_s / n * 1e6 if n else 0.0,
            "cpu_us_per_order": b.cpu_s / n * 1e6 if n else 0.0,
        }

    return {
        "envelopes": len(canonical),
        "first_pass": best(firsts),
        "redelivery_pass": best(seconds),
        "redelivery_changed_nothing": all(c["unchanged"] for c in checks)
        and all(s.created == 0 and s.updated == 0 and s.keys_written == 0 for s in seconds),
        "orders_stored": checks[0]["stored"],
    }


# ---------------------------------------------------------------------------- 2b. dedup


@dataclass
class DedupPassResult:
    records: int = 0  # orders into the exact stage
    exact: Counter[str] = field(default_factory=Counter)  # verdict kinds of the exact stage
    recipient: Counter[str] = field(default_factory=Counter)  # ... of the recipient stage
    recipient_envelopes: int = 0
    unique_envelopes: int = 0
    pruned: int = 0
    exact_wall_s: float = 0.0
    recipient_wall_s: float = 0.0
    history_wall_s: float = 0.0  # off the critical path: not in the dedup stages' wall
    history_counts: int = 0  # counts at or above HISTORY_THRESHOLD, for the order stage
    cpu_s: float = 0.0


def _takes(envelopes: list[tuple[int, bytes]], records: int) -> list[tuple[int, list[bytes]]]:
    """Consecutive envelopes of a partition merged up to ``records`` orders, as one ``take()``
    of several messages is committed once by ``streams.app``; order within a partition kept."""
    pending: dict[int, tuple[list[bytes], int]] = {}
    out: list[tuple[int, list[bytes]]] = []
    for part, value in envelopes:
        n = len(CANONICAL_CODEC.decode(value))
        values, count = pending.get(part, ([], 0))
        if values and count + n > records:
            out.append((part, values))
            values, count = [], 0
        pending[part] = ([*values, value], count + n)
    out.extend((part, values) for part, (values, _) in pending.items() if values)
    return out


async def _dedup_pass(
    stores: StoreManager,
    envelopes: list[tuple[int, bytes]],
    partitions: int,
    size: int,
    take: int,
) -> DedupPassResult:
    """``streams.stages.dedup`` per envelope as ``streams.app`` runs it, minus the sends.

    The dedup stages read and re-send records as ``ROUTED_CODEC`` (the order stays encoded),
    as the worker does. Exact stage: decode -> ``get_many`` -> ``exact_envelope`` -> group by
    recipient partition -> encode -> commit (changelog entry + WriteBatch). Recipient stage, on
    those envelopes in order: decode -> ``recipient_step`` (get_many, verdicts, history facts)
    -> group by order partition and facts by recipient partition -> encode -> commit. History
    stage (``streams.stages.history``, off the critical path: timed apart), on those facts per
    partition: decode -> ``history_step`` (get_many, 24 h counts) -> encode the counts ->
    commit. The stages' clock is the newest ``created_at`` so far (the generator's orders are
    days old: by the real clock every history would be past keeping and every window entry
    forgotten on arrival).
    """
    res = DedupPassResult()
    offsets: Counter[tuple[str, int]] = Counter()
    onward: list[tuple[int, bytes]] = []
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    for part, value in envelopes:
        async with stores.using(dedup_stage.EXACT_STORE, part) as store:
            records = ROUTED_CODEC.decode(value)
            out = dedup_stage.exact_envelope(
                records, store.get_many(dedup_stage.exact_keys(records))
            )
            for dest, recs in group_by_partition(out.records, out.keys, partitions).items():
                for chunk in chunks(recs, size):
                    onward.append((dest, ROUTED_CODEC.encode(chunk)))
            offset = offsets[(CANONICAL, part)]
            offsets[(CANONICAL, part)] += 1
            await stores.commit(
                store, ChangelogEntry(out.updates, CANONICAL, Position(EPOCH, offset))
            )
        res.records += len(records)
        res.exact.update(r.verdict.kind for r in out.records if r.verdict is not None)
    exact_s = time.perf_counter() - t0
    batches = _takes(onward, take) if take > 0 else [(p, [v]) for p, v in onward]
    clock = 0  # the stage's wall clock: orders arrive as they are created, as in a live flood
    facts: list[tuple[int, bytes, int]] = []  # (partition, envelope, clock when sent)
    t1 = time.perf_counter()  # _takes only groups the inputs: not stage work
    for part, values in batches:
        async with stores.using(dedup_stage.RECIPIENT_STORE, part) as store:
            records = [r for v in values for r in ROUTED_CODEC.decode(v)]
            clock = max(clock, max(dedup_stage.facts_of(r).created_at for r in records))
            out2, pruned = dedup_stage.recipient_step(
                store, records, DEFAULT_WINDOW_MS, GRACE_MS, clock
            )
            for _dest, recs in group_by_partition(out2.records, out2.keys, partitions).items():
                for chunk in chunks(recs, size):
                    ROUTED_CODEC.encode(chunk)
                    res.unique_envelopes += 1
            hkeys = [f.recipient_key for f in out2.history]
            for dest, fs in group_by_partition(out2.history, hkeys, partitions).items():
                for chunk in chunks(fs, size):
                    facts.append((dest, HISTORY_CODEC.encode(chunk), clock))
            offset = offsets[(RECIPIENT, part)]
            offsets[(RECIPIENT, part)] += 1
            await stores.commit(
                store, ChangelogEntry(out2.updates, RECIPIENT, Position(EPOCH, offset))
            )
        res.pruned += pruned
        res.recipient.update(
            r.verdict.kind
            for r in out2.records
            if r.verdict is not None and r.verdict.kind in ("new", "duplicate", "suspected")
        )
    t2 = time.perf_counter()
    for part, value, sent_at in facts:
        async with stores.using(history_stage.STORE, part) as store:
            got = HISTORY_CODEC.decode(value)
            out3 = history_stage.history_step(store, got, sent_at, HISTORY_THRESHOLD)
            if out3.counts:
                COUNT_CODEC.encode(out3.counts)
            offset = offsets[(HISTORY, part)]
            offsets[(HISTORY, part)] += 1
            await stores.commit(
                store, ChangelogEntry(out3.updates, HISTORY, Position(EPOCH, offset))
            )
        res.history_counts += len(out3.counts)
    t3 = time.perf_counter()
    res.recipient_envelopes = len(onward)
    res.exact_wall_s, res.recipient_wall_s = exact_s, t2 - t1
    res.history_wall_s = t3 - t2
    res.cpu_s = time.process_time() - cpu0
    return res


def dedup_stage_run(
    envelopes: list[tuple[int, bytes]],
    root: Path,
    partitions: int,
    size: int,
    take: int = 0,
) -> DedupPassResult:
    """Both dedup stages over fresh RocksDB stores under ``root`` (opened before the clock)."""
    stores = StoreManager(root, EPOCH, "unused:0", send=_FakeChangelog())
    for name in (dedup_stage.EXACT_STORE, dedup_stage.RECIPIENT_STORE, history_stage.STORE):
        for part in range(partitions):
            stores.open[(name, part)] = PartitionStore(root, name, part)
    try:
        return asyncio.run(_dedup_pass(stores, envelopes, partitions, size, take))
    finally:
        stores.close_all()


def bench_dedup(
    canonical: list[tuple[int, bytes]],
    inp: Inputs,
    repeat: int,
    tmp: Path,
    take: int = 0,
) -> dict[str, Any]:
    """``take``: recipient envelopes merged per partition up to this many orders, as one
    ``take()`` of several envelopes is committed once under load (0 = one commit per envelope,
    as the exact stage's 4-way split delivers them when the topic is quiet)."""
    runs: list[DedupPassResult] = []
    for i in range(repeat):
        root = tmp / f"dedup-{i}"
        gc.collect()
        runs.append(dedup_stage_run(canonical, root, inp.partitions, inp.envelope, take))
        shutil.rmtree(root, ignore_errors=True)
    b = min(runs, key=lambda r: r.exact_wall_s + r.recipient_wall_s)
    n = b.records
    wall = b.exact_wall_s + b.recipient_wall_s
    return {
        "take_orders": take,
        "envelopes": len(canonical),
        "records": n,
        "exact_verdicts": dict(b.exact),
        "recipient_verdicts": dict(b.recipient),
        "recipient_envelopes": b.recipient_envelopes,
        "unique_envelopes": b.unique_envelopes,
        "pruned": b.pruned,
        "runs_wall_s": [round(r.exact_wall_s + r.recipient_wall_s, 4) for r in runs],
        "exact_orders_per_s": n / b.exact_wall_s if n else 0.0,
        "recipient_orders_per_s": n / b.recipient_wall_s if n else 0.0,
        "history_orders_per_s": n / b.history_wall_s if n and b.history_wall_s else 0.0,
        "history_counts": b.history_counts,
        "orders_per_s": n / wall if n else 0.0,
        "us_per_order": wall / n * 1e6 if n else 0.0,
        "cpu_us_per_order": b.cpu_s / n * 1e6 if n else 0.0,
        "wall_s": wall,
    }


# ---------------------------------------------------------------------------- 3. ingest


async def _ingest(journal: IngestJournal, bodies: list[tuple[str, bytes]], inflight: int) -> int:
    """``IngestAPI`` per NDJSON request, minus aiohttp: split, order_no, id, journal append."""
    accepted = 0

    async def request(channel: str, body: bytes) -> int:
        adapter = ADAPTERS[channel]
        now = _now_ms()
        entries: list[JournalEntry] = []
        n = 0
        for _line_no, payload in split_ndjson(body):
            found = adapter.order_no(payload)
            if isinstance(found, Rejection):
                entries.append(JournalEntry(channel, payload, now, "", (found.field, found.reason)))
            else:
                entries.append(JournalEntry(channel, payload, now, global_order_id(channel, found)))
                n += 1
        await journal.append(entries)
        return n

    for start in range(0, len(bodies), inflight):
        group = bodies[start : start + inflight]
        accepted += sum(await asyncio.gather(*(request(ch, b) for ch, b in group)))
    return accepted


def bench_ingest(
    inp: Inputs, repeat: int, tmp: Path, fsync: bool, inflight: int = 1
) -> dict[str, Any]:
    n_lines = sum(body.count(b"\n") + (not body.endswith(b"\n")) for _, body in inp.bodies)
    counter = iter(range(10**6))

    def once() -> dict[str, Any]:
        path = tmp / f"journal-{next(counter)}"
        journal = IngestJournal(path, max_entries=10**8, fsync=fsync)

        async def go() -> int:
            try:
                return await _ingest(journal, inp.bodies, inflight)
            finally:
                await journal.close()

        try:
            with _Clock() as c:
                accepted = asyncio.run(go())
        finally:
            shutil.rmtree(path, ignore_errors=True)
        return {"wall_s": c.wall_s, "cpu_s": c.cpu_s, "accepted": accepted}

    best = _repeat(once, repeat)
    best.update(
        fsync=fsync,
        inflight=inflight,
        requests=len(inp.bodies),
        orders=n_lines,
        orders_per_s=n_lines / best["wall_s"],
        us_per_order=best["wall_s"] / n_lines * 1e6,
        cpu_us_per_order=best["cpu_s"] / n_lines * 1e6,
        ms_per_request=best["wall_s"] / len(inp.bodies) * 1e3,
    )
    return best


# ---------------------------------------------------------------------------- 4. compression


def bench_compression(envelopes: list[bytes], repeat: int) -> dict[str, dict[str, Any]]:
    total = sum(len(e) for e in envelopes)
    out: dict[str, dict[str, Any]] = {}
    for name, enc, dec in CODECS:
        best_enc = best_dec = float("inf")
        compressed: list[bytes] = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            compressed = [enc(e) for e in envelopes]
            best_enc = min(best_enc, time.perf_counter() - t0)
            t0 = time.perf_counter()
            for cdata in compressed:
                dec(cdata)
            best_dec = min(best_dec, time.perf_counter() - t0)
        size = sum(len(c) for c in compressed)
        out[name] = {
            "bytes_in": total,
            "bytes_out": size,
            "ratio": total / size,
            "encode_mb_per_s": total / best_enc / 1e6,
            "decode_mb_per_s": total / best_dec / 1e6,
            "encode_us_per_envelope": best_enc / len(envelopes) * 1e6,
        }
    return out


# ---------------------------------------------------------------------------- report


def estimate_worker(
    norm: dict[str, Any], order: dict[str, Any], comp: dict[str, Any], codec: str
) -> dict[str, Any]:
    """Add Faust (~300 µs per consumed event and per produced message) and compression."""
    n = norm["orders"]
    zstd_us = comp["canonical"][codec]["encode_us_per_envelope"] if codec != "none" else 0.0
    norm_msgs = norm["raw_envelopes"] + norm["canonical_envelopes"] + norm["dlq_envelopes"]
    norm_us = (
        norm["us_per_order"] * n
        + FAUST_US_PER_MESSAGE * norm_msgs
        + zstd_us * norm["canonical_envelopes"]
    )
    first = order["first_pass"]
    # per canonical envelope: 1 consumed event, its changes envelope(s), 1 changelog message,
    # 1 settle message
    order_msgs = order["envelopes"] * 3 + first["changes_envelopes"]
    order_us = first["us_per_order"] * first["records"] + FAUST_US_PER_MESSAGE * order_msgs
    return {
        "faust_us_per_message": FAUST_US_PER_MESSAGE,
        "compression": codec,
        "normalise_messages": norm_msgs,
        "normalise_orders_per_s": n / norm_us * 1e6,
        "normalise_us_per_order": norm_us / n,
        "order_stage_messages": order_msgs,
        "order_stage_orders_per_s": first["records"] / order_us * 1e6,
        "both_stages_orders_per_s": n / (norm_us + order_us) * 1e6,
    }


def print_report(r: dict[str, Any]) -> None:
    s, m = r["settings"], r["machine"]
    print()
    print(
        f"orderstream stages — {s['orders']:,} orders, envelopes of {s['envelope']}, "
        f"{s['partitions']} partitions, best of {s['repeat']}, one process"
    )
    print(
        f"machine: {m['nproc']} cores, Python {m['python']}, kernels {m['kernels']}, "
        f"commit {m['git_commit'][:10]}{' (dirty)' if m['git_dirty'] else ''}, "
        f"load avg before {tuple(round(x, 2) for x in m['load_avg_before'])}"
    )
    print(
        f"generated in {r['generate_s']:.2f}s, inputs built in {r['prepare_s']:.2f}s "
        f"(before the clock); skus: {s['skus_toml'] or 'none'}"
    )
    n, o = r["normalise"], r["order_stage"]
    rows: list[tuple[str, str, str, str]] = [
        ("stage", "orders/s", "µs/order", "cpu µs/order"),
        (
            "1 normalise (decode→normalise→group→encode)",
            fmt(n["orders_per_s"]),
            fmt(n["us_per_order"], "", 1),
            fmt(n["cpu_us_per_order"], "", 1),
        ),
    ]
    for ch, c in r["normalise_per_channel"].items():
        rows.append(
            (
                f"    normalise alone: {ch} ({c['avg_payload_bytes']:.0f} B)",
                fmt(c["orders_per_s"]),
                fmt(c["us_per_order"], "", 1),
                "",
            )
        )
    for label, key in (
        ("2 order stage, first pass", "first_pass"),
        ("2 order stage, re-delivery", "redelivery_pass"),
    ):
        p = o[key]
        rows.append(
            (
                label,
                fmt(p["orders_per_s"]),
                fmt(p["us_per_order"], "", 1),
                fmt(p["cpu_us_per_order"], "", 1),
            )
        )
    dd = r.get("dedup")
    if dd:
        for label, ops in (
            ("2b dedup, exact stage", dd["exact_orders_per_s"]),
            ("2b dedup, recipient stage", dd["recipient_orders_per_s"]),
            ("2b history stage (off the critical path)", dd.get("history_orders_per_s", 0.0)),
        ):
            if ops:
                rows.append((label, fmt(ops), fmt(1e6 / ops, "", 1), ""))
        rows.append(
            (
                "2b dedup, both stages",
                fmt(dd["orders_per_s"]),
                fmt(dd["us_per_order"], "", 1),
                fmt(dd["cpu_us_per_order"], "", 1),
            )
        )
        for name, v in dd.get("variants", {}).items():
            rows.append(
                (
                    f"    both stages, {name.replace('_', ' ')}",
                    fmt(v["orders_per_s"]),
                    fmt(v["us_per_order"], "", 1),
                    fmt(v["cpu_us_per_order"], "", 1),
                )
            )
    for key, label in (
        ("fsync_1", "3 ingest, fsync on, 1 request in flight"),
        ("fsync_8", "3 ingest, fsync on, 8 requests in flight"),
        ("nofsync_1", "3 ingest, fsync off, 1 request in flight"),
    ):
        i = r["ingest"].get(key)
        if i:
            rows.append(
                (
                    label,
                    fmt(i["orders_per_s"]),
                    fmt(i["us_per_order"], "", 1),
                    fmt(i["cpu_us_per_order"], "", 1),
                )
            )
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        print(
            f"  {row[0]:<{widths[0]}}  {row[1]:>{widths[1]}}  {row[2]:>{widths[2]}}  "
            f"{row[3]:>{widths[3]}}"
        )
    print(
        f"  normalise: {n['raw_envelopes']} raw envelopes in -> {n['canonical_records']:,} "
        f"canonical in {n['canonical_envelopes']} envelopes + {n['dead_letters']} dead letters; "
        f"{r['ingest_dead']} more refused at the door"
    )
    f, d = o["first_pass"], o["redelivery_pass"]
    print(
        f"  order stage: first pass created {f['created']:,} updated {f['updated']:,} "
        f"unchanged {f['unchanged']:,}; re-delivery created {d['created']} updated "
        f"{d['updated']} keys written {d['keys_written']}; store untouched: "
        f"{o['redelivery_changed_nothing']}"
    )
    if dd:
        ok_dd = dd["orders_per_s"] >= DEDUP_BAR
        print(
            f"  dedup: exact {dd['exact_verdicts']}, recipient {dd['recipient_verdicts']}, "
            f"{dd['pruned']:,} window entries pruned; bar 'both dedup stages >= "
            f"{DEDUP_BAR:,} orders/s per worker': {dd['orders_per_s']:,.0f}/s "
            f"({'meets' if ok_dd else 'MISSES'} it, broker I/O excluded)"
        )
    print()
    print("  compression (aiokafka.codec, producer levels)   ratio   encode MB/s   decode MB/s")
    for kind, table in r["compression"].items():
        for name, c in table.items():
            print(
                f"    {kind:<9} {name:<5} ({c['bytes_in'] / 1e6:6.1f} MB)"
                f"{c['ratio']:>18.2f} {c['encode_mb_per_s']:>13,.0f} {c['decode_mb_per_s']:>13,.0f}"
            )
    e = r["estimate"]
    print()
    ok = n["orders_per_s"] >= NORMALISE_BAR
    print(
        f"  bar 'normalise stage >= {NORMALISE_BAR:,} orders/s per worker process': stage CPU "
        f"alone {n['orders_per_s']:,.0f}/s ({'meets' if ok else 'MISSES'} it, broker I/O excluded)"
    )
    print(
        f"  estimate with Faust at ~{e['faust_us_per_message']:.0f} µs/message and "
        f"{e['compression']} on the output: normalise {e['normalise_orders_per_s']:,.0f}/s "
        f"({'meets' if e['normalise_orders_per_s'] >= NORMALISE_BAR else 'MISSES'}), "
        f"order stage {e['order_stage_orders_per_s']:,.0f}/s, one worker doing both "
        f"{e['both_stages_orders_per_s']:,.0f}/s"
    )


def profile_normalise(inp: Inputs, top: int = 15) -> str:
    prof = cProfile.Profile()
    prof.enable()
    normalise_stage_run(inp)
    prof.disable()
    buf = io.StringIO()
    stats = pstats.Stats(prof, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    n = len(inp.orders)
    lines = [f"cProfile of the normalise stage, {n:,} orders (self time, µs/order):"]
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:top]  # type: ignore[attr-defined]
    for (file, line, func), (_cc, calls, tottime, cumtime, _callers) in rows:
        where = f"{os.path.relpath(file, ROOT) if file.startswith('/') else file}:{line}"
        lines.append(
            f"  {tottime / n * 1e6:7.2f} self  {cumtime / n * 1e6:7.2f} cum  "
            f"{calls / n:6.2f} calls/order  {func}  ({where})"
        )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict[str, Any]:
    mix = parse_mix(args.mix) if args.mix else dict(DEFAULT_MIX)
    machine = machine_info()
    t0 = time.perf_counter()
    orders = OrderGenerator(args.seed, mix, bad_rate=args.bad_rate).generate(args.orders)
    generate_s = time.perf_counter() - t0
    skus = SkuCatalog.from_toml(args.skus_toml) if args.skus_toml else SkuCatalog()
    ctx = NormaliseContext(skus=skus, default_country="CN")
    t0 = time.perf_counter()
    inp = build_inputs(
        orders, ctx, partitions=args.partitions, envelope=args.envelope, batch=args.batch
    )
    prepare_s = time.perf_counter() - t0
    gc.collect()
    gc.freeze()  # the pre-generated inputs are not garbage a worker would be scanning

    if args.profile:
        print(profile_normalise(inp, args.profile_top))
        return {}

    print(f"measuring {len(orders):,} orders, best of {args.repeat} ...", flush=True)
    norm, norm_out = bench_normalise(inp, args.repeat)
    per_channel = bench_normalise_channels(inp, args.repeat)
    tmp = Path(tempfile.mkdtemp(prefix="orderstream-stages-", dir=args.tmp or None))
    try:
        order = bench_order_stage(norm_out.canonical, inp, args.repeat, tmp)
        dedup = bench_dedup(norm_out.canonical, inp, args.repeat, tmp)
        dedup["variants"] = {
            "take500": bench_dedup(norm_out.canonical, inp, args.repeat, tmp, inp.envelope),
        }
        ingest = {
            "fsync_1": bench_ingest(inp, args.repeat, tmp, fsync=True, inflight=1),
            "fsync_8": bench_ingest(inp, args.repeat, tmp, fsync=True, inflight=8),
            "nofsync_1": bench_ingest(inp, args.repeat, tmp, fsync=False, inflight=1),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    comp = {
        "canonical": bench_compression([v for _, v in norm_out.canonical], args.repeat),
        "raw": bench_compression(inp.raw_envelopes, args.repeat),
    }
    result = {
        "settings": {
            "orders": len(orders),
            "envelope": args.envelope,
            "batch": args.batch,
            "partitions": args.partitions,
            "mix": mix,
            "seed": args.seed,
            "bad_rate": args.bad_rate,
            "skus_toml": args.skus_toml,
            "repeat": args.repeat,
        },
        "machine": machine,
        "generate_s": generate_s,
        "prepare_s": prepare_s,
        "ingest_dead": inp.ingest_dead,
        "normalise": norm,
        "normalise_per_channel": per_channel,
        "order_stage": order,
        "dedup": dedup,
        "ingest": ingest,
        "compression": comp,
        "estimate": estimate_worker(norm, order, comp, args.compression),
        "bar": {
            "normalise_orders_per_s": NORMALISE_BAR,
            "stage_cpu_meets": norm["orders_per_s"] >= NORMALISE_BAR,
            "dedup_orders_per_s": DEDUP_BAR,
            "dedup_meets": dedup["orders_per_s"] >= DEDUP_BAR,
            "dedup_meets_with_take500": dedup["variants"]["take500"]["orders_per_s"] >= DEDUP_BAR,
        },
    }
    result["bar"]["estimate_meets"] = result["estimate"]["normalise_orders_per_s"] >= NORMALISE_BAR
    return result


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="python -m bench.stages",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--orders", type=int, default=100_000)
    p.add_argument("--envelope", type=int, default=500, help="records per envelope")
    p.add_argument("--batch", type=int, default=500, help="orders per ingest request")
    p.add_argument("--partitions", type=int, default=4)
    p.add_argument("--mix", default="", help="e.g. shopify=0.3,tiktok=0.2,taobao=0.5")
    p.add_argument("--bad-rate", type=float, default=0.0, help="invalid payloads (dead letters)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument(
        "--skus-toml",
        default=str(ROOT / "config" / "skus.toml"),
        help="SKU alias table, as orderstream.toml configures it ('' = none)",
    )
    p.add_argument(
        "--compression",
        default="zstd",
        choices=[c[0] for c in CODECS],
        help="producer compression assumed in the worker estimate",
    )
    p.add_argument("--repeat", type=int, default=3, help="runs per measurement; best is kept")
    p.add_argument("--json", default="", help="write the results here too")
    p.add_argument("--tmp", default="", help="directory for the RocksDB stores and journals")
    p.add_argument("--profile", action="store_true", help="cProfile the normalise stage only")
    p.add_argument("--profile-top", type=int, default=15)
    args = p.parse_args(argv)
    if args.orders < 1 or args.envelope < 1 or args.batch < 1 or args.repeat < 1:
        p.error("--orders, --envelope, --batch and --repeat must be >= 1")
    result = run(args)
    if not result:
        return
    print_report(result)
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2, default=str) + "\n")
        print(f"wrote {path}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
