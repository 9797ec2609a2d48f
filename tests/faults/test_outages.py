"""PostgreSQL or Redis hung (SIGSTOP) or stopped under a running instance: every route answers at once
with 503, Retry-After and a message in both languages, one log line per outage; what only needs
PostgreSQL keeps working while Redis is away; GPS fixes are held and written once when the store is back.

Each test runs against stores of its own (tests/faults/conftest.py), frozen or stopped for real."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from dispatchd.channels.gb28181.runtime import GB28181
from dispatchd.channels.gps.api import SPOOL_DIR
from dispatchd.channels.gps.slots import SINK
from dispatchd.channels.gps.spool import HeldSpool, read_batch
from dispatchd.channels.hotline.slots import SIP
from dispatchd.clock import FakeClock
from dispatchd.web.appkeys import CTX
from tests.channels.gb28181.conftest import DeviceFactory, clip, make_device, start_platform  # noqa: F401  # fixtures
from tests.channels.gb28181.conftest import poll as gb_poll
from tests.channels.gb28181.test_alarms import alarm, video_cases
from tests.channels.gb28181.test_platform import registered_device
from tests.channels.hotline.voice.conftest import sip_port, waiting_call
from tests.channels.hotline.voice.peers import ToneCaller
from tests.channels.test_jt808_server import Terminal, location, register_2013
from tests.conftest import COUNTY, PASSWORD, AppFactory, UserFactory
from tests.faults.stores import FaultStores
from tests.live.helpers import board_path, make_squad
from tests.units.helpers import MAYU_LAT, MAYU_LON, add_device, eventually, gps_port, make_unit, metric

# Short deadlines, so that an outage shows within a second or two.
FAST: dict[str, object] = {
    "database_statement_timeout": 1.0,
    "database_acquire_timeout": 0.5,
    "database_connect_timeout": 1.0,
    "redis_socket_timeout": 0.5,
    "redis_connect_timeout": 0.5,
}
# What a client waits for an answer before it calls the server hung (the deadline of every request).
DEADLINE = aiohttp.ClientTimeout(total=10)


async def answer(client: TestClient[Any, Any], method: str, path: str, **kw: Any) -> aiohttp.ClientResponse:
    """A request that must be answered within DEADLINE (a hung server fails the test here)."""
    r = await client.request(method, path, timeout=DEADLINE, **kw)
    await r.read()
    return r


def events(logs: list[dict[str, Any]], name: str, **match: Any) -> list[dict[str, Any]]:
    return [e for e in logs if e["event"] == name and all(e.get(k) == v for k, v in match.items())]


async def assert_refused(r: aiohttp.ClientResponse, store: str) -> None:
    assert r.status == 503, await r.text()
    assert int(r.headers["Retry-After"]) >= 1
    body = await r.json()
    assert body["error"]["code"] in ("store_unavailable", "store_busy")
    assert body["error"]["store"] == store and body["error"]["message"]


@pytest.mark.parametrize("fault", ["freeze", "stop"])
async def test_postgres_away_every_route_answers_503_at_once(
    make_client: AppFactory, make_user: UserFactory, faults: FaultStores, fault: str
) -> None:
    """PostgreSQL hung or stopped: login, token checks, reads and writes answer 503 with Retry-After in
    both languages within the deadline, one store_unavailable line and no traceback; then it recovers."""
    client = await make_client(**FAST)
    officer = await make_user("duty_officer", COUNTY)
    assert (await answer(client, "GET", "/api/v1/units", headers=officer.headers)).status == 200
    with capture_logs() as logs:
        faults.freeze("postgres") if fault == "freeze" else faults.stop("postgres")
        requests = [
            ("GET", "/api/v1/units", {"headers": officer.headers}),
            ("POST", "/api/v1/auth/login", {"json": {"username": officer.user.username, "password": PASSWORD}}),
            ("GET", "/api/v1/auth/me", {"headers": officer.headers}),
            ("GET", "/api/v1/incidents", {"headers": officer.headers}),
            ("POST", "/api/v1/units", {"headers": officer.headers, "json": {"name": "x", "kind": "team", "org": COUNTY}}),
            ("GET", "/api/v1/units", {"headers": {**officer.headers, "Accept-Language": "en"}}),
        ]
        for method, path, kw in requests:
            await assert_refused(await answer(client, method, path, **kw), "postgres")
        english = await answer(client, "GET", "/api/v1/orders", headers={**officer.headers, "Accept-Language": "en"})
        assert "unavailable" in (await english.json())["error"]["message"]
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await client.ws_connect(board_path(officer))
        assert refused.value.status == 503  # the token cannot be checked: refused before the upgrade
        assert (await answer(client, "GET", "/healthz")).status == 200
        ready = await answer(client, "GET", "/readyz")
        assert ready.status == 503 and (await ready.json())["postgres"].startswith("down")
        faults.restore()

        async def back() -> bool:
            r = await answer(client, "GET", "/api/v1/units", headers=officer.headers)
            return r.status == 200

        await eventually(back, within=20)
    assert len(events(logs, "store_unavailable", store="postgres")) == 1
    assert len(events(logs, "store_recovered", store="postgres")) == 1
    assert events(logs, "unhandled_error") == []


@pytest.mark.parametrize("fault", ["freeze", "stop"])
async def test_redis_away_login_tokens_units_and_handshakes_work(
    make_client: AppFactory, make_user: UserFactory, faults: FaultStores, fault: str
) -> None:
    """Redis hung or stopped: login, token checks, the unit list (positions from the track, marked
    degraded), the board's snapshot and the squad's hello all work, from PostgreSQL alone; a board
    already open is told at once that Redis is down (and a new one in its snapshot), and told again
    when it is back."""
    client = await make_client(**FAST)
    officer = await make_user("duty_officer", COUNTY)
    unit, members = await make_squad(client, officer, make_user)
    wall = await client.ws_connect(board_path(officer))
    first = await wall.receive_json(timeout=10)
    assert first["type"] == "snapshot" and first["stores_down"] == []
    with capture_logs() as logs:
        faults.freeze("redis") if fault == "freeze" else faults.stop("redis")
        r = await answer(
            client, "POST", "/api/v1/auth/login", json={"username": officer.user.username, "password": PASSWORD}
        )
        assert r.status == 200, await r.text()
        told = await _heartbeat_saying(wall, ["redis"])
        assert told["head"] >= first["seq"]
        assert r.headers["Cache-Control"] == "no-store"
        token = (await r.json())["token"]
        auth = {"Authorization": f"Bearer {token}"}
        assert (await answer(client, "GET", "/api/v1/auth/me", headers=auth)).status == 200
        r = await answer(client, "GET", "/api/v1/units", headers=auth)
        assert r.status == 200 and r.headers["Dispatchd-Degraded"] == "redis"
        assert unit["id"] in [u["id"] for u in (await r.json())["units"]]
        r = await answer(client, "GET", f"/api/v1/units/nearest?lat={MAYU_LAT}&lon={MAYU_LON}", headers=auth)
        assert r.status == 200
        async with client.ws_connect(board_path(officer) + "&console=1") as ws:
            snapshot = await ws.receive_json(timeout=10)
            assert snapshot["type"] == "snapshot" and snapshot["sections"]["units"] is not None
            assert snapshot["stores_down"] == ["redis"]
        async with client.ws_connect(f"/ws/squad?token={members[0].token}") as ws:
            hello = await ws.receive_json(timeout=10)
            assert hello["type"] == "hello"
        faults.restore()
        await _heartbeat_saying(wall, [])
        await wall.close()
    assert len(events(logs, "store_unavailable", store="redis")) == 1
    assert events(logs, "unhandled_error") == []


async def _heartbeat_saying(ws: aiohttp.ClientWebSocketResponse, down: list[str]) -> dict[str, Any]:
    """The first heartbeat within 10 s whose ``stores_down`` is ``down`` (well before the periodic one)."""
    async with asyncio.timeout(10):
        while True:
            msg = await ws.receive_json()
            if msg["type"] == "heartbeat" and msg["stores_down"] == down:
                return dict(msg)


@pytest.mark.parametrize("fault", ["freeze", "stop"])
async def test_a_call_the_database_cannot_take_is_refused_503_with_retry_after(
    make_client: AppFactory, make_user: UserFactory, faults: FaultStores, fault: str
) -> None:
    """PostgreSQL hung or stopped: a call to 967999 from a real SIP caller is refused with 503 and
    Retry-After (not left ringing, nobody could answer it), with one store_unavailable line and no
    traceback; once PostgreSQL is back the next call rings and is queued."""
    client = await make_client(**FAST, video_host_addresses="127.0.0.1")
    officer = await make_user("duty_officer", COUNTY)
    port = sip_port(client)
    with capture_logs() as logs:
        faults.freeze("postgres") if fault == "freeze" else faults.stop("postgres")
        caller = ToneCaller("127.0.0.1", port)
        try:
            await caller.call()
            await asyncio.wait_for(caller.answered.wait(), 10)
            assert caller.final is not None and caller.final.status == 503
            assert int(caller.final.headers.get("Retry-After") or 0) >= 1
        finally:
            await caller.close()
        faults.restore()

        async def ready() -> bool:
            return (await answer(client, "GET", "/api/v1/units", headers=officer.headers)).status == 200

        await eventually(ready, within=20)
        again = ToneCaller("127.0.0.1", port, caller="13800002222")
        try:
            await again.call()
            queued = await waiting_call(client, officer.headers)
            assert queued["caller"] == "13800002222" and not again.answered.is_set()
        finally:
            await again.close()
    assert len(events(logs, "store_unavailable", store="postgres")) == 1
    assert events(logs, "sip_event_failed") == [] and events(logs, "unhandled_error") == []


async def _osmand_unit(client: TestClient[Any, Any], make_user: UserFactory) -> tuple[str, int]:
    duty = await make_user("duty_officer", COUNTY)
    unit = await make_unit(client, duty.headers, name="马屿摩托巡逻1号", kind="motorbike")
    device = await add_device(client, duty.headers, unit["id"], "osmand", "48241179")
    return device["key"], unit["id"]


async def _fix(client: TestClient[Any, Any], key: str, at: int, lat: float = MAYU_LAT) -> aiohttp.ClientResponse:
    params = {"id": "48241179", "lat": str(lat), "lon": str(MAYU_LON), "timestamp": str(at), "key": key}
    async with aiohttp.ClientSession(timeout=DEADLINE) as http:
        async with http.get(f"http://127.0.0.1:{gps_port(client, 'osmand')}/", params=params) as r:
            await r.read()
            return r


async def _track(faults: FaultStores, unit_id: int) -> list[Any]:
    conn = await asyncpg.connect(faults.database)
    try:
        return list(
            await conn.fetch("SELECT at, count(*) AS n FROM track_points WHERE unit_id = $1 GROUP BY at ORDER BY at", unit_id)
        )
    finally:
        await conn.close()


async def test_osmand_fixes_are_held_through_an_outage_and_written_once(
    make_client: AppFactory, make_user: UserFactory, faults: FaultStores, clock: FakeClock
) -> None:
    """PostgreSQL hung: OsmAnd fixes of a known device are acknowledged (held), and every one is in
    the track exactly once when it is back; past the outage buffer a fix gets 503 with Retry-After,
    is counted, and is not kept (the phone sends it again)."""
    client = await make_client(units_outage_buffer=4, **FAST)
    key, unit_id = await _osmand_unit(client, make_user)
    start = int(clock.now().timestamp())
    assert (await _fix(client, key, start)).status == 200
    faults.freeze("postgres")
    statuses = [(await _fix(client, key, start + i, MAYU_LAT + 0.0001 * i)).status for i in range(1, 8)]
    assert statuses[:4] == [200] * 4
    refused = [s for s in statuses[4:]]
    assert refused == [503] * 3
    r = await _fix(client, key, start + 99)
    assert r.status == 503 and int(r.headers["Retry-After"]) >= 1
    assert metric(client, "dispatchd_gps_messages_refused_total", protocol="osmand", reason="outage_buffer_full") == 4
    # What was acknowledged is on disk too, not only in memory (a crash now would lose none of it).
    assert sorted(int(r[2].timestamp()) for r in _spooled(client)) == list(range(start + 1, start + 5))
    faults.restore()

    async def written() -> list[Any]:
        rows = await _track(faults, unit_id)
        return rows if len(rows) == 5 else []

    rows = await eventually(written, within=20)
    assert all(r["n"] == 1 for r in rows)
    assert [int(r["at"].timestamp()) for r in rows] == [start, *range(start + 1, start + 5)]
    assert _spooled(client) == []  # written: the files are gone


def _spooled(client: TestClient[Any, Any]) -> list[tuple[Any, ...]]:
    """The track rows on disk in the sink's spool (every batch file under <data dir>/gps-held)."""
    root = client.server.app[CTX].settings.data.dir / SPOOL_DIR
    found: list[tuple[Any, ...]] = []
    for path in sorted(root.rglob("*.batch")):
        found.extend(read_batch(path.read_bytes())[1])
    return found


