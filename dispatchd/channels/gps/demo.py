"""The squad demo of ``dispatchd dev``: simulated squads of the demo county reporting their positions.

Each demo unit patrols its township along the edges of the grids (网格), which in the synthetic
county stand in for its streets: a random walk over the graph of grid edges, never turning straight
back where it can go on. The command vehicles are JT/T 808 terminals on one TCP connection each
(register 0x0100, auth 0x0102, location 0x0200, heartbeat 0x0002); the other units are OsmAnd
phones sending HTTP requests. Both go to the real ports of this instance, so the demo takes the same
path as real devices: filtering, rate limits, batching, the board.

``[demo] speed`` makes the squads move faster, up to an apparent 150 km/h so that the fixes still
pass the impossible-speed filter.
"""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import aiohttp
import structlog

from dispatchd.channels.gps.jt808 import (
    FrameSplitter,
    Heartbeat,
    Location,
    MsgId,
    RegisterReply,
    TerminalAuth,
    TerminalRegister,
    decode_body,
    decode_frame,
    encode_message,
    satellites_item,
    signal_strength_item,
)
from dispatchd.context import Context
from dispatchd.domain.geo import haversine_m, initial_bearing_deg
from dispatchd.domain.orgs import OrgTree
from dispatchd.tasks import stop_tasks
from dispatchd.units import service
from dispatchd.units.devices import new_secret
from dispatchd.units.slots import DEVICES, GPS_PORTS

log = structlog.get_logger("dispatchd.demo.squads")

Point = tuple[float, float]  # (lat, lon)

# (township name, unit name, kind, protocol): 马屿 has the squad the domain describes (motorbikes,
# e-bikes, a command vehicle, people on foot); two more townships have a smaller one each.
DEMO_SQUADS = (
    ("马屿镇", "马屿应急中队指挥车", "vehicle", "jt808"),
    ("马屿镇", "马屿应急中队一组", "team", "osmand"),
    ("马屿镇", "马屿摩托巡逻1号", "motorbike", "osmand"),
    ("马屿镇", "马屿摩托巡逻2号", "motorbike", "osmand"),
    ("马屿镇", "马屿电动车巡逻1号", "ebike", "osmand"),
    ("马屿镇", "马屿单兵01", "person", "osmand"),
    ("安阳街道", "安阳应急中队指挥车", "vehicle", "jt808"),
    ("安阳街道", "安阳摩托巡逻1号", "motorbike", "osmand"),
    ("塘下镇", "塘下电动车巡逻1号", "ebike", "osmand"),
)
# Travel speeds on patrol (km/h), and seconds of simulated time between two fixes.
PATROL_KMH = {"vehicle": 30.0, "team": 4.5, "motorbike": 22.0, "ebike": 15.0, "person": 4.0}
REPORT_EVERY = {"jt808": 5.0, "osmand": 10.0}
MAX_APPARENT_KMH = 150.0
MIN_REAL_INTERVAL = 0.5  # seconds: well inside the per-device rate limit


def street_graph(tree: OrgTree, township: str) -> dict[Point, list[Point]]:
    """The edges of every grid of the township as a graph (grids share the vertices of common edges)."""
    graph: dict[Point, set[Point]] = {}
    for unit in tree.subtree(township):
        if unit.level != "grid" or not unit.boundary:
            continue
        ring = [(round(lat, 7), round(lon, 7)) for lon, lat in unit.boundary]
        for a, b in itertools.pairwise(ring):
            if a != b:
                graph.setdefault(a, set()).add(b)
                graph.setdefault(b, set()).add(a)
    return {p: sorted(n) for p, n in graph.items()}


@dataclass
class Walker:
    """A random walk along the street graph at a given speed."""

    graph: dict[Point, list[Point]]
    rng: random.Random
    kmh: float
    here: Point = (0.0, 0.0)  # where the walker is, usually between two vertices
    vertex: Point = (0.0, 0.0)  # the vertex the current leg started from
    previous: Point | None = None  # the vertex before that
    target: Point = (0.0, 0.0)
    heading: float = 0.0

    def __post_init__(self) -> None:
        self.here = self.vertex = self.rng.choice(sorted(self.graph))
        self.target = self._next(self.here)

    def _next(self, at: Point) -> Point:
        options = [p for p in self.graph[at] if p != self.previous] or self.graph[at]
        return self.rng.choice(options)

    def advance(self, seconds: float, kmh: float) -> Point:
        """Move ``seconds`` at ``kmh`` along the streets; return the new point."""
        metres = kmh / 3.6 * seconds
        while metres > 0:
            left = haversine_m(self.here[0], self.here[1], self.target[0], self.target[1])
            self.heading = initial_bearing_deg(self.here[0], self.here[1], self.target[0], self.target[1])
            if left <= metres:
                metres -= left
                self.previous, self.vertex = self.vertex, self.target
                self.here = self.target
                self.target = self._next(self.here)
                continue
            share = metres / left
            self.here = (
                self.here[0] + (self.target[0] - self.here[0]) * share,
                self.here[1] + (self.target[1] - self.here[1]) * share,
            )
            metres = 0
        return self.here


