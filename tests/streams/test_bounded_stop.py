"""A stop step that does not finish is named in the log and left behind, never waited out."""

from __future__ import annotations

import asyncio
import logging

import pytest

from streams.process import supervisor


def test_a_step_that_hangs_is_named_and_the_stop_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(supervisor, "STOP_STEP_S", 0.2)

    async def stubborn() -> None:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(3600)  # ignores the first cancel, as a stuck close may

    async def run() -> float:
        quick = asyncio.create_task(asyncio.sleep(0), name="quick")
        stuck = asyncio.create_task(stubborn(), name="stuck")
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await supervisor._bounded(quick, stuck)
        took = loop.time() - t0
        stuck.cancel()  # the second cancel ends it
        return took

    with caplog.at_level(logging.WARNING, logger="orderstream.serve"):
        took = asyncio.run(run())
    assert took < 1.0
    assert "stuck did not finish" in caplog.text and "quick" not in caplog.text


def test_a_named_step(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(supervisor, "STOP_STEP_S", 0.1)

    async def run() -> None:
        await supervisor._bounded(
            asyncio.ensure_future(asyncio.sleep(3600)), what="the HTTP server's close"
        )

    with caplog.at_level(logging.WARNING, logger="orderstream.serve"):
        asyncio.run(run())
    assert "the HTTP server's close did not finish" in caplog.text
