"""Hostile input against every channel adapter: real fixtures, mutated.

What must hold for any bytes at all: ``order_no`` returns a number or a ``Rejection`` and
``normalise`` a ``CanonicalOrder`` or a ``Rejection`` -- never an exception, never the adapters'
catch-all "internal error" (that would be a bug hidden as a dead letter) -- and an order that does
come out is safe for every later stage: within the limits, encodable as msgpack and JSON, its
dedup facts computable, and the number the ingest read is the number the normaliser read, for an
order and for a rejection alike (else the id the client got would name nothing). Good fixtures,
re-serialised or padded with unknown fields, still normalise to exactly the same order.

Mutations: a value anywhere in the document replaced by a hostile one (huge or non-finite numbers,
wrong types, control characters, long strings, deep nesting, lone surrogates), and byte-level
damage to the serialised payload (truncation, NaN/Infinity literals, invalid UTF-8, duplicate
keys, deep nesting around the whole document).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.channels import ADAPTERS, NormaliseContext
from core.dedup import dedup_facts
from core.model import MAX_ORDER_NO_CHARS, CanonicalOrder, Rejection, limit_problem
from core.skus import SkuCatalog

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
CORPUS: list[tuple[str, str, Any]] = [
    (p.parent.name, p.name, json.loads(p.read_bytes())) for p in sorted(FIXTURES.glob("*/*.json"))
]
CTX = NormaliseContext(skus=SkuCatalog.from_toml(ROOT / "config" / "skus.toml"))
_msgpack = msgspec.msgpack.Encoder()
_order_decoder = msgspec.msgpack.Decoder(CanonicalOrder)

# raw JSON text spliced in where a placeholder string stands (json.dumps cannot write these)
RAW_VALUES = [
    b"1e400",
    b"-1e400",
    b"NaN",
    b"Infinity",
    b"-Infinity",
    b"1180591620717411303424",  # 2**70
    b"18446744073709551616",  # 2**64
    b"-9223372036854775809",
    b"9" * 400,
    b"1e308",
    b"5e-324",
    b"-0",
    b"0.1e-999999999",
    b'"1e999999"',
    b'"\\ud800"',  # lone surrogate escapes: not text
    b'"\\udfff\\ud800"',
    b'"\\u0000\\u001f\\u007f"',
    b"[" * 3000 + b"]" * 3000,
    b'{"a":' * 3000 + b"1" + b"}" * 3000,
    b"[" * 50 + b"1" + b"]" * 50,
    b"tru",
    b'"unterminated',
]
PLAIN_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    2**63,
    2**64 - 1,
    -(2**63),
    10**30,
    1e300,
    -1.5,
    "",
    " ",
    "\x00",
    "\u202e\u200b\ufeff",
    "x" * 1001,
    "9" * 5000,
    "1e999999",
    "-0.01",
    "NaN",
    "2026-13-45T99:99:99Z",
    "0001-01-01T00:00:00+00:00",
    "9999-12-31T23:59:59-12:00",
    "10000-01-01 00:00:00",
    "12:00",
    "$encrypted$",
    "~x~",
    "***",
    "+" + "8" * 60,
    "深圳市\u0000南山区\n\t",
    "\U0001f600" * 300,
    [],
    [None],
    {},
    {"": ""},
    [[[[]]]],
]


def check(channel: str, payload: bytes) -> CanonicalOrder | Rejection:
    """Run both entry points on ``payload`` and assert the invariants; return normalise's."""
    adapter = ADAPTERS[channel]
    started = time.perf_counter()
    number = adapter.order_no(payload)
    assert isinstance(number, str | Rejection), type(number)
    if isinstance(number, str):
        assert 0 < len(number) <= MAX_ORDER_NO_CHARS
        assert not any(ord(c) < 32 or 0x7F <= ord(c) <= 0x9F for c in number), number
    else:
        assert not number.reason.startswith("internal error"), number
    result = adapter.normalise(payload, CTX)
    assert isinstance(result, CanonicalOrder | Rejection), type(result)
    # no input may hold a worker for long ("1e999999" as a JPY amount once took 67 s)
    assert time.perf_counter() - started < 5, "too slow"
    if isinstance(result, Rejection):
        assert not result.reason.startswith("internal error"), result
        assert result.field and result.reason
        # the door gave the client an id for this number: the dead letter must be filed under it
        assert result.order_no == (number if isinstance(number, str) else ""), (number, result)
        _msgpack.encode(result)  # dead letters carry it
        return result
    assert limit_problem(result) is None
    assert number == result.channel_order_no, (number, result.channel_order_no)
    assert _order_decoder.decode(_msgpack.encode(result)) == result
    msgspec.json.encode(result)
    dedup_facts(result)  # the normalise stage computes these outside its try
    return result


