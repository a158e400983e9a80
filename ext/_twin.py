"""Pure-Python twins of the hot-path kernels in ``ext/_kernels.pyx``.

The twin is the executable specification: the Cython kernel must return exactly what this module
returns for every input (``tests/ext/test_kernels.py`` checks that with hypothesis), and it is what
runs wherever the extension could not be built. Keep it readable first; speed belongs to the kernel.

The lookup tables live here only, and the kernel imports them, so the two can never disagree about
which countries exist or which characters are separators.
"""

from __future__ import annotations

import operator
import re
import struct
import unicodedata
from collections.abc import Iterable, Sequence

__all__ = [
    "CALLING_CODES",
    "FNV64_OFFSET",
    "FNV64_PRIME",
    "KERNEL_API",
    "PHONE_SEPARATORS",
    "SKU_DROP",
    "fingerprint_keeps",
    "fingerprint_text",
    "fold_text",
    "kafka_partition",
    "kafka_partitions",
    "masked_digits_agree",
    "normalize_phone",
    "recipient_fingerprint",
    "sku_key",
    "sku_multiset_fingerprint",
    "wildcard_match",
]

#: Bumped whenever the kernel API or semantics change, so a stale compiled ``_kernels`` left over
#: from an older checkout is detected by ``ext/__init__.py`` instead of silently disagreeing.
KERNEL_API = 3

# --------------------------------------------------------------------------------------------
# Kafka default partitioner (org.apache.kafka.common.utils.Utils.murmur2 + toPositive)
# --------------------------------------------------------------------------------------------

_SEED = 0x9747B28C
_M = 0x5BD1E995
_MASK32 = 0xFFFFFFFF
_MAX_PARTITIONS = 0x7FFFFFFF  # a Java int; Kafka cannot have more
_iter_u32 = struct.Struct("<I").iter_unpack


def _as_bytes(key: object) -> bytes:
    # bytes(memoryview(x)) rejects str and int (bytes(5) would silently give five NULs).
    if type(key) is bytes:
        return key
    return bytes(memoryview(key))  # type: ignore[arg-type]


def _check_partitions(num_partitions: object) -> int:
    n = operator.index(num_partitions)  # type: ignore[arg-type]
    if n < 1 or n > _MAX_PARTITIONS:
        raise ValueError(f"num_partitions must be in 1..{_MAX_PARTITIONS}, got {n}")
    return n


def _murmur2(data: bytes) -> int:
    """Unsigned 32-bit murmur2 exactly as Kafka's Java client computes it (seed 0x9747b28c)."""
    length = len(data)
    h = (_SEED ^ length) & _MASK32
    n4 = length & ~3
    for (k,) in _iter_u32(memoryview(data)[:n4]):
        k = (k * _M) & _MASK32
        k ^= k >> 24
        k = (k * _M) & _MASK32
        h = ((h * _M) & _MASK32) ^ k
    rest = length & 3
    if rest:
        if rest == 3:
            h ^= data[n4 + 2] << 16
        if rest >= 2:
            h ^= data[n4 + 1] << 8
        h ^= data[n4]
        h = (h * _M) & _MASK32
    h ^= h >> 13
    h = (h * _M) & _MASK32
    h ^= h >> 15
    return h


def kafka_partition(key: bytes, num_partitions: int) -> int:
    """Partition Kafka's default partitioner picks for a non-null key.

    Producers written in Java, aiokafka and librdkafka (murmur2_random) all agree on this, which is
    why we can group records by destination partition before handing them to the producer.
    """
    n = _check_partitions(num_partitions)
    return (_murmur2(_as_bytes(key)) & 0x7FFFFFFF) % n


def kafka_partitions(keys: Iterable[bytes], num_partitions: int) -> list[int]:
    """Batch form of :func:`kafka_partition`: one call per envelope keeps the loop out of Python."""
    n = _check_partitions(num_partitions)
    return [(_murmur2(_as_bytes(k)) & 0x7FFFFFFF) % n for k in keys]


# --------------------------------------------------------------------------------------------
# Phone numbers -> E.164
# --------------------------------------------------------------------------------------------

