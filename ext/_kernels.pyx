# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False, embedsignature=True
"""Compiled twins of ``ext/_twin.py`` for the per-record hot path.

Semantics are defined by the pure-Python twin; this module only makes them cheap. Every shortcut
here (ASCII fast paths, skipping NFKC for characters it cannot change) must be provably invisible,
and ``tests/ext/test_kernels.py`` checks agreement on arbitrary input. The lookup tables are
imported from the twin so the two cannot drift apart.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_CheckExact, PyBytes_GET_SIZE
from cpython.list cimport PyList_CheckExact
from cpython.long cimport PyLong_CheckExact
from cpython.mem cimport PyMem_Free, PyMem_Malloc
from cpython.number cimport PyNumber_Index
from libc.stdint cimport int64_t, uint32_t, uint64_t
from libc.string cimport memcmp, memcpy, memmove

import unicodedata

from ext import _twin


cdef extern from "Python.h":
    int Py_UNICODE_TODECIMAL(Py_UCS4 ch) nogil
    bint PyUnicode_IS_ASCII(object o)
    object PyUnicode_FromKindAndData(int kind, const void* buffer, Py_ssize_t size)
    object PyUnicode_DecodeASCII(const char* s, Py_ssize_t size, const char* errors)
    const char* PyUnicode_AsUTF8AndSize(object o, Py_ssize_t* size) except NULL
    int PyUnicode_1BYTE_KIND
    int PyUnicode_4BYTE_KIND


KERNEL_API = _twin.KERNEL_API

cdef object _normalize = unicodedata.normalize

# ----------------------------------------------------------------------------------------------
# Character flags for the BMP, built once from the twin's tables.
# ----------------------------------------------------------------------------------------------

cdef enum:
    F_SPACE = 1
    F_PHONE_SEP = 2
    F_SKU_DROP = 4

cdef unsigned char _FLAGS[0x10000]


cdef void _build_flags() except *:
    cdef Py_ssize_t o
    for o in range(0x10000):
        _FLAGS[o] = 0
    for c in _twin.SPACES:
        _FLAGS[ord(c)] |= F_SPACE
    for c in _twin.PHONE_SEPARATORS:
        _FLAGS[ord(c)] |= F_PHONE_SEP
    for c in _twin.SKU_DROP:
        _FLAGS[ord(c)] |= F_SKU_DROP


_build_flags()


cdef inline unsigned char _flags(Py_UCS4 ch) noexcept nogil:
    return _FLAGS[ch] if ch < 0x10000 else 0


# ----------------------------------------------------------------------------------------------
# Kafka default partitioner
# ----------------------------------------------------------------------------------------------

cdef inline uint32_t _murmur2(const unsigned char* data, Py_ssize_t length) noexcept nogil:
    cdef uint32_t m = 0x5BD1E995
    cdef uint32_t h = (<uint32_t>0x9747B28C) ^ (<uint32_t>length)
    cdef uint32_t k
    cdef Py_ssize_t i
    cdef Py_ssize_t n4 = length & ~(<Py_ssize_t>3)
    cdef Py_ssize_t rest = length & 3
    for i in range(0, n4, 4):
        k = ((<uint32_t>data[i]) | ((<uint32_t>data[i + 1]) << 8)
             | ((<uint32_t>data[i + 2]) << 16) | ((<uint32_t>data[i + 3]) << 24))
        k *= m
        k ^= k >> 24
        k *= m
        h *= m
        h ^= k
    if rest == 3:
        h ^= (<uint32_t>data[n4 + 2]) << 16
    if rest >= 2:
        h ^= (<uint32_t>data[n4 + 1]) << 8
    if rest >= 1:
        h ^= <uint32_t>data[n4]
        h *= m
    h ^= h >> 13
    h *= m
    h ^= h >> 15
    return h


cdef uint32_t _check_partitions(object num_partitions) except 0:
    cdef long long v
    n = PyNumber_Index(num_partitions)
    try:
        v = n
    except OverflowError:
        v = -1
    if v < 1 or v > 0x7FFFFFFF:
        raise ValueError(f"num_partitions must be in 1..{0x7FFFFFFF}, got {n}")
    return <uint32_t>v


cdef inline uint32_t _partition(object key, uint32_t n) except? 0xFFFFFFFF:
    cdef bytes b
    if PyBytes_CheckExact(key):
        b = <bytes>key
    else:
        b = bytes(memoryview(key))
    return (_murmur2(<const unsigned char*>PyBytes_AS_STRING(b), PyBytes_GET_SIZE(b))
            & 0x7FFFFFFF) % n


def kafka_partition(key, num_partitions):
    """Partition Kafka's default partitioner picks for a non-null key (see the twin)."""
    cdef uint32_t n = _check_partitions(num_partitions)
    return _partition(key, n)


