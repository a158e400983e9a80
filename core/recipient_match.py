"""Is the recipient of one order the recipient of another, when channels render people differently?

The near-duplicate rule compares two orders of the same block (country + city), amount, currency
and SKU multiset created within the window. Those are exact; who the order ships to is not: the
same buyer arrives as ``+14155550134`` from Shopify and ``(+1)415****134`` from TikTok Shop, as
``王小明`` from Taobao and ``王*明`` beside ciphertext from Pinduoduo, with the address in parts or
as one string, ``St`` or ``Street``, ``Apt 4`` or ``#4``, full-width digits, ``浙江省`` or ``浙江``.

So each field is compared for *agreement*, *compatibility* (a masked rendering whose visible part
fits the other) or *disagreement*, or left *unknown* (absent or encrypted on either side), and the
outcomes add up to a score, in the manner of Fellegi-Sunter: each weight is roughly log2 of how
much likelier that outcome is for two renderings of one person than for two people who happen to
share block, basket and minute. The weights are a documented rule set, tuned on the labelled
corpus of ``bench.linkage`` (its classes include the hard negatives: a family, an office, a dorm
at one address; the same person buying again later):

=============  ==========  ================================  ==========  ========
field          agree       compatible (masked fits)          unknown     differ
=============  ==========  ================================  ==========  ========
phone          +10         +6 (>= 4 digits), +2 (fewer)      0           -10
name           +6          +4 (>= 2 characters), +1          0           -6
address        +6          +3 (masked street fits), +1 part  0           -4
postcode       +2          --                                0           -2
=============  ==========  ================================  ==========  ========

An order is held as a suspected duplicate at ``HOLD_AT`` (6) or more. PDD's copy of a Taobao order
reaches it on what it still shows (``1*********0`` +2, ``叶*`` +1 or ``王*明`` +4, the masked street
``文三路***号`` +3); a household (same address, another name or another phone) loses more on the
name or phone than the address wins; a surname and a phone's last digit alone never reach it.
Chosen on the labelled corpus (``python -m bench.linkage``, three seeds of 200,000 orders): at 8,
PDD copies of two-character names (``叶*`` shows the surname only) were missed half the time; at
6 every class is found, and what is left of the false holds is a family member whose PDD
rendering shows the same surname, the same name length and the same last phone digit (4 families
of 10,072). A time term (copies created within the minute) was tried and changed nothing.
Nothing here does I/O; everything is a pure function of two :class:`Who`.
"""

from __future__ import annotations

from functools import lru_cache

import msgspec
from rapidfuzz import fuzz

from ext import fold_text, masked_digits_agree, recipient_fingerprint, wildcard_match

__all__ = [
    "HOLD_AT",
    "Folded",
    "Match",
    "Who",
    "block_key",
    "cannot_hold",
    "comparable",
    "compare",
    "folded",
    "pack",
    "phone_tail",
    "unpack",
    "who_of",
]

HOLD_AT = 6

# field -> outcome -> weight (the table above)
W_PHONE = {"agree": 10, "compatible": 6, "weak": 2, "differ": -10}
W_NAME = {"agree": 6, "compatible": 4, "weak": 1, "differ": -6}
W_ADDRESS = {"agree": 6, "compatible": 3, "partial": 1, "differ": -4}
W_POSTCODE = {"agree": 2, "differ": -2}

PHONE_STRONG_DIGITS = 4  # visible digits that make a masked phone more than a hint
NAME_STRONG_CHARS = 2  # visible characters that make a masked name more than a surname
ADDRESS_AGREE = 90  # rapidfuzz token-set ratio at which two addresses agree
ADDRESS_PARTIAL = 75
MASKED_ADDRESS_MIN = 3  # visible characters a masked street must show to count


