"""The operator console's files, served by the service itself: it works on a closed network.

Three static files (HTML, one ES module, CSS), read once at start-up. The page needs no key to
load; it asks for one and sends it with every API call, so the files themselves are public.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

FILES = Path(__file__).resolve().parent / "console"
TYPES = {
    "index.html": "text/html",
    "console.js": "text/javascript",
    "console.css": "text/css",
}


def routes() -> list[web.RouteDef]:
    blobs = {name: (FILES / name).read_bytes() for name in TYPES}

    def serve(name: str) -> web.Response:
        return web.Response(
            body=blobs[name],
            content_type=TYPES[name],
            charset="utf-8",
            headers={
                "Cache-Control": "no-cache",
                # the page talks only to this service; nothing inline, nothing from elsewhere
                "Content-Security-Policy": "default-src 'self'; img-src 'self' data:",
                "X-Content-Type-Options": "nosniff",
            },
        )

    async def page(request: web.Request) -> web.Response:
        return serve("index.html")

    async def asset(request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in TYPES:
            return web.Response(status=404, text="no such file")
        return serve(name)

    return [web.get("/console", page), web.get("/console/{name}", asset)]