@dataclass
class DemoSquad:
    unit_id: int
    name: str
    kind: str
    protocol: str
    identifier: str
    secret: str
    walker: Walker
    extras: dict[str, float] = field(default_factory=dict)


async def ensure_squads(ctx: Context) -> list[DemoSquad]:
    """Create the demo units and devices that do not exist; give every device a fresh secret."""
    tree = ctx.orgs
    by_name = {u.name: u.code for u in tree.units.values() if u.level == "township"}
    squads: list[DemoSquad] = []
    for index, (township_name, name, kind, protocol) in enumerate(DEMO_SQUADS):
        township = by_name.get(township_name)
        if township is None:
            continue
        graph = street_graph(tree, township)
        if not graph:
            continue
        async with ctx.pool.acquire() as conn:
            unit_id = await conn.fetchval(
                "SELECT id FROM squad_units WHERE name = $1 AND org_code = $2 ORDER BY id LIMIT 1",
                name,
                township,
            )
        if unit_id is None:
            unit_id = int(
                (await service.create_unit(ctx, name=name, kind=kind, org=township, actor="demo"))["id"]
            )
        identifier = f"1330577{index:04d}" if protocol == "jt808" else f"demo-{township}-{index:02d}"
        secret = new_secret(protocol)
        device = await ctx[DEVICES].find(protocol, identifier)
        if device is None:
            await service.register_device(ctx, unit_id, protocol, identifier, "demo", secret=secret)
        else:
            await ctx[DEVICES].set_secret(device, secret)
        rng = random.Random(name)
        squads.append(
            DemoSquad(unit_id, name, kind, protocol, identifier, secret, Walker(graph, rng, PATROL_KMH[kind]))
        )
    return squads


async def _join_squad_account(ctx: Context, squads: Sequence[DemoSquad]) -> bool:
    """Put the demo squad member (account ``squad``) in the demo squads of their township, the ones
    the console proposes for that township's cases; False until the account exists."""
    async with ctx.pool.acquire() as conn:
        user = await conn.fetchrow("SELECT id, org_code FROM users WHERE username = 'squad'")
        if user is None:
            return False
        units = await conn.fetch(
            "SELECT id FROM squad_units WHERE id = ANY($1::bigint[]) AND $2 = ANY(org_path)",
            [s.unit_id for s in squads],
            user["org_code"],
        )
        joined = {r["unit_id"] for r in await conn.fetch("SELECT unit_id FROM unit_members WHERE user_id = $1", user["id"])}
    everything = frozenset(ctx.orgs.units)
    for unit in units:
        if unit["id"] not in joined:
            await service.add_member(ctx, unit["id"], "squad", "demo", visible=everything)
    return True


def _pace(speed: float, protocol: str, kmh: float) -> tuple[float, float]:
    """(real seconds between two fixes, the apparent speed in km/h over them) at demo ``speed``."""
    simulated = REPORT_EVERY[protocol]
    real = max(MIN_REAL_INTERVAL, simulated / speed)
    return real, min(kmh * simulated / real, MAX_APPARENT_KMH)


def _host(ctx: Context, host: str) -> str:
    host = host or ctx.settings.http.host
    return "127.0.0.1" if host in ("0.0.0.0", "", "::") else host


