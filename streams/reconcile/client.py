"""``orderstream reconcile``: ask the running service for a pass, wait for it, print the report."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from typing import Any, TextIO

from streams.imports.client import _request

POLL_S = 0.5


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def report(run: dict[str, Any]) -> str:
    lines = [
        f"reconciliation {run['id']} of {run['channel']}, {_when(run['since'])} .."
        f" {_when(run['until'])}: {run['state']}",
        f"  fetched {run['fetched']:,} in {run['pages']:,} pages"
        f" (rate limits waited {run['rate_limited_s']} s)",
        f"  missing (webhooks missed them, now ingested) {run['missing']:,}",
        f"  newer (orderstream's copy updated) {run['newer']:,}",
        f"  different (not newer, but amount/status/lines differ) {run['different']:,}",
        f"  unknown to the channel (in orderstream only) {run['unknown']:,}"
        + ("" if run.get("unknown_complete", True) else " (some partitions were not searched)"),
        f"  same {run['same']:,}  rejected {run['rejected']:,}  unchecked {run['unchecked']:,}",
    ]
    if run.get("error"):
        lines.append(f"  error: {run['error']}")
    for f in run.get("findings", [])[:30]:
        if f["outcome"] == "same":
            continue
        what = "; ".join(
            f"{d['field']}: channel {d['channel']} / orderstream {d['orderstream']}"
            for d in f.get("differences", [])
        )
        lines.append(
            f"  {f['outcome']:9} {f.get('order_no', '')} {f.get('id', '')}"
            f" {what or f.get('reason', '')}".rstrip()
        )
    return "\n".join(lines)


def run_reconcile(url: str, key: str, channel: str, since: str, out: TextIO = sys.stdout) -> int:
    """0 when the pass finished; 1 when it failed (the channel refused, or was unreachable)."""
    base = url.rstrip("/")
    body: dict[str, str] = {"channel": channel}
    if since:
        body["since"] = since
    status, run = _request(
        f"{base}/v1/reconciliations",
        key,
        "POST",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    if status != 202:
        err = run.get("error", {})
        print(
            f"orderstream: refused ({status}): {err.get('field', '')}: {err.get('reason', run)}",
            file=sys.stderr,
        )
        return 2
    while run["state"] == "running":
        time.sleep(POLL_S)
        status, fresh = _request(f"{base}/v1/reconciliations/{run['id']}", key)
        if status == 200:
            run = fresh
    print(report(run), file=out)
    return 0 if run["state"] == "done" else 1
