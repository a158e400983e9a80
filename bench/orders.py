"""Realistic order generator for floods: every channel's real payload shape, with ground truth.

    gen = OrderGenerator(seed=7, channel_mix={"taobao": 0.4, "shopify": 0.6})
    orders = gen.generate(100_000)          # list[GeneratedOrder], deterministic for a seed
    batches = ndjson_batches(orders, 500)   # [(channel, NDJSON body)], for POST /v1/orders

Payloads are rendered from pre-encoded fragments shaped like ``tests/fixtures/<channel>`` (times
as each channel writes them, amounts as strings, PDD's as JSON numbers), so generation runs at
tens of thousands of orders/s on one core (about 30,000/s with the default classes on the 2-core
dev box) and a flood never waits for its generator.

Ground truth (``GeneratedOrder.label``), decided while generating; precedence top to bottom:

- ``exact_resend``: same (channel, order no) as an earlier order: a webhook retry, either the
  identical bytes or a newer copy (later ``updated_at``, often now paid). Same global id.
- ``cross_channel``: the same order no *and* the same full phone (E.164-able on both sides) as
  an earlier order of another channel of the same market (CN: taobao/jd/pdd/ministore; abroad:
  shopify/tiktok/amazon, currency permitting): one purchase relayed by two gateways. Same
  recipient, amount, SKUs and created time too. Different global id (the channel is part of it).
- ``near_dup``: the same purchase again under a new order no (a double submit, or one purchase
  relayed by two channels that render the buyer differently): same customer, same total and
  currency, same SKU multiset, created at most ``NEAR_DUP_MAX_S`` (170 s, inside the 3-minute
  ``WINDOW_S``) after the order it copies. ``variant`` names the class (``MATCHABLE_VARIANTS``):

  - ``same_rendering``: same channel, the customer rendered identically (``near_dup_rate``)
  - ``cross_render_shopify_tiktok``: a Shopify order's TikTok Shop copy, created within the
    minute: phone masked ``(+1)415****134``, the address as one ``full_address`` string (street,
    unit, city, state name, country name, postcode; no ``address_line1/2``, no
    ``address_detail``), the state's name, one line per unit
  - ``cross_render_taobao_pdd``: a (readable) Taobao order's Pinduoduo copy: ciphertext in the
    plain fields and PDD's masks beside them: ``1*********0``, ``王*明`` (a two-character name
    shows its surname only: ``王*``), places + ``文三路***号``
  - ``cross_render_taobao_jd``: its JD copy in JD's consignee layout (tests/fixtures/jd):
    province without 省/市, a municipality's district as the city, the places in front of
    ``fullAddress``, masked (``王**``, ``138****5678``, ``建国路**号``) as often as JD masks
  - ``cross_render_shopify_amazon``: its Amazon copy: no phone (Amazon gives none without the
    restricted-data token), ZIP+4
  - formatting, on the original's channel or (25 %) another of its market: ``name_order``
    (``Smith John``, ``SMITH, John``), ``case_width_spacing`` (upper case, full-width letters
    or digits, doubled spaces; ``王 小明``), ``street_abbrev`` (St/Street, Ave/Avenue, Rd/Road,
    Blvd/Boulevard), ``unit_format`` (``Apt 4`` as ``#4``, ``# 4``, ``Unit 4``, ``Apt. 4``,
    ``Apartment 4``, half the time on the street line), ``province_suffix`` (浙江省/浙江,
    上海市/上海, 杭州市/杭州 in region and city)
  - on the original's channel: ``missing_postcode`` (where the channel has one),
    ``line_per_unit`` (one line per unit instead of a quantity; not TikTok, which always does)

  Originals of CN formatting and Taobao cross-renderings are readable (unmasked) orders, so the
  difference is visible; ``variant_rate`` (default 3 %) is split over the classes by
  ``variant_mix`` (evenly by default; classes the channel mix cannot produce are left out).
- ``repeat``: an earlier customer orders again, legitimately: ``new_basket`` either outside the
  window of all their earlier orders, or inside it with a different total (so never the
  near-dup predicate); ``same_basket`` (``repeat_basket_rate``, 1 %): the very basket and
  rendering of one of their orders at least ``REPEAT_OUTSIDE_S`` (10 min) earlier, and no order
  of that basket of theirs within two windows (``ref`` = that order).
- ``household`` (``household_rate``, 1 %, split by ``household_mix``): a *different* person at
  the address of a recent order (``ref``), with the same basket, inside the window: ``family``
  (same surname, another given name, own phone), ``office`` (same street address, another
  surname and phone), ``dorm`` (same building or street, another room or unit, another
  surname). Rendered on the order's channel, or (30 %) relayed like the cross-rendered copies
  (Taobao -> PDD/JD, Shopify -> TikTok/Amazon masks and layouts). Never a duplicate.
- ``unique``: a new customer's order; nothing earlier shares its recipient.
- ``invalid`` (only with ``bad_rate`` > 0): ``bad_amount`` (order no readable, so accepted at the
  door, dead-lettered by the normalise stage) or ``malformed`` (truncated JSON: refused at the
  HTTP door as a rejected line, dead-lettered by normalise when produced to Kafka).

``duplicate_rate`` (default 5.8 %) is the share of orders re-using an earlier order no:
``cross_channel_share`` of them (default 25 %) as cross-channel copies when the mix has a second
channel of that market, the rest as exact resends. Sources of resends, copies, near-dups and
households are always ``unique``/``repeat``/``household`` orders; ``ref`` names the index of the
related earlier order. The classes added with ``variant``/``household``/``repeat_basket`` draw
last: with those three rates at 0 a seed gives exactly the orders it gave before they existed.

"Recipient" means the customer the generator drew: phones are unique per customer, so two
customers never share one, though masked renderings (``138****5678``) may collide by chance,
as in real traffic. Every time is whole seconds; ``created_at`` is epoch ms.
"""

from __future__ import annotations

import bisect
import copy
import gc
import itertools
import random
import time
from collections import deque
from collections.abc import Callable, Iterator

import msgspec

from core.model import global_order_id

WINDOW_S = 180  # the near-duplicate window the labels are defined against
NEAR_DUP_MAX_S = 170  # near-dups are generated strictly inside it, away from the edge
REPEAT_OUTSIDE_S = 600  # an "outside the window" repeat is at least this long after the last
VIP_CHANNELS = ("shopify", "ministore")  # whose payload shape carries free-form tags
LABELS = ("unique", "exact_resend", "cross_channel", "near_dup", "repeat", "household", "invalid")
# ``GeneratedOrder.variant`` per label (see the module docstring)
MATCHABLE_VARIANTS = (  # near_dup: copies of one purchase a recipient matcher should link
    "same_rendering",
    "cross_render_shopify_tiktok",
    "cross_render_taobao_pdd",
    "cross_render_taobao_jd",
    "cross_render_shopify_amazon",
    "name_order",
    "case_width_spacing",
    "street_abbrev",
    "unit_format",
    "province_suffix",
    "missing_postcode",
    "line_per_unit",
)
HOUSEHOLD_VARIANTS = ("family", "office", "dorm")  # household: another person, same address
REPEAT_VARIANTS = ("new_basket", "same_basket")  # repeat: the same person buying again
DEFAULT_VARIANT_MIX = dict.fromkeys(MATCHABLE_VARIANTS[1:], 1.0)  # ``variant_rate`` split evenly
DEFAULT_HOUSEHOLD_MIX = dict.fromkeys(HOUSEHOLD_VARIANTS, 1.0)
CROSS_RENDER_SOURCE_MAX_S = 60  # a relayed copy arrives within the minute of its original
_POSTCODE_CHANNELS = ("shopify", "tiktok", "amazon", "taobao", "ministore")

CN_CHANNELS = ("taobao", "jd", "pdd", "ministore")
INTL_CHANNELS = ("shopify", "tiktok", "amazon")
CHANNEL_COUNTRIES: dict[str, tuple[str, ...]] = {
    "taobao": ("CN",),
    "jd": ("CN",),
    "pdd": ("CN",),
    "ministore": ("CN",),
    "shopify": ("US", "US", "US", "CA", "GB"),
    "tiktok": ("US", "US", "GB"),
    "amazon": ("US", "US", "US", "JP"),
}
CURRENCY = {"CN": "CNY", "US": "USD", "CA": "CAD", "GB": "GBP", "JP": "JPY"}
_EXP = {"CNY": 2, "USD": 2, "CAD": 2, "GBP": 2, "JPY": 0}
# share of orders that arrive unpaid, per channel (PDD only releases paid orders)
_UNPAID = {
    "shopify": 0.10,
    "tiktok": 0.10,
    "amazon": 0.15,
    "taobao": 0.10,
    "jd": 0.08,
    "pdd": 0.0,
    "ministore": 0.10,
}
# share of orders whose recipient the channel masks (phone/name) or encrypts (PDD)
_MASKED = {
    "shopify": 0.15,  # no phone given
    "tiktok": 0.8,
    "amazon": 0.7,  # no phone given
    "taobao": 0.7,
    "jd": 0.6,
    "pdd": 0.8,
    "ministore": 0.3,
}
DEFAULT_MIX = {
    "taobao": 0.22,
    "jd": 0.15,
    "pdd": 0.15,
    "ministore": 0.08,
    "shopify": 0.18,
    "tiktok": 0.12,
    "amazon": 0.10,
}

_js = msgspec.json.encode


def _j(text: str) -> str:
    """A JSON string literal (with quotes) for ``text``."""
    return _js(text).decode()


def _q(text: str) -> str:
    """Quote text built from the pools below, which hold nothing JSON must escape."""
    return f'"{text}"'


def _pick(cum: list[float], r: float) -> int:
    """Index drawn from cumulative weights ``cum`` with uniform ``r`` in [0, 1)."""
    return bisect.bisect(cum, r * cum[-1])


