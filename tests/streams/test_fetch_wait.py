from __future__ import annotations

from streams.kafka.fetch_wait import HOLD_S, IDLE_WAIT_MS, next_wait_ms


def test_records_keep_the_busy_wait() -> None:
    assert next_wait_ms(IDLE_WAIT_MS, 20, True, 0.0) == 20


def test_a_short_gap_keeps_the_busy_wait() -> None:
    assert next_wait_ms(20, 20, False, HOLD_S / 2) == 20


def test_an_idle_consumer_doubles_its_wait_up_to_the_cap() -> None:
    waits = [20]
    for _ in range(12):
        waits.append(next_wait_ms(waits[-1], 20, False, HOLD_S + 1))
    assert waits[:7] == [20, 40, 80, 160, 320, 640, IDLE_WAIT_MS]
    assert set(waits[6:]) == {IDLE_WAIT_MS}


def test_a_wait_longer_than_the_cap_is_never_chosen_for_a_short_busy_wait() -> None:
    assert next_wait_ms(10, 10, False, 10.0) == 20
    assert next_wait_ms(IDLE_WAIT_MS, 5, False, 10.0) == IDLE_WAIT_MS


def test_a_consumer_built_with_a_long_wait_keeps_it() -> None:
    assert next_wait_ms(1500, 1500, False, 10.0) == 1500
