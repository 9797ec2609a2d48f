"""Live positions: nearest squad with ETA, staleness, the board section, coalesced position changes, tracks."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import aiohttp
import asyncpg
from aiohttp.test_utils import TestClient

from dispatchd.channels.gps.slots import SINK
from dispatchd.clock import FakeClock
from tests.conftest import COUNTY, AppFactory, StoreUrls, UserFactory
from tests.units.helpers import MAYU, MAYU_LAT, MAYU_LON, add_device, get_unit, gps_port, make_unit

ANYANG = "330381001"


async def _report(
    client: TestClient[Any, Any], ident: str, key: str, lat: float, lon: float, at: int
) -> None:
    url = f"http://127.0.0.1:{gps_port(client, 'osmand')}/"
    params = {"id": ident, "lat": repr(lat), "lon": repr(lon), "timestamp": str(at), "key": key}
    async with aiohttp.ClientSession() as http, http.get(url, params=params) as r:
        assert r.status == 200, await r.text()


async def _unit_at(
    client: TestClient[Any, Any],
    headers: dict[str, str],
    name: str,
    kind: str,
    lat: float,
    lon: float,
    at: int,
    org: str = MAYU,
) -> int:
    unit = await make_unit(client, headers, name=name, kind=kind, org=org)
    device = await add_device(client, headers, unit["id"], "osmand", f"dev-{unit['id']}")
    await _report(client, f"dev-{unit['id']}", device["key"], lat, lon, at)
    return int(unit["id"])


async def test_nearest_available_unit_with_eta(
    client: TestClient[Any, Any], make_user: UserFactory, clock: FakeClock
) -> None:
    """Nearest first among available units; a nearer dispatched unit is left out; ETA uses the kind's speed."""
    duty = await make_user("duty_officer", COUNTY)
    now = int(clock.now().timestamp())
    far = await _unit_at(client, duty.headers, "远", "vehicle", MAYU_LAT + 0.05, MAYU_LON, now)  # ~5.5 km
    near = await _unit_at(client, duty.headers, "近", "person", MAYU_LAT + 0.01, MAYU_LON, now)  # ~1.1 km
    mid = await _unit_at(client, duty.headers, "中", "motorbike", MAYU_LAT - 0.02, MAYU_LON, now)  # ~2.2 km
    busy = await _unit_at(client, duty.headers, "忙", "team", MAYU_LAT + 0.001, MAYU_LON, now)
    r = await client.post(f"/api/v1/units/{busy}/status", json={"status": "dispatched"}, headers=duty.headers)
    assert r.status == 200
    r = await client.get(
        "/api/v1/units/nearest", params={"lat": MAYU_LAT, "lon": MAYU_LON}, headers=duty.headers
    )
    body = await r.json()
    assert r.status == 200
    assert [u["id"] for u in body["units"]] == [near, mid, far]
    first = body["units"][0]
    assert 1100 < first["distance_m"] < 1125 and first["stale"] is False
    assert first["eta_s"] == round(first["distance_m"] * 1.3 / (5.0 / 3.6))  # on foot, 5 km/h, factor 1.3
    r = await client.get(
        "/api/v1/units/nearest",
        params={"lat": MAYU_LAT, "lon": MAYU_LON, "status": "dispatched", "limit": "1"},
        headers=duty.headers,
    )
    assert [u["id"] for u in (await r.json())["units"]] == [busy]
    r = await client.get("/api/v1/units/nearest", params={"lat": "x", "lon": MAYU_LON}, headers=duty.headers)
    assert r.status == 422


async def test_nearest_respects_jurisdiction_and_staleness(
    client: TestClient[Any, Any], make_user: UserFactory, clock: FakeClock
) -> None:
    """Another township's officer does not see Mayu's units; after stale_after the unit is flagged stale."""
    duty = await make_user("duty_officer", COUNTY)
    now = int(clock.now().timestamp())
    unit_id = await _unit_at(client, duty.headers, "近", "person", MAYU_LAT, MAYU_LON, now)
    other = await make_user("duty_officer", ANYANG)
    params = {"lat": MAYU_LAT, "lon": MAYU_LON}
    r = await client.get("/api/v1/units/nearest", params=params, headers=other.headers)
    assert (await r.json())["units"] == []
    clock.advance(timedelta(seconds=301))
    r = await client.get("/api/v1/units/nearest", params=params, headers=duty.headers)
    units = (await r.json())["units"]
    assert [u["id"] for u in units] == [unit_id] and units[0]["stale"] is True
    r = await client.get(
        "/api/v1/units/nearest", params={**params, "fresh_only": "true"}, headers=duty.headers
    )
    assert (await r.json())["units"] == []
    assert (await get_unit(client, duty.headers, unit_id))["stale"] is True


