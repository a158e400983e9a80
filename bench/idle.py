"""What a fresh service costs with no traffic: CPU of every process over a quiet spell.

    python -m bench.idle --seconds 10

Starts ``orderstream serve`` (embedded broker, API, N workers) on loopback, waits until it is
ready plus ``--settle`` seconds, then reads each process's CPU time over ``--seconds`` and the
broker connections opened meanwhile. An idle service should cost next to nothing: no busy
polling of the broker, no timers that wake without work. Prints the figures and writes
``bench/results/idle-w<N>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from bench.flood import Service, machine_info
from bench.pipeline import cpu_by_role, descendants, open_console, process_cpu

RESULTS = Path(__file__).resolve().parent / "results"


def broker_connections(port: int) -> set[str]:
    """Established TCP connections to ``port`` (local side), from /proc/net/tcp."""
    out = set()
    want = f"{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if state == "01" and remote.endswith(":" + want):
            out.add(local)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    svc = Service(args.ready_timeout, env={"ORDERSTREAM_WORKERS": str(args.workers)})
    svc.start()
    try:
        ready = await svc.wait_ready()
        console = await open_console(svc.url) if args.console else None
        await asyncio.sleep(args.settle)
        assert svc.proc is not None
        pids = descendants(svc.proc.pid)
        conns0 = broker_connections(svc.broker_port)
        before = process_cpu(pids)
        seen = set(conns0)
        for _ in range(int(args.seconds * 10)):
            await asyncio.sleep(0.1)
            seen |= broker_connections(svc.broker_port)
        after = process_cpu(pids)
        if console is not None:
            await console.aclose()
    finally:
        svc.stop()
    roles = cpu_by_role(before, after)
    percent = {role: 100 * s / args.seconds for role, s in sorted(roles.items())}
    return {
        "scenario": "idle",
        "console_open": args.console,
        "workers": args.workers,
        "seconds": args.seconds,
        "ready_s": ready,
        "cpu_percent_of_one_core": percent,
        "total_percent_of_one_core": sum(percent.values()),
        "new_broker_connections_per_s": len(seen - conns0) / args.seconds,
        "machine": machine_info(),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--settle", type=float, default=5.0, help="quiet seconds after ready first")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--ready-timeout", type=float, default=120.0)
    p.add_argument("--json", default="", help="default bench/results/idle-w<N>.json")
    p.add_argument(
        "--console",
        action="store_true",
        help="with the operator console open (headless chromium, Flow view): what it costs",
    )
    args = p.parse_args(argv)
    r = asyncio.run(run(args))
    per = "  ".join(f"{k} {v:.1f}" for k, v in r["cpu_percent_of_one_core"].items())
    print(
        f"idle service, {r['workers']} worker(s), {r['seconds']:.0f} s after {args.settle:.0f} s"
        + (", console open" if args.console else "")
    )
    print(f"  CPU        {per}  (% of one core)")
    print(f"  total      {r['total_percent_of_one_core']:.1f} % of one core")
    print(f"  broker     {r['new_broker_connections_per_s']:.2f} new connections/s")
    out = Path(args.json) if args.json else RESULTS / f"idle-w{args.workers}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(r, indent=2))
    print(f"  written    {out}")


if __name__ == "__main__":
    main()