_NLINES_CUM = list(itertools.accumulate((55, 25, 13, 7)))
_QTY_CUM = list(itertools.accumulate((80, 15, 5)))


class GeneratedOrder(msgspec.Struct, frozen=True):
    channel: str
    payload: bytes
    order_no: str
    label: str
    order_id: str = ""  # global id the service will compute (also for invalid ones)
    customer: int = -1  # recipient identity (ground truth)
    created_at: int = 0  # epoch ms
    updated_at: int = 0  # epoch ms
    total: int = 0  # minor units of ``currency``
    currency: str = ""
    skus: tuple[tuple[str, int], ...] = ()  # sorted (canonical sku, quantity) multiset
    phone: str = ""  # E.164 as rendered in the payload, "" when masked/encrypted/absent
    paid: bool = False
    ref: int = -1  # index of the earlier order this one resends / copies / near-dups / repeats
    vip: bool = False  # tagged "vip": rides the priority lane
    invalid: str = ""  # "bad_amount" | "malformed" for label "invalid"
    variant: str = ""  # the class within the label: MATCHABLE/HOUSEHOLD/REPEAT_VARIANTS


# ------------------------------------------------------------------------------------ pools

_CN_SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林罗高郑梁谢宋唐"
    "许韩冯邓曹彭曾萧田董潘袁蔡蒋余于杜叶程魏苏吕丁任沈姚卢"
)
_CN_GIVEN = (
    "伟 芳 娜 敏 静 丽 强 磊 军 洋 勇 艳 杰 娟 涛 明 超 秀英 霞 平 刚 桂英 晨 悦 子涵 欣怡 "
    "浩然 宇轩 梓萱 一诺 思远 雨桐 俊杰 佳怡 文博 嘉怡 志强 海燕 建华 晓东 丹丹"
).split()
_CN_PLACES = [
    ("上海市", "上海市", "浦东新区", "200120"),
    ("上海市", "上海市", "徐汇区", "200030"),
    ("北京市", "北京市", "朝阳区", "100020"),
    ("北京市", "北京市", "海淀区", "100080"),
    ("广东省", "深圳市", "南山区", "518057"),
    ("广东省", "广州市", "天河区", "510620"),
    ("浙江省", "杭州市", "西湖区", "310012"),
    ("江苏省", "南京市", "鼓楼区", "210008"),
    ("四川省", "成都市", "武侯区", "610041"),
    ("湖北省", "武汉市", "洪山区", "430070"),
    ("陕西省", "西安市", "雁塔区", "710061"),
    ("福建省", "厦门市", "思明区", "361001"),
]
_CN_STREETS = (
    "建国路 中山路 人民路 解放路 文三路 天府大道 科技园南路 漕溪北路 世纪大道 长安街 天河路 珞喻路"
).split()
_EN_FIRST = (
    "Jane John Maria Robert Oliver Emma Liam Olivia Noah Ava Wei Mei Hiro Yuki Aisha Lucas "
    "Sofia Mateo Chloe Ethan Priya Arjun Grace Daniel"
).split()
_EN_LAST = (
    "Doe Smith Garcia Chen Li Johnson Brown Williams Jones Miller Davis Wilson Taylor Nguyen "
    "Kim Patel Tanaka Sato Lopez Martin"
).split()
_INTL_PLACES = {
    "US": [
        ("NY", "New York", "10118"),
        ("CA", "Los Angeles", "90017"),
        ("CA", "Mountain View", "94043"),
        ("TX", "Austin", "78701"),
        ("WA", "Seattle", "98101"),
        ("IL", "Chicago", "60601"),
        ("FL", "Miami", "33101"),
    ],
    "CA": [("BC", "Vancouver", "V6E 3P3"), ("ON", "Toronto", "M5V 2T6")],
    "GB": [("England", "London", "SW1A 2AA"), ("England", "Manchester", "M1 1AE")],
    "JP": [("Tokyo", "Shibuya-ku", "150-0002"), ("Osaka", "Osaka-shi", "530-0001")],
}
_EN_STREETS = "Main St|5th Ave|Wilshire Blvd|Market St|Oak Ave|King St|High Street|Pine Rd".split(
    "|"
)
_TZ = {"CN": "+08:00", "US": "-05:00", "CA": "-08:00", "GB": "+00:00", "JP": "+09:00"}
_TZ_S = {"CN": 8 * 3600, "US": -5 * 3600, "CA": -8 * 3600, "GB": 0, "JP": 9 * 3600}
_CC = {"CN": "86", "US": "1", "CA": "1", "GB": "44", "JP": "81"}
_PRODUCTS = [
    ("MB-C200", "奔驰C200 1:18 合金车模", "Mercedes-Benz C200 1:18 Diecast"),
    ("HD-001", "加绒连帽卫衣", "Classic Hoodie"),
    ("MUG350", "陶瓷马克杯 350ml", "Ceramic Mug 350ml"),
    ("TEE", "纯棉短袖T恤", "Basic Cotton Tee"),
    ("CASE", "亚克力展示盒", "Acrylic Display Case"),
    ("SOCK", "羊毛袜 三双装", "Wool Socks 3-pack"),
    ("LAMP", "LED 护眼台灯", "LED Desk Lamp"),
    ("BAG", "帆布托特包", "Canvas Tote Bag"),
]
_VARIANTS = ["BK-S", "BK-M", "BK-L", "WH-S", "WH-M", "WH-L", "SV", "RD", "BL", "GR"]


class Customer:
    """One recipient; its JSON fragments are encoded once."""

    __slots__ = (
        "address",
        "cid",
        "city",
        "country",
        "district",
        "e164",
        "j_addr",
        "j_addr_masked",
        "j_city",
        "j_district",
        "j_name",
        "j_name_masked",
        "j_region",
        "j_street",
        "j_unit",
        "name",
        "national",
        "postcode",
        "region",
        "street",
        "unit",
    )

    def __init__(self, cid: int, country: str, rng: random.Random) -> None:
        self.cid = cid
        self.country = country
        h = rng.getrandbits(64)  # one draw, sliced: customers are most of a flood's orders
        if country == "CN":
            self.name = _CN_SURNAMES[h % len(_CN_SURNAMES)] + _CN_GIVEN[(h >> 6) % len(_CN_GIVEN)]
            # a bijection of cid keeps phones unique per customer
            suffix = (cid * 387_420_489 + 12_345) % 10**9
            self.national = f"1{'3456789'[cid % 7]}{suffix:09d}"
            place = _CN_PLACES[(h >> 12) % len(_CN_PLACES)]
            self.region, self.city, self.district, self.postcode = place
            self.street = f"{_CN_STREETS[(h >> 16) % len(_CN_STREETS)]}{(h >> 20) % 998 + 1}号"
            self.unit = f"{(h >> 30) % 29 + 1}栋{(h >> 35) % 2898 + 101}室"
            self.address = f"{self.street} {self.unit}"
            masked_name = self.name[0] + "*" * (len(self.name) - 1)
            masked_addr = self.street[:-2] + "**号"
        else:
            first, last = _EN_FIRST[h % len(_EN_FIRST)], _EN_LAST[(h >> 6) % len(_EN_LAST)]
            self.name = f"{first} {last}"
            x = (cid * 1_162_261_467 + 98_765) % 4_900_000_000
            if country in ("US", "CA"):
                self.national = (
                    f"{200 + x % 700}{200 + (x // 700) % 700}{(x // 490_000) % 10_000:04d}"
                )
            elif country == "GB":
                self.national = f"7{x % 10**9:09d}"
            else:  # JP mobile
                self.national = f"90{x % 10**8:08d}"
            places = _INTL_PLACES[country]
            self.region, self.city, self.postcode = places[(h >> 12) % len(places)]
            self.district = ""
            self.street = f"{(h >> 16) % 9998 + 1} {_EN_STREETS[(h >> 30) % len(_EN_STREETS)]}"
            self.unit = f"Apt {(h >> 34) % 79 + 1}" if (h >> 41) % 10 < 4 else ""
            self.address = f"{self.street}, {self.unit}" if self.unit else self.street
            masked_name = f"{first} {last[0]}***"
            masked_addr = self.street.split()[0] + " ****"
        self.e164 = f"+{_CC[country]}{self.national}"
        self.j_name, self.j_name_masked = _q(self.name), _q(masked_name)
        self.j_region, self.j_city, self.j_district = (
            _q(self.region),
            _q(self.city),
            _q(self.district),
        )
        self.j_street, self.j_unit = _q(self.street), _q(self.unit)
        self.j_addr, self.j_addr_masked = _q(self.address), _q(masked_addr)

    def phone_masked(self) -> str:
        n = self.national
        return f"{n[:3]}****{n[-4:]}"

    # -- other renderings of this recipient, and other people at its address ----------------

    def view(self, **changes: str) -> Customer:
        """This recipient written differently (same person, same ``cid``): ``changes`` to the
        plain fields; the address is rebuilt from street and unit unless given."""
        v = copy.copy(self)
        for name, value in changes.items():
            setattr(v, name, value)
        if "address" not in changes:
            sep = " " if v.country == "CN" else ", "
            v.address = f"{v.street}{sep}{v.unit}" if v.unit else v.street
        v._encode()
        return v

    def _encode(self) -> None:
        """JSON fragments of the plain fields (escaped: views may hold any text)."""
        if self.country == "CN":
            masked_name = self.name[0] + "*" * (len(self.name) - 1)
            masked_addr = self.street[:-2] + "**号"
        else:
            words = self.name.replace(",", " ").split()
            masked_name = f"{words[0]} {words[-1][0]}***"
            masked_addr = self.street.split()[0] + " ****"
        self.j_name, self.j_name_masked = _j(self.name), _j(masked_name)
        self.j_region, self.j_city, self.j_district = (
            _j(self.region),
            _j(self.city),
            _j(self.district),
        )
        self.j_street, self.j_unit = _j(self.street), _j(self.unit)
        self.j_addr, self.j_addr_masked = _j(self.address), _j(masked_addr)

    def housemate(self, cid: int, kind: str, rng: random.Random) -> Customer:
        """Another person at this recipient's address (own name and phone, from ``cid``):
        ``family`` (same surname), ``office`` (same street address, another surname) or
        ``dorm`` (same building or street, another room or unit, another surname)."""
        mate = Customer(cid, self.country, rng)
        for name in ("region", "city", "district", "postcode", "street", "unit"):
            setattr(mate, name, getattr(self, name))
        h = rng.getrandbits(32)
        cn = self.country == "CN"
        surname = self.name[0] if cn else self.name.split()[-1]
        given = self.name[1:] if cn else self.name.split()[0]
        pool_given = _CN_GIVEN if cn else _EN_FIRST
        pool_sur = _CN_SURNAMES if cn else _EN_LAST
        if kind == "family":
            other = pool_given[h % len(pool_given)]
            if other == given:
                other = pool_given[(h + 1) % len(pool_given)]
            mate.name = f"{surname}{other}" if cn else f"{other} {surname}"
        else:
            other_sur = pool_sur[h % len(pool_sur)]
            if other_sur == surname:
                other_sur = pool_sur[(h + 1) % len(pool_sur)]
            other = pool_given[(h >> 8) % len(pool_given)]
            mate.name = f"{other_sur}{other}" if cn else f"{other} {other_sur}"
        if kind == "dorm":
            if cn:  # same building, another room
                building, _, room = self.unit.partition("栋")
                number = int(room.rstrip("室")) if room.rstrip("室").isdigit() else 100
                mate.unit = f"{building}栋{number + (h >> 16) % 40 + 1}室"
            else:
                number = int(self.unit.split()[-1]) if self.unit else 0
                mate.unit = f"Apt {number + (h >> 16) % 40 + 1}"
        sep = " " if cn else ", "
        mate.address = f"{mate.street}{sep}{mate.unit}" if mate.unit else mate.street
        mate._encode()
        return mate


