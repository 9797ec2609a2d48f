"""The JT/T 808 TCP server against a terminal written here from the standard, not from the codec.

The terminal assembles its frames by hand with ``struct`` (header, BCD number, XOR check code,
0x7d/0x7e escapes) and reads the platform's replies with its own parser, so a mistake shared by
the server's encoder and decoder cannot hide.
"""

from __future__ import annotations

import asyncio
import struct
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from dispatchd.clock import FakeClock
from tests.conftest import COUNTY, StoreUrls, UserFactory
from tests.units.helpers import (
    MAYU_LAT,
    MAYU_LON,
    add_device,
    eventually,
    get_unit,
    gps_port,
    make_unit,
    metric,
)

GMT8 = timezone(timedelta(hours=8))
FRAMES_TSV = (
    Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "jt808" / "traccar-frames.tsv"
)
PHONE = "13800138000"


# -- an independent terminal ------------------------------------------------------------------------


def xor(data: bytes) -> int:
    value = 0
    for b in data:
        value ^= b
    return value


def frame(msg_id: int, phone: str, serial: int, body: bytes, version: int | None = None) -> bytes:
    """One message on the wire (JT/T 808-2013 §4.4 / 2019 §4.4.3 header)."""
    props = len(body)
    if version is None:
        header = struct.pack(">HH", msg_id, props) + bytes.fromhex(phone.rjust(12, "0"))
    else:
        header = struct.pack(">HHB", msg_id, props | 0x4000, version) + bytes.fromhex(phone.rjust(20, "0"))
    content = header + struct.pack(">H", serial) + body
    raw = content + bytes([xor(content)])
    return b"\x7e" + raw.replace(b"\x7d", b"\x7d\x01").replace(b"\x7e", b"\x7d\x02") + b"\x7e"


def parse(raw: bytes) -> tuple[int, str, int, bytes]:
    """(message id, phone, serial, body) of one escaped frame without its flags."""
    data = raw.replace(b"\x7d\x02", b"\x7e").replace(b"\x7d\x01", b"\x7d")
    assert xor(data[:-1]) == data[-1], "bad check code from the platform"
    msg_id, props = struct.unpack(">HH", data[:4])
    if props & 0x4000:
        phone, rest = data[5:15], data[15:-1]
    else:
        phone, rest = data[4:10], data[10:-1]
    serial = struct.unpack(">H", rest[:2])[0]
    body = rest[2:]
    assert len(body) == props & 0x3FF
    return msg_id, phone.hex().lstrip("0"), serial, body


def bcd_time(at: datetime) -> bytes:
    return bytes.fromhex(at.astimezone(GMT8).strftime("%y%m%d%H%M%S"))


def location(
    lat: float,
    lon: float,
    at: datetime,
    *,
    alarm: int = 0,
    status: int = 0b10,
    speed_kmh: float = 36.0,
    heading: int = 90,
    altitude: int = 12,
) -> bytes:
    """位置基本信息: alarm, status (bit 1 positioned), lat/lon in 1e-6 degrees, altitude, 0.1 km/h, BCD time."""
    return (
        struct.pack(
            ">IIIIHHH",
            alarm,
            status,
            round(lat * 1_000_000),
            round(lon * 1_000_000),
            altitude,
            round(speed_kmh * 10),
            heading,
        )
        + bcd_time(at)
        + bytes([0x01, 4])
        + struct.pack(">I", 12345)
        + bytes([0x31, 1, 9])
    )


def register_2013() -> bytes:
    return (
        struct.pack(">HH", 33, 381)
        + b"RUIAN".ljust(5, b"\0")
        + b"TX-808".ljust(20, b"\0")
        + b"T000001".ljust(7, b"\0")
        + bytes([2])
        + "浙C12345".encode("gbk")
    )


