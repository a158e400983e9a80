"""GET /v1/orders/{id} says 404 only when both owners (order record, dead letter) said so.

During a rebalance after a worker crash a partition can have no owner for seconds; answering
"unknown" then would make a client drop an order that is recorded. Fake workers on real loopback
ports answer as the workers' internal lookup does.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import msgspec
from aiohttp import web
from aiohttp.test_utils import make_mocked_request

from streams.http.api import IngestAPI
from streams.ingest.journal import IngestJournal

NOT_OURS = (421, {"reason": "not the owner"})


async def _worker(status: int, body: dict) -> tuple[web.AppRunner, str]:
    async def lookup(request: web.Request) -> web.Response:
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_get("/internal/orders/{oid}", lookup)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def _get(tmp_path: Path, answers: list[tuple[int, dict]]) -> tuple[int, dict]:
    workers = [await _worker(status, body) for status, body in answers]
    api = IngestAPI(IngestJournal(tmp_path / "j", 10, fsync=False), None, [], 1, 1 << 20)
    api.worker_urls = [url for _, url in workers]
    try:
        oid = "os_" + "0" * 24
        req = make_mocked_request("GET", f"/v1/orders/{oid}", match_info={"order_id": oid})
        resp = await api.get_order(req)
        return resp.status, msgspec.json.decode(resp.body)
    finally:
        if api.session is not None:
            await api.session.close()
        for runner, _ in workers:
            await runner.cleanup()


def _run(tmp_path: Path, answers: list[tuple[int, dict]]) -> tuple[int, dict]:
    return asyncio.run(_get(tmp_path, answers))


def test_unknown_once_both_owners_searched(tmp_path: Path) -> None:
    status, body = _run(
        tmp_path, [(404, {"searched": ["orders"]}), (404, {"searched": ["dead_letters"]})]
    )
    assert status == 404, body


def test_one_worker_owning_both(tmp_path: Path) -> None:
    status, _ = _run(tmp_path, [(404, {"searched": ["orders", "dead_letters"]}), NOT_OURS])
    assert status == 404


def test_a_partition_without_owner_is_503_not_404(tmp_path: Path) -> None:
    # the dead-letter partition is between owners: the order may be dead-lettered
    status, body = _run(tmp_path, [(404, {"searched": ["orders"]}), NOT_OURS])
    assert status == 503 and body["error"]["field"] == "order_id", body
    status, _ = _run(tmp_path, [NOT_OURS, NOT_OURS])  # nobody owns anything yet
    assert status == 503


def test_found_wins_and_a_foreign_404_is_not_a_search(tmp_path: Path) -> None:
    status, body = _run(tmp_path, [(200, {"id": "o1", "state": "paid"}), NOT_OURS])
    assert (status, body["state"]) == (200, "paid")
    status, _ = _run(tmp_path, [(404, {"found": False}), (404, {"searched": ["orders"]})])
    assert status == 503