class _Spec:
    """One channel order's content; rendered (again) by the channel's renderer."""

    __slots__ = (
        "bad",
        "channel",
        "created",
        "cust",
        "disc",
        "index",
        "lid",
        "lines",
        "mask",
        "no",
        "opts",
        "paid",
        "payload",
        "ship",
        "skus",
        "sub",
        "tax",
        "total",
        "updated",
        "vip",
        "wrapped",
    )

    def __init__(self) -> None:
        self.bad = ""
        self.payload = b""
        self.index = -1
        self.vip = False
        self.opts: frozenset[str] = _PLAIN


# Rendering options of a copy (``_Spec.opts``); base orders have none:
# - ``full_address``: TikTok: the address as one ``full_address`` string (street, unit, city, state
#   name, country name, postcode), no ``address_line1/2``; state names in ``district_info``
# - ``per_unit``: one line per unit instead of a quantity (TikTok always does this)
# - ``pdd_masks``: PDD's masks beside the ciphertext: ``1*********0``, ``王*明``, and the places +
#   street name + ``***号``
# - ``jd_layout``: JD's consignee layout (tests/fixtures/jd): province without 省/市, a
#   municipality's district as ``city``, places in front of ``fullAddress``
# - ``zip4``: Amazon's ZIP+4 postcode
# - ``no_postcode``: the postcode left out (empty or absent, as the channel does it)
_PLAIN: frozenset[str] = frozenset()

_STATE_NAMES = {
    "NY": "New York",
    "CA": "California",
    "TX": "Texas",
    "WA": "Washington",
    "IL": "Illinois",
    "FL": "Florida",
    "BC": "British Columbia",
    "ON": "Ontario",
}
_COUNTRY_NAMES = {"US": "United States", "CA": "Canada", "GB": "United Kingdom", "JP": "Japan"}
_MUNICIPALITIES = ("北京市", "上海市", "天津市", "重庆市")


