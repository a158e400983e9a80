"""The front door: one order per POST, driven by wrk with pre-built requests.

    python -m bench.door --seconds 30 --connections 64           # flat out (needs Debian's wrk)
    python -m bench.door --rate 2400 --seconds 600               # the seed's QPS, paced

A Python HTTP client costs ~0.25 ms of CPU per request on the same two cores as the service, so
it would measure itself. wrk (C, one thread) replays requests that were formatted once, before
the clock starts, from realistic multi-channel orders (bench.orders: 5.8 % duplicates, Zipf
SKUs), each its own order: the door answers 202 only once the order is fsynced in the journal.
With ``--rate`` wrk paces its requests
along one schedule (a slot every 1/rate s, handed to whichever connection asks next). A live SSE
subscriber follows ``GET /v1/stream?type=order`` throughout and times each order's first change
against the moment the door accepted it (``received_at``: the same clock); after wrk stops the
bench waits until the journal is empty and the subscriber has every order, and checks count in
= count out by global id: every order of a completed request reached the subscriber, and none
that wrk did not send (exit 1 otherwise).

It prints and writes ``bench/results/door-<flat|rate>-w<N>.json``: requests/s, wrk's latency
percentiles (p50/p99/p99.9), non-2xx answers and socket errors, accepted -> subscriber
percentiles, the time to drain, and the CPU of wrk, of this process (the subscriber) and of each
service process, per request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench.flood import API_HEADERS, Service, _stats, machine_info
from bench.orders import OrderGenerator
from bench.pipeline import (
    RSS_EVERY_S,
    Subscriber,
    cpu_by_role,
    descendants,
    longest_gap_s,
    memory_summary,
    process_cpu,
    sample_rss,
)

RESULTS = Path(__file__).resolve().parent / "results"

# Lua for wrk: requests are formatted once in init(), request() only hands the next one out.
# done() prints one JSON line the bench parses.
WRK_SCRIPT = r"""
local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } os_timespec;
int clock_gettime(int clk, os_timespec *ts);
]]
local ts = ffi.new("os_timespec")
local function now_ms()
  ffi.C.clock_gettime(1, ts)  -- CLOCK_MONOTONIC
  return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end
local reqs = {}
local i = 0
local interval = 0
local due = nil
function init(args)
  local auth = args[2]
  local rate = tonumber(args[3])
  if rate > 0 then interval = 1000 / rate end
  for line in io.lines(args[1]) do
    local tab = string.find(line, "\t", 1, true)
    local headers = {["Content-Type"] = "application/json", ["X-Channel"] = line:sub(1, tab - 1)}
    if auth ~= "" then headers["Authorization"] = auth end
    reqs[#reqs + 1] = wrk.format("POST", "/v1/orders", headers, line:sub(tab + 1))
  end
end
function delay()
  if interval == 0 then return 0 end
  local now = now_ms()
  if due == nil then due = now end
  due = due + interval
  local wait = due - now
  if wait < 1 then return 0 end
  return math.floor(wait)
end
local checked = false
function request()
  -- wrk calls request() once before the run to check the script: that one is never sent
  if not checked then
    checked = true
    return reqs[1]
  end
  i = i % #reqs + 1
  return reqs[i]
end
function done(summary, latency, requests)
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"non2xx":%d,"connect":%d,"read":%d,"write":%d,' ..
    '"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"p999_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.errors.status, summary.errors.connect,
    summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max))
