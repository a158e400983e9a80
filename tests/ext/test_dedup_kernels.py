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


# ------------------------------------------------------- recipient comparison primitives


@pytest.mark.parametrize("impl", IMPLS)
def test_fold_text_keeps_words_and_masks(impl: ModuleType) -> None:
    f = impl.fold_text
    assert f("Smith,  JOHN") == f("smith john") == "smith john"
    assert f("文三路４７８号，３栋") == "文三路478号 3栋"  # full-width digits and comma
    assert f("Apt #4") == "apt #4"
    assert f("王＊明") == "王*明"  # a full-width star is still a mask
    assert f("  ") == f("") == ""
    with pytest.raises(TypeError):
        f(None)


@pytest.mark.parametrize("impl", IMPLS)
def test_masked_digits_agree_examples(impl: ModuleType) -> None:
    m = impl.masked_digits_agree
    assert m("(+1)415****134", "+14155550134") == 7  # TikTok's mask, country code included
    assert m("1*********0", "+8613812345670") == 2  # PDD shows two digits
    assert m("138****5678", "+8613912345678") == -1  # a visible digit disagrees
    assert m("+8613812345678", "+8613812345678") == 13
    assert m("****", "1234") == 0  # nothing visible on one side: nothing to say
    assert m("１３８****５６７８", "13812345678") == 7  # full-width digits
    with pytest.raises(TypeError):
        m(None, "1")


@pytest.mark.parametrize("impl", IMPLS)
def test_wildcard_match_examples(impl: ModuleType) -> None:
    w = impl.wildcard_match
    assert w("王*明", "王小明", True) == 2
    assert w("王**", "王小明", True) == 1  # a star run stands for one or more characters
    assert w("王**", "王", True) == -1
    assert w("王*明", "王小华", True) == -1
    assert w("文三路***号", "文三路478号 3栋201室", False) == 4  # somewhere inside
    assert w("文三路***号", "文三路478号 3栋201室", True) == -1  # but not the whole
    assert w("文三路***号", "文二路478号", False) == -1
    assert w("***", "abc", False) == -1  # shows nothing: fits nothing in particular
    assert w("abc", "abc", True) == 3
    assert w("*c", "c", False) == -1  # the star needs a character before the c
    with pytest.raises(TypeError):
        w(None, "", True)


_masky = st.text(alphabet="ab*文#1２ ", max_size=12)


@needs_kernel
@PROPS
@given(text=st.one_of(st.text(max_size=30), _masky))
def test_kernel_fold_text_twin(text: str) -> None:
    assert _kernels is not None
    assert _kernels.fold_text(text) == _twin.fold_text(text)


@needs_kernel
@PROPS
@given(
    a=st.one_of(st.text(alphabet="0123456789*+() -＊３", max_size=80), st.text(max_size=20)),
    b=st.one_of(st.text(alphabet="0123456789*+() -", max_size=80), st.text(max_size=20)),
)
def test_kernel_masked_digits_agree_twin(a: str, b: str) -> None:
    assert _kernels is not None
    got = _kernels.masked_digits_agree(a, b)
    assert got == _twin.masked_digits_agree(a, b)
    assert got == _twin.masked_digits_agree(b, a)  # symmetric


@needs_kernel
@PROPS
@given(pattern=_masky, text=_masky, anchored=st.booleans())
def test_kernel_wildcard_match_twin(pattern: str, text: str, anchored: bool) -> None:
    assert _kernels is not None
    got = _kernels.wildcard_match(pattern, text, anchored)
    assert got == _twin.wildcard_match(pattern, text, anchored)
    if "*" not in pattern and pattern:
        assert (got >= 0) == ((text == pattern) if anchored else (pattern in text))


@given(pattern=_masky, text=_masky)
def test_wildcard_match_is_a_glob_with_nonempty_stars(pattern: str, text: str) -> None:
    """The twin against the regular expression it stands for."""
    import re

    parts = [re.escape(p) for p in re.split(r"\*+", pattern)]
    rx = ".+".join(parts)
    visible = sum(len(p) for p in re.split(r"\*+", pattern))
    whole = re.fullmatch(rx, text, re.S) is not None
    inside = re.search(rx, text, re.S) is not None
    assert (_twin.wildcard_match(pattern, text, True) >= 0) == (whole and visible > 0)
    assert (_twin.wildcard_match(pattern, text, False) >= 0) == (inside and visible > 0)
