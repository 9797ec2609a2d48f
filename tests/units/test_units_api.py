"""Squad units over HTTP: create, read, members, devices, status with audit and outbox, jurisdiction."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from dispatchd.units.service import set_unit_status
from tests.conftest import COUNTY, StoreUrls, UserFactory

MAYU = "330381116"
ANYANG = "330381001"


async def _create(client: TestClient[Any, Any], headers: dict[str, str], **body: Any) -> dict[str, Any]:
    r = await client.post("/api/v1/units", json=body, headers=headers)
    assert r.status == 201, await r.text()
    data: dict[str, Any] = await r.json()
    return data


async def test_create_get_and_list_a_unit(client: TestClient[Any, Any], make_user: UserFactory) -> None:
    """A duty officer creates a unit; it reads back available, with no position, in the list."""
    duty = await make_user("duty_officer", COUNTY)
    unit = await _create(client, duty.headers, name="马屿应急中队一组", kind="team", org=MAYU)
    assert unit["status"] == "available" and unit["kind"] == "team" and unit["org"] == MAYU
    assert unit["org_path"][-1] == MAYU and unit["org_path"][0] == "330000"
    r = await client.get(f"/api/v1/units/{unit['id']}", headers=duty.headers)
    got = await r.json()
    assert r.status == 200
    assert got["name"] == "马屿应急中队一组" and got["position"] is None and got["stale"] is True
    assert got["members"] == [] and got["devices"] == []
    listed = await (await client.get("/api/v1/units", headers=duty.headers)).json()
    assert [u["id"] for u in listed["units"]] == [unit["id"]]


async def test_create_rejects_bad_kind_and_foreign_org(
    client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """An unknown kind or an org outside the caller's jurisdiction is refused with 422 naming the field."""
    township = await make_user("duty_officer", ANYANG)
    r = await client.post(
        "/api/v1/units", json={"name": "x", "kind": "boat", "org": ANYANG}, headers=township.headers
    )
    assert r.status == 422 and "kind" in (await r.json())["error"]["fields"]
    r = await client.post(
        "/api/v1/units", json={"name": "x", "kind": "team", "org": MAYU}, headers=township.headers
    )
    assert r.status == 422 and "org" in (await r.json())["error"]["fields"]
    grid = await make_user("grid_worker", ANYANG)
    r = await client.post(
        "/api/v1/units", json={"name": "x", "kind": "team", "org": ANYANG}, headers=grid.headers
    )
    assert r.status == 403


async def test_unit_outside_jurisdiction_is_404(client: TestClient[Any, Any], make_user: UserFactory) -> None:
    """A user of another township neither sees the unit nor finds it in the list."""
    duty = await make_user("duty_officer", COUNTY)
    unit = await _create(client, duty.headers, name="马屿摩托巡逻1号", kind="motorbike", org=MAYU)
    other = await make_user("duty_officer", ANYANG)
    assert (await client.get(f"/api/v1/units/{unit['id']}", headers=other.headers)).status == 404
    listed = await (await client.get("/api/v1/units", headers=other.headers)).json()
    assert listed["units"] == []


async def test_members_are_added_once(client: TestClient[Any, Any], make_user: UserFactory) -> None:
    """POST members puts a squad member in the unit (201), again is 200, an unknown user is 422."""
    duty = await make_user("duty_officer", COUNTY)
    squad = await make_user("squad_member", MAYU, username="zhang-san")
    unit = await _create(client, duty.headers, name="一组", kind="team", org=MAYU)
    url = f"/api/v1/units/{unit['id']}/members"
    r = await client.post(url, json={"username": "zhang-san"}, headers=duty.headers)
    assert r.status == 201 and (await r.json())["user"]["id"] == squad.user.id
    r = await client.post(url, json={"username": "zhang-san"}, headers=duty.headers)
    assert r.status == 200 and (await r.json())["added"] is False
    r = await client.post(url, json={"username": "nobody"}, headers=duty.headers)
    assert r.status == 422
    got = await (await client.get(f"/api/v1/units/{unit['id']}", headers=duty.headers)).json()
    assert [m["username"] for m in got["members"]] == ["zhang-san"]
    r = await client.delete(f"{url}/zhang-san", headers=duty.headers)
    assert r.status == 200