#: ISO 3166 alpha-2 -> (ITU calling code, national trunk prefix or ""). Italy, Spain, Mexico,
#: Singapore, Hong Kong and Macau dial no trunk prefix (Italian numbers keep their leading 0);
#: NANP dials "1". "UK" is not ISO but shops send it anyway.
CALLING_CODES: dict[str, tuple[str, str]] = {
    "CN": ("86", "0"),
    "HK": ("852", ""),
    "MO": ("853", ""),
    "TW": ("886", "0"),
    "US": ("1", "1"),
    "CA": ("1", "1"),
    "PR": ("1", "1"),
    "GB": ("44", "0"),
    "UK": ("44", "0"),
    "IE": ("353", "0"),
    "DE": ("49", "0"),
    "AT": ("43", "0"),
    "CH": ("41", "0"),
    "FR": ("33", "0"),
    "BE": ("32", "0"),
    "NL": ("31", "0"),
    "IT": ("39", ""),
    "ES": ("34", ""),
    "PT": ("351", ""),
    "PL": ("48", ""),
    "SE": ("46", "0"),
    "DK": ("45", ""),
    "NO": ("47", ""),
    "FI": ("358", "0"),
    "JP": ("81", "0"),
    "KR": ("82", "0"),
    "SG": ("65", ""),
    "MY": ("60", "0"),
    "TH": ("66", "0"),
    "VN": ("84", "0"),
    "ID": ("62", "0"),
    "PH": ("63", "0"),
    "AU": ("61", "0"),
    "NZ": ("64", "0"),
    "IN": ("91", "0"),
    "AE": ("971", "0"),
    "SA": ("966", "0"),
    "BR": ("55", "0"),
    "MX": ("52", ""),
}

#: Calling codes under which a bare 11-digit mainland mobile (1[3-9]xxxxxxxxx) is unambiguous:
#: none of these regions has 11-digit national numbers starting with 1.
GREATER_CHINA_CODES = frozenset({"86", "852", "853", "886"})

#: Codes whose countries dial a trunk "0" that people also write after the country code,
#: as in "+44 (0)20 7946 0958". Calling codes are prefix-free, so a match is unambiguous.
TRUNK0_CODES = frozenset(cc for cc, trunk in CALLING_CODES.values() if trunk == "0")

#: Separators besides whitespace. Everything here is NFKC-stable, so the kernel may skip them
#: before deciding whether the string needs NFKC at all.
PHONE_SEPARATORS = frozenset(
    "-./()"
    "\u00ad"  # soft hyphen
    "\u00b7\u2022\u2027\u30fb"  # middle dots
    "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\u30fc"  # dashes, minus, katakana long mark
    "\u3010\u3011\u3014\u3015"  # CJK brackets
    "\u200b\u200c\u200d\u2060\ufeff"  # zero-width characters from copy and paste
)

_MIN_DIGITS = 8
_MAX_DIGITS = 15


def _country(default_country: str | None) -> tuple[str, str] | None:
    if default_country is None:
        return None
    if not isinstance(default_country, str):
        raise TypeError(f"default_country must be str or None, not {type(default_country)!r}")
    info = CALLING_CODES.get(default_country)
    if info is None and len(default_country) == 2 and default_country.isascii():
        info = CALLING_CODES.get(default_country.upper())
    return info


def normalize_phone(raw: str, default_country: str | None) -> str:
    """E.164 form of a phone number as typed by a buyer, or "" when it cannot be a full number.

    "" (rather than a guess) for masked numbers ("138****5678"), letters, extensions and
    impossible lengths, because a wrong number is worse than none for dedup and SMS.
    """
    if not isinstance(raw, str):
        raise TypeError(f"raw must be str, not {type(raw)!r}")
    if not raw.isascii():
        raw = unicodedata.normalize("NFKC", raw)

    digits: list[str] = []
    plus = False
    for ch in raw:
        if "0" <= ch <= "9":
            digits.append(ch)
        elif ch == "+":
            if plus or digits:
                return ""
            plus = True
        elif ch in PHONE_SEPARATORS or ch.isspace():
            continue
        elif ch.isdecimal():  # Arabic-Indic, Devanagari, ... digits
            digits.append(str(unicodedata.decimal(ch)))
        else:
            return ""
    d = "".join(digits)

    if plus:
        intl = d
    elif d.startswith("00"):
        intl = d[2:]
    else:
        info = _country(default_country)
        if info is None:
            return ""
        cc, trunk = info
        if cc == "1" and d.startswith("011"):  # NANP international access code
            intl = d[3:]
        elif len(d) == 13 and d.startswith("861") and d[3] in "3456789":
            intl = d  # mainland mobile with its country code but without "+"
        elif cc in GREATER_CHINA_CODES and len(d) == 11 and d[0] == "1" and d[1] in "3456789":
            intl = "86" + d
        else:
            national = d[len(trunk) :] if trunk and d.startswith(trunk) else d
            if not national:
                return ""
            intl = cc + national

    for width in (1, 2, 3):  # "+44 (0)20 ...": drop the trunk 0 written after the code
        if len(intl) > width and intl[width] == "0" and intl[:width] in TRUNK0_CODES:
            intl = intl[:width] + intl[width + 1 :]
            break

    if not intl or intl[0] == "0":
        return ""
    # NANP: exactly 10 digits, and neither the area code nor the exchange starts with 0 or 1.
    if intl[0] == "1" and (len(intl) != 11 or intl[1] in "01" or intl[4] in "01"):
        return ""
    if not _MIN_DIGITS <= len(intl) <= _MAX_DIGITS:
        return ""
    return "+" + intl


