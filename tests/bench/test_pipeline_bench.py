"""The pipeline benchmark's bookkeeping, and one tiny real run (service, SSE subscriber, JSON)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.pipeline import (
    RSS_EVERY_S,
    Schedule,
    longest_gap_s,
    memory_summary,
    per_second,
    recovery_s,
)
from bench.soak import outside_faults

ROOT = Path(__file__).resolve().parents[2]


def test_schedule_due_times_follow_the_phases() -> None:
    s = Schedule([(100, 2), (1000, 1), (100, 1)])
    assert s.total == 1300
    assert s.due(0) == 0 and s.due(100) == 1.0 and s.due(200) == 2.0
    assert s.due(700) == pytest.approx(2.5) and s.due(1250) == pytest.approx(3.5)
    assert Schedule([(0, 0)]).due(10**6) == 0  # flat out


def test_per_second_rows_and_recovery() -> None:
    acks = {"a": 100.2, "b": 100.7, "c": 102.1}
    sent = {"a": 100.0, "b": 100.5, "c": 102.0}
    first = {"a": 100.3, "b": 101.5, "c": 102.2}
    rows = per_second(100.0, acks, first, sent)
    assert [(r["in"], r["out"]) for r in rows] == [(2, 1), (0, 1), (1, 1)]
    assert rows[1]["p99"] == pytest.approx(1000, abs=1)
    assert recovery_s(rows, 1, 250) == 1  # second 1 is over the bar, second 2 under
    assert recovery_s(rows, 0, 100) is None


@pytest.mark.integration
def test_memory_summary_says_how_long_the_service_was_over_its_budget(tmp_path: Path) -> None:
    rss = [
        {"t": 0.0, "api": 100.0, "worker": 200.0, "broker": 100.0},
        {"t": 2.0, "api": 100.0, "worker": 200.0, "broker": 450.0},  # 750: over 700
        {"t": 4.0, "api": 100.0, "worker": 250.0, "broker": 400.0},  # 750: over
        {"t": 6.0, "api": 100.0, "worker": 200.0, "broker": 50.0},
    ]
    (tmp_path / "stores" / "orders" / "0").mkdir(parents=True)
    (tmp_path / "stores" / "orders" / "0" / "000001.sst").write_bytes(b"x" * 2**20)
    log = "x broker replaced in 9.1s\ny restarting worker 1 to release its memory\n"
    m = memory_summary(rss, 700, log, tmp_path)
    assert m["peak_total_mib"] == 750 and m["peak_by_role_mib"]["broker"] == 450
    assert (m["samples_over_budget"], m["longest_over_budget_s"]) == (2, 2 * RSS_EVERY_S)
    assert (m["broker_replacements"], m["worker_recycles"]) == (1, 1)
    hot = "a broker swapped without a pause in 9.8s (next ready 8.5s)\n"
    m = memory_summary(rss, 700, log + hot, tmp_path)
    assert m["broker_replacements"] == 2 and m["broker_swaps_without_pause"] == 1
    assert m["swap_seconds"] == [9.1, 9.8]
    assert m["stores_on_disk_mib"] == {"orders": 1.0}
    assert memory_summary(rss, 0, "", tmp_path)["samples_over_budget"] == 0


def test_the_longest_stretch_without_an_order_out_counts_from_the_first_send() -> None:
    assert longest_gap_s(10.0, [10.5, 11.0, 13.5, 13.6]) == 2.5
    assert longest_gap_s(10.0, [14.0, 14.1]) == 4.0  # nothing out for the first 4 s
    assert longest_gap_s(10.0, []) == 0.0


def test_soak_latency_outside_the_fault_windows_leaves_out_each_faults_recovery() -> None:
    first = {  # id -> (accepted ms, seen at the subscriber ms)
        "a": (100, 200),
        "b": (1500, 9000),  # in the first fault's window
        "c": (5000, 5100),  # in the second's, which overlaps the first
        "d": (20000, 20300),
        "e": (30000, 30050),  # after a fault that never recovered
    }
    faults = [
        {"at_ms": 1000, "normal_s": 2.0},
        {"at_ms": 2500, "normal_s": 3.0},
        {"at_ms": 25000, "normal_s": None},
        {"kind": "slow subscriber"},  # no time: no window
    ]
    assert outside_faults(first, faults) == [100, 300]


def test_a_tiny_burst_run_counts_everything_in_and_out(tmp_path: Path) -> None:
    out = tmp_path / "burst.json"
    cmd = [sys.executable, "-m", "bench.pipeline", "burst", "--rate", "200", "--burst-x", "5"]
    cmd += ["--warmup-s", "1", "--burst-s", "2", "--recover-s", "2", "--json", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    r = json.loads(out.read_text())
    c = r["counts"]
    assert c["refused_lines"] == 0 and c["missing"] == 0
    assert c["distinct_ids_in"] == c["distinct_ids_out"] > 0
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert "p99 back under the bar after" in done.stdout
