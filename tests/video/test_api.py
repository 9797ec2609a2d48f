"""The meetings API: creation with join links, jurisdiction, outbox rows, the board section."""

from __future__ import annotations

import json
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from dispatchd.web.appkeys import CTX
from tests.conftest import COUNTY, StoreUrls, UserFactory
from tests.video.conftest import create_meeting, ws_url


async def test_create_returns_one_link_per_invited_unit(
    video_client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """POST /api/v1/meetings answers 201 with an id and one join URL per invited unit."""
    officer = await make_user("duty_officer", COUNTY)
    data = await create_meeting(video_client, officer.headers, invite=["330381001", "330381002"])
    assert isinstance(data["id"], int) and data["status"] == "running" and data["codec"] == "VP8"
    assert [link["unit"] for link in data["links"]] == ["330381001", "330381002"]
    urls = [link["url"] for link in data["links"]] + [data["chair_link"]["url"]]
    assert len(set(urls)) == 3
    assert all(f"/meet/{data['id']}?t=" in u for u in urls)


async def test_include_descendants_stops_at_township(
    video_client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """Inviting the county "and all below" reaches every township but no community or grid."""
    leader = await make_user("leader", "330300")
    data = await create_meeting(video_client, leader.headers, invite=[COUNTY], include_descendants=True)
    levels = {link["level"] for link in data["links"]}
    assert levels == {"county", "township"}
    assert len(data["links"]) == 1 + 8


async def test_bad_input_is_refused(video_client: TestClient[Any, Any], make_user: UserFactory) -> None:
    """Unknown units and a convening unit outside the caller's jurisdiction answer 422; grid workers 403."""
    officer = await make_user("duty_officer", COUNTY)
    resp = await video_client.post(
        "/api/v1/meetings", json={"title": "x", "invite": ["999"]}, headers=officer.headers
    )
    assert resp.status == 422 and "invite" in (await resp.json())["error"]["fields"]
    resp = await video_client.post(
        "/api/v1/meetings", json={"title": "x", "invite": [], "org": "330300"}, headers=officer.headers
    )
    assert resp.status == 422
    worker = await make_user("grid_worker", "330381001")
    resp = await video_client.post(
        "/api/v1/meetings", json={"title": "x", "invite": []}, headers=worker.headers
    )
    assert resp.status == 403


async def test_meeting_writes_outbox_and_shows_on_board(
    video_client: TestClient[Any, Any], make_user: UserFactory, clean_stores: StoreUrls
) -> None:
    """Creating and ending a meeting writes outbox rows (entity meeting) owned by the convening unit and
    routed to the invited units too; the board section lists it while running."""
    officer = await make_user("duty_officer", COUNTY)
    data = await create_meeting(video_client, officer.headers)
    ctx = video_client.server.app[CTX]

    section = ctx.board_sections["meetings"]
    running = await section(ctx, frozenset({"330381001"}))
    assert [m["id"] for m in running] == [data["id"]]
    assert await section(ctx, frozenset({"330302"})) == []
    resp = await video_client.post(f"/api/v1/meetings/{data['id']}/end", headers=officer.headers)
    assert resp.status == 200 and (await resp.json())["status"] == "ended"
    assert await section(ctx, frozenset({"330381001"})) == []
    conn = await asyncpg.connect(clean_stores.database)
    try:
        rows = await conn.fetch(
            "SELECT topic, entity_id, org_path, payload::text AS payload FROM outbox WHERE topic = 'meeting'"
            " ORDER BY seq"
        )
    finally:
        await conn.close()
    assert [r["entity_id"] for r in rows] == [str(data["id"])] * 2
    envelope = json.loads(rows[0]["payload"])
    assert envelope["org"] == COUNTY and set(envelope["data"]["invited"]) <= set(rows[0]["org_path"])
    assert envelope["data"]["invited"], "the invited units hear of the meeting"


async def test_other_jurisdictions_get_404(
    video_client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """A meeting neither convened nor invited in your jurisdiction answers 404; an invited township sees it."""
    officer = await make_user("duty_officer", COUNTY)
    data = await create_meeting(video_client, officer.headers, invite=["330381001"])
    township = await make_user("duty_officer", "330381001")
    other = await make_user("duty_officer", "330381002")
    assert (await video_client.get(f"/api/v1/meetings/{data['id']}", headers=township.headers)).status == 200
    assert (await video_client.get(f"/api/v1/meetings/{data['id']}", headers=other.headers)).status == 404
    listed = await (await video_client.get("/api/v1/meetings", headers=other.headers)).json()
    assert listed["meetings"] == []


async def test_join_link_is_the_only_credential(
    video_client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """The page is public; the websocket refuses a wrong token and welcomes a link's token."""
    officer = await make_user("duty_officer", COUNTY)
    data = await create_meeting(video_client, officer.headers)
    page = await video_client.get(f"/meet/{data['id']}")
    assert page.status == 200 and "text/html" in page.headers["Content-Type"]
    bad = await video_client.get(f"/ws/meet/{data['id']}?token=nope")
    assert bad.status == 401
    ws = await video_client.session.ws_connect(ws_url(video_client, data["links"][0]["url"]))
    welcome = await ws.receive_json(timeout=10)
    assert welcome["type"] == "welcome" and welcome["you"]["unit"] == "330381001"
    assert welcome["you"]["role"] == "participant"
    await ws.close()


async def test_scheduled_meeting_starts_when_someone_joins(
    video_client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """A meeting scheduled for later is 'scheduled' until the first participant joins, then 'running'."""
    officer = await make_user("duty_officer", COUNTY)
    data = await create_meeting(video_client, officer.headers, scheduled_at="2026-05-03T20:00:00+08:00")
    assert data["status"] == "scheduled"
    ws = await video_client.session.ws_connect(ws_url(video_client, data["chair_link"]["url"]))
    assert (await ws.receive_json(timeout=10))["you"]["role"] == "chair"
    got = await (await video_client.get(f"/api/v1/meetings/{data['id']}", headers=officer.headers)).json()
    assert got["status"] == "running"
    assert any(r["online"] and r["role"] == "chair" for r in got["roster"])
    await ws.close()
