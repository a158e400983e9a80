"""Each channel's order API, paged by update time: what a reconciliation pass fetches.

Every client yields pages of order payloads in the shape that channel's adapter reads (the same
bytes a webhook or gateway would have sent), following the platform's own pagination and
rate-limit rules as its public docs describe them:

- Shopify Admin REST ``orders.json``: ``updated_at_min``/``max``, ``status=any``, cursor
  pagination through the ``Link`` header's rel="next" (``page_info``), the leaky bucket reported
  in ``X-Shopify-Shop-Api-Call-Limit``, 429 with ``Retry-After``.
- TikTok Shop 202309 Order Search: ``update_time_ge``/``lt`` in the body, ``page_token`` /
  ``next_page_token``, requests signed with the app secret (HMAC-SHA256 over path, sorted query
  and body), ``code`` other than 0 an error.
- Amazon SP-API ``getOrders``: ``LastUpdatedAfter``/``Before``, ``NextToken``, the items of each
  order from ``getOrderItems``; an LWA access token from the refresh token; 429 paced by
  ``x-amzn-RateLimit-Limit``.
- Taobao TOP ``taobao.trades.sold.increment.get``: ``start_modified``/``end_modified`` in
  Asia/Shanghai time, at most one day per call, ``page_no`` with ``use_has_next``, MD5-signed
  parameters, error 7 (app call limited) waited out.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import aiohttp

from core.credentials import ChannelApi
from core.reconcile import link_next

SHANGHAI = timezone(timedelta(hours=8))
MAX_ATTEMPTS = 8
MAX_WAIT_S = 60.0
DAY_MS = 86_400_000


class ChannelError(Exception):
    """The channel refused (credentials, a bad request): the pass fails, saying what it said."""


class RateLimited(Exception):
    def __init__(self, wait_s: float) -> None:
        super().__init__(f"rate limited for {wait_s:.1f} s")
        self.wait_s = wait_s


async def call(
    session: aiohttp.ClientSession,
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    data: Any = None,
    json_body: Any = None,
    waited: list[float] | None = None,
) -> tuple[int, Any, dict[str, str]]:
    """One request with the retries every channel needs: 429 waits ``Retry-After`` (or the
    channel's own hint), 5xx and connection errors back off; other refusals raise."""
    delay = 0.5
    for attempt in range(MAX_ATTEMPTS):
        try:
            async with session.request(
                method, url, headers=headers, data=data, json=json_body
            ) as resp:
                body = await resp.read()
                hdrs = {k.lower(): v for k, v in resp.headers.items()}
                status = resp.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            if attempt == MAX_ATTEMPTS - 1:
                raise ChannelError(f"{method} {_where(url)}: {exc}") from None
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_WAIT_S)
            continue
        if status == 429:
            wait = _retry_after(hdrs) or delay
            delay = min(delay * 2, MAX_WAIT_S)
            if waited is not None:
                waited.append(wait)
            await asyncio.sleep(wait)
            continue
        if status >= 500:
            if attempt == MAX_ATTEMPTS - 1:
                raise ChannelError(f"{method} {_where(url)}: {status} {body[:300]!r}")
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_WAIT_S)
            continue
        try:
            doc = json.loads(body) if body else {}
        except ValueError:
            raise ChannelError(f"{method} {_where(url)}: {status}, not JSON") from None
        if status >= 400:
            raise ChannelError(f"{method} {_where(url)}: {status} {_said(doc)}")
        return status, doc, hdrs
    raise ChannelError(f"{method} {_where(url)}: still rate limited after {MAX_ATTEMPTS} tries")


def _where(url: str) -> str:
    return url.split("?", 1)[0]


def _said(doc: Any) -> str:
    text = json.dumps(doc, ensure_ascii=False)
    return text if len(text) <= 300 else text[:300] + "…"


def _retry_after(headers: dict[str, str]) -> float:
    for name in ("retry-after",):
        if name in headers:
            try:
                return min(MAX_WAIT_S, max(0.0, float(headers[name])))
            except ValueError:
                return 1.0
    rate = headers.get("x-amzn-ratelimit-limit")
    if rate:
        try:
            return min(MAX_WAIT_S, 1.0 / max(float(rate), 0.001))
        except ValueError:
            return 1.0
    return 0.0


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _shanghai(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, SHANGHAI).strftime("%Y-%m-%d %H:%M:%S")


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


class Client:
    """A channel's order listing: pages of adapter-ready payloads updated in [since, until)."""

    channel = ""

    def __init__(self, api: ChannelApi) -> None:
        self.api = api
        self.base = api.base_url.rstrip("/")
        self.waited: list[float] = []  # rate-limit waits, for the report
        self.pages = 0

    def need(self, *names: str) -> list[str]:
        missing = [n for n in names if not self.api.fields.get(n)]
        if missing:
            raise ChannelError(
                f"{self.channel} credentials lack {', '.join(missing)}:"
                f" orderstream keys channel-api {self.channel} --set {missing[0]}=…"
            )
        return [self.api.fields[n] for n in names]

    def fetch(
        self, session: aiohttp.ClientSession, since: int, until: int
    ) -> AsyncIterator[list[bytes]]:
        raise NotImplementedError


