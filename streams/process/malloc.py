"""glibc malloc settings that keep a long-running process's resident memory near what it uses.

glibc gives each thread that allocates concurrently its own arena (up to 8 per core) and keeps
freed memory in them: RocksDB's background threads, the Kafka client's thread and the executor
threads of a worker each grow an arena during a backlog and hold it afterwards, so resident
memory stays at the backlog's peak. Two arenas cost nothing measurable here; trimming returns
the free pages of every arena after a backlog. No-ops where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("orderstream.malloc")

_M_ARENA_MAX = -8  # mallopt parameter, glibc's malloc.h


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if not name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt  # noqa: B018 - glibc only
        libc.malloc_trim  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


_LIBC = _libc()


def limit_arenas(arenas: int = 2) -> None:
    """Call first thing in a process, before it starts threads."""
    if _LIBC is not None and not _LIBC.mallopt(_M_ARENA_MAX, arenas):
        log.warning("mallopt(M_ARENA_MAX, %d) refused", arenas)


def trim() -> None:
    """Give free heap pages back to the system (a few ms on a heap of hundreds of MiB)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
