"""Board fan-out benchmark: ``python -m bench.fanout [--clients 1000,5000] [--rate 100] [--duration 10]``.

Starts a real PostgreSQL and Redis (embedded wheels) in a temporary directory and, as processes of
their own, ``dispatchd serve`` and a bare ``websockets`` server (:mod:`bench.fanout.baseline`) fed
from the same Redis channel the dispatchd relay publishes to. For each client count and each
server, a separate process (:mod:`bench.fanout.clients`) opens that many board websockets; this
process then commits ``--rate`` outbox rows a second (each its own transaction, stamped with the
time just before its commit) and the sampled clients measure commit-to-client latency.

Printed per client count: p50 and p99 of dispatchd and of the baseline in its two modes (each
change its own message, the same bytes dispatchd sends; one message per frame), the ratio of
dispatchd's p99 to each, the servers' CPU, and whether any sampled client saw a gap or a repeat.
Targets on this machine: p99 under 250 ms at 5,000 clients and within 2x of the bare baseline.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from datetime import UTC, datetime
from typing import Any

import asyncpg
import psutil

from bench.fanout.common import (
    COUNTY,
    ROOT,
    free_port,
    make_accounts,
    percentile,
    prepare_database,
    raise_fd_limit,
    start_dispatchd,
    stop,
    stores,
    wait_ready,
)
from dispatchd.domain.orgs import load_org_tree
from dispatchd.store.changes import SYSTEM, Change, record
from dispatchd.store.orgs import unit_path

# The time the recorded changes carry (the benchmark measures with the "t" in their data).
_NOW = datetime.now(UTC)


async def writer(conn: asyncpg.Connection, paths: list[list[str]], rate: float, payload: int, done: asyncio.Event) -> int:
    """Commit ``rate`` changes a second until ``done``; return how many."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    n = 0
    pad = "变" * (payload // 3)
    while not done.is_set():
        async with conn.transaction():
            data = {"t": time.time(), "i": n, "pad": pad}
            await record(conn, Change("bench", n, 1, "bench", random.choice(paths), data, SYSTEM, _NOW))
        n += 1
        delay = start + n / rate - loop.time()
        if delay > 0:
            try:
                await asyncio.wait_for(done.wait(), delay)
            except TimeoutError:
                pass
    return n


async def phase(
    name: str,
    port: int,
    path: str,
    n: int,
    server: psutil.Process,
    conn: asyncpg.Connection,
    paths: list[list[str]],
    args: argparse.Namespace,
) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.fanout.clients", str(port), path, str(n), str(args.sample_every),
        cwd=ROOT, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 28,
    )
    assert proc.stdout is not None and proc.stdin is not None
    ready = json.loads(await proc.stdout.readline())
    done = asyncio.Event()
    writing = asyncio.create_task(writer(conn, paths, args.rate, args.payload, done))
    await asyncio.sleep(args.warmup)
    proc.stdin.write(b"measure\n")
    await proc.stdin.drain()
    server.cpu_percent()
    await asyncio.sleep(args.duration)
    cpu = server.cpu_percent()
    proc.stdin.write(b"stop\n")
    await proc.stdin.drain()
    result: dict[str, Any] = json.loads(await proc.stdout.readline())
    done.set()
    await writing
    await proc.wait()
    await asyncio.sleep(1)  # let the server forget the closed connections
    lat = result["latencies"]
    out = {
        "name": name,
        "clients": ready["ready"],
        "connect_s": ready["seconds"],
        "p50": percentile(lat, 0.5) * 1000,
        "p99": percentile(lat, 0.99) * 1000,
        "max": max(lat) * 1000 if lat else float("nan"),
        "samples": len(lat),
        "cpu": cpu,
        "mb_s": result["bytes"] / args.duration / 1e6 * args.sample_every,
        "closed": result["closed"],
        "gaps": result["gaps"],
        "duplicates": result["duplicates"],
    }
    print(
        f"  {name:<22} {out['clients']:>5} clients  p50 {out['p50']:7.1f} ms  p99 {out['p99']:7.1f} ms  "
        f"max {out['max']:7.1f} ms  cpu {out['cpu']:5.0f}%  ({out['samples']} samples, "
        f"gaps {out['gaps']}, repeats {out['duplicates']}, dropped {out['closed']})",
        flush=True,
    )
    return out


