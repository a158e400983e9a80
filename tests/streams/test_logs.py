"""streams.logs: readable or JSON lines; the libraries' narration kept out unless debugging."""

from __future__ import annotations

import io
import json
import logging

import pytest

from streams import logs


@pytest.fixture
def restore_logging():  # type: ignore[no-untyped-def]
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    levels = {n: logging.getLogger(n).level for n in ("faust", "mode", "aiokafka")}
    yield
    root.handlers[:], root.level = saved
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def _capture() -> io.StringIO:
    out = io.StringIO()
    logging.getLogger().handlers[0].setStream(out)  # type: ignore[attr-defined]
    return out


def test_json_lines_carry_level_logger_pid_and_exception(restore_logging) -> None:  # type: ignore[no-untyped-def]
    logs.configure("info", "json")
    out = _capture()
    logging.getLogger("orderstream.serve").info("ready in %.1fs", 6.5)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("orderstream.worker").exception("batch failed")
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == "ready in 6.5s" and first["level"] == "info"
    assert first["logger"] == "orderstream.serve" and first["ts"].endswith("Z")
    assert isinstance(first["pid"], int)
    assert second["level"] == "error" and "ValueError: boom" in second["exc"]


def test_faust_and_mode_speak_only_warnings_unless_debugging(restore_logging) -> None:  # type: ignore[no-untyped-def]
    logs.configure("info")
    out = _capture()
    logging.getLogger("faust.agents.agent").info("Starting...")
    logging.getLogger("mode.supervisors").info("Starting...")
    logging.getLogger("faust.worker").warning("a rebalance took 9 s")
    logging.getLogger("orderstream.serve").info("worker 0 started")
    text = out.getvalue()
    assert "Starting..." not in text
    assert "a rebalance took 9 s" in text and "worker 0 started" in text
    logs.configure("debug")
    out = _capture()
    logging.getLogger("faust.agents.agent").debug("Starting...")
    assert "Starting..." in out.getvalue()
