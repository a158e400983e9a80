"""Who holds which partition: each node's record in ``orderstream.members``, read by all.

A node's supervisor asks its own workers what they hold once a second and publishes its record
when that changed, and every few seconds anyway (a heartbeat): so a request reaching any node
can go straight to the node whose worker owns the key's partition. A record not refreshed for
``LIVE_S`` is a dead node's. Two live records may claim a partition for a moment during a
rebalance (the old owner's record not yet refreshed): the claim made last wins, and a node that
is asked about a partition it no longer holds says so, and the caller asks again.
"""

from __future__ import annotations

import logging
import time

import msgspec

from streams.cluster.table import CompactedTable

log = logging.getLogger("orderstream.cluster")

LIVE_S = 10.0  # a record older than this is a dead node's
HEARTBEAT_S = 3.0


class NodeRecord(msgspec.Struct, kw_only=True):
    node: str
    url: str  # the node's HTTP API, as the other nodes reach it
    # partitions per topic held by this node's workers (Faust co-partitions the hot topics, so
    # these are usually the same numbers for every topic)
    partitions: dict[str, list[int]] = {}
    at: int  # ms: written
    changed_at: int  # ms: when ``partitions`` last changed
    started_at: int
    leaving: bool = False


_enc = msgspec.json.Encoder()
_dec = msgspec.json.Decoder(NodeRecord)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def held_partitions(assigned: list[str]) -> dict[str, list[int]]:
    """``["orders.unique:0", ...]`` (a worker's /internal/health) -> topic -> partitions."""
    out: dict[str, list[int]] = {}
    for item in assigned:
        topic, _, part = item.rpartition(":")
        if topic and part.isdigit():
            out.setdefault(topic, []).append(int(part))
    for parts in out.values():
        parts.sort()
    return out


class Membership:
    def __init__(self, table: CompactedTable, node: str, url: str) -> None:
        self.table = table
        self.node = node
        self.url = url
        self.started_at = _now_ms()
        self.partitions: dict[str, list[int]] = {}
        self.changed_at = self.started_at
        self._published = 0.0

    def records(self, now_ms: int | None = None) -> list[NodeRecord]:
        """Every live node's record (this node's included once it has published)."""
        now_ms = now_ms or _now_ms()
        out = []
        for raw in self.table.values.values():
            try:
                rec = _dec.decode(raw)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            if not rec.leaving and now_ms - rec.at < LIVE_S * 1000:
                out.append(rec)
        return out

    def peers(self) -> list[NodeRecord]:
        return [r for r in self.records() if r.node != self.node]

    def owner(self, topic: str, partition: int) -> NodeRecord | None:
        """The live node whose workers hold ``topic``'s ``partition`` (the latest claim)."""
        claims = [r for r in self.records() if partition in r.partitions.get(topic, ())]
        return max(claims, key=lambda r: r.changed_at) if claims else None

    def unowned(self, topic: str, partitions: int) -> list[int]:
        held: set[int] = set()
        for r in self.records():
            held.update(r.partitions.get(topic, ()))
        return [p for p in range(partitions) if p not in held]

    async def publish(self, partitions: dict[str, list[int]], leaving: bool = False) -> None:
        """This node's record, when what it holds changed or a heartbeat is due."""
        now = time.monotonic()
        if partitions != self.partitions:
            self.partitions = partitions
            self.changed_at = _now_ms()
        elif not leaving and now - self._published < HEARTBEAT_S:
            return
        rec = NodeRecord(
            node=self.node,
            url=self.url,
            partitions=partitions,
            at=_now_ms(),
            changed_at=self.changed_at,
            started_at=self.started_at,
            leaving=leaving,
        )
        await self.table.put(self.node, _enc.encode(rec))
        self._published = now
