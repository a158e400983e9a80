"""Who may call the API: API keys (scoped, hashed at rest, rotatable) and channel HMAC signatures.

The key file (``<data_dir>/auth/keys.json``, mode 0600) is managed with ``orderstream keys …``
and re-read by the running service when it changes, so adding, rotating or revoking a key needs
no restart. Every ``/v1`` endpoint needs a credential: ``ingest`` for ``POST /v1/orders``,
``write`` for every other write, ``read`` for reads and the live stream. ``/health`` is open
(probes); ``/metrics`` needs ``read`` unless served on its own port (``metrics_port``).
Failures are answered 401/403, counted by reason, and logged without the credential.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
from aiohttp import web

from core.credentials import (
    ChannelApi,
    ChannelSecret,
    Denied,
    KeyFile,
    KeyRing,
    new_key,
    verify_body_hmac,
)
from streams import metrics
from streams.cluster.peers import SECRET_HEADER

log = logging.getLogger("orderstream.auth")

_json = msgspec.json.Encoder()
_keyfile_dec = msgspec.json.Decoder(KeyFile)
OPEN_PATHS = frozenset({"/health", "/openapi.json", "/console"})
CONSOLE_PREFIX = "/console/"  # the console's static files: the page asks for a key itself
KEY = "api_key"  # request[KEY]: the ApiKey that authenticated the request (auth on)
INTERNAL_PREFIX = "/internal/"  # node-to-node routes: the cluster secret, never an API key


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def keys_path(data_dir: Path) -> Path:
    return data_dir / "auth" / "keys.json"


def channel_api_path(data_dir: Path) -> Path:
    return data_dir / "auth" / "channel_api.json"


_apis_dec = msgspec.json.Decoder(list[ChannelApi])


def load_channel_apis(path: Path) -> dict[str, ChannelApi]:
    """Read at each use (a reconciliation pass), so a change applies to the next pass."""
    try:
        return {a.channel: a for a in _apis_dec.decode(path.read_bytes())}
    except FileNotFoundError:
        return {}


def set_channel_api(path: Path, channel: str, base_url: str, fields: dict[str, str]) -> ChannelApi:
    """Merge ``fields`` into the channel's entry (``base_url`` "" keeps the one it has)."""
    apis = load_channel_apis(path)
    old = apis.get(channel)
    api = ChannelApi(
        channel=channel,
        base_url=base_url or (old.base_url if old else ""),
        fields={**(old.fields if old else {}), **fields},
    )
    apis[channel] = api
    save_channel_apis(path, list(apis.values()))
    return api


def save_channel_apis(path: Path, apis: list[ChannelApi]) -> None:
    _write_private(path, msgspec.json.format(msgspec.json.encode(apis)))