async def test_batches_held_by_a_sink_that_ended_are_adopted_and_written_once(
    make_client: AppFactory, make_user: UserFactory, faults: FaultStores, clock: FakeClock
) -> None:
    """A batch left on disk by a sink that ended during an outage (as a killed instance leaves it) is
    taken over by the running sink and written once; written twice over (its first write's answer
    lost), it is still in the track once."""
    client = await make_client(**FAST)
    _, unit_id = await _osmand_unit(client, make_user)
    ctx = client.server.app[CTX]
    start = clock.now().replace(microsecond=0)
    device_id = await _device_id(faults, "48241179")
    held = [
        (unit_id, device_id, start + timedelta(seconds=i), MAYU_LAT, MAYU_LON, None, None, None, None, None, "osmand", start)
        for i in range(3)
    ]
    ended = HeldSpool(ctx.settings.data.dir / SPOOL_DIR)
    ended.open()
    batch = uuid.uuid4()
    ended.put(batch, held)
    ended.close()
    sink = ctx[SINK]
    assert await sink.adopt() == 3
    await sink.flush_track()
    rows = await _track(faults, unit_id)
    assert [(int(r["at"].timestamp()), r["n"]) for r in rows] == [(int(f[2].timestamp()), 1) for f in held]
    assert _spooled(client) == []
    again = HeldSpool(ctx.settings.data.dir / SPOOL_DIR)
    again.open()
    again.put(batch, held)
    again.close()
    assert await sink.adopt() == 3
    await sink.flush_track()
    assert [r["n"] for r in await _track(faults, unit_id)] == [1, 1, 1]


