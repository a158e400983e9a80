"""How a body (HTTP request or gateway Kafka message) holds orders: one JSON document or NDJSON.

One rule for every entry point, so a pretty-printed order means the same thing over HTTP and
on ``orders.raw``: NDJSON when the sender says so; one document for ``application/json``;
otherwise one document if the body parses as exactly one, else one order per non-blank line.
"""

from __future__ import annotations

import re

import msgspec

NDJSON_TYPES = ("application/x-ndjson", "application/ndjson", "application/jsonl")


def split_ndjson(body: bytes) -> list[tuple[int, bytes]]:
    """(line number, line) for each non-blank line; line numbers are 1-based like editors."""
    return [(i, ln) for i, ln in enumerate(body.split(b"\n"), 1) if ln and not ln.isspace()]


class TooManyLines(ValueError):
    """A batch with more orders than the caller allows: refused whole, nothing split."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit:,} NDJSON lines; at most {limit:,} per request")
        self.limit = limit


_BLANKS = b" \t\r\x0b\x0c"  # bytes.isspace() whitespace, minus the newline
_NEWLINES = re.compile(rb"\n+")


def count_lines(body: bytes) -> int:
    """Non-blank lines of ``body``, as :func:`split_ndjson` would return them, counted in C
    (linear, no list of lines: a 64 MiB body of newlines must not become 64 million objects)."""
    squeezed = _NEWLINES.sub(b"\n", body.translate(None, _BLANKS)).strip(b"\n")
    return squeezed.count(b"\n") + 1 if squeezed else 0


def split_orders(
    body: bytes, content_type: str = "", max_lines: int = 0
) -> tuple[list[tuple[int, bytes]], bool]:
    """(line number, payload) per order, and whether the body is a batch.

    ``max_lines`` (0 = no limit) bounds a batch: more non-blank lines raise :class:`TooManyLines`
    before anything is split.
    """
    if content_type in NDJSON_TYPES:
        return _split_batch(body, max_lines), True
    if content_type == "application/json" or b"\n" not in body.strip():
        return [(1, body)], False
    try:
        msgspec.json.decode(body, type=msgspec.Raw)  # syntax only: builds no objects
    except msgspec.DecodeError:
        return _split_batch(body, max_lines), True
    except RecursionError:  # deeply nested: one (hostile) document, refused as one
        return [(1, body)], False
    return [(1, body)], False


def _split_batch(body: bytes, max_lines: int) -> list[tuple[int, bytes]]:
    if max_lines and body.count(b"\n") >= max_lines and count_lines(body) > max_lines:
        raise TooManyLines(max_lines)
    return split_ndjson(body)
