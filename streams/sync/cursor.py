"""Resume positions that mean the same on every node of a cluster.

Each node copies the change topics into its own sync log, and the order in which partitions'
records interleave there depends on its fetches: a node's event numbers mean nothing to another
node. What every node agrees on is where each change sits in its topic partition: (message
offset, index of the change within the message's envelope). So on a cluster a subscriber's
position is a vector with, per topic partition, the next position it has not yet seen; an SSE
``id:`` carries it, and any node resumes from it without a gap or a duplicate (per partition, so
per order and per SKU, in order).

A position is one integer, ``offset << IDX_BITS | index``; an event's source adds its topic
partition's number above that (``src``). The text form is versioned and names the broker epoch
(a broker that came back empty starts its offsets again): ``c1.<epoch>.<hex>.<hex>…``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

IDX_BITS = 20  # changes per message: envelopes hold at most a few thousand
POS_BITS = 56  # a position: offsets up to 2**36
POS_MASK = (1 << POS_BITS) - 1
PREFIX = "c1."
EPOCH_CHARS = 8


class CursorError(ValueError):
    """A resume id that is not a cursor of this cluster (field: Last-Event-ID)."""


class HasSrc(Protocol):
    @property
    def src(self) -> int: ...


def position(offset: int, index: int) -> int:
    return offset << IDX_BITS | index


def source(tp_index: int, offset: int, index: int) -> int:
    return tp_index << POS_BITS | position(offset, index)


def split(src: int) -> tuple[int, int]:
    """(topic partition index, position) of an event's source."""
    return src >> POS_BITS, src & POS_MASK


def event_key(src: int) -> str:
    """An event's name on every node: topic partition, offset and index within its message."""
    tp, pos = split(src)
    return f"{tp}-{pos >> IDX_BITS}-{pos & ((1 << IDX_BITS) - 1)}"


class Cursor:
    """Per topic partition, the next position not yet delivered; formatted incrementally (a
    subscriber formats one per event, and only one component changes each time)."""

    __slots__ = ("_parts", "epoch", "next")

    def __init__(self, epoch: str, next_positions: list[int]) -> None:
        self.epoch = epoch[:EPOCH_CHARS]
        self.next = list(next_positions)
        self._parts = [PREFIX + self.epoch, *(format(p, "x") for p in self.next)]

    def delivered(self, ev: HasSrc) -> bool:
        tp, pos = split(ev.src)
        return pos < self.next[tp]

    def step(self, ev: HasSrc) -> None:
        tp, pos = split(ev.src)
        if pos >= self.next[tp]:
            self.next[tp] = pos + 1
            self._parts[tp + 1] = format(pos + 1, "x")

    def advance(self, events: Iterable[HasSrc]) -> str:
        """Past ``events`` (a delivered batch, in log order); the text to store as progress.

        A webhook's progress is this text, not an event id, so the node that delivers it next
        (after a handover) resumes from it with ``SyncLog.start_for``."""
        for ev in events:
            self.step(ev)
        return self.format()

    def format(self) -> str:
        return ".".join(self._parts)

    def copy(self) -> Cursor:
        return Cursor(self.epoch, self.next)


def parse(text: str, epoch: str, tps: int) -> Cursor | None:
    """The cursor ``text`` names; None when it belongs to another broker epoch (its positions
    mean nothing now: resume from the start of this epoch)."""
    if not text.startswith(PREFIX):
        raise CursorError(f"not a resume id of this cluster (c1.…), got {text[:80]!r}")
    parts = text[len(PREFIX) :].split(".")
    if len(parts) != tps + 1:
        raise CursorError(f"names {len(parts) - 1} topic partitions, this service has {tps}")
    try:
        positions = [int(p, 16) for p in parts[1:]]
    except ValueError:
        raise CursorError(f"malformed position in {text[:80]!r}") from None
    if any(p < 0 or p > POS_MASK for p in positions):
        raise CursorError("a position out of range")
    if parts[0] != epoch[:EPOCH_CHARS]:
        return None
    return Cursor(epoch, positions)
