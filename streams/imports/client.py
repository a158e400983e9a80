"""``orderstream import``: upload an export to the running service and follow it to the end.

The service does the reading (its journal is where orders become durable), so the command is an
upload plus a progress bar fed by ``GET /v1/imports/{id}``. On a terminal the bar redraws in
place; into a file or a pipe it prints a plain line every few seconds, with no control codes.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any, TextIO

POLL_S = 0.5
PLAIN_EVERY_S = 5.0
BAR = 30


def _request(
    url: str, key: str, method: str = "GET", body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    if key:
        req.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:
            return resp.status, json.loads(resp.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            return exc.code, json.loads(exc.read() or b"{}")
        except ValueError:
            return exc.code, {"error": {"reason": exc.reason}}


def progress_line(job: dict[str, Any], tty: bool) -> str:
    share = float(job.get("progress", 0.0))
    eta = job.get("eta_s")
    eta_text = "—" if eta is None else f"{eta:,.0f} s"
    rate = f"{job.get('rows_per_s', 0):,.0f} rows/s"
    counts = f"{job.get('rows', 0):,} rows, {job.get('orders', 0):,} orders"
    if not tty:
        return f"{job['id']}: {share:6.1%}  {counts}  {rate}  ETA {eta_text}"
    filled = int(share * BAR)
    return f"[{'#' * filled}{'.' * (BAR - filled)}] {share:6.1%}  {counts}  {rate}  ETA {eta_text}"


def report(job: dict[str, Any]) -> str:
    lines = [
        f"import {job['id']} of {job['filename']} ({job['channel']}, {job.get('kind', '')}"
        f" {job.get('encoding', '')}): {job['state']}",
        f"  rows {job.get('rows', 0):,}  orders {job.get('orders', 0):,}"
        f"  accepted {job.get('accepted', 0):,}  rejected {job.get('rejected', 0):,}",
        f"  missing (now ingested) {job.get('missing', 0):,}  known (nothing added)"
        f" {job.get('known', 0):,}  newer (updated) {job.get('newer', 0):,}"
        + (f"  unchecked {job['unchecked']:,}" if job.get("unchecked") else ""),
    ]
    if job.get("error"):
        lines.append(f"  error: {job['error']}")
    for p in job.get("problems", [])[:20]:
        lines.append(f"  row {p['row']}, column {p['column']!r}: {p['reason']}")
    more = job.get("rejected", 0) - min(20, len(job.get("problems", [])))
    if more > 0:
        lines.append(f"  … {more:,} more rejected: GET /v1/dead-letters")
    return "\n".join(lines)


def run_import(
    url: str, key: str, channel: str, path: Path, wait: bool = True, out: TextIO = sys.stderr
) -> int:
    """Upload ``path`` and follow it; 0 when it finished (bad rows are reported, not fatal)."""
    base = url.rstrip("/")
    query = urllib.parse.urlencode({"filename": path.name})
    size = path.stat().st_size
    with path.open("rb") as f:
        status, body = _request(
            f"{base}/v1/imports?{query}",
            key,
            "POST",
            f,
            {
                "X-Channel": channel,
                "Content-Type": "application/octet-stream",
                "Content-Length": str(size),
            },
        )
    if status != 202:
        err = body.get("error", {})
        said = f"{err.get('field', '')}: {err.get('reason', body)}"
        print(f"orderstream: upload refused ({status}): {said}", file=sys.stderr)
        return 2
    job = body
    print(f"{path.name}: {size:,} bytes uploaded as import {job['id']}", file=out)
    if not wait:
        return 0
    tty = out.isatty()
    last_plain = 0.0
    while job["state"] in ("stored", "importing"):
        time.sleep(POLL_S)
        status, fresh = _request(f"{base}/v1/imports/{job['id']}", key)
        if status == 200:
            job = fresh
        now = time.monotonic()
        if tty:
            out.write("\r" + progress_line(job, True))
            out.flush()
        elif now - last_plain >= PLAIN_EVERY_S:
            print(progress_line(job, False), file=out)
            last_plain = now
    if tty:
        out.write("\r" + progress_line(job, True) + "\n")
    print(report(job), file=out)
    return 0 if job["state"] == "done" else 1
