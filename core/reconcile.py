"""Reconciliation: what a channel says it has against what orderstream holds, as a report.

A reconciler pages through a channel's orders updated since a cursor. Each one it finds is either
missing here (the webhook never came: it is ingested now), the same as what is held, newer (the
re-delivery rule updates the held order), or different although not newer (amount, status or
lines disagree: listed for a person, never overwritten). Orders held here that the channel did
not list for the window are flagged unknown. These are plain functions so the rules are tested
without a channel or a broker.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

from core.model import CanonicalOrder

Outcome = Literal["missing", "same", "newer", "different"]
OVERLAP_MS = 5 * 60 * 1000  # the next pass starts this far before the cursor: clocks and
# eventual consistency of the channels' search indexes (Shopify, TikTok) mean an order updated
# at the cursor's edge can appear a little late


class HeldSummary(msgspec.Struct, array_like=True, gc=False):
    """The fields of a held order a reconciliation compares (what a worker answers)."""

    updated_at: int
    created_at: int
    currency: str
    total: int
    payment_status: str
    channel_status: str
    lines: list[tuple[str, int]]  # (sku, quantity), in order
    state: str


class Difference(msgspec.Struct):
    field: str
    channel: str
    orderstream: str


class Finding(msgspec.Struct, omit_defaults=True):
    """One order of the report that needs saying (a same order is only counted)."""

    id: str
    order_no: str
    outcome: str  # missing | newer | different | unknown | rejected
    differences: list[Difference] = []
    reason: str = ""


def summary_of(order: CanonicalOrder, state: str) -> HeldSummary:
    return HeldSummary(
        order.updated_at,
        order.created_at,
        order.currency,
        order.total,
        order.payment_status,
        order.channel_status,
        [(line.sku, line.quantity) for line in order.lines],
        state,
    )


def differences(found: HeldSummary, held: HeldSummary) -> list[Difference]:
    out = []
    if (found.currency, found.total) != (held.currency, held.total):
        out.append(
            Difference("total", f"{found.total} {found.currency}", f"{held.total} {held.currency}")
        )
    if found.payment_status != held.payment_status:
        out.append(Difference("payment_status", found.payment_status, held.payment_status))
    if found.channel_status != held.channel_status:
        out.append(Difference("channel_status", found.channel_status, held.channel_status))
    if sorted(found.lines) != sorted(held.lines):
        out.append(Difference("lines", _lines(found.lines), _lines(held.lines)))
    return out


def _lines(lines: list[tuple[str, int]]) -> str:
    return ", ".join(f"{sku}×{qty}" for sku, qty in sorted(lines))


def classify(found: HeldSummary, held: HeldSummary | None) -> tuple[Outcome, list[Difference]]:
    """What one fetched order is to orderstream, and what differs (for newer: what will change)."""
    if held is None:
        return "missing", []
    diff = differences(found, held)
    if found.updated_at > held.updated_at:
        return "newer", diff
    return ("different", diff) if diff else ("same", [])


def next_cursor(previous: int, seen_updated: list[int], started_ms: int) -> int:
    """Where the next pass starts: the newest update seen (never past when this pass began, as
    an order updated during the pass may not be listed yet), and never backwards."""
    newest = max(seen_updated, default=previous)
    return max(previous, min(newest, started_ms))


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration_ms(text: str) -> int:
    """ "2h", "30m", "1d", "90s" or plain seconds → milliseconds; ValueError naming the text."""
    found = _DURATION.match(text)
    if not found:
        raise ValueError(f"{text!r} is not a duration (e.g. 30m, 2h, 1d)")
    return int(float(found.group(1)) * _UNIT_MS[found.group(2) or "s"])


_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?([a-z]+)"?')


def link_next(header: str | None) -> str | None:
    """The rel="next" URL of an RFC 8288 ``Link`` header (Shopify's cursor pagination)."""
    if not header:
        return None
    for url, rel in _LINK.findall(header):
        if rel == "next":
            return url
    return None
