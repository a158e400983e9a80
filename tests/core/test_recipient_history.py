"""Recipient history: orders per recipient in the last 24 h, counted once, forgotten when due."""

from __future__ import annotations

from core.recipient_history import DAY_MS, EXPIRY, HISTORY, count_recent, due_bound, history_keys
from tests.core.test_dedup import T0, order


class Store:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def run(self, orders, now):  # type: ignore[no-untyped-def]
        keys = history_keys(orders)
        held = {k: self.data.get(k) for k in keys}
        bound = due_bound(now)
        due = sorted((k, v) for k, v in self.data.items() if k.startswith(EXPIRY) and k < bound)
        counts, updates = count_recent(orders, held, due)
        for k, v in updates:
            if v is None:
                self.data.pop(k, None)
            else:
                self.data[k] = v
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
    histories = sum(1 for k in s.data if k.startswith(HISTORY))
    expiries = sum(1 for k in s.data if k.startswith(EXPIRY))
    assert histories == expiries
    assert histories <= 25 * 50  # about one day of distinct recipients, not five
