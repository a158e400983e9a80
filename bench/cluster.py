"""What a node of a cluster costs: orders through N nodes, and reads forwarded between them.

A standalone broker and N ``orderstream serve --broker`` nodes (one worker each, N partitions)
on this machine. A paced flood of 100-order NDJSON requests goes round-robin over the nodes, with
one SSE subscriber on node 0 (count in = count out, accepted → subscriber latency); CPU is read
per node and role from /proc. Then reads of recorded orders, each asked once of the node that
holds the order's partition (local) and once of a node that does not (forwarded): latency and
the API CPU a forwarded read adds.

    python -m bench.cluster --nodes 2 --rate 1200 --seconds 30 --reads 2000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.flood import API_HEADERS, ROOT, Service, _free_port, _stats, machine_info, use_key
from bench.orders import OrderGenerator, ndjson_batches
from bench.pipeline import Subscriber, cpu_by_role, descendants, process_cpu
from ext import kafka_partition


def start_broker(port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "streams.cli", "broker", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


async def cluster_ready(
    session: aiohttp.ClientSession, nodes: list[Service], timeout: float
) -> dict[str, Any]:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        views = []
        for n in nodes:
            try:
                async with session.get(n.url + "/v1/cluster") as resp:
                    views.append(await resp.json() if resp.status == 200 else {})
            except aiohttp.ClientError:
                views.append({})
        if all(
            len(v.get("nodes", [])) == len(nodes) and not v["unowned_partitions"] for v in views
        ):
            return views[0]
        await asyncio.sleep(0.5)
    raise TimeoutError("the nodes did not see each other holding every partition")


def cpu_snapshot(
    nodes: list[Service], broker: subprocess.Popen[bytes]
) -> list[dict[int, tuple[str, float]]]:
    snaps = [process_cpu(descendants(n.proc.pid)) for n in nodes if n.proc is not None]
    snaps.append(process_cpu(descendants(broker.pid)))
    return snaps


def cpu_between(before: list[Any], after: list[Any]) -> list[dict[str, float]]:
    return [cpu_by_role(b, a) for b, a in zip(before, after, strict=True)]


async def flood(
    session: aiohttp.ClientSession,
    nodes: list[Service],
    bodies: list[tuple[str, bytes]],
    rate: float,
) -> tuple[list[str], list[float]]:
    """Each body at its scheduled time, to node i % N; the ids accepted and request latencies."""
    accepted: list[str] = []
    latencies: list[float] = []
    per_body = 100 / rate
    t0 = time.monotonic()
    sem = asyncio.Semaphore(32)

    async def one(i: int, channel: str, body: bytes) -> None:
        async with sem:
            t = time.monotonic()
            headers = {"X-Channel": channel, "Content-Type": "application/x-ndjson"}
            async with session.post(
                nodes[i % len(nodes)].url + "/v1/orders", data=body, headers=headers
            ) as resp:
                text = await resp.read()
            latencies.append((time.monotonic() - t) * 1000)
            for line in text.splitlines():
                doc = json.loads(line)
                if doc.get("status") == "accepted":
                    accepted.append(doc["id"])

    tasks = []
    for i, (channel, body) in enumerate(bodies):
        delay = t0 + i * per_body - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i, channel, body)))
    await asyncio.gather(*tasks)
    return accepted, latencies


async def reads(
    session: aiohttp.ClientSession,
    nodes: list[Service],
    owners: dict[int, int],
    ids: list[str],
    partitions: int,
    forwarded: bool,
) -> list[float]:
    """GET each id once, from its owner node or from the next node (forwarded); 4 clients."""
    out: list[float] = []
    queue = list(ids)

    async def client() -> None:
        while queue:
            oid = queue.pop()
            owner = owners[kafka_partition(oid.encode(), partitions)]
            node = nodes[(owner + 1) % len(nodes)] if forwarded else nodes[owner]
            t = time.monotonic()
            async with session.get(f"{node.url}/v1/orders/{oid}") as resp:
                await resp.read()
                assert resp.status == 200, resp.status
            out.append((time.monotonic() - t) * 1000)

    await asyncio.gather(*(client() for _ in range(4)))
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    port = _free_port()
    broker = start_broker(port)
    env = {
        "ORDERSTREAM_BROKER": f"kafka://127.0.0.1:{port}",
        "ORDERSTREAM_WORKERS": "1",
        "ORDERSTREAM_PARTITIONS": str(args.nodes),
    }
    nodes = [Service(args.ready_timeout, env, prefix=f"cluster-n{i}-") for i in range(args.nodes)]
    result: dict[str, Any] = {"machine": machine_info(), "command": " ".join(sys.argv)}
    gen = OrderGenerator(seed=args.seed, duplicate_rate=0.0, near_dup_rate=0.0, repeat_rate=0.0)
    orders = gen.generate(int(args.rate * args.seconds))
    bodies = ndjson_batches(orders, 100)
    try:
        nodes[0].start()
        await nodes[0].wait_ready()
        for n in nodes[1:]:
            n.start()
        for n in nodes[1:]:
            await n.wait_ready()
        use_key(nodes[0].data)  # wait_ready looked for a key of each node's own
        async with aiohttp.ClientSession(headers=API_HEADERS) as session:
            view = await cluster_ready(session, nodes, 90)
            by_url = {n.url: i for i, n in enumerate(nodes)}
            owners = {p: by_url[rec["url"]] for rec in view["nodes"] for p in rec["partitions"]}
            sub = Subscriber(nodes[0].url)
            await sub.start()
            client0 = time.process_time()
            before = cpu_snapshot(nodes, broker)
            t0 = time.monotonic()
            accepted, latencies = await flood(session, nodes, bodies, args.rate)
            sent_s = time.monotonic() - t0
            deadline = time.monotonic() + args.drain_timeout
            want = set(accepted)
            while time.monotonic() < deadline and not want <= sub.first.keys():
                await asyncio.sleep(0.2)
            flood_s = time.monotonic() - t0
            after = cpu_snapshot(nodes, broker)
            client_cpu = time.process_time() - client0
            await sub.stop()
            cpu = cpu_between(before, after)
            n_acc = max(1, len(accepted))
            result["flood"] = {
                "nodes": args.nodes,
                "rate": args.rate,
                "seconds": args.seconds,
                "accepted": len(accepted),
                "seen_by_subscriber": len(want & sub.first.keys()),
                "sent_s": round(sent_s, 2),
                "until_all_seen_s": round(flood_s, 2),
                "request_ms": _stats(latencies),
                "accepted_to_subscriber_ms": _stats(sub.server_lat),
                "cpu_s": {f"node{i}": c for i, c in enumerate(cpu[:-1])} | {"broker": cpu[-1]},
                "cpu_ms_per_order": {
                    "nodes_api": round(sum(c.get("api", 0) for c in cpu[:-1]) * 1000 / n_acc, 3),
                    "nodes_workers": round(
                        sum(c.get("worker", 0) for c in cpu[:-1]) * 1000 / n_acc, 3
                    ),
                    "broker": round(sum(cpu[-1].values()) * 1000 / n_acc, 3),
                },
                "client_cpu_s": round(client_cpu, 2),
            }
            sample = accepted[: args.reads]
            phases = {}
            for name, fwd in (("local", False), ("forwarded", True), ("local_again", False)):
                b = cpu_snapshot(nodes, broker)
                lat = await reads(session, nodes, owners, sample, args.nodes, fwd)
                a = cpu_snapshot(nodes, broker)
                api = sum(c.get("api", 0) for c in cpu_between(b, a)[:-1])
                phases[name] = {
                    "latency_ms": _stats(lat),
                    "api_cpu_ms_per_read": round(api * 1000 / max(1, len(lat)), 3),
                }
            result["reads"] = phases
    finally:
        for n in nodes:
            n.stop()
        broker.terminate()
        try:
            broker.wait(10)
        except subprocess.TimeoutExpired:
            broker.kill()
    return result


def report(r: dict[str, Any]) -> None:
    f = r["flood"]
    print(
        f"\n{f['nodes']} nodes, {f['rate']:.0f} orders/s for {f['seconds']:.0f} s"
        " (100-order NDJSON)"
    )
    print(f"  accepted {f['accepted']:,}, seen by the subscriber {f['seen_by_subscriber']:,}")
    lat = f["accepted_to_subscriber_ms"]
    print(f"  accepted -> subscriber p50 {lat['p50']:.0f} ms, p99 {lat['p99']:.0f} ms")
    c = f["cpu_ms_per_order"]
    print(
        f"  CPU per order: node APIs {c['nodes_api']} ms, node workers {c['nodes_workers']} ms,"
        f" broker {c['broker']} ms; client {f['client_cpu_s']} s"
    )
    for name, p in r["reads"].items():
        lat = p["latency_ms"]
        print(
            f"  reads {name:12s} p50 {lat['p50']:.1f} ms, p99 {lat['p99']:.1f} ms,"
            f" API CPU {p['api_cpu_ms_per_read']} ms/read"
        )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=2)
    p.add_argument("--rate", type=float, default=1200.0)
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--reads", type=int, default=2000)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--ready-timeout", type=float, default=120.0)
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.add_argument("--json", default="")
    args = p.parse_args(argv)
    r = asyncio.run(run(args))
    report(r)
    out = Path(args.json or ROOT / "bench" / "results" / f"cluster-n{args.nodes}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=2))
    print(f"  wrote {os.path.relpath(out, ROOT)}")


if __name__ == "__main__":
    main()
