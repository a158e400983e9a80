"""The front-door and idle benchmarks, each in one tiny real run (service, wrk, JSON)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


def _bench(tmp_path: Path, module: str, *args: str) -> dict[str, Any]:
    """Run ``python -m bench.<module> *args`` for real; its JSON result."""
    out = tmp_path / f"{module}.json"
    cmd = [sys.executable, "-m", f"bench.{module}", *args, "--json", str(out)]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result: dict[str, Any] = json.loads(out.read_text())
    return result


@pytest.mark.skipif(shutil.which("wrk") is None, reason="Debian's wrk (.ci/run installs it)")
def test_a_tiny_paced_door_run_counts_every_order_in_and_out(tmp_path: Path) -> None:
    r = _bench(tmp_path, "door", "--rate", "300", "--seconds", "4", "--connections", "16")
    assert r["non_2xx"] == 0 and r["orders_missing"] == 0 and r["orders_unexpected"] == 0
    assert r["orders_sent"] > 0 and r["accepted_to_subscriber_ms"]["n"] >= r["orders_sent"]
    assert 150 <= r["requests_per_s"] <= 330  # paced at 300/s, not flat out
    assert r["wrk_cpu_ms_per_request"] > 0 and set(r["cpu_ms_per_request"]) >= {"api", "worker"}
    assert r["longest_without_an_order_out_s"] > 0 and r["memory"]["samples"] >= 1


def test_a_tiny_broker_bytes_run_names_every_hot_topic(tmp_path: Path) -> None:
    r = _bench(tmp_path, "broker_bytes", "--orders", "1000", "--rate", "0")
    assert r["orders_accepted"] == 1000
    carried = {t for t, row in r["per_topic"].items() if row["messages"]}
    assert {"orders.raw", "orders.recipient", "orders.unique", "orders.changes"} <= carried
    assert 0 < r["total_zstd_bytes_per_order"] < r["total_bytes_per_order"]


def test_an_idle_run_reports_every_role(tmp_path: Path) -> None:
    r = _bench(tmp_path, "idle", "--seconds", "3", "--settle", "2")
    assert set(r["cpu_percent_of_one_core"]) == {"api", "broker", "worker"}
    assert r["total_percent_of_one_core"] >= 0
