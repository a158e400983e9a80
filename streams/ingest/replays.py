"""Which dead letters an operator replayed, when, by whom, and what became of them.

A replay journals the letter's payload again (or the operator's corrected payload), so the order
goes through ingest as if it had just arrived; this log makes the replay visible in the
dead-letter list and refuses a second one. The log is appended and fsynced after the journal
append: a crash between the two leaves a replay that can be repeated, which the exact dedup
turns into a no-op (the global id is the same).
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec


class Replay(msgspec.Struct, kw_only=True):
    key: str  # the dead letter's key
    at: int  # epoch ms
    actor: str
    status: str  # accepted | rejected (the payload still cannot be read: a new dead letter)
    id: str = ""  # the order's global id when accepted
    corrected: bool = False  # the operator sent a corrected payload
    reason: str = ""


_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(Replay)


class ReplayLog:
    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.by_key: dict[str, Replay] = {}
        if path.exists():
            for line in path.read_bytes().splitlines():
                if line.strip():
                    try:
                        r = _dec.decode(line)
                    except msgspec.DecodeError:
                        continue  # a torn last line after a crash
                    self.by_key[r.key] = r

    def get(self, key: str) -> Replay | None:
        return self.by_key.get(key)

    def add(self, replay: Replay) -> None:
        with self.path.open("ab") as f:
            f.write(_enc.encode(replay) + b"\n")
            f.flush()
            os.fsync(f.fileno())
        self.by_key[replay.key] = replay
