"""The reservation outbox: requests are kept with the state that sent them until answered."""

from __future__ import annotations

from core.inventory import ReservationResult, ReserveRequest
from streams.stages import order_state
from streams.stages.order_state import (
    OUTBOX_PREFIX,
    RESEND_AFTER_MS,
    EnvelopeOutcome,
    due_resends,
    outbox_key,
)


def test_sent_requests_are_kept_and_answers_remove_them() -> None:
    out = EnvelopeOutcome()
    reqs = [
        ReserveRequest("reserve", "os_1", "SKU-1", 2, ["main"]),
        ReserveRequest("release", "os_2", "SKU-2", 1),
    ]
    out.requests += reqs
    rows = [(k, v) for k, v in out.store_updates() if k.startswith(OUTBOX_PREFIX)]
    assert [k for k, _ in rows] == [
        outbox_key("os_1", "SKU-1", "reserve", 0),
        outbox_key("os_2", "SKU-2", "release", 0),
    ]
    sent_at = int.from_bytes(rows[0][1][:8], "big")
    assert due_resends(rows, sent_at + RESEND_AFTER_MS - 1) == ([], [])
    again, refreshed = due_resends(rows, sent_at + RESEND_AFTER_MS + 1)
    assert again == reqs
    assert [int.from_bytes(v[:8], "big") for _, v in refreshed] == [
        sent_at + RESEND_AFTER_MS + 1
    ] * 2
    result = ReservationResult("os_1", "SKU-1", "reserve", "granted", "main", 2, "", 1)
    answered = order_state.apply_reservation_results([result], [None], 1, None)  # type: ignore[arg-type]
    assert answered.updates[outbox_key("os_1", "SKU-1", "reserve", 0)] is None