def kafka_partitions(keys, num_partitions):
    """Batch form of kafka_partition: the whole envelope in one C loop."""
    cdef uint32_t n = _check_partitions(num_partitions)
    cdef list seq = keys if PyList_CheckExact(keys) else list(keys)
    cdef Py_ssize_t i, count = len(seq)
    cdef list out = [None] * count
    cdef object k
    for i in range(count):
        k = seq[i]
        if PyBytes_CheckExact(k):
            out[i] = (_murmur2(<const unsigned char*>PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k))
                      & 0x7FFFFFFF) % n
        else:
            out[i] = _partition(k, n)
    return out


# ----------------------------------------------------------------------------------------------
# normalize_phone
# ----------------------------------------------------------------------------------------------

cdef enum:
    C_BAD = -1
    C_SEP = -2
    C_PLUS = -3
    C_RESTART = -4

cdef enum:
    K_NANP = 1
    K_GREATER_CHINA = 2

cdef enum:
    # More digits than this can never shrink to 15 (at most 4 are ever removed): stop storing.
    MAX_DIGITS_KEPT = 24

cdef dict _COUNTRY = {}
cdef unsigned char _TRUNK0_1[10]
cdef unsigned char _TRUNK0_2[100]
cdef unsigned char _TRUNK0_3[1000]


cdef void _build_countries() except *:
    cdef int i
    for i in range(10):
        _TRUNK0_1[i] = 0
    for i in range(100):
        _TRUNK0_2[i] = 0
    for i in range(1000):
        _TRUNK0_3[i] = 0
    for iso, (cc, trunk) in _twin.CALLING_CODES.items():
        assert len(trunk) <= 1 and cc.isdigit() and 1 <= len(cc) <= 3, (iso, cc, trunk)
        flags = (K_NANP if cc == "1" else 0) | (
            K_GREATER_CHINA if cc in _twin.GREATER_CHINA_CODES else 0)
        info = (cc.encode("ascii"), ord(trunk) if trunk else 0, flags)
        # Lower-case keys are only a shortcut for the twin's upper() fallback.
        _COUNTRY[iso] = info
        if len(iso) == 2 and iso.isascii():
            _COUNTRY.setdefault(iso.lower(), info)
    for cc in _twin.TRUNK0_CODES:
        if len(cc) == 1:
            _TRUNK0_1[int(cc)] = 1
        elif len(cc) == 2:
            _TRUNK0_2[int(cc)] = 1
        else:
            _TRUNK0_3[int(cc)] = 1


_build_countries()


cdef object _lookup(object dc):
    if dc is None:
        return None
    if not isinstance(dc, str):
        raise TypeError(f"default_country must be str or None, not {type(dc)!r}")
    info = _COUNTRY.get(dc)
    if info is None and len(<str>dc) == 2 and (<str>dc).isascii():
        info = _COUNTRY.get((<str>dc).upper())
    return info