async def run_osmand_phone(
    ctx: Context, http: aiohttp.ClientSession, squad: DemoSquad, speed: float
) -> None:
    settings = ctx.settings
    url = f"http://{_host(ctx, settings.osmand.host)}:{ctx[GPS_PORTS]['osmand']}/"
    battery = 100.0
    await asyncio.sleep(random.uniform(0, 2))
    while True:
        real, kmh = _pace(speed, "osmand", squad.walker.kmh)
        lat, lon = squad.walker.advance(real, kmh)
        battery = max(5.0, battery - 0.02)
        params = {
            "id": squad.identifier,
            "lat": f"{lat:.7f}",
            "lon": f"{lon:.7f}",
            "timestamp": str(int(ctx.clock.now().timestamp())),
            "speed": f"{kmh / 1.852:.1f}",  # knots, as OsmAnd sends
            "bearing": f"{squad.walker.heading:.0f}",
            "accuracy": "8",
            "batt": f"{battery:.0f}",
            "key": squad.secret,
        }
        try:
            async with http.get(url, params=params) as r:
                if r.status != 200:
                    log.info("demo_osmand_refused", unit=squad.name, status=r.status)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("demo_osmand_failed", unit=squad.name, error=type(exc).__name__)
        await asyncio.sleep(real)


async def _read_replies(reader: asyncio.StreamReader, replies: asyncio.Queue[tuple[int, object]]) -> None:
    splitter = FrameSplitter()
    while data := await reader.read(4096):
        for payload in splitter.feed(data):
            message = decode_frame(payload)
            await replies.put((message.header.msg_id, decode_body(message)))


async def run_jt808_terminal(ctx: Context, squad: DemoSquad, speed: float) -> None:
    """A vehicle terminal: register, authenticate, then report; reconnect when the link drops."""
    settings = ctx.settings
    host, port = _host(ctx, settings.jt808.host), ctx[GPS_PORTS]["jt808"]
    serial = 0

    def frame(body: TerminalRegister | TerminalAuth | Location | Heartbeat) -> bytes:
        nonlocal serial
        serial = (serial + 1) & 0xFFFF
        return encode_message(body, phone=squad.identifier, serial=serial)

    while True:
        writer: asyncio.StreamWriter | None = None
        reading: asyncio.Task[None] | None = None
        try:
            reader, writer = await asyncio.open_connection(host, port)
            replies: asyncio.Queue[tuple[int, object]] = asyncio.Queue()
            reading = asyncio.create_task(_read_replies(reader, replies))
            writer.write(frame(TerminalRegister(33, 381, "RUIAN", "DEMO-808", "DEMO001", 2, "浙C00110")))
            msg_id, body = await asyncio.wait_for(replies.get(), 10)
            if msg_id != MsgId.REGISTER_REPLY or not isinstance(body, RegisterReply) or body.result != 0:
                raise ConnectionError(f"registration refused: {body}")
            writer.write(frame(TerminalAuth(body.auth_code)))
            msg_id, _ = await asyncio.wait_for(replies.get(), 10)
            beats = 0
            while True:
                real, kmh = _pace(speed, "jt808", squad.walker.kmh)
                lat, lon = squad.walker.advance(real, kmh)
                now: datetime = ctx.clock.now().replace(microsecond=0)
                location = Location(
                    alarm=0,
                    status=0b11,  # ACC on, positioned
                    lat=round(lat, 6),
                    lon=round(lon, 6),
                    altitude_m=8,
                    speed_kmh=round(kmh, 1),
                    heading=round(squad.walker.heading) % 360,
                    at=now,
                    items=(satellites_item(11), signal_strength_item(24)),
                )
                writer.write(frame(location))
                beats += 1
                if beats % 12 == 0:
                    writer.write(frame(Heartbeat()))
                await writer.drain()
                while not replies.empty():
                    replies.get_nowait()
                await asyncio.sleep(real)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("demo_jt808_reconnecting", unit=squad.name, error=f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(5)
        finally:
            if reading is not None:
                reading.cancel()
            if writer is not None:
                writer.close()


async def run_demo(ctx: Context, speed: float | None = None) -> None:
    """Start every demo squad (at ``speed``, by default ``[demo] speed``); runs until cancelled."""
    speed = speed or ctx.settings.demo.speed
    try:
        squads = await ensure_squads(ctx)
    except Exception:
        log.exception("demo_squads_failed")
        return
    log.info("demo_squads_started", units=len(squads), speed=speed)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
        tasks = [
            asyncio.create_task(
                run_jt808_terminal(ctx, s, speed)
                if s.protocol == "jt808"
                else run_osmand_phone(ctx, http, s, speed)
            )
            for s in squads
        ]
        try:
            for _ in range(30):  # the demo accounts are created just after start-up
                await asyncio.sleep(2)
                try:
                    if await _join_squad_account(ctx, squads):
                        break
                except Exception as exc:
                    log.info("demo_squad_member_not_added", error=f"{type(exc).__name__}: {exc}")
            await asyncio.gather(*tasks)
        finally:
            await stop_tasks(tasks)
