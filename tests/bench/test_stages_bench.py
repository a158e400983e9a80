"""bench.stages on a few hundred orders: the stages it measures agree with each other.

No timing asserts: this only checks that the benchmark runs the real stages end to end and that
what it counts is consistent (every order in comes out canonical or as a dead letter; a
re-delivery pass changes nothing).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

# bench/ is not an installed package: make the repo root importable under plain `pytest` too
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from bench import stages  # noqa: E402
from bench.orders import OrderGenerator  # noqa: E402
from core.channels import NormaliseContext  # noqa: E402
from core.skus import SkuCatalog  # noqa: E402
from streams.kafka.envelope import CANONICAL_CODEC, DLQ_CODEC, RAW_CODEC  # noqa: E402

N = 200


@pytest.fixture(scope="module")
def inputs() -> stages.Inputs:
    orders = OrderGenerator(seed=11, bad_rate=0.05).generate(N)
    ctx = NormaliseContext(skus=SkuCatalog.from_toml(Path(_ROOT) / "config" / "skus.toml"))
    return stages.build_inputs(orders, ctx, partitions=4, envelope=50, batch=40)


def test_inputs_are_what_the_forwarder_would_send(inputs: stages.Inputs) -> None:
    raw = [r for env in inputs.raw_envelopes for r in RAW_CODEC.decode(env)]
    assert all(len(RAW_CODEC.decode(env)) <= 50 for env in inputs.raw_envelopes)
    assert len(raw) + inputs.ingest_dead == N
    assert all(r.origin is not None for r in raw)
    assert sorted(r.origin.seq for r in raw if r.origin) == sorted(
        seq for seq, e in inputs.journal_entries if e.rejection is None
    )


def test_normalise_stage_accounts_for_every_order(inputs: stages.Inputs) -> None:
    out = stages.normalise_stage_run(inputs)
    canonical = [r for _, env in out.canonical for r in CANONICAL_CODEC.decode(env)]
    dead = [d for _, env in out.dlq for d in DLQ_CODEC.decode(env)]
    assert out.records_in + inputs.ingest_dead == N
    assert len(canonical) == out.good and len(dead) == out.dead
    assert out.good + out.dead == out.records_in
    assert out.dead > 0  # bad_rate 0.05: bad amounts reach the stage and are dead-lettered
    # each seq exactly once, canonical or dead
    seqs = [r.origin.seq for r in canonical if r.origin] + [d.origin.seq for d in dead if d.origin]
    assert sorted(seqs) == sorted(seq for seq, e in inputs.journal_entries if e.rejection is None)


def test_order_stage_redelivery_changes_nothing(inputs: stages.Inputs, tmp_path: Path) -> None:
    out = stages.normalise_stage_run(inputs)
    first, second, unchanged, stored = stages.order_stage_run(
        out.canonical, tmp_path, inputs.partitions, inputs.envelope
    )
    assert first.records == second.records == out.good
    assert first.created + first.updated + first.unchanged == first.records
    ids = {r.order.id for _, env in out.canonical for r in CANONICAL_CODEC.decode(env)}
    assert first.created == stored == len(ids)
    assert first.settled == out.good
    assert (second.created, second.updated, second.keys_written) == (0, 0, 0)
    assert second.unchanged == second.records
    assert unchanged


def test_ingest_and_compression_run(inputs: stages.Inputs, tmp_path: Path) -> None:
    ingest = stages.bench_ingest(inputs, 1, tmp_path, fsync=False, inflight=2)
    assert ingest["orders"] == N
    assert ingest["accepted"] + inputs.ingest_dead == N
    comp = stages.bench_compression(inputs.raw_envelopes, 1)
    assert set(comp) == {"none", "zstd", "lz4", "gzip"}
    assert comp["none"]["ratio"] == 1.0 and comp["zstd"]["ratio"] > 1.0
