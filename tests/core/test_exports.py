"""Channel exports map back to the channel's API order: the same global id, amounts, lines and
recipient as the API copy of the same order (the fixtures under tests/fixtures/<channel>)."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from core.channels import ADAPTERS, NormaliseContext
from core.exports import FORMATS, HeaderError, columns, orders
from core.exports.taobao import split_address
from core.model import CanonicalOrder
from core.skus import SkuCatalog
from streams.imports.files import open_table, sniff_encoding

FIX = Path(__file__).resolve().parents[1] / "fixtures"
EXPORTS = FIX / "exports"
CTX = NormaliseContext(skus=SkuCatalog())


def _imported(channel: str, name: str) -> list:
    table = open_table(EXPORTS / name)
    fmt = FORMATS[channel]
    try:
        return list(orders(fmt, columns(fmt, table.header), table.rows))
    finally:
        table.close()


def _normalised(channel: str, payload: bytes) -> CanonicalOrder:
    order = ADAPTERS[channel].normalise(payload, CTX)
    assert isinstance(order, CanonicalOrder), order
    return order


ALL = ("name", "phone", "phone_masked", "country", "city", "postcode")


def _same_order(a: CanonicalOrder, b: CanonicalOrder, recipient: tuple[str, ...] = ALL) -> None:
    assert a.id == b.id
    assert (a.currency, a.total, a.payment_status) == (b.currency, b.total, b.payment_status)
    assert a.created_at == b.created_at
    assert [(x.sku, x.quantity, x.line_total) for x in a.lines] == [
        (x.sku, x.quantity, x.line_total) for x in b.lines
    ]
    for field in recipient:
        got, want = getattr(a.recipient, field), getattr(b.recipient, field)
        assert got.upper() == want.upper(), field


# JD's export gives the address as one string (no city field); Amazon's All Orders report
# leaves out the recipient's name, street and phone (Amazon restricts them).
_JD = ("name", "phone_masked", "country")
_AMAZON = ("country", "city", "postcode")


@pytest.mark.parametrize(
    ("channel", "export", "api", "recipient"),
    [
        ("shopify", "shopify_orders_export.csv", "shopify/paid_webhook.json", ALL),
        ("jd", "jd_orders.csv", "jd/paid_masked.json", _JD),
        ("jd", "jd_orders.xlsx", "jd/paid_masked.json", _JD),
        ("amazon", "amazon_all_orders.txt", "amazon/unshipped_us.json", _AMAZON),
    ],
)
def test_export_is_the_api_order(
    channel: str, export: str, api: str, recipient: tuple[str, ...]
) -> None:
    (got,) = _imported(channel, export)
    assert got.payload, (got.column, got.reason)
    from_export = _normalised(channel, got.payload)
    from_api = _normalised(channel, (FIX / api).read_bytes())
    _same_order(from_export, from_api, recipient)


def test_taobao_report_gbk_with_excel_guards() -> None:
    assert sniff_encoding((EXPORTS / "taobao_订单报表.csv").read_bytes()) == "gb18030"
    (got,) = _imported("taobao", "taobao_订单报表.csv")
    order = _normalised("taobao", got.payload)
    assert order.channel_order_no == "4012345678901234570"  # ="..." guard taken off
    assert order.total == 37900 and order.payment_status == "paid"
    assert order.recipient.phone_masked == "138****5678"  # leading ' taken off
    assert (order.recipient.region, order.recipient.city, order.recipient.postcode) == (
        "上海",
        "上海市",
        "200120",
    )
    assert [(x.sku, x.quantity, x.line_total) for x in order.lines] == [("B66960123", 1, 37900)]


def test_pdd_export_is_the_api_order() -> None:
    (got,) = _imported("pdd", "pdd_orders.csv")
    a = _normalised("pdd", got.payload)
    b = _normalised("pdd", (FIX / "pdd/paid_encrypted_wrapped.json").read_bytes())
    assert a.id == b.id and a.total == b.total and a.payment_status == b.payment_status
    assert [(x.sku, x.quantity) for x in a.lines] == [(x.sku, x.quantity) for x in b.lines]
    assert a.recipient.phone_masked == b.recipient.phone_masked


def test_bad_row_names_row_and_column() -> None:
    text = (EXPORTS / "shopify_orders_export.csv").read_text()
    rows = list(csv.reader(io.StringIO(text)))
    header = rows[0]
    rows[2][header.index("Lineitem quantity")] = "two"
    rows.append(list(rows[1]))
    rows[3][header.index("Id")] = "5798723458999"
    fmt = FORMATS["shopify"]
    got = list(orders(fmt, columns(fmt, header), enumerate(rows[1:], start=2)))
    assert len(got) == 2
    bad, good = got
    assert (bad.first_row, bad.column) == (3, "Lineitem quantity")  # the line's own row
    assert "'two' is not a quantity" in bad.reason and not bad.payload and bad.raw
    assert good.payload and good.order_no == "5798723458999"


def test_wrong_export_named_by_its_missing_columns() -> None:
    fmt = FORMATS["taobao"]
    with pytest.raises(HeaderError, match="订单编号"):
        columns(fmt, ["Name", "Email", "Total"])


def test_newer_status_is_newer() -> None:
    """An export row fulfilled after the webhook's updated_at is newer; an unchanged one is not."""
    (got,) = _imported("shopify", "shopify_orders_export.csv")
    api = json.loads((FIX / "shopify/paid_webhook.json").read_bytes())
    held = _normalised("shopify", json.dumps(api).encode()).updated_at
    assert got.updated_at <= held
    text = (EXPORTS / "shopify_orders_export.csv").read_text()
    rows = list(csv.reader(io.StringIO(text)))
    rows[1][rows[0].index("Fulfilled at")] = "2026-11-24 09:00:00 -0500"
    rows[1][rows[0].index("Fulfillment Status")] = "fulfilled"
    fmt = FORMATS["shopify"]
    (later,) = orders(fmt, columns(fmt, rows[0]), enumerate(rows[1:], start=2))
    assert later.updated_at > held


@pytest.mark.parametrize(
    ("text", "want"),
    [
        (
            "浙江省 杭州市 西湖区 文三路100号 (310012)",
            {
                "receiver_zip": "310012",
                "receiver_state": "浙江省",
                "receiver_city": "杭州市",
                "receiver_district": "西湖区",
                "receiver_address": "文三路100号",
            },
        ),
        ("世纪大道100号", {"receiver_address": "世纪大道100号"}),
    ],
)
def test_taobao_address_split(text: str, want: dict[str, str]) -> None:
    assert split_address(text) == want