cdef inline int _phone_class_fast(Py_UCS4 ch) noexcept nogil:
    # Classifies without NFKC; C_RESTART for anything NFKC might change or combine.
    if ch < 128:
        if c'0' <= ch <= c'9':
            return <int>ch - 48
        if ch == c'+':
            return C_PLUS
        if _FLAGS[ch] & (F_PHONE_SEP | F_SPACE):
            return C_SEP
        return C_BAD
    if 0xFF10 <= ch <= 0xFF19:  # fullwidth digits
        return <int>ch - 0xFF10
    if ch == 0xFF0B:  # fullwidth plus
        return C_PLUS
    if ch == 0xFF08 or ch == 0xFF09 or ch == 0xFF0D or ch == 0xFF0E or ch == 0xFF0F:
        return C_SEP
    if _flags(ch) & (F_PHONE_SEP | F_SPACE):  # NFKC maps these to separators or spaces
        return C_SEP
    return C_RESTART


cdef inline int _phone_class(Py_UCS4 ch) noexcept nogil:
    # Classification of an already NFKC-normalised character, in the twin's order.
    cdef int d
    if ch < 128:
        if c'0' <= ch <= c'9':
            return <int>ch - 48
        if ch == c'+':
            return C_PLUS
        if _FLAGS[ch] & (F_PHONE_SEP | F_SPACE):
            return C_SEP
        return C_BAD
    if _flags(ch) & (F_PHONE_SEP | F_SPACE):
        return C_SEP
    d = Py_UNICODE_TODECIMAL(ch)
    if d >= 0:
        return d
    return C_BAD


cdef inline bint _trunk0_code(const char* s, Py_ssize_t width) noexcept nogil:
    cdef int v = 0
    cdef Py_ssize_t i
    for i in range(width):
        v = v * 10 + (s[i] - 48)
    if width == 1:
        return _TRUNK0_1[v]
    if width == 2:
        return _TRUNK0_2[v]
    return _TRUNK0_3[v]


cdef object _finish(const char* d, Py_ssize_t nd, bint plus, object default_country):
    cdef char out[48]
    cdef char* intl = out + 1
    cdef Py_ssize_t m, s, w, ccn
    cdef int trunk, kflags
    cdef bytes ccb
    out[0] = c'+'
    if plus:
        if nd > MAX_DIGITS_KEPT:
            return ""
        memcpy(intl, d, nd)
        m = nd
    elif nd >= 2 and d[0] == c'0' and d[1] == c'0':
        if nd > MAX_DIGITS_KEPT:
            return ""
        memcpy(intl, d + 2, nd - 2)
        m = nd - 2
    else:
        info = _lookup(default_country)
        if info is None or nd > MAX_DIGITS_KEPT:
            return ""
        ccb = <bytes>(<tuple>info)[0]
        trunk = <int>(<tuple>info)[1]
        kflags = <int>(<tuple>info)[2]
        if (kflags & K_NANP) and nd >= 3 and d[0] == c'0' and d[1] == c'1' and d[2] == c'1':
            memcpy(intl, d + 3, nd - 3)
            m = nd - 3
        elif (nd == 13 and d[0] == c'8' and d[1] == c'6' and d[2] == c'1'
              and c'3' <= d[3] <= c'9'):
            memcpy(intl, d, 13)
            m = 13
        elif ((kflags & K_GREATER_CHINA) and nd == 11 and d[0] == c'1'
              and c'3' <= d[1] <= c'9'):
            intl[0] = c'8'
            intl[1] = c'6'
            memcpy(intl + 2, d, 11)
            m = 13
        else:
            s = 1 if (trunk != 0 and nd >= 1 and d[0] == trunk) else 0
            if s == nd:
                return ""
            ccn = PyBytes_GET_SIZE(ccb)
            memcpy(intl, PyBytes_AS_STRING(ccb), ccn)
            memcpy(intl + ccn, d + s, nd - s)
            m = ccn + nd - s

    for w in range(1, 4):
        if m > w and intl[w] == c'0' and _trunk0_code(intl, w):
            memmove(intl + w, intl + w + 1, m - w - 1)
            m -= 1
            break

    if m == 0 or intl[0] == c'0':
        return ""
    if intl[0] == c'1' and (m != 11 or intl[1] == c'0' or intl[1] == c'1'
                            or intl[4] == c'0' or intl[4] == c'1'):
        return ""
    if m < 8 or m > 15:
        return ""
    return PyUnicode_DecodeASCII(out, m + 1, NULL)