def _units(lines: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Lines as one line per unit."""
    return [(k, 1) for k, q in lines for _ in range(q)]


def _short_place(name: str) -> str:
    """浙江省 -> 浙江, 上海市 -> 上海, 杭州市 -> 杭州 (a district such as 西湖区 is kept)."""
    return name[:-1] if len(name) > 2 and name[-1] in "省市" else name


def _street_name(street: str) -> str:
    """文三路478号 -> 文三路."""
    return street.rstrip("号").rstrip("0123456789")


# ------------------------------------------------------------------------------------ rendering


def _money(minor: int, exp: int) -> str:
    if exp == 0:
        return f"{minor}.00"
    return f"{minor // 100}.{minor % 100:02d}"


def _pdd_num(minor: int) -> str:
    """PDD's yuan as the shortest JSON number (99.0, 199.9)."""
    return repr(minor / 100)


_TIME_CACHE: dict[tuple[int, str], str] = {}


def _fmt(ts: int, fmt: str) -> str:
    """strftime of UTC ``ts``, memoised: a flood's orders share few distinct seconds."""
    key = (ts, fmt)
    text = _TIME_CACHE.get(key)
    if text is None:
        if len(_TIME_CACHE) > 200_000:
            _TIME_CACHE.clear()
        text = _TIME_CACHE[key] = time.strftime(fmt, time.gmtime(ts))
    return text


def _local(ts: int, offset_s: int) -> str:
    return _fmt(ts + offset_s, "%Y-%m-%d %H:%M:%S")


def _iso(ts: int, country: str) -> str:
    return _fmt(ts + _TZ_S[country], "%Y-%m-%dT%H:%M:%S") + _TZ[country]


def _iso_z(ts: int) -> str:
    return _fmt(ts, "%Y-%m-%dT%H:%M:%SZ")


_SH = 8 * 3600


class _Catalog:
    """SKU codes, titles and prices in every currency; fragments cached per (channel, sku, qty)."""

    def __init__(self, sku_count: int, zipf_s: float, rng: random.Random) -> None:
        self.codes: list[str] = []
        self.titles_cn: list[str] = []
        self.titles_en: list[str] = []
        self.prices: dict[str, list[int]] = {c: [] for c in _EXP}
        for i in range(sku_count):
            code, cn, en = _PRODUCTS[i % len(_PRODUCTS)]
            var = _VARIANTS[(i // len(_PRODUCTS)) % len(_VARIANTS)]
            self.codes.append(f"{code}-{var}-{i:05d}")
            self.titles_cn.append(f"{cn} {var}")
            self.titles_en.append(f"{en}, {var}")
            usd = max(199, int(rng.lognormvariate(3.3, 0.9) * 100) // 100 * 100 + 99)
            self.prices["USD"].append(usd)
            self.prices["CAD"].append(usd * 137 // 100 // 100 * 100 + 99)
            self.prices["GBP"].append(max(99, usd * 79 // 100 // 100 * 100 + 99))
            self.prices["CNY"].append(usd * 7 // 100 * 100 + rng.choice((0, 0, 90)))
            self.prices["JPY"].append(usd * 150 // 100 // 10 * 10)
        weights = [1.0 / (k + 1) ** zipf_s for k in range(sku_count)]
        self.cum = list(itertools.accumulate(weights))
        self.frag: dict[tuple[str, int, int, str], tuple[str, ...]] = {}


class _Renderer:
    def __init__(self, cat: _Catalog) -> None:
        self.cat = cat

    def render(self, s: _Spec) -> bytes:
        return getattr(self, s.channel)(s).encode()

    def _fragment(
        self, key: tuple[str, int, int, str], make: Callable[[int, int], tuple[str, ...]]
    ) -> tuple[str, ...]:
        """The cached fragments of the line ``key`` = (channel, sku, qty, currency), made by
        ``make(sku, qty)`` on first use."""
        f = self.cat.frag.get(key)
        if f is None:
            f = self.cat.frag[key] = make(key[1], key[2])
        return f

    @staticmethod
    def _cn_recipient(c: Customer, mask: bool) -> tuple[str, str, str]:
        """JSON (name, mobile, address) as Taobao and JD render a recipient, masked or not."""
        if mask:
            return c.j_name_masked, _j(c.phone_masked()), c.j_addr_masked
        return c.j_name, f'"{c.national}"', c.j_addr

    # Amount helpers -------------------------------------------------------------------------

    def _total(self, s: _Spec, text: str) -> str:
        return s.bad if s.bad else text

    # shopify ----------------------------------------------------------------------------------

    def shopify(self, s: _Spec) -> str:
        c = s.cust
        cur = CURRENCY[c.country]
        exp = _EXP[cur]
        m = _money
        opts = s.opts
        lines = []
        for i, (k, q) in enumerate(_units(s.lines) if "per_unit" in opts else s.lines):
            f = self._fragment(
                ("shopify", k, q, cur),
                lambda k, q: (
                    '{"id":',
                    ',"admin_graphql_api_id":"gid://shopify/LineItem/x","fulfillable_quantity":'
                    f'{q},"fulfillment_service":"manual","fulfillment_status":null,'
                    f'"gift_card":false,"grams":450,"name":{_j(self.cat.titles_en[k])},'
                    f'"price":"{m(self.cat.prices[cur][k], exp)}","product_exists":true,'
                    f'"product_id":{8901234500000 + k},"properties":[],"quantity":{q},'
                    f'"requires_shipping":true,"sku":{_j(self.cat.codes[k])},"taxable":true,'
                    f'"title":{_j(self.cat.titles_en[k])},"total_discount":"0.00",'
                    f'"variant_id":{46012345000000 + k},"vendor":"OrderStream",'
                    '"tax_lines":[],"discount_allocations":[]}',
                ),
            )
            lines.append(f"{f[0]}{s.lid + i}{f[1]}")
        phone = "null" if s.mask else _j(f"+{_CC[c.country]} {c.national}")
        oid = s.no if s.no.isdigit() else f'"{s.no}"'
        num = s.lid % 100_000 + 1000
        fin = '"paid"' if s.paid else '"pending"'
        total = m(s.total, exp)
        words = c.name.replace(",", " ").split()
        zip_code = "null" if "no_postcode" in opts else f'"{c.postcode}"'
        addr = (
            f'{{"first_name":{_j(words[0])},"last_name":{_j(words[-1])},'
            f'"address1":{c.j_street},"address2":{c.j_unit},"city":{c.j_city},'
            f'"province":{c.j_region},"country_code":"{c.country}","zip":{zip_code},'
            f'"phone":{phone},"name":{c.j_name}}}'
        )
        return (
            f'{{"id":{oid},"admin_graphql_api_id":"gid://shopify/Order/{s.no}",'
            f'"app_id":580111,"buyer_accepts_marketing":false,"cancel_reason":null,'
            f'"cancelled_at":null,"confirmed":true,"contact_email":"c{c.cid}@example.com",'
            f'"created_at":"{_iso(s.created, c.country)}","currency":"{cur}",'
            f'"current_total_price":"{total}","email":"c{c.cid}@example.com",'
            f'"financial_status":{fin},"fulfillment_status":null,"name":"#{num}",'
            f'"note":null,"order_number":{num},"phone":null,'
            f'"presentment_currency":"{cur}",'
            f'"processed_at":"{_iso(s.created, c.country)}","source_name":"web",'
            f'"subtotal_price":"{m(s.sub, exp)}","tags":"{"vip" if s.vip else ""}",'
            f'"taxes_included":false,"test":false,'
            f'"total_discounts":"{m(s.disc, exp)}",'
            f'"total_line_items_price":"{m(s.sub, exp)}",'
            f'"total_outstanding":"{"0.00" if s.paid else total}",'
            f'"total_price":{self._total(s, chr(34) + total + chr(34))},'
            f'"total_shipping_price_set":{{"shop_money":{{"amount":"{m(s.ship, exp)}",'
            f'"currency_code":"{cur}"}},"presentment_money":{{"amount":"{m(s.ship, exp)}",'
            f'"currency_code":"{cur}"}}}},"total_tax":"{m(s.tax, exp)}",'
            f'"updated_at":"{_iso(s.updated, c.country)}",'
            f'"customer":{{"id":{7712345000000 + c.cid},"email":"c{c.cid}@example.com",'
            f'"phone":null,"currency":"{cur}"}},'
            f'"billing_address":{addr},"shipping_address":{addr},'
            f'"line_items":[{",".join(lines)}],"shipping_lines":[],"refunds":[],'
            f'"fulfillments":[]}}'
        )

    # tiktok ---------------------------------------------------------------------------------

    def tiktok(self, s: _Spec) -> str:
        c = s.cust
        cur = CURRENCY[c.country]
        exp = _EXP[cur]
        m = _money
        units = []
        n = 0
        for k, q in s.lines:
            f = self._fragment(
                ("tiktok", k, 1, cur),
                lambda k, q: (
                    '{"id":"',
                    f'","sku_id":"{1729384756100000000 + k}",'
                    f'"seller_sku":{_j(self.cat.codes[k])},"sku_name":"{_VARIANTS[k % 10]}",'
                    f'"product_id":"{1729384756000000000 + k}",'
                    f'"product_name":{_j(self.cat.titles_en[k])},"currency":"{cur}",'
                    f'"original_price":"{m(self.cat.prices[cur][k], exp)}",'
                    f'"sale_price":"{m(self.cat.prices[cur][k], exp)}",'
                    '"seller_discount":"0.00",'
                    '"platform_discount":"0.00","display_status":"AWAITING_SHIPMENT",'
                    '"is_gift":false,"package_status":"TO_FULFILL","sku_type":"NORMAL"}',
                ),
            )
            for _ in range(q):  # TikTok sends one line item per unit
                n += 1
                units.append(f"{f[0]}{s.lid + n}{f[1]}")
        if s.mask:
            nat = c.national
            phone = f"(+{_CC[c.country]}){nat[:3]}****{nat[-3:]}"
        else:
            phone = f"(+{_CC[c.country]}){c.national}"
        status = "AWAITING_SHIPMENT" if s.paid else "UNPAID"
        paid_time = f'"paid_time":{s.updated},' if s.paid else ""
        opts = s.opts
        postcode = "" if "no_postcode" in opts else c.postcode
        if "full_address" in opts:  # the whole address in one string, no address lines
            state = _STATE_NAMES.get(c.region, c.region)
            parts = (c.street, c.unit, c.city, state, _COUNTRY_NAMES[c.country], postcode)
            lines_json = f'"full_address":{_j(", ".join(p for p in parts if p))},'
            j_state = _j(state)
        else:
            lines_json = f'"address_line1":{c.j_street},"address_line2":{c.j_unit},'
            j_state = c.j_region
        order = (
            f'{{"id":"{s.no}","status":"{status}","order_type":"NORMAL",'
            f'"create_time":{s.created},"update_time":{s.updated},{paid_time}'
            f'"user_id":"{7494103219288700000 + c.cid}",'
            f'"buyer_email":"b{c.cid}@scs.tiktokw.us","buyer_message":"",'
            f'"delivery_type":"HOME_DELIVERY","fulfillment_type":"FULFILLMENT_BY_SELLER",'
            f'"is_cod":false,"is_on_hold_order":false,"payment_method_name":"Visa",'
            f'"payment":{{"currency":"{cur}","sub_total":"{m(s.sub - s.disc, exp)}",'
            f'"shipping_fee":"{m(s.ship, exp)}","seller_discount":"{m(s.disc, exp)}",'
            f'"platform_discount":"0.00",'
            f'"total_amount":{self._total(s, chr(34) + m(s.total, exp) + chr(34))},'
            f'"original_total_product_price":"{m(s.sub, exp)}","tax":"{m(s.tax, exp)}"}},'
            f'"recipient_address":{{"name":{c.j_name},"phone_number":"{phone}",'
            f'{lines_json}"postal_code":"{postcode}","region_code":"{c.country}",'
            f'"district_info":[{{"address_level":"L1","address_level_name":"State",'
            f'"address_name":{j_state}}},{{"address_level":"L3",'
            f'"address_level_name":"City","address_name":{c.j_city}}}]}},'
            f'"line_items":[{",".join(units)}]}}'
        )
        if s.wrapped:
            return (
                f'{{"code":0,"message":"Success","request_id":"2026{s.no}",'
                f'"data":{{"orders":[{order}]}}}}'
            )
        return order

    # amazon ---------------------------------------------------------------------------------

    def amazon(self, s: _Spec) -> str:
        c = s.cust
        cur = CURRENCY[c.country]
        exp = _EXP[cur]
        m = _money
        opts = s.opts
        items = []
        for i, (k, q) in enumerate(_units(s.lines) if "per_unit" in opts else s.lines):
            price = self.cat.prices[cur][k] * q
            extra = ""
            if i == 0:
                extra = (
                    f'"ShippingPrice":{{"CurrencyCode":"{cur}","Amount":"{m(s.ship, exp)}"}},'
                    f'"ItemTax":{{"CurrencyCode":"{cur}","Amount":"{m(s.tax, exp)}"}},'
                    f'"PromotionDiscount":{{"CurrencyCode":"{cur}","Amount":"{m(s.disc, exp)}"}},'
                )
            items.append(
                f'{{"ASIN":"B0{k:08d}","SellerSKU":{_j(self.cat.codes[k])},'
                f'"OrderItemId":"{s.lid + i}",'
                f'"Title":{_j(self.cat.titles_en[k])},"QuantityOrdered":{q},'
                f'"QuantityShipped":0,'
                f'"ItemPrice":{{"CurrencyCode":"{cur}","Amount":"{m(price, exp)}"}},{extra}'
                '"IsGift":"false","ConditionId":"New"}'
            )
        status = "Unshipped" if s.paid else "Pending"
        phone = "" if s.mask else f',"Phone":"+{_CC[c.country]} {c.national}"'
        market = "Amazon.co.jp" if c.country == "JP" else "Amazon.com"
        postcode = f',"PostalCode":"{c.postcode}"'
        if "no_postcode" in opts:
            postcode = ""
        elif "zip4" in opts:
            postcode = f',"PostalCode":"{c.postcode}-{c.cid * 7919 % 10_000:04d}"'
        return (
            f'{{"order":{{"AmazonOrderId":"{s.no}","PurchaseDate":"{_iso_z(s.created)}",'
            f'"LastUpdateDate":"{_iso_z(s.updated)}","OrderStatus":"{status}",'
            f'"FulfillmentChannel":"{"AFN" if s.wrapped else "MFN"}","SalesChannel":"{market}",'
            f'"ShipServiceLevel":"Std","OrderTotal":{{"CurrencyCode":"{cur}",'
            f'"Amount":{self._total(s, chr(34) + m(s.total, exp) + chr(34))}}},'
            f'"NumberOfItemsShipped":0,"NumberOfItemsUnshipped":{sum(q for _, q in s.lines)},'
            f'"PaymentMethod":"Other","MarketplaceId":"ATVPDKIKX0DER",'
            f'"OrderType":"StandardOrder","IsBusinessOrder":false,"IsPrime":false,'
            f'"ShippingAddress":{{"Name":{c.j_name},"AddressLine1":{c.j_street},'
            f'"AddressLine2":{c.j_unit},"City":{c.j_city},"StateOrRegion":{c.j_region}'
            f'{postcode},"CountryCode":"{c.country}"{phone}}}}},'
            f'"items":[{",".join(items)}]}}'
        )

    # taobao ---------------------------------------------------------------------------------

    def taobao(self, s: _Spec) -> str:
        c = s.cust
        m = _money
        opts = s.opts
        subs = []
        for i, (k, q) in enumerate(_units(s.lines) if "per_unit" in opts else s.lines):
            f = self._fragment(
                ("taobao", k, q, "CNY"),
                lambda k, q: (
                    '{"oid":',
                    f',"num_iid":{712345000000 + k},"sku_id":"{5123456000000 + k}",'
                    f'"outer_iid":"{self.cat.codes[k].split("-")[0]}",'
                    f'"outer_sku_id":{_j(self.cat.codes[k])},'
                    f'"title":{_j(self.cat.titles_cn[k])},'
                    f'"sku_properties_name":"颜色分类:{_VARIANTS[k % 10]}","num":{q},'
                    f'"price":"{m(self.cat.prices["CNY"][k], 2)}",'
                    f'"total_fee":"{m(self.cat.prices["CNY"][k] * q, 2)}",'
                    f'"payment":"{m(self.cat.prices["CNY"][k] * q, 2)}",'
                    '"refund_status":"NO_REFUND"}',
                ),
            )
            subs.append(f"{f[0]}{s.lid + i}{f[1]}")
        name, mobile, addr = self._cn_recipient(c, s.mask)
        status = "WAIT_SELLER_SEND_GOODS" if s.paid else "WAIT_BUYER_PAY"
        pay_time = _local(s.updated, _SH) if s.paid else ""
        tid = s.no if s.wrapped and s.no.isdigit() else f'"{s.no}"'
        trade = (
            f'{{"tid":{tid},"tid_str":"{s.no}","type":"fixed","status":"{status}",'
            f'"created":"{_local(s.created, _SH)}","modified":"{_local(s.updated, _SH)}",'
            f'"pay_time":"{pay_time}","end_time":"",'
            f'"payment":{self._total(s, chr(34) + m(s.total, 2) + chr(34))},'
            f'"total_fee":"{m(s.sub, 2)}","post_fee":"{m(s.ship, 2)}",'
            f'"discount_fee":"{m(s.disc, 2)}","adjust_fee":"0.00",'
            f'"received_payment":"0.00","seller_nick":"orderstream旗舰店",'
            f'"buyer_open_uid":"AAE{c.cid:021d}","buyer_message":"",'
            f'"receiver_name":{name},"receiver_mobile":{mobile},"receiver_phone":"",'
            f'"receiver_country":"","receiver_state":{c.j_region},"receiver_city":{c.j_city},'
            f'"receiver_district":{c.j_district},"receiver_town":"","receiver_address":{addr},'
            f'"receiver_zip":"{"" if "no_postcode" in opts else c.postcode}",'
            '"shipping_type":"express","trade_from":"WAP,WAP",'
            f'"orders":{{"order":[{",".join(subs)}]}}}}'
        )
        if s.wrapped:
            return f'{{"trade_fullinfo_get_response":{{"trade":{trade},"request_id":"r{s.no}"}}}}'
        return trade

    # jd -------------------------------------------------------------------------------------

    def jd(self, s: _Spec) -> str:
        c = s.cust
        m = _money
        opts = s.opts
        items = []
        for k, q in _units(s.lines) if "per_unit" in opts else s.lines:
            f = self._fragment(
                ("jd", k, q, "CNY"),
                lambda k, q: (
                    f'{{"skuId":"{100012000000 + k}","outerSkuId":{_j(self.cat.codes[k])},'
                    f'"skuName":{_j(self.cat.titles_cn[k])},'
                    f'"jdPrice":"{m(self.cat.prices["CNY"][k], 2)}","giftPoint":"0",'
                    f'"wareId":"{10023000000 + k}","itemTotal":"{q}","productNo":""}}',
                ),
            )
            items.append(f[0])
        name, mobile, addr = self._cn_recipient(c, s.mask)
        province, city, county = c.j_region, c.j_city, c.j_district
        if "jd_layout" in opts:  # as tests/fixtures/jd: 北京 / 朝阳区, places before the street
            short = _short_place(c.region)
            muni = c.city in _MUNICIPALITIES
            places = short + (c.district if muni else c.city + c.district)
            street = f"{_street_name(c.street)}**号" if s.mask else c.address
            addr = _j(places + street)
            province = _j(short)
            city, county = (c.j_district, '""') if muni else (c.j_city, c.j_district)
        cod = not s.paid  # JD only releases online-paid orders; unpaid ones are COD
        pay = '"1-货到付款"' if cod else '"4-在线支付"'
        confirm = "" if cod else _local(s.updated, _SH)
        return (
            f'{{"orderId":"{s.no}","venderId":"10012345","orderType":"22","payType":{pay},'
            f'"orderTotalPrice":"{m(s.sub, 2)}","orderSellerPrice":"{m(s.sub - s.disc, 2)}",'
            f'"orderPayment":{self._total(s, chr(34) + m(s.total, 2) + chr(34))},'
            f'"freightPrice":"{m(s.ship, 2)}","sellerDiscount":"{m(s.disc, 2)}",'
            f'"orderState":"WAIT_SELLER_STOCK_OUT","orderStateRemark":"等待出库",'
            f'"deliveryType":"任意时间","invoiceInfo":"不需要开具发票","orderRemark":"",'
            f'"orderStartTime":"{_local(s.created, _SH)}","orderEndTime":"",'
            f'"modified":"{_local(s.updated, _SH)}","paymentConfirmTime":"{confirm}",'
            f'"open_id_buyer":"o_jd_{c.cid:012d}","balanceUsed":"0.00",'
            f'"consigneeInfo":{{"fullname":{name},"telephone":"","mobile":{mobile},'
            f'"fullAddress":{addr},"province":{province},"city":{city},'
            f'"county":{county},"town":""}},"itemInfoList":[{",".join(items)}]}}'
        )

    # pdd ------------------------------------------------------------------------------------

    def pdd(self, s: _Spec) -> str:
        c = s.cust
        opts = s.opts
        items = []
        for k, q in _units(s.lines) if "per_unit" in opts else s.lines:
            f = self._fragment(
                ("pdd", k, q, "CNY"),
                lambda k, q: (
                    f'{{"goods_id":{512345000000 + k},"sku_id":{1234567000000 + k},'
                    f'"outer_id":{_j(self.cat.codes[k])},'
                    f'"outer_goods_id":"{self.cat.codes[k].split("-")[0]}",'
                    f'"goods_name":{_j(self.cat.titles_cn[k])},'
                    f'"goods_spec":"{_VARIANTS[k % 10]}",'
                    f'"goods_price":{_pdd_num(self.cat.prices["CNY"][k])},"goods_count":{q}}}',
                ),
            )
            items.append(f[0])
        if s.mask:  # encrypted plain fields, readable masks beside them
            name_mask, phone_mask, addr_mask = c.j_name_masked, c.phone_masked(), c.j_addr_masked
            if "pdd_masks" in opts:  # 王*明, 1*********0, 浙江省杭州市西湖区文三路***号
                n, nat = c.name, c.national
                name_mask = _j(n[0] + "*" * (len(n) - 2) + n[-1] if len(n) > 2 else n[0] + "*")
                phone_mask = f"{nat[0]}{'*' * (len(nat) - 2)}{nat[-1]}"
                addr_mask = _j(f"{c.region}{c.city}{c.district}{_street_name(c.street)}***号")
            recv = (
                f'"receiver_name":"~AgAAAAF{c.cid:012d}=~0~","receiver_name_mask":{name_mask},'
                f'"receiver_phone":"$Rz0n{c.cid:012d}==$1$",'
                f'"receiver_phone_mask":"{phone_mask}",'
                f'"receiver_address":"~AgAAAAFk{c.cid:012d}=~0~",'
                f'"receiver_address_mask":{addr_mask},'
                f'"address":"~AgAAAAFk{c.cid:012d}=~0~",'
            )
        else:
            recv = (
                f'"receiver_name":{c.j_name},"receiver_phone":"{c.national}","address":{c.j_addr},'
            )
        t = _local(s.updated, _SH)
        order = (
            f'{{"order_sn":"{s.no}","order_status":1,"refund_status":1,"confirm_status":1,'
            f'"trade_type":0,"is_pre_sale":0,"pay_type":"WEIXIN",'
            f'"created_time":"{_local(s.created, _SH)}","confirm_time":"{t}",'
            f'"pay_time":"{t}","updated_at":"{t}",'
            f'"goods_amount":{_pdd_num(s.sub)},"discount_amount":{_pdd_num(s.disc)},'
            f'"seller_discount":{_pdd_num(s.disc)},"platform_discount":0.0,'
            f'"postage":{_pdd_num(s.ship)},'
            f'"pay_amount":{self._total(s, _pdd_num(s.total))},'
            f'{recv}"country":"中国","province":{c.j_region},"city":{c.j_city},'
            f'"town":{c.j_district},"buyer_memo":"","remark":"",'
            f'"item_list":[{",".join(items)}]}}'
        )
        if s.wrapped:
            return f'{{"order_info_get_response":{{"order_info":{order}}}}}'
        return order

    # ministore ------------------------------------------------------------------------------

    def ministore(self, s: _Spec) -> str:
        c = s.cust
        m = _money
        opts = s.opts
        lines = []
        for k, q in _units(s.lines) if "per_unit" in opts else s.lines:
            f = self._fragment(
                ("ministore", k, q, "CNY"),
                lambda k, q: (
                    f'{{"sku":{_j(self.cat.codes[k])},"title":{_j(self.cat.titles_cn[k])},'
                    f'"qty":{q},"unit_price":"{m(self.cat.prices["CNY"][k], 2)}"}}',
                ),
            )
            lines.append(f[0])
        if s.mask:
            phone = c.phone_masked()
        else:
            n = c.national
            phone = f"+86 {n[:3]} {n[3:7]} {n[7:]}"
        status = "paid" if s.paid else "unpaid"
        total = m(s.total, 2)
        paid_at = f'"paid_at":"{_iso(s.updated, "CN")}",' if s.paid else ""
        return (
            f'{{"order_no":"{s.no}","created_at":"{_iso(s.created, "CN")}",'
            f'"updated_at":"{_iso(s.updated, "CN")}",{paid_at}"currency":"CNY",'
            f'"payment_status":"{status}","subtotal":"{m(s.sub, 2)}",'
            f'"shipping":"{m(s.ship, 2)}","tax":"0.00","discount":"{m(s.disc, 2)}",'
            f'"total":{self._total(s, chr(34) + total + chr(34))},'
            f'"paid":"{total if s.paid else "0.00"}","buyer_id":"wx_{c.cid:010d}",'
            f'"recipient":{{"name":{c.j_name},"phone":"{phone}","country":"CN",'
            f'"region":{c.j_region},"city":{c.j_city},"district":{c.j_district},'
            f'"address":{c.j_addr},"postcode":"{"" if "no_postcode" in opts else c.postcode}"}},'
            f'"lines":[{",".join(lines)}],"tags":[{chr(34) + "vip" + chr(34) if s.vip else ""}]}}'
        )


# ------------------------------------------------------------------------------------ variants

_NO_POSTCODE = frozenset({"no_postcode"})
_PER_UNIT = frozenset({"per_unit"})
_TARGET_OPTS = {  # what a cross-rendered copy looks like on its channel
    "tiktok": frozenset({"full_address"}),  # masked phone, one string, one line per unit
    "pdd": frozenset({"pdd_masks"}),  # ciphertext + 1*********0, 王*明, 文三路***号
    "jd": frozenset({"jd_layout"}),  # JD's places, masked (60 %) as JD does
    "amazon": frozenset({"zip4"}),  # no phone without the restricted-data token, ZIP+4
}
_RELAYS = {"shopify": ("tiktok", "amazon"), "taobao": ("pdd", "jd")}  # the cross renderings
_FULLWIDTH = {c: c + 0xFEE0 for c in range(0x21, 0x7F)}
_FULLWIDTH_DIGITS = {c: c + 0xFEE0 for c in range(0x30, 0x3A)}
_STREET_SWAP = {
    "St": "Street",
    "Street": "St",
    "Ave": "Avenue",
    "Avenue": "Ave",
    "Rd": "Road",
    "Road": "Rd",
    "Blvd": "Boulevard",
    "Boulevard": "Blvd",
}


def _name_order(c: Customer, rng: random.Random) -> Customer:
    first, last = c.name.split()[0], c.name.split()[-1]
    name = f"{last} {first}" if rng.random() < 0.5 else f"{last.upper()}, {first}"
    return c.view(name=name)


def _case_width_spacing(c: Customer, rng: random.Random) -> Customer:
    r = rng.random()
    if c.country == "CN":
        name = f"{c.name[0]} {c.name[1:]}" if r < 0.5 else f"{c.name[0]}\u3000{c.name[1:]}"
        if rng.random() < 0.5:  # full-width digits, street and unit run together
            address = f"{c.street}{c.unit}".translate(_FULLWIDTH_DIGITS)
        else:
            address = f"{c.street}  {c.unit} "
        return c.view(name=name, address=address)
    if r < 0.35:
        name = c.name.upper()
    elif r < 0.7:
        name = c.name.translate(_FULLWIDTH)
    else:
        name = "  ".join(c.name.lower().split())
    r = rng.random()
    if r < 0.5:
        street = c.street.translate(_FULLWIDTH_DIGITS)
    else:
        street = "  ".join(c.street.upper().split())
    return c.view(name=name, street=street)


def _street_abbrev(c: Customer, rng: random.Random) -> Customer:
    words = c.street.split()
    words[-1] = _STREET_SWAP.get(words[-1], words[-1])
    return c.view(street=" ".join(words))


def _unit_format(c: Customer, rng: random.Random) -> Customer:
    n = c.unit.split()[-1]
    unit = (f"#{n}", f"# {n}", f"Unit {n}", f"Apt. {n}", f"Apartment {n}")[int(rng.random() * 5)]
    if rng.random() < 0.5:  # on the street line, no second line
        return c.view(street=f"{c.street} {unit}", unit="")
    return c.view(unit=unit)


def _province_suffix(c: Customer, rng: random.Random) -> Customer:
    return c.view(region=_short_place(c.region), city=_short_place(c.city))


_FORMATS: dict[str, Callable[[Customer, random.Random], Customer]] = {
    "name_order": _name_order,
    "case_width_spacing": _case_width_spacing,
    "street_abbrev": _street_abbrev,
    "unit_format": _unit_format,
    "province_suffix": _province_suffix,
}


def _feasible(cls: str, channels: set[str]) -> bool:
    """Whether a channel mix can produce the class at all."""
    if cls.startswith("cross_render_"):
        return set(cls[len("cross_render_") :].split("_")) <= channels
    if cls in ("name_order", "street_abbrev", "unit_format"):
        return bool(channels & set(INTL_CHANNELS))
    if cls == "province_suffix":
        return bool(channels & set(CN_CHANNELS))
    if cls == "missing_postcode":
        return bool(channels & set(_POSTCODE_CHANNELS))
    if cls == "line_per_unit":
        return bool(channels - {"tiktok"})
    return True  # same_rendering, case_width_spacing, households


def _classes(
    weights: dict[str, float], known: tuple[str, ...], channels: set[str]
) -> tuple[list[str], list[float]]:
    """(classes, cumulative weights) the mix can produce, in ``known`` order."""
    unknown = set(weights) - set(known)
    if unknown:
        raise ValueError(f"unknown class(es) {sorted(unknown)}; known: {', '.join(known)}")
    if any(w < 0 for w in weights.values()):
        raise ValueError("class weights must be >= 0")
    classes = [c for c in known if weights.get(c, 0) > 0 and _feasible(c, channels)]
    return classes, list(itertools.accumulate(weights[c] for c in classes))


# ------------------------------------------------------------------------------------ generator


class OrderGenerator:
    """Deterministic for a seed; iterate it (endless) or ``generate(n)``."""

    def __init__(
        self,
        seed: int = 0,
        channel_mix: dict[str, float] | None = None,
        sku_count: int = 2000,
        zipf_s: float = 1.1,
        duplicate_rate: float = 0.058,
        near_dup_rate: float = 0.01,
        repeat_rate: float = 0.15,
        *,
        cross_channel_share: float = 0.25,
        bad_rate: float = 0.0,
        vip_rate: float = 0.0,  # share of shopify/ministore orders tagged "vip" (priority lane)
        orders_per_s: float = 20.0,  # simulated arrival rate: spaces created_at
        start: int = 1_795_363_200,  # 2026-11-23 00:00 +08:00 (unix seconds)
        variant_rate: float = 0.03,  # near-dups rendered differently (variant_mix splits it)
        variant_mix: dict[str, float] | None = None,  # MATCHABLE_VARIANTS -> weight
        household_rate: float = 0.01,  # another person at the address, same basket, in window
        household_mix: dict[str, float] | None = None,  # HOUSEHOLD_VARIANTS -> weight
        repeat_basket_rate: float = 0.01,  # the same basket again, >= REPEAT_OUTSIDE_S later
    ) -> None:
        mix = dict(channel_mix or DEFAULT_MIX)
        unknown = set(mix) - set(CHANNEL_COUNTRIES)
        if unknown:
            raise ValueError(f"unknown channel(s) {sorted(unknown)}")
        mix = {k: v for k, v in mix.items() if v > 0}
        if not mix:
            raise ValueError("channel_mix has no channel with a positive share")
        rates = (
            duplicate_rate,
            near_dup_rate,
            repeat_rate,
            bad_rate,
            variant_rate,
            household_rate,
            repeat_basket_rate,
        )
        if any(r < 0 for r in rates) or sum(rates) >= 1:
            raise ValueError("rates must be >= 0 and sum to less than 1")
        self.variant_classes, self.variant_cum = _classes(
            variant_mix if variant_mix is not None else DEFAULT_VARIANT_MIX,
            MATCHABLE_VARIANTS,
            set(mix),
        )
        self.household_classes, self.household_cum = _classes(
            household_mix if household_mix is not None else DEFAULT_HOUSEHOLD_MIX,
            HOUSEHOLD_VARIANTS,
            set(mix),
        )
        self.rng = random.Random(seed)
        self.channels = list(mix)
        self.ch_cum = list(itertools.accumulate(mix[c] for c in self.channels))
        self.cat = _Catalog(max(1, sku_count), zipf_s, self.rng)
        self.renderer = _Renderer(self.cat)
        self.dup_rate = duplicate_rate
        self.near_rate = near_dup_rate
        self.repeat_rate = repeat_rate
        self.bad_rate = bad_rate
        self.variant_rate = variant_rate if self.variant_classes else 0.0
        self.household_rate = household_rate if self.household_classes else 0.0
        self.basket_rate = repeat_basket_rate
        self.cross_share = cross_channel_share
        self.vip_rate = vip_rate
        self.orders_per_s = orders_per_s
        self.now = start
        self._frac = 0.0
        self.index = 0
        # per channel sequential order numbers from a seed-dependent start: runs do not collide
        self._seq = {c: self.rng.randrange(10**9) * 1000 for c in CHANNEL_COUNTRIES}
        self._lines = 14_021_000_000_000_000 + self.rng.randrange(10**9) * 1000
        self.customers: list[Customer] = []
        self.by_country: dict[str, list[Customer]] = {c: [] for c in CURRENCY}
        # customer id -> [(created s, total, skus)] for the near-dup predicate
        self.history: dict[int, list[tuple[int, int, tuple[tuple[str, int], ...]]]] = {}
        self.recent: deque[_Spec] = deque(maxlen=4000)  # base specs, newest last
        self.recent_plain: dict[str, deque[_Spec]] = {g: deque(maxlen=2000) for g in ("CN", "INTL")}
        # sources of the variant copies and hard negatives
        self.recent_group: dict[str, deque[_Spec]] = {g: deque(maxlen=2000) for g in ("CN", "INTL")}
        self.recent_channel: dict[str, deque[_Spec]] = {c: deque(maxlen=600) for c in self.channels}
        self.group_channels = {
            g: [c for c in self.channels if (c in CN_CHANNELS) == (g == "CN")]
            for g in ("CN", "INTL")
        }
        self.aging: deque[_Spec] = deque(maxlen=4096)  # every 8th base: same-basket repeats
        self._bases = 0
        self.copied: set[tuple[str, str]] = set()  # (channel, order no) of cross copies

    # -- helpers ---------------------------------------------------------------------------

    def _channel(self) -> str:
        return self.channels[bisect.bisect(self.ch_cum, self.rng.random() * self.ch_cum[-1])]

    def _order_no(self, channel: str) -> str:
        self._seq[channel] += 1
        n = self._seq[channel]
        if channel == "shopify":
            return str(5_000_000_000_000 + n)
        if channel == "tiktok":
            return str(576_000_000_000_000_000 + n * 1000)
        if channel == "amazon":
            d = f"{n:017d}"[-17:]
            return f"{d[:3]}-{d[3:10]}-{d[10:]}"
        if channel == "taobao":
            return str(4_000_000_000_000_000_000 + n)
        if channel == "jd":
            return str(300_000_000_000 + n % 10**11)
        if channel == "pdd":
            day = time.strftime("%y%m%d", time.gmtime(self.now + _SH))
            return f"{day}-{n % 10**15:015d}"
        return f"MS{time.strftime('%Y%m%d', time.gmtime(self.now + _SH))}-{n % 10**9:09d}"

    def _line_id(self) -> int:
        """Base of an order's line ids (channel line / sub-order / item ids), 8 per order."""
        self._lines += 8
        return self._lines

    def _new_customer(self, channel: str, register: bool = True) -> Customer:
        """A new recipient; unregistered ones (invalid orders) are never drawn for repeats."""
        country = self.rng.choice(CHANNEL_COUNTRIES[channel])
        cust = Customer(len(self.customers), country, self.rng)
        self.customers.append(cust)
        if register:
            self.by_country[country].append(cust)
        return cust

    def _cart(self, cur: str) -> tuple[list[tuple[int, int]], int]:
        rnd = self.rng.random
        cum = self.cat.cum
        lines: list[tuple[int, int]] = []
        seen = set()
        for _ in range(_pick(_NLINES_CUM, rnd()) + 1):
            k = _pick(cum, rnd())
            if k not in seen:
                seen.add(k)
                lines.append((k, _pick(_QTY_CUM, rnd()) + 1))
        prices = self.cat.prices[cur]
        return lines, sum(prices[k] * q for k, q in lines)

    def _fill_amounts(self, s: _Spec, channel: str) -> None:
        cur = CURRENCY[s.cust.country]
        lines, sub = self._cart(cur)
        h = self.rng.getrandbits(32)
        s.lines, s.sub = lines, sub
        codes = self.cat.codes
        s.skus = tuple(sorted([(codes[k], q) for k, q in lines]))
        unit = 100 if _EXP[cur] == 2 else 1
        r_ship = (h & 0xFF) / 256
        if cur == "CNY":
            s.ship = 0 if r_ship < 0.7 else (6, 8, 10)[(h >> 8) % 3] * unit
        elif cur == "JPY":
            s.ship = 0 if r_ship < 0.6 else 350
        else:
            s.ship = 0 if r_ship < 0.5 else 599
        r_disc = ((h >> 12) & 0xFF) / 256
        s.disc = 0 if r_disc < 0.7 else min(sub // 2, (5, 10, 20, 30)[(h >> 20) % 4] * unit)
        s.tax = (sub - s.disc) * 8 // 100 if cur in ("USD", "CAD") else 0
        s.total = sub - s.disc + s.ship + s.tax

    def _base_spec(self, channel: str, cust: Customer) -> _Spec:
        s = _Spec()
        s.channel = channel
        s.cust = cust
        s.no = self._order_no(channel)
        s.lid = self._line_id()
        s.created = s.updated = self.now
        h = self.rng.getrandbits(32)
        s.paid = (h & 0xFFF) / 4096 >= _UNPAID[channel]
        s.mask = ((h >> 12) & 0xFFF) / 4096 < _MASKED[channel]
        s.wrapped = (h >> 24) < 77  # ~30 % in the wrapped (API response) shape
        if self.vip_rate and channel in VIP_CHANNELS:  # no draw at 0: same orders per seed
            s.vip = self.rng.random() < self.vip_rate
        self._fill_amounts(s, channel)
        return s

    def _emit(
        self,
        s: _Spec,
        label: str,
        ref: int = -1,
        payload: bytes | None = None,
        variant: str = "",
    ) -> GeneratedOrder:
        if payload is None:
            payload = self.renderer.render(s)
        c = s.cust
        phone = ""
        if not s.mask:
            phone = c.e164
        if s.index < 0:
            s.index = self.index
        out = GeneratedOrder(
            s.channel,
            payload,
            s.no,
            label,
            order_id=global_order_id(s.channel, s.no),
            customer=c.cid,
            created_at=s.created * 1000,
            updated_at=s.updated * 1000,
            total=s.total,
            currency=CURRENCY[c.country],
            skus=s.skus,
            phone=phone,
            paid=s.paid,
            ref=ref,
            invalid=s.bad and ("malformed" if s.bad == "malformed" else "bad_amount"),
            vip=s.vip,
            variant=variant,
        )
        self.index += 1
        return out

    def _record(self, s: _Spec) -> None:
        self.history.setdefault(s.cust.cid, []).append((s.created, s.total, s.skus))

    def _remember_base(self, s: _Spec, payload: bytes) -> None:
        s.payload = payload
        self.recent.append(s)
        group = "CN" if s.channel in CN_CHANNELS else "INTL"
        if not s.mask:
            self.recent_plain[group].append(s)
        self.recent_group[group].append(s)
        self.recent_channel[s.channel].append(s)
        self._bases += 1
        if not self._bases & 7:
            self.aging.append(s)
        self._record(s)

    # -- kinds -----------------------------------------------------------------------------

    def _unique(self, channel: str) -> GeneratedOrder:
        s = self._base_spec(channel, self._new_customer(channel))
        out = self._emit(s, "unique")
        self._remember_base(s, out.payload)
        return out

    def _invalid(self, channel: str) -> GeneratedOrder:
        s = self._base_spec(channel, self._new_customer(channel, register=False))
        if self.rng.random() < 0.5:
            s.bad = "malformed"
            body = self.renderer.render(s)
            payload = body[: len(body) // 2]
        else:
            s.bad = self.rng.choice(('"12,50"', '"-5.00"', '"19.9.9"', '"¥88"'))
            payload = self.renderer.render(s)
        return self._emit(s, "invalid", payload=payload)

    def _exact_resend(self) -> GeneratedOrder | None:
        if not self.recent:
            return None
        src = self.recent[self.rng.randrange(len(self.recent))]
        if self.rng.random() < 0.4:  # a webhook retry: the identical bytes
            return self._emit(src, "exact_resend", src.index, payload=src.payload)
        # a newer copy: later updated_at, paid if it was not (PDD: always paid already)
        src.updated = max(src.updated + 1, self.now)
        if not src.paid and self.rng.random() < 0.7:
            src.paid = True
        out = self._emit(src, "exact_resend", src.index)
        src.payload = out.payload
        return out

    def _cross_channel(self, channel: str) -> GeneratedOrder | None:
        group = "CN" if channel in CN_CHANNELS else "INTL"
        pool = self.recent_plain[group]
        for _ in range(8):
            if not pool:
                return None
            src = pool[self.rng.randrange(len(pool))]
            if (
                src.channel != channel
                and src.cust.country in CHANNEL_COUNTRIES[channel]
                and (channel, src.no) not in self.copied
            ):
                break
        else:
            return None
        s = _Spec()
        for name in ("cust", "no", "created", "updated", "paid", "lines", "sub", "skus"):
            setattr(s, name, getattr(src, name))
        for name in ("ship", "disc", "tax", "total"):
            setattr(s, name, getattr(src, name))
        s.channel = channel
        self.copied.add((channel, s.no))
        s.lid = self._line_id()
        s.mask = False
        s.wrapped = False
        if channel == "pdd":
            s.paid = True  # PDD only has paid orders; the amount is what matters
        out = self._emit(s, "cross_channel", src.index)
        self._record(s)
        return out

    def _near_dup(self) -> GeneratedOrder | None:
        if not self.recent:
            return None
        src = self.recent[self.rng.randrange(len(self.recent))]
        if self.now - src.created > NEAR_DUP_MAX_S:
            src = self.recent[-1]
            if self.now - src.created > NEAR_DUP_MAX_S:
                return None
        s = _Spec()
        for name in ("cust", "lines", "sub", "skus", "ship", "disc", "tax", "total", "mask"):
            setattr(s, name, getattr(src, name))
        s.channel = src.channel
        s.no = self._order_no(src.channel)
        s.lid = self._line_id()
        s.created = s.updated = self.now
        s.paid = src.paid if src.channel == "pdd" else self.rng.random() >= _UNPAID[src.channel]
        s.wrapped = src.wrapped
        s.opts = src.opts  # a relayed original's layout too
        out = self._emit(s, "near_dup", src.index, variant="same_rendering")
        self._record(s)
        return out

    def _repeat(self, channel: str) -> GeneratedOrder | None:
        rng = self.rng
        countries = CHANNEL_COUNTRIES[channel]
        cust: Customer | None = None
        if rng.random() < 0.3 and self.recent:  # inside the window, another amount
            src = self.recent[rng.randrange(len(self.recent))]
            if src.cust.country in countries:
                cust = src.cust
        if cust is None:
            pool = self.by_country[rng.choice(countries)]
            if not pool:
                return None
            cust = pool[rng.randrange(len(pool))]
        s = self._base_spec(channel, cust)
        recent = [
            (t, total) for t, total, _ in self.history.get(cust.cid, ()) if self.now - t <= WINDOW_S
        ]
        for _ in range(20):
            if all(total != s.total for _, total in recent):
                break
            self._fill_amounts(s, channel)
        else:
            return None
        out = self._emit(s, "repeat", -1, variant="new_basket")
        self._remember_base(s, out.payload)
        return out

    # -- variant copies and hard negatives ----------------------------------------------------

    def _source(
        self, pool: deque[_Spec], max_age: int, ok: Callable[[_Spec], bool]
    ) -> _Spec | None:
        """A recent base order (at most ``max_age`` s old) that ``ok`` accepts, or None."""
        n = len(pool)
        if not n:
            return None
        rnd = self.rng.random
        span = min(n, 400)
        for _ in range(12):
            src = pool[n - 1 - int(rnd() * span)]
            if self.now - src.created <= max_age and ok(src):
                return src
        return None

    def _copy_spec(
        self, src: _Spec, channel: str, cust: Customer, mask: bool, opts: frozenset[str]
    ) -> _Spec:
        """Another order of ``src``'s basket and amounts, created now, on ``channel``."""
        s = _Spec()
        for name in ("lines", "sub", "skus", "ship", "disc", "tax", "total"):
            setattr(s, name, getattr(src, name))
        s.cust = cust
        s.channel = channel
        s.no = self._order_no(channel)
        s.lid = self._line_id()
        s.created = s.updated = self.now
        s.paid = channel == "pdd" or self.rng.random() >= _UNPAID[channel]
        s.mask = mask
        s.wrapped = src.wrapped if channel == src.channel else self.rng.random() < 0.3
        s.opts = opts
        return s

    def _variant(self) -> GeneratedOrder | None:
        cls = self.variant_classes[_pick(self.variant_cum, self.rng.random())]
        if cls == "same_rendering":
            return self._near_dup()
        made = self._make_variant(cls)
        if made is None:
            return None
        s, src = made
        out = self._emit(s, "near_dup", src.index, variant=cls)
        self._record(s)
        return out

    def _make_variant(self, cls: str) -> tuple[_Spec, _Spec] | None:
        rng = self.rng
        if cls.startswith("cross_render_"):
            source, target = cls[len("cross_render_") :].split("_")
            countries = CHANNEL_COUNTRIES[target]
            src = self._source(
                self.recent_channel[source],
                CROSS_RENDER_SOURCE_MAX_S,
                # a Taobao original the merchant can read (a masked one shows too little)
                lambda s: s.cust.country in countries and (source != "taobao" or not s.mask),
            )
            if src is None:
                return None
            opts = _TARGET_OPTS[target]
            mask = rng.random() < _MASKED["jd"] if target == "jd" else True
            return self._copy_spec(src, target, src.cust, mask, opts), src
        if cls in ("missing_postcode", "line_per_unit"):
            if cls == "missing_postcode":
                opts = _NO_POSTCODE
                ok: Callable[[_Spec], bool] = lambda s: s.channel in _POSTCODE_CHANNELS  # noqa: E731
            else:
                opts = _PER_UNIT
                ok = lambda s: s.channel != "tiktok" and any(q > 1 for _, q in s.lines)  # noqa: E731
            src = self._source(self.recent, NEAR_DUP_MAX_S, ok)
            if src is None:
                return None
            return self._copy_spec(src, src.channel, src.cust, src.mask, src.opts | opts), src
        # formatting classes: the recipient written differently, on its channel or another
        if cls == "province_suffix":
            group = "CN"
        elif cls == "case_width_spacing":
            groups = [g for g in ("CN", "INTL") if self.group_channels[g]]
            group = groups[int(rng.random() * len(groups))]
        else:
            group = "INTL"
        # a CN original must be readable for its formatting to show; INTL masks only the phone
        pool = self.recent_plain["CN"] if group == "CN" else self.recent_group["INTL"]
        need_unit = cls == "unit_format"
        src = self._source(  # not a relayed household: its layout would blur the class
            pool, NEAR_DUP_MAX_S, lambda s: not s.opts and (not need_unit or bool(s.cust.unit))
        )
        if src is None:
            return None
        view = _FORMATS[cls](src.cust, rng)
        channel = src.channel
        if rng.random() < 0.25:  # the same purchase relayed by another channel of the market
            others = [
                c
                for c in self.group_channels[group]
                if c != channel and src.cust.country in CHANNEL_COUNTRIES[c]
            ]
            if others:
                channel = others[int(rng.random() * len(others))]
        return self._copy_spec(src, channel, view, src.mask and group == "INTL", _PLAIN), src

    def _household(self) -> GeneratedOrder | None:
        """Another person at the address of a recent order, same basket, inside the window."""
        rng = self.rng
        kind = self.household_classes[_pick(self.household_cum, rng.random())]
        src = self._source(self.recent, NEAR_DUP_MAX_S, lambda s: True)
        if src is None:
            return None
        mate = src.cust.housemate(len(self.customers), kind, rng)
        self.customers.append(mate)
        self.by_country[mate.country].append(mate)
        channel, mask, opts = src.channel, rng.random() < _MASKED[src.channel], _PLAIN
        if rng.random() < 0.3:  # their order relayed like the cross-rendered copies are
            targets = [
                t
                for t in _RELAYS.get(src.channel, ())
                if t in self.recent_channel and mate.country in CHANNEL_COUNTRIES[t]
            ]
            if targets:
                channel = targets[int(rng.random() * len(targets))]
                opts = _TARGET_OPTS[channel]
                mask = rng.random() < _MASKED["jd"] if channel == "jd" else True
        s = self._copy_spec(src, channel, mate, mask, opts)
        out = self._emit(s, "household", src.index, variant=kind)
        self._remember_base(s, out.payload)
        return out

    def _repeat_same_basket(self) -> GeneratedOrder | None:
        """An earlier customer buys the same basket again, >= ``REPEAT_OUTSIDE_S`` later."""
        pool = self.aging
        n = len(pool)
        rnd = self.rng.random
        for _ in range(8):
            if not n:
                return None
            src = pool[int(rnd() * n)]
            if self.now - src.created < REPEAT_OUTSIDE_S:
                continue
            # no copy of this basket of theirs within two windows of now either
            since = self.now - 2 * WINDOW_S
            if any(
                t > since and total == src.total and skus == src.skus
                for t, total, skus in self.history.get(src.cust.cid, ())
            ):
                continue
            break
        else:
            return None
        s = self._copy_spec(src, src.channel, src.cust, src.mask, src.opts)
        out = self._emit(s, "repeat", src.index, variant="same_basket")
        self._remember_base(s, out.payload)
        return out

    # -- driving ---------------------------------------------------------------------------

    def _tick(self) -> None:
        self._frac += self.rng.expovariate(self.orders_per_s)
        whole = int(self._frac)
        self.now += whole
        self._frac -= whole

    def next(self) -> GeneratedOrder:
        self._tick()
        r = self.rng.random()
        channel = self._channel()
        out: GeneratedOrder | None = None
        if r < self.dup_rate:
            if self.rng.random() < self.cross_share:
                out = self._cross_channel(channel)
            if out is None:
                out = self._exact_resend()
        elif r < self.dup_rate + self.near_rate:
            out = self._near_dup()
        elif r < self.dup_rate + self.near_rate + self.repeat_rate:
            out = self._repeat(channel)
        elif r < self.dup_rate + self.near_rate + self.repeat_rate + self.bad_rate:
            out = self._invalid(channel)
        else:  # the classes added later draw last: at rate 0 a seed gives the orders it gave
            r -= self.dup_rate + self.near_rate + self.repeat_rate + self.bad_rate
            if r < self.variant_rate:
                out = self._variant()
            elif r < self.variant_rate + self.household_rate:
                out = self._household()
            elif r < self.variant_rate + self.household_rate + self.basket_rate:
                out = self._repeat_same_basket()
        return out if out is not None else self._unique(channel)

    def __iter__(self) -> Iterator[GeneratedOrder]:
        while True:
            yield self.next()

    def generate(self, n: int) -> list[GeneratedOrder]:
        """``n`` orders; the cyclic GC is paused meanwhile (it would cost half the time)."""
        nxt = self.next
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            return [nxt() for _ in range(n)]
        finally:
            if was_enabled:
                gc.enable()


def ndjson_batches(orders: list[GeneratedOrder], batch_size: int) -> list[tuple[str, bytes]]:
    """Group orders by channel (keeping their order) into NDJSON bodies of <= batch_size lines.

    Batches are interleaved across channels in order of their first order, so a flood sends a
    channel mix over time, not one channel after another.
    """
    by_channel: dict[str, list[bytes]] = {}
    for o in orders:
        by_channel.setdefault(o.channel, []).append(o.payload)
    per: dict[str, list[bytes]] = {
        ch: [b"\n".join(p[i : i + batch_size]) + b"\n" for i in range(0, len(p), batch_size)]
        for ch, p in by_channel.items()
    }
    out: list[tuple[str, bytes]] = []
    for group in itertools.zip_longest(*per.values()):
        for ch, body in zip(per, group, strict=True):
            if body is not None:
                out.append((ch, body))
    return out


def ndjson_batch_orders(
    orders: list[GeneratedOrder], batch_size: int
) -> list[list[GeneratedOrder]]:
    """The orders of each ``ndjson_batches`` body, same grouping and order (for bookkeeping)."""
    by_channel: dict[str, list[GeneratedOrder]] = {}
    for o in orders:
        by_channel.setdefault(o.channel, []).append(o)
    per = {
        ch: [os[i : i + batch_size] for i in range(0, len(os), batch_size)]
        for ch, os in by_channel.items()
    }
    out: list[list[GeneratedOrder]] = []
    for group in itertools.zip_longest(*per.values()):
        out += [g for g in group if g is not None]
    return out


def parse_mix(text: str) -> dict[str, float]:
    """ "shopify=0.3,tiktok=0.2" -> {"shopify": 0.3, "tiktok": 0.2}."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, _, share = part.partition("=")
        mix[name.strip().lower()] = float(share) if share else 1.0
    return mix
