"""Local stand-ins for the channels' order APIs, speaking their pagination, limits and errors.

Each serves orders (the fixture payloads, renumbered and re-timed) updated in the asked window,
a few per page so a backlog spans pages, and answers one request in the middle with the
platform's rate-limit refusal. Credentials and signatures are checked as the platforms do, so a
client that signs wrongly fails here as it would there. Runs in a thread with its own loop.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import hmac
import json
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from aiohttp import web

FIX = Path(__file__).resolve().parent / "fixtures"
SHANGHAI = timezone(timedelta(hours=8))
CREDENTIALS = {
    "shopify": {"access_token": "shpat_test_token"},
    "tiktok": {
        "app_key": "6abc123",
        "app_secret": "tts-secret-for-tests",
        "access_token": "TTP_test_token",
        "shop_cipher": "ROW_test_cipher",
    },
    "amazon": {
        "refresh_token": "Atzr|test",
        "client_id": "amzn1.application-oa2-client.test",
        "client_secret": "amzn-secret",
        "marketplace_ids": "ATVPDKIKX0DER",
    },
    "taobao": {"app_key": "12345678", "app_secret": "top-secret-for-tests", "session": "6100e"},
}


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _local(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def _parse_iso(text: str) -> int:
    return int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def _parse_local(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=SHANGHAI).timestamp() * 1000)


def channel_order(channel: str, n: int, created: int, updated: int, paid: bool = True) -> dict:
    """The channel's API order number ``n``: its fixture renumbered, re-timed, its own buyer."""
    if channel == "shopify":
        o = json.loads((FIX / "shopify/paid_webhook.json").read_bytes())
        o["id"] = 7_000_000_000_000 + n
        o["created_at"], o["updated_at"] = _iso(created), _iso(updated)
        o["processed_at"] = _iso(created)
        o["financial_status"] = "paid" if paid else "pending"
        o["shipping_address"]["phone"] = f"+1 646 7{n % 1_000_000:06d}"
        return o
    if channel == "tiktok":
        o = json.loads((FIX / "tiktok/awaiting_shipment_masked.json").read_bytes())
        o["id"] = str(577_000_000_000_000_000 + n)
        o["create_time"], o["update_time"] = created // 1000, updated // 1000
        o["paid_time"] = created // 1000
        o["status"] = "AWAITING_SHIPMENT" if paid else "UNPAID"
        o["recipient_address"]["phone_number"] = f"(+1)415****{n % 1000:03d}"
        o["recipient_address"]["name"] = f"Buyer {n}"
        return o
    if channel == "amazon":
        doc = json.loads((FIX / "amazon/unshipped_us.json").read_bytes())
        o, items = doc["order"], doc["items"]
        o["AmazonOrderId"] = f"114-{n:07d}-{n:07d}"
        o["PurchaseDate"], o["LastUpdateDate"] = _iso(created), _iso(updated)
        o["OrderStatus"] = "Unshipped" if paid else "Pending"
        o["ShippingAddress"]["AddressLine1"] = f"{n} Amphitheatre Pkwy"
        o["ShippingAddress"]["Name"] = f"Buyer {n}"
        return {"order": o, "items": items}
    o = json.loads((FIX / "taobao/paid_masked_wrapped.json").read_bytes())
    o = o["trade_fullinfo_get_response"]["trade"]
    o["tid"] = o["tid_str"] = str(4_200_000_000_000_000_000 + n)
    o["created"], o["modified"] = _local(created), _local(updated)
    o["pay_time"] = _local(created) if paid else ""
    o["status"] = "WAIT_SELLER_SEND_GOODS" if paid else "WAIT_BUYER_PAY"
    o["receiver_mobile"] = f"138****{n % 10000:04d}"
    return o