def normalize_phone(str raw not None, default_country):
    """E.164 form of a phone number as typed by a buyer, or "" (see the twin for the rules)."""
    cdef char digits[MAX_DIGITS_KEPT + 1]
    cdef Py_ssize_t nd = 0
    cdef bint plus = False
    cdef bint restart = False
    cdef int c
    cdef Py_UCS4 ch
    cdef str norm
    for ch in raw:
        c = _phone_class_fast(ch)
        if c >= 0:
            if nd < MAX_DIGITS_KEPT + 1:
                digits[nd] = <char>(48 + c)
            nd += 1
        elif c == C_SEP:
            continue
        elif c == C_PLUS:
            if plus or nd:
                return ""
            plus = True
        elif c == C_BAD:
            return ""
        else:
            restart = True
            break
    if restart:
        nd = 0
        plus = False
        norm = _normalize("NFKC", raw)
        for ch in norm:
            c = _phone_class(ch)
            if c >= 0:
                if nd < MAX_DIGITS_KEPT + 1:
                    digits[nd] = <char>(48 + c)
                nd += 1
            elif c == C_SEP:
                continue
            elif c == C_PLUS:
                if plus or nd:
                    return ""
                plus = True
            else:
                return ""
    return _finish(digits, nd, plus, default_country)


# ----------------------------------------------------------------------------------------------
# sku_key
# ----------------------------------------------------------------------------------------------

cdef enum:
    STACK_CHARS = 256


cdef inline bint _sku_stable(Py_UCS4 ch) noexcept nogil:
    # Characters that NFKC and casefold leave alone and that compose with nothing in this set:
    # CJK ideographs (Ext A and URO), kana, Hangul syllables, CJK space/comma/full stop.
    return ((0x4E00 <= ch <= 0x9FFF) or (0x3400 <= ch <= 0x4DBF) or (0x3041 <= ch <= 0x3096)
            or (0x30A1 <= ch <= 0x30FE) or (0xAC00 <= ch <= 0xD7A3) or (0x3000 <= ch <= 0x3002))


def sku_key(str text not None):
    """Key under which SKU aliases are stored and looked up (see the twin for the rules)."""
    cdef Py_ssize_t n = len(text)
    cdef Py_ssize_t cap = STACK_CHARS
    cdef Py_ssize_t j = 0
    cdef Py_UCS4 ch
    cdef Py_UCS4 stack[STACK_CHARS]
    cdef Py_UCS4* buf = stack
    cdef char* cbuf
    cdef bint slow = False
    cdef bint changed = False
    cdef str norm

    if n > cap:
        buf = <Py_UCS4*>PyMem_Malloc(n * sizeof(Py_UCS4))
        if buf == NULL:
            raise MemoryError()
        cap = n
    try:
        if PyUnicode_IS_ASCII(text):
            cbuf = <char*>buf
            for ch in text:
                if c'A' <= ch <= c'Z':
                    cbuf[j] = <char>(<uint32_t>ch + 32)
                    j += 1
                    changed = True
                elif _FLAGS[ch] & (F_SKU_DROP | F_SPACE):
                    changed = True
                else:
                    cbuf[j] = <char><uint32_t>ch
                    j += 1
            if not changed and type(text) is str:
                return text
            return PyUnicode_DecodeASCII(cbuf, j, NULL)

        for ch in text:
            if 0xFF01 <= ch <= 0xFF5E:  # fullwidth ASCII: NFKC maps it to ASCII
                ch = <Py_UCS4>(<uint32_t>ch - 0xFEE0)
            elif ch >= 128 and not (_sku_stable(ch) or _flags(ch) & (F_SKU_DROP | F_SPACE)):
                # Dropped characters qualify too: each is NFKC-stable (or NFKC maps it to
                # another dropped one) and composes with nothing, so dropping first is the same.
                slow = True
                break
            if c'A' <= ch <= c'Z':
                buf[j] = <Py_UCS4>(<uint32_t>ch + 32)
                j += 1
            elif not (_flags(ch) & (F_SKU_DROP | F_SPACE)):
                buf[j] = ch
                j += 1
        if not slow:
            return PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, buf, j)

        norm = _normalize("NFKC", text).casefold()
        if len(norm) > cap:  # NFKC and casefold can both lengthen ("ﬃ", "ß")
            if buf != stack:
                PyMem_Free(buf)
                buf = stack
            buf = <Py_UCS4*>PyMem_Malloc(len(norm) * sizeof(Py_UCS4))
            if buf == NULL:
                buf = stack
                raise MemoryError()
            cap = len(norm)
        j = 0
        for ch in norm:
            if _flags(ch) & (F_SKU_DROP | F_SPACE):
                changed = True
            else:
                buf[j] = ch
                j += 1
        if not changed:
            return norm
        return PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, buf, j)
    finally:
        if buf != stack:
            PyMem_Free(buf)


