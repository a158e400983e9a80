"""The one shape of every HTTP error answer: ``{"error": {"field", "reason"}}``.

Gateways and operators branch on ``field`` (which part of their request was wrong) whatever
endpoint answered, so the ingest API, the sync API and the stream share these helpers.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

_json = msgspec.json.Encoder()


def error(status: int, field: str, reason: str, **extra: Any) -> web.Response:
    body = {"error": {"field": field, "reason": reason}, **extra}
    return web.Response(status=status, body=_json.encode(body), content_type="application/json")


async def json_object(request: web.Request) -> dict[str, Any] | web.Response:
    """The request body as a JSON object, or the 400 that says why it is not one."""
    try:
        body = msgspec.json.decode(await request.read())
    except msgspec.DecodeError as exc:
        return error(400, "$", f"body is not JSON: {exc}")
    if not isinstance(body, dict):
        return error(400, "$", "body must be a JSON object")
    return body
