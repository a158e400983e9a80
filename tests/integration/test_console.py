"""The operator console in a real browser (Debian's chromium, driven by Playwright) against the
real service: sign in with a key, watch a flood's orders arrive live, approve a held
near-duplicate, find an order by channel + order number with its timeline, correct and replay a
dead letter, and a read-only key that sees no actions (and whose action the API refuses).
Screenshots of every view land in docs/console/ for the README.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ROOT, Service
from tests.integration.helpers import expected_id, shopify_order
from tests.integration.test_recipient_matching import shopify_original, tiktok_copy

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SHOTS = ROOT / "docs" / "console"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (.ci/run installs it)"
)


def make_key(svc: Service, name: str, scopes: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "streams.cli", "keys", "--data-dir", str(svc.data_dir), "add",
         name, "--scopes", scopes],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    time.sleep(1.5)  # the service re-reads its key file once a second
    return done.stdout.strip()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield b
        b.close()


def sign_in(page: Any, svc: Service, key: str) -> None:
    page.goto(f"{svc.base}/console")
    page.fill("#key", key)
    page.click("#signin-form button[type=submit]")
    page.wait_for_selector("#tabs:not([hidden])")


def shot(page: Any, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=False)


def test_console_end_to_end(service: Service, browser: Any) -> None:
    ops_key = make_key(service, "ops-ana", "read,write")
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    sign_in(page, service, ops_key)
    assert "ops-ana" in page.text_content("#who")
    # the key is in this tab's session storage, not in a cookie or the URL
    assert page.context.cookies() == [] and "osk_" not in page.url

    # a small flood appears live
    payloads = [shopify_order(93_000_000 + i) for i in range(40)]
    assert service.post_batch("shopify", payloads).status == 202
    deadline = time.monotonic() + 30
    seen = 0
    while time.monotonic() < deadline and seen < len(payloads):
        # read the DOM without evaluating script strings: the page's CSP forbids eval
        seen = int(page.get_attribute("#live-count", "data-orders") or 0)
        page.wait_for_timeout(250)
    assert seen >= len(payloads), seen
    rows = {r.get_attribute("data-order") for r in page.query_selector_all("#live tbody tr")}
    assert rows & {expected_id("shopify", p) for p in payloads}
    page.wait_for_timeout(2500)  # two metric polls: the charts have a rate
    assert "orders.raw" in page.text_content("#lag")  # lag per stage's topic
    shot(page, "flow")

    # a near-duplicate held for review: approve it, and it moves
    original, copy_ = shopify_original(93_100_001), tiktok_copy(93_100_002)
    assert service.post_order("shopify", original).status == 202
    service.wait_order(expected_id("shopify", original))
    assert service.post_order("tiktok", copy_).status == 202
    held_id = expected_id("tiktok", copy_)
    deadline = time.monotonic() + 30
    while service.wait_order(held_id)["state"] != "held" and time.monotonic() < deadline:
        time.sleep(0.2)
    page.click("#tabs button[data-view=review]")
    card = page.wait_for_selector(f".review[data-order='{held_id}']", timeout=20_000)
    assert "May duplicate" in card.text_content() and "phone" in card.text_content()
    shot(page, "review")
    card.query_selector("button.approve").click()
    page.wait_for_selector(f".review[data-order='{held_id}'] .result.ok", timeout=20_000)
    after = service.wait_order(held_id)
    assert after["state"] != "held"
    history = service.request("GET", f"/v1/orders/{held_id}/history").json()
    entries = history["history"]
    assert any(e["event"] == "review_approve" and e["actor"] == "ops-ana" for e in entries)

    # look an order up by channel + channel order number: its health card and timeline
    page.click("#tabs button[data-view=order]")
    page.select_option("#order-form select[name=channel]", "shopify")
    page.fill("#order-form input[name=order_no]", "93000003")
    page.click("#order-form button[type=submit]")
    page.wait_for_selector(".timeline tbody tr")
    assert expected_id("shopify", payloads[3]) in page.text_content(".order-id")
    assert "order_received" in page.text_content(".timeline")
    shot(page, "order")

    # SLA and stock views render from their endpoints
    stock = json.dumps({"warehouse": "sh-main", "on_hand": 3, "safety": 2}).encode()
    assert service.request("PUT", "/v1/stock/CUP-01", stock).status == 200
    page.click("#tabs button[data-view=sla]")
    page.wait_for_selector("#sla tbody tr", timeout=20_000)
    shot(page, "sla")
    page.click("#tabs button[data-view=stock]")
    page.wait_for_selector("#stock tbody tr")
    assert "CUP-01" in page.text_content("#stock")
    # an edit that would oversell shows the service's explanation
    page.fill("#stock-form input[name=sku]", "CUP-01")
    page.fill("#stock-form input[name=warehouse]", "sh-main")
    page.fill("#stock-form input[name=on_hand]", "3")
    page.fill("#stock-form input[name=safety]", "5")  # safety above on hand: would oversell
    page.click("#stock-form button[type=submit]")
    page.wait_for_selector("#stock-result.error")
    assert page.text_content("#stock-result").startswith("409"), page.text_content("#stock-result")
    shot(page, "stock")

    # a dead letter: corrected in the page and replayed through ingest
    broken = json.loads(shopify_order(93_200_001))
    broken["total_price"] = "abc"
    assert service.post_order("shopify", json.dumps(broken).encode()).status == 202
    page.click("#tabs button[data-view=dead]")
    card = page.wait_for_selector(".dead:has-text('93200001')", timeout=30_000)
    assert "total_price" in card.text_content()
    shot(page, "dead-letters")
    card.query_selector("button.edit").click()
    fixed = dict(broken, total_price="236.23")
    card.query_selector("textarea").fill(json.dumps(fixed))
    card.query_selector("button.replay").click()
    page.wait_for_selector(".dead:has-text('93200001') .result.ok")
    fixed_id = expected_id("shopify", json.dumps(fixed).encode())
    deadline = time.monotonic() + 30
    order = service.wait_order(fixed_id)
    while order["state"] in ("accepted", "dead_lettered") and time.monotonic() < deadline:
        time.sleep(0.2)  # the old letter answers until the replayed order is recorded
        order = service.wait_order(fixed_id)
    assert order["state"] not in ("accepted", "dead_lettered"), order
    assert order["order"]["total"] == 23623
    again = service.request("POST", f"/v1/dead-letters/{card.get_attribute('data-key')}/replay")
    assert again.status == 409  # replayed once only
    metrics = service.request("GET", "/metrics").body.decode()
    assert 'orderstream_manual_interventions_total{kind="replay"} 1.0' in metrics
    page.close()


def test_read_only_key_sees_no_actions(service: Service, browser: Any) -> None:
    reader = make_key(service, "viewer", "read")
    held = shopify_order(93_300_001, total_price="99999.00")  # held by the big-order rule
    assert service.post_order("shopify", held).status == 202
    held_id = expected_id("shopify", held)
    assert service.wait_order(held_id)["state"] == "held"
    page = browser.new_page()
    sign_in(page, service, reader)
    page.click("#tabs button[data-view=review]")
    page.wait_for_selector(".review")
    assert page.query_selector_all("button.approve") == []
    page.click("#tabs button[data-view=dead]")
    page.wait_for_selector("#view-dead", state="visible")
    page.wait_for_timeout(1000)  # the list has loaded (it may be empty)
    assert page.query_selector_all("button.replay") == []
    assert page.is_hidden("#stock-form")
    resp = service.request(
        "POST", f"/v1/review/{held_id}/approve", headers={"Authorization": f"Bearer {reader}"},
        auth=False,
    )  # fmt: skip
    assert resp.status == 403
    page.close()


def test_console_is_light(service: Service, browser: Any) -> None:
    key = make_key(service, "weigher", "read")
    page = browser.new_page()
    sizes: list[int] = []
    page.on("response", lambda r: sizes.append(len(r.body())) if "/console" in r.url else None)
    page.goto(f"{service.base}/console")
    page.wait_for_load_state("networkidle")
    assert sum(sizes) < 300 * 1024, sizes
    sign_in(page, service, key)
    page.close()
