"""Where a keyed request goes on a cluster, and what the answer says when nobody holds the key."""

from __future__ import annotations

import asyncio
import json
import time

import msgspec

from streams.cluster.members import Membership, NodeRecord
from streams.cluster.peers import NO_ANSWER, Answers
from streams.http.api import IngestAPI


class Table:
    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}


def _record(node: str, parts: list[int], changed_at: int) -> bytes:
    now = time.time_ns() // 1_000_000
    return msgspec.json.encode(
        NodeRecord(
            node=node,
            url=f"http://{node}",
            partitions={"orders.unique": parts, "reservations.requests": parts},
            at=now,
            changed_at=changed_at,
            started_at=0,
        )
    )


class ScriptedPeers:
    """Other nodes' workers, answering from a script per node."""

    def __init__(self, answers: dict[str, list[Answers]]) -> None:
        self.answers = answers
        self.asked: list[str] = []

    async def workers(self, node: NodeRecord, path: str, body: bytes | None = None) -> Answers:
        self.asked.append(node.node)
        script = self.answers[node.node]
        return script.pop(0) if len(script) > 1 else script[0]

    async def all_workers(self, nodes: list[NodeRecord], path: str, body: bytes | None = None):  # type: ignore[no-untyped-def]
        out: Answers = []
        for n in nodes:
            out += await self.workers(n, path, body)
        return out

    async def accepted(self, nodes: list[NodeRecord], order_id: str) -> bytes | None:
        return None


def _api(peers: ScriptedPeers, table: Table) -> IngestAPI:
    api = IngestAPI(None, None, [], 1, 1 << 20)  # type: ignore[arg-type]
    api.partitions = 1
    api.members = Membership(table, "me", "http://me")  # type: ignore[arg-type]
    api.peers = peers  # type: ignore[assignment]
    return api


def test_a_request_goes_to_the_owner_and_follows_a_partition_that_moved() -> None:
    table = Table()
    table.values["b"] = _record("b", [0], changed_at=1)
    table.values["c"] = _record("c", [], changed_at=1)
    # b lost the partition in a rebalance its record does not show yet; c holds it now
    peers = ScriptedPeers({"b": [[(421, b"")]], "c": [[(200, b'{"sku":"A-1"}')]]})
    api = _api(peers, table)
    resp = asyncio.run(api._sku_owner("A-1", "/internal/stock/A-1"))
    assert resp.status == 200
    assert peers.asked[:2] == ["b", "b"]  # straight to the owner, once more after a moment
    assert "c" in peers.asked[2:]  # then every node


def test_no_owner_is_a_503_naming_the_sku_or_the_order_and_the_partition() -> None:
    table = Table()
    table.values["b"] = _record("b", [0], changed_at=1)
    peers = ScriptedPeers({"b": [[(NO_ANSWER, b"")]]})
    api = _api(peers, table)
    resp = asyncio.run(api._sku_owner("A-1", "/internal/stock/A-1"))
    assert resp.status == 503 and resp.headers["Retry-After"] == "1"
    err = json.loads(resp.body)["error"]  # type: ignore[arg-type]
    assert err["field"] == "sku"
    assert "SKU's partition (0)" in err["reason"] and "not answering" in err["reason"]
    table.values.clear()
    resp = asyncio.run(api._order_owner("os_" + "0" * 24, "/internal/orders/x/history"))
    err = json.loads(resp.body)["error"]  # type: ignore[arg-type]
    assert resp.status == 503 and err["field"] == "order_id"
    assert "no worker holds this order's partition" in err["reason"]
