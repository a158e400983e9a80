"""The compiled kernels must be indistinguishable from their pure-Python twins.

The twin is the specification, so the example tests below pin the twin (and the kernel, when it
is built), and the property tests pin the kernel to the twin on arbitrary input.
"""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from aiokafka.partitioner import DefaultPartitioner, murmur2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ext import _twin

try:
    _kernels: ModuleType | None = importlib.import_module("ext._kernels")
except ImportError:
    _kernels = None

ROOT = Path(__file__).resolve().parents[2]

needs_kernel = pytest.mark.skipif(
    _kernels is None,
    reason="ext._kernels is not built (run `pip install -e .` or "
    "`python setup.py build_ext --inplace`); only the twin is tested",
)

IMPLS = [pytest.param(_twin, id="twin")] + (
    [pytest.param(_kernels, id="cython")] if _kernels is not None else []
)

PROPS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _outcome(fn: Callable[..., object], *args: object) -> object:
    """Result or exception type, so error behaviour is compared too."""
    try:
        return fn(*args)
    except Exception as exc:
        return type(exc)


# ---------------------------------------------------------------------------------------------
# kafka_partition
# ---------------------------------------------------------------------------------------------

# org.apache.kafka.common.utils.UtilsTest.testMurmur2 (signed Java ints).
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}

# Partitions the Java producer picks out of 1000 (kafka-python's Java compatibility test).
JAVA_PARTITIONS_OF_1000 = {
    b"": 681,
    b"a": 524,
    b"ab": 434,
    b"abc": 107,
    b"123456789": 566,
    b"\x00 ": 742,
}


def _aiokafka_partition(key: bytes, n: int) -> int:
    return DefaultPartitioner()(key, list(range(n)), None)


@pytest.mark.parametrize("impl", IMPLS)
def test_kafka_partition_java_vectors(impl: ModuleType) -> None:
    for key, signed in JAVA_MURMUR2.items():
        positive = (signed & 0xFFFFFFFF) & 0x7FFFFFFF
        for n in (1, 3, 12, 1000, 0x7FFFFFFF):
            assert impl.kafka_partition(key, n) == positive % n
    for key, partition in JAVA_PARTITIONS_OF_1000.items():
        assert impl.kafka_partition(key, 1000) == partition
    assert impl.kafka_partitions(list(JAVA_PARTITIONS_OF_1000), 1000) == list(
        JAVA_PARTITIONS_OF_1000.values()
    )


@pytest.mark.parametrize("impl", IMPLS)
def test_kafka_partition_input_errors(impl: ModuleType) -> None:
    for bad_n in (0, -1, 2**31, 2**70):
        with pytest.raises(ValueError):
            impl.kafka_partition(b"k", bad_n)
        with pytest.raises(ValueError):
            impl.kafka_partitions([b"k"], bad_n)
    for bad_key in ("str", 5, None):
        with pytest.raises(TypeError):
            impl.kafka_partition(bad_key, 3)
        with pytest.raises(TypeError):
            impl.kafka_partitions([b"ok", bad_key], 3)
    with pytest.raises(TypeError):
        impl.kafka_partition(b"k", 3.0)
    # bytes-like keys hash their bytes
    assert impl.kafka_partition(bytearray(b"abc"), 1000) == 107
    assert impl.kafka_partitions((k for k in [memoryview(b"abc")]), 1000) == [107]
    assert impl.kafka_partitions([], 7) == []


@PROPS
@given(key=st.binary(max_size=300), n=st.integers(1, 1000))
def test_twin_matches_aiokafka(key: bytes, n: int) -> None:
    expected = _aiokafka_partition(key, n)
    assert expected == (murmur2(key) & 0x7FFFFFFF) % n
    assert _twin.kafka_partition(key, n) == expected


@needs_kernel
@PROPS
@given(key=st.binary(max_size=300), n=st.integers(1, 1000))
def test_kernel_kafka_partition_matches(key: bytes, n: int) -> None:
    assert _kernels is not None
    expected = _aiokafka_partition(key, n)
    assert _kernels.kafka_partition(key, n) == expected == _twin.kafka_partition(key, n)


@needs_kernel
@PROPS
@given(keys=st.lists(st.binary(max_size=64), max_size=50), n=st.integers(1, 1000))
def test_kernel_kafka_partitions_matches(keys: list[bytes], n: int) -> None:
    assert _kernels is not None
    expected = [_aiokafka_partition(k, n) for k in keys]
    assert _kernels.kafka_partitions(keys, n) == expected == _twin.kafka_partitions(keys, n)


# ---------------------------------------------------------------------------------------------
# normalize_phone
# ---------------------------------------------------------------------------------------------