# ----------------------------------------------------------------------------------------------
# Dedup fingerprints
# ----------------------------------------------------------------------------------------------

cdef uint64_t FNV_OFFSET = _twin.FNV64_OFFSET
cdef uint64_t FNV_PRIME = _twin.FNV64_PRIME
cdef unsigned char _KEEP[0x10000]
cdef object _keeps = _twin.fingerprint_keeps


cdef void _build_keep() except *:
    cdef Py_ssize_t o
    for o in range(0x10000):
        _KEEP[o] = 1 if _keeps(chr(o)) else 0


_build_keep()


cdef inline bint _keep(Py_UCS4 ch) except -1:
    if ch < 0x10000:
        return _KEEP[ch]
    return 1 if _keeps(chr(ch)) else 0  # astral planes: rare enough to ask the twin


cdef inline uint64_t _fnv_byte(uint64_t h, uint32_t b) noexcept nogil:
    return (h ^ b) * FNV_PRIME


cdef inline uint64_t _fnv_utf8(uint64_t h, Py_UCS4 ch) noexcept nogil:
    # Feeds the UTF-8 encoding of ch (never a surrogate: those are not kept).
    cdef uint32_t c = <uint32_t>ch
    if c < 0x80:
        return _fnv_byte(h, c)
    if c < 0x800:
        h = _fnv_byte(h, 0xC0 | (c >> 6))
        return _fnv_byte(h, 0x80 | (c & 0x3F))
    if c < 0x10000:
        h = _fnv_byte(h, 0xE0 | (c >> 12))
        h = _fnv_byte(h, 0x80 | ((c >> 6) & 0x3F))
        return _fnv_byte(h, 0x80 | (c & 0x3F))
    h = _fnv_byte(h, 0xF0 | (c >> 18))
    h = _fnv_byte(h, 0x80 | ((c >> 12) & 0x3F))
    h = _fnv_byte(h, 0x80 | ((c >> 6) & 0x3F))
    return _fnv_byte(h, 0x80 | (c & 0x3F))


cdef uint64_t _fingerprint_part(uint64_t h, str text) except? 0:
    cdef Py_UCS4 ch
    cdef bint fast = True
    cdef str norm
    if not PyUnicode_IS_ASCII(text):
        for ch in text:
            if ch >= 128 and not _sku_stable(ch):
                fast = False
                break
    if fast:
        # ASCII plus CJK/kana/Hangul that NFKC and casefold leave alone (see _sku_stable).
        for ch in text:
            if c'A' <= ch <= c'Z':
                ch = <Py_UCS4>(<uint32_t>ch + 32)
            if _KEEP[ch]:
                h = _fnv_utf8(h, ch)
        return h
    norm = _normalize("NFKC", text).casefold()
    for ch in norm:
        if _keep(ch):
            h = _fnv_utf8(h, ch)
    return h