class Shopify(Client):
    channel = "shopify"
    VERSION = "2024-07"

    async def fetch(
        self, session: aiohttp.ClientSession, since: int, until: int
    ) -> AsyncIterator[list[bytes]]:
        (token,) = self.need("access_token")
        headers = {"X-Shopify-Access-Token": token, "Accept": "application/json"}
        query = urlencode(
            {
                "updated_at_min": _iso(since),
                "updated_at_max": _iso(until),
                "status": "any",
                "limit": 250,
                "order": "updated_at asc",
            }
        )
        url: str | None = f"{self.base}/admin/api/{self.VERSION}/orders.json?{query}"
        while url:
            _, doc, hdrs = await call(session, "GET", url, headers=headers, waited=self.waited)
            if "errors" in doc:
                raise ChannelError(f"shopify: {_said(doc['errors'])}")
            self.pages += 1
            yield [_dumps(o) for o in doc.get("orders", [])]
            url = link_next(hdrs.get("link"))
            await self._pace(hdrs.get("x-shopify-shop-api-call-limit", ""))

    async def _pace(self, used_of: str) -> None:
        """The REST bucket leaks 2 calls/s: near its top, wait for room instead of a 429."""
        try:
            used, size = (int(x) for x in used_of.split("/"))
        except ValueError:
            return
        if used >= size * 0.8:
            await asyncio.sleep(0.5 * (used - size * 0.8 + 1))