def register_2019() -> bytes:
    return (
        struct.pack(">HH", 33, 381)
        + b"RUIAN".ljust(11, b"\0")
        + b"TX-808".ljust(30, b"\0")
        + b"T000001".ljust(30, b"\0")
        + bytes([2])
        + "浙C54321".encode("gbk")
    )


class Terminal:
    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, phone: str, version: int | None
    ):
        self.reader, self.writer, self.phone, self.version = reader, writer, phone, version
        self.serial = 0
        self.buffer = b""

    @classmethod
    async def connect(cls, port: int, phone: str = PHONE, version: int | None = None) -> Terminal:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, phone, version)

    async def send(self, msg_id: int, body: bytes) -> int:
        self.serial += 1
        self.writer.write(frame(msg_id, self.phone, self.serial, body, self.version))
        await self.writer.drain()
        return self.serial

    async def reply(self) -> tuple[int, str, int, bytes]:
        while True:
            start = self.buffer.find(b"\x7e")
            end = self.buffer.find(b"\x7e", start + 1) if start >= 0 else -1
            if end > start >= 0:
                raw, self.buffer = self.buffer[start + 1 : end], self.buffer[end + 1 :]
                if raw:
                    return parse(raw)
                continue
            chunk = await asyncio.wait_for(self.reader.read(4096), 5)
            assert chunk, "connection closed by the platform"
            self.buffer += chunk

    async def general(self, msg_id: int, body: bytes = b"") -> tuple[int, int, int]:
        """Send, read the 0x8001 answer: (answered serial, answered id, result)."""
        serial = await self.send(msg_id, body)
        reply_id, phone, _, reply_body = await self.reply()
        assert reply_id == 0x8001 and phone == self.phone.lstrip("0")
        answered_serial, answered_id, result = struct.unpack(">HHB", reply_body)
        assert answered_serial == serial
        return answered_serial, answered_id, result

    async def register(self, body: bytes) -> tuple[int, str]:
        serial = await self.send(0x0100, body)
        reply_id, _, _, reply_body = await self.reply()
        assert reply_id == 0x8100
        answered, result = struct.unpack(">HB", reply_body[:3])
        assert answered == serial
        return result, reply_body[3:].decode("gbk")

    def auth_body(self, code: str) -> bytes:
        raw = code.encode("gbk")
        if self.version is None:
            return raw
        return bytes([len(raw)]) + raw + b"866496077582164" + b"1.0.0".ljust(20, b"\0")

    async def close(self) -> None:
        self.writer.close()


async def _unit_with_terminal(
    client: TestClient[Any, Any], make_user: UserFactory, phone: str = PHONE, **extra: Any
) -> tuple[dict[str, str], int]:
    duty = await make_user("duty_officer", COUNTY)
    unit = await make_unit(client, duty.headers, name="马屿指挥车", kind="vehicle")
    await add_device(client, duty.headers, unit["id"], "jt808", phone, **extra)
    return duty.headers, unit["id"]


# -- tests ------------------------------------------------------------------------------------------


async def test_terminal_registers_authenticates_and_reports(
    client: TestClient[Any, Any], make_user: UserFactory, clock: FakeClock
) -> None:
    """2013 header: register → 0x8100 with a code, auth/heartbeat/location → 0x8001 result 0; the unit moves."""
    headers, unit_id = await _unit_with_terminal(client, make_user)
    t = await Terminal.connect(gps_port(client, "jt808"))
    result, code = await t.register(register_2013())
    assert result == 0 and len(code) >= 8
    assert await t.general(0x0102, t.auth_body(code)) == (2, 0x0102, 0)
    assert (await t.general(0x0002))[1:] == (0x0002, 0)
    fix_time = clock.now().replace(microsecond=0)
    assert (await t.general(0x0200, location(MAYU_LAT, MAYU_LON, fix_time)))[1:] == (0x0200, 0)
    unit = await get_unit(client, headers, unit_id)
    pos = unit["position"]
    assert (pos["lat"], pos["lon"], pos["speed"], pos["heading"]) == (MAYU_LAT, MAYU_LON, 36.0, 90.0)
    assert pos["at"] == fix_time.isoformat() and pos["source"] == "jt808"
    await t.close()


