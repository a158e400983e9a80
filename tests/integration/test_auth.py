"""Authentication against the real service: no write path takes an unauthenticated or tampered
request; keys are scoped, channel-bound, rotatable and revocable live; secrets never logged."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.credentials import body_hmac
from tests.integration.conftest import ROOT, Service, free_port
from tests.integration.helpers import shopify_order

pytestmark = pytest.mark.integration

CHANNEL_SECRET = "shpss_0123456789abcdef"


def _keys(svc: Service, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "keys", "--data-dir", str(svc.data_dir), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(scope="module")
def svc(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    service = Service(
        tmp_path_factory.mktemp("auth") / "data",
        {"ORDERSTREAM_METRICS_PORT": str(free_port())},
    )
    service.start()
    try:
        yield service
    finally:
        assert service.stop() == 0


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


WRITES = [
    ("POST", "/v1/orders", shopify_order(61_000_001), {"X-Channel": "shopify"}),
    ("POST", "/v1/orders/os_x/events", b'{"event": "pick_start"}', {}),
    ("PUT", "/v1/stock/SKU-A", b'{"warehouse": "main", "on_hand": 5}', {}),
    ("POST", "/v1/stock/SKU-A/receipts", b'{"warehouse": "main", "quantity": 5}', {}),
    ("POST", "/v1/stock/SKU-A/corrections", b'{"warehouse": "main", "quantity": -1}', {}),
    ("POST", "/v1/review/os_x/approve", b"", {}),
    ("POST", "/v1/webhooks", b'{"url": "http://127.0.0.1:1/h"}', {}),
    ("DELETE", "/v1/webhooks/wh_x", None, {}),
    ("POST", "/v1/webhooks/wh_x/redeliver", b"", {}),
]
READS = [
    "/v1/orders/os_x",
    "/v1/review",
    "/v1/stock/SKU-A",
    "/v1/stock-audit",
    "/v1/dead-letters",
    "/v1/webhooks",
    "/v1/subscribers",
    "/v1/stream",
    "/metrics",
]


def test_no_endpoint_answers_without_a_valid_credential(svc: Service) -> None:
    bad = ["", "Bearer nope", "Bearer osk_000000000000_secret", "Basic dXNlcjpwYXNz"]
    bootstrap = svc.api_key
    tampered = bootstrap[:-2] + ("AA" if not bootstrap.endswith("AA") else "BB")
    bad.append(f"Bearer {tampered}")
    for method, path, body, headers in WRITES:
        for auth in bad:
            h = {**headers, **({"Authorization": auth} if auth else {})}
            resp = svc.request(method, path, body, h, auth=False)
            assert resp.status == 401, (method, path, auth, resp.status)
            assert resp.json()["error"]["field"] == "Authorization"
            assert resp.headers.get("WWW-Authenticate", "").startswith("Bearer")
    for path in READS:
        assert svc.request("GET", path, auth=False).status == 401, path
    assert svc.request("GET", "/health", auth=False).status in (200, 503)  # probes stay open
    log = svc.log()
    assert bootstrap not in log and tampered not in log  # never logged
    assert "bootstrap.key" in log  # where the first key went is said


def test_scopes_channels_rotation_and_revocation(svc: Service) -> None:
    gateway = _keys(svc, "add", "gw-tiktok", "--scopes", "ingest", "--channels", "tiktok")
    reader = _keys(svc, "add", "dashboard", "--scopes", "read")
    time.sleep(1.5)  # the service re-reads the key file within a second
    order = shopify_order(61_000_002)
    # an ingest key bound to tiktok cannot post shopify orders, nor read, nor write events
    resp = svc.request(
        "POST", "/v1/orders", order, {"X-Channel": "shopify", **_bearer(gateway)}, auth=False
    )
    assert resp.status == 403 and "shopify" in resp.json()["error"]["reason"]
    assert svc.request("GET", "/v1/review", None, _bearer(gateway), auth=False).status == 403
    assert svc.request("GET", "/v1/review", None, _bearer(reader), auth=False).status == 200
    resp = svc.request(
        "PUT",
        "/v1/stock/SKU-B",
        b'{"warehouse": "main", "on_hand": 1}',
        _bearer(reader),
        auth=False,
    )
    assert resp.status == 403  # read scope cannot write
    # rotation: the new key works at once, the old one until its grace ends (0 h = now)
    new = _keys(svc, "rotate", "dashboard", "--grace-hours", "0")
    time.sleep(1.5)
    assert svc.request("GET", "/v1/review", None, _bearer(new), auth=False).status == 200
    assert svc.request("GET", "/v1/review", None, _bearer(reader), auth=False).status == 401
    assert "dashboard" in _keys(svc, "list") and new not in _keys(svc, "list")
    _keys(svc, "revoke", "dashboard")
    time.sleep(1.5)
    assert svc.request("GET", "/v1/review", None, _bearer(new), auth=False).status == 401
    stored = (svc.data_dir / "auth" / "keys.json").read_text()
    assert gateway.split("_", 2)[2] not in stored  # only hashes at rest
    assert oct((svc.data_dir / "auth" / "keys.json").stat().st_mode & 0o777) == "0o600"


def test_channel_webhooks_signed_with_hmac_are_accepted_and_tampered_ones_not(
    svc: Service,
) -> None:
    _keys(svc, "channel-secret", "shopify", "--secret", CHANNEL_SECRET)
    time.sleep(1.5)
    order = shopify_order(61_000_003)
    sig = body_hmac(CHANNEL_SECRET, order)
    ok = svc.request(
        "POST",
        "/v1/orders",
        order,
        {"X-Channel": "shopify", "X-Shopify-Hmac-Sha256": sig},
        auth=False,
    )
    assert ok.status == 202, ok.body
    tampered = order.replace(b'"currency"', b'"currency" ', 1)
    resp = svc.request(
        "POST",
        "/v1/orders",
        tampered,
        {"X-Channel": "shopify", "X-Shopify-Hmac-Sha256": sig},
        auth=False,
    )
    assert resp.status == 401 and "does not sign" in resp.json()["error"]["reason"]
    # the signature only vouches for ingest of that channel: it opens nothing else
    resp = svc.request(
        "POST",
        "/v1/orders/os_x/events",
        b'{"event": "cancel"}',
        {"X-Channel": "shopify", "X-Shopify-Hmac-Sha256": sig},
        auth=False,
    )
    assert resp.status == 401


def test_failures_are_counted_and_metrics_have_their_own_open_port(svc: Service) -> None:
    port = int(svc.env["ORDERSTREAM_METRICS_PORT"])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    failures = {
        s.labels["reason"]: s.value
        for fam in text_string_to_metric_families(text)
        if fam.name == "orderstream_auth_failures"
        for s in fam.samples
        if s.name.endswith("_total")
    }
    assert failures.get("missing", 0) >= len(WRITES) and failures.get("scope", 0) >= 1
    assert failures.get("bad_signature", 0) >= 1
    # the API port's /metrics still needs a read key
    assert svc.request("GET", "/metrics", auth=False).status == 401
    body = json.loads(svc.request("GET", "/v1/subscribers").body)
    assert "subscribers" in body
