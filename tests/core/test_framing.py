"""One framing rule for HTTP bodies and gateway messages."""

from __future__ import annotations

from core.framing import split_ndjson, split_orders

PRETTY = b'{\n  "id": 1,\n  "note": "two\\nlines"\n}\n'


def test_pretty_printed_order_is_one_document_without_a_content_type() -> None:
    assert split_orders(PRETTY) == ([(1, PRETTY)], False)


def test_lines_that_are_not_one_document_are_ndjson() -> None:
    body = b'{"id": 1}\n\n{"id": 2}\n'
    assert split_orders(body) == ([(1, b'{"id": 1}'), (3, b'{"id": 2}')], True)


def test_declared_types_win() -> None:
    assert split_orders(b'{"id": 1}', "application/x-ndjson") == ([(1, b'{"id": 1}')], True)
    body = b'{"id": 1}\n{"id": 2}'
    assert split_orders(body, "application/json") == ([(1, body)], False)


def test_malformed_single_line_stays_one_document() -> None:
    assert split_orders(b'{"id": 1, oops') == ([(1, b'{"id": 1, oops')], False)


def test_blank_lines_are_skipped_but_numbered() -> None:
    assert split_ndjson(b"a\n \n\nb") == [(1, b"a"), (4, b"b")]