class Who(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """The recipient fields an order is compared by, as the channel rendered them.

    Kept raw (cheap to carry and store); :func:`compare` folds them only when two orders are
    candidates, which is rare: most orders have no other order in their block and basket.
    """

    name: str = ""
    phone: str = ""  # E.164
    phone_masked: str = ""
    country: str = ""
    region: str = ""
    city: str = ""
    district: str = ""
    address: str = ""
    postcode: str = ""


class Match(msgspec.Struct, frozen=True, array_like=True, gc=False):
    score: int
    agreed: tuple[str, ...] = ()  # what counted for it, e.g. ("phone:compatible", "name:agree")


_SEP = "\x1f"  # never in a folded field: what a channel sends there is dropped as noise


def pack(who: Who) -> str:
    """One string for a recipient: what the dedup stages carry and store (one object to decode
    per order instead of nine; it is unpacked only when a candidate needs comparing). A
    separator inside a field (a control character no channel means) becomes a space."""
    fields = (who.name, who.phone, who.phone_masked, who.country, who.region, who.city,
              who.district, who.address, who.postcode)  # fmt: skip
    return _SEP.join(f.replace(_SEP, " ") if _SEP in f else f for f in fields)


@lru_cache(maxsize=16384)
def unpack(text: str) -> Who:
    parts = text.split(_SEP)
    if len(parts) != 9:
        return Who()
    return Who(*parts)


def phone_tail(who: Who) -> int:
    """The last digit a phone rendering shows (every platform's mask keeps it), -1 if none."""
    text = who.phone or who.phone_masked
    for ch in reversed(text):
        if ch.isdecimal():
            return int(ch)
        if ch == "*" or ch == "\uff0a":
            return -1
    return -1


def who_of(recipient: object) -> Who:
    r = recipient
    return Who(
        r.name,  # type: ignore[attr-defined]
        r.phone,  # type: ignore[attr-defined]
        r.phone_masked,  # type: ignore[attr-defined]
        r.country,  # type: ignore[attr-defined]
        r.region,  # type: ignore[attr-defined]
        r.city,  # type: ignore[attr-defined]
        r.district,  # type: ignore[attr-defined]
        r.address,  # type: ignore[attr-defined]
        r.postcode,  # type: ignore[attr-defined]
    )


def comparable(who: Who | str) -> bool:
    """Whether the order shows anything personal (a name or a phone, masked or not): an order
    whose name and phone are both encrypted or absent can only ever match on its address."""
    if isinstance(who, str):
        parts = who.split(_SEP, 3)
        return any(parts[:3])
    return bool(who.name or who.phone or who.phone_masked)


# ------------------------------------------------------------------------------ blocking

# administrative suffixes two renderings of one place differ by (浙江省 / 浙江, 上海市 / 上海)
_ADMIN_SUFFIXES = (
    "维吾尔自治区",
    "壮族自治区",
    "回族自治区",
    "特别行政区",
    "自治区",
    "自治州",
    "省",
    "市",
    "区",
    "县",
)
_MUNICIPALITIES = {"北京", "上海", "天津", "重庆"}
_ADMIN_WORDS = {"city", "county", "prefecture", "province", "state", "district", "borough"}


def _place(text: str) -> str:
    """A place name in one rendering: folded, spaces and admin words/suffixes dropped."""
    folded = fold_text(text)
    words = [w for w in folded.split(" ") if w not in _ADMIN_WORDS] or folded.split(" ")
    place = "".join(words)
    for suffix in _ADMIN_SUFFIXES:
        if place.endswith(suffix) and len(place) > len(suffix) + 1:
            return place[: -len(suffix)]
    return place


def _postcode(who: Who) -> str:
    code = "".join(fold_text(who.postcode).split(" ")).upper()
    if not code.strip("0"):
        return ""  # "000000": Taobao's "no postcode"
    if who.country in ("US", "") and len(code) >= 5 and code[:5].isdigit():
        return code[:5]  # ZIP+4 and ZIP are one place
    return code


def block_key(who: Who) -> bytes:
    """The recipient stage's partition key: country + city (else region, else postcode).

    Both renderings of one recipient produce it (every channel names the city, in parts even
    when the street is one string or masked), and it spreads orders over partitions. Measured
    on the labelled corpus (``bench.linkage``): candidates per order stay in single digits.
    """
    region = _place(who.region)
    if region in _MUNICIPALITIES and who.country.upper() in ("CN", ""):
        # 北京/上海/天津/重庆 are provinces and cities at once: Taobao says 上海 / 上海市 /
        # 徐汇区, JD says 上海 / 徐汇区 (its "city" level is the district); the region is the
        # place both name
        place = region
    else:
        place = _place(who.city) or region or _postcode(who)
    return b"b:%016x" % recipient_fingerprint((who.country.upper(), place))


# ------------------------------------------------------------------------------ comparison


class _Features:
    """One recipient folded for comparison, once (cached: a window entry meets many orders)."""

    __slots__ = (
        "masked_name",
        "masked_street",
        "names",
        "numbers",
        "phone",
        "postcode",
        "street",
        "street_cjk",
    )

    def __init__(self, who: Who) -> None:
        self.phone = who.phone or who.phone_masked
        self.names = _name_forms(who.name) if who.name else []
        self.masked_name = bool(self.names) and "*" in self.names[0]
        self.street = _address_text(who) if who.address else ""
        self.street_cjk = _is_cjk(self.street)
        self.masked_street = "*" in self.street
        if self.masked_street and not self.street_cjk:
            self.street = "".join(self.street.split())
        self.numbers = _numbers(self.street)
        self.postcode = _postcode(who)


@lru_cache(maxsize=16384)
def _features(who: Who) -> _Features:
    return _Features(who)


class Folded(msgspec.Struct, frozen=True):
    """A recipient's fields as :func:`compare` reads them: what another linker must be given to
    compare the same thing (``bench.peer`` hands these to Splink)."""

    name: str  # tokens sorted (Latin) or spaces dropped (CJK); "" when absent
    phone: str  # the full phone, else its masked rendering
    street: str  # the street as it remains once the places it is in are taken off
    postcode: str  # normalised; "" for none or "000000"


def folded(who: Who) -> Folded:
    f = _features(who)
    return Folded(
        f.names[min(1, len(f.names) - 1)] if f.names else "", f.phone, f.street, f.postcode
    )


def cannot_hold(a: Who | str, b: Who | str) -> bool:
    """Phones that disagree: the score is at most 14 - 10 < ``HOLD_AT`` whatever else agrees,
    so the rest of the comparison can be skipped (most candidate pairs in a busy block)."""
    if isinstance(a, str):
        a = unpack(a)
    if isinstance(b, str):
        b = unpack(b)
    if a.phone and b.phone:
        return a.phone != b.phone
    pa, pb = a.phone or a.phone_masked, b.phone or b.phone_masked
    return bool(pa and pb) and masked_digits_agree(pa, pb) < 0


def _phone(a: Who, b: Who, fa: _Features, fb: _Features) -> str:
    if not fa.phone or not fb.phone:
        return "unknown"
    if a.phone and b.phone:
        return "agree" if a.phone == b.phone else "differ"
    n = masked_digits_agree(fa.phone, fb.phone)
    if n < 0:
        return "differ"
    if n == 0:
        return "unknown"
    return "compatible" if n >= PHONE_STRONG_DIGITS else "weak"


def _is_cjk(text: str) -> bool:
    return any("\u3400" <= ch <= "\u9fff" for ch in text)


def _name_forms(text: str) -> list[str]:
    """The folded name's renderings to try: as given, tokens sorted, and (CJK) without spaces."""
    folded = fold_text(text)
    if _is_cjk(folded):
        return ["".join(folded.split(" "))]
    tokens = folded.split(" ")
    forms = [folded, " ".join(sorted(tokens))]
    if len(tokens) == 2:
        forms.append(f"{tokens[1]} {tokens[0]}")
    return forms


def _name(a: _Features, b: _Features) -> str:
    fa, fb = a.names, b.names
    if not fa or not fb:
        return "unknown"
    ma, mb = a.masked_name, b.masked_name
    if not ma and not mb:
        if fa[0] == fb[0] or sorted(fa[0].split(" ")) == sorted(fb[0].split(" ")):
            return "agree"
        if fuzz.token_sort_ratio(fa[0], fb[0]) >= 92:
            return "agree"  # a typo or a dropped middle initial
        return "differ"
    if ma and mb:
        if fa[0] == fb[0]:
            return "weak"
        return "unknown" if fa[0][:1] == fb[0][:1] else "differ"
    pattern, forms = (fa[0], fb) if ma else (fb[0], fa)
    if _is_cjk(pattern):
        # Chinese platforms mask one star per hidden character (叶* for 叶强, 王*明 for 王小明),
        # so the length counts: 袁* is not 袁子涵
        form = forms[0]
        if len(form) != len(pattern) or any(
            p != "*" and p != c for p, c in zip(pattern, form, strict=True)
        ):
            return "differ"
        best = len(pattern) - pattern.count("*")
    else:
        best = max(wildcard_match(pattern, form, True) for form in forms)
    if best < 0:
        return "differ"
    return "compatible" if best >= NAME_STRONG_CHARS else "weak"


_STREET_WORDS = {
    "st": "street",
    "str": "street",
    "ave": "avenue",
    "av": "avenue",
    "rd": "road",
    "blvd": "boulevard",
    "dr": "drive",
    "ln": "lane",
    "ct": "court",
    "pl": "place",
    "sq": "square",
    "hwy": "highway",
    "pkwy": "parkway",
    "n": "north",
    "s": "south",
    "e": "east",
    "w": "west",
}
# unit markers: "Apt 4", "#4", "Unit 4", "Suite 4", "No. 4" are one unit
_UNIT_WORDS = {"#", "apt", "apartment", "unit", "ste", "suite", "no", "flat", "room", "rm"}


def _address_text(who: Who) -> str:
    """The street part of an address in one rendering: folded, unit markers and abbreviations
    normalised, and the names of the places it is in taken out (a one-string address repeats
    the city, state, postcode and country that another rendering gives in parts)."""
    places, drop = _places_of(who)
    text = fold_text(who.address).replace("#", " # ")
    if _is_cjk(text):
        compact = "".join(text.split())
        # a one-string address starts with its province, city and district: take each off the
        # front once, in that order. A name without its suffix (浙江, 杭州) counts only inside
        # such a chain, so 天河区天河路 keeps the 天河 of its street and 广州大道 its 广州.
        chained = False
        for level, (full, trimmed) in enumerate(places):
            if full and compact.startswith(full):
                compact, chained = compact[len(full) :], True
            elif trimmed and compact.startswith(trimmed):
                rest = compact[len(trimmed) :]
                after = [f for pair in places[level + 1 :] for f in pair if f]
                if chained or any(rest.startswith(f) for f in after):
                    compact, chained = rest, True
        return compact
    words = []
    for word in text.split():
        if word in _UNIT_WORDS or word in drop:
            continue
        words.append(_STREET_WORDS.get(word, word))
    return " ".join(words)


_COUNTRY_WORDS = {"usa", "us", "united", "states", "america", "uk", "kingdom", "china", "中国"}


def _places_of(w: Who) -> tuple[list[tuple[str, str]], set[str]]:
    """Place names (as given, and without their suffix) of each level, region first, to take
    off the front of a CJK address; and the words to drop from a Latin one."""
    names = []
    for part in (w.region, w.city, w.district):
        folded = "".join(fold_text(part).split())
        trimmed = _place(part)
        names.append((folded, trimmed if len(trimmed) > 1 else ""))
    drop = {word for f in (w.region, w.city, w.country) for word in fold_text(f).split()}
    drop |= {fold_text(w.postcode).replace(" ", "")}
    drop |= set(fold_text(w.postcode).split())
    drop |= _COUNTRY_WORDS
    drop.discard("")
    return names, drop


def _numbers(text: str) -> list[str]:
    out, cur = [], []
    for ch in text:
        if ch.isdigit():
            cur.append(ch)
        elif cur:
            out.append("".join(cur))
            cur = []
    if cur:
        out.append("".join(cur))
    return sorted(out)


def _address(a: _Features, b: _Features) -> str:
    ta, tb = a.street, b.street
    if not ta or not tb:
        return "unknown"
    ma, mb = a.masked_street, b.masked_street
    if ma and mb:
        # one channel's mask, twice: equal renderings show the same street; unequal ones may
        # hide different parts of one street, so they say nothing either way
        return "compatible" if ta == tb else "unknown"
    if ma or mb:
        pattern, other = (ta, tb) if ma else (tb, ta)
        if not (a.street_cjk if mb else b.street_cjk):
            other = "".join(other.split())
        shown = wildcard_match(pattern, other, False)
        if shown < 0:
            return "differ"
        return "compatible" if shown >= MASKED_ADDRESS_MIN else "unknown"
    na, nb = a.numbers, b.numbers
    if a.street_cjk or b.street_cjk:
        similarity = fuzz.ratio(ta, tb)
    else:
        similarity = fuzz.token_set_ratio(ta, tb)
    if na and nb and na != nb:
        # house or unit numbers differ: a neighbour, a dorm-mate, another office on the street
        # (a number in common counts only when the rest of the address is alike too: "5th Ave"
        # and "Apt 5" share a 5 and nothing else)
        shared = set(na) & set(nb)
        return "partial" if shared and similarity >= ADDRESS_PARTIAL else "differ"
    if similarity >= ADDRESS_AGREE:
        return "agree" if na == nb else "partial"
    if similarity >= ADDRESS_PARTIAL:
        return "partial"
    return "differ"


def _postcodes(a: _Features, b: _Features) -> str:
    pa, pb = a.postcode, b.postcode
    if not pa or not pb:
        return "unknown"
    return "agree" if pa == pb else "differ"


def compare(a: Who | str, b: Who | str) -> Match:
    """The score of two recipients (or their :func:`pack` strings) and the fields that agreed
    (or were compatible)."""
    if isinstance(a, str):
        a = unpack(a)
    if isinstance(b, str):
        b = unpack(b)
    fa, fb = _features(a), _features(b)
    score = 0
    agreed: list[str] = []
    for field, outcome, weights in (
        ("phone", _phone(a, b, fa, fb), W_PHONE),
        ("name", _name(fa, fb), W_NAME),
        ("address", _address(fa, fb), W_ADDRESS),
        ("postcode", _postcodes(fa, fb), W_POSTCODE),
    ):
        weight = weights.get(outcome, 0)
        score += weight
        if weight > 0:
            agreed.append(f"{field}:{outcome}")
    return Match(score, tuple(agreed))
