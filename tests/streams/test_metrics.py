from __future__ import annotations

import os
import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from streams.metrics import LATENCY_BUCKETS, exposition, observe_many, reap


def _samples(h: Histogram) -> dict[str, float]:
    return {
        f"{s.name}{s.labels}": s.value for s in h.collect()[0].samples if "created" not in s.name
    }


@given(st.lists(st.floats(min_value=0, max_value=100, allow_nan=False), max_size=200))
def test_observe_many_equals_observing_one_by_one(values: list[float]) -> None:
    one = Histogram("one", "x", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    many = Histogram("one", "x", buckets=LATENCY_BUCKETS, registry=CollectorRegistry())
    for v in values:
        one.observe(v)
    observe_many(many, values)
    a, b = _samples(one), _samples(many)
    assert a.keys() == b.keys()
    for k in a:
        assert abs(a[k] - b[k]) <= 1e-9 * max(1.0, abs(a[k])), k


_CHILD = """
from prometheus_client import Counter, Gauge, Histogram
Counter("t_orders", "x", ["ch"]).labels("a").inc(3)
Histogram("t_lat", "x").observe(0.2)
Gauge("t_depth", "x", multiprocess_mode="livesum").set(5)
"""


def _values(text: bytes) -> dict[str, float]:
    out = {}
    for line in text.decode().splitlines():
        if line.startswith("t_"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def test_reaped_children_keep_their_counts_in_one_archive(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A restarted worker's counters survive in the archive; its files and live gauges go."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=str(tmp_path))
    for _ in range(3):
        subprocess.run([sys.executable, "-c", _CHILD], env=env, check=True)
    pids = sorted({int(f.stem.rsplit("_", 1)[1]) for f in tmp_path.glob("counter_*.db")})
    assert len(pids) == 3
    before = _values(exposition()[0])
    assert before['t_orders_total{ch="a"}'] == 9
    assert before["t_depth"] == 15  # the dead children's live gauges still count...
    for pid in pids:
        reap(pid)
    after = _values(exposition()[0])
    assert "t_depth" not in after  # ...until they are reaped
    del before["t_depth"]
    assert after == before
    left = sorted(f.name for f in tmp_path.iterdir())
    assert left == ["counter_archive.db", "histogram_archive.db"]
    reap(pids[0])  # twice: nothing left to fold
    assert _values(exposition()[0])['t_orders_total{ch="a"}'] == 9
