"""HTTP routes of the sync hub: the live stream (SSE, WebSocket) and webhook management."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from aiohttp import web

from core.subscription import FilterError, parse_filter
from streams.http.errors import error, json_object
from streams.sync.subscribers import SubscriberHub
from streams.sync.webhooks import Webhooks, check_url

_json = msgspec.json.Encoder()


def _ok(body: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, body=_json.encode(body), content_type="application/json")


class SyncAPI:
    def __init__(
        self, hub: SubscriberHub, webhooks: Webhooks, canonical_sku: Callable[[str], str] = str
    ) -> None:
        self.hub = hub
        self.webhooks = webhooks
        self.canonical_sku = canonical_sku

    def routes(self) -> list[web.RouteDef]:
        return [
            web.get("/v1/stream", self.hub.sse),
            web.get("/v1/ws", self.hub.websocket),
            web.get("/v1/subscribers", self.get_subscribers),
            web.post("/v1/webhooks", self.post_webhook),
            web.get("/v1/webhooks", self.list_webhooks),
            web.get("/v1/webhooks/{hook_id}", self.get_webhook),
            web.delete("/v1/webhooks/{hook_id}", self.delete_webhook),
            web.get("/v1/webhooks/{hook_id}/dead-letters", self.get_dead_letters),
            web.post("/v1/webhooks/{hook_id}/redeliver", self.post_redeliver),
        ]

    async def get_subscribers(self, request: web.Request) -> web.Response:
        return _ok(
            {
                "head": self.hub.log.head,
                "oldest": self.hub.log.oldest,
                "subscribers": self.hub.stats(),
            }
        )

    async def post_webhook(self, request: web.Request) -> web.Response:
        """Register ``{"url", "filter"?, "secret"?, "description"?}``; the answer shows the
        signing secret once (a generated one unless given)."""
        body = await json_object(request)
        if isinstance(body, web.Response):
            return body
        unknown = set(body) - {"url", "filter", "secret", "description"}
        if unknown:
            return error(
                400, sorted(unknown)[0], "unknown field; use url, filter, secret, description"
            )
        url = body.get("url")
        if not isinstance(url, str):
            return error(400, "url", "required: the URL to POST events to")
        why = check_url(url)
        if why:
            return error(400, "url", why)
        secret = body.get("secret", "")
        if not isinstance(secret, str) or (secret and len(secret) < 16):
            return error(400, "secret", "must be a string of at least 16 characters")
        description = body.get("description", "")
        if not isinstance(description, str) or len(description) > 500:
            return error(400, "description", "must be a string of at most 500 characters")
        filters = body.get("filter", {})
        if not isinstance(filters, dict):
            return error(400, "filter", "must be an object: type, order, sku, channel")
        try:
            filter_ = parse_filter(filters, self.canonical_sku)
        except FilterError as exc:
            return error(400, f"filter.{exc.field}", exc.reason)
        hook = await self.webhooks.register(url, filter_, secret, description)
        view = self.webhooks.view(hook.id)
        return _ok({**(view or {}), "secret": hook.secret}, status=201)

    async def list_webhooks(self, request: web.Request) -> web.Response:
        return _ok([self.webhooks.view(h) for h in sorted(self.webhooks.hooks)])

    async def get_webhook(self, request: web.Request) -> web.Response:
        view = self.webhooks.view(request.match_info["hook_id"])
        if view is None:
            return error(404, "hook_id", "no such webhook")
        return _ok(view)

    async def delete_webhook(self, request: web.Request) -> web.Response:
        if not await self.webhooks.delete(request.match_info["hook_id"]):
            return error(404, "hook_id", "no such webhook")
        return web.Response(status=204)

    async def get_dead_letters(self, request: web.Request) -> web.Response:
        hook_id = request.match_info["hook_id"]
        if hook_id not in self.webhooks.hooks:
            return error(404, "hook_id", "no such webhook")
        try:
            limit = max(1, min(int(request.query.get("limit", "100")), 1000))
        except ValueError:
            return error(400, "limit", "must be an integer 1..1000")
        rows = []
        for d in self.webhooks.dead_letters(hook_id, limit):
            row = msgspec.to_builtins(d)
            row["body"] = d.body.decode("utf-8", "replace")
            rows.append(row)
        return _ok(rows)

    async def post_redeliver(self, request: web.Request) -> web.Response:
        hook_id = request.match_info["hook_id"]
        if hook_id not in self.webhooks.hooks:
            return error(404, "hook_id", "no such webhook")
        delivered, failed = await self.webhooks.redeliver(hook_id)
        return _ok({"delivered": delivered, "still_dead": failed})
