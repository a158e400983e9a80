"""The publication log: changes a stage published, kept until the sync hub has read them.

The embedded broker keeps messages in memory only. A change the broker acknowledged, committed
with the order's state, but not yet copied into the sync log when the broker dies would never
reach a subscriber: the order is recorded, and a replay of it changes nothing. So a commit that
publishes changes also keeps them here, in the same write batch, stamped with the broker epoch
and the commit time. The sync hub says how far it has read, per epoch (``read_through``, a
small file beside the data); workers delete what it has read and, on a new epoch, send again
what the old broker took with it. The hub drops a copy it already holds (same JSON).

Only with the embedded broker: an external cluster keeps what it acknowledged.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import msgspec

PREFIX = b"pb:"  # + commit ms (8 bytes big-endian) + pid (4) + sequence (4)
END = b"pb;"
# The hub's "read through" comes from producer timestamps and fetch times; a row is deleted
# only this far behind it (timestamps within a partition are not strictly ordered).
MARGIN_MS = 10_000
# Kept at most this long even if the hub never reads them (the store stays bounded).
MAX_AGE_MS = 900_000
_EPOCH_LEN = 32
THROUGH_FILE = "sync-through.json"
KEEP_EPOCHS = 16


class Publication(NamedTuple):
    """One message as it was sent: enough to send it again, byte for byte."""

    topic: str
    partition: int
    kind: bytes
    value: bytes


_pubs_enc = msgspec.msgpack.Encoder()
_pubs_dec = msgspec.msgpack.Decoder(list[tuple[str, int, bytes, bytes]])
_seq = itertools.count()
_PID = (os.getpid() & 0xFFFFFFFF).to_bytes(4, "big")


def _epoch_bytes(epoch: str) -> bytes:
    return epoch.encode()[:_EPOCH_LEN].ljust(_EPOCH_LEN)


def row(pubs: list[Publication], now: int, epoch: str) -> tuple[bytes, bytes]:
    """The store row keeping ``pubs``, committed with the state that produced them."""
    seq = (next(_seq) & 0xFFFFFFFF).to_bytes(4, "big")
    key = PREFIX + now.to_bytes(8, "big") + _PID + seq
    return key, _epoch_bytes(epoch) + _pubs_enc.encode([tuple(p) for p in pubs])


def row_time(key: bytes) -> int:
    return int.from_bytes(key[len(PREFIX) : len(PREFIX) + 8], "big")


def decode_pubs(value: bytes) -> list[Publication]:
    return [Publication(*p) for p in _pubs_dec.decode(value[_EPOCH_LEN:])]


class Sweep(NamedTuple):
    resend: list[Publication]  # an earlier epoch's, not read by the hub: send again
    updates: list[tuple[bytes, bytes | None]]  # deletes, and the resent ones as rows of now
    first_kept: bytes | None  # every row before this key is gone (where the next scan starts)


def sweep(
    rows: list[tuple[bytes, bytes]], epoch: str, through: Mapping[str, int], now: int
) -> Sweep:
    """Decide each row: read by the hub (or too old) -> delete; this epoch's -> keep; an earlier
    epoch's that the hub had not read -> send again on this epoch.

    ``through``: per broker epoch, the time before which the hub had read every change. An
    epoch missing from it (the hub never said) counts as nothing read: sending a change twice
    is harmless (the hub drops copies, subscribers dedupe on order and version), losing one
    is not.
    """
    mine = _epoch_bytes(epoch)
    resend: list[Publication] = []
    updates: list[tuple[bytes, bytes | None]] = []
    first_kept: bytes | None = None
    stamps = {_epoch_bytes(e): t for e, t in through.items()}
    for key, value in rows:
        at = row_time(key)
        stamp = value[:_EPOCH_LEN]
        read = stamps.get(stamp)
        if at < now - MAX_AGE_MS or (read is not None and at < read - MARGIN_MS):
            updates.append((key, None))
        elif stamp == mine:
            if first_kept is None:
                first_kept = key
        else:
            resend += decode_pubs(value)
            updates.append((key, None))
    if resend:
        new_key, new_value = row(resend, now, epoch)
        updates.append((new_key, new_value))
        if first_kept is None or new_key < first_kept:
            first_kept = new_key
    if first_kept is None and updates:
        first_kept = updates[-1][0] + b"\x00"
    return Sweep(resend, updates, first_kept)


# -- how far the hub has read, per epoch: written by the API process, read by workers ----------


def through_path(data: Path) -> Path:
    return data / THROUGH_FILE


def read_through(data: Path) -> dict[str, int]:
    """Epoch -> ms before which the hub has read every change; {} when unknown."""
    try:
        raw = json.loads(through_path(data).read_bytes())
    except (OSError, ValueError):
        return {}
    if not isinstance(raw, dict):
        return {}
    return {str(k): int(v) for k, v in raw.items() if isinstance(v, int)}


def write_through(data: Path, epochs: Mapping[str, int]) -> None:
    """Atomically (rename), newest KEEP_EPOCHS epochs (dict order: oldest first)."""
    items = list(epochs.items())[-KEEP_EPOCHS:]
    path = through_path(data)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(dict(items)))
    os.replace(tmp, path)
