"""Times become UTC epoch ms; zone-less channel times are Asia/Shanghai, never the host zone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.times import TimeError, iso_to_ms, local_to_ms, unix_to_ms

# 2026-01-01T00:00Z: 56 years since 1970 with 14 leap days -> 20454 days -> 1767225600 s.
# 2026-11-23 is 326 days later (Jan..Oct = 304 days, + 22) -> 1795392000 s at 00:00Z.
MIDNIGHT_UTC_2026_11_23 = 1_795_392_000_000


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-23T00:00:00Z", MIDNIGHT_UTC_2026_11_23),
        ("2026-11-23T00:00:00+00:00", MIDNIGHT_UTC_2026_11_23),
        ("2026-11-23T10:00:00-05:00", MIDNIGHT_UTC_2026_11_23 + 15 * 3_600_000),
        ("2026-11-23T08:00:00+08:00", MIDNIGHT_UTC_2026_11_23),
        ("2026-11-23T00:00:00.123Z", MIDNIGHT_UTC_2026_11_23 + 123),
        ("2026-11-23T00:00:00.123999Z", MIDNIGHT_UTC_2026_11_23 + 123),  # floor, not round
    ],
)
def test_iso(text: str, expected: int) -> None:
    assert iso_to_ms(text) == expected


@pytest.mark.parametrize(
    "text", ["2026-11-23T10:00:00", "2026-11-23 10:00:00", "yesterday", "", "2026-13-01T00:00:00Z"]
)
def test_iso_errors(text: str) -> None:
    assert isinstance(iso_to_ms(text), TimeError)


def test_local_shanghai_by_hand() -> None:
    # Asia/Shanghai is UTC+8 all year (no DST since 1991): 10:00 local is 02:00Z.
    assert local_to_ms("2026-11-23 10:00:00") == MIDNIGHT_UTC_2026_11_23 + 2 * 3_600_000
    # Local midnight is 16:00Z the previous day.
    assert local_to_ms("2026-11-23 00:00:00") == MIDNIGHT_UTC_2026_11_23 - 8 * 3_600_000


def test_local_in_other_zone_and_explicit_offset() -> None:
    plus_one = timezone(timedelta(hours=1))
    assert local_to_ms("2026-11-23 01:00:00", plus_one) == MIDNIGHT_UTC_2026_11_23
    # An explicit offset wins over the channel's zone.
    assert local_to_ms("2026-11-23 00:00:00+00:00") == MIDNIGHT_UTC_2026_11_23


@pytest.mark.parametrize(
    "text",
    ["", "2026-11-23", "2026/11/23 10:00:00", "0000-00-00 00:00:00", "2026-11-23 25:00:00", "now"],
)
def test_local_errors(text: str) -> None:
    assert isinstance(local_to_ms(text), TimeError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1_795_392_000, MIDNIGHT_UTC_2026_11_23),
        (1_795_392_000_123, MIDNIGHT_UTC_2026_11_23 + 123),  # already ms
        ("1795392000", MIDNIGHT_UTC_2026_11_23),
        (0, 0),
    ],
)
def test_unix(value: int | str, expected: int) -> None:
    assert unix_to_ms(value) == expected


@pytest.mark.parametrize("value", [-1, "abc", "", 1.5, True, None, "-5"])
def test_unix_errors(value: object) -> None:
    assert isinstance(unix_to_ms(value), TimeError)  # type: ignore[arg-type]


@given(
    st.datetimes(
        min_value=datetime(1971, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=8)), timezone(-timedelta(hours=5))]
        ),
    )
)
def test_iso_matches_integer_arithmetic(dt: datetime) -> None:
    expected = (dt - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    assert iso_to_ms(dt.isoformat()) == expected
