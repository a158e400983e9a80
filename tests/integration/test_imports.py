"""File imports through the real service: every export format, against orders its webhooks sent.

For each platform's export: 10 of 60 orders arrive by webhook first; importing the export adds
exactly the 50 the webhooks missed; importing it again adds nothing; an export where 5 orders
have shipped since updates those 5. The command line is the one a merchant runs
(``orderstream import``), with its progress output and report.
"""

from __future__ import annotations

import csv
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from bench.exports import HEADERS, write_export
from core.exports import FORMATS, columns, orders
from core.model import global_order_id
from streams.imports.files import open_table
from tests.integration.conftest import ROOT, Service

N = 60
WEBHOOKS = 10
SHIPPED = 5
# (channel, file suffix, k offset): channels apart so no two orders look like one purchase
FORMATS_UNDER_TEST = [
    ("shopify", ".csv", 0),
    ("taobao", ".csv", 1000),
    ("jd", ".xlsx", 2000),
    ("pdd", ".csv", 3000),
    ("amazon", ".txt", 4000),
]


def _payloads(channel: str, path: Path) -> list[tuple[str, bytes]]:
    """The API order objects an export describes (what the channel's webhooks carry)."""
    table = open_table(path)
    fmt = FORMATS[channel]
    try:
        got = list(orders(fmt, columns(fmt, table.header), table.rows))
    finally:
        table.close()
    assert all(o.payload for o in got), [(o.column, o.reason) for o in got if not o.payload]
    return [(global_order_id(channel, o.order_no), o.payload) for o in got]


def _import(svc: Service, channel: str, path: Path) -> dict[str, Any]:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "streams.cli",
            "import",
            "--channel",
            channel,
            "--url",
            svc.base,
            "--api-key",
            svc.api_key,
            str(path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out
    assert "\x1b" not in out and "\r" not in out  # not a terminal: plain lines only
    found = re.search(r"uploaded as import (imp_\w+)", out)
    assert found, out
    resp = svc.request("GET", f"/v1/imports/{found.group(1)}")
    assert resp.status == 200, resp.body
    job = resp.json()
    assert job["state"] == "done", job
    assert f"missing (now ingested) {job['missing']:,}" in out, out
    return job


def _wait_all(svc: Service, ids: list[str], timeout: float = 60.0) -> dict[str, dict[str, Any]]:
    deadline = time.monotonic() + timeout
    seen: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline and len(seen) < len(ids):
        for oid in ids:
            if oid not in seen:
                resp = svc.get_order(oid)
                if resp.status == 200 and resp.json().get("state") != "accepted":
                    seen[oid] = resp.json()
        time.sleep(0.2)
    missing = [i for i in ids if i not in seen]
    assert not missing, f"{len(missing)} orders never recorded, e.g. {missing[:3]}"
    return seen


@pytest.mark.parametrize(("channel", "suffix", "base"), FORMATS_UNDER_TEST)
def test_import_adds_what_webhooks_missed(
    service: Service, tmp_path: Path, channel: str, suffix: str, base: int
) -> None:
    ks = range(base, base + N)
    export = write_export(channel, tmp_path / f"{channel}_export{suffix}", ks)
    sent = _payloads(channel, export)
    ids = [oid for oid, _ in sent]
    assert len(set(ids)) == N

    webhook = write_export(channel, tmp_path / f"{channel}_webhooks{suffix}", ks[:WEBHOOKS])
    resp = service.post_batch(channel, [p for _, p in _payloads(channel, webhook)])
    assert resp.status == 202, resp.body
    _wait_all(service, ids[:WEBHOOKS])

    first = _import(service, channel, export)
    assert (first["orders"], first["accepted"], first["rejected"]) == (N, N, 0)
    assert (first["missing"], first["known"], first["newer"]) == (N - WEBHOOKS, WEBHOOKS, 0)
    assert first["rows"] >= N and first["progress"] == 1.0
    held = _wait_all(service, ids)

    again = _import(service, channel, export)
    assert (again["missing"], again["known"], again["newer"]) == (0, N, 0)

    later = write_export(
        channel, tmp_path / f"{channel}_later{suffix}", ks, shipped=frozenset(ks[:SHIPPED])
    )
    newer = _import(service, channel, later)
    assert (newer["missing"], newer["known"], newer["newer"]) == (0, N - SHIPPED, SHIPPED)
    before = held[ids[0]]["order"]["updated_at"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        now = service.wait_order(ids[0])["order"]
        if now["updated_at"] > before:
            break
        time.sleep(0.2)
    assert now["updated_at"] > before, now
    # nothing new: the 60 orders are still the 60 orders, each recorded once
    listing = service.request("GET", "/v1/imports").json()["imports"]
    assert len([j for j in listing if j["channel"] == channel]) == 3


def test_bad_row_is_named_and_dead_lettered_rest_imported(service: Service, tmp_path: Path) -> None:
    path = write_export("shopify", tmp_path / "orders_export.csv", range(5000, 5020))
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f))
    header = rows[0]
    bad_row = 6  # as a spreadsheet numbers it (the header is row 1)
    rows[bad_row - 1][header.index("Total")] = "12,34.x"
    with path.open("w", encoding="utf-8", newline="") as f:
        csv.writer(f).writerows(rows)
    job = _import(service, "shopify", path)
    assert job["rejected"] == 1 and job["accepted"] == job["orders"] - 1
    (problem,) = job["problems"]
    assert (problem["row"], problem["column"]) == (bad_row, "Total")
    assert "not an amount" in problem["reason"]
    deadline = time.monotonic() + 30
    letters: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        letters = [
            d
            for d in service.request("GET", "/v1/dead-letters?limit=200").json()
            if "orders_export.csv" in d.get("field", "")
        ]
        if letters:
            break
        time.sleep(0.2)
    assert letters, "the bad row never reached the dead letters"
    assert f"row {bad_row}, column 'Total'" in letters[0]["field"]


