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
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

import msgspec

PREFIX = b"pb:"  # + commit ms (8 bytes big-endian) + epoch (32) + pid (4) + sequence (4)
END = b"pb;"
# The hub's "read through" comes from producer timestamps and fetch times; a row is deleted
# only this far behind it (timestamps within a partition are not strictly ordered).
MARGIN_MS = 10_000
# Kept at most this long even if the hub never reads them (the store stays bounded).
MAX_AGE_MS = 900_000
_EPOCH_LEN = 32
_T = len(PREFIX)
_E = _T + 8
THROUGH_FILE = "sync-through.json"
KEEP_EPOCHS = 16
ALL_READ = 2**62  # "through" of an epoch the hub read to its end after its last writer stopped


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
    """The store row keeping ``pubs``, committed with the state that produced them. Time and
    epoch are in the key: a sweep decides from keys alone and reads values only to resend."""
    seq = (next(_seq) & 0xFFFFFFFF).to_bytes(4, "big")
    key = PREFIX + now.to_bytes(8, "big") + _epoch_bytes(epoch) + _PID + seq
    return key, _pubs_enc.encode([tuple(p) for p in pubs])


def row_time(key: bytes) -> int:
    return int.from_bytes(key[_T:_E], "big")


def decode_pubs(value: bytes) -> list[Publication] | None:
    """None for a row that does not decode (written by another version): it is dropped with
    an error in the log; a sweep must never stop a worker (a timer's exception would, over and
    over)."""
    try:
        return [Publication(*p) for p in _pubs_dec.decode(value)]
    except (msgspec.DecodeError, msgspec.ValidationError, TypeError):
        return None


class Sweep(NamedTuple):
    delete: list[bytes]  # read by the hub (or too old)
    resend: list[bytes]  # an earlier epoch's, not read by the hub: send again, then delete
    next_start: bytes  # every row before this key is decided (where the next scan starts)


def sweep(keys: Iterable[bytes], epoch: str, through: Mapping[str, int], now: int) -> Sweep:
    """Decide rows in key (time) order: read by the hub, or too old -> delete; this epoch's
    and unread -> keep, and stop (every later row of this epoch is newer still); an earlier
    epoch's that the hub had not read -> send again on this epoch.

    ``through``: per broker epoch, the time before which the hub had read every change. An
    epoch missing from it (the hub never said) counts as nothing read: sending a change twice
    is harmless (the hub drops copies, subscribers dedupe on order and version), losing one
    is not. Rows of an earlier epoch are all older than this epoch's first (rows resent are
    written anew), so the scan may stop at this epoch's first unread row.
    """
    mine = _epoch_bytes(epoch)
    stamps = {_epoch_bytes(e): t - MARGIN_MS for e, t in through.items()}
    oldest = now - MAX_AGE_MS
    delete: list[bytes] = []
    resend: list[bytes] = []
    next_start = PREFIX
    for key in keys:
        at = row_time(key)
        stamp = key[_E : _E + _EPOCH_LEN]
        read = stamps.get(stamp)
        if at < oldest or (read is not None and at < read):
            delete.append(key)
        elif stamp == mine:
            return Sweep(delete, resend, key)
        else:
            resend.append(key)
        next_start = key + b"\x00"
    return Sweep(delete, resend, next_start)


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
