from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram

from streams.metrics import LATENCY_BUCKETS, observe_many


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
