"""Log output every process of the service shares: readable lines, or JSON for log shippers.

What an operator needs from ``orderstream serve`` is the service's own lifecycle lines (ready,
worker restarted, broker replaced, memory actions, auth refusals). Faust and mode narrate every
agent start and rebalance step at INFO (~160 lines per start on two workers), so they log at
WARNING unless the level is ``debug``; aiokafka's reconnect chatter is silenced further (the
supervisor and forwarder report outages once, in their own words).
"""

from __future__ import annotations

import logging
import time

import msgspec

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s[%(process)d] %(message)s"
_LIBRARIES = ("faust", "mode")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (ISO 8601 UTC), ``level``, ``logger``, ``pid``,
    ``message`` and, for an exception, ``exc``."""

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        line = {
            "ts": f"{ts}.{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "pid": record.process,
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return msgspec.json.encode(line).decode()


def configure(level: str, fmt: str = "text") -> None:
    """Root handler on stderr at ``level`` (debug, info, warn, error), as text or JSON."""
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(_LEVELS.get(level, logging.ERROR))
    quiet = logging.DEBUG if level == "debug" else logging.WARNING
    for name in _LIBRARIES:
        logging.getLogger(name).setLevel(quiet)
    # aiokafka logs every reconnect attempt at ERROR (ten a second while a broker is down)
    logging.getLogger("aiokafka").setLevel(logging.DEBUG if level == "debug" else logging.CRITICAL)
