"""Pinduoduo ``pdd.order.information.get`` ``order_info``, bare or in the whole response
(``{"order_info_get_response": {"order_info": ...}}``). PDD's ``error_response`` (``error_code``,
``error_msg``, ``sub_code``, ``sub_msg``; at the root, or inside the response object) is refused
naming the error.

PDD sends amounts as JSON numbers in yuan (``99.0``); they are read via their shortest repr, never
multiplied as floats. Orders only reach the seller once paid (``order_status`` 1/2/3), so payment
state comes from ``refund_status`` and, for deposit presale (``trade_type`` 1), from
``step_order_info``. The real phone is encrypted; ``receiver_phone_mask`` keeps visible digits.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Generic, TypeVar

import msgspec

from core.channels._common import (
    Amount,
    Bad,
    TopError,
    at,
    bare_or_wrapped_decoder,
    enveloped_order_no_reader,
    lines_within,
    minor,
    normaliser,
    order_number,
    phone_pair,
    pick_sku,
    quantity,
    readable,
    refuse_top_error,
    required,
    shanghai_ms,
    shanghai_ms_opt,
    status_of,
)
from core.model import CanonicalOrder, LineItem, PaymentStatus, Recipient, global_order_id

if TYPE_CHECKING:
    from core.channels import NormaliseContext

CHANNEL = "pdd"
CURRENCY = "CNY"
_EXP = 2

ORDER_STATUS: dict[int, str] = {1: "待发货", 2: "已发货待签收", 3: "已签收"}
# refund_status: 1 no after-sale (or closed), 2 after-sale in progress, 3 refunding, 4 refunded.
REFUND_STATUS: dict[int, PaymentStatus] = {1: "paid", 2: "paid", 3: "paid", 4: "refunded"}
# step_trade_status of deposit presale: 1 nothing paid, 2 deposit paid, 3 deposit and balance.
STEP_STATUS: dict[int, PaymentStatus] = {1: "unpaid", 2: "deposit_paid", 3: "paid"}


class _Item(msgspec.Struct):
    goods_count: int | str
    goods_price: Amount | None = None
    goods_id: int | str | None = None
    sku_id: int | str | None = None
    outer_id: str | None = None
    outer_goods_id: str | None = None
    goods_name: str | None = None


class _Step(msgspec.Struct):
    step_trade_status: int | None = None
    step_paid_fee: Amount | None = None


class Order(msgspec.Struct):
    created_time: str
    order_sn: str | None = None
    order_status: int | None = None
    refund_status: int = 1
    trade_type: int = 0
    is_pre_sale: int = 0
    updated_at: str | None = None
    pay_time: str | None = None
    confirm_time: str | None = None
    pay_amount: Amount | None = None
    goods_amount: Amount | None = None
    postage: Amount | None = None
    discount_amount: Amount | None = None
    receiver_name: str | None = None
    receiver_name_mask: str | None = None
    receiver_phone: str | None = None
    receiver_phone_mask: str | None = None
    province: str | None = None
    city: str | None = None
    town: str | None = None
    address: str | None = None
    receiver_address_mask: str | None = None
    buyer_memo: str | None = None
    step_order_info: _Step | None = None
    item_list: list[_Item] = []


OrderT = TypeVar("OrderT")  # what an envelope holds: the full Order, or the number alone


class _Resp(msgspec.Struct, Generic[OrderT]):
    order_info: OrderT | None = None
    error_response: TopError | None = None


class _Envelope(msgspec.Struct, Generic[OrderT]):
    """``pdd.order.information.get``'s response, or PDD's error answer in its place."""

    order_info_get_response: _Resp[OrderT] | None = None
    error_response: TopError | None = None


class _No(msgspec.Struct):
    order_sn: str | None = None


_RESP = "$.order_info_get_response"
_WRAP = _RESP + ".order_info"
_KEYS = (b'"order_info_get_response"', b'"error_response"')


def _unwrap(env: _Envelope[OrderT]) -> tuple[OrderT, str] | None:
    refuse_top_error(env.error_response)
    resp = env.order_info_get_response
    if resp is None:
        return None
    refuse_top_error(resp.error_response, _RESP + ".error_response")
    return required(resp.order_info, _WRAP, "order_info"), _WRAP


def _number_at(doc: _No, root: str) -> str:
    return order_number(doc.order_sn, root + ".order_sn")


order_no = enveloped_order_no_reader(
    CHANNEL, bare_or_wrapped_decoder(_No, _Envelope[_No], _KEYS, _unwrap), "$.order_sn", _number_at
)
_decode = bare_or_wrapped_decoder(Order, _Envelope[Order], _KEYS, _unwrap)


def _number(o: Order) -> str:
    return o.order_sn or ""


def _build(o: Order, ctx: NormaliseContext) -> CanonicalOrder:
    no = order_number(o.order_sn, ".order_sn")
    if o.order_status not in ORDER_STATUS:
        raise Bad(".order_status", f"unknown status {o.order_status!r}")
    status = status_of(REFUND_STATUS, o.refund_status, ".refund_status")  # type: ignore[arg-type]
    step = o.step_order_info
    presale = o.trade_type == 1 or o.is_pre_sale == 1
    if o.trade_type == 1 and step is not None and step.step_trade_status is not None:
        step_status = status_of(
            STEP_STATUS, step.step_trade_status, ".step_order_info.step_trade_status"
        )  # type: ignore[arg-type]
        if status == "paid":
            status = step_status
    total = minor(o.pay_amount, _EXP, ".pay_amount", required=True)

    if not o.item_list:
        raise Bad(".item_list", "order has no items")
    lines_within(o.item_list, ".item_list", ctx)
    lines = []
    for i, it in enumerate(o.item_list):
        try:
            qty = quantity(it.goods_count, ".goods_count")
            sku, channel_sku = pick_sku(
                ctx, ".outer_id", it.outer_id, it.outer_goods_id, it.sku_id, it.goods_id
            )
            unit = minor(it.goods_price, _EXP, ".goods_price", required=True)
        except Bad as exc:
            raise at(f".item_list[{i}]", exc) from None
        lines.append(
            LineItem(
                sku=sku,
                channel_sku=channel_sku,
                title=it.goods_name or "",
                quantity=qty,
                unit_price=unit,
                line_total=unit * qty,  # PDD discounts are order-level
            )
        )

    if status == "deposit_paid":
        paid = minor(step.step_paid_fee, _EXP, ".step_order_info.step_paid_fee")  # type: ignore[union-attr]
    elif status in ("paid", "refunded"):
        paid = total
    else:
        paid = 0

    phone, masked = phone_pair(o.receiver_phone, "CN")
    if not phone and not masked:
        masked = o.receiver_phone_mask or ""
    created = shanghai_ms(o.created_time, ".created_time")
    return CanonicalOrder(
        id=global_order_id(CHANNEL, no),
        channel=CHANNEL,
        channel_order_no=no,
        created_at=created,
        updated_at=shanghai_ms(o.updated_at, ".updated_at") if o.updated_at else created,
        paid_at=shanghai_ms_opt(o.pay_time, ".pay_time")
        or shanghai_ms_opt(o.confirm_time, ".confirm_time"),
        currency=CURRENCY,
        total=total,
        subtotal=minor(o.goods_amount, _EXP, ".goods_amount"),
        shipping=minor(o.postage, _EXP, ".postage"),
        discount=minor(o.discount_amount, _EXP, ".discount_amount"),
        paid=paid,
        payment_status=status,
        channel_status=str(o.order_status),
        lines=lines,
        recipient=Recipient(
            name=readable(o.receiver_name, o.receiver_name_mask),
            phone=phone,
            phone_masked=masked,
            country="CN",
            region=o.province or "",
            city=o.city or "",
            district=o.town or "",
            address=readable(o.address, o.receiver_address_mask),
        ),
        tags=["presale"] if presale else [],
        note=o.buyer_memo or "",
    )


normalise = normaliser(CHANNEL, _decode, _build, _number, order_no)
