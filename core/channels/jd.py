"""JD (Jingdong) POP order: the ``orderInfo`` object of ``jingdong.pop.order.search`` / ``.get``,
bare or in the whole ``jingdong.pop.order.get`` response as a gateway forwards it
(``{"jingdong_pop_order_get_responce": {"code": "0", "orderDetailInfo": {"orderInfo": ...,
"apiResult": ...}}}``, JD's own spelling). JD's error answers are refused naming the error: the
gateway's ``error_response`` (``code``, ``zh_desc``, ``en_desc``), a response ``code`` other than
"0", and an ``apiResult`` with ``success`` false.

Amounts are yuan strings, times zone-less Asia/Shanghai. ``orderPayment`` is what the buyer owes;
``orderTotalPrice`` is goods before discounts. Cash-on-delivery orders (``payType`` "1-货到付款")
reach the seller unpaid and are paid only on delivery, whatever the fulfilment state says.
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
    platform_error,
    quantity,
    refuse_top_error,
    required,
    shanghai_ms,
    shanghai_ms_opt,
    status_of,
)
from core.model import CanonicalOrder, LineItem, PaymentStatus, Recipient, global_order_id

if TYPE_CHECKING:
    from core.channels import NormaliseContext

CHANNEL = "jd"
CURRENCY = "CNY"
_EXP = 2

# POP only releases online-paid orders to the seller, so every live state is paid. LOCKED and
# POP_ORDER_PAUSE are holds on a paid order (refund request, risk check). TRADE_CANCELED is
# resolved in _build: refunded if payment was confirmed, otherwise it was never paid.
ORDER_STATE: dict[str, PaymentStatus] = {
    "WAIT_SELLER_STOCK_OUT": "paid",
    "WAIT_SELLER_DELIVERY": "paid",
    "WAIT_SEND_CODE": "paid",
    "WAIT_GOODS_RECEIVE_CONFIRM": "paid",
    "FINISHED_L": "paid",
    "LOCKED": "paid",
    "POP_ORDER_PAUSE": "paid",
}


class _Consignee(msgspec.Struct):
    fullname: str | None = None
    telephone: str | None = None
    mobile: str | None = None
    fullAddress: str | None = None
    province: str | None = None
    city: str | None = None
    county: str | None = None
    town: str | None = None


class _Item(msgspec.Struct):
    itemTotal: int | str
    skuId: str | int | None = None
    outerSkuId: str | None = None
    wareId: str | int | None = None
    skuName: str | None = None
    jdPrice: Amount | None = None


class Order(msgspec.Struct):
    orderStartTime: str
    orderId: str | int | None = None
    orderState: str | None = None
    payType: str | None = None
    modified: str | None = None
    paymentConfirmTime: str | None = None
    orderTotalPrice: Amount | None = None
    orderSellerPrice: Amount | None = None
    orderPayment: Amount | None = None
    freightPrice: Amount | None = None
    sellerDiscount: Amount | None = None
    orderRemark: str | None = None
    open_id_buyer: str | None = None
    pin: str | None = None
    consigneeInfo: _Consignee | None = None
    itemInfoList: list[_Item] = []


OrderT = TypeVar("OrderT")  # what an envelope holds: the full Order, or the number alone


class _ApiResult(msgspec.Struct):
    success: bool | str | None = None
    numberCode: int | str | None = None
    englishErrCode: str | None = None
    chineseErrCode: str | None = None


class _Detail(msgspec.Struct, Generic[OrderT]):
    orderInfo: OrderT | None = None
    apiResult: _ApiResult | None = None


class _Responce(msgspec.Struct, Generic[OrderT]):
    code: str | int | None = None
    zh_desc: str | None = None
    en_desc: str | None = None
    orderDetailInfo: _Detail[OrderT] | None = None


class _Envelope(msgspec.Struct, Generic[OrderT]):
    """``jingdong.pop.order.get``'s response, or the gateway's error answer in its place."""

    jingdong_pop_order_get_responce: _Responce[OrderT] | None = None
    error_response: TopError | None = None


class _No(msgspec.Struct):
    orderId: str | int | None = None


_RESP = "$.jingdong_pop_order_get_responce"
_DETAIL = _RESP + ".orderDetailInfo"
_WRAP = _DETAIL + ".orderInfo"
_KEYS = (b'"jingdong_pop_order_get_responce"', b'"error_response"')


def _unwrap(env: _Envelope[OrderT]) -> tuple[OrderT, str] | None:
    """The order inside the response, after every error JD can answer instead of it."""
    refuse_top_error(env.error_response)
    resp = env.jingdong_pop_order_get_responce
    if resp is None:
        return None
    if resp.code not in (None, "", "0", 0):
        raise platform_error(_RESP + ".code", resp.code, resp.zh_desc, resp.en_desc)
    detail = required(resp.orderDetailInfo, _DETAIL, "orderDetailInfo")
    result = detail.apiResult
    if result is not None and result.success in (False, "false"):
        raise platform_error(
            _DETAIL + ".apiResult",
            result.numberCode,
            result.chineseErrCode,
            result.englishErrCode,
        )
    return required(detail.orderInfo, _WRAP, "orderInfo"), _WRAP


def _number_at(doc: _No, root: str) -> str:
    return order_number(doc.orderId, root + ".orderId")


order_no = enveloped_order_no_reader(
    CHANNEL, bare_or_wrapped_decoder(_No, _Envelope[_No], _KEYS, _unwrap), "$.orderId", _number_at
)
_decode = bare_or_wrapped_decoder(Order, _Envelope[Order], _KEYS, _unwrap)


def _number(o: Order) -> str:
    return "" if o.orderId is None else str(o.orderId)


def _build(o: Order, ctx: NormaliseContext) -> CanonicalOrder:
    no = order_number(o.orderId, ".orderId")
    raw_state = o.orderState or ""
    paid_at = shanghai_ms_opt(o.paymentConfirmTime, ".paymentConfirmTime")
    cod = (o.payType or "").startswith("1")
    if raw_state == "TRADE_CANCELED":
        status: PaymentStatus = "refunded" if paid_at is not None and not cod else "unpaid"
    else:
        status = status_of(ORDER_STATE, raw_state, ".orderState")
        if cod and raw_state != "FINISHED_L":
            status = "unpaid"
    total = minor(o.orderPayment, _EXP, ".orderPayment", required=True)

    if not o.itemInfoList:
        raise Bad(".itemInfoList", "order has no items")
    lines_within(o.itemInfoList, ".itemInfoList", ctx)
    lines = []
    for i, it in enumerate(o.itemInfoList):
        try:
            qty = quantity(it.itemTotal, ".itemTotal")
            sku, channel_sku = pick_sku(ctx, ".outerSkuId", it.outerSkuId, it.skuId, it.wareId)
            unit = minor(it.jdPrice, _EXP, ".jdPrice", required=True)
        except Bad as exc:
            raise at(f".itemInfoList[{i}]", exc) from None
        lines.append(
            LineItem(
                sku=sku,
                channel_sku=channel_sku,
                title=it.skuName or "",
                quantity=qty,
                unit_price=unit,
                line_total=unit * qty,  # JD reports discounts per order, not per line
            )
        )

    c = o.consigneeInfo or _Consignee()
    phone, masked = phone_pair(c.mobile or c.telephone, "CN")
    created = shanghai_ms(o.orderStartTime, ".orderStartTime")
    return CanonicalOrder(
        id=global_order_id(CHANNEL, no),
        channel=CHANNEL,
        channel_order_no=no,
        created_at=created,
        updated_at=shanghai_ms(o.modified, ".modified") if o.modified else created,
        paid_at=paid_at if status != "unpaid" else None,
        currency=CURRENCY,
        total=total,
        subtotal=minor(o.orderTotalPrice, _EXP, ".orderTotalPrice"),
        shipping=minor(o.freightPrice, _EXP, ".freightPrice"),
        discount=minor(o.sellerDiscount, _EXP, ".sellerDiscount"),
        paid=total if status in ("paid", "refunded") else 0,
        payment_status=status,
        channel_status=raw_state,
        lines=lines,
        recipient=Recipient(
            name=c.fullname or "",
            phone=phone,
            phone_masked=masked,
            country="CN",
            region=c.province or "",
            city=c.city or "",
            district=c.county or "",
            address=c.fullAddress or "",
        ),
        buyer_id=o.open_id_buyer or o.pin or "",
        tags=["cod"] if cod else [],
        note=o.orderRemark or "",
    )


normalise = normaliser(CHANNEL, _decode, _build, _number, order_no)
