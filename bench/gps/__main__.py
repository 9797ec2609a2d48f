"""Squad-position ingest benchmark: ``python -m bench.gps [--jt808 N] [--osmand N] [--rate R] [--duration S]
[--instances N]``.

Starts a real PostgreSQL and Redis (embedded wheels) in a temporary directory, registers one unit
and one device per simulated terminal, runs ``dispatchd serve`` as its own process (``--instances N``:
N processes, as the systemd units run one per core, sharing the OsmAnd and JT/T 808 ports with
SO_REUSEPORT so the kernel spreads the connections), then drives them from this process over the
real ports: JT/T 808 terminals on long-lived TCP connections (authenticate, then 0x0200 location
reports) and OsmAnd phones over HTTP keep-alive.

Printed: the offered and the sustained (server-counted) fixes per second, the time from a fix
being sent to the new position being readable in Redis (p50, p99, sampled), the OsmAnd request
time (answered once the fix is stored), the server's CPU, and the raw pipelined GEOADD rate of the
same Redis measured in the same run: the ceiling the live-position writes cannot beat.

JT/T 808 carries fix times in whole seconds; each simulated terminal reports fixes one second
apart in its own time (as a terminal replaying 1 Hz fixes would), so ``--rate`` above 1 runs the
terminals' clocks ahead of the wall clock: keep runs shorter than ``[units] max_future_s`` allows.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import random
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from functools import reduce
from operator import xor
from pathlib import Path

import aiohttp
import asyncpg
import psutil
import redis.asyncio as aioredis

from dispatchd.config import env_name
from dispatchd.domain.orgs import load_org_tree
from dispatchd.embedded import EmbeddedStores
from dispatchd.store.db import init_connection
from dispatchd.store.migrate import migrate
from dispatchd.store.orgs import sync_org_tree, unit_path

ROOT = Path(__file__).resolve().parents[2]
GMT8 = timezone(timedelta(hours=8))
SECRET = "bench-secret"
_HEADER = struct.Struct(">HH")
_LOCATION = struct.Struct(">IIIIhHH")
SAMPLE_EVERY = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- data --------------------------------------------------------------------------------------------


@dataclass
class Device:
    unit_id: int
    identifier: str
    lat: float
    lon: float


async def prepare(db_url: str, n_jt808: int, n_osmand: int) -> tuple[list[Device], list[Device]]:
    tree = load_org_tree(ROOT / "config" / "orgs")
    townships = [u for u in tree.units.values() if u.level == "township" and u.centre]
    conn = await asyncpg.connect(db_url)
    try:
        await init_connection(conn)
        await migrate(conn)
        await sync_org_tree(conn, tree)
        await conn.execute("TRUNCATE squad_units, devices, track_points, outbox RESTART IDENTITY CASCADE")
        now = datetime.now(UTC)
        rows = []
        for i in range(n_jt808 + n_osmand):
            t = townships[i % len(townships)]
            kind = "vehicle" if i < n_jt808 else "person"
            rows.append((f"bench-{i}", kind, t.code, unit_path(tree, t.code), "available", now, now))
        await conn.copy_records_to_table(
            "squad_units",
            records=rows,
            columns=["name", "kind", "org_code", "org_path", "status", "created_at", "updated_at"],
        )
        ids = [r["id"] for r in await conn.fetch("SELECT id FROM squad_units ORDER BY id")]
        secret = hashlib.sha256(SECRET.encode()).digest()
        jt, om, devices = [], [], []
        for i, unit_id in enumerate(ids):
            t = townships[i % len(townships)]
            assert t.centre is not None
            lon, lat = t.centre
            lat += random.uniform(-0.01, 0.01)
            lon += random.uniform(-0.01, 0.01)
            if i < n_jt808:
                dev = Device(unit_id, f"1390{i:07d}", lat, lon)
                jt.append(dev)
                devices.append((unit_id, "jt808", dev.identifier, secret, now))
            else:
                dev = Device(unit_id, f"bench-phone-{i}", lat, lon)
                om.append(dev)
                devices.append((unit_id, "osmand", dev.identifier, secret, now))
        await conn.copy_records_to_table(
            "devices",
            records=devices,
            columns=["unit_id", "protocol", "identifier", "secret_hash", "created_at"],
        )
    finally:
        await conn.close()
    return jt, om


async def geoadd_ceiling(redis_url: str, members: int = 200_000, batch: int = 1000) -> float:
    """Single-member GEOADDs per second, pipelined ``batch`` at a time, to a scratch key."""
    r = aioredis.from_url(redis_url)
    key = "bench:geoadd-ceiling"
    try:
        await r.delete(key)
        started = time.perf_counter()
        for start in range(0, members, batch):
            async with r.pipeline(transaction=False) as pipe:
                for i in range(start, start + batch):
                    pipe.geoadd(key, (120.6 + (i % 1000) * 1e-4, 27.7 + (i // 1000) * 1e-4, str(i)))
                await pipe.execute()
        elapsed = time.perf_counter() - started
        await r.delete(key)
    finally:
        await r.aclose()
    return members / elapsed


# -- load ----------------------------------------------------------------------------------------------


@dataclass
class Stats:
    sent: int = 0
    send_blocked: int = 0
    osmand_ok: int = 0
    osmand_failed: int = 0
    osmand_times: list[float] = field(default_factory=list)
    readable: list[float] = field(default_factory=list)
    lost: int = 0
    pending: dict[int, tuple[float, float]] = field(default_factory=dict)  # unit -> (fix at, sent at)


class Jt808Terminal:
    """One terminal on a plain non-blocking socket: the load generator must cost far less than the
    server, so it writes frames straight to the socket and lets the replies wait in the kernel's
    receive buffer (counted by draining every socket at the start and the end of the window)."""

    def __init__(self, dev: Device, start_second: int) -> None:
        self.dev = dev
        self.prefix = _HEADER.pack(0x0200, _LOCATION.size + 6) + bytes.fromhex(dev.identifier.rjust(12, "0"))
        self.serial = 0
        self.second = start_second
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setblocking(False)

    def frame(self, msg_id: int, body: bytes) -> bytes:
        self.serial = (self.serial + 1) & 0xFFFF
        phone = self.prefix[4:]
        content = _HEADER.pack(msg_id, len(body)) + phone + self.serial.to_bytes(2, "big") + body
        raw = content + bytes([reduce(xor, content)])
        return b"\x7e" + raw.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02") + b"\x7e"

    async def connect(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(self.sock, ("127.0.0.1", port))
        await loop.sock_sendall(self.sock, self.frame(0x0102, SECRET.encode()))
        reply = await asyncio.wait_for(loop.sock_recv(self.sock, 256), 30)
        assert reply.count(0x7E) >= 2, "no answer to the auth message"

    def report(self, bcd: dict[int, bytes]) -> float:
        """Send the next fix (one second after the previous one in the terminal's time)."""
        self.second += 1
        self.dev.lat += random.uniform(-5e-5, 5e-5)
        self.dev.lon += random.uniform(-5e-5, 5e-5)
        stamp = bcd.get(self.second)
        if stamp is None:
            stamp = bcd[self.second] = bytes.fromhex(
                datetime.fromtimestamp(self.second, GMT8).strftime("%y%m%d%H%M%S")
            )
        self.serial = (self.serial + 1) & 0xFFFF
        content = (
            self.prefix
            + self.serial.to_bytes(2, "big")
            + _LOCATION.pack(0, 2, round(self.dev.lat * 1e6), round(self.dev.lon * 1e6), 10, 360, 90)
            + stamp
        )
        raw = content + bytes([reduce(xor, content)])
        self.sock.send(b"\x7e" + raw.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02") + b"\x7e")
        return float(self.second)

    def drain(self) -> int:
        """Read what the platform sent since the last drain; return how many frames (two flags each)."""
        flags = 0
        while True:
            try:
                data = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                return flags // 2
            if not data:
                return flags // 2
            flags += data.count(0x7E)


async def run_jt808(
    port: int,
    terminals: list[Jt808Terminal],
    rate: float,
    stats: Stats,
    stop: asyncio.Event,
) -> None:
    loop = asyncio.get_running_loop()
    total_rate = rate * len(terminals)
    bcd: dict[int, bytes] = {}
    started = loop.time()
    sent = 0
    i = 0
    while not stop.is_set():
        await asyncio.sleep(0.005)
        due = min(int((loop.time() - started) * total_rate) - sent, 4000)
        for _ in range(due):
            t = terminals[i]
            i = (i + 1) % len(terminals)
            try:
                at = t.report(bcd)
            except (BlockingIOError, InterruptedError):
                stats.send_blocked += 1
                continue
            if i % SAMPLE_EVERY == 0 and t.dev.unit_id not in stats.pending:
                stats.pending[t.dev.unit_id] = (at, loop.time())
        sent += max(due, 0)
        stats.sent += max(due, 0)


class Phone(asyncio.Protocol):
    """An OsmAnd phone on one keep-alive HTTP connection, one request at a time."""

    def __init__(self, dev: Device) -> None:
        self.dev = dev
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[bool] | None = None
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if b"\r\n\r\n" in self.buffer and self.answer is not None and not self.answer.done():
            self.answer.set_result(self.buffer.startswith(b"HTTP/1.1 200"))
            self.buffer = b""

    def connection_lost(self, exc: Exception | None) -> None:
        if self.answer is not None and not self.answer.done():
            self.answer.set_result(False)

    def request(self) -> asyncio.Future[bool]:
        assert self.transport is not None
        self.dev.lat += random.uniform(-5e-5, 5e-5)
        self.answer = asyncio.get_running_loop().create_future()
        self.transport.write(
            (
                f"GET /?id={self.dev.identifier}&lat={self.dev.lat:.6f}&lon={self.dev.lon:.6f}"
                f"&timestamp={int(time.time() * 1000)}&speed=5&key={SECRET} HTTP/1.1\r\n"
                "Host: dispatchd\r\n\r\n"
            ).encode()
        )
        return self.answer


async def run_osmand(
    port: int, devices: list[Device], rate: float, stats: Stats, stop: asyncio.Event
) -> None:
    if not devices:
        return
    loop = asyncio.get_running_loop()

    async def phone(dev: Device, offset: float) -> None:
        _, proto = await loop.create_connection(lambda: Phone(dev), "127.0.0.1", port)
        await asyncio.sleep(offset)
        interval = 1 / rate
        next_at = loop.time()
        while not stop.is_set():
            sent = loop.time()
            ok = await proto.request()
            stats.sent += 1
            if ok:
                stats.osmand_ok += 1
                stats.osmand_times.append(loop.time() - sent)
            else:
                stats.osmand_failed += 1
                return
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))

    await asyncio.gather(*(phone(d, random.uniform(0, 1 / rate)) for d in devices))


