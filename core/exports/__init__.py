"""Merchants' order exports (CSV / XLSX downloads) → the channel's own API payloads.

Each format module maps a platform's export columns (by header, in the languages the platform
writes them) back to the order object its API serves, so an imported order goes through the same
adapter, global id and dedup as its webhook copy: a re-import of known orders adds nothing, an
export with newer statuses updates them. ``orders`` groups a file's rows into orders as they
stream past, holding one order's rows at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import msgspec

from core.exports import amazon, jd, pdd, shopify, taobao
from core.exports._cells import Columns, RowError

_encode = msgspec.json.Encoder().encode


class ExportFormat(msgspec.Struct, frozen=True):
    channel: str
    key: str  # the field naming the order: rows sharing it in a run are one order
    aliases: dict[str, tuple[str, ...]]
    required: tuple[str, ...]
    build: Callable[[Columns, list[tuple[int, list[str]]]], dict[str, Any]]
    updated_ms: Callable[[dict[str, Any]], int]  # the channel's updated_at of a built order


FORMATS: dict[str, ExportFormat] = {
    mod.CHANNEL: ExportFormat(
        mod.CHANNEL, mod.KEY, mod.ALIASES, mod.REQUIRED, mod.build, mod.updated_ms
    )
    for mod in (shopify, taobao, jd, pdd, amazon)
}
FORMATS["tmall"] = FORMATS["taobao"]  # one report, one API (Tmall trades are Taobao trades)


class HeaderError(Exception):
    """The file's header is not the channel's export: nothing of it can be read."""


class ImportedOrder(msgspec.Struct, frozen=True):
    """One order of the file, or why its rows could not become one."""

    first_row: int
    last_row: int
    order_no: str
    payload: bytes = b""  # the channel's API order object as JSON
    updated_at: int = 0  # epoch ms: what the re-delivery rule compares with the held copy
    column: str = ""  # set when refused: which column, and why
    reason: str = ""
    raw: bytes = b""  # a refused order's rows as the file had them (for its dead letter)


def columns(fmt: ExportFormat, header: Sequence[str]) -> Columns:
    cols = Columns(header, fmt.aliases)
    missing = [fmt.aliases[f][0] for f in fmt.required if not cols.has(f)]
    if missing:
        raise HeaderError(
            f"not a {fmt.channel} order export: no column {', '.join(map(repr, missing))}"
            f" in the header row ({len(header)} columns)"
        )
    return cols


def orders(
    fmt: ExportFormat, cols: Columns, rows: Iterable[tuple[int, list[str]]]
) -> Iterator[ImportedOrder]:
    """Consecutive rows with the same order key are one order (every export lists an order's
    rows together); blank rows are skipped."""
    key_at = cols.index[fmt.key]
    group: list[tuple[int, list[str]]] = []
    current = ""
    for row_no, row in rows:
        if not any(c.strip() for c in row if c):
            continue
        key = cols.text(row, fmt.key) if key_at < len(row) else ""
        if group and key != current:
            yield _one(fmt, cols, group, current)
            group = []
        current = key
        group.append((row_no, row))
    if group:
        yield _one(fmt, cols, group, current)


def _one(
    fmt: ExportFormat, cols: Columns, group: list[tuple[int, list[str]]], key: str
) -> ImportedOrder:
    first, last = group[0][0], group[-1][0]
    try:
        if not key:
            raise RowError(cols.name(fmt.key), "empty; every row must name its order")
        built = fmt.build(cols, group)
    except RowError as exc:
        raw = _encode([r for _, r in group])
        row = exc.row if exc.row is not None else first
        return ImportedOrder(row, last, key, column=exc.column, reason=exc.reason, raw=raw)
    return ImportedOrder(first, last, key, _encode(built), fmt.updated_ms(built))


__all__ = [
    "FORMATS",
    "ExportFormat",
    "HeaderError",
    "ImportedOrder",
    "RowError",
    "columns",
    "orders",
]
