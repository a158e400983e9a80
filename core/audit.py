"""The audit trail: one entry per state step, rule firing, SLA breach and escalation.

Entries are stored in the order stage's partition-local RocksDB under
``AUDIT_PREFIX + order id + 0x00 + big-endian seq``: the order id is a fixed-format global id
(``os_`` + hex, never a NUL), and a big-endian sequence sorts numerically as bytes, so one prefix
scan returns an order's history in the order it happened, which is what the per-order HTTP
history query needs. ``seq`` is kept by the caller per order (the next free number), which
makes an entry's key deterministic: re-processing an envelope after a crash overwrites the same
keys instead of appending duplicates.

This module is the leaf of the domain: the state machine, SLA timers and rules build entries
with the helpers here, nothing here imports them.
"""

from __future__ import annotations

import msgspec

AUDIT_PREFIX = b"au:"
_SEP = b"\x00"

# What the ``event`` field holds for entries that are not state-machine events; the suffix names
# the rule action or the timer kind so a history reads without joining other tables.
RULE_EVENT = "rule:"  # + action kind, e.g. "rule:hold"
BREACH_EVENT = "sla_breach:"  # + timer kind, e.g. "sla_breach:pick_start"
ESCALATION_EVENT = "sla_escalation:"  # + timer kind


class AuditEntry(msgspec.Struct, kw_only=True, frozen=True):
    """Who moved the order from where to where, through which system, and why.

    ``from_state == to_state`` for entries that record something without moving the order (a
    rule firing, a breach, a carrier update). ``rule`` names the rule for rule firings and the
    escalation rung (``team_lead`` ...) for escalations.
    """

    order_id: str
    seq: int
    from_state: str
    to_state: str
    event: str
    actor: str  # a user name or "system"
    source: str  # the system it came through: api, carrier, channel, sla, rules, warehouse, ...
    reason: str = ""
    at: int  # epoch ms UTC
    rule: str = ""


audit_encoder = msgspec.msgpack.Encoder()
audit_decoder = msgspec.msgpack.Decoder(AuditEntry)


def audit_prefix(order_id: str) -> bytes:
    """Scan prefix of one order's history (the trailing separator keeps ``os_a`` off ``os_ab``)."""
    return AUDIT_PREFIX + order_id.encode() + _SEP


def audit_key(order_id: str, seq: int) -> bytes:
    return AUDIT_PREFIX + order_id.encode() + _SEP + seq.to_bytes(8, "big")


def parse_audit_key(key: bytes) -> tuple[str, int]:
    """(order id, seq) back from a key, for tools that walk the store."""
    body = key[len(AUDIT_PREFIX) :]
    return body[:-9].decode(), int.from_bytes(body[-8:], "big")


def rule_entry(
    order_id: str,
    seq: int,
    *,
    state: str,
    action: str,
    value: str,
    rule: str,
    at: int,
) -> AuditEntry:
    """A rule that fired; the value (priority, tag, hold reason, message) is the reason text."""
    return AuditEntry(
        order_id=order_id,
        seq=seq,
        from_state=state,
        to_state=state,
        event=RULE_EVENT + action,
        actor="system",
        source="rules",
        reason=value,
        at=at,
        rule=rule,
    )
