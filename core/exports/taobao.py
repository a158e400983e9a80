"""Taobao / Tmall's order report (订单报表, 千牛 → 交易 → 批量导出), CSV or XLSX, GBK or UTF-8.

One row per order in the classic report (宝贝标题, 宝贝总数量 and 商家编码 describe its goods);
exports that list one row per sub-order repeat 订单编号, and each row becomes one line. 订单编号
is the ``tid`` of the TOP API, so an imported trade gets the same global id as its pushed copy.
收货地址 is one string, "省 市 区 街道 详细地址 (邮编)", split back into the API's fields. The
report has no modified time: the newest of created, paid, shipped and received stands in.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from core.exports._cells import (
    Columns,
    RowError,
    amount,
    latest,
    local_time,
    per_row,
    quantity,
    shanghai_ms,
)

CHANNEL = "taobao"
KEY = "tid"
ALIASES: dict[str, tuple[str, ...]] = {
    "tid": ("订单编号", "订单号", "主订单编号"),
    "status": ("订单状态",),
    "goods_due": ("买家应付货款", "应付货款"),
    "postage": ("买家应付邮费", "应付邮费"),
    "total": ("总金额",),
    "paid": ("买家实际支付金额", "实付金额"),
    "name": ("收货人姓名", "收货人"),
    "address": ("收货地址",),
    "mobile": ("联系手机", "手机"),
    "phone": ("联系电话",),
    "created": ("订单创建时间", "下单时间"),
    "pay_time": ("订单付款时间", "付款时间"),
    "shipped": ("发货时间",),
    "received": ("确认收货时间",),
    "title": ("宝贝标题", "商品标题", "标题"),
    "count": ("宝贝总数量", "购买数量", "数量"),
    "price": ("价格", "单价"),
    "outer_sku": ("商家编码", "外部系统编号", "SKU编码"),
    "message": ("买家留言",),
    "buyer": ("买家会员名",),
    "refund": ("退款金额",),
}
REQUIRED = ("tid", "status", "created", "goods_due", "count")

# The report's words for TOP's trade status codes (both are accepted).
STATUS = {
    "等待买家付款": "WAIT_BUYER_PAY",
    "买家已付款，等待卖家发货": "WAIT_SELLER_SEND_GOODS",
    "买家已付款,等待卖家发货": "WAIT_SELLER_SEND_GOODS",
    "等待卖家发货": "WAIT_SELLER_SEND_GOODS",
    "卖家已发货，等待买家确认": "WAIT_BUYER_CONFIRM_GOODS",
    "卖家已发货,等待买家确认": "WAIT_BUYER_CONFIRM_GOODS",
    "部分发货": "SELLER_CONSIGNED_PART",
    "买家已签收": "TRADE_BUYER_SIGNED",
    "交易成功": "TRADE_FINISHED",
}
_CLOSED = ("交易关闭", "TRADE_CLOSED")
_POSTCODE = re.compile(r"\s*[(（]?(\d{6})[)）]?\s*$")


def _status(cols: Columns, row: Sequence[str], paid: bool) -> str:
    raw = cols.required(row, "status")
    if raw.startswith(_CLOSED) or raw == "TRADE_CLOSED_BY_TAOBAO":
        # the report says 交易关闭 both for a refunded trade and one closed before payment
        return "TRADE_CLOSED" if paid else "TRADE_CLOSED_BY_TAOBAO"
    if raw.isupper() and raw.replace("_", "").isalpha():
        return raw
    code = STATUS.get(raw.replace(" ", ""))
    if code is None:
        raise RowError(cols.name("status"), f"{raw!r}: not a 订单状态 of the report")
    return code


def split_address(text: str) -> dict[str, str]:
    """ "省 市 区 [街道] 详细地址 (邮编)" → the TOP API's receiver fields."""
    out: dict[str, str] = {}
    found = _POSTCODE.search(text)
    if found:
        out["receiver_zip"] = found.group(1)
        text = text[: found.start()]
    parts = text.split()
    if len(parts) >= 4:
        out["receiver_state"], out["receiver_city"], out["receiver_district"] = parts[:3]
        rest = parts[3:]
        if len(rest) > 1 and rest[0].endswith(("街道", "镇", "乡")):
            out["receiver_town"] = rest.pop(0)
        out["receiver_address"] = " ".join(rest)
    else:
        out["receiver_address"] = text.strip()
    return out


def _unit(goods_due: str, count: int) -> str:
    return str((Decimal(goods_due) / count).quantize(Decimal("0.01"), ROUND_HALF_UP))


def build(cols: Columns, rows: list[tuple[int, list[str]]]) -> dict[str, Any]:
    """One trade's rows → the ``taobao.trade.fullinfo.get`` trade object."""
    _, head = rows[0]
    tid = cols.required(head, "tid")
    if not tid.isdigit():
        raise RowError(cols.name("tid"), f"{tid!r}: a Taobao 订单编号 is a number")
    created = local_time(cols, head, "created", required=True)
    pay_time = local_time(cols, head, "pay_time")
    goods_due = amount(cols, head, "goods_due", required=True)
    postage = amount(cols, head, "postage")
    if cols.text(head, "paid"):
        payment = amount(cols, head, "paid")
    elif cols.text(head, "total"):
        payment = amount(cols, head, "total")
    else:
        payment = str(Decimal(goods_due) + Decimal(postage))
    trade: dict[str, Any] = {
        "tid": tid,
        "tid_str": tid,
        "status": _status(cols, head, bool(pay_time)),
        "created": created,
        "modified": latest(
            created,
            pay_time,
            local_time(cols, head, "shipped"),
            local_time(cols, head, "received"),
        ),
        "payment": payment,
        "total_fee": goods_due,
        "post_fee": postage,
        "receiver_name": cols.text(head, "name"),
        "receiver_mobile": cols.text(head, "mobile"),
        "receiver_phone": cols.text(head, "phone"),
        "buyer_message": cols.text(head, "message"),
        **split_address(cols.text(head, "address")),
    }
    if pay_time:
        trade["pay_time"] = pay_time
    one_line = len(rows) == 1

    def sub_order(row: Sequence[str]) -> dict[str, Any]:
        num = quantity(cols, row, "count")
        if one_line:  # the classic report: the trade's goods are 买家应付货款
            due = goods_due
            price = amount(cols, row, "price") if cols.text(row, "price") else _unit(due, num)
        else:  # one row per sub-order: each prices itself
            price = amount(cols, row, "price", required=True)
            due = str(Decimal(price) * num)
        return {
            "num": num,
            "outer_sku_id": cols.text(row, "outer_sku"),
            "title": cols.text(row, "title"),
            "price": price,
            "total_fee": due,
        }

    trade["orders"] = {"order": per_row(rows, sub_order)}
    return trade


def updated_ms(trade: dict[str, Any]) -> int:
    return shanghai_ms(trade["modified"])
