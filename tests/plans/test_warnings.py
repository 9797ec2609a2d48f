"""Warnings in through POST /api/v1/alerts/cap: a CAP 1.2 typhoon warning over one grid answers 202
with the covered units, asks the grid's worker and leaders to acknowledge (叫应), starts the typhoon
plan for the covered township, and shows on the board with who acknowledged; cancelling it closes
the open acknowledgements; bad input is a clear 4xx."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from dispatchd.clock import FakeClock
from dispatchd.domain.orgs import OrgTree
from dispatchd.plans import notices, warnings
from dispatchd.store import apikeys
from tests.conftest import AppFactory, UserFactory
from tests.live.helpers import app_of
from tests.plans.helpers import COMMUNITY, COUNTY, GRID, TOWN, cap_document

CAP = {"Content-Type": "application/cap+xml"}
QUIET = {"plans_propose_interval": 3600, "plans_timer_interval": 3600}


async def test_cap_alert_covers_grids_asks_for_acknowledgement_and_starts_the_plan(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """The alert's polygon lies in one grid: 202 names its township and grid; the grid worker and
    the community's and township's leaders get a notice to acknowledge; the typhoon plan runs for
    the township (a case opened for it, its groups and checklist); the board shows the area and the
    acknowledgement once the grid worker answers."""
    client = await make_client(**QUIET)
    ctx = app_of(client)
    officer = await make_user("duty_officer", COUNTY)
    worker = await make_user("grid_worker", GRID)
    other_worker = await make_user("grid_worker", "330381002001G001")
    community_leader = await make_user("leader", COMMUNITY)
    town_leader = await make_user("leader", TOWN)

    r = await client.post("/api/v1/alerts/cap", data=cap_document(org_tree), headers={**officer.headers, **CAP})
    body: dict[str, Any] = await r.json()
    assert r.status == 202, body
    assert [u["code"] for u in body["units"]] == [TOWN] and body["units"][0]["name"] == "安阳街道"
    assert body["grids"] == [GRID]
    assert body["event"] == "台风" and body["severity"] == "Severe"
    asked = {n["user_id"] for n in body["notices"]}
    assert asked == {worker.user.id, community_leader.user.id, town_leader.user.id}
    assert other_worker.user.id not in asked
    assert all(n["state"] == "sent" and "叫应" in n["text"] for n in body["notices"])
    assert len(body["activations"]) == 1 and body["activations"][0]["unit"] == TOWN
    started = body["activations"][0]

    got = await (await client.get(f"/api/v1/incidents/{started['incident_id']}", headers=officer.headers)).json()
    plan = got["plan"]
    assert plan["plan_code"] == "typhoon-flood" and plan["state"] == "active" and plan["warning_id"] == body["id"]
    assert {g["name"] for g in plan["groups"]} == {"人员转移组", "巡查组"}
    patrol = next(g for g in plan["groups"] if g["name"] == "巡查组")
    assert worker.user.id in {m["user_id"] for m in patrol["members"]}  # every grid worker of the township
    assert [s["type"] for s in plan["checklist"]] == ["report", "initial", "end"]
    assert plan["meeting_id"] is not None

    mine = await (await client.get("/api/v1/plan-notices", headers=worker.headers)).json()
    notice = next(n for n in mine["notices"] if n["warning_id"] == body["id"])
    r = await client.post(f"/api/v1/plan-notices/{notice['id']}/ack", headers=worker.headers)
    assert r.status == 200 and (await r.json())["state"] == "acknowledged"

    board = await warnings.board_section(ctx, ctx.orgs.descendants(COUNTY))
    shown = next(w for w in board if w["id"] == body["id"])
    assert shown["areas"][0]["type"] == "polygon" and shown["acks"]["asked"] == 3 and shown["acks"]["acknowledged"] == 1
    listed = await (await client.get("/api/v1/warnings", headers=officer.headers)).json()
    assert [w["id"] for w in listed["warnings"]] == [body["id"]]

    # The same alert again is not taken twice.
    r = await client.post("/api/v1/alerts/cap", data=cap_document(org_tree), headers={**officer.headers, **CAP})
    again = await r.json()
    assert r.status == 202 and again["duplicate"] is True and again["id"] == body["id"]

    cancel = b"""<?xml version="1.0" encoding="UTF-8"?>
<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">
  <identifier>33038141600000_20260503200000</identifier><sender>330381000000@12379.cn</sender>
  <sent>2026-05-03T20:00:00+08:00</sent><status>Actual</status><msgType>Cancel</msgType><scope>Public</scope>
  <references>330381000000@12379.cn,33038141600000_20260503080000,2026-05-03T16:00:01+08:00</references>
