"""Pinduoduo's order export (拼多多商家后台 → 订单查询 → 批量导出): one row per order.

订单号 is the API's ``order_sn``. The export words 订单状态 and 售后状态 in Chinese; both go back
to the API's codes (order_status 1/2/3, refund_status 1-4). Amounts are yuan with "(元)" in their
headers; the API's JSON numbers are sent as decimal text, which the adapter reads the same way.
The export has no modified time: the newest of created, shipped and received stands in.
"""

from __future__ import annotations

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

CHANNEL = "pdd"
KEY = "order_sn"
ALIASES: dict[str, tuple[str, ...]] = {
    "order_sn": ("订单号", "订单编号"),
    "status": ("订单状态",),
    "after_sale": ("售后状态",),
    "goods_amount": ("商品总价(元)", "商品总价"),
    "shop_discount": ("店铺优惠折扣(元)", "店铺优惠折扣"),
    "platform_discount": ("平台优惠折扣(元)", "平台优惠折扣"),
    "postage": ("邮费(元)", "邮费"),
    "pay_amount": ("用户实付金额(元)", "用户实付金额", "实付金额"),
    "count": ("商品数量(件)", "商品数量", "数量"),
    "name": ("收货人",),
    "phone": ("手机", "收货人手机号"),
    "province": ("省",),
    "city": ("市",),
    "district": ("区",),
    "street": ("街道", "详细地址"),
    "created": ("拼单成功时间", "订单成交时间", "下单时间"),
    "confirm": ("订单确认时间",),
    "shipped": ("发货时间",),
    "received": ("确认收货时间",),
    "goods_id": ("商品id", "商品ID"),
    "sku_id": ("样式ID", "SKUID"),
    "outer_id": ("商家编码-SKU维度", "商家编码"),
    "outer_goods_id": ("商家编码-商品维度",),
    "title": ("商品", "商品名称"),
    "memo": ("买家留言",),
}
REQUIRED = ("order_sn", "status", "created", "pay_amount", "count")

ORDER_STATUS = {
    "待发货": 1,
    "已发货，待签收": 2,
    "已发货待签收": 2,
    "已发货,待签收": 2,
    "已签收": 3,
}
AFTER_SALE = {
    "": 1,
    "无售后或售后取消": 1,
    "无售后": 1,
    "售后处理中": 2,
    "退款中": 3,
    "退款成功": 4,
}


def _code(cols: Columns, row: Sequence[str], field: str, table: dict[str, int]) -> int:
    raw = cols.text(row, field).replace(" ", "")
    if raw.isdigit():
        return int(raw)
    if raw.startswith("未发货，退款成功") or raw.startswith("未发货,退款成功"):
        return table.get("待发货", 4)
    code = table.get(raw)
    if code is None:
        raise RowError(cols.name(field), f"{raw!r}: not a {cols.name(field)} of the PDD export")
    return code


def build(cols: Columns, rows: list[tuple[int, list[str]]]) -> dict[str, Any]:
    """One order's row(s) → the ``pdd.order.information.get`` ``order_info`` object."""
    _, head = rows[0]
    order_sn = cols.required(head, "order_sn")
    created = local_time(cols, head, "created", required=True)
    status_text = cols.text(head, "status")
    refund = _code(cols, head, "after_sale", AFTER_SALE)
    if "退款成功" in status_text:
        refund = 4
    discount = Decimal(amount(cols, head, "shop_discount")) + Decimal(
        amount(cols, head, "platform_discount")
    )
    order: dict[str, Any] = {
        "order_sn": order_sn,
        "order_status": _code(cols, head, "status", ORDER_STATUS),
        "refund_status": refund,
        "created_time": created,
        "pay_time": created,  # an order reaches the seller once paid (拼单成功)
        "updated_at": latest(
            created, local_time(cols, head, "shipped"), local_time(cols, head, "received")
        ),
        "pay_amount": amount(cols, head, "pay_amount", required=True),
        "goods_amount": amount(cols, head, "goods_amount"),
        "postage": amount(cols, head, "postage"),
        "discount_amount": str(discount),
        "receiver_name": cols.text(head, "name"),
        "receiver_phone": cols.text(head, "phone"),
        "province": cols.text(head, "province"),
        "city": cols.text(head, "city"),
        "town": cols.text(head, "district"),
        "address": cols.text(head, "street"),
        "buyer_memo": cols.text(head, "memo"),
    }
    confirm = local_time(cols, head, "confirm")
    if confirm:
        order["confirm_time"] = confirm
    goods = Decimal(order["goods_amount"])

    def item(row: Sequence[str]) -> dict[str, Any]:
        count = quantity(cols, row, "count")
        return {
            "goods_count": count,
            "goods_price": str((goods / count).quantize(Decimal("0.01"), ROUND_HALF_UP)),
            "goods_id": cols.text(row, "goods_id"),
            "sku_id": cols.text(row, "sku_id"),
            "outer_id": cols.text(row, "outer_id"),
            "outer_goods_id": cols.text(row, "outer_goods_id"),
            "goods_name": cols.text(row, "title"),
        }

    order["item_list"] = per_row(rows, item)
    return order


def updated_ms(order: dict[str, Any]) -> int:
    return shanghai_ms(order["updated_at"])
