"""SLA timers: which deadlines an order in a state has, how they are keyed, what firing one does.

Deadlines live in the order stage's partition-local RocksDB as a *deadline index*: the key is
``DEADLINE_PREFIX + big-endian deadline ms + order id + 0x00 + timer kind + 0x00 + level``, so a
Faust timer finds everything due with one range scan from the prefix up to :func:`due_until`,
in deadline order, without touching orders that are not due. The value (:func:`encode_deadline`)
holds the state and the clock start the deadline was armed for.

Why firing re-checks everything (:func:`fire`): the caller deletes an order's deadline keys when
the order changes state (:func:`plan_timers`), but a crash between the state write and the index
write, or a payment that arrived after arming, must not cancel an order. A deadline is acted on
only if the order is still in the state it was armed for, since the same moment, and the
policy *now* says its payment status gets that action. Otherwise it is stale: a no-op.

Deposit and partially paid orders are never auto-cancelled. The policy must say how every
payment status (``core.model.PAYMENT_STATUSES``) is treated by each timer that changes the
order (cancel, complete), and a policy that would auto-cancel a deposit or partially paid order
does not load. The state machine refuses ``payment_timeout`` for anything but "unpaid" as well.

Escalation: a breach that stays open (the order has not moved) escalates every
``escalation.every`` up the ``escalation.ladder`` (team lead -> operations manager -> director),
each rung one more deadline of the same kind with ``level`` + 1, and stops after the last rung.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final, Literal

import msgspec

from core.audit import BREACH_EVENT, ESCALATION_EVENT, AuditEntry
from core.config_check import ConfigError, ConfigInvalid, parse_duration
from core.model import PAYMENT_STATUSES
from core.state_machine import STATES, OrderEvent, Transition

DEADLINE_PREFIX: Final = b"dl:"
_SEP: Final = b"\x00"

# What a timer does when it fires. cancel/complete move the order (through the state machine);
# the others record a breach (event + metric + audit) and may escalate.
TimerAction = Literal["cancel", "complete", "breach", "warn", "flag"]
TIMER_ACTIONS: Final[tuple[str, ...]] = ("cancel", "complete", "breach", "warn", "flag")
# The state-machine event each moving action sends, and the one state where the table takes it.
_MOVING: Final[dict[str, tuple[str, str]]] = {
    "cancel": ("payment_timeout", "pending_payment"),
    "complete": ("complete", "delivered"),
}
# Per payment status: "apply" the action, only "breach" (alert, never move), or "none" (no timer).
Treatment = Literal["apply", "breach", "none"]
TREATMENTS: Final[tuple[str, ...]] = ("apply", "breach", "none")
# The 2,371-deposit-order incident: these may never be auto-cancelled, whatever the file says.
NEVER_AUTO_CANCEL: Final[frozenset[str]] = frozenset({"deposit_paid", "partially_paid"})


class TimerRule(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    state: str
    after_ms: int
    action: str
    by_payment: dict[str, str]  # every payment status -> treatment (filled in when not given)
    escalate: bool


class SlaPolicy(msgspec.Struct, frozen=True, kw_only=True):
    timers: dict[str, TimerRule]
    by_state: dict[str, tuple[TimerRule, ...]]
    escalate_every_ms: int
    ladder: tuple[str, ...]
    # the health KPIs ([kpi]): a step that took longer than this in a state the merchant's own
    # flow moves (paid, picking, held) is a flow break; an order shipped within ship_within of
    # being paid is on time (the promise the console's lights count down to)
    flow_break_ms: int = 15 * 60_000
    ship_within_ms: int = 24 * 3_600_000

    @classmethod
    def from_toml(cls, path: str | Path, overrides: Mapping[str, Any] | None = None) -> SlaPolicy:
        """Load and validate; ``overrides`` (dotted keys, e.g. ``timers.pick_start.after``) win.

        Raises :class:`ConfigInvalid` naming every bad key: the worker must not start on it.
        """
        with open(path, "rb") as fh:
            data = tomllib.load(fh)
        return cls.from_dict(data, overrides, source=str(path))

    @classmethod
    def from_dict(
        cls,
        data: Mapping[str, Any],
        overrides: Mapping[str, Any] | None = None,
        *,
        source: str = "sla policy",
    ) -> SlaPolicy:
        data = _with_overrides(data, overrides or {})
        policy = parse_policy(data)
        if isinstance(policy, list):
            raise ConfigInvalid(source, policy)
        return policy


class Deadline(msgspec.Struct, frozen=True, kw_only=True, array_like=True):
    """One armed timer. ``since`` is when the state's clock started (state entered, or the last
    carrier update for in_transit); ``level`` 0 is the breach itself, n the n-th escalation."""

    at: int
    order_id: str
    kind: str
    state: str
    since: int
    level: int = 0


class Breach(msgspec.Struct, frozen=True, kw_only=True):
    """An SLA breach or escalation: published as an event, counted, and audited."""

    order_id: str
    kind: str
    state: str
    severity: str  # breach | warn | flag
    level: int  # 0 = the breach, n = n-th escalation
    rung: str  # who is notified at this level ("" for the breach itself)
    due_at: int
    at: int


class TimerOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """What to do with a fired deadline. Always delete its key; then, by ``outcome``:

    - ``stale``: nothing (the order moved on, or its payment status is not timed any more);
    - ``event``: apply ``event`` through the state machine (its id is deterministic, so a
      re-fire after a crash is dropped as a repeat);
    - ``breach``: publish/count/audit ``breach``, and arm ``next`` (the next escalation) if set.
    """

    outcome: Literal["stale", "event", "breach"]
    reason: str = ""
    event: OrderEvent | None = None
    breach: Breach | None = None
    next: Deadline | None = None


class TimerPlan(msgspec.Struct, frozen=True, kw_only=True):
    """Index changes for one order: delete these keys, put these deadlines."""

    delete: list[bytes]
    arm: list[Deadline]


# ---- policy parsing ---------------------------------------------------------------------------


def _with_overrides(data: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = _deep_copy(data)
    for dotted, value in overrides.items():
        node = out
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def _deep_copy(data: Mapping[str, Any]) -> dict[str, Any]:
    return {k: _deep_copy(v) if isinstance(v, Mapping) else v for k, v in data.items()}


def parse_policy(data: Mapping[str, Any]) -> SlaPolicy | list[ConfigError]:
    """A validated policy, or every problem found (each naming its key)."""
    errors: list[ConfigError] = []
    for key in data:
        if key not in ("timers", "escalation", "kpi"):
            errors.append(ConfigError(key, "unknown section (expected timers, escalation, kpi)"))
    kpi_ms = {"flow_break_after": 15 * 60_000, "ship_within": 24 * 3_600_000}
    kpi = data.get("kpi", {})
    if not isinstance(kpi, Mapping):
        errors.append(ConfigError("kpi", "must be a table"))
    else:
        for key, raw in kpi.items():
            if key not in kpi_ms:
                errors.append(
                    ConfigError(f"kpi.{key}", "unknown key (flow_break_after, ship_within)")
                )
                continue
            got = parse_duration(raw)
            if isinstance(got, str):
                errors.append(ConfigError(f"kpi.{key}", got))
            elif got <= 0:
                errors.append(ConfigError(f"kpi.{key}", "must be > 0"))
            else:
                kpi_ms[key] = got
    esc = data.get("escalation", {})
    every: int | str = 2 * 3_600_000
    ladder: tuple[str, ...] = ("team_lead", "operations_manager", "director")
    if not isinstance(esc, Mapping):
        errors.append(ConfigError("escalation", "must be a table"))
    else:
        for key in esc:
            if key not in ("every", "ladder"):
                errors.append(ConfigError(f"escalation.{key}", "unknown key"))
        if "every" in esc:
            every = parse_duration(esc["every"])
            if isinstance(every, str):
                errors.append(ConfigError("escalation.every", every))
        raw_ladder = esc.get("ladder", list(ladder))
        if (
            not isinstance(raw_ladder, list)
            or not raw_ladder
            or not all(isinstance(r, str) and r.strip() for r in raw_ladder)
        ):
            errors.append(ConfigError("escalation.ladder", "must be a non-empty list of names"))
        else:
            ladder = tuple(raw_ladder)
    timers: dict[str, TimerRule] = {}
    raw_timers = data.get("timers", {})
    if not isinstance(raw_timers, Mapping):
        errors.append(ConfigError("timers", "must be a table of timers"))
        raw_timers = {}
    for kind, spec in raw_timers.items():
        rule = _parse_timer(kind, spec, errors)
        if rule is not None:
            timers[kind] = rule
    if errors:
        return errors
    assert isinstance(every, int)
    by_state: dict[str, list[TimerRule]] = {}
    for rule in timers.values():
        by_state.setdefault(rule.state, []).append(rule)
    return SlaPolicy(
        timers=timers,
        by_state={s: tuple(rules) for s, rules in by_state.items()},
        escalate_every_ms=every,
        ladder=ladder,
        flow_break_ms=kpi_ms["flow_break_after"],
        ship_within_ms=kpi_ms["ship_within"],
    )


def _parse_timer(kind: str, spec: Any, errors: list[ConfigError]) -> TimerRule | None:
    at = f"timers.{kind}"
    if not isinstance(spec, Mapping):
        errors.append(ConfigError(at, "must be a table"))
        return None
    n_before = len(errors)
    for key in spec:
        if key not in ("state", "after", "action", "by_payment", "escalate"):
            errors.append(ConfigError(f"{at}.{key}", "unknown key"))
    state = spec.get("state")
    if state not in STATES:
        errors.append(ConfigError(f"{at}.state", f"unknown state {state!r} (known: {STATES})"))
    after = parse_duration(spec.get("after"))
    if isinstance(after, str):
        errors.append(ConfigError(f"{at}.after", after))
    action = spec.get("action")
    if action not in TIMER_ACTIONS:
        errors.append(ConfigError(f"{at}.action", f"{action!r} is not one of {TIMER_ACTIONS}"))
    elif action in _MOVING and state in STATES and state != _MOVING[action][1]:
        errors.append(
            ConfigError(f"{at}.action", f"{action!r} only applies to state {_MOVING[action][1]!r}")
        )
    escalate = spec.get("escalate", action not in _MOVING)
    if not isinstance(escalate, bool):
        errors.append(ConfigError(f"{at}.escalate", "must be true or false"))
    by_payment = _parse_by_payment(at, spec.get("by_payment"), action, errors)
    if len(errors) > n_before:
        return None
    assert isinstance(after, int) and isinstance(state, str) and isinstance(action, str)
    return TimerRule(
        kind=kind,
        state=state,
        after_ms=after,
        action=action,
        by_payment=by_payment,
        escalate=bool(escalate),
    )


def _parse_by_payment(at: str, raw: Any, action: Any, errors: list[ConfigError]) -> dict[str, str]:
    key = f"{at}.by_payment"
    if raw is None:
        if action in _MOVING:
            errors.append(
                ConfigError(
                    key,
                    f"required for action {action!r}: name the treatment (apply, breach, none) "
                    f"of every payment status {PAYMENT_STATUSES}",
                )
            )
        return dict.fromkeys(PAYMENT_STATUSES, "apply")
    if not isinstance(raw, Mapping):
        errors.append(ConfigError(key, "must be a table of payment status -> treatment"))
        return {}
    for status, treatment in raw.items():
        if status not in PAYMENT_STATUSES:
            errors.append(
                ConfigError(
                    f"{key}.{status}",
                    f"unknown payment status {status!r} (known: {PAYMENT_STATUSES})",
                )
            )
        elif treatment not in TREATMENTS:
            errors.append(
                ConfigError(f"{key}.{status}", f"{treatment!r} is not one of {TREATMENTS}")
            )
        elif action == "cancel" and status in NEVER_AUTO_CANCEL and treatment == "apply":
            errors.append(
                ConfigError(
                    f"{key}.{status}",
                    "deposit and partially paid orders are never auto-cancelled: "
                    "use 'breach' or 'none'",
                )
            )
    for status in PAYMENT_STATUSES:
        if status not in raw:
            errors.append(
                ConfigError(
                    f"{key}.{status}",
                    f"payment status {status!r} is not handled: name its treatment "
                    f"({', '.join(TREATMENTS)})",
                )
            )
    return dict(raw)


# ---- deadlines --------------------------------------------------------------------------------


def deadlines_for(
    state: str, since: int, payment_status: str, policy: SlaPolicy, *, order_id: str
) -> list[Deadline]:
    """The deadlines an order entering ``state`` at ``since`` gets, by its payment status."""
    return [
        Deadline(at=since + r.after_ms, order_id=order_id, kind=r.kind, state=state, since=since)
        for r in policy.by_state.get(state, ())
        if r.by_payment[payment_status] != "none"
    ]


def deadline_key(d: Deadline) -> bytes:
    return (
        DEADLINE_PREFIX
        + d.at.to_bytes(8, "big")
        + d.order_id.encode()
        + _SEP
        + d.kind.encode()
        + _SEP
        + d.level.to_bytes(1, "big")
    )


def parse_deadline_key(key: bytes) -> tuple[int, str, str, int]:
    """(deadline ms, order id, timer kind, level) from an index key."""
    n = len(DEADLINE_PREFIX)
    at = int.from_bytes(key[n : n + 8], "big")
    order_id, kind, level = key[n + 8 :].split(_SEP, 2)
    return at, order_id.decode(), kind.decode(), level[0]


def due_until(now: int) -> bytes:
    """Exclusive upper bound of the range scan for deadlines due at ``now``."""
    return DEADLINE_PREFIX + (now + 1).to_bytes(8, "big")


_deadline_encoder = msgspec.msgpack.Encoder()
_deadline_decoder = msgspec.msgpack.Decoder(Deadline)


def encode_deadline(d: Deadline) -> bytes:
    return _deadline_encoder.encode(d)


def decode_deadline(value: bytes) -> Deadline:
    return _deadline_decoder.decode(value)


def stale_keys(previous: Iterable[Deadline]) -> list[bytes]:
    """Keys to delete when the order leaves the state its ``previous`` deadlines were armed for."""
    return [deadline_key(d) for d in previous]


def plan_timers(
    transition: Transition,
    previous: Iterable[Deadline],
    *,
    at: int,
    payment_status: str,
    policy: SlaPolicy,
    order_id: str,
) -> TimerPlan:
    """Deadline index changes for an applied transition (``at`` = when it was applied)."""
    if transition.timers == "keep":
        return TimerPlan(delete=[], arm=[])
    if transition.timers == "clear":
        return TimerPlan(delete=stale_keys(previous), arm=[])
    return rearm(
        previous,
        state=transition.to_state,
        since=at,
        payment_status=payment_status,
        policy=policy,
        order_id=order_id,
    )


def rearm(
    previous: Iterable[Deadline],
    *,
    state: str,
    since: int,
    payment_status: str,
    policy: SlaPolicy,
    order_id: str,
) -> TimerPlan:
    """Replace ``previous`` with the deadlines of ``state``; also for a new order (no previous)
    and for a payment status change in the same state (keep ``since``: the clock does not
    restart because money arrived)."""
    arm = deadlines_for(state, since, payment_status, policy, order_id=order_id)
    keep = {deadline_key(d) for d in arm}
    return TimerPlan(delete=[k for k in stale_keys(previous) if k not in keep], arm=arm)


def next_escalation(d: Deadline, policy: SlaPolicy) -> Deadline | None:
    """The next rung's deadline after ``d`` fired, None past the last rung or if not escalated."""
    rule = policy.timers.get(d.kind)
    if rule is None or not rule.escalate or d.level >= len(policy.ladder):
        return None
    return msgspec.structs.replace(d, at=d.at + policy.escalate_every_ms, level=d.level + 1)