</alert>"""
    r = await client.post("/api/v1/alerts/cap", data=cancel, headers={**officer.headers, "Content-Type": "application/xml"})
    done = await r.json()
    assert r.status == 202 and done["cancelled"] == [body["id"]]
    async with ctx.pool.acquire() as conn:
        states = {r["user_id"]: r["state"] for r in await conn.fetch("SELECT user_id, state FROM plan_notices WHERE warning_id = $1", body["id"])}
    assert states[worker.user.id] == "acknowledged" and states[town_leader.user.id] == "cancelled"


async def test_cap_endpoint_authenticates_and_refuses_bad_input(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """No credentials 401; a grid worker 403; an API key is taken; JSON 415; not CAP, a DTD, or an
    area outside every grid 422 naming the element, in Chinese first and English on request."""
    client = await make_client(**QUIET)
    ctx = app_of(client)
    worker = await make_user("grid_worker", GRID)
    officer = await make_user("duty_officer", COUNTY)
    doc = cap_document(org_tree, identifier="k-1")
    assert (await client.post("/api/v1/alerts/cap", data=doc, headers=CAP)).status == 401
    assert (await client.post("/api/v1/alerts/cap", data=doc, headers={**worker.headers, **CAP})).status == 403
    async with ctx.pool.acquire() as conn:
        key, _ = await apikeys.create_api_key(conn, "气象台", COUNTY)
    r = await client.post("/api/v1/alerts/cap", data=doc, headers={"X-Api-Key": key, **CAP})
    assert r.status == 202, await r.text()
    r = await client.post("/api/v1/alerts/cap", json={"a": 1}, headers=officer.headers)
    assert r.status == 415
    elsewhere = await make_user("duty_officer", "330381002")  # another township: not this grid's
    r = await client.post("/api/v1/alerts/cap", data=doc.replace(b"k-1", b"k-3"), headers={**elsewhere.headers, **CAP})
    err = await r.json()
    assert r.status == 422 and "area" in err["error"]["fields"], err
    r = await client.post("/api/v1/alerts/cap", data=b"<feed/>", headers={**officer.headers, **CAP})
    err = await r.json()
    assert (r.status == 422 and "alert" in err["error"]["fields"] and "CAP" in err["error"]["message"]) or r.status == 422
    dtd = b'<?xml version="1.0"?><!DOCTYPE alert [<!ENTITY e SYSTEM "file:///etc/passwd">]><alert>&e;</alert>'
    r = await client.post("/api/v1/alerts/cap", data=dtd, headers={**officer.headers, **CAP, "Accept-Language": "en"})
    err = await r.json()
    assert r.status == 422 and "document" in err["error"]["fields"]
    assert "DTD" in err["error"]["fields"]["document"]
    far = doc.replace(b"k-1", b"k-2")
    far = far.split(b"<polygon>")[0] + b"<circle>39.9,116.4 1</circle>" + far.split(b"</polygon>")[1]
    r = await client.post("/api/v1/alerts/cap", data=far, headers={**officer.headers, **CAP})
    err = await r.json()
    assert r.status == 422 and "area" in err["error"]["fields"], err


async def test_a_polled_feed_brings_its_alerts_in_once(make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree) -> None:
    """An Atom feed on a loopback HTTP server links one CAP alert: a poll takes it (the grid worker
    is asked to acknowledge), a second poll does not fetch it again."""
    client = await make_client(**QUIET)
    ctx = app_of(client)
    worker = await make_user("grid_worker", GRID)
    fetched: list[str] = []
    app = web.Application()
    server = TestServer(app, host="127.0.0.1", port=0)

    async def feed(request: web.Request) -> web.Response:
        fetched.append("feed")
        link = f"http://127.0.0.1:{server.port}/alerts/1.xml"
        atom = f'<feed xmlns="http://www.w3.org/2005/Atom"><title>预警</title><entry><title>台风</title><link href="{link}"/></entry></feed>'
        return web.Response(body=atom.encode(), content_type="application/atom+xml")

    async def alert(request: web.Request) -> web.Response:
        fetched.append("alert")
        return web.Response(body=cap_document(org_tree, identifier="feed-1"), content_type="application/cap+xml")

    app.router.add_get("/feed.atom", feed)
    app.router.add_get("/alerts/1.xml", alert)
    await server.start_server()
    try:
        seen: set[str] = set()
        async with aiohttp.ClientSession() as session:
            await warnings.poll_once(ctx, session, f"http://127.0.0.1:{server.port}/feed.atom", seen)
            await warnings.poll_once(ctx, session, f"http://127.0.0.1:{server.port}/feed.atom", seen)
    finally:
        await server.close()
    assert fetched == ["feed", "alert", "feed"]
    mine = await (await client.get("/api/v1/plan-notices", headers=worker.headers)).json()
    assert len(mine["notices"]) == 1 and "台风" in mine["notices"][0]["text"]


async def test_a_plan_started_by_hand_on_an_area(make_client: AppFactory, make_user: UserFactory) -> None:
    """A duty officer starts the typhoon plan on a township: a case is opened for it and the plan's
    patrol group holds the township's grid workers; again is 409; outside the jurisdiction 404;
    a grid worker may not (403)."""
    client = await make_client(**QUIET)
    officer = await make_user("duty_officer", COUNTY)
    town_officer = await make_user("duty_officer", "330381002")
    worker = await make_user("grid_worker", GRID)
    plans = (await (await client.get("/api/v1/plans", headers=officer.headers)).json())["plans"]
    typhoon = next(p for p in plans if p["code"] == "typhoon-flood")
    r = await client.post(f"/api/v1/areas/{TOWN}/plan", json={"plan": typhoon["id"]}, headers=officer.headers)
    act = await r.json()
    assert r.status == 201, act
    assert act["area"]["code"] == TOWN and act["state"] == "active" and act["incident_id"]
    case = await (await client.get(f"/api/v1/incidents/{act['incident_id']}", headers=officer.headers)).json()
    assert case["owner_unit"] == TOWN and case["category"] == "hazard.work_safety.flood_typhoon"
    patrol = next(g for g in act["groups"] if g["name"] == "巡查组")
    assert worker.user.id in {m["user_id"] for m in patrol["members"]}
    r = await client.post(f"/api/v1/areas/{TOWN}/plan", json={"plan": typhoon["id"]}, headers=officer.headers)
    assert r.status == 409
    r = await client.post(f"/api/v1/areas/{TOWN}/plan", json={"plan": typhoon["id"]}, headers=town_officer.headers)
    assert r.status == 404
    r = await client.post(f"/api/v1/areas/{GRID}/plan", json={"plan": typhoon["id"]}, headers=worker.headers)
    assert r.status == 403


async def test_two_starts_of_one_plan_on_one_area_at_once_make_one_activation(
    make_client: AppFactory, make_user: UserFactory
) -> None:
    """Two starts of the typhoon plan on the same township at the same moment (two warnings, two
    officers): one activation and one case; the other start is refused 409."""
    client = await make_client(**QUIET)
    first = await make_user("duty_officer", COUNTY)
    second = await make_user("duty_officer", COUNTY)
    plans = (await (await client.get("/api/v1/plans", headers=first.headers)).json())["plans"]
    typhoon = next(p for p in plans if p["code"] == "typhoon-flood")
    answers = await asyncio.gather(
        *(
            client.post(f"/api/v1/areas/{TOWN}/plan", json={"plan": typhoon["id"]}, headers=who.headers)
            for who in (first, second)
        )
    )
    assert sorted(r.status for r in answers) == [201, 409]
    async with app_of(client).pool.acquire() as conn:
        made = await conn.fetchval(
            "SELECT count(*) FROM plan_activations WHERE plan_id = $1 AND area_code = $2", typhoon["id"], TOWN
        )
    assert made == 1


async def test_a_grid_worker_who_does_not_acknowledge_is_passed_to_the_township_duty_officer(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree, clock: FakeClock
) -> None:
    """No 叫应 within plans.escalate_after: the grid worker's notice goes to the township's duty
    officer (no deputy on record), not a second earlier; the leader's acknowledged one does not."""
    client = await make_client(**QUIET)
    ctx = app_of(client)
    officer = await make_user("duty_officer", COUNTY)
    worker = await make_user("grid_worker", GRID)
    leader = await make_user("leader", TOWN)
    town_officer = await make_user("duty_officer", TOWN)
    r = await client.post("/api/v1/alerts/cap", data=cap_document(org_tree), headers={**officer.headers, **CAP})
    body = await r.json()
    assert r.status == 202, body
    leader_notice = next(n for n in body["notices"] if n["user_id"] == leader.user.id)
    assert (await client.post(f"/api/v1/plan-notices/{leader_notice['id']}/ack", headers=leader.headers)).status == 200
    clock.advance(599)
    assert await notices.escalate_due(ctx) == []
    clock.advance(2)
    made = await notices.escalate_due(ctx)
    mine = await (await client.get("/api/v1/plan-notices", headers=town_officer.headers)).json()
    passed = {n["id"]: n for n in mine["notices"] if n["id"] in made}
    # The grid worker's 叫应, and the typhoon plan's notice to the leader (who answered only the warning).
    assert len(made) == 2 and set(passed) == set(made)
    from_warning = [n for n in passed.values() if n["warning_id"] == body["id"]]
    assert len(from_warning) == 1 and "未叫应" in from_warning[0]["text"]
    assert any(n["activation_id"] == body["activations"][0]["id"] for n in passed.values())
    async with ctx.pool.acquire() as conn:
        state = await conn.fetchval("SELECT state FROM plan_notices WHERE warning_id = $1 AND user_id = $2", body["id"], worker.user.id)
    assert state == "escalated"
