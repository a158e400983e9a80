"""Reading an export file row by row, whatever the platform saved it as.

Merchants download CSV (UTF-8 with or without a BOM, or GBK from the Chinese back offices, whose
Excel heritage also means CRLF and ``="..."`` guards), tab-separated flat files (Amazon) and XLSX.
Rows stream: a 100 MB file is never in memory, only the row being read. Progress is reported as
the share of the file consumed, which is what an ETA needs.
"""

from __future__ import annotations

import codecs
import csv
import io
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO

SNIFF_BYTES = 256 * 1024
_XLSX_MAGIC = b"PK\x03\x04"

csv.field_size_limit(min(sys.maxsize, 2**31 - 1))


class FileError(Exception):
    """The file is not one we can read as a table (names the reason)."""


class Table:
    """A file's header and its rows, with how far through the file the rows have got."""

    def __init__(
        self,
        kind: str,
        encoding: str,
        header: list[str],
        rows: Iterator[tuple[int, list[str]]],
        progress: Callable[[], float],
        close: Callable[[], None],
    ) -> None:
        self.kind = kind  # csv, tsv, xlsx
        self.encoding = encoding
        self.header = header
        self.rows = rows  # (1-based row number as a spreadsheet shows it, cells)
        self.progress = progress  # 0.0 .. 1.0
        self.close = close


def sniff_encoding(head: bytes) -> str:
    """UTF-8 (BOM or not) when the bytes decode as such, else GB18030 (GBK's superset, which
    every Chinese back office's "ANSI" export is)."""
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8-sig"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=False)
    except UnicodeDecodeError:
        return "gb18030"
    return "utf-8"


def open_table(path: Path) -> Table:
    with path.open("rb") as f:
        head = f.read(SNIFF_BYTES)
    if head.startswith(_XLSX_MAGIC):
        return _xlsx(path)
    return _delimited(path, head)


def _delimited(path: Path, head: bytes) -> Table:
    encoding = sniff_encoding(head)
    first_line = head.split(b"\n", 1)[0]
    delimiter = "\t" if first_line.count(b"\t") > first_line.count(b",") else ","
    size = max(1, path.stat().st_size)
    raw = path.open("rb")
    text: IO[str] = io.TextIOWrapper(raw, encoding=encoding, errors="strict", newline="")
    reader = csv.reader(text, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raw.close()
        raise FileError("the file is empty: no header row") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raw.close()
        raise FileError(f"the header row cannot be read: {exc}") from None

    def rows() -> Iterator[tuple[int, list[str]]]:
        row_no = 1
        try:
            for row in reader:
                row_no += 1
                yield row_no, row
        except UnicodeDecodeError as exc:
            raise FileError(f"row {row_no + 1}: not {encoding} text ({exc.reason})") from None
        except csv.Error as exc:
            raise FileError(f"row {row_no + 1}: {exc}") from None
        finally:
            raw.close()

    return Table(
        "tsv" if delimiter == "\t" else "csv",
        encoding,
        header,
        rows(),
        lambda: min(1.0, raw.tell() / size) if not raw.closed else 1.0,
        raw.close,
    )


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _xlsx(path: Path) -> Table:
    # openpyxl's read-only mode streams the sheet's XML: one row in memory at a time
    from openpyxl import load_workbook

    # a file object, not the path: openpyxl judges a path by its suffix, and uploads are stored
    # under a name of ours; read-only mode reads the archive lazily, so it stays open
    handle = path.open("rb")
    try:
        book = load_workbook(handle, read_only=True, data_only=True)
    except Exception as exc:  # zip or XML damage: openpyxl raises many kinds
        handle.close()
        raise FileError(f"not a readable XLSX workbook: {exc}") from None

    def close() -> None:
        book.close()
        handle.close()

    sheet = book.worksheets[0]
    total = max(1, sheet.max_row or 1)
    it = sheet.iter_rows(values_only=True)
    try:
        header = [_cell(v) for v in next(it)]
    except StopIteration:
        close()
        raise FileError("the first sheet is empty: no header row") from None
    done = [1]

    def rows() -> Iterator[tuple[int, list[str]]]:
        try:
            for values in it:
                done[0] += 1
                yield done[0], [_cell(v) for v in values]
        finally:
            close()

    return Table("xlsx", "xlsx", header, rows(), lambda: min(1.0, done[0] / total), close)
