"""HTTP routes of file imports: upload an export, then watch its progress and report."""

from __future__ import annotations

import re

import msgspec
from aiohttp import web

from core.exports import FORMATS
from streams.http.errors import error
from streams.imports.jobs import Imports, UploadRefused

_json = msgspec.json.Encoder()
_SAFE_NAME = re.compile(r"[^\w.\-()\u4e00-\u9fff]+")


def _ok(body: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=_json.encode(body), content_type="application/json")


class ImportsAPI:
    def __init__(self, imports: Imports, max_bytes: int) -> None:
        self.imports = imports
        self.max_bytes = max_bytes

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/v1/imports", self.post_import),
            web.get("/v1/imports", self.list_imports),
            web.get("/v1/imports/{import_id}", self.get_import),
        ]

    async def post_import(self, request: web.Request) -> web.Response:
        """The body is the file as downloaded; it is on disk before the answer (202 + the id)."""
        channel = request.headers.get("X-Channel", "").strip().lower()
        if channel not in FORMATS:
            return error(
                400, "header X-Channel", f"{channel!r}: exports are read for {sorted(FORMATS)}"
            )
        length = request.content_length
        if length is not None and length > self.max_bytes:
            return error(
                413, "body", f"{length:,} bytes; at most {self.max_bytes:,} (import_max_bytes)"
            )
        filename = _SAFE_NAME.sub("_", request.query.get("filename", "")).strip("_")[:200]
        try:
            job = await self.imports.receive(
                channel,
                filename or "upload",
                lambda: request.content.iter_chunked(1 << 20),
                self.max_bytes,
            )
        except UploadRefused as exc:
            return error(exc.status, "body", exc.reason)
        resp = _ok(job, 202)
        resp.headers["Location"] = f"/v1/imports/{job.id}"
        return resp

    async def list_imports(self, request: web.Request) -> web.Response:
        return _ok({"imports": self.imports.listing()})

    async def get_import(self, request: web.Request) -> web.Response:
        job = self.imports.jobs.get(request.match_info["import_id"])
        if job is None:
            return error(404, "import_id", "no such import")
        return _ok(job)
