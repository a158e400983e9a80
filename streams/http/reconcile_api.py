"""HTTP routes of reconciliation: start a pass against a channel, read its report."""

from __future__ import annotations

import time

import msgspec
from aiohttp import web

from core.reconcile import parse_duration_ms
from streams.http.errors import error, json_object
from streams.reconcile.runs import Reconciler

_json = msgspec.json.Encoder()


def _ok(body: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=_json.encode(body), content_type="application/json")


class ReconcileAPI:
    def __init__(self, reconciler: Reconciler) -> None:
        self.reconciler = reconciler

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/reconciliations", self.post_run),
            web.get("/v1/reconciliations", self.list_runs),
            web.get("/v1/reconciliations/{run_id}", self.get_run),
        ]

    async def post_run(self, request: web.Request) -> web.Response:
        """``{"channel": "shopify", "since": "2h"}``; without ``since``, from the cursor."""
        body = await json_object(request)
        if isinstance(body, web.Response):
            return body
        unknown = set(body) - {"channel", "since"}
        if unknown:
            return error(400, sorted(unknown)[0], "unknown field; send channel and since")
        channel = str(body.get("channel", "")).strip().lower()
        if not channel:
            return error(400, "channel", "required")
        since_ms = None
        if body.get("since") not in (None, ""):
            try:
                since_ms = time.time_ns() // 1_000_000 - parse_duration_ms(str(body["since"]))
            except ValueError as exc:
                return error(400, "since", str(exc))
        try:
            run = self.reconciler.start(channel, since_ms)
        except ValueError as exc:
            status = 409 if "is running" in str(exc) else 400
            return error(status, "channel", str(exc))
        resp = _ok(run, 202)
        resp.headers["Location"] = f"/v1/reconciliations/{run.id}"
        return resp

    async def list_runs(self, request: web.Request) -> web.Response:
        return _ok({"reconciliations": self.reconciler.listing()})

    async def get_run(self, request: web.Request) -> web.Response:
        run = self.reconciler.runs.get(request.match_info["run_id"])
        if run is None:
            return error(404, "run_id", "no such reconciliation")
        return _ok(run)