end
"""


async def journal_depth(url: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(url + "/health", headers=API_HEADERS) as resp,
    ):
        return int((await resp.json())["journal_depth"])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed (Debian: apt-get install wrk)")
    # more than the door takes, so no order is sent twice by wrap-around
    count = int(args.orders or args.seconds * (args.rate * 1.05 + 100 if args.rate else 8000))
    orders = OrderGenerator(args.seed, duplicate_rate=args.dup_rate).generate(count)
    work = Path(tempfile.mkdtemp(prefix="door-"))
    lines = work / "orders.tsv"
    with open(lines, "wb") as f:
        for o in orders:
            f.write(o.channel.encode() + b"\t" + o.payload.replace(b"\n", b" ") + b"\n")
    script = work / "orders.lua"
    script.write_text(WRK_SCRIPT)
    env = {"ORDERSTREAM_WORKERS": str(args.workers)}
    for item in args.env:
        key, _, value = item.partition("=")
        env[key] = value
    svc = Service(args.ready_timeout, env=env)
    svc.start()
    rss: list[dict[str, float]] = []
    sub: Subscriber | None = None
    try:
        ready = await svc.wait_ready()
        await asyncio.sleep(3)  # past the start-up's own work
        assert svc.proc is not None
        sub = Subscriber(svc.url)
        await sub.start()
        before = process_cpu(descendants(svc.proc.pid))
        sampler = asyncio.create_task(sample_rss(svc.proc.pid, time.time(), rss, RSS_EVERY_S))
        t_send = time.time()
        auth = API_HEADERS.get("Authorization", "")
        r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        s0 = resource.getrusage(resource.RUSAGE_SELF)
        argv = [wrk, "-t1", f"-c{args.connections}", f"-d{args.seconds}s", "--timeout", "10s"]
        argv += ["-s", str(script), svc.url, "--", str(lines), auth, str(args.rate)]
        proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        stats = json.loads(out.decode().strip().splitlines()[-1])
        n = stats["requests"]
        # wrk counts completed requests; at its stop up to one per connection is in flight
        # (and may be cut off before the door kept it): those may or may not arrive
        sent = {o.order_id for o in orders[: max(0, n - args.connections)]}
        maybe = {o.order_id for o in orders[: n + args.connections]}
        sent_at = time.monotonic()
        while time.monotonic() - sent_at < args.drain_timeout:
            if await journal_depth(svc.url) == 0 and sent <= sub.first.keys():
                break
            await asyncio.sleep(0.1)
        drain_s = time.monotonic() - sent_at
        s1 = resource.getrusage(resource.RUSAGE_SELF)
        after = process_cpu(descendants(svc.proc.pid))
        sampler.cancel()
        missing = len(sent - sub.first.keys())
        unexpected = len(sub.first.keys() - maybe)
        server_lat = list(sub.server_lat)
        gap = longest_gap_s(t_send, sub.first.values())
        memory = memory_summary(
            rss, float(env.get("ORDERSTREAM_MEMORY_BUDGET_MB", 0)), svc.log_text(0), svc.data
        )
    finally:
        if sub is not None:
            await sub.stop()
        svc.stop()
        shutil.rmtree(work, ignore_errors=True)
    duration = stats["duration_us"] / 1e6
    cpu = cpu_by_role(before, after)
    wrk_cpu = (r1.ru_utime + r1.ru_stime) - (r0.ru_utime + r0.ru_stime)
    own_cpu = (s1.ru_utime + s1.ru_stime) - (s0.ru_utime + s0.ru_stime)
    return {
        "scenario": "door",
        "rate": args.rate,
        "seconds": args.seconds,
        "workers": args.workers,
        "connections": args.connections,
        "ready_s": ready,
        "requests": n,
        "requests_per_s": n / duration,
        "latency_ms": {k[:-3]: stats[k] / 1000 for k in ("p50_us", "p90_us", "p99_us", "p999_us")}
        | {"max": stats["max_us"] / 1000},
        "non_2xx": stats["non2xx"],
        "socket_errors": {k: stats[k] for k in ("connect", "read", "write", "timeout")},
        "accepted_to_subscriber_ms": _stats(server_lat),
        "orders_sent": len(sent),
        "orders_missing": missing,
        "orders_unexpected": unexpected,
        "subscriber_error": sub.error,
        "drain_s": drain_s,
        "processed_per_s": n / (duration + drain_s),
        "longest_without_an_order_out_s": gap,
        "memory": memory,
        "service_env": env,
        "cpu_ms_per_request": {role: 1000 * s / n for role, s in sorted(cpu.items())},
        "wrk_cpu_ms_per_request": 1000 * wrk_cpu / n,
        "wrk_cpu_cores": wrk_cpu / duration,
        "subscriber_cpu_ms_per_request": 1000 * own_cpu / n,
        "machine": machine_info(),
    }


def report(r: dict[str, Any]) -> None:
    lat = r["latency_ms"]
    pace = f"paced at {r['rate']:,.0f}/s" if r["rate"] else "flat out"
    print(
        f"front door, one order per POST, {pace} for {r['seconds']} s,"
        f" {r['workers']} worker(s), {r['connections']} connections"
    )
    print(f"  accepted   {r['requests']:,} requests, {r['requests_per_s']:,.0f} req/s (202 each)")
    print(
        f"  latency    p50 {lat['p50']:.1f} ms  p90 {lat['p90']:.1f}  p99 {lat['p99']:.1f}"
        f"  p99.9 {lat['p999']:.1f}  max {lat['max']:.1f}"
    )
    print(f"  refused    {r['non_2xx']} non-2xx, socket errors {r['socket_errors']}")
    e2e = r["accepted_to_subscriber_ms"]
    if e2e["n"]:
        print(
            f"  to SSE     accepted -> subscriber p50 {e2e['p50']:.0f} ms  p90 {e2e['p90']:.0f}"
            f"  p99 {e2e['p99']:.0f}  max {e2e['max']:.0f}"
        )
    verdict = "OK" if r["orders_missing"] == r["orders_unexpected"] == 0 else "FAILED"
    print(
        f"  count      {r['orders_sent']:,} orders sent, {r['orders_missing']} missing at the"
        f" subscriber, {r['orders_unexpected']} unexpected: {verdict}"
    )
    print(
        f"  processed  journal empty {r['drain_s']:.1f} s after the last request:"
        f" {r['processed_per_s']:,.0f} orders/s end to end"
    )
    gap = r["longest_without_an_order_out_s"]
    print(f"  flow       longest stretch with no order out {gap:.2f} s")
    mem = r["memory"]
    if mem.get("budget_mib"):
        print(
            f"  memory     peak {mem['peak_total_mib']:,.0f} MiB, over the {mem['budget_mib']:,.0f}"
            f" MiB budget in {mem['samples_over_budget']} of {mem['samples']} samples;"
            f" {mem['broker_replacements']} broker swaps"
            f" ({mem['broker_swaps_without_pause']} without a pause)"
        )
    per = "  ".join(f"{k} {v:.3f}" for k, v in r["cpu_ms_per_request"].items())
    print(f"  CPU/req    {per} ms (service)")
    print(
        f"  load gen   wrk {r['wrk_cpu_ms_per_request']:.3f} ms/request,"
        f" {r['wrk_cpu_cores']:.2f} of a core; subscriber"
        f" {r['subscriber_cpu_ms_per_request']:.3f} ms/request"
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--rate", type=float, default=0.0, help="requests/s; 0 = flat out")
    p.add_argument("--seconds", type=int, default=30)
    p.add_argument("--connections", type=int, default=64)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--orders", type=int, default=0, help="pre-built orders (default: enough)")
    p.add_argument(
        "--env",
        action="append",
        default=[],
        help="KEY=VALUE for the service, e.g. ORDERSTREAM_MEMORY_BUDGET_MB=1200 (repeatable)",
    )
    p.add_argument("--dup-rate", type=float, default=0.058)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--ready-timeout", type=float, default=120.0)
    p.add_argument("--drain-timeout", type=float, default=120.0)
    p.add_argument("--json", default="", help="default bench/results/door-w<N>.json")
    args = p.parse_args(argv)
    r = asyncio.run(run(args))
    report(r)
    kind = f"rate{args.rate:.0f}" if args.rate else "flat"
    out = Path(args.json) if args.json else RESULTS / f"door-{kind}-w{args.workers}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=2))
    print(f"  written    {out}")
    if r["orders_missing"] or r["orders_unexpected"] or r["non_2xx"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
