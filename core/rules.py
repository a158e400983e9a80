"""Merchant rules: declarative TOML, checked at start-up, hot-reloaded, evaluated per transition.

Why declarative: operations change thresholds and tags weekly (campaigns, new VIP lists); a
file they can edit and the service re-reads beats a deploy, and a file can be validated as a
whole before it replaces the running set (:class:`RulesFile` keeps the last good set when an
edit is broken, and says why).

A rule (see ``config/rules.toml``)::

    [[rule]]
    name = "big-order-review"
    when = { state = "paid" }            # event = "...", state = "..." (entered), or both
    if = { amount_gt = "5000" }           # all conditions must hold (none = always)
    then = [{ hold = "amount over 5,000: manager approval" }]

Triggers: ``evaluate("refund_request", ...)`` for an event, ``evaluate("state:paid", ...)`` for
a state entered. A rule with both ``event`` and ``state`` fires on the event while the order is
in one of the states.

Conditions: ``channel_in``, ``currency_in``, ``payment_status_in``, ``state_in``,
``tags_any`` / ``tags_all`` / ``tags_none``, ``sku_any``, ``reason_contains_any`` (the event's
reason text), ``address_orders_24h_gte`` (a count the caller looks up), and
``amount_gt`` / ``amount_gte`` / ``amount_lt`` / ``amount_lte`` on the order total in *major*
units: a string (``"5000"``, in whatever currency the order is in) or a table per currency
(``{ CNY = "5000", USD = "700" }``; other currencies never match). Thresholds are compared
exactly on integers with each currency's minor-unit exponent (``core.money``), so 5,000 JPY
(exponent 0) and 5,000.00 CNY (exponent 2) both mean five thousand.

Actions (evaluated in file order): ``set_priority`` (high | normal | low; the order stage routes
high to its own topic), ``hold`` (reason), ``add_tag``, ``skip_state`` (a state in
``core.state_machine.SKIPPABLE``), ``notify`` (message; ``{order_id}``, ``{channel}``,
``{state}``, ``{address_orders_24h}`` are filled in), ``route`` (e.g. ``quality_check``).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from string import Formatter
from typing import Any, Final

import msgspec

from core.config_check import ConfigError, ConfigInvalid
from core.model import CHANNELS, PAYMENT_STATUSES, CanonicalOrder
from core.money import MINOR_UNITS, amount_to_minor
from core.state_machine import EVENTS, SKIPPABLE, STATES

ACTION_KINDS: Final[tuple[str, ...]] = (
    "set_priority",
    "hold",
    "add_tag",
    "skip_state",
    "notify",
    "route",
)
PRIORITIES: Final[tuple[str, ...]] = ("high", "normal", "low")
NOTIFY_FIELDS: Final[frozenset[str]] = frozenset(
    {"order_id", "channel", "state", "address_orders_24h"}
)
_AMOUNT_OPS: Final[dict[str, Callable[[int, int], bool]]] = {
    "amount_gt": lambda a, b: a > b,
    "amount_gte": lambda a, b: a >= b,
    "amount_lt": lambda a, b: a < b,
    "amount_lte": lambda a, b: a <= b,
}
_LIST_CONDITIONS: Final[tuple[str, ...]] = (
    "channel_in",
    "currency_in",
    "payment_status_in",
    "state_in",
    "tags_any",
    "tags_all",
    "tags_none",
    "sku_any",
    "reason_contains_any",
)
# Amounts are compared in thousandths of a major unit: every ISO 4217 exponent is <= 3.
_MILLI_EXP: Final = 3

# (order, state, reason, address_orders_24h) -> holds
Condition = Callable[[CanonicalOrder, str, str, int], bool]


class Action(msgspec.Struct, frozen=True):
    """What a rule asks for; ``rule`` names it for the audit trail."""

    kind: str
    value: str
    rule: str


class _Rule(msgspec.Struct, frozen=True):
    name: str
    conditions: tuple[Condition, ...]
    actions: tuple[Action, ...]
    templated: tuple[bool, ...]  # per action: notify message with placeholders
    history_gte: int = 0  # its address_orders_24h_gte, 0 if it does not use the count


class RuleSet:
    """Validated rules indexed by trigger, so evaluation only looks at rules that can fire."""

    __slots__ = ("_by_trigger", "_history_by_trigger", "history_min", "names")

    def __init__(self, rules: list[tuple[_Rule, list[str]]]) -> None:
        self.names: tuple[str, ...] = tuple(r.name for r, _ in rules)
        self._by_trigger: dict[str, list[_Rule]] = {}
        # The recipient count arrives after the order is recorded (the history stage); then
        # only the rules that read it run again, so no other rule acts twice.
        self._history_by_trigger: dict[str, list[_Rule]] = {}
        for rule, triggers in rules:
            for trigger in triggers:
                self._by_trigger.setdefault(trigger, []).append(rule)
                if rule.history_gte:
                    self._history_by_trigger.setdefault(trigger, []).append(rule)
        used = [r.history_gte for r, _ in rules if r.history_gte]
        # the smallest count any rule waits for (0: no rule uses it, no count need be sent)
        self.history_min: int = min(used) if used else 0

    @classmethod
    def from_toml(cls, path: str | Path) -> RuleSet:
        """Load and validate; raises :class:`ConfigInvalid` naming each bad rule and key."""
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigInvalid(str(path), [ConfigError("file", f"not TOML: {exc}")]) from exc
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "rules") -> RuleSet:
        parsed = parse_rules(data)
        if isinstance(parsed, list):
            raise ConfigInvalid(source, parsed)
        return parsed

    def __len__(self) -> int:
        return len(self.names)

    def evaluate(
        self,
        trigger: str,
        order: CanonicalOrder,
        *,
        state: str,
        reason: str = "",
        address_orders_24h: int = 0,
        history_only: bool = False,
    ) -> list[Action]:
        """Actions of the rules for ``trigger`` (event name or ``"state:<name>"``) that hold;
        ``history_only``: only the rules with an ``address_orders_24h_gte`` condition."""
        rules = (self._history_by_trigger if history_only else self._by_trigger).get(trigger)
        if not rules:
            return []
        out: list[Action] = []
        for rule in rules:
            if all(c(order, state, reason, address_orders_24h) for c in rule.conditions):
                for action, templated in zip(rule.actions, rule.templated, strict=True):
                    if templated:
                        text = action.value.format(
                            order_id=order.id,
                            channel=order.channel,
                            state=state,
                            address_orders_24h=address_orders_24h,
                        )
                        action = Action(action.kind, text, action.rule)
                    out.append(action)
        return out


# ---- parsing ----------------------------------------------------------------------------------


def parse_rules(data: Mapping[str, Any]) -> RuleSet | list[ConfigError]:
    """A validated rule set, or every problem found, each naming the rule and key."""
    errors: list[ConfigError] = []
    for key in data:
        if key != "rule":
            errors.append(ConfigError(key, "unknown section (rules are [[rule]] tables)"))
    raw = data.get("rule", [])
    if not isinstance(raw, list):
        return [*errors, ConfigError("rule", "must be an array of tables ([[rule]])")]
    rules: list[tuple[_Rule, list[str]]] = []
    seen: set[str] = set()
    for i, spec in enumerate(raw):
        name = spec.get("name") if isinstance(spec, Mapping) else None
        at = f"rule[{name}]" if isinstance(name, str) and name else f"rule[{i}]"
        if not isinstance(spec, Mapping):
            errors.append(ConfigError(at, "must be a table"))
            continue
        if not isinstance(name, str) or not name.strip():
            errors.append(ConfigError(f"{at}.name", "required, a non-empty string"))
            continue
        if name in seen:
            errors.append(ConfigError(f"{at}.name", "duplicate rule name"))
        seen.add(name)
        parsed = _parse_rule(at, name, spec, errors)
        if parsed is not None:
            rules.append(parsed)
    if errors:
        return errors
    return RuleSet(rules)


def _parse_rule(
    at: str, name: str, spec: Mapping[str, Any], errors: list[ConfigError]
) -> tuple[_Rule, list[str]] | None:
    n_before = len(errors)
    for key in spec:
        if key not in ("name", "when", "if", "then", "description"):
            errors.append(ConfigError(f"{at}.{key}", "unknown key (name, when, if, then)"))
    when = spec.get("when")
    events: list[str] = []
    states: list[str] = []
    if not isinstance(when, Mapping) or not (set(when) & {"event", "state"}):
        errors.append(ConfigError(f"{at}.when", "required: a table with event and/or state"))
    else:
        for key in when:
            if key not in ("event", "state"):
                errors.append(ConfigError(f"{at}.when.{key}", "unknown key (event, state)"))
        events = _names(f"{at}.when.event", when.get("event", []), EVENTS, "event", errors)
        states = _names(f"{at}.when.state", when.get("state", []), STATES, "state", errors)
    conditions: list[Condition] = []
    cond_spec = spec.get("if", {})
    if not isinstance(cond_spec, Mapping):
        errors.append(ConfigError(f"{at}.if", "must be a table of conditions"))
    else:
        for key, value in cond_spec.items():
            cond = _condition(f"{at}.if.{key}", key, value, errors)
            if cond is not None:
                conditions.append(cond)
    actions = _actions(f"{at}.then", name, spec.get("then"), errors)
    if len(errors) > n_before:
        return None
    if events and states:
        wanted = frozenset(states)
        conditions.insert(0, lambda _o, state, _r, _n: state in wanted)
        triggers = events
    else:
        triggers = events or [f"state:{s}" for s in states]
    templated = tuple(a.kind == "notify" and "{" in a.value for a in actions)
    gte = cond_spec.get("address_orders_24h_gte", 0) if isinstance(cond_spec, Mapping) else 0
    rule = _Rule(name, tuple(conditions), tuple(actions), templated, gte)
    return rule, triggers


def _names(
    at: str, value: Any, known: tuple[str, ...], what: str, errors: list[ConfigError]
) -> list[str]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(v, str) for v in items):
        errors.append(ConfigError(at, f"must be a {what} name or a list of them"))
        return []
    for v in items:
        if v not in known:
            errors.append(ConfigError(at, f"unknown {what} {v!r}"))
    return list(items)


def _condition(at: str, key: str, value: Any, errors: list[ConfigError]) -> Condition | None:
    if key in _AMOUNT_OPS:
        return _amount_condition(at, _AMOUNT_OPS[key], value, errors)
    if key == "address_orders_24h_gte":
        if type(value) is not int or value < 1:
            errors.append(ConfigError(at, "must be a whole number >= 1"))
            return None
        return lambda _o, _s, _r, n: n >= value
    if key not in _LIST_CONDITIONS:
        known = (*_LIST_CONDITIONS, *_AMOUNT_OPS, "address_orders_24h_gte")
        errors.append(ConfigError(at, f"unknown condition (known: {', '.join(known)})"))
        return None
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        errors.append(ConfigError(at, "must be a non-empty list of strings"))
        return None
    known_values: dict[str, tuple[str, ...]] = {
        "channel_in": CHANNELS,
        "currency_in": tuple(MINOR_UNITS),
        "payment_status_in": PAYMENT_STATUSES,
        "state_in": STATES,
    }
    if key in known_values:
        bad = [v for v in value if v not in known_values[key]]
        if bad:
            errors.append(ConfigError(at, f"unknown value(s) {bad}"))
            return None
    wanted = frozenset(value)
    words = tuple(value)
    match key:
        case "channel_in":
            return lambda o, _s, _r, _n: o.channel in wanted
        case "currency_in":
            return lambda o, _s, _r, _n: o.currency in wanted
        case "payment_status_in":
            return lambda o, _s, _r, _n: o.payment_status in wanted
        case "state_in":
            return lambda _o, s, _r, _n: s in wanted
        case "tags_any":
            return lambda o, _s, _r, _n: not wanted.isdisjoint(o.tags)
        case "tags_all":
            return lambda o, _s, _r, _n: wanted.issubset(o.tags)
        case "tags_none":
            return lambda o, _s, _r, _n: wanted.isdisjoint(o.tags)
        case "sku_any":
            return lambda o, _s, _r, _n: any(line.sku in wanted for line in o.lines)
        case _:  # reason_contains_any
            return lambda _o, _s, r, _n: any(w in r for w in words)


def _amount_condition(
    at: str, op: Callable[[int, int], bool], value: Any, errors: list[ConfigError]
) -> Condition | None:
    """Threshold(s) in thousandths of a major unit; the order total is scaled to match."""
    if isinstance(value, Mapping):
        per_currency: dict[str, int] = {}
        for cur, amount in value.items():
            if cur not in MINOR_UNITS:
                errors.append(ConfigError(f"{at}.{cur}", f"unknown currency {cur!r}"))
                continue
            milli = _milli(f"{at}.{cur}", amount, errors)
            if milli is not None:
                per_currency[cur] = milli
        if len(per_currency) != len(value):
            return None

        def by_currency(o: CanonicalOrder, _s: str, _r: str, _n: int) -> bool:
            limit = per_currency.get(o.currency)
            exp = MINOR_UNITS.get(o.currency)
            return limit is not None and exp is not None and op(_scaled(o.total, exp), limit)

        return by_currency
    milli = _milli(at, value, errors)
    if milli is None:
        return None
    limit = milli

    def any_currency(o: CanonicalOrder, _s: str, _r: str, _n: int) -> bool:
        exp = MINOR_UNITS.get(o.currency)
        return exp is not None and op(_scaled(o.total, exp), limit)

    return any_currency


def _scaled(total_minor: int, exp: int) -> int:
    return total_minor * 10 ** (_MILLI_EXP - exp)


def _milli(at: str, amount: Any, errors: list[ConfigError]) -> int | None:
    if isinstance(amount, bool) or not isinstance(amount, str | int):
        errors.append(ConfigError(at, 'must be an amount in major units, e.g. "5000"'))
        return None
    milli = amount_to_minor(amount, _MILLI_EXP)
    if not isinstance(milli, int):
        errors.append(ConfigError(at, milli.reason))
        return None
    return milli


def _actions(at: str, rule: str, raw: Any, errors: list[ConfigError]) -> list[Action]:
    if not isinstance(raw, list) or not raw:
        errors.append(ConfigError(at, 'required: a non-empty list like [{ add_tag = "x" }]'))
        return []
    out: list[Action] = []
    for i, item in enumerate(raw):
        key = f"{at}[{i}]"
        if not isinstance(item, Mapping) or len(item) != 1:
            errors.append(ConfigError(key, "each action is a table with exactly one key"))
            continue
        ((kind, value),) = item.items()
        key = f"{key}.{kind}"
        if kind not in ACTION_KINDS:
            errors.append(ConfigError(key, f"unknown action (known: {', '.join(ACTION_KINDS)})"))
            continue
        if not isinstance(value, str) or not value.strip():
            errors.append(ConfigError(key, "must be a non-empty string"))
            continue
        if kind == "set_priority" and value not in PRIORITIES:
            errors.append(ConfigError(key, f"{value!r} is not one of {PRIORITIES}"))
            continue
        if kind == "skip_state" and value not in SKIPPABLE:
            only = tuple(SKIPPABLE)
            errors.append(ConfigError(key, f"{value!r} cannot be skipped (only {only})"))
            continue
        if kind == "notify":
            bad = _bad_placeholders(value)
            if bad:
                errors.append(ConfigError(key, bad))
                continue
        out.append(Action(kind, value, rule))
    return out


def _bad_placeholders(message: str) -> str:
    try:
        fields = {f for _, f, _, _ in Formatter().parse(message) if f is not None}
    except ValueError as exc:
        return f"bad message template: {exc}"
    unknown = fields - NOTIFY_FIELDS
    if unknown:
        return f"unknown placeholder(s) {sorted(unknown)} (known: {sorted(NOTIFY_FIELDS)})"
    return ""


# ---- hot reload -------------------------------------------------------------------------------


class RulesFile:
    """The rules in force from one file, re-read when it changes (call :meth:`poll` on a timer).

    Start-up loads strictly (an invalid file raises); later an invalid edit keeps the last good
    set and leaves the problem in :attr:`error`, so a typo in production never drops every rule.
    """

    __slots__ = ("_signature", "error", "path", "rules")

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._signature = self._stat()
        self.rules: RuleSet = RuleSet.from_toml(self.path)
        self.error: ConfigInvalid | None = None

    def _stat(self) -> tuple[int, int, int]:
        st = os.stat(self.path)
        return st.st_mtime_ns, st.st_size, st.st_ino

    def poll(self) -> bool:
        """True when a changed file was loaded; False when unchanged or invalid (see ``error``)."""
        try:
            signature = self._stat()
        except OSError as exc:
            self.error = ConfigInvalid(str(self.path), [ConfigError("file", str(exc))])
            return False
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            rules = RuleSet.from_toml(self.path)
        except ConfigInvalid as exc:
            self.error = exc
            return False
        except OSError as exc:
            self.error = ConfigInvalid(str(self.path), [ConfigError("file", str(exc))])
            return False
        self.rules = rules
        self.error = None
        return True
