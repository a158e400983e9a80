"""Cluster membership and shared configuration: the pure parts, without a broker."""

from __future__ import annotations

import asyncio
import time

import msgspec

from core.credentials import ChannelApi, ChannelSecret, KeyFile, new_key
from streams.cluster import members
from streams.cluster.members import Membership, NodeRecord, held_partitions
from streams.cluster.shared_config import (
    REVOKED,
    changes,
    channel_apis_from,
    keyfile_from,
    records_of,
    unpublished,
)


class Table:
    """The part of a compacted table these use: its values, and put."""

    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}

    async def put(self, key: str, value: bytes | None) -> None:
        if value is None:
            self.values.pop(key, None)
        else:
            self.values[key] = value


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def record(node: str, parts: list[int], changed_at: int, at: int | None = None) -> bytes:
    rec = NodeRecord(
        node=node,
        url=f"http://{node}",
        partitions={"orders.unique": parts},
        at=at if at is not None else now_ms(),
        changed_at=changed_at,
        started_at=0,
    )
    return msgspec.json.encode(rec)


def test_the_latest_claim_of_a_partition_wins_and_dead_or_leaving_nodes_own_nothing() -> None:
    table = Table()
    m = Membership(table, "a", "http://a")  # type: ignore[arg-type]
    t = now_ms()
    table.values["a"] = record("a", [0, 1], changed_at=t - 5000)
    table.values["b"] = record("b", [1, 2], changed_at=t - 1000)  # took 1 over from a
    stale = t - int(members.LIVE_S * 1000) - 1
    table.values["c"] = record("c", [3], changed_at=t - 100, at=stale)  # dead
    assert m.owner("orders.unique", 0).node == "a"  # type: ignore[union-attr]
    assert m.owner("orders.unique", 1).node == "b"  # type: ignore[union-attr]
    assert m.owner("orders.unique", 3) is None
    assert m.unowned("orders.unique", 4) == [3]
    assert [p.node for p in m.peers()] == ["b"]
    leaving = msgspec.json.decode(table.values["b"], type=NodeRecord)
    leaving.leaving = True
    table.values["b"] = msgspec.json.encode(leaving)
    assert m.owner("orders.unique", 2) is None


def test_a_node_publishes_when_what_it_holds_changes_and_as_a_heartbeat() -> None:
    table = Table()
    m = Membership(table, "a", "http://a")  # type: ignore[arg-type]

    async def scenario() -> None:
        await m.publish({"orders.unique": [0]})
        first = table.values["a"]
        await m.publish({"orders.unique": [0]})  # unchanged, heartbeat not due: nothing
        assert table.values["a"] == first
        await m.publish({"orders.unique": [0, 1]})
        rec = msgspec.json.decode(table.values["a"], type=NodeRecord)
        assert rec.partitions == {"orders.unique": [0, 1]}
        assert rec.changed_at >= msgspec.json.decode(first, type=NodeRecord).changed_at

    asyncio.run(scenario())


def test_held_partitions_reads_a_workers_assignment() -> None:
    got = held_partitions(["orders.unique:1", "orders.unique:0", "stock.updates:2", "junk"])
    assert got == {"orders.unique": [0, 1], "stock.updates": [2]}


def _key(name: str, at: int) -> tuple[object, str]:
    return new_key(name, ["read"], [], at, 0)


def test_a_keys_command_becomes_one_record_per_key_and_a_revoke_is_remembered() -> None:
    k1, _ = _key("gw1", 1)
    k2, _ = _key("gw2", 2)
    before = records_of(KeyFile(keys=[k1]), [])  # type: ignore[list-item]
    after = KeyFile(keys=[k2])  # type: ignore[list-item]
    out = changes(before, after, [])
    assert out == {f"key/{k2.id}": msgspec.json.encode(k2), f"key/{k1.id}": REVOKED}  # type: ignore[attr-defined]
    values = {**before, **{k: v for k, v in out.items() if v is not None}}
    assert [k.id for k in keyfile_from(values).keys] == [k2.id]  # type: ignore[attr-defined]
    # a node that was down during the revoke still has gw1 in its file: it is not republished
    stale_local = KeyFile(keys=[k1, k2])  # type: ignore[list-item]
    assert unpublished(values, stale_local, []) == {}


def test_channel_secrets_and_apis_travel_and_a_removed_one_is_deleted() -> None:
    sec = ChannelSecret(channel="shopify", secret="s" * 20)
    api = ChannelApi(channel="shopify", base_url="https://x", fields={"access_token": "t"})
    before = records_of(KeyFile(channel_secrets=[sec]), [api])
    assert keyfile_from(before).channel_secrets == [sec]
    assert channel_apis_from(before) == [api]
    assert changes(before, KeyFile(), []) == {
        "channel_secret/shopify": None,
        "channel_api/shopify": None,
    }
