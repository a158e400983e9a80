"""Recipient matching: renderings of one person agree, households and strangers do not."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.recipient_match import (
    HOLD_AT,
    Who,
    block_key,
    cannot_hold,
    comparable,
    compare,
    folded,
    phone_tail,
)

SHOPIFY = Who(
    "John Smith", "+14155550134", "", "US", "California", "San Francisco", "", "1 Market St, Apt 4",
    "94105",
)  # fmt: skip
TAOBAO = Who(
    "王小明", "+8613812345670", "", "CN", "浙江省", "杭州市", "西湖区", "文三路478号 3栋201室",
    "310012",
)  # fmt: skip


def who(base: Who, **changes: str) -> Who:
    fields = {f: getattr(base, f) for f in base.__struct_fields__}
    return Who(**{**fields, **changes})


def held(a: Who, b: Who) -> bool:
    m = compare(a, b)
    assert m.score == compare(b, a).score  # symmetric
    return m.score >= HOLD_AT


def test_tiktok_copy_of_a_shopify_order_matches() -> None:
    """Masked phone, the whole address in one string, state and postcode repeated in it."""
    tiktok = who(
        SHOPIFY,
        phone="",
        phone_masked="(+1)415****134",
        address="1 Market Street #4, San Francisco, CA 94105, United States",
    )
    m = compare(SHOPIFY, tiktok)
    assert m.score >= HOLD_AT
    assert m.agreed == ("phone:compatible", "name:agree", "address:agree", "postcode:agree")
    assert block_key(SHOPIFY) == block_key(tiktok)


def test_pinduoduo_copy_of_a_taobao_order_matches() -> None:
    """PDD shows two phone digits, the surname and last character, and the street's name."""
    pdd = who(
        TAOBAO, name="王*明", phone="", phone_masked="1*********0", region="浙江",
        address="文三路***号", postcode="",
    )  # fmt: skip
    m = compare(TAOBAO, pdd)
    assert m.score >= HOLD_AT
    assert set(m.agreed) == {"phone:weak", "name:compatible", "address:compatible"}
    assert block_key(TAOBAO) == block_key(pdd)


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "SMITH, John"},  # names in another order and case
        {"name": "Ｊｏｈｎ  Ｓｍｉｔｈ"},  # full width, double space
        {"address": "1 Market Street Apartment 4"},  # St / Street, Apt / Apartment
        {"address": "1 Market St Unit 4"},
        {"postcode": ""},  # missing postcode
        {"postcode": "94105-1234"},  # ZIP+4
        {"city": "SAN FRANCISCO", "region": "CA"},
    ],
)
def test_formatting_variants_of_one_recipient_match(changes: dict[str, str]) -> None:
    other = who(SHOPIFY, **changes)
    assert held(SHOPIFY, other)
    assert block_key(SHOPIFY) == block_key(other)


@pytest.mark.parametrize(
    "changes",
    [
        {"region": "浙江", "city": "杭州"},  # 浙江省 / 浙江, 杭州市 / 杭州
        {"address": "文三路４７８号３栋２０１室"},  # full-width digits, no spaces
        {"address": "浙江省杭州市西湖区文三路478号3栋201室"},  # one string with the places
        {"name": "王 小明"},
    ],
)
def test_chinese_formatting_variants_match(changes: dict[str, str]) -> None:
    other = who(TAOBAO, **changes)
    assert held(TAOBAO, other)
    assert block_key(TAOBAO) == block_key(other)


def test_shanghai_city_with_and_without_suffix_is_one_block() -> None:
    a = who(TAOBAO, region="上海市", city="上海市", district="浦东新区")
    b = who(TAOBAO, region="上海", city="上海", district="浦东新区")
    jd = who(TAOBAO, region="上海", city="浦东新区", district="")  # JD: the district as city
    assert block_key(a) == block_key(b) == block_key(jd)
    assert block_key(a) != block_key(TAOBAO)


@pytest.mark.parametrize(
    "changes",
    [
        {"name": "Jane Smith", "phone": "+14155550199"},  # family: same surname, own phone
        {"name": "Bob Lee", "phone": "+14155550777"},  # office: same street address
        {"name": "Amy Chen", "phone": "+14155550456", "address": "1 Market St, Apt 5"},  # dorm
        {"name": "Jane Smith", "phone": ""},  # family member without a phone on the order
        {"phone": "+14155550999", "address": "77 Oak Ave"},  # a namesake elsewhere in town
    ],
)
def test_households_and_strangers_are_not_held(changes: dict[str, str]) -> None:
    assert not held(SHOPIFY, who(SHOPIFY, **changes))


def test_masked_family_member_is_not_held() -> None:
    sister = who(
        TAOBAO, name="王*华", phone="", phone_masked="1*********0", address="文三路***号"
    )  # fmt: skip
    assert not held(TAOBAO, sister)  # even with the same last phone digit
    stranger = who(TAOBAO, name="李*明", phone="", phone_masked="1*********0")
    assert not held(TAOBAO, stranger)


