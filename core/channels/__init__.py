"""Channel adapters: each channel's real order payload -> ``CanonicalOrder`` or ``Rejection``.

Two entry points per channel because they have different budgets: ``order_no`` runs in the HTTP
ingest on every request before it answers 202 (it decodes one field and lets msgspec skip the
rest), ``normalise`` runs in the stream and decodes everything into typed Structs.
"""

from __future__ import annotations

from collections.abc import Callable

import msgspec

from core.model import DEFAULT_LIMITS, CanonicalOrder, Limits, Rejection
from core.skus import SkuCatalog


class NormaliseContext(msgspec.Struct, frozen=True):
    """What normalisation needs besides the payload; built once per worker."""

    skus: SkuCatalog
    default_country: str = "CN"  # only a fallback when the address names no country
    limits: Limits = DEFAULT_LIMITS  # per-order bounds (settings max_order_bytes, ...)


class ChannelAdapter(msgspec.Struct, frozen=True):
    """A channel's two entry points (plain functions, so calls are one attribute hop)."""

    name: str
    order_no: Callable[[bytes], str | Rejection]
    normalise: Callable[[bytes, NormaliseContext], CanonicalOrder | Rejection]


from core.channels import amazon, jd, ministore, pdd, shopify, taobao, tiktok  # noqa: E402

ADAPTERS: dict[str, ChannelAdapter] = {
    mod.CHANNEL: ChannelAdapter(name=mod.CHANNEL, order_no=mod.order_no, normalise=mod.normalise)
    for mod in (shopify, tiktok, amazon, taobao, jd, pdd, ministore)
}


def normalise(channel: str, payload: bytes, ctx: NormaliseContext) -> CanonicalOrder | Rejection:
    """Normalise ``payload`` from ``channel``; an unknown channel is a Rejection like any other."""
    adapter = ADAPTERS.get(channel)
    if adapter is None:
        return Rejection(channel=channel, field="channel", reason=f"unknown channel {channel!r}")
    return adapter.normalise(payload, ctx)


def order_no(channel: str, payload: bytes) -> str | Rejection:
    """The channel order number alone, for the ingest's global id."""
    adapter = ADAPTERS.get(channel)
    if adapter is None:
        return Rejection(channel=channel, field="channel", reason=f"unknown channel {channel!r}")
    return adapter.order_no(payload)


__all__ = [
    "ADAPTERS",
    "ChannelAdapter",
    "NormaliseContext",
    "normalise",
    "order_no",
]
