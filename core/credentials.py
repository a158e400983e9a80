"""API keys and channel webhook secrets: what a caller must present, and how it is checked.

Keys are random 32-byte tokens, so a plain SHA-256 of the secret is what is kept at rest (a slow
password hash buys nothing against a guess space of 2^256, and every request pays for it). A key
names its id in clear (``osk_<id>_<secret>``) so the check is one dict lookup plus one
constant-time comparison. Channel webhook secrets (Shopify's ``X-Shopify-Hmac-Sha256``
convention) must be kept in clear: the body's HMAC is recomputed with them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

import msgspec

SCOPES = ("ingest", "read", "write")
KEY_PREFIX = "osk_"


class ApiKey(msgspec.Struct, kw_only=True):
    id: str
    name: str
    sha256: str  # hex digest of the secret part
    scopes: list[str]
    channels: list[str] = []  # ingest only for these channels; empty = every channel
    created_at: int
    expires_at: int = 0  # epoch ms; 0 = never (a rotated key gets its grace period here)


class ChannelSecret(msgspec.Struct, kw_only=True):
    """A channel that pushes webhooks signs each body with this secret (base64 HMAC-SHA256)."""

    channel: str
    secret: str
    header: str = "X-Shopify-Hmac-Sha256"


class ChannelApi(msgspec.Struct, kw_only=True):
    """How to call a channel's order API for reconciliation: where, and its credentials
    (access tokens, app keys and secrets, kept in clear because each request needs them)."""

    channel: str
    base_url: str
    fields: dict[str, str] = {}


class KeyFile(msgspec.Struct, kw_only=True):
    keys: list[ApiKey] = []
    channel_secrets: list[ChannelSecret] = []


class Denied(msgspec.Struct, frozen=True):
    status: int  # 401 who are you / 403 not allowed
    reason: str  # metric label: missing, malformed, unknown, wrong, expired, scope, channel, ...
    message: str


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def new_key(
    name: str, scopes: list[str], channels: list[str], now_ms: int, expires_at: int = 0
) -> tuple[ApiKey, str]:
    """A new key and its token (shown once; only its hash is kept)."""
    bad = [s for s in scopes if s not in SCOPES]
    if bad or not scopes:
        raise ValueError(f"scopes must be some of {SCOPES}, got {scopes}")
    key_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)
    key = ApiKey(
        id=key_id,
        name=name,
        sha256=_digest(secret),
        scopes=sorted(set(scopes)),
        channels=sorted({c.lower() for c in channels}),
        created_at=now_ms,
        expires_at=expires_at,
    )
    return key, f"{KEY_PREFIX}{key_id}_{secret}"


class KeyRing:
    """The keys in force, indexed by id, for the per-request check."""

    def __init__(self, keyfile: KeyFile) -> None:
        self.by_id = {k.id: k for k in keyfile.keys}
        self.channel_secrets = {c.channel: c for c in keyfile.channel_secrets}

    def check(self, token: str, scope: str, channel: str, now_ms: int) -> ApiKey | Denied:
        if not token:
            return Denied(401, "missing", "a credential is required: Authorization: Bearer <key>")
        if not token.startswith(KEY_PREFIX) or token.count("_") < 2:
            return Denied(401, "malformed", f"not an orderstream key (they start {KEY_PREFIX})")
        key_id, _, secret = token[len(KEY_PREFIX) :].partition("_")
        key = self.by_id.get(key_id)
        if key is None:
            return Denied(401, "unknown", "unknown or revoked key")
        if not hmac.compare_digest(key.sha256, _digest(secret)):
            return Denied(401, "wrong", "wrong key")
        if key.expires_at and now_ms >= key.expires_at:
            return Denied(401, "expired", f"key {key.name!r} has expired (rotated?)")
        if scope not in key.scopes:
            return Denied(403, "scope", f"key {key.name!r} lacks the {scope!r} scope")
        if channel and key.channels and channel not in key.channels:
            return Denied(403, "channel", f"key {key.name!r} may not ingest for {channel!r}")
        return key


def body_hmac(secret: str, body: bytes) -> str:
    """Base64 HMAC-SHA256 of the raw body: the Shopify webhook convention."""
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def verify_body_hmac(secret: str, body: bytes, presented: str) -> bool:
    return hmac.compare_digest(body_hmac(secret, body), presented.strip())