class TikTok(Client):
    channel = "tiktok"
    PATH = "/order/202309/orders/search"

    def sign(self, path: str, params: dict[str, str], body: str, secret: str) -> str:
        """TikTok Shop's request signature: HMAC-SHA256 with the app secret over the path, the
        sorted query parameters (without sign and access_token) and the body, wrapped in the
        secret."""
        ordered = "".join(
            f"{k}{params[k]}" for k in sorted(params) if k not in ("sign", "access_token")
        )
        text = f"{secret}{path}{ordered}{body}{secret}"
        return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()

    async def fetch(
        self, session: aiohttp.ClientSession, since: int, until: int
    ) -> AsyncIterator[list[bytes]]:
        app_key, secret, token, cipher = self.need(
            "app_key", "app_secret", "access_token", "shop_cipher"
        )
        body = json.dumps(
            {"update_time_ge": since // 1000, "update_time_lt": until // 1000},
            separators=(",", ":"),
        )
        page_token = ""
        while True:
            params = {
                "app_key": app_key,
                "shop_cipher": cipher,
                "timestamp": str(int(time.time())),
                "page_size": "100",
                "sort_field": "update_time",
                "sort_order": "ASC",
            }
            if page_token:
                params["page_token"] = page_token
            params["sign"] = self.sign(self.PATH, params, body, secret)
            url = f"{self.base}{self.PATH}?{urlencode(params)}"
            headers = {"x-tts-access-token": token, "Content-Type": "application/json"}
            _, doc, _ = await call(
                session, "POST", url, headers=headers, data=body, waited=self.waited
            )
            if doc.get("code") not in (0, "0"):
                raise ChannelError(f"tiktok: {doc.get('code')}: {doc.get('message')}")
            data = doc.get("data") or {}
            self.pages += 1
            yield [_dumps(o) for o in data.get("orders", [])]
            page_token = data.get("next_page_token") or ""
            if not page_token:
                return


class Amazon(Client):
    channel = "amazon"

    def __init__(self, api: ChannelApi) -> None:
        super().__init__(api)
        self._token = ""
        self._token_until = 0.0

    async def _access_token(self, session: aiohttp.ClientSession) -> str:
        """Login with Amazon: the refresh token buys an access token for an hour."""
        if self._token and time.monotonic() < self._token_until - 60:
            return self._token
        refresh, client_id, client_secret = self.need("refresh_token", "client_id", "client_secret")
        lwa = self.api.fields.get("lwa_url") or "https://api.amazon.com/auth/o2/token"
        _, doc, _ = await call(
            session,
            "POST",
            lwa,
            data={
                "grant_type": "refresh_token",
                "refresh_token": refresh,
                "client_id": client_id,
                "client_secret": client_secret,
            },
            waited=self.waited,
        )
        if "access_token" not in doc:
            raise ChannelError(f"amazon LWA: {_said(doc)}")
        self._token = doc["access_token"]
        self._token_until = time.monotonic() + float(doc.get("expires_in", 3600))
        return self._token

    async def _get(self, session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
        headers = {"x-amz-access-token": await self._access_token(session)}
        _, doc, _ = await call(session, "GET", url, headers=headers, waited=self.waited)
        if doc.get("errors"):
            raise ChannelError(f"amazon: {_said(doc['errors'])}")
        return doc.get("payload") or {}

    async def fetch(
        self, session: aiohttp.ClientSession, since: int, until: int
    ) -> AsyncIterator[list[bytes]]:
        (marketplaces,) = self.need("marketplace_ids")
        query = {
            "MarketplaceIds": marketplaces,
            "LastUpdatedAfter": _iso(since),
            "LastUpdatedBefore": _iso(until),
            "MaxResultsPerPage": "100",
        }
        next_token = ""
        while True:
            q = {**query, "NextToken": next_token} if next_token else query
            payload = await self._get(session, f"{self.base}/orders/v0/orders?{urlencode(q)}")
            self.pages += 1
            docs = []
            for order in payload.get("Orders", []):
                docs.append(_dumps({"order": order, "items": await self._items(session, order)}))
            yield docs
            next_token = payload.get("NextToken") or ""
            if not next_token:
                return

    async def _items(self, session: aiohttp.ClientSession, order: dict[str, Any]) -> list[Any]:
        oid = order.get("AmazonOrderId", "")
        items: list[Any] = []
        token = ""
        while True:
            q = f"?{urlencode({'NextToken': token})}" if token else ""
            page = await self._get(session, f"{self.base}/orders/v0/orders/{oid}/orderItems{q}")
            items += page.get("OrderItems", [])
            token = page.get("NextToken") or ""
            if not token:
                return items


class Taobao(Client):
    channel = "taobao"
    METHOD = "taobao.trades.sold.increment.get"
    FIELDS = (
        "tid,tid_str,type,status,created,modified,pay_time,payment,total_fee,post_fee,"
        "discount_fee,step_trade_status,step_paid_fee,receiver_name,receiver_mobile,"
        "receiver_phone,receiver_country,receiver_state,receiver_city,receiver_district,"
        "receiver_town,receiver_address,receiver_zip,buyer_open_uid,buyer_message,orders"
    )
    LIMITED = frozenset({"7", "accesscontrol.limited-by-app-access-count"})

    @staticmethod
    def sign(params: dict[str, str], secret: str) -> str:
        """TOP's md5 signature: the secret, every parameter as name + value sorted by name, the
        secret; upper-case hex."""
        text = secret + "".join(f"{k}{params[k]}" for k in sorted(params)) + secret
        return hashlib.md5(text.encode()).hexdigest().upper()

    async def fetch(
        self, session: aiohttp.ClientSession, since: int, until: int
    ) -> AsyncIterator[list[bytes]]:
        app_key, secret, session_key = self.need("app_key", "app_secret", "session")
        start = since
        while start < until:  # the increment API takes at most one day per call
            end = min(until, start + DAY_MS)
            page = 1
            while True:
                doc = await self._page(session, app_key, secret, session_key, start, end, page)
                resp = doc.get("trades_sold_increment_get_response") or {}
                trades = (resp.get("trades") or {}).get("trade", [])
                self.pages += 1
                yield [_dumps(t) for t in trades]
                if not resp.get("has_next"):
                    break
                page += 1
            start = end

    async def _page(
        self,
        session: aiohttp.ClientSession,
        app_key: str,
        secret: str,
        session_key: str,
        start: int,
        end: int,
        page: int,
    ) -> dict[str, Any]:
        for _ in range(MAX_ATTEMPTS):
            params = {
                "method": self.METHOD,
                "app_key": app_key,
                "session": session_key,
                "timestamp": _shanghai(int(time.time() * 1000)),
                "format": "json",
                "v": "2.0",
                "sign_method": "md5",
                "fields": self.FIELDS,
                "start_modified": _shanghai(start),
                "end_modified": _shanghai(end),
                "page_no": str(page),
                "page_size": "100",
                "use_has_next": "true",
            }
            params["sign"] = self.sign(params, secret)
            _, doc, _ = await call(
                session, "POST", f"{self.base}/router/rest", data=params, waited=self.waited
            )
            err = doc.get("error_response")
            if not err:
                return doc
            code, sub = str(err.get("code", "")), str(err.get("sub_code", ""))
            if code in self.LIMITED or sub in self.LIMITED:
                self.waited.append(1.0)
                await asyncio.sleep(1.0)  # "this ban will last for 1 more seconds"
                continue
            raise ChannelError(
                f"taobao: {code}: {err.get('msg')} ({sub}: {err.get('sub_msg', '')})"
            )
        raise ChannelError(f"taobao: still call-limited after {MAX_ATTEMPTS} tries")


CLIENTS: dict[str, type[Client]] = {c.channel: c for c in (Shopify, TikTok, Amazon, Taobao)}
DEFAULT_BASE = {
    "shopify": "",  # https://{shop}.myshopify.com: each shop has its own
    "tiktok": "https://open-api.tiktokglobalshop.com",
    "amazon": "https://sellingpartnerapi-na.amazon.com",
    "taobao": "https://eco.taobao.com",
}
