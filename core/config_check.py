"""Shared shape of start-up configuration errors for the SLA policy and the rules file.

A broken policy must stop the worker before it handles a single order (a mistyped payment status
once let a timer cancel 2,371 deposit orders), and the operator must see *which key* is wrong.
Loaders therefore collect every problem as a :class:`ConfigError` value (key + reason) and raise
one :class:`ConfigInvalid` carrying all of them, so a single start-up attempt shows everything
to fix instead of one error per restart.
"""

from __future__ import annotations

import re

import msgspec


class ConfigError(msgspec.Struct, frozen=True):
    """One problem in a configuration file; ``key`` is a dotted path (``timers.x.after``)."""

    key: str
    reason: str

    def __str__(self) -> str:
        return f"{self.key}: {self.reason}"


class ConfigInvalid(ValueError):
    """Raised by loaders at start-up (and kept, not raised, by hot reload)."""

    def __init__(self, source: str, errors: list[ConfigError]) -> None:
        self.source = source
        self.errors = errors
        lines = "\n".join(f"  {e}" for e in errors)
        super().__init__(f"{source}: {len(errors)} error(s)\n{lines}")


_DURATION = re.compile(r"^\s*(\d+)\s*(ms|s|m|h|d)\s*$")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}


def parse_duration(value: object) -> int | str:
    """``"15m"`` / ``"90s"`` / ``"7d"`` -> milliseconds, or the reason it is not a duration.

    Units are mandatory: a bare ``900`` could mean seconds or milliseconds, and guessing wrong
    turns a 15-minute payment window into 0.9 s.
    """
    if not isinstance(value, str):
        return f"must be a duration string like '15m' or '90s', got {type(value).__name__}"
    m = _DURATION.match(value)
    if m is None:
        return f"{value!r} is not a duration (a whole number and one of ms, s, m, h, d)"
    ms = int(m.group(1)) * _UNIT_MS[m.group(2)]
    if ms <= 0:
        return f"{value!r} must be longer than zero"
    return ms
