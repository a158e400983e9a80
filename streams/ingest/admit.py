"""Admission: turning a channel's payloads into journal entries, the one door into the pipeline.

Every source of orders (the HTTP endpoint, a file import, a reconciliation pull) admits through
here, so an order gets the same global id, the same size bound and the same dead-letter path
whichever way it came. Admission does the least work that still names the order: pull the channel
order number and compute the id. Full normalisation happens in the stream.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgspec

from core.channels import ChannelAdapter
from core.model import Limits, Rejection, global_order_id
from streams.ingest.journal import JournalEntry

# An order over max_order_bytes is not an order: its dead letter keeps this much of it, enough
# to see what it was, while a flood of them cannot bloat the journal, the DLQ or its store.
OVERSIZE_KEEP_BYTES = 4096


class Accepted(msgspec.Struct, omit_defaults=True):
    """What became of one payload: accepted under an id, or rejected (dead-lettered) and why."""

    status: str
    id: str | None = None
    order_no: str | None = None
    line: int | None = None
    field: str | None = None
    reason: str | None = None


def admit(
    channel: str,
    adapter: ChannelAdapter,
    payloads: Iterable[tuple[int | None, bytes]],
    limits: Limits,
    now: int,
    urgent: bool = False,
) -> tuple[list[JournalEntry], list[Accepted]]:
    """Entries to journal and one result per ``(line, payload)``.

    A payload that cannot become an order is still journaled, with its rejection, so that it
    reaches the dead letters with its reason instead of vanishing at the door.
    """
    max_bytes = limits.max_order_bytes
    order_no = adapter.order_no
    entries: list[JournalEntry] = []
    results: list[Accepted] = []
    add_entry, add_result = entries.append, results.append
    for line_no, payload in payloads:
        found = order_no(payload) if len(payload) <= max_bytes else None
        if found is None:
            found = Rejection(
                channel=channel,
                field="$",
                reason=f"order of {len(payload):,} bytes; at most {max_bytes:,} per order"
                f" (max_order_bytes); its dead letter keeps the first {OVERSIZE_KEEP_BYTES:,}",
            )
            payload = payload[:OVERSIZE_KEEP_BYTES]
        if isinstance(found, Rejection):
            add_entry(JournalEntry(channel, payload, now, "", (found.field, found.reason)))
            add_result(Accepted("rejected", line=line_no, field=found.field, reason=found.reason))
        else:
            oid = global_order_id(channel, found)
            add_entry(JournalEntry(channel, payload, now, oid, None, urgent))
            add_result(Accepted("accepted", id=oid, order_no=found))
    return entries, results


def rejected(channel: str, payload: bytes, field: str, reason: str, now: int) -> JournalEntry:
    """An entry refused before it was a payload a channel adapter could read (a bad file row)."""
    return JournalEntry(channel, payload[:OVERSIZE_KEEP_BYTES], now, "", (field, reason))
