"""JD POP's order export (京东商家后台 → 订单管理 → 订单导出): one row per ordered SKU.

订单号 is the POP ``orderId``, so an imported order gets the same global id as its API copy.
The export words states in Chinese and pay types by name; both are turned back into the API's
codes. 客户地址 is the consignee's full address, as the API's ``fullAddress``. The export has no
modified time: the newest of ordered, paid and completed stands in.
"""

from __future__ import annotations

from collections.abc import Sequence
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

CHANNEL = "jd"
KEY = "order_id"
ALIASES: dict[str, tuple[str, ...]] = {
    "order_id": ("订单号", "订单编号"),
    "status": ("订单状态",),
    "pay_type": ("支付方式", "付款方式"),
    "created": ("下单时间",),
    "paid_at": ("付款确认时间", "付款时间"),
    "finished": ("订单完成时间", "完成时间"),
    "total": ("订单金额", "订单总金额"),
    "payment": ("应付金额", "结算金额"),
    "freight": ("运费金额", "运费"),
    "name": ("客户姓名", "收货人"),
    "address": ("客户地址", "收货地址"),
    "mobile": ("联系电话", "手机号"),
    "remark": ("订单备注", "买家备注"),
    "sku_id": ("商品ID", "SKU"),
    "outer_sku": ("商家SKUID", "商家SKU", "货号", "商家编码"),
    "title": ("商品名称",),
    "count": ("订购数量", "数量"),
    "price": ("京东价", "单价"),
}
REQUIRED = ("order_id", "status", "created", "payment", "count")

STATE = {
    "等待出库": "WAIT_SELLER_STOCK_OUT",
    "等待发货": "WAIT_SELLER_DELIVERY",
    "等待确认收货": "WAIT_GOODS_RECEIVE_CONFIRM",
    "等待收货": "WAIT_GOODS_RECEIVE_CONFIRM",
    "完成": "FINISHED_L",
    "已完成": "FINISHED_L",
    "锁定": "LOCKED",
    "暂停": "POP_ORDER_PAUSE",
    "已取消": "TRADE_CANCELED",
    "取消": "TRADE_CANCELED",
    "(删除)已取消": "TRADE_CANCELED",
}


def _state(cols: Columns, row: Sequence[str]) -> str:
    raw = cols.required(row, "status")
    if raw.isupper() and raw.replace("_", "").isalpha():
        return raw
    code = STATE.get(raw.replace(" ", ""))
    if code is None:
        raise RowError(cols.name("status"), f"{raw!r}: not a 订单状态 of the JD export")
    return code


def _pay_type(text: str) -> str:
    if "货到付款" in text:
        return "1-货到付款"
    return "4-在线支付" if text else ""


def build(cols: Columns, rows: list[tuple[int, list[str]]]) -> dict[str, Any]:
    """One order's rows → the POP ``orderInfo`` object the jd adapter reads."""
    _, head = rows[0]
    order_id = cols.required(head, "order_id")
    if not order_id.isdigit():
        raise RowError(cols.name("order_id"), f"{order_id!r}: a JD 订单号 is a number")
    created = local_time(cols, head, "created", required=True)
    paid_at = local_time(cols, head, "paid_at")
    order: dict[str, Any] = {
        "orderId": order_id,
        "orderState": _state(cols, head),
        "payType": _pay_type(cols.text(head, "pay_type")),
        "orderStartTime": created,
        "modified": latest(created, paid_at, local_time(cols, head, "finished")),
        "orderTotalPrice": amount(cols, head, "total"),
        "orderPayment": amount(cols, head, "payment", required=True),
        "freightPrice": amount(cols, head, "freight"),
        "orderRemark": cols.text(head, "remark"),
        "consigneeInfo": {
            "fullname": cols.text(head, "name"),
            "mobile": cols.text(head, "mobile"),
            "fullAddress": cols.text(head, "address"),
        },
        "itemInfoList": per_row(
            rows,
            lambda row: {
                "itemTotal": quantity(cols, row, "count"),
                "skuId": cols.text(row, "sku_id"),
                "outerSkuId": cols.text(row, "outer_sku"),
                "skuName": cols.text(row, "title"),
                "jdPrice": amount(cols, row, "price"),
            },
        ),
    }
    if paid_at:
        order["paymentConfirmTime"] = paid_at
    return order


def updated_ms(order: dict[str, Any]) -> int:
    return shanghai_ms(order["modified"])
