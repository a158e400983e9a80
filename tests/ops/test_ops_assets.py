"""Operator assets: the Grafana dashboard, the Prometheus alert rules and the example config.

- promtool validates the rules, runs their unit tests (ops/prometheus/alerts_test.yml) and
  checks the example config;
- every panel query of the dashboard is valid PromQL (promtool again, with Grafana's variables
  filled in) and is laid out on the grid;
- every ``orderstream_*`` series any of them reads is one streams/metrics.py exposes, read at
  test time from the metric objects themselves (a renamed metric breaks this test, not a
  dashboard in production).

promtool comes from Debian's ``prometheus`` package (.ci/run installs it). Without it these
tests skip locally and fail under CI.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

ROOT = Path(__file__).resolve().parents[2]
OPS = ROOT / "ops"
DASHBOARD = OPS / "grafana" / "orderstream.json"
ALERTS = OPS / "prometheus" / "alerts.yml"
ALERTS_TEST = OPS / "prometheus" / "alerts_test.yml"
PROMETHEUS_YML = OPS / "prometheus" / "prometheus.yml"

METRIC_TOKEN = re.compile(r"\borderstream_[a-z0-9_]*[a-z0-9]")
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# Grafana's variables, filled in the way Grafana would for a 1 h dashboard and all jobs.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "1h", "$job": ".*"}

# What the dashboard must show (brief: one panel or query per family at least).
DASHBOARD_SERIES = {
    "orderstream_ingested_total",
    "orderstream_normalised_total",
    "orderstream_duplicates_total",
    "orderstream_dead_letters_total",
    "orderstream_http_refused_total",
    "orderstream_reservations_total",
    "orderstream_oversold_total",
    "orderstream_stock_alerts_total",
    "orderstream_stock_below_safety",
    "orderstream_sla_breaches_total",
    "orderstream_state_transitions_total",
    "orderstream_end_to_end_seconds_bucket",
    "orderstream_change_published_seconds_bucket",
    "orderstream_journal_depth",
    "orderstream_consumer_lag",
    "orderstream_subscribers",
    "orderstream_subscriber_drops_total",
    "orderstream_sync_events_total",
    "orderstream_webhook_deliveries_total",
    "orderstream_webhook_backlog_events",
    "orderstream_broker_epochs_total",
}
ALERT_NAMES = {
    "OrderstreamOversold",
    "OrderstreamFlowBreakRateHigh",
    "OrderstreamManualInterventionsHigh",
    "OrderstreamOnTimeShipmentLow",
    "OrderstreamReconcileFoundMissedOrders",
    "OrderstreamReconcileFailing",
    "OrderstreamConsumerLagRising",
    "OrderstreamSLABreach",
    "OrderstreamJournalDepthHigh",
    "OrderstreamJournalDepthGrowing",
    "OrderstreamWebhookDeadLetters",
    "OrderstreamSubscriberDropsSpike",
    "OrderstreamChangePublishedSlow",
}
# Alerts whose unit tests must show them firing on a bad series and silent on healthy ones.
ALERTS_UNIT_TESTED = {
    "OrderstreamOversold",
    "OrderstreamConsumerLagRising",
    "OrderstreamSLABreach",
    "OrderstreamReconcileFoundMissedOrders",
    "OrderstreamReconcileFailing",
    "OrderstreamFlowBreakRateHigh",
    "OrderstreamManualInterventionsHigh",
    "OrderstreamOnTimeShipmentLow",
}

# The series names a metric family exposes, by type (prometheus_client naming: a Counter's
# family name has no _total; its samples do).
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "enum": ("",),
    "unknown": ("",),
}


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool not installed (Debian package `prometheus`; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def run_promtool(*args: str) -> str:
    proc = subprocess.run(
        [promtool(), *args], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"promtool {' '.join(args)} failed:\n{out}"
    return out


def exposed_series_names() -> set[str]:
    """Every series name streams/metrics.py can expose, read from the live metric objects."""
    import streams.metrics as metrics_module

    names: set[str] = set()
    families = []
    for value in vars(metrics_module).values():
        if isinstance(value, MetricWrapperBase):
            families.extend(value.describe())
    families.extend(REGISTRY.collect())  # anything else registered (collectors), with samples
    for family in families:
        if not family.name.startswith("orderstream_"):
            continue
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    assert names, "streams.metrics defines no orderstream_* metric"
    return names


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from all_panels(panel.get("panels", []))  # collapsed rows hold their panels


def dashboard_queries(dash: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target and every query variable."""
    queries = []
    for panel in all_panels(dash["panels"]):
        for target in panel.get("targets", []):
            queries.append((f"panel {panel['id']} {panel['title']!r} {target['refId']}", target))
    out = [(where, t["expr"]) for where, t in queries]
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]
            out.append(
                (f"variable {var['name']}", query["query"] if isinstance(query, dict) else query)
            )
    return out


def fill_variables(expr: str) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable in {expr!r}"
    return expr


def unknown_metric_names(text_by_place: list[tuple[str, str]]) -> dict[str, list[str]]:
    exposed = exposed_series_names()
    unknown: dict[str, list[str]] = {}
    for where, text in text_by_place:
        for token in METRIC_TOKEN.findall(text):
            if token not in exposed:
                unknown.setdefault(token, []).append(where)
    return unknown


def _explain(unknown: dict[str, list[str]]) -> str:
    lines = [
        f"  {name}  (used in {', '.join(sorted(set(places))[:3])})"
        for name, places in unknown.items()
    ]
    return (
        "series names not exposed by streams/metrics.py (a counter is read as <name>_total, a"
        " histogram as <name>_bucket/_sum/_count, a gauge as <name>):\n" + "\n".join(sorted(lines))
    )