async def test_devices_register_with_key_shown_once(
    client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """An OsmAnd device gets a key in the answer only; a JT/T 808 number is normalised; duplicates are 409."""
    duty = await make_user("duty_officer", COUNTY)
    unit = await _create(client, duty.headers, name="指挥车", kind="vehicle", org=MAYU)
    url = f"/api/v1/units/{unit['id']}/devices"
    r = await client.post(url, json={"protocol": "osmand", "identifier": "phone-1"}, headers=duty.headers)
    dev = await r.json()
    assert r.status == 201 and len(dev["key"]) >= 16
    assert dev["server_url"].endswith(f"/?key={dev['key']}")
    r = await client.post(url, json={"protocol": "jt808", "identifier": "013800138000"}, headers=duty.headers)
    assert r.status == 201 and (await r.json())["identifier"] == "13800138000"
    r = await client.post(url, json={"protocol": "jt808", "identifier": "13800138000"}, headers=duty.headers)
    assert r.status == 409
    r = await client.post(url, json={"protocol": "jt808", "identifier": "not-a-number"}, headers=duty.headers)
    assert r.status == 422
    got = await (await client.get(f"/api/v1/units/{unit['id']}", headers=duty.headers)).json()
    assert [d["identifier"] for d in got["devices"]] == ["phone-1", "13800138000"]
    assert all("key" not in d for d in got["devices"])


async def test_set_unit_status_writes_audit_and_outbox(
    client: TestClient[Any, Any], make_user: UserFactory, clean_stores: StoreUrls, app_of: Any
) -> None:
    """set_unit_status changes status and version with one audit-log row and one outbox row (entity unit)."""
    duty = await make_user("duty_officer", COUNTY)
    unit = await _create(client, duty.headers, name="一组", kind="team", org=MAYU)
    ctx = app_of(client)
    result = await set_unit_status(ctx, unit["id"], "en_route", duty.user)
    assert result["status"] == "en_route" and result["version"] == unit["version"] + 1
    same = await set_unit_status(ctx, unit["id"], "en_route", "device")
    assert same["version"] == result["version"]
    conn = await asyncpg.connect(clean_stores.database)
    try:
        rows = await conn.fetch("SELECT topic, entity_id, org_path, payload FROM outbox ORDER BY seq")
        events = await conn.fetch(
            "SELECT action, actor_name, version FROM audit_log WHERE entity = 'unit' AND entity_id = $1 ORDER BY id",
            str(unit["id"]),
        )
    finally:
        await conn.close()
    assert [r["topic"] for r in rows] == ["unit", "unit"]
    assert rows[1]["entity_id"] == str(unit["id"]) and list(rows[1]["org_path"])[-1] == MAYU
    payload = json.loads(rows[1]["payload"])
    assert payload["action"] == "status" and payload["data"]["status"] == "en_route"
    assert payload["entity"] == "unit" and payload["version"] == result["version"]
    assert [(e["action"], e["actor_name"], e["version"]) for e in events] == [
        ("created", duty.user.username, unit["version"]),
        ("status", duty.user.username, result["version"]),
    ]


async def test_set_unit_status_joins_the_callers_transaction(
    client: TestClient[Any, Any], make_user: UserFactory, app_of: Any
) -> None:
    """With conn, the status change rolls back with the caller's transaction."""
    duty = await make_user("duty_officer", COUNTY)
    unit = await _create(client, duty.headers, name="一组", kind="team", org=MAYU)
    ctx = app_of(client)

    class Abort(Exception):
        pass

    try:
        async with ctx.pool.acquire() as conn, conn.transaction():
            await set_unit_status(ctx, unit["id"], "dispatched", "officer", conn=conn)
            raise Abort
    except Abort:
        pass
    got = await (await client.get(f"/api/v1/units/{unit['id']}", headers=duty.headers)).json()
    assert got["status"] == "available"


async def test_status_route_for_officer_and_member(
    client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """POST status works for the officer and for a member of the unit, not for another squad member."""
    duty = await make_user("duty_officer", COUNTY)
    member = await make_user("squad_member", MAYU, username="li-si")
    stranger = await make_user("squad_member", MAYU, username="wang-wu")
    unit = await _create(client, duty.headers, name="一组", kind="team", org=MAYU)
    await client.post(f"/api/v1/units/{unit['id']}/members", json={"username": "li-si"}, headers=duty.headers)
    url = f"/api/v1/units/{unit['id']}/status"
    r = await client.post(url, json={"status": "on_scene"}, headers=member.headers)
    assert r.status == 200 and (await r.json())["status"] == "on_scene"
    assert (await client.post(url, json={"status": "returning"}, headers=stranger.headers)).status == 403
    r = await client.post(url, json={"status": "off_duty"}, headers=duty.headers)
    assert r.status == 200 and (await r.json())["status"] == "off_duty"
    assert (await client.post(url, json={"status": "asleep"}, headers=duty.headers)).status == 422