async def test_2019_header_terminal(
    client: TestClient[Any, Any], make_user: UserFactory, clock: FakeClock
) -> None:
    """2019 header (version byte, 10-byte BCD number): the same flow answers in the 2019 header."""
    phone = "1380013800099"
    headers, unit_id = await _unit_with_terminal(client, make_user, phone)
    t = await Terminal.connect(gps_port(client, "jt808"), phone, version=1)
    result, code = await t.register(register_2019())
    assert result == 0
    assert (await t.general(0x0102, t.auth_body(code)))[2] == 0
    at = clock.now().replace(microsecond=0) - timedelta(seconds=5)
    assert (await t.general(0x0200, location(27.75, 120.49, at, heading=180)))[2] == 0
    pos = (await get_unit(client, headers, unit_id))["position"]
    assert (pos["lat"], pos["lon"], pos["heading"]) == (27.75, 120.49, 180.0)
    await t.close()


async def test_unknown_terminal_and_bad_auth_are_refused(
    client: TestClient[Any, Any], make_user: UserFactory, clock: FakeClock
) -> None:
    """An unregistered number gets register result 4; a wrong code and a location before auth get result 1."""
    headers, unit_id = await _unit_with_terminal(client, make_user)
    port = gps_port(client, "jt808")
    stranger = await Terminal.connect(port, "13999999999")
    assert (await stranger.register(register_2013()))[0] == 4
    t = await Terminal.connect(port)
    at = clock.now().replace(microsecond=0)
    assert (await t.general(0x0200, location(MAYU_LAT, MAYU_LON, at)))[2] == 1
    assert (await t.general(0x0102, t.auth_body("not-the-code")))[2] == 1
    assert (await get_unit(client, headers, unit_id))["position"] is None
    assert (
        metric(client, "dispatchd_gps_messages_refused_total", protocol="jt808", reason="unauthenticated")
        == 1
    )
    await stranger.close()
    await t.close()


async def test_batch_upload_fills_the_track_in_order(
    client: TestClient[Any, Any], make_user: UserFactory, clock: FakeClock
) -> None:
    """0x0704 with three fixes is answered 0; the track returns them in time order, the newest is live."""
    headers, unit_id = await _unit_with_terminal(client, make_user, key="preset-code")
    t = await Terminal.connect(gps_port(client, "jt808"))
    assert (await t.general(0x0102, t.auth_body("preset-code")))[2] == 0
    base = clock.now().replace(microsecond=0) - timedelta(minutes=3)
    fixes = [location(MAYU_LAT + 0.001 * i, MAYU_LON, base + timedelta(seconds=30 * i)) for i in (1, 0, 2)]
    body = struct.pack(">HB", len(fixes), 0) + b"".join(struct.pack(">H", len(f)) + f for f in fixes)
    assert (await t.general(0x0704, body))[1:] == (0x0704, 0)
    r = await client.get(f"/api/v1/units/{unit_id}/track", headers=headers)
    doc = await r.json()
    assert r.status == 200 and doc["type"] == "FeatureCollection"
    lats = [f["geometry"]["coordinates"][1] for f in doc["features"]]
    assert lats == [MAYU_LAT, MAYU_LAT + 0.001, MAYU_LAT + 0.002]
    times = [f["properties"]["at"] for f in doc["features"]]
    assert times == sorted(times)
    assert (await get_unit(client, headers, unit_id))["position"]["lat"] == MAYU_LAT + 0.002
    await t.close()


