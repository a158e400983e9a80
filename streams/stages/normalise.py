"""Normalise stage: raw channel payloads -> canonical orders, or dead letters with a reason.

Pure functions over one raw message; the intake agent runs them on ``orders.raw`` and goes on to
exact dedup in the same hop. Input is either our journal envelopes or what a gateway produced
directly: one JSON order, or an NDJSON batch, per message, with the channel in a ``channel``
header or as the key prefix ``channel:order_no``.
"""

from __future__ import annotations

import msgspec

from core.channels import NormaliseContext, normalise
from core.dedup import dedup_facts
from core.framing import split_orders
from core.model import CanonicalOrder, Rejection, global_order_id
from streams.kafka.envelope import (
    ENVELOPE_HEADER,
    RAW_CODEC,
    CanonicalRecord,
    DeadLetter,
    RawRecord,
)

STAGE = "normalise"


def gateway_records(
    key: bytes | None, value: bytes, headers: dict[str, bytes], timestamp_ms: int, where: str = ""
) -> tuple[list[RawRecord], DeadLetter | None]:
    """A gateway's message: one order or NDJSON lines; the channel from header or key.

    ``where`` names the message (epoch, partition, offset) so each line gets a copy ref.
    """
    channel = (headers.get("channel") or headers.get("x-channel") or b"").decode("utf-8", "replace")
    if not channel and key and b":" in key:
        channel = key.split(b":", 1)[0].decode("utf-8", "replace")
    if not channel:
        return [], DeadLetter(
            stage=STAGE,
            channel="",
            field="header channel",
            reason="message names no channel: set a 'channel' header or key 'channel:order_no'",
            payload=value,
            received_at=timestamp_ms,
        )
    content_type = (headers.get("content-type") or b"").decode("ascii", "replace").lower()
    lines, _ = split_orders(value, content_type)
    return [
        RawRecord(channel, line, timestamp_ms, None, f"{where}:{n}" if where else "")
        for n, line in lines
    ], None


def decode_raw_message(
    key: bytes | None, value: bytes, headers: dict[str, bytes], timestamp_ms: int, where: str = ""
) -> tuple[list[RawRecord], list[DeadLetter]]:
    if headers.get(ENVELOPE_HEADER) == b"raw":
        try:
            return RAW_CODEC.decode(value), []
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            return [], [
                DeadLetter(
                    stage=STAGE,
                    channel="",
                    field="envelope",
                    reason=f"undecodable raw envelope: {exc}",
                    payload=value,
                    received_at=timestamp_ms,
                )
            ]
    records, dead = gateway_records(key, value, headers, timestamp_ms, where)
    return records, [dead] if dead else []


def normalise_records(
    records: list[RawRecord], ctx: NormaliseContext
) -> tuple[list[CanonicalRecord], list[DeadLetter]]:
    good: list[CanonicalRecord] = []
    dead: list[DeadLetter] = []
    for rec in records:
        try:
            result = normalise(rec.channel, rec.payload, ctx)
        except Exception as exc:  # an adapter bug must dead-letter one order, not crash-loop
            reason = f"internal error: {type(exc).__name__}: {exc}"
            result = Rejection(channel=rec.channel, field="$", reason=reason)
        if isinstance(result, CanonicalOrder):
            good.append(
                CanonicalRecord(
                    result, rec.received_at, rec.origin, None, rec.ref, facts=dedup_facts(result)
                )
            )
        else:
            dead.append(
                DeadLetter(
                    stage=STAGE,
                    channel=rec.channel,
                    field=result.field,
                    reason=result.reason,
                    payload=rec.payload,
                    received_at=rec.received_at,
                    order_no=result.order_no,
                    origin=rec.origin,
                )
            )
    return good, dead


def dead_letter_key(letter: DeadLetter) -> bytes:
    """Dead letters of a known order travel with it (same partition as its id)."""
    if letter.order_no and letter.channel:
        return global_order_id(letter.channel, letter.order_no).encode()
    return b""
