"""The forwarder's switch to another broker (a broker swap): exact, never mid-send."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import msgspec

from streams.ingest.forwarder import Forwarder
from streams.settings import Settings


def test_hold_waits_for_the_send_in_flight_and_redirect_keeps_the_cursor() -> None:
    async def scenario() -> None:
        journal: Any = SimpleNamespace(oldest_live=lambda: 8)
        fwd = Forwarder(journal, Settings())
        fwd.cursor = 41
        fwd._sending = True  # a round's send is awaiting the old broker's acks

        async def acked() -> None:
            await asyncio.sleep(0.05)
            fwd.cursor = 57  # the round's last seq, set once acknowledged
            fwd._sending = False

        task = asyncio.create_task(acked())
        nxt = msgspec.structs.replace(Settings(), broker_port=19999)
        sent_before = await fwd.redirect(nxt)
        await task
        # everything up to 57 went to the old broker; what comes next goes to the new one
        assert sent_before == 57 and fwd.cursor == 57
        assert fwd.settings.bootstrap_servers == "127.0.0.1:19999" and not fwd.paused
        # the old broker's share is done once nothing up to 57 is unsettled (8 still is)
        assert not fwd.forwarded_settled(sent_before)
        journal.oldest_live = lambda: 58
        assert fwd.forwarded_settled(sent_before)

    asyncio.run(scenario())
