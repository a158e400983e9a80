"""Dedup kernels: examples pin the twin (the spec), properties pin the Cython kernel to the twin."""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ext import _twin

try:
    _kernels: ModuleType | None = importlib.import_module("ext._kernels")
except ImportError:
    _kernels = None

needs_kernel = pytest.mark.skipif(_kernels is None, reason="ext._kernels is not built")
IMPLS = [pytest.param(_twin, id="twin")] + (
    [pytest.param(_kernels, id="cython")] if _kernels is not None else []
)
PROPS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _outcome(fn: Callable[..., object], *args: object) -> object:
    try:
        return fn(*args)
    except Exception as exc:
        return type(exc)


# ------------------------------------------------------------------- recipient_fingerprint


@pytest.mark.parametrize("impl", IMPLS)
def test_fingerprint_folds_renderings_of_one_recipient(impl: ModuleType) -> None:
    fp = impl.recipient_fingerprint
    assert fp(["张伟", "人民路323号 28栋2325室"]) == fp(["张 伟", "人民路３２３号，28栋-2325室"])
    assert fp(["Jane Brown", "8950 Pine Rd."]) == fp(["JANE  BROWN", "8950 pine rd"])
    assert fp(["José"]) == fp(["Jose\u0301"]) == fp(["JOSÉ"])  # composed, decomposed, upper
    assert fp(["Straße"]) == fp(["STRASSE"])  # casefold
    assert fp(["138****5678"]) == fp(["1385678"])  # masked phone: its visible digits
    # fields are delimited: moving text between fields changes the fingerprint
    assert fp(["ab", "c"]) != fp(["a", "bc"])
    assert fp(["张伟"]) != fp(["张卫"]) and fp([]) != fp([""])
    # stable across processes (stored in RocksDB): a fixed value, not Python's hash()
    assert fp([]) == _twin.FNV64_OFFSET
    assert 0 <= fp(["😀", "x"]) < 2**64


def test_fingerprint_is_the_same_in_another_process() -> None:
    code = "import ext; print(ext.recipient_fingerprint(['张伟', 'Pine Rd']))"
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": "."},
        ).stdout
        for seed in ("1", "2")
    }
    assert outs == {f"{_twin.recipient_fingerprint(['张伟', 'Pine Rd'])}\n"}


@pytest.mark.parametrize("impl", IMPLS)
def test_fingerprint_type_errors(impl: ModuleType) -> None:
    for bad in ([None], [b"x"], ["ok", 5], None, 5):
        with pytest.raises(TypeError):
            impl.recipient_fingerprint(bad)


ODD = (
    "Aa Zz09 ,.-/#*()（）【】、。・　\t\u00a0\u200b"
    "张伟人民路号栋室かカｶﾞ한글각\u1100\u1161\u11a8"
    "\u0301\u0308\u3099ßﬃİΣςé😀🌸𝐀𠀀\ufe0f\u20e3"
    "０１２３ＡＢ①²٣"
)
field_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(max_codepoint=0xFFFF), max_size=40),  # full BMP
    st.text(alphabet=st.sampled_from(ODD), max_size=40),
)


@needs_kernel
@PROPS
@given(parts=st.lists(field_text, max_size=8))
def test_kernel_recipient_fingerprint_matches_twin(parts: list[str]) -> None:
    assert _kernels is not None
    assert _kernels.recipient_fingerprint(parts) == _twin.recipient_fingerprint(parts)


@needs_kernel
def test_fingerprint_agrees_on_every_bmp_character() -> None:
    assert _kernels is not None
    bad = [
        hex(o)
        for o in range(0x10000)
        for text in (chr(o), "Ab" + chr(o) + "1", "张" + chr(o))
        if _kernels.recipient_fingerprint([text]) != _twin.recipient_fingerprint([text])
    ]
    assert bad == []


# ----------------------------------------------------------------- sku_multiset_fingerprint


@pytest.mark.parametrize("impl", IMPLS)
def test_sku_multiset_merges_and_ignores_order(impl: ModuleType) -> None:
    fp = impl.sku_multiset_fingerprint
    assert fp(["A", "B", "A"], [1, 2, 1]) == fp(["B", "A"], [2, 2]) == fp(["A", "B"], [2, 2])
    assert fp(["A"], [2]) != fp(["A"], [1]) != fp(["B"], [1])
    assert fp(["A", "B"], [1, 0]) == fp(["A"], [1])  # a zero line is no item
    assert fp([], []) == 0
    assert fp(["AB"], [1]) != fp(["A", "B"], [1, 1])
    with pytest.raises(ValueError):
        fp(["A"], [1, 2])
    with pytest.raises(ValueError):
        fp(["A"], [-1])
    with pytest.raises(ValueError):
        fp(["A"], [2**32])
    with pytest.raises(TypeError):
        fp([b"A"], [1])
    with pytest.raises(TypeError):
        fp(["A"], [1.0])


sku_lines = st.lists(
    st.tuples(
        st.one_of(st.sampled_from(["A", "B", "MB-C200", "奔驰C200", "😀"]), st.text(max_size=12)),
        st.integers(0, 2**32 - 1),
    ),
    max_size=40,  # past the kernel's 32-line stack buffers
)