async def test_board_section_lists_units_with_position_and_stale_flag(
    client: TestClient[Any, Any], make_user: UserFactory, clock: FakeClock, app_of: Any
) -> None:
    """The board section ``units`` gives the viewer's units with position and stale flag, nothing else."""
    duty = await make_user("duty_officer", COUNTY)
    now = int(clock.now().timestamp())
    mayu = await _unit_at(client, duty.headers, "马屿", "ebike", MAYU_LAT, MAYU_LON, now)
    anyang = await make_unit(client, duty.headers, name="安阳", kind="team", org=ANYANG)
    ctx = app_of(client)
    section = ctx.board_sections["units"]
    county = await section(ctx, ctx.orgs.descendants(COUNTY))
    assert {u["id"] for u in county} == {mayu, anyang["id"]}
    only_mayu = await section(ctx, ctx.orgs.descendants(MAYU))
    assert [u["id"] for u in only_mayu] == [mayu]
    assert only_mayu[0]["position"]["lat"] == MAYU_LAT and only_mayu[0]["stale"] is False


async def test_position_changes_are_published_at_most_once_an_interval(
    make_client: AppFactory,
    make_user: UserFactory,
    clock: FakeClock,
    app_of: Any,
    clean_stores: StoreUrls,
) -> None:
    """Three fixes within an interval give one outbox row (entity positions, the unit's org) with the
    newest fix; a fix an interval later gives another row; two units of one township moving in the
    same tick share one row. (A long interval keeps the sink's own loop out of the test's way: only
    the test's flushes publish.)"""
    client = await make_client(units_publish_interval_s=60)
    duty = await make_user("duty_officer", COUNTY)
    unit = await make_unit(client, duty.headers, name="一组", kind="team")
    other = await make_unit(client, duty.headers, name="二组", kind="team")
    device = await add_device(client, duty.headers, unit["id"], "osmand", "p-1")
    other_device = await add_device(client, duty.headers, other["id"], "osmand", "p-9")
    ctx = app_of(client)
    now = int(clock.now().timestamp())
    for i in range(3):
        await _report(client, "p-1", device["key"], MAYU_LAT + i * 1e-4, MAYU_LON, now + i)
    await ctx[SINK].flush_pending()
    conn = await asyncpg.connect(clean_stores.database)
    try:
        rows = await conn.fetch("SELECT entity_id, org_path, payload FROM outbox WHERE topic = 'positions'")
        assert len(rows) == 1 and rows[0]["entity_id"] == MAYU and rows[0]["org_path"][-1] == MAYU
        first = json.loads(rows[0]["payload"])["data"]["positions"]
        assert [(p["unit_id"], p["lat"]) for p in first] == [(unit["id"], MAYU_LAT + 2e-4)]
        clock.advance(60)
        await _report(client, "p-1", device["key"], MAYU_LAT + 5e-4, MAYU_LON, now + 5)
        await _report(client, "p-9", other_device["key"], MAYU_LAT, MAYU_LON + 1e-3, now + 5)
        await ctx[SINK].flush_pending()
        rows = await conn.fetch("SELECT payload FROM outbox WHERE topic = 'positions' ORDER BY seq")
    finally:
        await conn.close()
    payloads = [json.loads(r["payload"])["data"]["positions"] for r in rows]
    assert len(payloads) == 2
    assert {p["unit_id"]: p["lat"] for p in payloads[1]} == {unit["id"]: MAYU_LAT + 5e-4, other["id"]: MAYU_LAT}


async def test_track_window_and_order(
    client: TestClient[Any, Any], make_user: UserFactory, clock: FakeClock
) -> None:
    """from/to select the fixes in [from, to) in time order; a unit outside the jurisdiction is 404."""
    duty = await make_user("duty_officer", COUNTY)
    unit = await make_unit(client, duty.headers, name="一组", kind="team")
    device = await add_device(client, duty.headers, unit["id"], "osmand", "p-2")
    start = int(clock.now().timestamp()) - 600
    for i in range(5):
        await _report(client, "p-2", device["key"], MAYU_LAT + i * 1e-3, MAYU_LON, start + 60 * i)
    base = clock.now() - timedelta(seconds=600)
    window = {"from": (base + timedelta(seconds=60)).isoformat(), "to": str(start + 240)}
    r = await client.get(f"/api/v1/units/{unit['id']}/track", params=window, headers=duty.headers)
    assert r.status == 200 and r.content_type == "application/geo+json"
    features = (await r.json())["features"]
    assert [f["geometry"]["coordinates"] for f in features] == [
        [MAYU_LON, MAYU_LAT + 1e-3],
        [MAYU_LON, MAYU_LAT + 2e-3],
        [MAYU_LON, MAYU_LAT + 3e-3],
    ]
    r = await client.get(
        f"/api/v1/units/{unit['id']}/track", params={"from": "yesterday"}, headers=duty.headers
    )
    assert r.status == 422
    other = await make_user("duty_officer", ANYANG)
    assert (await client.get(f"/api/v1/units/{unit['id']}/track", headers=other.headers)).status == 404