def recipient_fingerprint(parts):
    """64-bit FNV-1a of the normalised parts (see the twin for the rules)."""
    cdef uint64_t h = FNV_OFFSET
    for part in parts:
        if not isinstance(part, str):
            raise TypeError(f"parts must be str, not {type(part)!r}")
        h = _fingerprint_part(h, <str>part)
        h = _fnv_byte(h, 0xFF)
    return h


cdef inline uint64_t _mix64(uint64_t x) noexcept nogil:
    x = (x ^ (x >> 30)) * <uint64_t>0xBF58476D1CE4E5B9
    x = (x ^ (x >> 27)) * <uint64_t>0x94D049BB133111EB
    return x ^ (x >> 31)


cdef inline uint64_t _fnv_bytes(const char* data, Py_ssize_t n) noexcept nogil:
    cdef uint64_t h = FNV_OFFSET
    cdef Py_ssize_t i
    for i in range(n):
        h = (h ^ <unsigned char>data[i]) * FNV_PRIME
    return h


cdef enum:
    STACK_LINES = 32


def sku_multiset_fingerprint(skus, quantities):
    """Order-independent fingerprint of (sku, merged quantity) pairs (see the twin)."""
    cdef Py_ssize_t n = len(skus)
    if len(quantities) != n:
        raise ValueError(f"{n} skus but {len(quantities)} quantities")
    cdef const char* sp_stack[STACK_LINES]
    cdef Py_ssize_t sl_stack[STACK_LINES]
    cdef uint64_t q_stack[STACK_LINES]
    cdef const char** sp = sp_stack
    cdef Py_ssize_t* sl = sl_stack
    cdef uint64_t* qs = q_stack
    cdef Py_ssize_t i, j, m = 0, size
    cdef const char* data
    cdef uint64_t fp = 0
    cdef object q
    cdef list keep_alive = []  # the str objects whose UTF-8 buffers sp points into
    if n > STACK_LINES:
        sp = <const char**>PyMem_Malloc(n * sizeof(const char*))
        sl = <Py_ssize_t*>PyMem_Malloc(n * sizeof(Py_ssize_t))
        qs = <uint64_t*>PyMem_Malloc(n * sizeof(uint64_t))
        if sp == NULL or sl == NULL or qs == NULL:
            PyMem_Free(sp)
            PyMem_Free(sl)
            PyMem_Free(qs)
            raise MemoryError()
    try:
        for i in range(n):
            sku = skus[i]
            if not isinstance(sku, str):
                raise TypeError(f"skus must be str, not {type(sku)!r}")
            data = PyUnicode_AsUTF8AndSize(sku, &size)
            keep_alive.append(sku)
            q = PyNumber_Index(quantities[i])
            if q < 0 or q > 0xFFFFFFFF:
                raise ValueError(f"quantity must be in 0..{0xFFFFFFFF}, got {q}")
            for j in range(m):  # merge with an earlier line of the same SKU
                if sl[j] == size and memcmp(sp[j], data, size) == 0:
                    qs[j] += <uint64_t>q
                    break
            else:
                sp[m] = data
                sl[m] = size
                qs[m] = <uint64_t>q
                m += 1
        for j in range(m):
            if qs[j]:
                fp += _mix64(_fnv_bytes(sp[j], sl[j]) ^ _mix64(qs[j]))
        return fp
    finally:
        if sp != sp_stack:
            PyMem_Free(sp)
            PyMem_Free(sl)
            PyMem_Free(qs)


# ----------------------------------------------------------------------------------------------
# Recipient comparison primitives
# ----------------------------------------------------------------------------------------------

