"""A real Prometheus scrapes the real service: the counts it sees are the orders we sent.

Starts `orderstream serve` (embedded broker, loopback ports), posts a known number of orders
over HTTP, then runs Debian's `prometheus` binary on a free loopback port with a temporary
config (scrape /metrics every second, ops/prometheus/alerts.yml loaded) and a temporary TSDB,
and asks it over its HTTP API. Prometheus is always stopped by the fixture.

With authentication (settings ``auth``/``metrics_port``) the service serves /metrics without
credentials on its own scrape port, which is what Prometheus scrapes here, and the orders are
posted with the bootstrap key the service creates on first start.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.settings import Settings
from tests.integration.conftest import ROOT, Response, Service, free_port, pid_alive
from tests.integration.helpers import fixture_files, shopify_order
from tests.ops.test_ops_assets import dashboard, dashboard_queries, fill_variables, promtool

pytestmark = pytest.mark.integration

ALERTS = ROOT / "ops" / "prometheus" / "alerts.yml"
BATCH = 40  # shopify orders in one NDJSON batch (plus one malformed line, refused)
SINGLES = 10  # shopify orders posted one by one


def prometheus_binary() -> str:
    path = shutil.which("prometheus")
    if path is None:
        message = "prometheus not installed (Debian package `prometheus`; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


class Prometheus:
    """One Prometheus server with its own port, config and TSDB directory."""

    def __init__(self, workdir: Path, target: str) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.config = workdir / "prometheus.yml"
        self.log_path = workdir / "prometheus.log"
        self.config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  evaluation_interval: 1s\n"
            "rule_files:\n"
            f"  - {json.dumps(str(ALERTS))}\n"
            "scrape_configs:\n"
            "  - job_name: orderstream\n"
            "    scrape_interval: 1s\n"
            "    scrape_timeout: 1s\n"
            "    static_configs:\n"
            f"      - targets: [{json.dumps(target)}]\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        self.proc = subprocess.Popen(
            [
                prometheus_binary(),
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1h",
                "--log.level=warn",
            ],
            cwd=self.workdir,
            stdout=open(self.log_path, "ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C of pytest reaches it only through the fixture
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited {self.proc.returncode}:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.base + "/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise TimeoutError(f"prometheus not ready in {timeout}s:\n{self.log()}")

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        assert not pid_alive(self.proc.pid), "prometheus outlived its stop"

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return ""

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.base}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(url, timeout=10) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as err:
            body = json.loads(err.read())
        assert body["status"] == "success", f"{path} {params}: {body}"
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return data["result"]

    def wait_true(self, expr: str, timeout: float = 60.0) -> None:
        """Until a filtering expression (e.g. ``x >= 3``) returns anything."""
        deadline = time.monotonic() + timeout
        while not self.query(expr):
            assert time.monotonic() < deadline, f"{expr} still empty after {timeout}s"
            time.sleep(0.25)

    def wait_value(self, expr: str, expected: float, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if result and float(result[0]["value"][1]) == expected:
                return
            time.sleep(0.25)
        raise AssertionError(
            f"{expr} is {result} after {timeout}s, expected {expected}\n{self.log()}"
        )


def ingested_by_channel(text: str) -> Counter[str]:
    """orderstream_ingested_total per channel, from the Prometheus text of /metrics."""
    counts: Counter[str] = Counter()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "orderstream_ingested_total":
                assert sample.labels["transport"] == "http", sample
                counts[sample.labels["channel"]] += int(sample.value)
    return counts


class Orderstream:
    """The service under test, with its credential (if it has authentication) and scrape URL."""

    def __init__(self, service: Service, metrics_port: int) -> None:
        self.service = service
        self.metrics_port = metrics_port or service.http_port
        key = service.data_dir / "auth" / "bootstrap.key"  # created on first start, auth on
        self.headers = (
            {"Authorization": f"Bearer {key.read_text().strip()}"} if key.exists() else {}
        )

    def post(self, channel: str, body: bytes, **headers: str) -> Response:
        headers = {"X-Channel": channel, **self.headers, **headers}
        return self.service.request("POST", "/v1/orders", body, headers)

    def metrics_text(self, port: int) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as resp:
            assert resp.status == 200
            return resp.read().decode()


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orderstream]:
    scrape_port = free_port() if "metrics_port" in Settings.__struct_fields__ else 0
    env = {"ORDERSTREAM_METRICS_PORT": str(scrape_port)} if scrape_port else {}
    service = Service(tmp_path_factory.mktemp("prom-svc") / "data", env)
    service.start()
    try:
        yield Orderstream(service, scrape_port)
    finally:
        assert service.stop() == 0


@pytest.fixture(scope="module")
def sent(svc: Orderstream) -> Counter[str]:
    """Post orders over HTTP; what was accepted, per channel."""
    accepted: Counter[str] = Counter()
    batch = [shopify_order(7_300_000 + i) for i in range(BATCH)]
    body = b"\n".join([*batch[:5], b'{"id": 1, oops', *batch[5:]]) + b"\n"
    resp = svc.post("shopify", body, **{"Content-Type": "application/x-ndjson"})
    assert resp.status == 202, resp.body
    assert (resp.headers["X-Accepted"], resp.headers["X-Rejected"]) == (str(BATCH), "1")
    accepted["shopify"] += BATCH
    for i in range(SINGLES):
        resp = svc.post("shopify", shopify_order(7_400_000 + i))
        assert resp.status == 202, resp.body
        accepted["shopify"] += 1
    for channel, path in fixture_files():  # every channel's own shape, once
        resp = svc.post(channel, path.read_bytes())
        assert resp.status == 202, (path, resp.body)
        accepted[channel] += 1
    # refused at the door, never counted as ingested
    assert svc.post("shopify", b"").status == 400
    assert svc.post("nowhere", b"{}").status == 400
    return accepted


@pytest.fixture(scope="module")
def prometheus(
    svc: Orderstream, sent: Counter[str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Prometheus]:
    prom = Prometheus(tmp_path_factory.mktemp("prometheus"), f"127.0.0.1:{svc.metrics_port}")
    try:
        prom.start()
        yield prom
    finally:
        prom.stop()


def test_metrics_text_parses_and_counts_what_was_sent(svc: Orderstream, sent: Counter[str]) -> None:
    assert sum(sent.values()) == BATCH + SINGLES + len(fixture_files())
    # what Prometheus scrapes (the scrape port, or the API port without authentication)
    text = svc.metrics_text(svc.metrics_port)
    names = {f.name for f in text_string_to_metric_families(text)}  # parses, every line
    assert {"orderstream_ingested", "orderstream_journal_depth"} <= names
    assert ingested_by_channel(text) == sent
    # the API port's /metrics says the same to a reader with a key
    resp = svc.service.request("GET", "/metrics", headers=svc.headers)
    assert resp.status == 200, resp.body
    assert ingested_by_channel(resp.body.decode()) == sent


def test_exposition_passes_promtool_lint(svc: Orderstream, sent: Counter[str]) -> None:
    text = svc.metrics_text(svc.metrics_port).encode()
    lint = subprocess.run(
        [promtool(), "check", "metrics"], input=text, capture_output=True, timeout=60
    )
    assert lint.returncode == 0, (lint.stdout + lint.stderr).decode()


def test_prometheus_scrapes_the_ingested_count(
    prometheus: Prometheus, svc: Orderstream, sent: Counter[str]
) -> None:
    total = sum(sent.values())
    prometheus.wait_value("sum(orderstream_ingested_total)", total)
    prometheus.wait_value('up{job="orderstream"}', 1)
    by_channel = {
        r["metric"]["channel"]: int(float(r["value"][1]))
        for r in prometheus.query("sum by (channel) (orderstream_ingested_total)")
    }
    assert by_channel == dict(sent)
    # and the pipeline recorded every one of them
    svc.service.wait_drained()
    prometheus.wait_value("sum(orderstream_journal_depth)", 0)


def test_alert_rules_load_and_evaluate_without_error(prometheus: Prometheus) -> None:
    deadline = time.monotonic() + 30
    while True:
        rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
        # lastEvaluation is "0001-01-01T00:00:00Z" until a rule was evaluated once
        if rules and all(not r["lastEvaluation"].startswith("0001") for r in rules):
            break
        assert time.monotonic() < deadline, f"rules not evaluated: {rules}"
        time.sleep(0.5)
    assert {r["name"] for r in rules} >= {"OrderstreamOversold", "OrderstreamConsumerLagRising"}
    for rule in rules:
        assert rule["health"] == "ok", rule
    assert prometheus.query("sum(orderstream_oversold_total)")[0]["value"][1] == "0"
    firing = [
        a["labels"]["alertname"]
        for a in prometheus.api("alerts")["alerts"]
        if a["labels"].get("severity") == "critical"
    ]
    assert not firing, firing


def test_every_dashboard_query_runs(prometheus: Prometheus, sent: Counter[str]) -> None:
    prometheus.wait_value("sum(orderstream_ingested_total)", sum(sent.values()))
    # rate() needs two samples in its window: a few scrapes first
    prometheus.wait_true("min(count_over_time(orderstream_ingested_total[10s])) >= 3")
    for where, expr in dashboard_queries(dashboard()):
        if expr.startswith("label_values("):
            values = prometheus.api("label/job/values", **{"match[]": "orderstream_ingested_total"})
            assert values == ["orderstream"], where
            continue
        prometheus.query(fill_variables(expr).replace("[1m]", "[10s]"))  # status success
    rate = prometheus.query('sum by (channel) (rate(orderstream_ingested_total{job=~".*"}[10s]))')
    assert {r["metric"]["channel"] for r in rate} == set(sent)
