"""Decimal amounts as channels send them -> exact integer minor units.

Channels send money as strings ("199.00"), ints, or floats in yuan (PDD's 99.0). Float arithmetic
would turn 19.9 * 100 into 1989.9999999999998, so floats are read through ``repr`` (the shortest
string that round-trips) and every conversion is done on digits, never on binary floats.

Errors are returned as :class:`MoneyError` values, not raised: the adapters turn them into a
``Rejection`` naming the payload field.
"""

from __future__ import annotations

import math
from decimal import Decimal, InvalidOperation

import msgspec

# ISO 4217 minor-unit exponents. A currency missing here is rejected rather than guessed: guessing
# 2 for a 3-decimal dinar would silently misprice by a factor of ten.
MINOR_UNITS: dict[str, int] = {
    # zero-decimal currencies
    "BIF": 0,
    "CLP": 0,
    "DJF": 0,
    "GNF": 0,
    "ISK": 0,
    "JPY": 0,
    "KMF": 0,
    "KRW": 0,
    "PYG": 0,
    "RWF": 0,
    "UGX": 0,
    "VND": 0,
    "VUV": 0,
    "XAF": 0,
    "XOF": 0,
    "XPF": 0,
    # three-decimal currencies
    "BHD": 3,
    "IQD": 3,
    "JOD": 3,
    "KWD": 3,
    "LYD": 3,
    "OMR": 3,
    "TND": 3,
    # two-decimal currencies (the common case)
    **dict.fromkeys(
        (
            "AED AUD BDT BGN BRL CAD CHF CNY COP CZK DKK EGP EUR GBP HKD HUF IDR ILS INR KES KZT "
            "LKR MAD MOP MXN MYR NGN NOK NZD PEN PHP PKR PLN QAR RON RSD RUB SAR SEK SGD THB TRY "
            "TWD UAH USD ZAR"
        ).split(),
        2,
    ),
}

_POW10: tuple[int, ...] = (1, 10, 100, 1000)

# Amount strings repeat a lot (prices, fees, "0.00"), and parsing costs more than a dict hit on the
# hot path. One memo per exponent, filled until full and never evicted, so it stays bounded even
# though the keys are sender-controlled.
_CACHE_MAX = 16_384
_CACHE: tuple[dict[str, int], ...] = ({}, {}, {}, {})


class MoneyError(msgspec.Struct, frozen=True):
    """Why an amount could not be converted; ``reason`` is shown to the sender."""

    reason: str


def exponent(currency: str) -> int | MoneyError:
    """Minor-unit exponent of ``currency`` or an error for codes we do not know."""
    exp = MINOR_UNITS.get(currency)
    if exp is None:
        return MoneyError(f"unknown currency {currency!r}")
    return exp


def to_minor(amount: str | int | float, currency: str) -> int | MoneyError:
    """``amount`` in major units of ``currency`` -> integer minor units, exactly."""
    exp = MINOR_UNITS.get(currency)
    if exp is None:
        return MoneyError(f"unknown currency {currency!r}")
    return amount_to_minor(amount, exp)


def amount_to_minor(amount: str | int | float, exp: int) -> int | MoneyError:
    """Like :func:`to_minor` with the exponent already looked up (adapters do it once per order)."""
    kind = type(amount)
    if kind is str:
        text: str = amount  # type: ignore[assignment]
    elif kind is int:
        if amount < 0:
            return MoneyError(f"negative amount {amount!r}")
        return amount * _POW10[exp]  # type: ignore[operator]
    elif kind is float:
        if not math.isfinite(amount):  # type: ignore[arg-type]
            return MoneyError(f"not a finite amount: {amount!r}")
        text = repr(amount)
    else:
        return MoneyError(f"amount must be a decimal string or number, got {kind.__name__}")
    cache = _CACHE[exp]
    hit = cache.get(text)
    if hit is not None:
        return hit
    result = _str_to_minor(text, exp)
    if type(result) is int and len(cache) < _CACHE_MAX:
        cache[text] = result
    return result


def _str_to_minor(text: str, exp: int) -> int | MoneyError:
    # Fast path for the shape nearly every channel sends: ASCII digits, optional "." and digits.
    whole, dot, frac = text.partition(".")
    if whole.isdigit() and whole.isascii() and (not dot or (frac.isdigit() and frac.isascii())):
        n = len(frac)
        if n <= exp:
            return int(whole) * _POW10[exp] + (int(frac) * _POW10[exp - n] if n else 0)
        if frac[exp:].strip("0"):
            return MoneyError(f"{text!r} has more than {exp} decimal places")
        return int(whole) * _POW10[exp] + (int(frac[:exp]) if exp else 0)
    return _slow_to_minor(text, exp)


def _slow_to_minor(text: str, exp: int) -> int | MoneyError:
    """Everything off the fast path: signs, exponents, whitespace, garbage."""
    stripped = text.strip()
    if not stripped:
        return MoneyError("empty amount")
    if not stripped.isascii():  # Decimal() would accept "١٢" (Arabic-Indic digits) as 12
        return MoneyError(f"not a decimal amount: {text!r}")
    try:
        value = Decimal(stripped)
    except InvalidOperation:
        return MoneyError(f"not a decimal amount: {text!r}")
    if not value.is_finite():
        return MoneyError(f"not a finite amount: {text!r}")
    if value < 0:
        return MoneyError(f"negative amount {text!r}")
    scaled = value.scaleb(exp)
    if scaled != scaled.to_integral_value():
        return MoneyError(f"{text!r} has more than {exp} decimal places")
    return int(scaled)


def from_minor(minor: int, currency: str) -> str:
    """Minor units back to the canonical decimal string ("199.00"), for display and round trips."""
    exp = MINOR_UNITS[currency]
    if exp == 0:
        return str(minor)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(minor), _POW10[exp])
    return f"{sign}{whole}.{frac:0{exp}d}"