async def probe(redis_url: str, stats: Stats, stop: asyncio.Event) -> None:
    """Poll Redis for sampled fixes: the time from sending to the position being readable."""
    loop = asyncio.get_running_loop()
    r = aioredis.from_url(redis_url)
    try:
        while not stop.is_set():
            await asyncio.sleep(0.01)
            if not stats.pending:
                continue
            units = list(stats.pending)
            async with r.pipeline(transaction=False) as pipe:
                for uid in units:
                    pipe.hget(f"dispatchd:unit:{uid}:pos", "at")
                values = await pipe.execute()
            now = loop.time()
            for uid, raw in zip(units, values, strict=True):
                at, sent = stats.pending[uid]
                if raw is not None and float(raw) >= at:
                    stats.readable.append(now - sent)
                    del stats.pending[uid]
                elif now - sent > 10:
                    stats.lost += 1
                    del stats.pending[uid]
    finally:
        await r.aclose()


async def server_fixes(http_port: int) -> float:
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{http_port}/metrics") as r:
        text = await r.text()
    return sum(float(m) for m in re.findall(r"^dispatchd_gps_fixes_total\{[^}]*\} (\S+)$", text, re.M))


async def all_fixes(http_ports: list[int]) -> float:
    return sum([await server_fixes(port) for port in http_ports])


