"""The HTTP API's contract: an OpenAPI 3.1 document served at ``/openapi.json``.

Gateways integrate against this instead of the README's table. It is built from one list of
operations beside the routes they describe, with schemas derived from the msgspec Structs the
handlers encode where there are such Structs; a test compares it with the routes the running
app registers, and another drives every operation against the real service and validates each
answer (status, content type, body) against it.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from core.channels import ADAPTERS
from core.exports import FORMATS
from core.reconcile import Difference, Finding
from streams.imports.jobs import ImportStatus, Problem
from streams.ingest.admit import Accepted
from streams.reconcile.channels import CLIENTS
from streams.reconcile.runs import ReconcileRun

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["field", "reason"],
            "properties": {
                "field": {"type": "string", "description": "which part of the request"},
                "reason": {"type": "string", "description": "why, in words"},
            },
        }
    },
    "description": "The one shape of every error answer.",
}
_OBJECT = {"type": "object"}
_ORDER_ID = {
    "name": "order_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
    "description": "a global order id, os_ + 24 hex digits (anything else: 404 at once)",
}
_SKU = {"name": "sku", "in": "path", "required": True, "schema": {"type": "string"}}
_LIMIT = {
    "name": "limit",
    "in": "query",
    "required": False,
    "schema": {"type": "string"},
    "description": "1..1000 (default 100); anything else: 400",
}
_CHANNEL_HEADER = {
    "name": "X-Channel",
    "in": "header",
    "required": True,
    "schema": {"type": "string"},
    "description": f"one of {sorted(ADAPTERS)}",
}
_STOCK_LEVELS = {
    "type": "object",
    "description": "per warehouse: on_hand, reserved, safety, available, alert_at, low, holds",
}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _err(description: str) -> dict[str, Any]:
    return _json({"$ref": "#/components/schemas/Error"}, description)


def _retry(description: str) -> dict[str, Any]:
    out = _err(description)
    out["headers"] = {"Retry-After": {"schema": {"type": "string"}, "description": "seconds"}}
    return out


def _op(
    summary: str,
    scope: str | None,
    responses: dict[int, dict[str, Any]],
    *,
    params: list[dict[str, Any]] | None = None,
    body: dict[str, Any] | None = None,
) -> dict[str, Any]:
    out: dict[str, Any] = {"summary": summary, "responses": {}}
    if scope is not None:
        out["security"] = [{"bearer": []}, {"apiKey": []}]
        out["x-scope"] = scope
        out["description"] = f"Needs an API key with scope `{scope}`."
        responses = {
            **responses,
            401: _err("no key, or a key that is unknown, wrong or expired"),
            403: _err(f"the key lacks scope {scope} (or the channel)"),
        }
    else:
        out["security"] = []
    if body is not None:
        out["requestBody"] = body
        responses = {**responses, 413: _err("the body is over max_body_bytes")}
        responses.setdefault(400, _err("the body is not what this operation reads"))
    if params:
        out["parameters"] = params
    out["responses"] = {str(k): v for k, v in sorted(responses.items())}
    return out


def _object_body(description: str, properties: dict[str, Any] | None = None) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object"}
    if properties:
        schema["properties"] = properties
    return {
        "required": True,
        "description": description,
        "content": {"application/json": {"schema": schema}},
    }


def _worker_routed(responses: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {
        **responses,
        503: _retry("the worker owning this order or SKU is not answering: ask again"),
    }


def _stock_body(description: str) -> dict[str, Any]:
    return _object_body(
        description,
        {
            "warehouse": {"type": "string"},
            "on_hand": {"type": "integer"},
            "safety": {"type": "integer"},
            "alert_at": {"type": "integer"},
            "holds": {"type": "object", "additionalProperties": {"type": "integer"}},
            "quantity": {"type": "integer"},
            "reason": {"type": "string"},
            "adjustment_id": {"type": "string"},
        },
    )


def operations() -> dict[str, dict[str, dict[str, Any]]]:
    """path -> method -> operation: every route the public app registers."""
    order_view = _json(_OBJECT, "the order: canonical order, state, reservation, dedup verdict")
    stock_ok = _json(_STOCK_LEVELS, "the SKU's levels after the change")
    stock_409 = _json(_OBJECT, "would make reserved > on_hand - safety: the numbers, not applied")
    return {
        "/v1/orders": {
            "post": _op(
                "Accept one order (JSON) or a batch (NDJSON), durable before the answer",
                "ingest",
                {
                    202: {
                        "description": "accepted: the global id (a batch: one result per line)",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/Accepted"}
                            },
                            "application/x-ndjson": {"schema": {"type": "string"}},
                        },
                    },
                    400: {
                        "description": "not an order (dead-lettered), or no usable X-Channel",
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Error"}},
                            "application/x-ndjson": {"schema": {"type": "string"}},
                        },
                    },
                    503: _retry("the journal is full or the disk failed: nothing was kept"),
                },
                params=[
                    _CHANNEL_HEADER,
                    {
                        "name": "X-Priority",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                        "description": "high: the priority lane",
                    },
                ],
                body={
                    "required": True,
                    "content": {
                        "application/json": {"schema": _OBJECT},
                        "application/x-ndjson": {"schema": {"type": "string"}},
                    },
                },
            ),
            "get": _op(
                "An order by its channel and the channel's order number",
                "read",
                _worker_routed(
                    {
                        200: order_view,
                        400: _err("channel or order_no missing or unknown"),
                        404: _err("no such order"),
                    }
                ),
                params=[
                    {
                        "name": "channel",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "order_no",
                        "in": "query",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                ],
            ),
        },
        "/v1/orders/{order_id}": {
            "get": _op(
                "An order: recorded, or accepted and on its way, or dead-lettered with its reason",
                "read",
                _worker_routed({200: order_view, 404: _err("not an id of ours, or no such order")}),
                params=[_ORDER_ID],
            ),
        },
        "/v1/orders/{order_id}/events": {
            "post": _op(
                "An order event (payment, pick, ship, carrier scan, cancel, refund, ...)",
                "write",
                _worker_routed(
                    {
                        200: _json(_OBJECT, "applied, or already applied (applied: false)"),
                        404: _err("not an id of ours, or no such order"),
                        409: _json(_OBJECT, "not allowed in the order's state: which, and why"),
                    }
                ),
                params=[
                    _ORDER_ID,
                    {
                        "name": "X-Actor",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
                body=_object_body("{event, order_id?, at?, actor?, source?, ...}"),
            ),
        },
        "/v1/orders/{order_id}/history": {
            "get": _op(
                "The order's audit trail, oldest first (who, when, which system)",
                "read",
                _worker_routed(
                    {
                        200: _json(_OBJECT, "the audit entries"),
                        404: _err("not an id of ours, or no such order"),
                    }
                ),
                params=[_ORDER_ID],
            ),
        },
        "/v1/dead-letters": {
            "get": _op(
                "The newest dead letters with stage, channel, field, reason and payload",
                "read",
                {
                    200: _json({"type": "array", "items": _OBJECT}, "newest first"),
                    400: _err("limit out of range"),
                },
                params=[_LIMIT],
            ),
        },
        "/v1/dead-letters/{key}/replay": {
            "post": _op(
                "Send a dead letter through ingest again (its payload, or a corrected one)",
                "write",
                {
                    202: _json(_OBJECT, "journaled: {key, at, actor, status, id, corrected}"),
                    404: _err("no dead letter with this key"),
                    409: _json(_OBJECT, "already replayed: the first replay"),
                    503: _retry("the journal is full, or the letter's worker is not answering"),
                },
                params=[
                    {"name": "key", "in": "path", "required": True, "schema": {"type": "string"}},
                    {
                        "name": "X-Actor",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
                body={
                    "required": False,
                    "description": "optional: the corrected order, in the channel's own JSON",
                    "content": {"application/json": {"schema": _OBJECT}},
                },
            ),
        },
        "/v1/review": {
            "get": _op(
                "Held orders waiting for an operator, oldest first",
                "read",
                {
                    200: _json({"type": "array", "items": _OBJECT}, "held orders"),
                    400: _err("limit out of range"),
                },
                params=[_LIMIT],
            ),
        },
        "/v1/review/{order_id}/{decision}": {
            "post": _op(
                "Approve (fulfil) or reject (cancel) a held order; audited with X-Actor",
                "write",
                _worker_routed(
                    {
                        200: _json(_OBJECT, "the decision applied"),
                        404: _err("not an id of ours, no such order, or not approve/reject"),
                        409: _json(_OBJECT, "the order is not held"),
                    }
                ),
                params=[
                    _ORDER_ID,
                    {
                        "name": "decision",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "reason",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                    {
                        "name": "X-Actor",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
            ),
        },
        "/v1/stock-audit": {
            "get": _op(
                "Every SKU's reserved recomputed from the reservation ledger",
                "read",
                {200: _json(_OBJECT, "{ok, partitions, problems}")},
            ),
        },
        "/v1/stock/{sku}": {
            "get": _op(
                "A SKU's stock per warehouse (aliases resolve to the canonical SKU)",
                "read",
                _worker_routed({200: _json(_STOCK_LEVELS, "levels"), 400: _err("bad SKU")}),
                params=[_SKU],
            ),
            "put": _op(
                "Set on_hand / safety / alert_at / holds in one warehouse, all or nothing",
                "write",
                _worker_routed({200: stock_ok, 409: stock_409}),
                params=[_SKU],
                body=_stock_body(
                    "{warehouse, on_hand?, safety?, alert_at?, holds?, reason?, adjustment_id?}"
                ),
            ),
        },
        "/v1/stock/{sku}/receipts": {
            "post": _op(
                "Goods received into a warehouse",
                "write",
                _worker_routed({200: stock_ok, 409: stock_409}),
                params=[_SKU],
                body=_stock_body("{warehouse, quantity > 0, reason?, adjustment_id?}"),
            ),
        },
        "/v1/stock/{sku}/corrections": {
            "post": _op(
                "A signed stock correction (a count found more or fewer)",
                "write",
                _worker_routed({200: stock_ok, 409: stock_409}),
                params=[_SKU],
                body=_stock_body("{warehouse, quantity != 0, reason?, adjustment_id?}"),
            ),
        },
        "/v1/imports": {
            "post": _op(
                "Upload a channel's order export (CSV, TSV, XLSX): on disk before the answer",
                "ingest",
                {
                    202: _json({"$ref": "#/components/schemas/ImportStatus"}, "stored; importing"),
                    400: _err("empty, or X-Channel not an export format"),
                },
                params=[
                    {
                        "name": "X-Channel",
                        "in": "header",
                        "required": True,
                        "schema": {"type": "string"},
                        "description": f"one of {sorted(FORMATS)}",
                    },
                    {
                        "name": "filename",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
                body={
                    "required": True,
                    "content": {
                        "application/octet-stream": {
                            "schema": {"type": "string", "format": "binary"}
                        }
                    },
                },
            ),
            "get": _op(
                "Imports, newest first",
                "read",
                {
                    200: _json(
                        {
                            "type": "object",
                            "properties": {
                                "imports": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/ImportStatus"},
                                }
                            },
                        },
                        "the imports",
                    )
                },
            ),
        },
        "/v1/imports/{import_id}": {
            "get": _op(
                "An import's progress and report",
                "read",
                {
                    200: _json({"$ref": "#/components/schemas/ImportStatus"}, "the import"),
                    404: _err("no such import"),
                },
                params=[
                    {
                        "name": "import_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
            ),
        },
        "/v1/reconciliations": {
            "post": _op(
                "A reconciliation pass against a channel's order API",
                "write",
                {
                    202: _json({"$ref": "#/components/schemas/ReconcileRun"}, "started"),
                    409: _err("a pass of this channel is running"),
                },
                body=_object_body(
                    f"{{channel: one of {sorted(CLIENTS)}, since?: 2h / 30m / 1d}}",
                    {"channel": {"type": "string"}, "since": {"type": "string"}},
                ),
            ),
            "get": _op(
                "Reconciliation passes, newest first",
                "read",
                {
                    200: _json(
                        {
                            "type": "object",
                            "properties": {
                                "reconciliations": {
                                    "type": "array",
                                    "items": {"$ref": "#/components/schemas/ReconcileRun"},
                                }
                            },
                        },
                        "the passes",
                    )
                },
            ),
        },
        "/v1/reconciliations/{run_id}": {
            "get": _op(
                "A reconciliation pass's report",
                "read",
                {
                    200: _json({"$ref": "#/components/schemas/ReconcileRun"}, "the report"),
                    404: _err("no such pass"),
                },
                params=[
                    {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
            ),
        },
        "/v1/stream": {
            "get": _op(
                "Live changes as Server-Sent Events (resume with Last-Event-ID)",
                "read",
                {
                    200: {
                        "description": "an event stream that stays open",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    400: _err("a bad filter or Last-Event-ID"),
                    410: _err("Last-Event-ID older than the retained log"),
                },
                params=[
                    {"name": name, "in": "query", "required": False, "schema": {"type": "string"}}
                    for name in ("type", "order", "sku", "channel", "last_event_id", "access_token")
                ],
            ),
        },
        "/v1/ws": {
            "get": _op(
                "Live changes over a WebSocket (one JSON text message per event)",
                "read",
                {
                    101: {"description": "switching to the WebSocket protocol"},
                    400: _err("not a WebSocket upgrade, or a bad filter"),
                },
            ),
        },
        "/v1/subscribers": {
            "get": _op(
                "Live subscribers and the sync log's range",
                "read",
                {200: _json(_OBJECT, "{head, oldest, subscribers}")},
            ),
        },
        "/v1/webhooks": {
            "post": _op(
                "Register a webhook; the signing secret is shown once",
                "write",
                {201: _json(_OBJECT, "the webhook with its secret")},
                body=_object_body(
                    "{url, filter?, secret?, description?}",
                    {
                        "url": {"type": "string"},
                        "filter": {"type": "object"},
                        "secret": {"type": "string"},
                        "description": {"type": "string"},
                    },
                ),
            ),
            "get": _op(
                "Webhooks and their delivery state",
                "read",
                {200: _json({"type": "array", "items": _OBJECT}, "the webhooks")},
            ),
        },
        "/v1/webhooks/{hook_id}": {
            "get": _op(
                "A webhook",
                "read",
                {200: _json(_OBJECT, "the webhook"), 404: _err("no such webhook")},
                params=[
                    {
                        "name": "hook_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
            ),
            "delete": _op(
                "Remove a webhook",
                "write",
                {204: {"description": "removed"}, 404: _err("no such webhook")},
                params=[
                    {
                        "name": "hook_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
            ),
        },
        "/v1/webhooks/{hook_id}/dead-letters": {
            "get": _op(
                "Deliveries given up after all retries",
                "read",
                {
                    200: _json({"type": "array", "items": _OBJECT}, "dead-lettered batches"),
                    400: _err("limit out of range"),
                    404: _err("no such webhook"),
                },
                params=[
                    {
                        "name": "hook_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    },
                    _LIMIT,
                ],
            ),
        },
        "/v1/webhooks/{hook_id}/redeliver": {
            "post": _op(
                "Try the webhook's dead letters again",
                "write",
                {200: _json(_OBJECT, "{delivered, still_dead}"), 404: _err("no such webhook")},
                params=[
                    {
                        "name": "hook_id",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string"},
                    }
                ],
            ),
        },
        "/metrics": {
            "get": _op(
                "Prometheus text, summed over the API and every worker",
                "read",
                {
                    200: {
                        "description": "Prometheus exposition format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    }
                },
            ),
        },
        "/health": {
            "get": _op(
                "Accepting and processing? (no key needed)",
                None,
                {
                    200: _json(_OBJECT, "every worker answers and holds partitions"),
                    503: _json(_OBJECT, "a worker down or restarting: accepting, not processing"),
                },
            ),
        },
        "/console": {
            "get": _op(
                "The operator console (no key to load it; it asks for one)",
                None,
                {
                    200: {
                        "description": "the page",
                        "content": {"text/html": {"schema": {"type": "string"}}},
                    }
                },
            ),
        },
        "/console/{name}": {
            "get": _op(
                "The console's script and style sheet",
                None,
                {
                    200: {
                        "description": "the file",
                        "content": {
                            "text/javascript": {"schema": {"type": "string"}},
                            "text/css": {"schema": {"type": "string"}},
                        },
                    },
                    404: {
                        "description": "no such file",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                },
                params=[
                    {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
            ),
        },
        "/v1/stock": {
            "get": _op(
                "Every SKU's levels per warehouse, low-stock SKUs first",
                "read",
                {
                    200: _json({"type": "array", "items": _OBJECT}, "{sku, low, warehouses}"),
                    400: _err("limit out of range"),
                },
                params=[
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    }
                ],
            ),
        },
        "/v1/sla": {
            "get": _op(
                "Orders with armed SLA timers, soonest first, with ship-by and light thresholds",
                "read",
                {
                    200: _json(_OBJECT, "{now, red_hours, yellow_hours, orders}"),
                    400: _err("limit out of range"),
                },
                params=[
                    {
                        "name": "limit",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string"},
                    }
                ],
            ),
        },
        "/v1/whoami": {
            "get": _op(
                "The key this request came with: name, scopes, channels",
                "read",
                {200: _json(_OBJECT, "{name, scopes, channels}")},
            ),
        },
        "/v1/cluster": {
            "get": _op(
                "The service's nodes (on an external cluster): each node's name, URL, the order"
                " partitions its workers hold and how long ago it was heard from; partitions"
                " no live node holds. One machine: single_machine true, no nodes",
                "read",
                {200: _json(_OBJECT, "{node, nodes: [...], unowned_partitions}")},
            ),
        },
        "/openapi.json": {
            "get": _op(
                "This document (no key needed)",
                None,
                {200: _json(_OBJECT, "OpenAPI 3.1")},
            ),
        },
    }


def document(server: str = "/") -> dict[str, Any]:
    structs = (Accepted, ImportStatus, Problem, ReconcileRun, Finding, Difference)
    _, components = msgspec.json.schema_components(
        structs, ref_template="#/components/schemas/{name}"
    )
    components["Error"] = _ERROR
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "orderstream",
            "version": "1",
            "description": "Multi-channel order hub: ingest, dedup, reservation, state, sync."
            " Errors always have the shape {error: {field, reason}}.",
        },
        "servers": [{"url": server}],
        "components": {
            "schemas": components,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "osk_<id>_<secret>"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-Api-Key"},
            },
        },
        "paths": operations(),
    }


def route(server: str = "/") -> web.RouteDef:
    """``GET /openapi.json``: built once, served as bytes."""
    body = msgspec.json.encode(document(server))

    async def get_openapi(request: web.Request) -> web.Response:
        return web.Response(body=body, content_type="application/json")

    return web.get("/openapi.json", get_openapi)