async def test_garbage_and_broken_frames_leave_the_server_working(
    client: TestClient[Any, Any], make_user: UserFactory, clock: FakeClock
) -> None:
    """Junk, a bad check code, a truncated body (result 2) and an unknown message (result 3): the link goes on."""
    headers, unit_id = await _unit_with_terminal(client, make_user, key="preset-code")
    port = gps_port(client, "jt808")
    t = await Terminal.connect(port)
    t.writer.write(b"GET / HTTP/1.1\r\n\r\n\x00\x01\x02")
    good = frame(0x0002, PHONE, 77, b"")
    t.writer.write(good[:-2] + bytes([good[-2] ^ 0xFF]) + b"\x7e")  # wrong check code: dropped
    await t.writer.drain()
    assert (await t.general(0x0102, t.auth_body("preset-code")))[2] == 0
    assert (await t.general(0x0200, b"\x00\x01\x02"))[1:] == (0x0200, 2)
    assert (await t.general(0x0900, b"\x41passthrough"))[1:] == (0x0900, 3)
    at = clock.now().replace(microsecond=0)
    assert (await t.general(0x0200, location(MAYU_LAT, MAYU_LON, at)))[2] == 0
    assert metric(client, "dispatchd_rejected_input_total", channel="jt808") >= 2

    flood_reader, flood_writer = await asyncio.open_connection("127.0.0.1", port)
    flood_writer.write(bytes(range(0x7E)) * 1000)  # 126 kB without a flag: closed, not buffered
    await flood_writer.drain()
    assert await asyncio.wait_for(flood_reader.read(), 5) == b""
    flood_writer.close()

    again = await Terminal.connect(port)
    assert (await again.general(0x0002))[2] == 0
    assert (await client.get("/healthz")).status == 200
    assert (await get_unit(client, headers, unit_id))["position"]["lat"] == MAYU_LAT
    await t.close()
    await again.close()


def _captured(description_prefix: str) -> list[str]:
    rows = []
    for line in FRAMES_TSV.read_text().splitlines():
        if line.startswith("#") or "\t" not in line:
            continue
        hexframe, description = line.split("\t", 1)
        if description.startswith(description_prefix):
            rows.append(hexframe.lower())
    return rows


async def test_real_captured_frames(client: TestClient[Any, Any], make_user: UserFactory) -> None:
    """A captured 2019 register gets 0x8100 result 0; a captured location, after auth, moves the unit."""
    register_hex = _captured("register 0x0100, 2019 header")[0]
    _, reg_phone, _, _ = parse(bytes.fromhex(register_hex)[1:-1])
    location_hex = next(h for h in _captured("location 0x0200: battery level 62"))
    _, loc_phone, _, _ = parse(bytes.fromhex(location_hex)[1:-1])
    duty = await make_user("duty_officer", COUNTY)
    unit = await make_unit(client, duty.headers, name="测试车", kind="vehicle")
    await add_device(client, duty.headers, unit["id"], "jt808", reg_phone)
    await add_device(client, duty.headers, unit["id"], "jt808", loc_phone, key="captured")
    port = gps_port(client, "jt808")

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    reg_terminal = Terminal(reader, writer, reg_phone, version=1)
    writer.write(bytes.fromhex(register_hex))
    await writer.drain()
    reply_id, _, _, body = await reg_terminal.reply()
    assert reply_id == 0x8100 and body[2] == 0 and len(body) > 3
    await reg_terminal.close()

    t = await Terminal.connect(port, loc_phone)
    assert (await t.general(0x0102, b"captured"))[2] == 0
    t.writer.write(bytes.fromhex(location_hex))
    await t.writer.drain()
    reply_id, _, _, body = await t.reply()
    assert reply_id == 0x8001 and struct.unpack(">HHB", body)[1:] == (0x0200, 0)
    pos = (await get_unit(client, duty.headers, unit["id"]))["position"]
    assert (pos["lat"], pos["lon"]) == (22.837943, 114.426985)
    assert pos["at"] == datetime(2025, 4, 2, 8, 36, 26, tzinfo=UTC).isoformat()
    await t.close()