cdef inline bint _fold_keep(Py_UCS4 ch) except -1:
    return ch == c'*' or ch == c'#' or _keep(ch)


def fold_text(text):
    """NFKC + casefold, separators collapsed to one space (see the twin for the rules)."""
    if not isinstance(text, str):
        raise TypeError(f"text must be str, not {type(text)!r}")
    cdef str src = <str>text
    cdef Py_UCS4 ch
    cdef bint fast = True
    if not PyUnicode_IS_ASCII(src):
        for ch in src:
            if ch >= 128 and not _sku_stable(ch):
                fast = False
                break
    if not fast:
        src = _normalize("NFKC", src).casefold()
    cdef list out = []
    cdef bint gap = False
    cdef bint lower = fast
    for ch in src:
        if lower and c'A' <= ch <= c'Z':
            ch = <Py_UCS4>(<uint32_t>ch + 32)
        if _fold_keep(ch):
            if gap and out:
                out.append(" ")
            gap = False
            out.append(ch)
        else:
            gap = True
    return "".join(out)


cdef Py_ssize_t _phone_marks(str text, char* buf, Py_ssize_t cap) except -1:
    # Digits as 0..9 and stars as 10, in order, into buf; returns how many (at most cap kept:
    # the rightmost ones, which is what a right-aligned comparison reads).
    cdef Py_ssize_t n = 0
    cdef Py_UCS4 ch
    cdef int d
    for ch in text:
        if ch == c'*' or ch == 0xFF0A:
            d = 10
        else:
            d = Py_UNICODE_TODECIMAL(ch)
            if d < 0:
                continue
        if n == cap:
            memmove(buf, buf + 1, cap - 1)
            n -= 1
        buf[n] = <char>d
        n += 1
    return n


def masked_digits_agree(a, b):
    """Visible phone digits compared right-aligned: how many agree, -1 on a conflict."""
    if not isinstance(a, str) or not isinstance(b, str):
        raise TypeError("a and b must be str")
    cdef char da[64]
    cdef char db[64]
    cdef Py_ssize_t na = _phone_marks(<str>a, da, 64)
    cdef Py_ssize_t nb = _phone_marks(<str>b, db, 64)
    cdef Py_ssize_t k, m = na if na < nb else nb
    cdef int agree = 0
    cdef char x, y
    for k in range(1, m + 1):
        x = da[na - k]
        y = db[nb - k]
        if x == 10 or y == 10:
            continue
        if x != y:
            return -1
        agree += 1
    if m == 64:
        # more than 64 marks: the twin compares all of them; so must we
        return _twin.masked_digits_agree(a, b)
    return agree


def wildcard_match(pattern, text, anchored):
    """Whether text fits a masked pattern (star runs = 1+ characters): visible chars, or -1."""
    if not isinstance(pattern, str) or not isinstance(text, str):
        raise TypeError("pattern and text must be str")
    cdef str p = <str>pattern
    cdef str t = <str>text
    cdef bint anch = bool(anchored)
    cdef Py_ssize_t np = len(p), nt = len(t)
    cdef Py_ssize_t i = 0, j, pos = 0, visible = 0, at
    cdef bint first = True, trailing_star = False
    cdef str seg
    while i < np:
        if p[i] == "*":
            while i < np and p[i] == "*":
                i += 1
            pos += 1  # a star run stands for at least one character
            first = False
            trailing_star = i == np
            continue
        j = i
        while j < np and p[j] != "*":
            j += 1
        seg = p[i:j]
        visible += j - i
        if anch and first:
            if not t.startswith(seg):
                return -1
            pos = j - i
        elif anch and j == np:
            at = nt - (j - i)
            if at < pos or not t.endswith(seg):
                return -1
            pos = nt
        else:
            at = t.find(seg, pos)
            if at < 0:
                return -1
            pos = at + (j - i)
        first = False
        i = j
    if not visible or pos > nt:
        return -1
    if anch and not trailing_star and pos != nt:
        return -1
    return visible