PHONE_CASES = [
    # (raw, default country, expected)
    ("+86 138 1234 5678", "US", "+8613812345678"),
    ("13812345678", "CN", "+8613812345678"),
    ("138-1234-5678", "HK", "+8613812345678"),
    ("１３８１２３４５６７８", "CN", "+8613812345678"),
    ("＋８６　１３８（１２３４）５６７８", "US", "+8613812345678"),
    ("8613812345678", "CN", "+8613812345678"),
    ("8613812345678", "US", "+8613812345678"),
    ("0086 138 1234 5678", "GB", "+8613812345678"),
    ("010-12345678", "CN", "+861012345678"),
    ("(010) 1234 5678", "cn", "+861012345678"),
    ("(+1)2135551234", "CN", "+12135551234"),
    ("(213) 555-1234", "US", "+12135551234"),
    ("1-213-555-1234", "CA", "+12135551234"),
    ("213.555.1234", "us", "+12135551234"),
    ("011 44 20 7946 0958", "US", "+442079460958"),
    ("555-1234", "US", ""),  # 7-digit local number
    ("(013) 555-1234", "US", ""),  # area codes never start with 0/1
    ("020 7946 0958", "GB", "+442079460958"),
    ("+44 (0)20 7946 0958", "DE", "+442079460958"),
    ("07911 123456", "GB", "+447911123456"),
    ("030 1234567", "DE", "+49301234567"),
    ("06 12 34 56 78", "FR", "+33612345678"),
    ("02 1234 5678", "IT", "+390212345678"),  # Italy keeps its 0
    ("+39 02 1234 5678", "FR", "+390212345678"),
    ("612 345 678", "ES", "+34612345678"),
    ("090-1234-5678", "JP", "+819012345678"),
    ("010-1234-5678", "KR", "+821012345678"),
    ("0412 345 678", "AU", "+61412345678"),
    ("0912-345-678", "TW", "+886912345678"),
    ("9123 4567", "SG", "+6591234567"),
    ("6123 4567", "HK", "+85261234567"),
    ("081-234-5678", "TH", "+66812345678"),
    ("0912 345 6789", "PH", "+639123456789"),
    ("98765 43210", "IN", "+919876543210"),
    ("050 123 4567", "AE", "+971501234567"),
    ("(11) 91234-5678", "BR", "+5511912345678"),
    ("55 1234 5678", "MX", "+525512345678"),
    ("٠٥٠١٢٣٤٥٦٧", "AE", "+971501234567"),  # Arabic-Indic digits
    ("138\u200b1234\u30fb5678", "CN", "+8613812345678"),
    # not a full number
    ("138****5678", "CN", ""),
    ("138xxxx5678", "CN", ""),
    ("tel: 13812345678", "CN", ""),
    ("13812345678 ext. 12", "CN", ""),
    ("12345", "CN", ""),
    ("+1234567", "CN", ""),
    ("+86 1381234567890123", "CN", ""),
    ("13812345678", "XX", ""),
    ("13812345678", "", ""),
    ("13812345678", None, ""),
    ("+8613812345678", "XX", "+8613812345678"),
    ("", "CN", ""),
    ("+", "CN", ""),
    ("0", "GB", ""),
    ("138+12345678", "CN", ""),
    ("++8613812345678", "CN", ""),
    ("😀13812345678", "CN", ""),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("raw", "country", "expected"), PHONE_CASES)
def test_normalize_phone_examples(
    impl: ModuleType, raw: str, country: str | None, expected: str
) -> None:
    assert impl.normalize_phone(raw, country) == expected


@pytest.mark.parametrize("impl", IMPLS)
def test_normalize_phone_type_errors(impl: ModuleType) -> None:
    with pytest.raises(TypeError):
        impl.normalize_phone(None, "CN")
    with pytest.raises(TypeError):
        impl.normalize_phone(b"13812345678", "CN")
    with pytest.raises(TypeError):
        impl.normalize_phone("13812345678", 86)


COUNTRIES = [*sorted(_twin.CALLING_CODES), "cn", "Us", "gB", "XX", "ZZ", "", "C", "CHN", "ｃｎ"]
ODD_CHARS = (
    "+-./()*# xX\t\u00a0\u3000\u200b\u2011\u2013\u2212\u30fb\u30fc\u3010"
    "０１２３４５６７８９＋（）－．／＊"  # fullwidth
    "٠١٢٣٤٥٦٧٨٩०१२३¹²³①𝟏"  # other digits and digit look-alikes
    "\u0301\u0338\u20e3\u0663\ufe0f"  # combining marks
    "奔驰中文😀ß"
)
phone_text = st.one_of(
    st.text(max_size=30),
    st.text(alphabet=st.sampled_from("0123456789" * 4 + ODD_CHARS), max_size=30),
    st.builds(
        lambda prefix, body, suffix: prefix + body + suffix,
        st.sampled_from(["", "+", "00", "011", "0", "1", "86", "+86 ", "(+1)", "+44 (0)", "＋"]),
        st.text(alphabet=st.sampled_from("0123456789 -()" + "０１２３"), min_size=6, max_size=16),
        st.sampled_from(["", " ", "*", "x", "\u0301", "１"]),
    ),
)
country_strategy = st.one_of(st.sampled_from(COUNTRIES), st.none(), st.text(max_size=3))