async def test_emergency_alarm_opens_one_p1_case_at_the_position(
    client: TestClient[Any, Any], make_user: UserFactory, clock: FakeClock, clean_stores: StoreUrls
) -> None:
    """The 紧急报警 bit opens one P1 gps_alarm case at the fix; repeats do not; a new alarm after clearing does."""
    await _unit_with_terminal(client, make_user, key="preset-code")
    t = await Terminal.connect(gps_port(client, "jt808"))
    assert (await t.general(0x0102, t.auth_body("preset-code")))[2] == 0
    at = clock.now().replace(microsecond=0)

    async def cases() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(clean_stores.database)
        try:
            return list(await conn.fetch("SELECT priority, channel, lat, lon FROM incidents ORDER BY id"))
        finally:
            await conn.close()

    assert (await t.general(0x0200, location(MAYU_LAT, MAYU_LON, at, alarm=1)))[2] == 0
    first = await eventually(cases)
    assert [(c["priority"], c["channel"], c["lat"], c["lon"]) for c in first] == [
        ("P1", "gps_alarm", MAYU_LAT, MAYU_LON)
    ]
    assert (
        await t.general(0x0200, location(MAYU_LAT, MAYU_LON + 0.0001, at + timedelta(seconds=5), alarm=1))
    )[2] == 0
    assert (await t.general(0x0200, location(MAYU_LAT, MAYU_LON + 0.0002, at + timedelta(seconds=10))))[
        2
    ] == 0
    assert (
        await t.general(0x0200, location(MAYU_LAT, MAYU_LON + 0.0003, at + timedelta(seconds=15), alarm=1))
    )[2] == 0
    both = await eventually(lambda: _at_least(cases, 2))
    assert len(both) == 2 and both[1]["lon"] == MAYU_LON + 0.0003
    assert metric(client, "dispatchd_gps_alarms_total", protocol="jt808") == 2
    await t.close()


async def _at_least(fetch: Any, n: int) -> Any:
    rows = await fetch()
    return rows if len(rows) >= n else None


async def test_trouble_is_logged_once_per_connection(
    client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """Three bad frames and three bad bodies on one connection give one log line of each kind."""
    from structlog.testing import capture_logs

    await _unit_with_terminal(client, make_user, key="preset-code")
    t = await Terminal.connect(gps_port(client, "jt808"))
    with capture_logs() as logs:
        good = frame(0x0002, PHONE, 1, b"")
        for _ in range(3):
            t.writer.write(good[:-2] + bytes([good[-2] ^ 0xFF]) + b"\x7e")
        assert (await t.general(0x0102, t.auth_body("preset-code")))[2] == 0
        for _ in range(3):
            assert (await t.general(0x0200, b"\x00\x01"))[2] == 2
    events = [e["event"] for e in logs]
    assert events.count("jt808_bad_frame") == 1 and events.count("jt808_bad_message") == 1
    await t.close()


async def test_rate_limit_and_idle_timeout(
    client: TestClient[Any, Any], make_user: UserFactory, clock: FakeClock, app_of: Any
) -> None:
    """Past the burst a terminal gets result 1; a terminal silent past the idle timeout is disconnected."""
    from dispatchd.channels.gps.slots import JT808_SERVER

    await _unit_with_terminal(client, make_user, key="preset-code")
    t = await Terminal.connect(gps_port(client, "jt808"))
    assert (await t.general(0x0102, t.auth_body("preset-code")))[2] == 0
    at = clock.now().replace(microsecond=0)
    results = [
        (await t.general(0x0200, location(MAYU_LAT, MAYU_LON + i * 1e-5, at + timedelta(seconds=i))))[2]
        for i in range(32)
    ]
    assert results[:30] == [0] * 30 and results[30:] == [1, 1]
    assert (
        metric(client, "dispatchd_gps_messages_refused_total", protocol="jt808", reason="rate_limited") == 2
    )
    clock.advance(601)
    assert app_of(client)[JT808_SERVER].sweep() == 1
    assert await asyncio.wait_for(t.reader.read(), 5) == b""