async def main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    tree = load_org_tree(ROOT / "config" / "orgs")
    grids = [u.code for u in tree.subtree(COUNTY) if u.level == "grid"][:50]
    paths = [unit_path(tree, g) for g in grids]
    procs: list[subprocess.Popen[bytes]] = []
    with stores() as (db, rd, tmp):
        conn = await prepare_database(db)
        ((_, token),) = await make_accounts(conn, "wall", "duty_officer", COUNTY, 1)
        ours, frame_port, messages_port = free_port(), free_port(), free_port()
        try:
            dispatchd = start_dispatchd(db, rd, tmp, ours, live_frame_interval=str(args.frame_interval))
            procs.append(dispatchd)
            baselines: dict[str, tuple[int, subprocess.Popen[bytes]]] = {}
            for mode, port in (("frame", frame_port), ("messages", messages_port)):
                if mode in args.modes:
                    p = await asyncio.to_thread(
                        subprocess.Popen,
                        [sys.executable, "-m", "bench.fanout.baseline", str(port), rd, str(args.frame_interval), mode],
                        cwd=ROOT,
                        # asyncio's "socket.send() raised exception." when clients leave: to a file.
                        stderr=(tmp / f"baseline-{mode}.log").open("wb"),
                    )
                    procs.append(p)
                    baselines[mode] = (port, p)
            await wait_ready(ours, dispatchd)
            for port, p in baselines.values():
                await wait_ready(port, p, "/")
            print(
                f"{args.rate:g} changes/s of about {args.payload} bytes, frames every {args.frame_interval * 1000:g} ms, "
                f"{args.duration:g} s measured after {args.warmup:g} s, every {args.sample_every}th client sampled",
                flush=True,
            )
            summary = []
            for n in args.clients:
                print(f"{n} board clients:", flush=True)
                mine = await phase("dispatchd /ws/board", ours, f"/ws/board?token={token}", n,
                                   psutil.Process(dispatchd.pid), conn, paths, args)
                rows = [mine]
                for mode, (port, p) in baselines.items():
                    rows.append(await phase(f"websockets ({mode})", port, "/", n, psutil.Process(p.pid), conn, paths, args))
                summary.append(rows)
            print()
            print("summary (p99 of dispatchd / p99 of the bare websockets baseline, same run):")
            for rows in summary:
                mine, others = rows[0], rows[1:]
                ratios = "  ".join(f"{o['name']}: {mine['p99'] / o['p99']:.2f}x" for o in others)
                verdict = "meets" if mine["p99"] < 250 else "MISSES"
                print(f"  {mine['clients']:>5} clients: p99 {mine['p99']:.1f} ms ({verdict} 250 ms)  {ratios}")
        finally:
            for p in procs:
                stop(p)
            await conn.close()


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.fanout", description=__doc__.split("\n")[0])
    ap.add_argument("--clients", default="1000,5000", help="comma-separated client counts")
    ap.add_argument("--rate", type=float, default=100.0, help="changes committed per second")
    ap.add_argument("--payload", type=int, default=600, help="bytes of padding per change")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds measured per phase")
    ap.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    ap.add_argument("--frame-interval", type=float, default=0.1, help="seconds between frames (both servers)")
    ap.add_argument("--sample-every", type=int, default=20, help="decode and time every Nth client")
    ap.add_argument("--modes", default="frame,messages", help="baseline modes: frame, messages")
    args = ap.parse_args(argv)
    args.clients = [int(x) for x in args.clients.split(",") if x]
    args.modes = [m for m in args.modes.split(",") if m]
    return args


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