def _write_private(path: Path, data: bytes) -> None:
    """Atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_keys(path: Path) -> KeyFile:
    try:
        return _keyfile_dec.decode(path.read_bytes())
    except FileNotFoundError:
        return KeyFile()


def save_keys(path: Path, keyfile: KeyFile) -> None:
    _write_private(path, msgspec.json.format(msgspec.json.encode(keyfile)))


def add_key(
    path: Path, name: str, scopes: list[str], channels: list[str], expires_days: float = 0
) -> str:
    """Create a key; returns its token (the only time it exists in clear)."""
    keyfile = load_keys(path)
    now = _now_ms()
    expires = int(now + expires_days * 86_400_000) if expires_days else 0
    key, token = new_key(name, scopes, channels, now, expires)
    keyfile.keys.append(key)
    save_keys(path, keyfile)
    return token


def rotate_key(path: Path, name: str, grace_hours: float) -> str:
    """A new key like the newest one named ``name``; the old ones expire after the grace."""
    keyfile = load_keys(path)
    current = [k for k in keyfile.keys if k.name == name]
    if not current:
        raise KeyError(name)
    now = _now_ms()
    newest = max(current, key=lambda k: k.created_at)
    for k in current:
        deadline = now + int(grace_hours * 3_600_000)
        k.expires_at = min(k.expires_at, deadline) if k.expires_at else deadline
    key, token = new_key(name, newest.scopes, newest.channels, now)
    keyfile.keys.append(key)
    save_keys(path, keyfile)
    return token


def revoke_key(path: Path, name: str) -> int:
    keyfile = load_keys(path)
    before = len(keyfile.keys)
    keyfile.keys = [k for k in keyfile.keys if k.name != name and k.id != name]
    save_keys(path, keyfile)
    return before - len(keyfile.keys)


def set_channel_secret(path: Path, channel: str, secret: str, header: str) -> None:
    keyfile = load_keys(path)
    keyfile.channel_secrets = [c for c in keyfile.channel_secrets if c.channel != channel]
    keyfile.channel_secrets.append(ChannelSecret(channel=channel, secret=secret, header=header))
    save_keys(path, keyfile)


def ensure_bootstrap_key(data_dir: Path) -> Path | None:
    """First start with auth on and no keys: create an all-scope key, written to a 0600 file
    (never logged), so the service is usable at once and never open by default."""
    path = keys_path(data_dir)
    if load_keys(path).keys:
        return None
    token = add_key(path, "bootstrap", ["ingest", "read", "write"], [])
    out = data_dir / "auth" / "bootstrap.key"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token + "\n")
    return out


def required_scope(method: str, path: str, metrics_open: bool) -> str | None:
    if (
        path in OPEN_PATHS
        or path.startswith(CONSOLE_PREFIX)
        or (path == "/metrics" and metrics_open)
    ):
        return None
    if method == "POST" and path in ("/v1/orders", "/v1/imports"):
        return "ingest"
    if method in ("GET", "HEAD"):
        return "read"
    return "write"


class Authenticator:
    def __init__(
        self,
        path: Path,
        enabled: bool,
        metrics_open: bool = False,
        cluster_secret: Callable[[], str] | None = None,
    ) -> None:
        self.path = path
        self.enabled = enabled
        self.metrics_open = metrics_open
        self.cluster_secret = cluster_secret  # None: one machine, no node-to-node routes
        self._mtime = -1.0
        self.ring = KeyRing(KeyFile())
        self.reload()

    def reload(self) -> None:
        """Re-read the key file if it changed since the last look (cheap: one stat)."""
        try:
            mtime = self.path.stat().st_mtime
        except FileNotFoundError:
            mtime = 0.0
        if mtime == self._mtime:
            return
        try:
            self.ring = KeyRing(load_keys(self.path))
        except (OSError, msgspec.DecodeError, msgspec.ValidationError) as exc:
            log.error("key file %s unreadable (%s): keeping the keys in force", self.path, exc)
            return
        self._mtime = mtime
        log.info(
            "%d API key(s), %d channel secret(s) in force",
            len(self.ring.by_id),
            len(self.ring.channel_secrets),
        )

    def _deny(self, request: web.Request, denied: Denied) -> web.Response:
        metrics.AUTH_FAILURES.labels(denied.reason).inc()
        log.warning(
            "%s %s from %s: %d %s",
            request.method,
            request.path,
            request.remote,
            denied.status,
            denied.reason,
        )
        body = {"error": {"field": "Authorization", "reason": denied.message}}
        headers = {"WWW-Authenticate": 'Bearer realm="orderstream"'} if denied.status == 401 else {}
        return web.Response(
            status=denied.status,
            body=_json.encode(body),
            content_type="application/json",
            headers=headers,
        )

    def _internal_allowed(self, request: web.Request) -> bool:
        secret = self.cluster_secret() if self.cluster_secret is not None else ""
        given = request.headers.get(SECRET_HEADER, "")
        return bool(secret) and hmac.compare_digest(given.encode(), secret.encode())

    @web.middleware
    async def middleware(self, request: web.Request, handler: web.Handler) -> web.StreamResponse:
        if request.path.startswith(INTERNAL_PREFIX):  # whatever ``auth`` says: never open
            if self._internal_allowed(request):
                return await handler(request)
            metrics.AUTH_FAILURES.labels("cluster").inc()
            log.warning("%s %s from %s: 403 cluster", request.method, request.path, request.remote)
            body = {
                "error": {
                    "field": SECRET_HEADER,
                    "reason": "node-to-node route: only the service's own nodes may call it",
                }
            }
            return web.Response(
                status=403, body=_json.encode(body), content_type="application/json"
            )
        if not self.enabled:
            return await handler(request)
        scope = required_scope(request.method, request.path, self.metrics_open)
        if scope is None:
            return await handler(request)
        channel = request.headers.get("X-Channel", "").strip().lower() if scope == "ingest" else ""
        # a channel that signs its webhooks: the signature over the raw body is the credential
        signed = self.ring.channel_secrets.get(channel) if channel else None
        if signed is not None and signed.header in request.headers:
            body = await request.read()  # cached: the handler reads the same bytes
            if verify_body_hmac(signed.secret, body, request.headers[signed.header]):
                return await handler(request)
            return self._deny(
                request, Denied(401, "bad_signature", f"{signed.header} does not sign this body")
            )
        token = ""
        auth = request.headers.get("Authorization", "")
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
        elif "X-Api-Key" in request.headers:
            token = request.headers["X-Api-Key"].strip()
        elif scope == "read" and "access_token" in request.query:
            token = request.query["access_token"]  # EventSource cannot send headers
        result = self.ring.check(token, scope, channel, _now_ms())
        if isinstance(result, Denied):
            return self._deny(request, result)
        request[KEY] = result  # who acts: audited as the key's name, /v1/whoami
        return await handler(request)