async def wait_ready(http_port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"dispatchd exited with {proc.returncode}")
            try:
                async with http.get(f"http://127.0.0.1:{http_port}/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit("dispatchd did not become ready")


async def main(args: argparse.Namespace) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="dispatchd-bench-gps-"))
    os.chmod(tmp, 0o755)
    stores = EmbeddedStores.for_data_dir(tmp)
    stores.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        db, rd = stores.postgres.url, stores.redis.url
        print(f"preparing {args.jt808} JT/T 808 terminals and {args.osmand} OsmAnd phones ...", flush=True)
        jt, om = await prepare(db, args.jt808, args.osmand)
        ceiling = await geoadd_ceiling(rd)
        http_ports = [free_port() for _ in range(args.instances)]
        osmand_port, jt808_port = free_port(), free_port()
        log_file = (tmp / "dispatchd.log").open("wb")
        for http_port in http_ports:
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith("DISPATCHD_")},
                "DISPATCHD_DATABASE_URL": db,
                "DISPATCHD_REDIS_URL": rd,
                "DISPATCHD_HTTP_PORT": str(http_port),
                "DISPATCHD_OSMAND_PORT": str(osmand_port),
                "DISPATCHD_JT808_PORT": str(jt808_port),
                "DISPATCHD_OSMAND_REUSE_PORT": "true" if args.instances > 1 else "false",
                "DISPATCHD_JT808_REUSE_PORT": "true" if args.instances > 1 else "false",
                "DISPATCHD_SIP_PORT": "0",
                "DISPATCHD_LOG_LEVEL": "warning",
                "DISPATCHD_LOG_FORMAT": "json",
                "DISPATCHD_DATA_DIR": str(tmp),
                # Every simulated device comes from 127.0.0.1: no per-address cap in a benchmark.
                "DISPATCHD_HTTP_MAX_CONNECTIONS_PER_ADDRESS": "0",
                "DISPATCHD_OSMAND_MAX_CONNECTIONS_PER_ADDRESS": "0",
                "DISPATCHD_JT808_MAX_CONNECTIONS_PER_ADDRESS": "0",
                **dict(args.setting),
            }
            proc = await asyncio.to_thread(
                subprocess.Popen,
                [sys.executable, "-m", "dispatchd.cli", "serve"],
                cwd=ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
            procs.append(proc)
            await wait_ready(http_port, proc)
        servers, me = [psutil.Process(p.pid) for p in procs], psutil.Process()
        stats = Stats()
        stop = asyncio.Event()
        connect_started = time.perf_counter()
        start_second = int(time.time())
        terminals = [Jt808Terminal(dev, start_second) for dev in jt]
        for chunk in range(0, len(terminals), 500):
            await asyncio.gather(*(t.connect(jt808_port) for t in terminals[chunk : chunk + 500]))
        print(
            f"{len(terminals)} JT/T 808 terminals connected and authenticated in "
            f"{time.perf_counter() - connect_started:.1f} s; warming up {args.warmup} s ...",
            flush=True,
        )
        tasks = [
            asyncio.create_task(run_jt808(jt808_port, terminals, args.rate, stats, stop)),
            asyncio.create_task(run_osmand(osmand_port, om, args.osmand_rate, stats, stop)),
            asyncio.create_task(probe(rd, stats, stop)),
        ]
        await asyncio.sleep(args.warmup)
        stats.readable.clear()
        stats.osmand_times.clear()
        for t in terminals:
            t.drain()
        sent0, fixes0 = stats.sent, await all_fixes(http_ports)
        for server in servers:
            server.cpu_percent()
        me.cpu_percent()
        t0 = time.perf_counter()
        await asyncio.sleep(args.duration)
        elapsed = time.perf_counter() - t0
        sent1, fixes1 = stats.sent, await all_fixes(http_ports)
        cpus, own_cpu = [server.cpu_percent() for server in servers], me.cpu_percent()
        cpu = sum(cpus)
        await asyncio.sleep(0.5)  # replies to the last fixes of the window
        replies = sum(t.drain() for t in terminals)
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        for t in terminals:
            t.sock.close()

        print()
        print(
            f"terminals              {len(jt)} JT/T 808 over TCP + {len(om)} OsmAnd over HTTP "
            f"({len(jt) + len(om)} in all), {elapsed:.0f} s measured"
        )
        print(f"offered                {(sent1 - sent0) / elapsed:10,.0f} fixes/s")
        print(f"sustained (server)     {(fixes1 - fixes0) / elapsed:10,.0f} fixes/s accepted by dispatchd")
        print(f"JT/T 808 replies       {replies / elapsed:10,.0f} /s (0x8001, sent once the fix is stored)")
        n = len(stats.readable)
        print(
            f"fix-to-readable        p50 {percentile(stats.readable, 0.5) * 1000:7.1f} ms   "
            f"p99 {percentile(stats.readable, 0.99) * 1000:7.1f} ms   ({n} samples, {stats.lost} lost)"
        )
        if stats.osmand_times:
            print(
                f"OsmAnd request         p50 {percentile(stats.osmand_times, 0.5) * 1000:7.1f} ms   "
                f"p99 {percentile(stats.osmand_times, 0.99) * 1000:7.1f} ms   "
                f"({stats.osmand_ok} ok, {stats.osmand_failed} failed)"
            )
        print(
            f"CPU                    {cpu:10.0f} % of one core: dispatchd"
            + (f" ({' + '.join(f'{c:.0f}' for c in cpus)} in {len(cpus)} processes)" if len(cpus) > 1 else "")
            + f" ({own_cpu:.0f} % the load generator)"
        )
        print(f"load average           {' '.join(f'{x:.2f}' for x in os.getloadavg())} (1, 5, 15 min) at the end")
        print(f"GEOADD ceiling         {ceiling:10,.0f} GEOADD/s (raw, pipelined 1000 at a time, same Redis)")
        if stats.readable:
            print(
                f"                       (mean fix-to-readable {statistics.mean(stats.readable) * 1000:.1f} ms)"
            )
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        stores.stop_started()
        server_log = tmp / "dispatchd.log"
        if server_log.exists():
            lines = server_log.read_text(errors="replace").splitlines()
            if lines:
                print(f"dispatchd logged {len(lines)} lines (warnings and errors); the last ones:")
                for line in lines[-5:]:
                    print("  " + line[:300])
        shutil.rmtree(tmp, ignore_errors=True)


def _setting(text: str) -> tuple[str, str]:
    """``units.publish_interval_s=5`` -> ("DISPATCHD_UNITS_PUBLISH_INTERVAL_S", "5")."""
    name, sep, value = text.partition("=")
    section, dot, key = name.partition(".")
    if not (sep and dot and section and key):
        raise argparse.ArgumentTypeError(f"expected SECTION.KEY=VALUE, got {text!r}")
    return env_name(section, key), value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.gps", description=__doc__.splitlines()[0])
    p.add_argument("--jt808", type=int, default=9500, help="JT/T 808 terminals (one TCP connection each)")
    p.add_argument("--osmand", type=int, default=500, help="OsmAnd phones (HTTP keep-alive)")
    p.add_argument("--rate", type=float, default=1.55, help="fixes per second per JT/T 808 terminal")
    p.add_argument("--osmand-rate", type=float, default=1.0, help="fixes per second per phone")
    p.add_argument("--duration", type=float, default=20, help="seconds measured")
    p.add_argument(
        "--set",
        dest="setting",
        action="append",
        default=[],
        type=_setting,
        metavar="SECTION.KEY=VALUE",
        help="a dispatchd setting for the run, e.g. units.publish_interval_s=5 (repeatable)",
    )
    p.add_argument("--warmup", type=float, default=5, help="seconds of load before measuring")
    p.add_argument(
        "--instances",
        type=int,
        default=1,
        help="dispatchd processes sharing the device ports with SO_REUSEPORT (one per core)",
    )
    return p.parse_args(argv)


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