async def _device_id(faults: FaultStores, identifier: str) -> int:
    conn = await asyncpg.connect(faults.database)
    try:
        return int(await conn.fetchval("SELECT id FROM devices WHERE identifier = $1", identifier))
    finally:
        await conn.close()


async def test_jt808_fixes_are_held_through_an_outage_and_written_once(
    make_client: AppFactory, make_user: UserFactory, faults: FaultStores, clock: FakeClock
) -> None:
    """PostgreSQL stopped: an authenticated terminal's locations get result 0 (held) and are in the
    track once each when it is back; past the buffer they get result 1 (the terminal resends)."""
    client = await make_client(units_outage_buffer=3, **FAST)
    duty = await make_user("duty_officer", COUNTY)
    unit = await make_unit(client, duty.headers, name="马屿指挥车", kind="vehicle")
    await add_device(client, duty.headers, unit["id"], "jt808", "13800138000")
    t = await Terminal.connect(gps_port(client, "jt808"))
    result, code = await t.register(register_2013())
    assert result == 0 and (await t.general(0x0102, t.auth_body(code)))[2] == 0
    base = clock.now().replace(microsecond=0)
    faults.stop("postgres")
    results = [
        (await t.general(0x0200, location(MAYU_LAT + 0.0001 * i, MAYU_LON, base + timedelta(seconds=i))))[2]
        for i in range(5)
    ]
    assert results == [0, 0, 0, 1, 1]
    faults.restore()

    async def written() -> list[Any]:
        rows = await _track(faults, unit["id"])
        return rows if len(rows) == 3 else []

    rows = await eventually(written, within=20)
    assert all(r["n"] == 1 for r in rows)
    await t.close()