class FakeChannel:
    """One channel's order API on loopback."""

    def __init__(self, channel: str, per_page: int = 2, limit_at: int = 2) -> None:
        self.channel = channel
        self.per_page = per_page
        self.limit_at = limit_at  # the request (1-based) answered with the rate-limit refusal
        self.orders: list[tuple[int, dict[str, Any]]] = []  # (updated ms, API order)
        self.requests = 0
        self.rate_limited = 0
        self.listed: list[str] = []  # every order id listed, in order
        self.creds = CREDENTIALS[channel]
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.base = ""

    def add(self, n: int, created: int, updated: int, paid: bool = True) -> dict[str, Any]:
        order = channel_order(self.channel, n, created, updated, paid)
        self.orders = [
            (u, o) for u, o in self.orders if _id(self.channel, o) != _id(self.channel, order)
        ]
        self.orders.append((updated, order))
        self.orders.sort(key=lambda uo: uo[0])
        return order

    # -- life --------------------------------------------------------------------------------

    def start(self) -> str:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
            self.base = f"http://127.0.0.1:{port}"
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        ready.wait(10)
        return self.base

    def stop(self) -> None:
        if self._loop is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)  # type: ignore[union-attr]
        fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    # -- the API -----------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests += 1
        if self.requests == self.limit_at:
            self.rate_limited += 1
            return self._limited()
        return await getattr(self, f"_{self.channel}")(request)

    def _limited(self) -> web.Response:
        if self.channel == "shopify":
            return web.json_response(
                {"errors": "Exceeded 2 calls per second for api client. Reduce request rates."},
                status=429,
                headers={"Retry-After": "0.3"},
            )
        if self.channel == "amazon":
            body = {"errors": [{"code": "QuotaExceeded", "message": "You exceeded your quota."}]}
            return web.json_response(body, status=429, headers={"x-amzn-RateLimit-Limit": "5.0"})
        if self.channel == "tiktok":
            body = {"code": 36009004, "message": "Too many requests", "data": {}}
            return web.json_response(body, status=429, headers={"Retry-After": "0.3"})
        body = {
            "error_response": {
                "code": 7,
                "msg": "App Call Limited",
                "sub_code": "accesscontrol.limited-by-app-access-count",
                "sub_msg": "This ban will last for 1 more seconds",
            }
        }
        return web.json_response(body)  # TOP answers its errors with 200

    def _window(self, since: int, until: int) -> list[dict[str, Any]]:
        return [o for u, o in self.orders if since <= u < until]

    def _page(self, found: list[dict[str, Any]], offset: int) -> tuple[list[dict[str, Any]], int]:
        page = found[offset : offset + self.per_page]
        self.listed += [_id(self.channel, o) for o in page]
        nxt = offset + self.per_page
        return page, (nxt if nxt < len(found) else -1)

    async def _shopify(self, request: web.Request) -> web.Response:
        if request.headers.get("X-Shopify-Access-Token") != self.creds["access_token"]:
            return web.json_response(
                {"errors": "[API] Invalid API key or access token (unrecognized login or wrong"
                 " password)"}, status=401)  # fmt: skip
        q = request.query
        if "page_info" in q:
            extra = set(q) - {"page_info", "limit"}
            if extra:
                return web.json_response(
                    {"errors": {"page_info": [f"{sorted(extra)} can't be used with page_info"]}},
                    status=400,
                )
            state = json.loads(bytes.fromhex(q["page_info"]))
        else:
            if q.get("status") != "any":
                return web.json_response({"errors": "status=any expected here"}, status=400)
            state = {
                "since": _parse_iso(q["updated_at_min"]),
                "until": _parse_iso(q["updated_at_max"]) + 1,
                "offset": 0,
            }
        page, nxt = self._page(self._window(state["since"], state["until"]), state["offset"])
        headers = {"X-Shopify-Shop-Api-Call-Limit": f"{self.requests}/40"}
        if nxt >= 0:
            token = json.dumps({**state, "offset": nxt}).encode().hex()
            link = f"{self.base}{request.path}?{urlencode({'limit': 250, 'page_info': token})}"
            headers["Link"] = f'<{link}>; rel="next"'
        return web.json_response({"orders": page}, headers=headers)

    async def _tiktok(self, request: web.Request) -> web.Response:
        body = await request.text()
        params = dict(request.query)
        secret = self.creds["app_secret"]
        ordered = "".join(
            f"{k}{params[k]}" for k in sorted(params) if k not in ("sign", "access_token")
        )
        want = hmac.new(
            secret.encode(),
            f"{secret}{request.path}{ordered}{body}{secret}".encode(),
            hashlib.sha256,
        ).hexdigest()
        if params.get("sign") != want:
            return web.json_response({"code": 106001, "message": "Invalid signature", "data": {}})
        if request.headers.get("x-tts-access-token") != self.creds["access_token"]:
            return web.json_response({"code": 105002, "message": "Expired credentials", "data": {}})
        window = json.loads(body)
        found = self._window(window["update_time_ge"] * 1000, window["update_time_lt"] * 1000)
        offset = int(params.get("page_token") or 0)
        page, nxt = self._page(found, offset)
        data = {
            "orders": page,
            "total_count": len(found),
            "next_page_token": str(nxt) if nxt >= 0 else "",
        }
        return web.json_response(
            {"code": 0, "message": "Success", "request_id": "t1", "data": data}
        )

    async def _amazon(self, request: web.Request) -> web.Response:
        if request.path == "/auth/o2/token":
            form = await request.post()
            if form.get("refresh_token") != self.creds["refresh_token"]:
                return web.json_response(
                    {"error": "invalid_grant", "error_description": "bad refresh token"},
                    status=400,
                )
            return web.json_response({"access_token": "Atza|live", "expires_in": 3600})
        if request.headers.get("x-amz-access-token") != "Atza|live":
            body = {
                "errors": [
                    {"code": "Unauthorized", "message": "Access to requested resource is denied."}
                ]
            }
            return web.json_response(body, status=403)
        q = request.query
        if request.path.endswith("/orderItems"):
            oid = request.path.split("/")[-2]
            for _, doc in self.orders:
                if doc["order"]["AmazonOrderId"] == oid:
                    payload = {"AmazonOrderId": oid, "OrderItems": doc["items"]}
                    return web.json_response({"payload": payload})
            return web.json_response({"errors": [{"code": "NotFound", "message": oid}]}, status=404)
        if "NextToken" in q:
            state = json.loads(bytes.fromhex(q["NextToken"]))
        else:
            state = {
                "since": _parse_iso(q["LastUpdatedAfter"]),
                "until": _parse_iso(q["LastUpdatedBefore"]) + 1,
                "offset": 0,
            }
        page, nxt = self._page(self._window(state["since"], state["until"]), state["offset"])
        payload: dict[str, Any] = {"Orders": [copy.deepcopy(d["order"]) for d in page]}
        if nxt >= 0:
            payload["NextToken"] = json.dumps({**state, "offset": nxt}).encode().hex()
        return web.json_response({"payload": payload})

    async def _taobao(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        secret = self.creds["app_secret"]
        sign = form.pop("sign", "")
        text = secret + "".join(f"{k}{form[k]}" for k in sorted(form)) + secret
        if sign != hashlib.md5(text.encode()).hexdigest().upper():
            return web.json_response(
                {"error_response": {"code": 25, "msg": "Invalid signature", "request_id": "x"}}
            )
        if form.get("session") != self.creds["session"]:
            return web.json_response(
                {
                    "error_response": {
                        "code": 27,
                        "msg": "Invalid session",
                        "sub_code": "invalid-sessionkey",
                    }
                }
            )
        since, until = _parse_local(form["start_modified"]), _parse_local(form["end_modified"])
        if until - since > 86_400_000:
            return web.json_response(
                {"error_response": {"code": 15, "msg": "Remote service error",
                 "sub_code": "isv.invalid-parameter", "sub_msg": "时间跨度不能超过一天"}}
            )  # fmt: skip
        page_no = int(form.get("page_no", "1"))
        found = self._window(since, until + 1000)
        page, nxt = self._page(found, (page_no - 1) * self.per_page)
        resp = {"trades": {"trade": page}, "has_next": nxt >= 0, "total_results": len(found)}
        return web.json_response({"trades_sold_increment_get_response": resp})


def _id(channel: str, order: dict[str, Any]) -> str:
    if channel == "amazon":
        return order["order"]["AmazonOrderId"]
    if channel == "taobao":
        return order["tid"]
    return str(order["id"])
