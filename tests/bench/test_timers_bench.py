"""bench.timers bookkeeping without a service: lateness from an audit trail, percentiles, the
/metrics histogram, the shortened policy and the generated orders.

No service and no timing: the benchmark itself needs ~1 minute and a spawned ``orderstream
serve``; these checks keep its arithmetic honest in CI.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

# bench/ is not an installed package: make the repo root importable under plain `pytest` too
_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from bench import timers  # noqa: E402
from core.channels import NormaliseContext, normalise  # noqa: E402
from core.skus import SkuCatalog  # noqa: E402
from core.sla import SlaPolicy  # noqa: E402


def _entry(event: str, at: int, to_state: str = "pending_payment") -> dict[str, object]:
    return {"event": event, "at": at, "from_state": "", "to_state": to_state}


def test_lateness_is_fired_minus_recorded_plus_after() -> None:
    history = [
        _entry("order_received", 1_000_000),
        _entry("rule:set_priority", 1_000_000),
        _entry("payment_timeout", 1_005_730, "cancelled"),
    ]
    assert timers.lateness_ms(history, 5_000) == 730.0


def test_lateness_is_none_until_the_timer_fired() -> None:
    assert timers.lateness_ms([_entry("order_received", 1_000)], 5_000) is None
    assert timers.lateness_ms([], 5_000) is None
    # a cancellation by someone else is not the timer's
    history = [_entry("order_received", 1_000), _entry("cancel", 9_000, "cancelled")]
    assert timers.lateness_ms(history, 5_000) is None


def test_percentile_is_nearest_rank() -> None:
    v = [float(x) for x in range(1, 101)]  # 1..100
    assert timers.percentile(v, 0.50) == 50.0
    assert timers.percentile(v, 0.90) == 90.0
    assert timers.percentile(v, 0.99) == 99.0
    assert timers.percentile(v, 1.0) == 100.0
    assert timers.percentile([7.0], 0.99) == 7.0
    assert timers.percentile([1.0, 2.0], 0.5) == 1.0
    assert timers.percentile([], 0.5) is None


def test_summarise_sorts_and_counts() -> None:
    s = timers.summarise([30.0, 10.0, 20.0])
    assert s == {"n": 3, "min": 10.0, "p50": 20.0, "p90": 30.0, "p99": 30.0, "max": 30.0}
    assert timers.summarise([])["p99"] is None


METRICS_BEFORE = """\
# HELP orderstream_sla_timer_lateness_seconds How late an SLA deadline fired after it was due
# TYPE orderstream_sla_timer_lateness_seconds histogram
orderstream_sla_timer_lateness_seconds_bucket{le="0.5"} 1.0
orderstream_sla_timer_lateness_seconds_bucket{le="1.0"} 2.0
orderstream_sla_timer_lateness_seconds_bucket{le="2.0"} 2.0
orderstream_sla_timer_lateness_seconds_bucket{le="+Inf"} 2.0
orderstream_sla_timer_lateness_seconds_count 2.0
orderstream_sla_timer_lateness_seconds_sum 1.0
# HELP orderstream_events_applied_total Order events applied
# TYPE orderstream_events_applied_total counter
orderstream_events_applied_total 5.0
"""

METRICS_AFTER = """\
# HELP orderstream_sla_timer_lateness_seconds How late an SLA deadline fired after it was due
# TYPE orderstream_sla_timer_lateness_seconds histogram
orderstream_sla_timer_lateness_seconds_bucket{le="0.5"} 51.0
orderstream_sla_timer_lateness_seconds_bucket{le="1.0"} 100.0
orderstream_sla_timer_lateness_seconds_bucket{le="2.0"} 101.0
orderstream_sla_timer_lateness_seconds_bucket{le="+Inf"} 102.0
orderstream_sla_timer_lateness_seconds_count 102.0
orderstream_sla_timer_lateness_seconds_sum 61.0
"""


def test_histogram_parsed_and_diffed() -> None:
    before = timers.parse_histogram(METRICS_BEFORE, timers.LATENESS_METRIC)
    after = timers.parse_histogram(METRICS_AFTER, timers.LATENESS_METRIC)
    assert before.count == 2 and before.buckets[0] == (0.5, 1.0)
    run = after.minus(before)
    assert run.count == 100 and run.sum == 60.0
    assert run.buckets == [(0.5, 50.0), (1.0, 98.0), (2.0, 99.0), (math.inf, 100.0)]
    assert run.quantile_le(0.50) == 0.5
    assert run.quantile_le(0.98) == 1.0
    assert run.quantile_le(0.99) == 2.0
    assert run.quantile_le(1.0) == math.inf
    assert timers.hist_json(run)["p99_le_s"] == 2.0
    assert timers.hist_json(timers.Histogram())["p99_le_s"] is None


def test_histogram_missing_from_metrics_is_empty() -> None:
    h = timers.parse_histogram("# nothing here\n", timers.LATENESS_METRIC)
    assert h.count == 0 and h.buckets == [] and h.quantile_le(0.99) is None


def test_policy_shortens_payment_timeout_only(tmp_path: Path) -> None:
    dst = tmp_path / "sla.toml"
    timers.write_policy(dst, "5s")
    policy = SlaPolicy.from_toml(dst)
    assert policy.timers["payment_timeout"].after_ms == 5_000
    shipped = SlaPolicy.from_toml(timers.SLA_SOURCE)
    for kind, rule in shipped.timers.items():
        if kind != "payment_timeout":
            assert policy.timers[kind].after_ms == rule.after_ms


def test_policy_without_the_default_fails_loudly(tmp_path: Path) -> None:
    src = tmp_path / "src.toml"
    src.write_text('[timers.payment_timeout]\nafter = "1h"\n')
    with pytest.raises(RuntimeError, match="cannot shorten"):
        timers.write_policy(tmp_path / "out.toml", "5s", src)


def test_generated_orders_are_unpaid_and_distinct() -> None:
    template = json.loads(timers.FIXTURE.read_text())
    bodies = timers.ndjson_bodies(250, 100, template)
    assert [n for n, _ in bodies] == [100, 100, 50]
    lines = [ln for _, body in bodies for ln in body.splitlines()]
    ctx = NormaliseContext(skus=SkuCatalog.from_toml(Path(_ROOT) / "config" / "skus.toml"))
    orders = [normalise("shopify", ln, ctx) for ln in lines]
    assert all(o.payment_status == "unpaid" and o.paid == 0 for o in orders)
    assert not any("vip" in o.tags for o in orders)  # normal lane, not the priority one
    assert len({o.id for o in orders}) == 250
    assert len({o.recipient.phone for o in orders}) == 250