def fire(
    d: Deadline,
    *,
    state: str,
    since: int,
    payment_status: str,
    policy: SlaPolicy,
    now: int,
) -> TimerOutcome:
    """What a due deadline does to the order as it is *now* (state, clock start, payment)."""
    if state != d.state or since != d.since:
        return TimerOutcome(outcome="stale", reason=f"order moved on (now {state})")
    rule = policy.timers.get(d.kind)
    if rule is None:
        return TimerOutcome(outcome="stale", reason=f"timer {d.kind!r} no longer in the policy")
    treatment = rule.by_payment.get(payment_status, "none")
    if treatment == "none":
        return TimerOutcome(outcome="stale", reason=f"payment status {payment_status!r} not timed")
    if d.level == 0 and rule.action in _MOVING and treatment == "apply":
        event = OrderEvent(
            order_id=d.order_id,
            event=_MOVING[rule.action][0],
            actor="system",
            source="sla",
            reason=f"{d.kind}: {state} for {_human(rule.after_ms)}",
            at=now,
            event_id=f"sla:{d.kind}:{d.since}",
        )
        return TimerOutcome(outcome="event", event=event)
    severity = "breach" if rule.action in _MOVING else rule.action
    breach = Breach(
        order_id=d.order_id,
        kind=d.kind,
        state=state,
        severity=severity,
        level=d.level,
        rung=policy.ladder[d.level - 1] if d.level else "",
        due_at=d.at,
        at=now,
    )
    return TimerOutcome(outcome="breach", breach=breach, next=next_escalation(d, policy))


def breach_audit(b: Breach, seq: int) -> AuditEntry:
    first = b.level == 0
    return AuditEntry(
        order_id=b.order_id,
        seq=seq,
        from_state=b.state,
        to_state=b.state,
        event=(BREACH_EVENT if first else ESCALATION_EVENT) + b.kind,
        actor="system",
        source="sla",
        reason=f"{b.severity}: due {b.due_at}, {b.at - b.due_at} ms late"
        if first
        else f"escalated to {b.rung} (level {b.level})",
        at=b.at,
        rule=b.rung,
    )


def _human(ms: int) -> str:
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1_000)):
        if ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