def test_refusals_are_specific(service: Service, tmp_path: Path) -> None:
    wrong = tmp_path / "not_taobao.csv"
    write_export("shopify", wrong, range(6000, 6002))
    resp = service.request(
        "POST", "/v1/imports?filename=x.csv", wrong.read_bytes(), {"X-Channel": "taobao"}
    )
    assert resp.status == 202
    job_id = resp.json()["id"]
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        job = service.request("GET", f"/v1/imports/{job_id}").json()
        if job["state"] in ("done", "failed"):
            break
        time.sleep(0.1)
    assert job["state"] == "failed" and "订单编号" in job["error"], job
    resp = service.request("POST", "/v1/imports", b"", {"X-Channel": "shopify"})
    assert resp.status == 400 and resp.json()["error"]["field"] == "body"
    resp = service.request("POST", "/v1/imports", b"x", {"X-Channel": "ministore"})
    assert resp.status == 400 and resp.json()["error"]["field"] == "header X-Channel"
    assert service.request("GET", "/v1/imports/imp_nope").status == 404
    assert sorted(HEADERS) == sorted(k for k in FORMATS if k != "tmall")


def test_import_survives_kill_9(make_service: Any, tmp_path: Path) -> None:
    """Accepted means on disk: a SIGKILLed service resumes the import where it stood."""
    svc = make_service()
    svc.start()
    path = write_export("shopify", tmp_path / "big.csv", range(10_000, 16_000))
    ids = [oid for oid, _ in _payloads("shopify", path)]
    resp = svc.request(
        "POST", "/v1/imports?filename=big.csv", path.read_bytes(), {"X-Channel": "shopify"}
    )
    assert resp.status == 202, resp.body
    job_id = resp.json()["id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        job = svc.request("GET", f"/v1/imports/{job_id}").json()
        if job["accepted"] > 0:
            break
        time.sleep(0.02)
    assert job["state"] in ("importing", "done"), job
    svc._kill_all()  # SIGKILL: the front end, its workers and the broker
    again = make_service(data=svc.data_dir)
    again.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            job = again.request("GET", f"/v1/imports/{job_id}").json()
            if job["state"] == "done":
                break
            time.sleep(0.2)
        assert job["state"] == "done", job
        assert job["rejected"] == 0 and job["orders"] >= len(ids) - job["resume_row"]
        _wait_all(again, ids, timeout=120)
    finally:
        assert again.stop() == 0
