"""Resume anywhere: two ``orderstream serve`` nodes on one standalone broker.

Each node copies the change topics into its own sync log, in its own interleaving, so its local
event numbers mean nothing to the other node. A client reads part of the SSE stream on one node
and reconnects to the other with the last ``id:`` it got (SSE ``Last-Event-ID``, WebSocket
``last_event_id``): it must get exactly the rest, nothing missing and nothing twice, although
more orders came in while it was away.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.integration.conftest import Service, free_port
from tests.integration.helpers import shopify_order
from tests.integration.test_external_broker import start_broker, stop_broker

pytestmark = pytest.mark.integration

Event = tuple[str, str]  # (type, the change's JSON): the same change on every node


def _event(kind: str, data: Any) -> Event:
    return kind, json.dumps(data, sort_keys=True)


def _sse(node: Service, last_id: str | None, limit: int = 0, idle_s: float = 2.0):  # type: ignore[no-untyped-def]
    """``GET /v1/stream`` on ``node`` after ``last_id``: ``limit`` events, or (0) until nothing
    came for ``idle_s``. The events and their ids."""
    conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=idle_s)
    headers = dict(node.auth)
    if last_id is not None:
        headers["Last-Event-ID"] = last_id
    conn.request("GET", "/v1/stream", headers=headers)
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    events: list[Event] = []
    ids: list[str] = []
    event_id = ""
    try:
        while not limit or len(events) < limit:
            try:
                line = resp.readline().decode().rstrip("\n")
            except TimeoutError:
                break  # quiet: everything there is has come
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("event: reset"):
                raise AssertionError("a reset: the node no longer holds the resume position")
            elif line.startswith("data: "):
                doc = json.loads(line[6:])
                assert doc["id"] == event_id  # the same id in the frame and in the data
                events.append(_event(doc["type"], doc["data"]))
                ids.append(event_id)
    finally:
        conn.close()
    return events, ids


async def _ws(node: Service, last_id: str, idle_s: float = 2.0) -> tuple[list[Event], list[str]]:
    events: list[Event] = []
    ids: list[str] = []
    url = f"ws://127.0.0.1:{node.http_port}/v1/ws"
    async with (
        aiohttp.ClientSession(headers=node.auth) as s,
        s.ws_connect(url, params={"last_event_id": last_id}) as ws,
    ):
        while True:
            try:
                msg = await ws.receive(timeout=idle_s)
            except TimeoutError:
                break
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            doc = json.loads(msg.data)
            assert doc.get("type") != "reset", doc
            events.append(_event(doc["type"], doc["data"]))
            ids.append(doc["id"])
    return events, ids


def _post_orders(nodes: list[Service], first: int, count: int) -> None:
    """``count`` orders in batches, alternately to each node."""
    for i, start in enumerate(range(first, first + count, 50)):
        n = min(50, first + count - start)
        resp = nodes[i % len(nodes)].post_batch(
            "shopify", [shopify_order(k) for k in range(start, start + n)]
        )
        assert resp.status in (200, 202), resp.body
    for node in nodes:
        node.wait_drained(timeout=60)


def _until_same(nodes: list[Service], timeout: float = 30.0) -> list[Event]:
    """Until both nodes' streams hold the same changes (each has read the change topics)."""
    deadline = time.monotonic() + timeout
    while True:
        streams = [Counter(_sse(n, "0", idle_s=1.0)[0]) for n in nodes]
        if streams[0] == streams[1] and streams[0]:
            return list(streams[0].elements())
        assert time.monotonic() < deadline, "the nodes' streams differ"
        time.sleep(0.5)


def test_a_client_resumes_on_another_node_without_gap_or_duplicate(tmp_path: Path) -> None:
    port = free_port()
    broker_url = f"kafka://127.0.0.1:{port}"
    broker = start_broker(port)
    env = {"ORDERSTREAM_PARTITIONS": "3"}
    args = ["--broker", broker_url, "--workers", "1"]
    nodes = [Service(tmp_path / f"node{i}", env, args) for i in range(2)]
    try:
        nodes[0].start(timeout=60)
        nodes[1].start(timeout=60)
        nodes[1].api_key = nodes[0].api_key  # the cluster's first key: every node has it

        # a resume id of another kind is refused, saying why
        for bad, why in [("17", "not a resume id"), ("c1.x.1.2", "topic partitions")]:
            conn = http.client.HTTPConnection("127.0.0.1", nodes[1].http_port, timeout=10)
            conn.request("GET", "/v1/stream", headers={**nodes[1].auth, "Last-Event-ID": bad})
            resp = conn.getresponse()
            body = json.loads(resp.read())
            conn.close()
            assert resp.status == 400 and "Last-Event-ID" in json.dumps(body), body
            assert why in json.dumps(body), body

        _post_orders(nodes, 81_000_000, 400)
        before = _until_same(nodes)

        # part of the stream on node 0, then more orders while the client is away
        first, first_ids = _sse(nodes[0], "0", limit=len(before) // 2)
        assert len(first) == len(before) // 2 and len(set(first_ids)) == len(first_ids)
        last_id = first_ids[-1]
        _post_orders(nodes, 81_100_000, 400)
        whole = _until_same(nodes)

        # the rest on node 1, over SSE and over WebSocket: exactly what node 0 did not send
        with ThreadPoolExecutor(1) as pool:
            sse_rest = pool.submit(_sse, nodes[1], last_id)
            ws_rest, ws_ids = asyncio.run(_ws(nodes[1], last_id))
            rest, rest_ids = sse_rest.result()
        assert Counter(first) + Counter(rest) == Counter(whole), "the resume lost or repeated"
        assert ws_rest == rest and ws_ids == rest_ids  # the same events, the same ids
        # and back to node 0 from node 1's last id: nothing more, nothing again
        assert _sse(nodes[0], rest_ids[-1], idle_s=1.5)[0] == []
        # a resume id in the middle works on both nodes alike
        mid = rest_ids[len(rest_ids) // 2]
        tail = Counter(rest[len(rest) // 2 + 1 :])
        assert Counter(_sse(nodes[0], mid)[0]) == tail == Counter(_sse(nodes[1], mid)[0])
        print(f"{len(whole)} changes; {len(first)} read on node 0, {len(rest)} resumed on node 1")
    finally:
        for n in nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.stop(timeout=60)
        stop_broker(broker)