def dumps(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()


def paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path to a value in a JSON tree (the root excluded)."""
    out = []
    if isinstance(node, dict):
        for k, v in node.items():
            out.append((*prefix, k))
            out += paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.append((*prefix, i))
            out += paths(v, (*prefix, i))
    return out


def replaced(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(doc, dict):
        return {k: (replaced(v, rest, value) if k == head else v) for k, v in doc.items()}
    return [replaced(v, rest, value) if i == head else v for i, v in enumerate(doc)]


PLACEHOLDER = "\x1e__HOSTILE__\x1e"
CORPUS_PATHS = [paths(doc) for _, _, doc in CORPUS]


@st.composite
def value_mutation(draw: st.DrawFn) -> tuple[str, bytes]:
    """A corpus document with one to three values replaced by hostile ones."""
    i = draw(st.integers(0, len(CORPUS) - 1))
    channel, _, doc = CORPUS[i]
    raws = []
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(CORPUS_PATHS[i]))
        kind = draw(st.integers(0, 2))
        if kind == 0:
            value: Any = draw(st.sampled_from(PLAIN_VALUES))
        elif kind == 1:
            value = draw(
                st.one_of(
                    st.integers(min_value=-(2**80), max_value=2**80),
                    st.floats(allow_nan=False, allow_infinity=False),
                    st.text(max_size=40),
                    st.from_regex(r"\A[0-9]{0,25}(\.[0-9]{0,6})?\Z"),
                    st.lists(st.integers(), max_size=3),
                )
            )
        else:
            raws.append(draw(st.sampled_from(RAW_VALUES)))
            value = PLACEHOLDER
        try:
            doc = replaced(doc, path, value)
        except (IndexError, KeyError, TypeError):
            continue  # an earlier replacement removed this path
    payload = dumps(doc)
    for raw in raws:
        payload = payload.replace(json.dumps(PLACEHOLDER).encode(), raw, 1)
    return channel, payload


INVALID_UTF8 = [b"\xff", b"\xc3\x28", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\x80"]


@st.composite
def byte_mutation(draw: st.DrawFn) -> tuple[str, bytes]:
    """A serialised corpus document damaged at the byte level."""
    channel, _, doc = draw(st.sampled_from(CORPUS))
    payload = dumps(doc)
    at = draw(st.integers(0, len(payload)))
    kind = draw(st.integers(0, 6))
    if kind == 0:  # truncated
        return channel, payload[:at]
    if kind == 1:  # invalid UTF-8 somewhere (often inside a string)
        return channel, payload[:at] + draw(st.sampled_from(INVALID_UTF8)) + payload[at:]
    if kind == 2:  # a literal JSON forbids, or a huge number, spliced in
        lit = draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e400", b"2e-400"]))
        return channel, payload[:at] + lit + payload[at:]
    if kind == 3:  # random bytes overwritten
        junk = draw(st.binary(min_size=1, max_size=8))
        return channel, payload[:at] + junk + payload[at + len(junk) :]
    if kind == 4:  # every key duplicated with a hostile first value: the last one wins
        first = dict.fromkeys(doc, None) if isinstance(doc, dict) else {}
        head = dumps(first)[1:-1]
        return channel, b"{" + head + (b"," if head else b"") + payload[1:]
    if kind == 5:  # the whole document deeply nested
        depth = draw(st.sampled_from([10, 900, 1100, 10_000]))
        return channel, b'{"order":' * depth + payload + b"}" * depth
    # a control character inside the JSON text (outside strings: malformed; inside: invalid)
    return channel, payload[:at] + bytes([draw(st.integers(0, 31))]) + payload[at:]


# ---------------------------------------------------------------------------------- the tests


@pytest.mark.parametrize(("channel", "name", "doc"), CORPUS, ids=[f"{c}/{n}" for c, n, _ in CORPUS])
def test_good_fixtures_still_normalise_identically(channel: str, name: str, doc: Any) -> None:
    """Limits refuse nothing real: each fixture normalises, and the same order comes out of the
    document re-serialised compactly, with unknown fields added, and with every top-level key
    repeated (msgspec validates every occurrence of a repeated key and keeps the last one)."""
    original = (FIXTURES / channel / name).read_bytes()
    order = check(channel, original)
    assert isinstance(order, CanonicalOrder), order
    again = check(channel, json.dumps(doc, separators=(",", ":")).encode())
    assert again == order
    if isinstance(doc, dict):
        padded = {"zz_unknown": {"deep": [1, 2, {"x": "y" * 5000}]}, **doc, "zz_more": None}
        assert check(channel, dumps(padded)) == order
        dup = b"{" + dumps(doc)[1:-1] + b"," + original.lstrip()[1:]
        assert check(channel, dup) == order


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(value_mutation())
def test_hostile_values_never_crash(case: tuple[str, bytes]) -> None:
    check(*case)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(byte_mutation())
def test_damaged_bytes_never_crash(case: tuple[str, bytes]) -> None:
    result = check(*case)
    if isinstance(result, CanonicalOrder):
        return  # e.g. junk overwrote a value the adapter ignores
    assert result.field


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(sorted(ADAPTERS)), st.binary(max_size=200))
def test_arbitrary_bytes_never_crash(channel: str, payload: bytes) -> None:
    assert isinstance(check(channel, payload), Rejection)


@pytest.mark.parametrize("channel", sorted(ADAPTERS))
def test_every_value_replaced_by_every_hostile_value(channel: str) -> None:
    """Exhaustive over one fixture per channel: each path x each plain and raw hostile value."""
    i = next(i for i, (c, _, _) in enumerate(CORPUS) if c == channel)
    _, _, doc = CORPUS[i]
    quoted = json.dumps(PLACEHOLDER).encode()
    for path in CORPUS_PATHS[i]:
        for value in PLAIN_VALUES:
            check(channel, dumps(replaced(doc, path, value)))
        template = dumps(replaced(doc, path, PLACEHOLDER))
        for raw in RAW_VALUES:
            check(channel, template.replace(quoted, raw, 1))


@pytest.mark.parametrize("channel", sorted(ADAPTERS))
def test_ten_megabyte_strings(channel: str) -> None:
    """A 10 MB string in any field: refused by size before it is decoded, and in order_no (the
    door checks the size first, but order_no alone must survive it too)."""
    i = next(i for i, (c, _, _) in enumerate(CORPUS) if c == channel)
    _, _, doc = CORPUS[i]
    huge = "\u5730" * (10 * 2**20 // 3)
    leaves = [p for p in CORPUS_PATHS[i] if not isinstance(_get(doc, p), dict | list)]
    for path in leaves[:: max(1, len(leaves) // 6)]:
        result = check(channel, dumps(replaced(doc, path, huge)))
        assert isinstance(result, Rejection)
        assert "max_order_bytes" in result.reason


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        doc = doc[part]
    return doc
