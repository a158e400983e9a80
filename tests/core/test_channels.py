"""Every channel fixture normalises to hand-checked canonical values; bad input names its field.

Hand checks used below:
- 2026-11-23 10:00:00 Asia/Shanghai (UTC+8) = 02:00:00Z = 1795399200 s (see test_times for the
  day count); 2026-11-11 00:00:00 Shanghai = 2026-11-10 16:00:00Z = 1794326400 s.
- 2026-11-23T10:00:00-05:00 = 15:00:00Z = 1795446000 s; 2026-11-10T11:20:00-05:00 = 16:20Z.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.channels import ADAPTERS, NormaliseContext, normalise, order_no
from core.model import CanonicalOrder, LineItem, Recipient, Rejection, global_order_id
from core.skus import SkuCatalog

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"

SH_2026_11_23_1000 = 1_795_399_200_000  # "2026-11-23 10:00:00" Asia/Shanghai
SH_2026_11_11_0000 = 1_794_326_400_000  # "2026-11-11 00:00:00" Asia/Shanghai
NY_2026_11_23_1000 = 1_795_446_000_000  # "2026-11-23T10:00:00-05:00"
NY_2026_11_10_1120 = 1_794_327_600_000  # "2026-11-10T11:20:00-05:00"


@pytest.fixture
def ctx() -> NormaliseContext:
    return NormaliseContext(skus=SkuCatalog.from_toml(ROOT / "config" / "skus.toml"))


def load(channel: str, name: str) -> bytes:
    return (FIXTURES / channel / name).read_bytes()


def line(sku: str, channel_sku: str, title: str, qty: int, unit: int, total: int) -> LineItem:
    return LineItem(
        sku=sku,
        channel_sku=channel_sku,
        title=title,
        quantity=qty,
        unit_price=unit,
        line_total=total,
    )


EXPECTED: dict[tuple[str, str], dict[str, Any]] = {
    ("shopify", "paid_webhook.json"): dict(
        channel_order_no="5798723458123",
        created_at=NY_2026_11_23_1000,
        updated_at=NY_2026_11_23_1000 + 4_000,
        paid_at=NY_2026_11_23_1000,
        currency="USD",
        total=23623,
        subtotal=20900,
        shipping=999,
        tax=1724,
        discount=1000,
        paid=23623,
        payment_status="paid",
        channel_status="paid",
        lines=[
            line("MB-C200", "MB-C200", "Mercedes-Benz C200 1:18 Diecast", 1, 12900, 11900),
            line("HOODIE-BLK-M", "HD-001-BK-M", "Classic Hoodie", 2, 4500, 9000),
        ],
        recipient=Recipient(
            name="Jane Doe",
            phone="+12125550147",
            country="US",
            region="New York",
            city="New York",
            address="350 5th Ave, Apt 21B",
            postcode="10118",
        ),
        buyer_id="7712345678901",
        tags=["vip", "gift-wrap"],
        note="Please gift wrap the model car",
    ),
    ("shopify", "partially_paid_get.json"): dict(
        channel_order_no="5798723458999",
        created_at=NY_2026_11_10_1120,
        updated_at=NY_2026_11_10_1120 + 60_000,
        currency="CAD",
        total=10170,
        subtotal=9000,
        shipping=0,
        tax=1170,
        discount=0,
        paid=5000,  # total 101.70 - outstanding 51.70
        payment_status="partially_paid",
        # no merchant SKU on the line: falls back to the variant id, unknown to the catalog
        lines=[line("46012345600001", "46012345600001", "Ceramic Mug 350ml", 5, 1800, 9000)],
        recipient=Recipient(
            name="Wei Li",
            phone="+16045550188",
            country="CA",
            region="British Columbia",
            city="Vancouver",
            address="1055 W Georgia St",
            postcode="V6E 3P3",
        ),
        tags=[],
    ),
    ("tiktok", "awaiting_shipment_masked.json"): dict(
        channel_order_no="576472938475629384",
        created_at=NY_2026_11_23_1000,
        updated_at=NY_2026_11_23_1000 + 330_000,
        paid_at=NY_2026_11_23_1000 + 4_000,
        currency="USD",
        total=11831,
        subtotal=10400,
        shipping=599,
        tax=832,
        discount=600,
        paid=11831,
        payment_status="paid",
        channel_status="AWAITING_SHIPMENT",
        lines=[
            # two per-unit TikTok lines folded into one of quantity 2
            line("HOODIE-BLK-M", "HD-001-BK-M", "Classic Hoodie", 2, 4500, 8400),
            line("1729384756102930001", "1729384756102930001", "Ceramic Mug 350ml", 1, 2000, 2000),
        ],
        recipient=Recipient(
            name="Maria Garcia",
            phone="",
            phone_masked="(+1)213****123",
            country="US",
            region="California",
            city="Los Angeles",
            district="Los Angeles County",
            address="1200 Wilshire Blvd, Apt 5",
            postcode="90017",
        ),
        buyer_id="7494103219288704937",
        tags=[],
    ),
    ("tiktok", "unpaid_preorder_wrapped.json"): dict(
        channel_order_no="577001234567890123",
        created_at=NY_2026_11_23_1000,
        paid_at=None,
        currency="GBP",
        total=7900,
        subtotal=7900,
        shipping=0,
        tax=1317,
        discount=1000,
        paid=0,
        payment_status="unpaid",
        channel_status="UNPAID",
        lines=[
            line(
                "MB-C200",
                "Mercedes-Benz C200",
                "Mercedes-Benz C200 1:18 Diecast (pre-order)",
                1,
                8900,
                7900,
            ),
        ],
        recipient=Recipient(
            name="Oliver Smith",
            phone_masked="(+44)7700****23",
            country="GB",
            region="England",
            city="London",
            address="10 Downing Street",
            postcode="SW1A 2AA",
        ),
        tags=["presale"],
        note="Is this the 2026 edition?",
    ),
    ("amazon", "unshipped_us.json"): dict(
        channel_order_no="113-4928374-1029384",
        created_at=NY_2026_11_23_1000,
        updated_at=NY_2026_11_23_1000 + 330_000,
        paid_at=None,
        currency="USD",
        total=12078,
        subtotal=10998,
        shipping=500,
        tax=880,
        discount=300,
        paid=12078,
        payment_status="paid",
        channel_status="Unshipped",
        lines=[
            line(
                "MB-C200",
                "MB-C200",
                "Mercedes-Benz C200 1:18 Scale Diecast Model Car, Silver",
                2,
                2999,
                5998,
            ),
            # 50.00 for 3: unit 16.666.. rounds half-up to 16.67, the line total stays exact
            line("TEE-WHT-S", "T-001-WH-S", "Basic Cotton Tee, White, Small", 3, 1667, 4700),
        ],
        recipient=Recipient(
            name="Robert Chen",
            country="US",
            region="CA",
            city="Mountain View",
            address="1600 Amphitheatre Pkwy, Bldg 43",
            postcode="94043-1351",
        ),
        tags=[],
    ),
    ("amazon", "pending_fba_jp.json"): dict(
        channel_order_no="250-1234567-7654321",
        created_at=NY_2026_11_10_1120,
        currency="JPY",
        total=1980,
        subtotal=1980,
        paid=0,
        payment_status="unpaid",
        lines=[line("MUG-350-WHT", "MUG350W", "陶器 マグカップ 350ml ホワイト", 1, 1980, 1980)],
        recipient=Recipient(),
        tags=["fba"],
    ),
    ("taobao", "paid_masked_wrapped.json"): dict(
        channel_order_no="4012345678901234567",
        created_at=SH_2026_11_23_1000,
        updated_at=SH_2026_11_23_1000 + 31_000,
        paid_at=SH_2026_11_23_1000 + 31_000,
        currency="CNY",
        total=42800,
        subtotal=44800,
        shipping=0,
        discount=2000,
        paid=42800,
        payment_status="paid",
        channel_status="WAIT_SELLER_SEND_GOODS",
        lines=[
            line("MB-C200", "B66960123", "奔驰C200 1:18 合金车模 原厂授权", 1, 39900, 37900),
            line("712345679999", "712345679999", "车模专用亚克力展示盒", 1, 4900, 4900),
        ],
        recipient=Recipient(
            name="张*",
            phone="",
            phone_masked="138****5678",
            country="CN",
            region="上海",
            city="上海市",
            district="浦东新区",
            address="陆家嘴街道, 世纪大道**号",
            postcode="200120",
        ),
        buyer_id="AAEmXwN7AHHk0oT8oxQ2rHqP",
        tags=[],
        note="周末送货",
    ),
    ("taobao", "presale_deposit.json"): dict(
        channel_order_no="4012345678901234999",
        created_at=SH_2026_11_11_0000,
        paid_at=SH_2026_11_11_0000 + 312_000,
        currency="CNY",
        total=29900,
        subtotal=32900,
        discount=3000,
        paid=5000,
        payment_status="deposit_paid",
        channel_status="WAIT_BUYER_PAY",
        lines=[
            line(
                "HOODIE-BLK-L",
                "连帽卫衣 黑色 L码",
                "【双11预售】加绒连帽卫衣 男女同款",
                1,
                32900,
                29900,
            ),
        ],
        recipient=Recipient(
            name="李雷",
            phone="+8613912345678",
            country="CN",
            region="广东省",
            city="深圳市",
            district="南山区",
            address="粤海街道, 科技园南区高新南七道8号",
            postcode="518057",
        ),
        tags=["presale"],
    ),
    ("jd", "paid_masked.json"): dict(
        channel_order_no="302938475610",
        created_at=SH_2026_11_23_1000,
        paid_at=SH_2026_11_23_1000 + 31_000,
        currency="CNY",
        total=43800,
        subtotal=45800,
        shipping=0,
        discount=2000,
        paid=43800,
        payment_status="paid",
        channel_status="WAIT_SELLER_STOCK_OUT",
        lines=[
            line("MB-C200", "MB-C200", "奔驰C200 1:18 合金车模 银色", 1, 39900, 39900),
            line("100012349999", "100012349999", "纯棉短袖T恤 白色 S码", 2, 2950, 5900),
        ],
        recipient=Recipient(
            name="王*",
            phone_masked="138****5678",
            country="CN",
            region="北京",
            city="朝阳区",
            district="三环以内",
            address="北京朝阳区三环以内建国路**号",
        ),
        buyer_id="o_jd_2b1Q8xXc9Rrt0PzL",
        tags=[],
        note="请尽快发货",
    ),
    ("jd", "cod_unpaid.json"): dict(
        channel_order_no="302938475699",
        created_at=SH_2026_11_11_0000,
        paid_at=None,
        currency="CNY",
        total=6600,
        subtotal=5800,
        shipping=800,
        paid=0,
        payment_status="unpaid",
        channel_status="WAIT_SELLER_STOCK_OUT",
        lines=[line("MUG-350-WHT", "MUG350W", "陶瓷马克杯 350ml 白色", 2, 2900, 5800)],
        recipient=Recipient(
            name="赵敏",
            phone="+8613712345678",
            country="CN",
            region="浙江",
            city="杭州市",
            district="西湖区",
            address="浙江杭州市西湖区文三路90号",
        ),
        buyer_id="jd_7f3a2b1c",
        tags=["cod"],
    ),
    ("pdd", "paid_encrypted_wrapped.json"): dict(
        channel_order_no="261123-048573629104857",
        created_at=SH_2026_11_23_1000,
        paid_at=SH_2026_11_23_1000 + 31_000,
        currency="CNY",
        total=9900,
        subtotal=10900,
        shipping=0,
        discount=1000,
        paid=9900,
        payment_status="paid",
        channel_status="1",
        lines=[line("HOODIE-BLK-L", "HD-001-BK-L", "加绒连帽卫衣 男女同款", 1, 10900, 10900)],
        # ciphertext is dropped; the platform's masked renderings are kept
        recipient=Recipient(
            name="陈**",
            phone="",
            phone_masked="138****5678",
            country="CN",
            region="江苏省",
            city="南京市",
            district="鼓楼区",
            address="江苏省南京市鼓楼区中山路****",
        ),
        tags=[],
    ),
    ("pdd", "presale_deposit.json"): dict(
        channel_order_no="261111-000123456789012",
        created_at=SH_2026_11_11_0000,
        currency="CNY",
        total=19990,
        subtotal=19990,
        paid=2000,  # 199.9 and 20.0 as floats
        payment_status="deposit_paid",
        lines=[line("1234567800000", "1234567800000", "奔驰C200 1:18 合金车模", 1, 19990, 19990)],
        recipient=Recipient(
            name="刘洋",
            phone="+8615812345678",
            country="CN",
            region="四川省",
            city="成都市",
            district="武侯区",
            address="天府大道北段1700号",
        ),
        tags=["presale"],
    ),
    ("ministore", "paid_warehouse.json"): dict(
        channel_order_no="MS20261123-000123",
        created_at=SH_2026_11_23_1000,
        paid_at=SH_2026_11_23_1000 + 31_000,
        currency="CNY",
        total=43800,
        subtotal=45800,
        shipping=1000,
        tax=0,
        discount=3000,
        paid=43800,
        payment_status="paid",
        lines=[
            line("MB-C200", "mb c200", "奔驰C200 1:18 合金车模", 1, 39900, 36900),
            line("TEE-WHT-S", "TEE-WHT-S", "纯棉短袖T恤 白色 S码", 2, 2950, 5900),
        ],
        recipient=Recipient(
            name="孙悦",
            phone="+8613912345678",
            country="CN",
            region="上海市",
            city="上海市",
            district="徐汇区",
            address="漕溪北路398号 汇智大厦12楼",
            postcode="200030",
        ),
        buyer_id="wx_oZ3k81Ab9fQ",
        tags=["vip", "gift"],
        warehouse="SH-01",
        note="请用礼盒包装",
    ),
    ("ministore", "deposit_paid.json"): dict(
        channel_order_no="MS20261111-000007",
        created_at=SH_2026_11_11_0000,
        currency="CNY",
        total=129900,
        paid=10000,
        payment_status="deposit_paid",
        lines=[line("HOODIE-BLK-M", "Hoodie Black M", "限量款连帽卫衣 黑色 M", 3, 43300, 129900)],
        recipient=Recipient(
            name="周杰",
            phone_masked="186****4321",
            country="CN",
            region="广东省",
            city="广州市",
            district="天河区",
            address="天河路385号",
            postcode="510620",
        ),
        tags=["double11", "presale"],
        warehouse="",
    ),
}


def test_every_channel_has_two_fixtures_and_a_note() -> None:
    for channel in ADAPTERS:
        assert len(list((FIXTURES / channel).glob("*.json"))) >= 2, channel
        assert (FIXTURES / channel / "NOTE.md").is_file(), channel
        assert sum(1 for ch, _ in EXPECTED if ch == channel) >= 2, channel


@pytest.mark.parametrize(("channel", "name"), sorted(EXPECTED))
def test_fixture_normalises_exactly(channel: str, name: str, ctx: NormaliseContext) -> None:
    order = normalise(channel, load(channel, name), ctx)
    assert isinstance(order, CanonicalOrder), order
    expected = EXPECTED[channel, name]
    assert order.channel == channel
    assert order.id == global_order_id(channel, expected["channel_order_no"])
    actual = {key: getattr(order, key) for key in expected}
    assert actual == expected
    # the canonical order survives the wire format used between stages
    assert msgspec.msgpack.decode(msgspec.msgpack.encode(order), type=CanonicalOrder) == order


@pytest.mark.parametrize(("channel", "name"), sorted(EXPECTED))
def test_order_no_fast_path(channel: str, name: str) -> None:
    assert order_no(channel, load(channel, name)) == EXPECTED[channel, name]["channel_order_no"]


def test_unknown_skus_are_counted(ctx: NormaliseContext) -> None:
    normalise("jd", load("jd", "paid_masked.json"), ctx)
    assert ctx.skus.unknown == {"100012349999": 1}


# ---------------------------------------------------------------- rejections


def mutate(doc: Any, path: tuple[Any, ...], value: Any) -> Any:
    """Copy of ``doc`` with ``path`` set to ``value`` (``DELETE`` removes the key)."""
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    if value is DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return doc


DELETE = object()
TT_WRAP = ("data", "orders", 0)
TB_WRAP = ("trade_fullinfo_get_response", "trade")
PDD_WRAP = ("order_info_get_response", "order_info")

# (channel, fixture) -> [(case, path, value, expected field)]
REJECTION_CASES: dict[tuple[str, str], list[tuple[str, tuple[Any, ...], Any, str]]] = {
    ("shopify", "paid_webhook.json"): [
        ("no order no", ("id",), DELETE, "$.id"),
        ("bad amount", ("line_items", 0, "price"), "12,9.00", "$.line_items[0].price"),
        ("wrong type", ("line_items", 0, "quantity"), "one", "$.line_items[0].quantity"),
        ("unknown currency", ("currency",), "XYZ", "$.currency"),
        ("unknown status", ("financial_status",), "on_hold", "$.financial_status"),
        ("zero quantity", ("line_items", 1, "quantity"), 0, "$.line_items[1].quantity"),
        ("bad time", ("created_at",), "2026-11-23 10:00:00", "$.created_at"),
        ("no lines", ("line_items",), [], "$.line_items"),
        (
            "bad discount",
            ("line_items", 0, "discount_allocations", 0, "amount"),
            "-1",
            "$.line_items[0].discount_allocations[0].amount",
        ),
    ],
    ("shopify", "partially_paid_get.json"): [
        (
            "wrapped bad amount",
            ("order", "line_items", 0, "price"),
            "abc",
            "$.order.line_items[0].price",
        ),
        ("wrapped no order no", ("order", "id"), None, "$.order.id"),
    ],
    ("tiktok", "awaiting_shipment_masked.json"): [
        ("no order no", ("id",), "", "$.id"),
        ("bad amount", ("payment", "total_amount"), "118.311", "$.payment.total_amount"),
        ("unknown currency", ("payment", "currency"), "ABC", "$.payment.currency"),
        ("unknown status", ("status",), "LOST", "$.status"),
        ("bad time", ("create_time",), "yesterday", "$.create_time"),
        ("no lines", ("line_items",), [], "$.line_items"),
    ],
    ("tiktok", "unpaid_preorder_wrapped.json"): [
        (
            "wrapped bad line price",
            (*TT_WRAP, "line_items", 0, "sale_price"),
            "4x",
            "$.data.orders[0].line_items[0].sale_price",
        ),
        ("wrapped missing payment", (*TT_WRAP, "payment"), DELETE, "$.data.orders[0].payment"),
    ],
    ("amazon", "unshipped_us.json"): [
        ("no order no", ("order", "AmazonOrderId"), DELETE, "$.order.AmazonOrderId"),
        (
            "bad amount",
            ("items", 1, "ItemPrice", "Amount"),
            "-50.00",
            "$.items[1].ItemPrice.Amount",
        ),
        (
            "unknown currency",
            ("order", "OrderTotal", "CurrencyCode"),
            "XXX",
            "$.order.OrderTotal.CurrencyCode",
        ),
        ("unknown status", ("order", "OrderStatus"), "Lost", "$.order.OrderStatus"),
        ("zero quantity", ("items", 0, "QuantityOrdered"), 0, "$.items[0].QuantityOrdered"),
        ("bad time", ("order", "PurchaseDate"), "2026-13-01T00:00:00Z", "$.order.PurchaseDate"),
        (
            "mixed currency",
            ("items", 0, "ItemTax", "CurrencyCode"),
            "EUR",
            "$.items[0].ItemTax.CurrencyCode",
        ),
        ("no items", ("items",), [], "$.items"),
    ],
    ("taobao", "presale_deposit.json"): [
        ("no order no", ("tid",), DELETE, "$.tid"),
        ("bad amount", ("payment",), "two hundred", "$.payment"),
        ("unknown status", ("status",), "WAIT_SOMETHING", "$.status"),
        ("unknown step status", ("step_trade_status",), "FRONT_HALF_PAID", "$.step_trade_status"),
        ("zero quantity", ("orders", "order", 0, "num"), 0, "$.orders.order[0].num"),
        ("bad time", ("created",), "2026/11/11 00:00:00", "$.created"),
    ],
    ("taobao", "paid_masked_wrapped.json"): [
        (
            "wrapped bad price",
            (*TB_WRAP, "orders", "order", 1, "price"),
            "49.001",
            "$.trade_fullinfo_get_response.trade.orders.order[1].price",
        ),
        (
            "wrapped no orders",
            (*TB_WRAP, "orders"),
            DELETE,
            "$.trade_fullinfo_get_response.trade.orders.order",
        ),
    ],
    ("jd", "paid_masked.json"): [
        ("no order no", ("orderId",), DELETE, "$.orderId"),
        ("bad amount", ("orderPayment",), "438.0.0", "$.orderPayment"),
        ("unknown status", ("orderState",), "WAIT_SOMETHING", "$.orderState"),
        ("zero quantity", ("itemInfoList", 1, "itemTotal"), "0", "$.itemInfoList[1].itemTotal"),
        ("bad time", ("orderStartTime",), "2026-11-23 25:00:00", "$.orderStartTime"),
        ("missing price", ("itemInfoList", 0, "jdPrice"), None, "$.itemInfoList[0].jdPrice"),
    ],
    ("pdd", "presale_deposit.json"): [
        ("no order no", ("order_sn",), DELETE, "$.order_sn"),
        ("bad amount", ("pay_amount",), 199.999, "$.pay_amount"),
        ("unknown status", ("order_status",), 9, "$.order_status"),
        ("unknown refund status", ("refund_status",), 7, "$.refund_status"),
        ("zero quantity", ("item_list", 0, "goods_count"), 0, "$.item_list[0].goods_count"),
        ("bad time", ("created_time",), "not a time", "$.created_time"),
    ],
    ("pdd", "paid_encrypted_wrapped.json"): [
        (
            "wrapped bad price",
            (*PDD_WRAP, "item_list", 0, "goods_price"),
            "NaN",
            "$.order_info_get_response.order_info.item_list[0].goods_price",
        ),
    ],
    ("ministore", "paid_warehouse.json"): [
        ("no order no", ("order_no",), DELETE, "$.order_no"),
        ("amount as number", ("total",), 438, "$.total"),
        ("bad amount", ("lines", 0, "unit_price"), "3,99.00", "$.lines[0].unit_price"),
        ("unknown currency", ("currency",), "RMB", "$.currency"),
        ("unknown status", ("payment_status",), "cancelled", "$.payment_status"),
        ("zero quantity", ("lines", 1, "qty"), 0, "$.lines[1].qty"),
        ("bad time", ("created_at",), "2026-11-23T10:00:00", "$.created_at"),
        ("missing recipient", ("recipient",), DELETE, "$.recipient"),
    ],
    ("ministore", "deposit_paid.json"): [
        ("deposit without paid", ("paid",), DELETE, "$.paid"),
    ],
}
# (channel, fixture, case, path, value, expected field)
REJECTIONS = [(*fixture, *case) for fixture, cases in REJECTION_CASES.items() for case in cases]


@pytest.mark.parametrize(
    ("channel", "name", "case", "path", "value", "field"),
    REJECTIONS,
    ids=[f"{r[0]}-{r[2]}" for r in REJECTIONS],
)
def test_rejection_names_field(
    channel: str,
    name: str,
    case: str,
    path: tuple[Any, ...],
    value: Any,
    field: str,
    ctx: NormaliseContext,
) -> None:
    doc = mutate(json.loads(load(channel, name)), path, value)
    result = normalise(channel, json.dumps(doc, ensure_ascii=False).encode(), ctx)
    assert isinstance(result, Rejection), result
    assert (result.channel, result.field) == (channel, field), result.reason
    assert result.reason
    if "order no" not in case:
        # the sender can find the order: the number is carried even when decoding failed
        assert result.order_no == EXPECTED[channel, name]["channel_order_no"]


@pytest.mark.parametrize("channel", sorted(ADAPTERS))
def test_malformed_json(channel: str, ctx: NormaliseContext) -> None:
    for result in (normalise(channel, b'{"id": 1,', ctx), order_no(channel, b'{"id": 1,')):
        # a value naming the problem (invalid UTF-8, or the number this channel needs is absent)
        assert isinstance(result, Rejection)
        assert result.field.startswith("$")
        assert result.reason.startswith("malformed JSON: ")


@pytest.mark.parametrize(
    ("channel", "payload", "field"),
    [
        ("shopify", b"{}", "$.id"),
        ("shopify", b'{"order": {"name": "#1"}}', "$.order.id"),
        ("tiktok", b'{"data": {"orders": []}}', "$.data.orders"),
        ("amazon", b'{"items": []}', "$.order"),
        ("amazon", b'{"order": {}}', "$.order.AmazonOrderId"),
        ("taobao", b'{"trade_fullinfo_get_response": {}}', "$.trade_fullinfo_get_response.trade"),
        ("jd", b'{"orderId": ""}', "$.orderId"),
        (
            "pdd",
            b'{"order_info_get_response": {"order_info": {}}}',
            "$.order_info_get_response.order_info.order_sn",
        ),
        ("ministore", b'{"order_no": null}', "$.order_no"),
    ],
)
def test_order_no_rejections(channel: str, payload: bytes, field: str) -> None:
    result = order_no(channel, payload)
    assert isinstance(result, Rejection)
    assert result.field == field


def test_tiktok_envelope_must_hold_exactly_one_order(ctx: NormaliseContext) -> None:
    doc = json.loads(load("tiktok", "unpaid_preorder_wrapped.json"))
    doc["data"]["orders"].append(doc["data"]["orders"][0])
    result = normalise("tiktok", json.dumps(doc).encode(), ctx)
    assert isinstance(result, Rejection)
    assert result.field == "$.data.orders"


def test_unknown_channel(ctx: NormaliseContext) -> None:
    for result in (normalise("ebay", b"{}", ctx), order_no("ebay", b"{}")):
        assert result == Rejection(channel="ebay", field="channel", reason="unknown channel 'ebay'")


def test_wrapper_key_inside_a_value_does_not_confuse_the_decoder(ctx: NormaliseContext) -> None:
    doc = json.loads(load("shopify", "paid_webhook.json"))
    doc["note_attributes"] = [{"name": "order", "value": "gift"}]
    doc["note"] = 'say "order" twice'
    result = normalise("shopify", json.dumps(doc).encode(), ctx)
    assert isinstance(result, CanonicalOrder)


TB_SUB_1 = (*TB_WRAP, "orders", "order", 1)

# (channel, fixture, {path: value}, expected payment_status)
STATUS_CASES: list[tuple[str, str, dict[tuple[Any, ...], Any], str]] = [
    # TikTok CANCELLED depends on whether money moved
    (
        "tiktok",
        "awaiting_shipment_masked.json",
        {("status",): "CANCELLED", ("paid_time",): 1795446004},
        "refunded",
    ),
    (
        "tiktok",
        "awaiting_shipment_masked.json",
        {("status",): "CANCELLED", ("paid_time",): None},
        "unpaid",
    ),
    (
        "tiktok",
        "awaiting_shipment_masked.json",
        {("status",): "ON_HOLD", ("paid_time",): 1},
        "paid",
    ),
    # Taobao: one refunded sub-order of a paid trade
    (
        "taobao",
        "paid_masked_wrapped.json",
        {(*TB_SUB_1, "refund_status"): "SUCCESS"},
        "partially_refunded",
    ),
]


@pytest.mark.parametrize(("channel", "name", "changes", "expected"), STATUS_CASES)
def test_payment_status_after_change(
    channel: str,
    name: str,
    changes: dict[tuple[Any, ...], Any],
    expected: str,
    ctx: NormaliseContext,
) -> None:
    doc = json.loads(load(channel, name))
    for path, value in changes.items():
        doc = mutate(doc, path, value)
    result = normalise(channel, json.dumps(doc).encode(), ctx)
    assert isinstance(result, CanonicalOrder)
    assert result.payment_status == expected


# ---------------------------------------------------------------- never raises

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(
    fixture=st.sampled_from(sorted(EXPECTED)),
    value=JSON_VALUES,
    data=st.data(),
)
def test_any_field_replaced_by_junk_never_raises(
    fixture: tuple[str, str], value: Any, data: st.DataObject
) -> None:
    channel, name = fixture
    ctx = NormaliseContext(skus=SkuCatalog())
    doc = json.loads(load(channel, name))
    # walk down a random path of the fixture and replace what is there
    path: list[Any] = []
    node = doc
    while isinstance(node, (dict, list)) and node and data.draw(st.booleans()):
        key = data.draw(st.sampled_from(list(node) if isinstance(node, dict) else range(len(node))))
        path.append(key)
        node = node[key]
    if path:
        doc = mutate(doc, tuple(path), value)
    else:
        doc = value
    payload = json.dumps(doc).encode()
    result = normalise(channel, payload, ctx)
    assert isinstance(result, (CanonicalOrder, Rejection))
    if isinstance(result, Rejection):
        assert result.field.startswith("$") and "internal error" not in result.reason
    assert isinstance(order_no(channel, payload), (str, Rejection))


@settings(max_examples=200, deadline=None)
@given(channel=st.sampled_from(sorted(ADAPTERS)), payload=st.binary(max_size=64))
def test_random_bytes_never_raise(channel: str, payload: bytes) -> None:
    ctx = NormaliseContext(skus=SkuCatalog())
    assert isinstance(normalise(channel, payload, ctx), Rejection | CanonicalOrder)
    assert isinstance(order_no(channel, payload), str | Rejection)


@pytest.mark.parametrize("channel", sorted(ADAPTERS))
@pytest.mark.parametrize(
    "payload",
    [
        b'{"id": "ab\xe5\xa5"}',
        b'{"order_no": "\xe5\xa5"}',
        b'{"order_sn": "\xff"}',
        b'{"tid": "\xe5"}',
    ],
)
def test_invalid_utf8_is_a_rejection_not_an_exception(channel: str, payload: bytes) -> None:
    ctx = NormaliseContext(skus=SkuCatalog())
    for result in (ADAPTERS[channel].order_no(payload), ADAPTERS[channel].normalise(payload, ctx)):
        # a value naming the problem (invalid UTF-8, or the number this channel needs is absent)
        assert isinstance(result, Rejection)
        assert result.field.startswith("$")
