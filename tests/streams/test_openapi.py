"""The OpenAPI document describes exactly the routes the service registers, and is valid 3.1."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from streams.http import console_page, openapi
from streams.http.api import IngestAPI
from streams.http.imports_api import ImportsAPI
from streams.http.reconcile_api import ReconcileAPI
from streams.http.sync_api import SyncAPI


async def _handler(request: Any) -> Any:
    raise AssertionError("not called")


def _registered() -> set[tuple[str, str]]:
    """(method, path) of every route the supervisor puts on the public app."""
    app = IngestAPI(None, None, [], 1, 1 << 20).build()  # type: ignore[arg-type]
    hub = SimpleNamespace(sse=_handler, websocket=_handler)
    app.add_routes(SyncAPI(hub, None).routes())  # type: ignore[arg-type]
    app.add_routes(ImportsAPI(None, 0).routes())  # type: ignore[arg-type]
    app.add_routes(ReconcileAPI(None).routes())  # type: ignore[arg-type]
    app.add_routes([openapi.route()])
    app.add_routes(console_page.routes())
    out = set()
    for r in app.router.routes():
        if r.method == "HEAD":
            continue  # aiohttp adds HEAD beside every GET
        info: Any = r.resource.get_info() if r.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if path.startswith("/internal/"):
            continue  # node-to-node routes: the cluster secret only, not the public contract
        out.add((r.method.lower(), path))
    return out


def test_every_route_is_described_and_nothing_else() -> None:
    doc = openapi.document()
    described = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert _registered() == described


def test_the_document_is_valid_openapi_31() -> None:
    from jsonschema import Draft202012Validator

    doc = openapi.document()
    assert doc["openapi"] == "3.1.0"
    for name, schema in doc["components"]["schemas"].items():
        Draft202012Validator.check_schema(schema), name
    for path, ops in doc["paths"].items():
        for method, op in ops.items():
            assert op["responses"], (method, path)
            if op["security"]:
                assert {"401", "403"} <= set(op["responses"]), (method, path)
                assert op["x-scope"] in ("ingest", "read", "write")
            for status, resp in op["responses"].items():
                if status.startswith(("4", "5")) and "application/json" in resp.get("content", {}):
                    schema = resp["content"]["application/json"]["schema"]
                    assert schema.get("$ref") == "#/components/schemas/Error" or status in (
                        "409",
                        "503",
                    ), (method, path, status)


def test_scopes_match_the_authenticator() -> None:
    from streams.http.auth import required_scope

    for path, ops in openapi.document()["paths"].items():
        concrete = (
            path.replace("{order_id}", "os_" + "0" * 24)
            .replace("{decision}", "approve")
            .replace("{name}", "console.js")
        )
        for method, op in ops.items():
            assert required_scope(method.upper(), concrete, False) == op.get("x-scope"), (
                method,
                path,
            )
