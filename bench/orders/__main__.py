"""Order delivery benchmark: ``python -m bench.orders [--squads 1000] [--rate 20] [--duration 10]``.

Starts a real PostgreSQL and Redis (embedded wheels), makes ``--squads`` squad units with one member
each, runs ``dispatchd serve`` as its own process and connects one ``/ws/squad`` device per unit.
Then it orders random units to a case through ``POST /api/v1/orders`` at ``--rate`` a second; each
device answers every order with ``ack``. Measured from the moment the request is sent:

- push: until the device has the order (stored, relayed, pushed);
- receipt: until the device has the ``ok`` for its ``ack`` (``delivered_at`` is recorded).

The same devices then connect to a bare ``websockets`` server (:mod:`bench.orders.baseline`) that
only forwards an order and answers the ack, with no store behind it; the ratio of the p99s says
what storing first, the audit trail and the change feed cost on top of the bare push.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

import aiohttp
import asyncpg
import shapely

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
from dispatchd.store.orgs import unit_path

TOWN = "330381001"


class Devices:
    """One websocket per unit; records when each order and each receipt confirmation arrived."""

    def __init__(self) -> None:
        self.pushed: dict[int, float] = {}
        self.receipted: dict[int, float] = {}
        self.tasks: list[asyncio.Task[None]] = []

    async def connect(self, http: aiohttp.ClientSession, urls: list[str]) -> None:
        opened: list[asyncio.Future[None]] = []
        for url in urls:
            ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            opened.append(ready)
            self.tasks.append(asyncio.create_task(self._device(http, url, ready)))
            if len(opened) % 100 == 0:
                await asyncio.gather(*opened[-100:])
        await asyncio.gather(*opened)

    async def _device(self, http: aiohttp.ClientSession, url: str, ready: asyncio.Future[None]) -> None:
        async with http.ws_connect(url, autoping=True, max_msg_size=0) as ws:
            ready.set_result(None)
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                data = json.loads(msg.data)
                if data["type"] == "order":
                    oid = data["order"]["id"]
                    if oid not in self.pushed:
                        self.pushed[oid] = time.time()
                        await ws.send_str(json.dumps({"type": "ack", "order_id": oid}))
                elif data["type"] == "ok" and data.get("for") == "ack":
                    self.receipted.setdefault(data["order_id"], time.time())

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def drive(
    send: Callable[[int], Awaitable[tuple[int, float]]], devices: Devices, n_units: int, args: argparse.Namespace
) -> dict[str, Any]:
    """Send orders at the rate for the duration; wait for their receipts; return the latencies."""
    sent: dict[int, float] = {}
    total = int(args.rate * args.duration)
    loop = asyncio.get_running_loop()
    start = loop.time()
    pending = []
    for i in range(total):
        delay = start + i / args.rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        pending.append(asyncio.create_task(send(random.randrange(n_units))))
    for oid, t0 in await asyncio.gather(*pending):
        sent[oid] = t0
    deadline = loop.time() + 30
    while loop.time() < deadline and not all(o in devices.receipted for o in sent):  # noqa: ASYNC110  (receipts arrive on other tasks; a bounded poll is simplest)
        await asyncio.sleep(0.05)
    push = [devices.pushed[o] - t for o, t in sent.items() if o in devices.pushed]
    receipt = [devices.receipted[o] - t for o, t in sent.items() if o in devices.receipted]
    return {"orders": len(sent), "push": push, "receipt": receipt, "missing": len(sent) - len(receipt)}


def report(name: str, r: dict[str, Any]) -> None:
    print(
        f"  {name:<26} push p50 {percentile(r['push'], 0.5) * 1000:7.1f} ms  p99 {percentile(r['push'], 0.99) * 1000:7.1f} ms"
        f"   receipt p50 {percentile(r['receipt'], 0.5) * 1000:7.1f} ms  p99 {percentile(r['receipt'], 0.99) * 1000:7.1f} ms"
        f"   ({r['orders']} orders, {r['missing']} without receipt)",
        flush=True,
    )


async def prepare(conn: asyncpg.Connection, n: int) -> tuple[str, list[int], list[str]]:
    tree = load_org_tree(ROOT / "config" / "orgs")
    ((_, officer),) = await make_accounts(conn, "duty", "duty_officer", COUNTY, 1)
    now = datetime.now(UTC)
    unit_ids = [
        r["id"]
        for r in await conn.fetch(
            "INSERT INTO squad_units (name, kind, org_code, org_path, created_at, updated_at)"
            " SELECT '应急小组' || g, 'team', $1, $2, $3, $3 FROM generate_series(1, $4) AS g RETURNING id",
            TOWN,
            unit_path(tree, TOWN),
            now,
            n,
        )
    ]
    members = await make_accounts(conn, "squad", "squad_member", TOWN, n)
    await conn.executemany(
        "INSERT INTO unit_members (unit_id, user_id, added_at) VALUES ($1, $2, $3)",
        [(u, m[0], now) for u, m in zip(unit_ids, members, strict=True)],
    )
    return officer, unit_ids, [m[1] for m in members]


async def main(args: argparse.Namespace) -> None:
    raise_fd_limit()
    tree = load_org_tree(ROOT / "config" / "orgs")
    grid = next(u for u in tree.subtree(TOWN) if u.level == "grid" and u.boundary)
    assert grid.boundary is not None
    point = shapely.Polygon(grid.boundary).representative_point()
    lat, lon = float(point.y), float(point.x)
    procs: list[subprocess.Popen[bytes]] = []
    with stores() as (db, rd, tmp):
        conn = await prepare_database(db)
        print(f"preparing {args.squads} squad units with one member each ...", flush=True)
        officer, unit_ids, tokens = await prepare(conn, args.squads)
        ours, theirs = free_port(), free_port()
        try:
            dispatchd = start_dispatchd(db, rd, tmp, ours)
            baseline = await asyncio.to_thread(
                subprocess.Popen, [sys.executable, "-m", "bench.orders.baseline", str(theirs)], cwd=ROOT
            )
            procs += [dispatchd, baseline]
            await wait_ready(ours, dispatchd)
            await wait_ready(theirs, baseline, "/")
            headers = {"Authorization": f"Bearer {officer}"}
            connector = aiohttp.TCPConnector(limit=0)
            async with aiohttp.ClientSession(connector=connector) as http:
                async with http.post(
                    f"http://127.0.0.1:{ours}/api/v1/incidents",
                    json={"category": "incident.dispute", "description": "基准测试事件", "priority": "P1",
                          "location": {"lat": lat, "lon": lon}},
                    headers=headers,
                ) as r:
                    assert r.status == 201, await r.text()
                    case_id = (await r.json())["id"]
                print(f"{args.rate:g} orders/s for {args.duration:g} s to {args.squads} connected squads", flush=True)

                devices = Devices()
                started = time.perf_counter()
                await devices.connect(http, [f"http://127.0.0.1:{ours}/ws/squad?token={t}" for t in tokens])
                print(f"  {args.squads} squads on dispatchd /ws/squad in {time.perf_counter() - started:.1f} s", flush=True)

                async def order_dispatchd(k: int) -> tuple[int, float]:
                    t0 = time.time()
                    async with http.post(
                        f"http://127.0.0.1:{ours}/api/v1/orders",
                        json={"incident_id": case_id, "unit_id": unit_ids[k], "instructions": "立即前往"},
                        headers=headers,
                    ) as r:
                        body = await r.json()
                        assert r.status == 201, body
                    return int(body["id"]), t0

                mine = await drive(order_dispatchd, devices, len(unit_ids), args)
                await devices.close()
                report("dispatchd", mine)

                devices = Devices()
                await devices.connect(http, [f"http://127.0.0.1:{theirs}/squad/{k}" for k in range(len(unit_ids))])
                async with http.ws_connect(f"http://127.0.0.1:{theirs}/control") as control:
                    counter = iter(range(1, 1 << 30))

                    async def order_baseline(k: int) -> tuple[int, float]:
                        oid = next(counter)
                        t0 = time.time()
                        await control.send_str(json.dumps({"unit": k, "order": {"id": oid, "unit_id": k,
                                                                              "incident_id": case_id}}))
                        return oid, t0

                    bare = await drive(order_baseline, devices, len(unit_ids), args)
                await devices.close()
                report("websockets (forward only)", bare)
                print()
                for what in ("push", "receipt"):
                    ratio = percentile(mine[what], 0.99) / percentile(bare[what], 0.99)
                    print(f"  {what:<8} p99 dispatchd / bare websockets: {ratio:.1f}x")
        finally:
            for p in procs:
                stop(p)
            await conn.close()


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.orders", description=__doc__.split("\n")[0])
    ap.add_argument("--squads", type=int, default=1000, help="connected squad devices (one unit each)")
    ap.add_argument("--rate", type=float, default=20.0, help="orders per second")
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of ordering")
    return ap.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args(sys.argv[1:])))
