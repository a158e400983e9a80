"""Recipient history: orders per recipient in the last 24 h, counted once, forgotten when due."""

from __future__ import annotations

from core.dedup import apply_updates
from core.recipient_history import DAY_MS, HISTORY, count_recent, history_keys
from tests.core.test_dedup import T0, order


class Store:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def run(self, orders, now):  # type: ignore[no-untyped-def]
        keys = history_keys(orders)
        held = {k: self.data.get(k) for k in keys}
        counts, updates = count_recent(orders, held, now)
        apply_updates(self.data, updates)
        return counts


def test_counts_grow_within_a_day_and_reset_after() -> None:
    s = Store()
    hour = 3_600_000
    orders = [order(str(i), created=T0 + i * hour) for i in range(4)]
    assert s.run(orders[:1], T0) == [1]
    assert s.run(orders[1:3], T0) == [2, 3]
    late = order("later", created=T0 + 2 * hour + DAY_MS)  # the first two are a day older
    assert s.run([orders[3], late], T0) == [4, 2]


def test_a_redelivered_order_is_counted_once() -> None:
    s = Store()
    first = order("1", created=T0)
    assert s.run([first], T0) == [1]
    assert s.run([first, order("2", created=T0 + 1)], T0) == [1, 2]


def test_other_recipients_do_not_count() -> None:
    s = Store()
    a = order("1", created=T0)
    b = order("2", created=T0 + 1, phone="+8613900000000")
    assert s.run([a, b], T0) == [1, 1]


def test_state_stays_bounded_by_a_day_of_recipients() -> None:
    s = Store()
    minute = 60_000
    for day in range(5):
        for batch in range(24):
            t = T0 + day * DAY_MS + batch * 3_600_000
            orders = [
                order(
                    f"{day}-{batch}-{i}", created=t + i, phone=f"+86139{day:02d}{batch:02d}{i:04d}"
                )
                for i in range(50)
            ]
            s.run(orders, t + minute)
    # one key per recipient and day, and only yesterday's and today's are kept
    histories = sum(1 for k in s.data if k.startswith(HISTORY))
    assert histories <= 2 * 24 * 50


def test_an_order_too_old_to_keep_counts_itself_and_is_not_stored() -> None:
    s = Store()
    now = T0 + 5 * DAY_MS
    assert s.run([order("old", created=T0)], now) == [1]
    assert not any(k.startswith(HISTORY) for k in s.data)


def test_counts_span_midnight() -> None:
    s = Store()
    midnight = (T0 // DAY_MS + 1) * DAY_MS
    before, after = order("1", created=midnight - 60_000), order("2", created=midnight + 60_000)
    assert s.run([before], midnight) == [1]
    assert s.run([after], midnight + 120_000) == [2]
