"""What each order leaves in the embedded broker, per topic: the figure that sets how often a
long flood swaps brokers (the broker keeps every batch it was sent until it exits).

    python -m bench.broker_bytes --orders 50000 --rate 2400

Starts the real service (no memory budget), sends realistic NDJSON orders (bench.orders),
waits until every one is recorded and the pipeline is quiet, then reads every topic back from
the broker: messages, bytes as consumed, and bytes as stored (each message's value compressed
the way the producers send it, zstd); and the broker's resident memory before and after. Prints
a table and writes ``bench/results/broker-bytes.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from typing import Any

import aiohttp
import cramjam
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.flood import API_HEADERS, Service
from bench.orders import OrderGenerator, ndjson_batches
from bench.pipeline import descendants, process_rss

RESULTS = Path(__file__).parent / "results"


async def post_all(
    url: str, bodies: list[tuple[str, bytes]], rate: float, concurrency: int = 8
) -> int:
    """Sends every body (100 orders each) at ``rate`` orders/s (0: flat out); returns the
    orders accepted. The pace matters: envelopes are as big as what arrives in a batch window,
    and small envelopes compress less."""
    accepted = 0
    todo = list(reversed(bodies))
    headers = {**API_HEADERS, "Content-Type": "application/x-ndjson"}
    t0 = time.monotonic()
    sent = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal accepted, sent
        while todo:
            channel, body = todo.pop()
            if rate:
                due = t0 + sent * 100 / rate
                sent += 1
                await asyncio.sleep(max(0.0, due - time.monotonic()))
            async with session.post(
                f"{url}/v1/orders", data=body, headers={**headers, "X-Channel": channel}
            ) as resp:
                text = await resp.text()
                if resp.status != 202:
                    raise RuntimeError(f"{resp.status}: {text[:300]}")
                accepted += sum(
                    json.loads(ln).get("status") == "accepted"
                    for ln in text.splitlines()
                    if ln.strip()
                )

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return accepted


async def wait_quiet(url: str, timeout: float) -> None:
    """Until the journal is empty and the workers' lag is 0 on two probes in a row."""
    deadline = time.monotonic() + timeout
    quiet = 0
    async with aiohttp.ClientSession(headers=API_HEADERS) as session:
        while time.monotonic() < deadline:
            async with session.get(url + "/metrics") as resp:
                text = await resp.text()
            busy = 0.0
            for line in text.splitlines():
                if line.startswith(("orderstream_journal_depth", "orderstream_consumer_lag")):
                    busy += float(line.rsplit(" ", 1)[1])
            quiet = quiet + 1 if busy == 0 else 0
            if quiet >= 3:
                return
            await asyncio.sleep(2.0)
    raise TimeoutError("the pipeline did not go quiet")


async def topic_bytes(bootstrap: str) -> dict[str, dict[str, int]]:
    """Per topic: messages, value+key bytes as consumed, and zstd-compressed bytes."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        topics = sorted(t for t in await consumer.topics() if not t.startswith("__"))
        tps = [
            TopicPartition(t, p)
            for t in topics
            for p in sorted(consumer.partitions_for_topic(t) or ())
        ]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out = {t: {"messages": 0, "bytes": 0, "zstd_bytes": 0} for t in topics}
        left = {tp for tp in tps if ends[tp] > 0}
        while left:
            batch = await consumer.getmany(*left, timeout_ms=1000, max_records=5000)
            if not batch:
                # the embedded broker may report the last batch's base offset as the end
                break
            for tp, msgs in batch.items():
                row = out[tp.topic]
                for m in msgs:
                    value = (m.value or b"") + (m.key or b"")
                    row["messages"] += 1
                    row["bytes"] += len(value)
                    row["zstd_bytes"] += len(cramjam.zstd.compress(value))
                if msgs and msgs[-1].offset + 1 >= ends[tp]:
                    left.discard(tp)
        return out
    finally:
        await consumer.stop()


def role_mib(root: int, role: str) -> float:
    return process_rss(descendants(root)).get(role, 0.0)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    gen = OrderGenerator(args.seed)
    bodies = ndjson_batches(gen.generate(args.orders), 100)
    service = Service(120.0, {"ORDERSTREAM_WORKERS": "2"}, prefix="broker-bytes-")
    service.start()
    try:
        await service.wait_ready()
        assert service.proc is not None
        await asyncio.sleep(3.0)
        before = role_mib(service.proc.pid, "broker")
        accepted = await post_all(service.url, bodies, args.rate)
        await wait_quiet(service.url, 600.0)
        after = role_mib(service.proc.pid, "broker")
        topics = await topic_bytes(f"127.0.0.1:{service.broker_port}")
    finally:
        service.stop()
    per_order = {
        t: {k: v / max(accepted, 1) for k, v in row.items()} for t, row in topics.items() if row
    }
    return {
        "rate": args.rate,
        "orders_accepted": accepted,
        "broker_rss_mib_before": before,
        "broker_rss_mib_after": after,
        "broker_rss_bytes_per_order": (after - before) * 2**20 / max(accepted, 1),
        "per_topic": topics,
        "per_order": per_order,
        "total_bytes_per_order": sum(r["bytes"] for r in per_order.values()),
        "total_zstd_bytes_per_order": sum(r["zstd_bytes"] for r in per_order.values()),
    }


def print_table(r: dict[str, Any]) -> None:
    print(f"{r['orders_accepted']:,} orders accepted at {r['rate']:,.0f}/s (0: flat out)")
    print(f"{'topic':36} {'messages':>9} {'B/order':>9} {'zstd B/order':>13}")
    for topic, row in sorted(r["per_order"].items(), key=lambda kv: -kv[1]["zstd_bytes"]):
        if not r["per_topic"][topic]["messages"]:
            continue
        print(
            f"{topic:36} {r['per_topic'][topic]['messages']:>9,}"
            f" {row['bytes']:>9.0f} {row['zstd_bytes']:>13.0f}"
        )
    print(
        f"{'all topics':36} {'':>9} {r['total_bytes_per_order']:>9.0f}"
        f" {r['total_zstd_bytes_per_order']:>13.0f}"
    )
    print(
        f"broker resident: {r['broker_rss_mib_before']:.0f} -> {r['broker_rss_mib_after']:.0f} MiB"
        f" = {r['broker_rss_bytes_per_order']:.0f} B per order"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.broker_bytes", description=__doc__)
    p.add_argument("--orders", type=int, default=50_000)
    p.add_argument("--rate", type=float, default=2400, help="orders/s; 0 = flat out")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--json", default=str(RESULTS / "broker-bytes.json"))
    args = p.parse_args(argv)
    result = asyncio.run(run(args))
    print_table(result)
    Path(args.json).write_text(json.dumps(result, indent=1))
    print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