async def test_outage_is_one_line_not_a_traceback_per_request(
    make_client: AppFactory, make_user: UserFactory, faults: FaultStores
) -> None:
    """Fifty requests during a PostgreSQL outage log one store_unavailable and no error lines."""
    client = await make_client(**FAST)
    officer = await make_user("duty_officer", COUNTY)
    with capture_logs() as logs:
        faults.stop("postgres")
        answers = await asyncio.gather(
            *(answer(client, "GET", "/api/v1/incidents", headers=officer.headers) for _ in range(50))
        )
        assert {r.status for r in answers} == {503}
    assert len(events(logs, "store_unavailable")) == 1
    assert [e for e in logs if e.get("log_level") in ("error", "critical")] == []
    outages = client.server.app[CTX].metrics.registry.get_sample_value(
        "dispatchd_store_outages_total", {"store": "postgres"}
    )
    assert outages == 1
    assert json.dumps([e["event"] for e in logs]).count("store_unavailable") == 1


async def test_a_camera_alarm_during_an_outage_opens_its_case_when_the_database_is_back(
    make_client: AppFactory,
    make_user: UserFactory,
    faults: FaultStores,
    make_device: DeviceFactory,  # noqa: F811  # the fixture imported above
) -> None:
    """PostgreSQL stopped: a registered camera's intrusion alarm is answered and held (logged once as
    held, not lost); when PostgreSQL is back the held alarm opens its case, once."""
    client = await start_platform(make_client, **FAST)
    officer = await make_user("duty_officer", COUNTY)
    device = await registered_device(client, make_device, officer.headers)
    camera = device.channels[0]
    faults.stop("postgres")
    with capture_logs() as logs:
        assert await device.message(alarm(1, camera.id, 1, 5, 6)) == 200

        async def held() -> bool:
            return bool(events(logs, "gb28181_alarm_held"))

        await gb_poll(held)
    faults.restore()
    edge = client.server.app[CTX][GB28181].edge
    assert edge is not None
    handled = 0

    async def opened() -> bool:
        nonlocal handled
        handled += await edge.retry_held_alarms()  # what the edge's round does every few seconds
        return handled == 1 and len(await video_cases(client, officer.headers)) == 1

    await gb_poll(opened)
    assert await edge.retry_held_alarms() == 0
    assert len(await video_cases(client, officer.headers)) == 1


