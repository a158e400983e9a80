"""The seed's health KPIs move in the real service's /metrics as orders move and people act."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tests.integration.helpers import expected_id, shopify_order

ROOT = Path(__file__).resolve().parents[2]


def _metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_flow_breaks_shipments_and_interventions(make_service: Any, tmp_path: Path) -> None:
    policy = (
        (ROOT / "config/sla.toml")
        .read_text()
        .replace('flow_break_after = "15m"', 'flow_break_after = "2s"')
    )
    sla = tmp_path / "sla.toml"
    sla.write_text(policy)
    svc = make_service(env={"ORDERSTREAM_SLA_POLICY": str(sla)})
    svc.start()
    try:
        now = datetime.now(UTC).isoformat()
        slow = shopify_order(92_000_001, created_at=now, processed_at=now)
        quick = shopify_order(92_000_002, created_at=now, processed_at=now)
        assert svc.post_batch("shopify", [slow, quick]).status == 202
        slow_id, quick_id = expected_id("shopify", slow), expected_id("shopify", quick)
        svc.wait_order(slow_id)
        svc.wait_order(quick_id)

        def event(oid: str, name: str, **extra: Any) -> int:
            body = json.dumps({"event": name, **extra}).encode()
            return svc.request("POST", f"/v1/orders/{oid}/events", body).status

        assert event(quick_id, "pick_start") == 200  # within 2 s of being paid
        # a person puts the order on hold and releases it: two manual events, each step quick
        assert event(quick_id, "hold", source="console", reason="checking the address") == 200
        assert event(quick_id, "release", source="console") == 200
        time.sleep(3)
        assert event(slow_id, "pick_start") == 200  # paid for more than 2 s: a flow break
        assert event(slow_id, "ship", data={"tracking_no": "SF1", "carrier": "SF"}) == 200
        stock = json.dumps({"warehouse": "sh-main", "on_hand": 50, "reason": "count"}).encode()
        assert svc.request("PUT", "/v1/stock/MB-C200", stock).status == 200

        deadline = time.monotonic() + 20
        text = ""
        while time.monotonic() < deadline:
            text = svc.request("GET", "/metrics").body.decode()
            if _metric(text, 'orderstream_shipments_total{on_time="true"}') >= 1:
                break
            time.sleep(0.3)
        assert _metric(text, "orderstream_flow_breaks_total") == 1, text[-3000:]
        assert _metric(text, 'orderstream_shipments_total{on_time="true"}') == 1
        assert _metric(text, 'orderstream_manual_interventions_total{kind="event"}') == 2
        assert _metric(text, 'orderstream_manual_interventions_total{kind="stock"}') == 1
        # a warehouse system's events are the flow itself, not an intervention
        assert _metric(text, 'orderstream_manual_interventions_total{kind="review"}') == 0
    finally:
        assert svc.stop() == 0