# --------------------------------------------------------------------------------------------
# SKU alias keys
# --------------------------------------------------------------------------------------------

#: Dropped after NFKC + casefold, together with every whitespace character. The non-ASCII ones
#: are the CJK and typographic equivalents that NFKC leaves alone (fullwidth "－" and friends are
#: already folded to ASCII by NFKC and listed only for clarity).
SKU_DROP = frozenset(
    "-_./\\()[]+,:;|"
    "\u3001\u3002\u30fb\u00b7\u2027"  # 、 。 ・ · ‧
    "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\uff0d"  # dashes and minus
    "\u3010\u3011\u3014\u3015\u3016\u3017\u300c\u300d\u300e\u300f\u3008\u3009\u300a\u300b"
    "\u00ad\u200b\u2060\ufeff"  # invisible characters from copy and paste
)

# Every character with str.isspace() is below U+3001, so this scan is exhaustive and cheap.
SPACES = frozenset(c for c in map(chr, range(0x3001)) if c.isspace())
_SKU_DELETE = {ord(c): None for c in SKU_DROP | SPACES}
_SKU_DELETE_ASCII = {o: None for o in _SKU_DELETE if o < 128}


def sku_key(text: str) -> str:
    """Key under which SKU aliases are stored and looked up.

    Buyers, channels and ERPs spell the same SKU with different case, widths and punctuation
    ("ＭＢ－Ｃ２００", "mb-c200", "MB C200"); folding all of them to one key lets a single alias row
    match every spelling.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text)!r}")
    if text.isascii():
        return text.lower().translate(_SKU_DELETE_ASCII)
    return unicodedata.normalize("NFKC", text).casefold().translate(_SKU_DELETE)


# --------------------------------------------------------------------------------------------
# Dedup fingerprints (stored in RocksDB and compared across processes: never Python's hash())
# --------------------------------------------------------------------------------------------

FNV64_OFFSET = 0xCBF29CE484222325
FNV64_PRIME = 0x100000001B3
_M64 = 0xFFFFFFFFFFFFFFFF
_I64_MIN, _I64_MAX = -(2**63), 2**63 - 1
_PART_END = 0xFF  # never a byte of UTF-8: ("ab", "c") and ("a", "bc") hash differently
_MAX_QUANTITY = 0xFFFFFFFF


def _fnv1a64(data: bytes, h: int = FNV64_OFFSET) -> int:
    for b in data:
        h = ((h ^ b) * FNV64_PRIME) & _M64
    return h


def _mix64(x: int) -> int:
    """splitmix64's finaliser: spreads every input bit over the whole word."""
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9 & _M64
    x = (x ^ (x >> 27)) * 0x94D049BB133111EB & _M64
    return x ^ (x >> 31)


def fingerprint_keeps(ch: str) -> bool:
    """Letters, numbers and marks carry identity; spaces, punctuation and symbols are noise."""
    return unicodedata.category(ch)[0] in "LNM"