async def test_a_caller_who_hangs_up_during_an_outage_is_recorded_when_the_database_is_back(
    make_client: AppFactory, make_user: UserFactory, faults: FaultStores
) -> None:
    """A waiting caller hangs up (CANCEL) while PostgreSQL is stopped: the SIP edge answers it, the hang-up is
    held (logged once as held, no traceback), and once PostgreSQL is back the call is recorded as
    abandoned with the time of the hang-up, not left waiting for ever."""
    client = await make_client(**FAST, video_host_addresses="127.0.0.1")
    officer = await make_user("duty_officer", COUNTY)
    caller = ToneCaller("127.0.0.1", sip_port(client), caller="13800003333")
    try:
        await caller.call()
        queued = await waiting_call(client, officer.headers)
        faults.stop("postgres")
        with capture_logs() as logs:
            await caller.cancel()
            assert caller.final_status == 487

            async def held() -> bool:
                return bool(events(logs, "call_end_held"))

            await eventually(held, within=10)
        assert events(logs, "sip_event_failed") == []
    finally:
        await caller.close()
    hung_up_at = client.server.app[CTX].clock.now()
    faults.restore()
    edge = client.server.app[CTX][SIP].edge
    assert edge is not None

    async def recorded() -> dict[str, Any] | None:
        await edge.retry_held_ends()  # what the edge's round does every few seconds
        r = await answer(client, "GET", f"/api/v1/hotline/calls/{queued['id']}", headers=officer.headers)
        body = await r.json() if r.status == 200 else None
        return body if body is not None and body["state"] == "abandoned" else None

    call = await eventually(recorded, within=20)
    assert call["ended_at"] is not None and call["ended_at"].startswith(hung_up_at.isoformat()[:16])