@needs_kernel
@PROPS
@given(lines=sku_lines, seed=st.randoms())
def test_kernel_sku_multiset_matches_twin(lines: list[tuple[str, int]], seed: object) -> None:
    assert _kernels is not None
    skus, qtys = [s for s, _ in lines], [q for _, q in lines]
    expected = _outcome(_twin.sku_multiset_fingerprint, skus, qtys)
    assert _outcome(_kernels.sku_multiset_fingerprint, skus, qtys) == expected
    shuffled = list(lines)
    seed.shuffle(shuffled)  # type: ignore[attr-defined]
    if isinstance(expected, int):
        assert (
            _twin.sku_multiset_fingerprint([s for s, _ in shuffled], [q for _, q in shuffled])
            == expected
        )


@needs_kernel
@PROPS
@given(
    lines=st.lists(
        st.tuples(st.text(max_size=4), st.one_of(st.integers(-5, 2**33), st.floats(0, 3))),
        max_size=6,
    )
)
def test_kernel_sku_multiset_errors_match_twin(lines: list[tuple[str, object]]) -> None:
    assert _kernels is not None
    skus, qtys = [s for s, _ in lines], [q for _, q in lines]
    assert _outcome(_kernels.sku_multiset_fingerprint, skus, qtys) == _outcome(
        _twin.sku_multiset_fingerprint, skus, qtys
    )


# ------------------------------------------------------------------- near_duplicate_matches


@pytest.mark.parametrize("impl", IMPLS)
def test_matches_examples(impl: ModuleType) -> None:
    m = impl.near_duplicate_matches
    keys = [b"a", b"a", b"b", b"a", b"a"]
    amounts = [1, 1, 1, 1, 2]
    items = [7, 7, 7, 7, 7]
    created = [0, 100, 50, 300, 0]
    # record 1 matches 0; 2 another key; 3 is 300 from 0 but 200 from 1; 4 another amount
    assert m(keys, amounts, items, created, 1, 200) == [0, -1, 1, -1]
    assert m(keys, amounts, items, created, 0, 200) == [-1, 0, -1, 1, -1]
    assert m(keys, amounts, items, created, 5, 200) == []
    assert m([b"k", b"k"], [0, 0], [0, 0], [1000, 0], 1, 1000) == [0]  # earlier-created, later
    assert m([b"k", b"k"], [2**64 - 1] * 2, [0, 0], [-(2**63), 2**63 - 1], 1, 2**63 - 1) == [-1]
    for bad in (
        lambda: m([b"a"], [1], [1], [1, 2], 0, 1),
        lambda: m([b"a"], [1], [1], [1], 2, 1),
        lambda: m([b"a"], [1], [1], [1], 0, -1),
    ):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(TypeError):
        m(["a"], [1], [1], [1], 0, 1)
    with pytest.raises(OverflowError):
        m([b"a"], [-1], [1], [1], 0, 1)


@st.composite
def window_batches(draw: st.DrawFn) -> tuple[list, list, list, list, int, int]:
    n = draw(st.integers(0, 60))
    key_pool = draw(st.lists(st.binary(max_size=6), min_size=1, max_size=4))
    small = st.integers(0, 2)
    keys = [draw(st.sampled_from(key_pool)) for _ in range(n)]
    amounts = [draw(st.one_of(small, st.integers(0, 2**64 - 1))) for _ in range(n)]
    items = [draw(st.one_of(small, st.integers(0, 2**64 - 1))) for _ in range(n)]
    created = [
        draw(st.one_of(st.integers(0, 500), st.integers(-(2**63), 2**63 - 1))) for _ in range(n)
    ]
    start = draw(st.integers(0, n))
    window = draw(st.one_of(st.integers(0, 300), st.integers(0, 2**63 - 1)))
    return keys, amounts, items, created, start, window


@needs_kernel
@PROPS
@given(batch=window_batches())
def test_kernel_near_duplicate_matches_twin(batch: tuple) -> None:
    assert _kernels is not None
    expected = _twin.near_duplicate_matches(*batch)
    assert _kernels.near_duplicate_matches(*batch) == expected
    keys, _a, _i, _c, start, _w = batch
    assert len(expected) == len(keys) - start
    assert all(-1 <= j < start + k for k, j in enumerate(expected))


@needs_kernel
@PROPS
@given(
    values=st.lists(
        st.tuples(
            st.one_of(st.binary(max_size=2), st.text(max_size=1)),
            st.integers(-2, 2**64),
            st.one_of(st.integers(-2, 2**64), st.floats(0, 1)),
            st.integers(-(2**63) - 1, 2**63),
        ),
        max_size=4,
    ),
    start=st.integers(-1, 5),
    window=st.integers(-1, 2**63),
)
def test_kernel_near_duplicate_errors_match_twin(
    values: list[tuple], start: int, window: int
) -> None:
    assert _kernels is not None
    cols = [list(c) for c in zip(*values, strict=True)] if values else [[], [], [], []]
    args = (*cols, start, window)
    assert _outcome(_kernels.near_duplicate_matches, *args) == _outcome(
        _twin.near_duplicate_matches, *args
    )