def test_a_surname_and_a_digit_alone_never_hold() -> None:
    a = Who(name="王**", phone_masked="1*********0", country="CN", city="杭州市")
    b = Who(name="王小明", phone="+8613812345670", country="CN", city="杭州市")
    assert not held(a, b)


def test_encrypted_recipients_are_not_comparable() -> None:
    assert not comparable(Who(address="文三路***号", country="CN", city="杭州市"))
    assert comparable(Who(phone_masked="1*********0"))
    assert comparable(TAOBAO)


_text = st.text(alphabet="abc 王明*#1２,.", max_size=12)
_whos = st.builds(
    Who,
    name=_text,
    phone=st.sampled_from(["", "+14155550134", "+8613812345670"]),
    phone_masked=st.sampled_from(["", "(+1)415****134", "1*********0", "138****5678"]),
    country=st.sampled_from(["", "US", "CN"]),
    region=_text,
    city=_text,
    district=_text,
    address=_text,
    postcode=st.sampled_from(["", "94105", "000000", "310012"]),
)


@settings(max_examples=300, deadline=None)
@given(a=_whos, b=_whos)
def test_compare_is_symmetric_and_bounded(a: Who, b: Who) -> None:
    m = compare(a, b)
    assert m.score == compare(b, a).score
    assert sorted(m.agreed) == sorted(compare(b, a).agreed)
    assert -22 <= m.score <= 24


@settings(max_examples=300, deadline=None)
@given(a=_whos)
def test_a_recipient_with_a_full_phone_and_name_matches_itself(a: Who) -> None:
    if a.phone and a.name.strip(" ,.*#"):
        assert compare(a, a).score >= HOLD_AT
    assert block_key(a) == block_key(who(a))


def test_place_names_come_off_the_front_of_an_address_only() -> None:
    """天河路 in 天河区 keeps its 天河, 广州大道 in 广州市 its 广州; a one-string address loses
    its province, city and district with or without their suffixes."""
    full = Who(
        "李明", "+8613812345673", "", "CN", "广东省", "广州市", "天河区", "天河路385号 3栋",
        "510000",
    )  # fmt: skip
    for rendering in (
        "广东省广州市天河区天河路***号",
        "广东广州天河区天河路***号",
        "广州天河区天河路***号",
        "天河路***号",
    ):
        pdd = who(full, name="李*", phone="", phone_masked="1*********3", address=rendering)
        pdd = who(pdd, postcode="")
        assert compare(full, pdd).agreed[-1] == "address:compatible", rendering
    avenue = who(full, address="广州大道385号")
    assert held(avenue, who(avenue, address="广东省广州市天河区广州大道385号"))


def test_namesakes_sharing_only_a_digit_are_not_held() -> None:
    a = who(SHOPIFY, name="Sofia Doe", phone="+14155550111", address="350 5th Ave")
    b = who(SHOPIFY, name="Sofia Doe", phone="", address="12 Oak St Apt 5")
    assert not held(a, b)


def test_chinese_masks_keep_the_name_length() -> None:
    """One star per hidden character: 叶* is a two-character name, so not 袁子涵's sister 袁*."""
    full = who(TAOBAO, name="袁子涵")
    sister = who(TAOBAO, name="袁*", phone="", phone_masked="1*********0", address="文三路***号")
    assert compare(full, sister).agreed[:2] == ("phone:weak", "address:compatible")
    assert not held(full, sister)
    assert "name:weak" in compare(who(TAOBAO, name="叶强"), who(sister, name="叶*")).agreed


_phones = st.one_of(
    st.sampled_from(["", "+14155550134", "(+1)415****134", "1*********0", "138****5678＊"]),
    st.text(alphabet="0123456789*＊() +-３", max_size=14),
)


@settings(max_examples=500, deadline=None)
@given(pa=_phones, pb=_phones, fa=st.booleans(), fb=st.booleans())
def test_phones_whose_last_digits_differ_can_never_hold(
    pa: str, pb: str, fa: bool, fb: bool
) -> None:
    """What lets the recipient stage skip an entry by its phone's last digit alone."""
    a = Who(phone=pa) if fa else Who(phone_masked=pa)
    b = Who(phone=pb) if fb else Who(phone_masked=pb)
    ta, tb = phone_tail(a), phone_tail(b)
    if ta >= 0 and tb >= 0 and ta != tb:
        assert cannot_hold(a, b)


def test_folded_fields_are_what_compare_reads() -> None:
    """What a peer linker is given: two renderings of one recipient, folded alike (the state's
    abbreviation stays: string similarity, not equality, decides the address)."""
    tiktok = who(
        SHOPIFY,
        name="SMITH, John",
        phone="",
        phone_masked="(+1)415****134",
        address="1 Market Street #4, San Francisco, CA 94105, United States",
    )
    a, b = folded(SHOPIFY), folded(tiktok)
    assert a.name == b.name == "john smith"
    assert a.street == "1 market street 4" and b.street == "1 market street 4 ca"
    assert a.postcode == b.postcode == "94105"
    assert (a.phone, b.phone) == ("+14155550134", "(+1)415****134")
    assert folded(who(TAOBAO, address="浙江省杭州市西湖区文三路478号 3栋201室")).street == (
        folded(TAOBAO).street
    )