# -- Prometheus --------------------------------------------------------------------------------


def test_alert_rules_are_valid() -> None:
    out = run_promtool("check", "rules", str(ALERTS))
    assert "SUCCESS" in out


def test_alert_rules_unit_tests_pass() -> None:
    out = run_promtool("test", "rules", str(ALERTS_TEST))
    assert "SUCCESS" in out


def test_example_prometheus_config_is_valid() -> None:
    out = run_promtool("check", "config", str(PROMETHEUS_YML))
    assert "alerts.yml" in out, "the example config loads the alert rules"
    text = PROMETHEUS_YML.read_text()
    assert "127.0.0.1:8080" in text


def test_the_alerts_we_promise_exist_and_are_annotated() -> None:
    text = ALERTS.read_text()
    names = re.findall(r"^\s*- alert:\s*(\S+)\s*$", text, re.M)
    assert len(names) == len(set(names)), "alert names are unique"
    assert ALERT_NAMES <= set(names), ALERT_NAMES - set(names)
    # every rule block has both annotations
    blocks = re.split(r"^\s*- alert:", text, flags=re.M)[1:]
    for name, block in zip(names, blocks, strict=True):
        assert re.search(r"^\s+summary:", block, re.M), f"{name} has no summary"
        assert re.search(r"^\s+description:", block, re.M), f"{name} has no description"
        assert re.search(r"^\s+severity:\s*(critical|warning)\s*$", block, re.M), name
    tested = set(re.findall(r"^\s*alertname:\s*(\S+)\s*$", ALERTS_TEST.read_text(), re.M))
    assert ALERTS_UNIT_TESTED <= tested, ALERTS_UNIT_TESTED - tested


def test_alert_rules_read_only_metrics_that_exist() -> None:
    places = [
        (f"{path.name}:{n}", line)
        for path in (ALERTS, ALERTS_TEST)
        for n, line in enumerate(path.read_text().splitlines(), 1)
    ]
    unknown = unknown_metric_names(places)
    assert not unknown, _explain(unknown)


# -- Grafana -----------------------------------------------------------------------------------


def test_dashboard_is_importable_json() -> None:
    dash = dashboard()
    assert dash["title"] == "orderstream"
    assert dash["uid"] == "orderstream"
    assert 36 <= dash["schemaVersion"] <= 41
    inputs = {i["name"]: i for i in dash["__inputs"]}
    assert inputs["DS_PROMETHEUS"]["type"] == "datasource"
    assert inputs["DS_PROMETHEUS"]["pluginId"] == "prometheus"
    assert dash.get("id") is None, "an exported dashboard carries no database id"
    ids = [p["id"] for p in all_panels(dash["panels"])]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in all_panels(dash["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["type"] in ("timeseries", "stat"), panel["type"]
        assert panel["title"] and panel.get("description"), panel["id"]
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip(), panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), panel["title"]
    for var in dash["templating"]["list"]:
        assert var["datasource"] == DATASOURCE


def test_dashboard_panels_fit_the_grid_without_overlap() -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in all_panels(dashboard()["panels"]):
        pos = panel["gridPos"]
        assert pos["x"] >= 0 and pos["w"] >= 1 and pos["x"] + pos["w"] <= 24, panel["title"]
        for x in range(pos["x"], pos["x"] + pos["w"]):
            for y in range(pos["y"], pos["y"] + pos["h"]):
                assert (x, y) not in taken, f"{panel['title']!r} overlaps {taken[(x, y)]!r}"
                taken[(x, y)] = panel["title"]


def test_dashboard_shows_every_family_we_promise() -> None:
    used = {
        token for _, expr in dashboard_queries(dashboard()) for token in METRIC_TOKEN.findall(expr)
    }
    missing = DASHBOARD_SERIES - used
    assert not missing, f"no panel reads {sorted(missing)}"


def test_oversold_is_a_red_stat() -> None:
    panels = [
        p
        for p in all_panels(dashboard()["panels"])
        if any("orderstream_oversold_total" in t["expr"] for t in p.get("targets", []))
    ]
    assert panels, "a panel shows orderstream_oversold_total"
    for panel in panels:
        assert panel["type"] == "stat"
        steps = panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        assert steps[0]["color"] == "green" and steps[0]["value"] is None
        red = [s for s in steps if s["color"] == "red"]
        assert red and 0 < red[0]["value"] <= 1, "anything above 0 is red"
        assert panel["options"]["colorMode"] == "background"


def test_latency_panels_are_quantiles_by_lane() -> None:
    exprs = [e for _, e in dashboard_queries(dashboard())]
    for histogram in ("orderstream_end_to_end_seconds", "orderstream_change_published_seconds"):
        for q in ("0.5", "0.99"):
            assert any(
                e.startswith(f"histogram_quantile({q},")
                and f"{histogram}_bucket" in e
                and re.search(r"sum by \(le, lane\)", e)
                for e in exprs
            ), (histogram, q)


def test_dashboard_reads_only_metrics_that_exist() -> None:
    unknown = unknown_metric_names(dashboard_queries(dashboard()))
    assert not unknown, _explain(unknown)


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """Each query (variables filled in) as a recording rule: promtool parses every one."""
    rules = [
        {"record": f"dashboard_query_{n}", "expr": fill_variables(expr)}
        for n, (_, expr) in enumerate(dashboard_queries(dashboard()))
        if not expr.startswith("label_values(")  # a Grafana function, not PromQL
    ]
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(json.dumps({"groups": [{"name": "dashboard", "rules": rules}]}))  # JSON is YAML
    out = run_promtool("check", "rules", str(path))
    assert f"SUCCESS: {len(rules)} rules found" in out, out