@needs_kernel
@PROPS
@given(raw=phone_text, country=country_strategy)
def test_kernel_normalize_phone_matches_twin(raw: str, country: str | None) -> None:
    assert _kernels is not None
    expected = _outcome(_twin.normalize_phone, raw, country)
    assert _outcome(_kernels.normalize_phone, raw, country) == expected
    if isinstance(expected, str) and expected:
        digits = expected[1:]
        assert expected[0] == "+" and digits.isascii() and digits.isdigit()
        assert 8 <= len(digits) <= 15


# ---------------------------------------------------------------------------------------------
# sku_key
# ---------------------------------------------------------------------------------------------

SKU_CASES = [
    ("Mercedes-Benz C200", "mercedesbenzc200"),
    ("MB-C200", "mbc200"),
    ("mb c200", "mbc200"),
    ("ＭＢ－Ｃ２００", "mbc200"),
    ("奔驰C200", "奔驰c200"),
    ("奔驰 Ｃ２００（黑色）", "奔驰c200黑色"),
    ("Nike Air-Max_90 / White [42]", "nikeairmax90white42"),
    ("A.B\\C|D;E:F,G+H", "abcdefgh"),
    ("红色、大号・XL【新款】", "红色大号xl新款"),
    ("Straße", "strasse"),
    ("コーヒー・カップ", "コーヒーカップ"),  # the long-vowel mark is part of the word
    ("ｶﾞﾝﾀﾞﾑ", "ガンダム"),  # halfwidth kana
    ("", ""),
    ("\u200b-_ ", ""),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize(("text", "expected"), SKU_CASES)
def test_sku_key_examples(impl: ModuleType, text: str, expected: str) -> None:
    assert impl.sku_key(text) == expected


@pytest.mark.parametrize("impl", IMPLS)
def test_sku_key_type_errors(impl: ModuleType) -> None:
    for bad in (None, b"MB-C200", 5):
        with pytest.raises(TypeError):
            impl.sku_key(bad)


sku_text = st.one_of(
    st.text(max_size=40),
    st.text(
        alphabet=st.sampled_from(
            "AZaz09-_./\\()[]+,:;| \t"
            "ＡＺａｚ０９－＿（）［］　、。・【】"
            "奔驰宝马中文㐀鿿かカーｶﾞ한글\u3099\u0301\u0338ßﬃİΣς😀"
        ),
        max_size=40,
    ),
    st.text(max_size=300),  # past the kernel's stack buffer
)


@needs_kernel
@PROPS
@given(text=sku_text)
def test_kernel_sku_key_matches_twin(text: str) -> None:
    assert _kernels is not None
    assert _kernels.sku_key(text) == _twin.sku_key(text)


@needs_kernel
def test_kernels_agree_on_every_bmp_character() -> None:
    """Exhaustive per-character check of the kernel's classification tables and fast paths."""
    assert _kernels is not None
    mismatches = []
    for o in range(0x10000):
        c = chr(o)
        for text in (c, "Ab" + c + "1"):
            if _kernels.sku_key(text) != _twin.sku_key(text):
                mismatches.append(("sku_key", hex(o), text))
        phone = "138" + c + "12345678"
        if _kernels.normalize_phone(phone, "CN") != _twin.normalize_phone(phone, "CN"):
            mismatches.append(("normalize_phone", hex(o), phone))
    assert mismatches == []


# ---------------------------------------------------------------------------------------------
# ext selection
# ---------------------------------------------------------------------------------------------

_PROBE = (
    "import logging, sys\n"
    "logging.basicConfig(level=logging.INFO, stream=sys.stderr, format='%(name)s:%(message)s')\n"
    "import ext, importlib\n"
    "importlib.import_module('ext')\n"
    "print(ext.IMPLEMENTATION, ext.COMPILED, ext.sku_key.__module__)\n"
)


def _probe(**env: str) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env}
    full_env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])
    )
    return subprocess.run(
        [sys.executable, "-c", _PROBE],
        env=full_env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )


def test_env_forces_the_twin() -> None:
    proc = _probe(ORDERSTREAM_PURE_PYTHON="1")
    assert proc.stdout.split() == ["python", "False", "ext._twin"]
    assert proc.stderr.count("orderstream.ext:") == 1


@needs_kernel
def test_compiled_kernel_is_selected_and_logged_once() -> None:
    proc = _probe(ORDERSTREAM_PURE_PYTHON="")
    assert proc.stdout.split() == ["cython", "True", "ext._kernels"]
    assert proc.stderr.count("orderstream.ext:") == 1