def fingerprint_text(text: str) -> str:
    """What a recipient fingerprint hashes of one field.

    Channels render the same address with other widths, case, spacing and punctuation
    ("５８号，３栋" / "58号 3栋"); NFKC + casefold + dropping everything but letters, numbers and
    marks makes those renderings one string.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text)!r}")
    norm = unicodedata.normalize("NFKC", text).casefold()
    return "".join(ch for ch in norm if fingerprint_keeps(ch))


def recipient_fingerprint(parts: Iterable[str]) -> int:
    """64-bit FNV-1a over the UTF-8 of each part's :func:`fingerprint_text`, each part closed by
    a 0xFF byte. Deterministic across processes and machines, so it can key stored state."""
    h = FNV64_OFFSET
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"parts must be str, not {type(part)!r}")
        h = _fnv1a64(fingerprint_text(part).encode(), h)
        h = ((h ^ _PART_END) * FNV64_PRIME) & _M64
    return h


def sku_multiset_fingerprint(skus: Sequence[str], quantities: Sequence[int]) -> int:
    """64-bit fingerprint of what an order contains, independent of line order.

    Lines of the same (canonical) SKU are merged first, so "A×2" equals "A×1, A×1"; SKUs whose
    merged quantity is 0 are left out. Each (sku, quantity) is hashed and mixed, and the hashes
    are summed modulo 2**64, which is what makes the result order-independent.
    Quantities must be in 0..2**32-1 (ValueError otherwise).
    """
    if len(skus) != len(quantities):
        raise ValueError(f"{len(skus)} skus but {len(quantities)} quantities")
    merged: dict[bytes, int] = {}
    for sku, quantity in zip(skus, quantities, strict=True):
        if not isinstance(sku, str):
            raise TypeError(f"skus must be str, not {type(sku)!r}")
        key = sku.encode()
        q = operator.index(quantity)
        if not 0 <= q <= _MAX_QUANTITY:
            raise ValueError(f"quantity must be in 0..{_MAX_QUANTITY}, got {q}")
        merged[key] = merged.get(key, 0) + q
    fp = 0
    for key, q in merged.items():
        if q:
            fp += _mix64(_fnv1a64(key) ^ _mix64(q))
    return fp & _M64


def _u64(value: object) -> int:
    v = operator.index(value)  # type: ignore[arg-type]
    if not 0 <= v <= _M64:
        raise OverflowError(f"{v} is not an unsigned 64-bit value")
    return v


def _i64(value: object) -> int:
    v = operator.index(value)  # type: ignore[arg-type]
    if not _I64_MIN <= v <= _I64_MAX:
        raise OverflowError(f"{v} is not a signed 64-bit value")
    return v


def fold_text(text: str) -> str:
    """One rendering of a recipient field for comparison: NFKC, casefold, every run of what is
    neither a letter, number, mark nor a mask/unit sign (``*``, ``#``) turned into one space,
    no space at either end.

    Unlike :func:`fingerprint_text` this keeps word boundaries (names compare as token sets,
    "Smith, John" vs "john  smith") and the mask stars (``王*明``, ``文三路***号``), whose
    positions say which characters a masked rendering still shows.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text)!r}")
    out: list[str] = []
    gap = False
    for ch in unicodedata.normalize("NFKC", text).casefold():
        if ch == "*" or ch == "#" or fingerprint_keeps(ch):
            if gap and out:
                out.append(" ")
            gap = False
            out.append(ch)
        else:
            gap = True
    return "".join(out)


def _phone_marks(text: str) -> list[str]:
    """The digits and mask stars of a phone rendering, in order (every other sign dropped)."""
    marks = []
    for ch in text:
        if ch == "*" or ch == "\uff0a":
            marks.append("*")
        elif ch.isdecimal():
            marks.append(str(unicodedata.decimal(ch)))
    return marks


def masked_digits_agree(a: str, b: str) -> int:
    """How many digit positions two phone renderings both show, compared right-aligned; -1 when
    any of them differ.

    Right alignment is what makes ``(+1)415****134``, ``415****134`` and ``+14155550134`` line
    up: every platform's mask keeps the number's length (a star per hidden digit) and the last
    digits visible, while the country code is present in some renderings and not others. 0 means
    the two share no visible position (nothing to say either way).
    """
    if not isinstance(a, str) or not isinstance(b, str):
        raise TypeError("a and b must be str")
    da, db = _phone_marks(a), _phone_marks(b)
    agree = 0
    for x, y in zip(reversed(da), reversed(db), strict=False):  # the shorter one ends it
        if x == "*" or y == "*":
            continue
        if x != y:
            return -1
        agree += 1
    return agree


_STAR_RUNS = re.compile(r"\*+")


def wildcard_match(pattern: str, text: str, anchored: bool) -> int:
    """Whether ``text`` fits a masked ``pattern`` (each run of ``*`` stands for one or more
    characters): the whole of ``text`` when ``anchored``, else some part of it. Returns how many
    visible (non-star) characters of the pattern matched, or -1 when it does not fit.

    Masks do not always keep the length of what they hide (``王**`` for a two- or three-character
    given name; ``文三路***号`` for a house number of any length), so a star run is elastic.
    Leftmost placement of each visible segment is optimal: placing one earlier only leaves more
    room for those after it.
    """
    if not isinstance(pattern, str) or not isinstance(text, str):
        raise TypeError("pattern and text must be str")
    segments = _STAR_RUNS.split(pattern)
    visible = sum(len(s) for s in segments)
    if not visible:
        return -1  # all stars: shows nothing, fits nothing in particular
    pos = 0
    last = len(segments) - 1
    for k, seg in enumerate(segments):
        if k > 0:
            pos += 1  # the star run between the previous segment and this one: >= 1 character
        if not seg:
            continue
        if k == 0 and anchored:
            if not text.startswith(seg):
                return -1
            pos = len(seg)
            continue
        if k == last and anchored:
            at = len(text) - len(seg)
            if at < pos or not text.endswith(seg):
                return -1
            pos = len(text)
            continue
        at = text.find(seg, pos)
        if at < 0:
            return -1
        pos = at + len(seg)
    if pos > len(text):
        return -1  # a trailing star run with nothing left to stand for
    if anchored and segments[-1] and pos != len(text):
        return -1
    return visible
