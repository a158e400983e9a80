"""Many nodes, one service: a standalone broker and three ``orderstream serve`` nodes.

Under a flood one node is SIGKILLed and restarted. Every accepted order is recorded once, every
live node answers reads for every order, an SSE stream resumed on another node gets every
event of the change stream exactly once, the webhook (delivered by one node at a time; the
killed node was the one delivering it) gets every event once, except the batch the killed node
had posted but not yet recorded, and a key made with
``orderstream keys`` against the cluster works on every node within 5 s (a revoke likewise).

``CLUSTER_ORDERS`` sets the flood's size (CI: a short one; the README quotes a longer run).
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from core.credentials import body_hmac
from tests.integration.conftest import ROOT, Service, free_port
from tests.integration.helpers import shopify_order
from tests.integration.test_external_broker import start_broker, stop_broker

pytestmark = pytest.mark.integration

ORDERS = int(os.environ.get("CLUSTER_ORDERS", "6000"))
RATE = float(os.environ.get("CLUSTER_RATE", "300"))  # orders/s, over all nodes
BATCH = 100


class Receiver:
    """A webhook endpoint: every delivery with the node that made it and when."""

    def __init__(self) -> None:
        self.deliveries: list[tuple[float, str, dict[str, Any]]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.deliveries.append(
                        (time.monotonic(), self.headers["X-Orderstream-Node"], json.loads(body))
                    )
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def created(self) -> list[str]:
        with self.lock:
            return [
                e["data"]["order_id"]
                for _, _, doc in self.deliveries
                for e in doc["events"]
                if e["data"].get("kind") == "created"
            ]

    def nodes(self) -> list[str]:
        with self.lock:
            return [node for _, node, _ in self.deliveries]


def _sse(
    node: Service, last_id: str, limit: int = 0, idle_s: float = 3.0
) -> tuple[list[tuple[str, int, str]], str]:
    """Read ``/v1/stream?type=order`` from ``node`` after ``last_id``: ``limit`` events, or
    (0) until nothing came for ``idle_s``. (order id, version, kind) of each, and the last id."""
    conn = http.client.HTTPConnection("127.0.0.1", node.http_port, timeout=idle_s)
    conn.request("GET", "/v1/stream?type=order", headers={**node.auth, "Last-Event-ID": last_id})
    resp = conn.getresponse()
    assert resp.status == 200, resp.read()
    seen: list[tuple[str, int, str]] = []
    event_id = last_id
    try:
        while not limit or len(seen) < limit:
            try:
                line = resp.readline().decode().rstrip("\n")
            except TimeoutError:
                break  # the stream went quiet: everything there is has come
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                doc = json.loads(line[6:])
                assert doc["id"] == event_id  # the same id in the frame and in the data
                data = doc["data"]
                seen.append((data["order_id"], data["version"], data["kind"]))
    finally:
        conn.close()
    return seen, event_id


def _keys_cli(broker: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams.cli", "keys", "--broker", broker, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _until(what: str, check: Any, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if check():
            return time.monotonic() - t0
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s")


def _whoami(node: Service, token: str) -> int:
    return node.request("GET", "/v1/whoami", headers={"Authorization": f"Bearer {token}"}).status


def _cluster_ready(nodes: list[Service]) -> bool:
    for n in nodes:
        view = n.request("GET", "/v1/cluster")
        if view.status != 200:
            return False
        doc = view.json()
        if len(doc["nodes"]) != len(nodes) or doc["unowned_partitions"]:
            return False
    return True


def _flood(nodes: list[Service], accepted: list[str], stop_at: int) -> None:
    """NDJSON batches round-robin over the nodes; a node that is down is skipped."""
    number = 70_000_000
    i = 0
    while number < 70_000_000 + stop_at:
        node = nodes[i % len(nodes)]
        i += 1
        payloads = [shopify_order(n) for n in range(number, number + BATCH)]
        try:
            resp = node.post_batch("shopify", payloads)
        except OSError:
            continue  # killed: the next node takes the batch
        if resp.status != 202:
            continue
        accepted += [line["id"] for line in resp.lines()]
        number += BATCH
        time.sleep(BATCH / RATE)


def test_three_nodes_behave_as_one_service_through_a_node_kill(tmp_path: Path) -> None:
    port = free_port()
    broker_url = f"kafka://127.0.0.1:{port}"
    broker = start_broker(port)
    env = {"ORDERSTREAM_PARTITIONS": "3"}
    nodes = [
        Service(tmp_path / f"node{i}", env, ["--broker", broker_url, "--workers", "1"])
        for i in range(3)
    ]
    rx = Receiver()
    try:
        nodes[0].start(timeout=120)
        key = nodes[0].api_key  # the cluster's first key: every node has it
        with ThreadPoolExecutor(2) as pool:
            list(pool.map(lambda n: n.start(timeout=120), nodes[1:]))
        for n in nodes:
            n.api_key = key
        _until(
            "every node sees three nodes holding every partition", lambda: _cluster_ready(nodes), 60
        )

        # a key made against the cluster works on every node within 5 s; a revoke likewise
        made = _keys_cli(broker_url, "add", "gateway-7", "--scopes", "read,ingest")
        assert made.returncode == 0, made.stderr
        token = made.stdout.strip()
        took = max(
            _until("key on " + n.base, lambda n=n: _whoami(n, token) == 200, 5) for n in nodes
        )
        revoked = _keys_cli(broker_url, "revoke", "gateway-7")
        assert revoked.returncode == 0, revoked.stderr
        for n in nodes:
            _until("revoke on " + n.base, lambda n=n: _whoami(n, token) == 401, 5)
        print(f"key in force on all nodes after {took:.1f}s")
        # a channel secret set against the cluster verifies a signed push on any node
        secret = "s3cret-for-the-whole-cluster"
        made = _keys_cli(broker_url, "channel-secret", "shopify", "--secret", secret)
        assert made.returncode == 0, made.stderr
        body = shopify_order(69_999_999)
        signed = {"X-Channel": "shopify", "X-Shopify-Hmac-Sha256": body_hmac(secret, body)}
        for n in nodes:
            _until(
                "signed push on " + n.base,
                lambda n=n: n.request("POST", "/v1/orders", body, signed, auth=False).status == 202,
                5,
            )

        # a webhook registered on one node; one node delivers it
        resp = nodes[1].request(
            "POST",
            "/v1/webhooks",
            json.dumps({"url": rx.url, "filter": {"type": "order"}}).encode(),
        )
        assert resp.status == 201, resp.body
        hook = resp.json()["id"]
        for n in nodes:  # every node lists it within a moment
            _until(n.base, lambda n=n: n.request("GET", f"/v1/webhooks/{hook}").status == 200, 5)

        accepted: list[str] = []
        flood = threading.Thread(target=_flood, args=(nodes, accepted, ORDERS))
        flood.start()
        _until("first webhook deliveries", lambda: len(rx.created()) >= 200, 60)
        deliverer = rx.nodes()[-1]
        victim = next(n for n in nodes if n.base.endswith(":" + deliverer.rsplit(":", 1)[1]))
        killed_at = time.monotonic()
        victim._kill_all()  # SIGKILL: the node delivering the webhook, its worker with it
        # another node takes the webhook over (its worker got the partition) and resumes it
        takeover = _until(
            "another node delivering the webhook",
            lambda: any(node != deliverer for node in rx.nodes()),
            60,
        )
        victim.start(timeout=120)  # same data dir and port: its journal replays
        victim.api_key = key
        flood.join(timeout=300)
        assert not flood.is_alive()

        for n in nodes:
            n.wait_drained(timeout=180)

        # every accepted order recorded once, read through every node (each forwards to the
        # node holding the order's partition)
        def read(args: tuple[int, str]) -> tuple[str, int, Any]:
            i, oid = args
            r = nodes[i % 3].get_order(oid)
            return oid, r.status, r.json() if r.status == 200 else r.body

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(read, enumerate(accepted)))
        missing = [a for a in answers if a[1] != 200 or a[2].get("state") == "accepted"]
        assert not missing, f"{len(missing)} of {len(accepted)} not recorded, e.g. {missing[:3]}"
        assert {a[2]["copies"] for a in answers} == {1}
        for oid in accepted[:: max(1, len(accepted) // 30)]:
            assert [n.get_order(oid).status for n in nodes] == [200, 200, 200], oid

        # SSE from any node: read part of the stream on one node, resume on another with the
        # last id received: together exactly the stream one node gives (a change the pipeline
        # published twice after the kill is in the stream twice; consumers dedupe on
        # (order_id, version)), nothing missing, nothing repeated by the resume
        first, last_id = _sse(nodes[0], "0", limit=1000)
        rest, _ = _sse(nodes[2], last_id)
        whole, _ = _sse(nodes[0], "0")
        assert Counter(first + rest) == Counter(whole), "the resume lost or repeated changes"
        created = {oid for oid, _, kind in whole if kind == "created"}
        assert created >= set(accepted)
        republished = len(whole) - len(set(whole))

        # the webhook: every event of the stream exactly once, by one node at a time
        _until(
            "every creation delivered",
            lambda: set(rx.created()) >= set(accepted),
            60,
        )
        with rx.lock:
            events = [e for _, _, doc in rx.deliveries for e in doc["events"]]
        ids = [e["id"] for e in events]  # <partition>-<offset>-<index>: the same on every node
        dupes = len(ids) - len(set(ids))
        if dupes:
            # only the killed node's last batch may come again: SIGKILL between the endpoint's
            # 2xx and the progress record (a graceful handover repeats nothing)
            with rx.lock:  # its last batch before another node's first (it may arrive a
                # moment after the kill was sent)
                took_over = next(i for i, d in enumerate(rx.deliveries) if d[1] != deliverer)
                last = [doc for _, node, doc in rx.deliveries[:took_over] if node == deliverer]
            repeated = {i for i, n in Counter(ids).items() if n > 1}
            with rx.lock:
                timeline = "\n".join(
                    f"{t - killed_at:+7.2f}s {node} {doc['events'][0]['id']}..."
                    f"{doc['events'][-1]['id']} ({len(doc['events'])})"
                    for t, node, doc in rx.deliveries
                )
            assert repeated <= {e["id"] for e in last[-1]["events"]}, (
                f"{dupes} delivered twice; deliveries:\n{timeline}"
            )
        once = {e["id"]: e["data"] for e in events}.values()
        got = Counter((d["order_id"], d["version"], d["kind"]) for d in once)
        # the flood's orders (the signed order went in before the webhook was registered)
        flooded = set(accepted)
        got = Counter({k: n for k, n in got.items() if k[0] in flooded})
        want = Counter(e for e in whole if e[0] in flooded)
        assert got == want, "the webhook did not get exactly the stream"
        with rx.lock:
            after_kill = [(t, node) for t, node, _ in rx.deliveries if t > killed_at + 0.5]
        takers = [node for _, node in after_kill]
        # one node at a time: the one that took over, until the restarted node maybe got its
        # partition back
        switches = sum(1 for a, b in itertools.pairwise(takers) if a != b)
        assert takers[0] != deliverer and switches <= 1, takers
        status = nodes[0].request("GET", f"/v1/webhooks/{hook}").json()
        assert status["consecutive_failures"] == 0
        print(
            f"{len(accepted)} orders through 3 nodes, node {deliverer} killed and restarted;"
            f" webhook taken over after {takeover:.1f}s; {len(rx.deliveries)} deliveries by"
            f" {sorted(set(rx.nodes()))}, {len(set(ids))} events, {dupes} of them again (the killed"
            f" node's last batch); SSE {len(whole)} changes"
            f" ({republished} republished by the pipeline), resumed across nodes exactly"
        )
    finally:
        for n in nodes:
            if n.proc is not None and n.proc.poll() is None:
                n.stop(timeout=90)
        rx.server.shutdown()
        stop_broker(broker)
