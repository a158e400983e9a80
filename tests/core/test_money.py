"""Money must be exact: every cent a channel sends survives, and nothing is silently rounded."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.money import MINOR_UNITS, MoneyError, from_minor, to_minor


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        ("199.00", "CNY", 19900),
        ("199", "CNY", 19900),
        ("0.5", "USD", 50),
        ("19.99", "USD", 1999),
        ("1.000", "USD", 100),  # trailing zeros beyond the exponent are harmless
        ("1980.00", "JPY", 1980),  # Amazon JP sends yen with ".00"
        ("1980", "KRW", 1980),
        ("1.250", "KWD", 1250),
        ("0.005", "BHD", 5),
        (199, "CNY", 19900),
        (0, "USD", 0),
        (99.0, "CNY", 9900),  # PDD floats
        (19.9, "CNY", 1990),  # 19.9 * 100 == 1989.9999999999998 in float math
        (0.1, "USD", 10),
        (1e-2, "USD", 1),
        (" 12.30 ", "EUR", 1230),
        ("1e2", "USD", 10000),
    ],
)
def test_to_minor_exact(amount: str | int | float, currency: str, expected: int) -> None:
    assert to_minor(amount, currency) == expected


@pytest.mark.parametrize(
    ("amount", "currency", "reason_part"),
    [
        ("1.001", "USD", "more than 2 decimal places"),
        ("1.50", "JPY", "more than 0 decimal places"),
        (0.001, "USD", "more than 2 decimal places"),
        ("1.0001", "KWD", "more than 3 decimal places"),
        ("-1.00", "USD", "negative"),
        (-5, "USD", "negative"),
        (-0.5, "USD", "negative"),
        ("", "USD", "empty"),
        ("1,000.00", "USD", "not a decimal"),
        ("abc", "USD", "not a decimal"),
        ("NaN", "USD", "not a finite"),
        (float("inf"), "USD", "not a finite"),
        (True, "USD", "got bool"),
        (None, "USD", "got NoneType"),
        ("١٢", "USD", "not a decimal"),  # Arabic-Indic digits: str.isdigit() but not ASCII
    ],
)
def test_to_minor_errors(amount: object, currency: str, reason_part: str) -> None:
    result = to_minor(amount, currency)  # type: ignore[arg-type]
    assert isinstance(result, MoneyError)
    assert reason_part in result.reason


def test_unknown_currency_is_an_error_not_a_guess() -> None:
    result = to_minor("1.00", "XYZ")
    assert isinstance(result, MoneyError)
    assert "unknown currency" in result.reason


@pytest.mark.parametrize(
    ("currency", "exp"),
    [
        ("JPY", 0),
        ("KRW", 0),
        ("VND", 0),
        ("CNY", 2),
        ("USD", 2),
        ("EUR", 2),
        ("GBP", 2),
        ("HKD", 2),
        ("TWD", 2),
        ("SGD", 2),
        ("MYR", 2),
        ("AUD", 2),
        ("CAD", 2),
        ("KWD", 3),
        ("BHD", 3),
        ("JOD", 3),
        ("OMR", 3),
        ("TND", 3),
    ],
)
def test_exponents(currency: str, exp: int) -> None:
    assert MINOR_UNITS[currency] == exp


@given(
    currency=st.sampled_from(sorted(MINOR_UNITS)),
    data=st.data(),
)
def test_round_trip_any_decimal_within_exponent(currency: str, data: st.DataObject) -> None:
    exp = MINOR_UNITS[currency]
    value = data.draw(
        st.decimals(min_value=0, max_value=Decimal(10) ** 15, places=exp, allow_nan=False)
    )
    text = format(value, "f")
    minor = to_minor(text, currency)
    assert minor == int(value.scaleb(exp))
    assert Decimal(from_minor(minor, currency)) == value  # type: ignore[arg-type]


@given(value=st.decimals(min_value=0, max_value=10**12, places=2, allow_nan=False))
def test_floats_read_through_repr_are_exact(value: Decimal) -> None:
    assert to_minor(float(value), "CNY") == int(value * 100)


@given(
    value=st.decimals(min_value=0, max_value=10**9, places=6, allow_nan=False),
    currency=st.sampled_from(["USD", "JPY", "KWD"]),
)
def test_more_places_than_exponent_error_unless_zero(value: Decimal, currency: str) -> None:
    exp = MINOR_UNITS[currency]
    result = to_minor(format(value, "f"), currency)
    if value == value.quantize(Decimal(1).scaleb(-exp)):
        assert result == int(value.scaleb(exp))
    else:
        assert isinstance(result, MoneyError)


def test_from_minor() -> None:
    assert from_minor(19900, "CNY") == "199.00"
    assert from_minor(5, "USD") == "0.05"
    assert from_minor(1980, "JPY") == "1980"
    assert from_minor(1250, "KWD") == "1.250"
