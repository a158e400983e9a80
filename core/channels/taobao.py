"""Taobao / Tmall TOP ``taobao.trade.fullinfo.get`` trade object, bare or in the whole response
(``{"trade_fullinfo_get_response": {"trade": ...}}``). TOP's ``error_response`` (``code``,
``msg``, ``sub_code``, ``sub_msg``) is refused naming the error.

Times are zone-less Asia/Shanghai wall time. ``payment`` is what the buyer pays (goods after
discounts plus postage), ``total_fee`` the goods before discounts. Presale ("step") trades carry
``step_trade_status`` / ``step_paid_fee`` for the deposit phase.
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
    join_nonempty,
    lines_within,
    minor,
    normaliser,
    order_number,
    phone_pair,
    pick_sku,
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

CHANNEL = "taobao"
CURRENCY = "CNY"  # domestic trades carry no currency field
_EXP = 2

# TRADE_CLOSED is "closed after a successful refund"; TRADE_CLOSED_BY_TAOBAO is closed before
# payment. PAID_FORBID_CONSIGN is paid but held (group buys, consignment control).
TRADE_STATUS: dict[str, PaymentStatus] = {
    "TRADE_NO_CREATE_PAY": "unpaid",
    "WAIT_BUYER_PAY": "unpaid",
    "PAY_PENDING": "unpaid",
    "WAIT_PRE_AUTH_CONFIRM": "unpaid",
    "TRADE_CLOSED_BY_TAOBAO": "unpaid",
    "PAID_FORBID_CONSIGN": "paid",
    "WAIT_SELLER_SEND_GOODS": "paid",
    "SELLER_CONSIGNED_PART": "paid",
    "WAIT_BUYER_CONFIRM_GOODS": "paid",
    "TRADE_BUYER_SIGNED": "paid",
    "TRADE_FINISHED": "paid",
    "TRADE_CLOSED": "refunded",
    # presale phases, as some ISV gateways report them in ``status`` itself
    "FRONT_NOPAID_FINAL_NOPAID": "unpaid",
    "FRONT_PAID_FINAL_NOPAID": "deposit_paid",
    "FRONT_PAID_FINAL_PAID": "paid",
}
STEP_STATUS: dict[str, PaymentStatus] = {
    "FRONT_NOPAID_FINAL_NOPAID": "unpaid",
    "FRONT_PAID_FINAL_NOPAID": "deposit_paid",
    "FRONT_PAID_FINAL_PAID": "paid",
}


class _SubOrder(msgspec.Struct):
    num: int | str
    oid: int | str | None = None
    num_iid: int | str | None = None
    sku_id: str | int | None = None
    outer_sku_id: str | None = None
    outer_iid: str | None = None
    title: str | None = None
    price: Amount | None = None
    total_fee: Amount | None = None
    refund_status: str | None = None


class _Orders(msgspec.Struct):
    order: list[_SubOrder] = []


class Trade(msgspec.Struct):
    created: str
    tid: int | str | None = None
    tid_str: str | None = None
    status: str | None = None
    type: str | None = None
    modified: str | None = None
    pay_time: str | None = None
    payment: Amount | None = None
    total_fee: Amount | None = None
    post_fee: Amount | None = None
    discount_fee: Amount | None = None
    step_trade_status: str | None = None
    step_paid_fee: Amount | None = None
    receiver_name: str | None = None
    receiver_mobile: str | None = None
    receiver_phone: str | None = None
    receiver_country: str | None = None
    receiver_state: str | None = None
    receiver_city: str | None = None
    receiver_district: str | None = None
    receiver_town: str | None = None
    receiver_address: str | None = None
    receiver_zip: str | None = None
    buyer_open_uid: str | None = None
    buyer_message: str | None = None
    orders: _Orders | None = None


OrderT = TypeVar("OrderT")  # what an envelope holds: the full Trade, or the number alone


class _Resp(msgspec.Struct, Generic[OrderT]):
    trade: OrderT | None = None


class _Envelope(msgspec.Struct, Generic[OrderT]):
    """``taobao.trade.fullinfo.get``'s response, or TOP's error answer in its place."""

    trade_fullinfo_get_response: _Resp[OrderT] | None = None
    error_response: TopError | None = None


class _No(msgspec.Struct):
    tid: int | str | None = None
    tid_str: str | None = None


_WRAP = "$.trade_fullinfo_get_response.trade"
_KEYS = (b'"trade_fullinfo_get_response"', b'"error_response"')


def _unwrap(env: _Envelope[OrderT]) -> tuple[OrderT, str] | None:
    refuse_top_error(env.error_response)
    resp = env.trade_fullinfo_get_response
    return None if resp is None else (required(resp.trade, _WRAP, "trade"), _WRAP)


def _number_at(doc: _No, root: str) -> str:
    return order_number(doc.tid or doc.tid_str, root + ".tid")


order_no = enveloped_order_no_reader(
    CHANNEL, bare_or_wrapped_decoder(_No, _Envelope[_No], _KEYS, _unwrap), "$.tid", _number_at
)
_decode = bare_or_wrapped_decoder(Trade, _Envelope[Trade], _KEYS, _unwrap)


def _number(t: Trade) -> str:
    no = t.tid or t.tid_str
    return "" if no is None else str(no)


def _build(t: Trade, ctx: NormaliseContext) -> CanonicalOrder:
    no = order_number(t.tid or t.tid_str, ".tid")
    raw_status = t.status or ""
    status = status_of(TRADE_STATUS, raw_status, ".status")
    presale = t.type == "step" or bool(t.step_trade_status)
    if t.step_trade_status and status == "unpaid":
        status = status_of(STEP_STATUS, t.step_trade_status, ".step_trade_status")
    total = minor(t.payment, _EXP, ".payment", required=True)

    subs = t.orders.order if t.orders is not None else []
    if not subs:
        raise Bad(".orders.order", "trade has no sub-orders")
    lines_within(subs, ".orders.order", ctx)
    lines = []
    refunded_any = False
    for i, so in enumerate(subs):
        try:
            qty = quantity(so.num, ".num")
            sku, channel_sku = pick_sku(
                ctx, ".outer_sku_id", so.outer_sku_id, so.outer_iid, so.sku_id, so.num_iid
            )
            unit = minor(so.price, _EXP, ".price", required=True)
            line_total = minor(so.total_fee, _EXP, ".total_fee") if so.total_fee else unit * qty
        except Bad as exc:
            raise at(f".orders.order[{i}]", exc) from None
        refunded_any = refunded_any or so.refund_status == "SUCCESS"
        lines.append(
            LineItem(
                sku=sku,
                channel_sku=channel_sku,
                title=so.title or "",
                quantity=qty,
                unit_price=unit,
                line_total=line_total,
            )
        )
    if status == "paid" and refunded_any:
        status = "partially_refunded"

    if status == "deposit_paid":
        paid = minor(t.step_paid_fee, _EXP, ".step_paid_fee")
    elif status in ("paid", "partially_refunded", "refunded"):
        paid = total
    else:
        paid = 0

    country = t.receiver_country or ""
    if len(country) != 2 or not country.isascii():
        country = "CN"
    mobile = t.receiver_mobile or t.receiver_phone
    phone, masked = phone_pair(mobile, country)
    created = shanghai_ms(t.created, ".created")
    return CanonicalOrder(
        id=global_order_id(CHANNEL, no),
        channel=CHANNEL,
        channel_order_no=no,
        created_at=created,
        updated_at=shanghai_ms(t.modified, ".modified") if t.modified else created,
        paid_at=shanghai_ms_opt(t.pay_time, ".pay_time"),
        currency=CURRENCY,
        total=total,
        subtotal=minor(t.total_fee, _EXP, ".total_fee"),
        shipping=minor(t.post_fee, _EXP, ".post_fee"),
        discount=minor(t.discount_fee, _EXP, ".discount_fee"),
        paid=paid,
        payment_status=status,
        channel_status=raw_status,
        lines=lines,
        recipient=Recipient(
            name=t.receiver_name or "",
            phone=phone,
            phone_masked=masked,
            country=country,
            region=t.receiver_state or "",
            city=t.receiver_city or "",
            district=t.receiver_district or "",
            address=join_nonempty(t.receiver_town, t.receiver_address),
            postcode=t.receiver_zip or "",
        ),
        buyer_id=t.buyer_open_uid or "",
        tags=["presale"] if presale else [],
        note=t.buyer_message or "",
    )


normalise = normaliser(CHANNEL, _decode, _build, _number, order_no)
