"""How a body (HTTP request or gateway Kafka message) holds orders: one JSON document or NDJSON.

One rule for every entry point, so a pretty-printed order means the same thing over HTTP and
on ``orders.raw``: NDJSON when the sender says so; one document for ``application/json``;
otherwise one document if the body parses as exactly one, else one order per non-blank line.
"""

from __future__ import annotations

import msgspec

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


def split_ndjson(body: bytes) -> list[tuple[int, bytes]]:
    """(line number, line) for each non-blank line; line numbers are 1-based like editors."""
    return [(i, ln) for i, ln in enumerate(body.split(b"\n"), 1) if ln and not ln.isspace()]


def split_orders(body: bytes, content_type: str = "") -> tuple[list[tuple[int, bytes]], bool]:
    """(line number, payload) per order, and whether the body is a batch."""
    if content_type in NDJSON_TYPES:
        return split_ndjson(body), True
    if content_type == "application/json" or b"\n" not in body.strip():
        return [(1, body)], False
    try:
        msgspec.json.decode(body, type=msgspec.Raw)  # syntax only: builds no objects
    except msgspec.DecodeError:
        return split_ndjson(body), True
    return [(1, body)], False
