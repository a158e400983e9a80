"""Reading one export cell: the quirks every merchant export shares, checked with the column named.

Spreadsheet exports guard long numbers from Excel (``="4012345678901234567"``, a leading ``'``
or a trailing tab), print money with currency signs and thousands separators, and write times in
the platform's own zone and layout. Each reader here returns the clean value the channel's API
would have sent, or raises ``RowError`` naming the column, so a bad row is reported by file, row
and column instead of by a JSON path the merchant never saw.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta, timezone
from decimal import Decimal, InvalidOperation
from typing import TypeVar

T = TypeVar("T")

SHANGHAI = timezone(timedelta(hours=8))


class RowError(Exception):
    """A cell that cannot become part of an order: which column, and why."""

    def __init__(self, column: str, reason: str) -> None:
        super().__init__(f"column {column!r}: {reason}")
        self.column = column
        self.reason = reason
        self.row: int | None = None  # set where the row is known; else the order's first row


def per_row(rows: list[tuple[int, list[str]]], read: Callable[[list[str]], T]) -> list[T]:
    """``read`` applied to each row, a failure naming its own row (not the order's first)."""
    out = []
    for row_no, row in rows:
        try:
            out.append(read(row))
        except RowError as exc:
            exc.row = row_no
            raise
    return out


class Columns:
    """The file's header mapped to a format's fields (each field known by several spellings)."""

    def __init__(self, header: Sequence[str], aliases: dict[str, tuple[str, ...]]) -> None:
        seen = {clean_header(h): i for i, h in reversed(list(enumerate(header)))}
        self.index: dict[str, int] = {}
        self.title: dict[str, str] = {}
        for field, names in aliases.items():
            for name in names:
                i = seen.get(clean_header(name))
                if i is not None:
                    self.index[field] = i
                    self.title[field] = header[i].strip().lstrip("\ufeff")
                    break

    def has(self, field: str) -> bool:
        return field in self.index

    def text(self, row: Sequence[str], field: str) -> str:
        i = self.index.get(field)
        if i is None or i >= len(row):
            return ""
        value = row[i]
        if not value:
            return ""
        # most cells are clean: look at their ends before paying for the full clean-up
        if value[0] in _GUARDS or value[-1] in _GUARDS:
            return clean_cell(value)
        return value

    def required(self, row: Sequence[str], field: str) -> str:
        value = self.text(row, field)
        if not value:
            raise RowError(self.name(field), "empty; the order needs it")
        return value

    def name(self, field: str) -> str:
        return self.title.get(field, field)


_GUARDS = frozenset(" \t='\"\r\n")


def clean_header(name: str) -> str:
    """Header cells compared without BOM, case, spaces, brackets or unit suffixes' spacing."""
    return re.sub(r"[\s\ufeff\"'_\-()（）]", "", name).lower()


def clean_cell(value: object) -> str:
    text = "" if value is None else str(value)
    text = text.strip().strip("\t")
    if text.startswith('="') and text.endswith('"'):
        text = text[2:-1]
    elif text.startswith("'"):
        text = text[1:]
    return text.strip()


_PLAIN_AMOUNT = re.compile(r"-?\d+(\.\d+)?$")
_MONEY_NOISE = re.compile(r"[\s,¥￥$€£]|元|RMB|CNY", re.IGNORECASE)


def amount(cols: Columns, row: Sequence[str], field: str, required: bool = False) -> str:
    """A decimal amount as text ("428.00"): never through a float, as the adapters require."""
    raw = cols.text(row, field)
    if not raw:
        if required:
            raise RowError(cols.name(field), "empty; the order needs an amount")
        return "0"
    if _PLAIN_AMOUNT.match(raw):
        return raw
    text = _MONEY_NOISE.sub("", raw)
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise RowError(cols.name(field), f"{raw!r} is not an amount") from None
    if not value.is_finite():
        raise RowError(cols.name(field), f"{raw!r} is not an amount")
    return format(value, "f")


def quantity(cols: Columns, row: Sequence[str], field: str) -> int:
    raw = cols.required(row, field)
    try:
        value = Decimal(raw.replace(",", ""))
    except InvalidOperation:
        raise RowError(cols.name(field), f"{raw!r} is not a quantity") from None
    if value != value.to_integral_value() or value < 1:
        raise RowError(cols.name(field), f"{raw!r}: a quantity is a whole number >= 1")
    return int(value)


_LAYOUTS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y/%m/%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d %H:%M",
    "%Y-%m-%d",
    "%Y/%m/%d",
)


def local_time(cols: Columns, row: Sequence[str], field: str, required: bool = False) -> str:
    """A zone-less wall time as the Chinese platforms' APIs write it ("2026-11-23 10:00:00")."""
    raw = cols.text(row, field)
    if not raw:
        if required:
            raise RowError(cols.name(field), "empty; the order needs this time")
        return ""
    if len(raw) == 19 and raw[4] == "-" and raw[10] == " ":  # the common layout, checked fast
        try:
            if datetime.fromisoformat(raw).tzinfo is None:
                return raw
        except ValueError:
            pass
    for layout in _LAYOUTS:
        try:
            return datetime.strptime(raw, layout).strftime("%Y-%m-%d %H:%M:%S")
        except ValueError:
            continue
    raise RowError(cols.name(field), f"{raw!r} is not a time (2026-11-23 10:00:00)")


def zoned_time(cols: Columns, row: Sequence[str], field: str, required: bool = False) -> str:
    """An ISO 8601 time with its offset, from Shopify's "2026-11-23 10:00:00 -0500" or ISO."""
    raw = cols.text(row, field)
    if not raw:
        if required:
            raise RowError(cols.name(field), "empty; the order needs this time")
        return ""
    try:
        when = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise RowError(
            cols.name(field), f"{raw!r} is not a time with its zone (2026-11-23 10:00:00 -0500)"
        )
    return when.isoformat()


def latest(*times: str) -> str:
    """The newest of several times in one layout and zone (export rows carry no updated_at: the
    last thing that happened to the order is when it was last updated)."""
    known = [t for t in times if t]
    if not known:
        return ""
    if "T" in known[0]:
        return max(known, key=lambda t: datetime.fromisoformat(t))
    return max(known)


def iso_ms(text: str) -> int:
    """Epoch ms of a time this module wrote (checked on the way in)."""
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def shanghai_ms(text: str) -> int:
    """Epoch ms of a zone-less Asia/Shanghai wall time this module wrote."""
    when = datetime.fromisoformat(text).replace(tzinfo=SHANGHAI)
    return int(when.timestamp() * 1000)
