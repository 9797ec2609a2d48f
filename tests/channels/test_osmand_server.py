"""The OsmAnd / Traccar Client HTTP server on its own port: fixes move units, bad input is refused."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient

from dispatchd.clock import FakeClock
from tests.conftest import COUNTY, AppFactory, StoreUrls, UserFactory
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


async def _setup(client: TestClient[Any, Any], make_user: UserFactory) -> tuple[dict[str, str], int, str]:
    duty = await make_user("duty_officer", COUNTY)
    unit = await make_unit(client, duty.headers, name="马屿摩托巡逻1号", kind="motorbike")
    device = await add_device(client, duty.headers, unit["id"], "osmand", "48241179")
    return duty.headers, unit["id"], device["key"]


def _url(client: TestClient[Any, Any]) -> str:
    return f"http://127.0.0.1:{gps_port(client, 'osmand')}/"


async def test_osmand_query_moves_the_unit(
    client: TestClient[Any, Any], make_user: UserFactory, clock: FakeClock
) -> None:
    """An OsmAnd GET with Traccar's fields (speed in knots) becomes the unit's position."""
    headers, unit_id, key = await _setup(client, make_user)
    at = int(clock.now().timestamp())
    params = {
        "id": "48241179",
        "lat": str(MAYU_LAT),
        "lon": str(MAYU_LON),
        "timestamp": str(at),
        "speed": "10",
        "bearing": "90",
        "altitude": "12",
        "accuracy": "5",
        "batt": "80",
        "key": key,
    }
    async with aiohttp.ClientSession() as http:
        async with http.get(_url(client), params=params) as r:
            assert r.status == 200
    unit = await get_unit(client, headers, unit_id)
    pos = unit["position"]
    assert (pos["lat"], pos["lon"], pos["heading"]) == (MAYU_LAT, MAYU_LON, 90.0)
    assert abs(pos["speed"] - 18.52) < 0.01 and pos["battery"] == 80.0 and pos["source"] == "osmand"
    assert pos["at"] == clock.now().isoformat() and unit["stale"] is False


async def test_traccar_client_json_and_form_post_move_the_unit(
    client: TestClient[Any, Any], make_user: UserFactory, clock: FakeClock
) -> None:
    """The Traccar Client JSON body (key as Bearer) and a form POST both move the unit, in order."""
    headers, unit_id, key = await _setup(client, make_user)
    body = {
        "location": {
            "timestamp": clock.now().isoformat().replace("+00:00", "Z"),
            "coords": {"latitude": 27.75, "longitude": 120.49, "speed": 5.0, "heading": 45.0, "accuracy": 3},
            "battery": {"level": 0.5, "is_charging": False},
            "is_moving": True,
        },
        "device_id": "48241179",
    }
    async with aiohttp.ClientSession() as http:
        async with http.post(_url(client), json=body, headers={"Authorization": f"Bearer {key}"}) as r:
            assert r.status == 200
        pos = (await get_unit(client, headers, unit_id))["position"]
        assert (pos["lat"], pos["lon"], pos["speed"], pos["battery"]) == (27.75, 120.49, 18.0, 50.0)
        later = int((clock.now() + timedelta(seconds=30)).timestamp())
        form = {"id": "48241179", "lat": "27.751", "lon": "120.491", "timestamp": str(later), "key": key}
        async with http.post(_url(client), data=form) as r:
            assert r.status == 200
    pos = (await get_unit(client, headers, unit_id))["position"]
    assert (pos["lat"], pos["lon"]) == (27.751, 120.491)


async def test_unknown_device_and_wrong_key_are_401(
    client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """A fix from an unregistered id, without the key or with a wrong one, is refused and counted."""
    headers, unit_id, key = await _setup(client, make_user)
    base = {"lat": str(MAYU_LAT), "lon": str(MAYU_LON), "timestamp": "1777795200"}
    async with aiohttp.ClientSession() as http:
        for params in (
            {**base, "id": "nobody", "key": key},
            {**base, "id": "48241179"},
            {**base, "id": "48241179", "key": "wrong"},
        ):
            async with http.get(_url(client), params=params) as r:
                assert r.status == 401
    assert (await get_unit(client, headers, unit_id))["position"] is None
    assert metric(client, "dispatchd_gps_messages_refused_total", protocol="osmand", reason="bad_key") == 2
    assert (
        metric(client, "dispatchd_gps_messages_refused_total", protocol="osmand", reason="unknown_device")
        == 1
    )


async def test_bad_fields_answer_400_naming_the_field(
    client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """A malformed query gets 400 naming the field; the same connection then carries a good fix."""
    headers, unit_id, key = await _setup(client, make_user)
    async with aiohttp.ClientSession() as http:
        async with http.get(
            _url(client), params={"id": "48241179", "lat": "north", "lon": "120", "key": key}
        ) as r:
            assert r.status == 400 and "lat" in await r.text()
        async with http.post(
            _url(client), data=b"{not json", headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 400
        async with http.get(_url(client)) as r:
            assert r.status == 400
        async with http.put(_url(client)) as r:
            assert r.status == 405
        params = {
            "id": "48241179",
            "lat": str(MAYU_LAT),
            "lon": str(MAYU_LON),
            "timestamp": "1777795200",
            "key": key,
        }
        async with http.get(_url(client), params=params) as r:
            assert r.status == 200
    assert (await get_unit(client, headers, unit_id))["position"]["lat"] == MAYU_LAT
    assert metric(client, "dispatchd_rejected_input_total", channel="osmand") == 3


async def test_bad_fixes_are_kept_out_and_counted(
    make_client: AppFactory, make_user: UserFactory, clock: FakeClock
) -> None:
    """Null island, 10 minutes ahead, an impossible jump, a repeat and (china_only) London do not move the unit."""
    client = await make_client(units_china_only=True)
    headers, unit_id, key = await _setup(client, make_user)
    now = int(clock.now().timestamp())

    async def send(lat: float, lon: float, at: int) -> None:
        params = {"id": "48241179", "lat": str(lat), "lon": str(lon), "timestamp": str(at), "key": key}
        async with aiohttp.ClientSession() as http, http.get(_url(client), params=params) as r:
            assert r.status == 200

    await send(MAYU_LAT, MAYU_LON, now)
    await send(0.0, 0.0, now + 5)
    await send(MAYU_LAT + 0.01, MAYU_LON, now + 601)
    await send(30.27, 120.15, now + 10)  # Hangzhou, 280 km away, 10 s later
    await send(MAYU_LAT, MAYU_LON, now)
    await send(51.5, -0.12, now + 20)  # London: outside China's box
    pos = (await get_unit(client, headers, unit_id))["position"]
    assert (pos["lat"], pos["lon"]) == (MAYU_LAT, MAYU_LON)
    for reason in ("null_island", "future", "impossible_speed", "duplicate", "out_of_range"):
        assert metric(client, "dispatchd_gps_fixes_filtered_total", protocol="osmand", reason=reason) == 1, (
            reason
        )
    assert metric(client, "dispatchd_gps_fixes_total", protocol="osmand", use="live") == 1


async def test_a_flood_from_one_device_is_rate_limited(
    client: TestClient[Any, Any], make_user: UserFactory, clock: FakeClock
) -> None:
    """Past the burst a device gets 429 until the clock moves on."""
    _, _, key = await _setup(client, make_user)
    burst = 30
    now = int(clock.now().timestamp())
    statuses = []
    async with aiohttp.ClientSession() as http:
        for i in range(burst + 3):
            params = {
                "id": "48241179",
                "lat": str(MAYU_LAT),
                "lon": str(MAYU_LON + i * 1e-4),
                "key": key,
                "timestamp": str(now + i),
            }
            async with http.get(_url(client), params=params) as r:
                statuses.append(r.status)
        assert statuses[:burst] == [200] * burst and statuses[burst:] == [429] * 3
        clock.advance(1)
        params = {
            "id": "48241179",
            "lat": str(MAYU_LAT),
            "lon": str(MAYU_LON),
            "key": key,
            "timestamp": str(now + 99),
        }
        async with http.get(_url(client), params=params) as r:
            assert r.status == 200
    assert (
        metric(client, "dispatchd_gps_messages_refused_total", protocol="osmand", reason="rate_limited") == 3
    )


async def test_garbage_on_the_osmand_port_leaves_it_serving(
    client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """Bytes that are not HTTP get an error or a close; the port and the API keep working."""
    _, _, key = await _setup(client, make_user)
    port = gps_port(client, "osmand")
    for junk in (
        b"\x00\xff\xfe garbage \r\n\r\n",
        b"GET /" + b"A" * 20000 + b" HTTP/1.1\r\n\r\n",
        b"\x7e" * 500,
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(junk)
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(1024), 5)
        assert answer == b"" or answer.split(b" ")[1].startswith(b"4")
        writer.close()
    params = {
        "id": "48241179",
        "lat": str(MAYU_LAT),
        "lon": str(MAYU_LON),
        "timestamp": "1777795200",
        "key": key,
    }
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/", params=params) as r:
        assert r.status == 200
    assert (await client.get("/healthz")).status == 200


async def test_traccar_batch_of_locations(
    client: TestClient[Any, Any], make_user: UserFactory, clock: FakeClock
) -> None:
    """A JSON body with a list of locations stores every fix in the track, in time order."""
    headers, unit_id, key = await _setup(client, make_user)
    start = clock.now()
    locations = [
        {
            "timestamp": (start + timedelta(seconds=10 * i)).isoformat(),
            "coords": {"latitude": MAYU_LAT + i * 0.001, "longitude": MAYU_LON},
        }
        for i in (2, 0, 1)
    ]
    async with aiohttp.ClientSession() as http:
        body = json.dumps({"device_id": "48241179", "location": locations})
        async with http.post(
            _url(client) + f"?key={key}", data=body, headers={"Content-Type": "application/json"}
        ) as r:
            assert r.status == 200
    window = {"from": start.isoformat(), "to": (start + timedelta(minutes=1)).isoformat()}
    r = await client.get(f"/api/v1/units/{unit_id}/track", params=window, headers=headers)
    doc = await r.json()
    assert [f["geometry"]["coordinates"][1] for f in doc["features"]] == [
        MAYU_LAT,
        MAYU_LAT + 0.001,
        MAYU_LAT + 0.002,
    ]
    assert (await get_unit(client, headers, unit_id))["position"]["lat"] == MAYU_LAT + 0.002


async def test_osmand_sos_opens_a_p1_case(
    client: TestClient[Any, Any], make_user: UserFactory, clock: FakeClock, clean_stores: StoreUrls
) -> None:
    """A Traccar Client fix with alarm=sos opens one P1 gps_alarm case at the fix."""
    _, _, key = await _setup(client, make_user)
    params = {
        "id": "48241179",
        "lat": str(MAYU_LAT),
        "lon": str(MAYU_LON),
        "timestamp": str(int(clock.now().timestamp())),
        "alarm": "sos",
        "key": key,
    }
    async with aiohttp.ClientSession() as http, http.get(_url(client), params=params) as r:
        assert r.status == 200

    async def cases() -> list[asyncpg.Record]:
        conn = await asyncpg.connect(clean_stores.database)
        try:
            return list(await conn.fetch("SELECT priority, channel, lat, lon FROM incidents"))
        finally:
            await conn.close()

    rows = await eventually(cases)
    assert [(r["priority"], r["channel"], r["lat"], r["lon"]) for r in rows] == [
        ("P1", "gps_alarm", MAYU_LAT, MAYU_LON)
    ]
