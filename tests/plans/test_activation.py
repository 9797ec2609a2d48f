"""Plans through the API, against real PostgreSQL and Redis on loopback: posting a plan, a matching
case proposing it, confirming it (groups, orders to the nearest units, the consultation, notices and
the checklist in one transaction, on the case's timeline), raising, standing down, SMS through a
gateway on loopback (also signed for Aliyun's endpoint), and escalation of an unacknowledged notice to the deputy."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from dispatchd.clock import FakeClock
from dispatchd.domain.orgs import OrgTree
from dispatchd.incidents import service as cases
from dispatchd.plans import notices, service, sms
from tests.conftest import Account, AppFactory, StoreUrls, UserFactory
from tests.incidents.helpers import point_in
from tests.live.helpers import app_of, eventually, make_squad, place_unit
from tests.plans.helpers import COUNTY, GRID, JUSTICE, SOCIAL_SECURITY, TOWN, plan_body

QUIET = {"plans_propose_interval": 3600, "plans_timer_interval": 3600}


class Gateway:
    """A fake SMS gateway (the carrier is outside the system): a real HTTP server on 127.0.0.1 that
    answers as Tencent Cloud's SendSms does and keeps what it was sent."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.received.append((dict(request.headers), body))
        return web.json_response(
            {"Response": {"SendStatusSet": [{"Code": "Ok", "SerialNo": f"2028:{len(self.received)}", "Message": "send success"}], "RequestId": "x"}}
        )


@pytest.fixture
async def gateway() -> AsyncIterator[tuple[Gateway, str]]:
    gw = Gateway()
    app = web.Application()
    app.router.add_post("/sms", gw.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    yield gw, f"http://127.0.0.1:{server.port}/sms"
    await server.close()


async def _people(make_user: UserFactory) -> dict[str, Account]:
    return {
        "officer": await make_user("duty_officer", COUNTY),
        "admin": await make_user("admin", COUNTY),
        "leader": await make_user("leader", TOWN),
        "town_officer": await make_user("duty_officer", TOWN),
        "labour": await make_user("department_handler", TOWN, department=SOCIAL_SECURITY),
        "mediator": await make_user("department_handler", TOWN, department=JUSTICE),
        "grid_worker": await make_user("grid_worker", GRID),
        "county_leader": await make_user("leader", COUNTY),
    }


async def _post_plan(client: TestClient[Any, Any], admin: Account) -> dict[str, Any]:
    r = await client.post("/api/v1/plans", json=plan_body(), headers=admin.headers)
    body: dict[str, Any] = await r.json()
    assert r.status == 201, body
    return body


async def _squads(client: TestClient[Any, Any], officer: Account, make_user: UserFactory, tree: OrgTree, clock: FakeClock) -> dict[str, Any]:
    """Two teams (one near the case's grid, one farther) and a vehicle, each with a live position."""
    lat, lon = point_in(tree, GRID)
    near, _ = await make_squad(client, officer, make_user, org=TOWN, name="近处中队")
    far, _ = await make_squad(client, officer, make_user, org=TOWN, name="远处中队")
    car, _ = await make_squad(client, officer, make_user, org=TOWN, name="指挥车", kind="vehicle")
    await place_unit(client, near["id"], lat + 0.001, lon, clock.now())
    await place_unit(client, far["id"], lat + 0.02, lon, clock.now())
    await place_unit(client, car["id"], lat - 0.003, lon, clock.now())
    return {"near": near, "far": far, "car": car}


async def _case(client: TestClient[Any, Any], officer: Account, tree: OrgTree) -> dict[str, Any]:
    lat, lon = point_in(tree, GRID)
    r = await client.post(
        "/api/v1/incidents",
        json={
            "category": "incident.stability.wage_claim",
            "description": "某工地三十余名工人聚集讨要欠薪",
            "location": {"lat": lat, "lon": lon},
            "priority": "P1",
        },
        headers=officer.headers,
    )
    case: dict[str, Any] = await r.json()
    assert r.status == 201, case
    return case


async def test_posted_plan_is_listed_and_a_new_version_on_update(make_client: AppFactory, make_user: UserFactory) -> None:
    """POST /plans (admin) answers 201 with an id; GET lists it with the shipped ones; posting the
    same code again makes version 2; a duty officer may not post; a bad plan is 422 naming the key."""
    client = await make_client(**QUIET)
    people = await _people(make_user)
    plan = await _post_plan(client, people["admin"])
    assert plan["id"] and plan["version"] == 1 and plan["code"] == "test-wage"
    listed = await (await client.get("/api/v1/plans", headers=people["officer"].headers)).json()
    codes = {p["code"] for p in listed["plans"]}
    assert {"test-wage", "mass-incident-wage", "typhoon-flood"} <= codes
    body = plan_body()
    body["name"] = "测试讨薪预案（修订）"
    r = await client.post("/api/v1/plans", json=body, headers=people["admin"].headers)
    assert r.status == 200 and (await r.json())["version"] == 2
    got = await (await client.get(f"/api/v1/plans/{plan['id']}", headers=people["admin"].headers)).json()
    assert [v["version"] for v in got["versions"]] == [1, 2] and got["name"] == "测试讨薪预案（修订）"
    r = await client.post("/api/v1/plans", json=plan_body(), headers=people["officer"].headers)
    assert r.status == 403
    bad = plan_body()
    bad["levels"]["IV"]["forces"][0]["count"] = 99
    r = await client.post("/api/v1/plans", json=bad, headers={**people["admin"].headers, "Accept-Language": "en"})
    err = await r.json()
    assert r.status == 422 and "levels.IV.forces[0].count" in err["error"]["fields"], err


async def test_matching_case_proposes_and_confirming_runs_the_plan(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree, clock: FakeClock, clean_stores: StoreUrls
) -> None:
    """A wage-claim case proposes the plan; confirming it creates the three groups filled from the
    township's people, an order to the NEAREST available team, a running consultation inviting the
    township and community, the leader's notice and the checklist — all on the case's timeline."""
    client = await make_client(**QUIET)
    ctx = app_of(client)
    people = await _people(make_user)
    plan = await _post_plan(client, people["admin"])
    squads = await _squads(client, people["officer"], make_user, org_tree, clock)
    case = await _case(client, people["officer"], org_tree)

    proposed = await service.propose_due(ctx)
    assert proposed, "a matching case proposes the plan"
    assert await service.propose_due(ctx) == [], "a case is proposed a plan once"
    got = await (await client.get(f"/api/v1/incidents/{case['id']}", headers=people["officer"].headers)).json()
    mine = [a for a in [got["plan"], *got["plan"]["proposals"]] if a.get("plan_id") == plan["id"]]
    assert (mine and got["plan"]["state"] == "proposed") or any(p["plan_id"] == plan["id"] for p in got["plan"]["proposals"])
    async with ctx.pool.acquire() as conn:
        proposal = await conn.fetchval(
            "SELECT id FROM plan_activations WHERE plan_id = $1 AND incident_id = $2 AND state = 'proposed'", plan["id"], case["id"]
        )
    assert proposal is not None

    r = await client.post(f"/api/v1/plan-activations/{proposal}/confirm", json={}, headers=people["officer"].headers)
    act = await r.json()
    assert r.status == 200, act
    assert act["state"] == "active" and act["level"] == "IV"

    got = await (await client.get(f"/api/v1/incidents/{case['id']}", headers=people["officer"].headers)).json()
    p = got["plan"]
    assert p["id"] == proposal and p["state"] == "active"
    groups = {g["name"]: g for g in p["groups"]}
    assert set(groups) == {"谈判组", "安抚组", "现场对接组"}
    negotiators = {m["user_id"] for m in groups["谈判组"]["members"]}
    assert negotiators == {people["leader"].user.id, people["labour"].user.id}
    assert [m["user_id"] for m in groups["安抚组"]["members"]] == [people["mediator"].user.id]
    assert [m["user_id"] for m in groups["现场对接组"]["members"]] == [people["grid_worker"].user.id]
    assert [(o["unit_id"], o["kind"]) for o in p["orders"]] == [(squads["near"]["id"], "team")]
    assert p["meeting_id"] is not None
    meeting = await (await client.get(f"/api/v1/meetings/{p['meeting_id']}", headers=people["officer"].headers)).json()
    assert meeting["status"] == "running"
    invited = {i["unit"] for i in meeting["invites"] if i["kind"] == "unit"}
    chair = {i["unit"] for i in meeting["invites"] if i["kind"] == "chair"}
    assert chair == {TOWN}  # the township that owns the case convenes it
    assert "330381001001" in invited  # the case's community is invited
    leader_notices = [n for n in p["notices"] if n["user_id"] == people["leader"].user.id]
    assert len(leader_notices) == 1
    n = leader_notices[0]
    assert n["state"] == "sent" and n["deliveries"]["console"]["state"] == "sent"
    assert n["deliveries"]["sms"]["state"] == "unavailable"  # no gateway configured in this test
    assert n["deliveries"]["call"]["state"] == "unavailable"
    assert [s["type"] for s in p["checklist"]] == ["report", "initial"]
    assert all(s["due_at"] and not s["overdue"] for s in p["checklist"])
    actions = [e["action"] for e in got["timeline"]]
    assert "plan.proposed" in actions and "plan.activated" in actions
    assert actions.index("plan.activated") > actions.index("plan.proposed")
    assert "order.created" in actions
    # The invited township's duty officer can join the consultation from their console.
    r = await client.post(f"/api/v1/meetings/{p['meeting_id']}/join", headers=people["town_officer"].headers)
    assert r.status == 200, await r.text()
    # The unit went out: the team is dispatched, the far one still available.
    unit = await (await client.get(f"/api/v1/units/{squads['near']['id']}", headers=people["officer"].headers)).json()
    assert unit["status"] == "dispatched"
    # Starting it again on the case is refused.
    r = await client.post(f"/api/v1/incidents/{case['id']}/plan", json={"plan": plan["id"]}, headers=people["officer"].headers)
    assert r.status == 409
    # Overdue steps show once their deadline passes.
    clock.advance(11 * 60)
    p = (await (await client.get(f"/api/v1/incidents/{case['id']}", headers=people["officer"].headers)).json())["plan"]
    assert [s["overdue"] for s in p["checklist"]] == [True, False] and p["overdue_steps"] == 1
    step = p["checklist"][0]["id"]
    r = await client.post(f"/api/v1/plan-activations/{p['id']}/steps/{step}/done", headers=people["officer"].headers)
    assert r.status == 200 and (await r.json())["checklist"][0]["done_at"]
    stats = await (await client.get("/api/v1/stats", headers=people["officer"].headers)).json()
    assert stats["plans"]["steps"] == [
        {"code": "report", "name": "信息报告", "name_en": "report", "done": 1, "median_s": 660.0, "late": 1}
    ]
    _ = clean_stores


async def test_activation_is_one_transaction(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree, clock: FakeClock, clean_stores: StoreUrls
) -> None:
    """When the last write of an activation fails (the checklist), nothing of it stays: no group,
    no order, no meeting, no notice, and the team is still available."""
    client = await make_client(**QUIET)
    people = await _people(make_user)
    plan = await _post_plan(client, people["admin"])
    squads = await _squads(client, people["officer"], make_user, org_tree, clock)
    case = await _case(client, people["officer"], org_tree)
    conn = await asyncpg.connect(clean_stores.database)
    try:
        await conn.execute(
            "CREATE FUNCTION test_refuse_steps() RETURNS trigger LANGUAGE plpgsql AS $$"
            " BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
        )
        await conn.execute("CREATE TRIGGER test_refuse_steps BEFORE INSERT ON plan_steps FOR EACH ROW EXECUTE FUNCTION test_refuse_steps()")
        r = await client.post(f"/api/v1/incidents/{case['id']}/plan", json={"plan": plan["id"]}, headers=people["officer"].headers)
        assert r.status == 500
    finally:
        await conn.execute("DROP TRIGGER IF EXISTS test_refuse_steps ON plan_steps")
        await conn.execute("DROP FUNCTION IF EXISTS test_refuse_steps()")
    counts = {
        t: await conn.fetchval(f"SELECT count(*) FROM {t}")
        for t in ("plan_activations", "plan_groups", "plan_orders", "orders", "meetings", "plan_notices")
    }
    status = await conn.fetchval("SELECT status FROM squad_units WHERE id = $1", squads["near"]["id"])
    await conn.close()
    assert counts == dict.fromkeys(counts, 0) and status == "available"
    r = await client.post(f"/api/v1/incidents/{case['id']}/plan", json={"plan": plan["id"]}, headers=people["officer"].headers)
    assert r.status == 201, await r.text()


async def test_raising_adds_the_higher_level_and_standing_down_cancels_what_is_open(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree, clock: FakeClock
) -> None:
    """Raising Ⅳ→Ⅲ adds the county group, the vehicle's order, the county to the consultation and
    the county leader's notice; standing down cancels the orders, ends the meeting, closes notices
    and frees the units."""
    client = await make_client(**QUIET)
    people = await _people(make_user)
    officer = people["officer"]
    plan = await _post_plan(client, people["admin"])
    squads = await _squads(client, officer, make_user, org_tree, clock)
    case = await _case(client, officer, org_tree)
    r = await client.post(f"/api/v1/incidents/{case['id']}/plan", json={"plan": plan["id"], "level": "IV"}, headers=officer.headers)
    act = await r.json()
    assert r.status == 201, act
    assert act["can_raise_to"] == ["III"]
    r = await client.post(f"/api/v1/plan-activations/{act['id']}/raise", json={"level": "IV"}, headers=officer.headers)
    assert r.status == 422
    r = await client.post(f"/api/v1/plan-activations/{act['id']}/raise", json={"level": "III"}, headers=officer.headers)
    raised = await r.json()
    assert r.status == 200, raised
    assert raised["level"] == "III"
    assert "县级协调组" in {g["name"] for g in raised["groups"]}
    assert sorted((o["unit_id"], o["level"]) for o in raised["orders"]) == sorted(
        [(squads["near"]["id"], "IV"), (squads["car"]["id"], "III")]
    )
    assert any(n["user_id"] == people["county_leader"].user.id for n in raised["notices"])
    assert [s["type"] for s in raised["checklist"]] == ["report", "initial", "response"]
    meeting = await (await client.get(f"/api/v1/meetings/{raised['meeting_id']}", headers=officer.headers)).json()
    assert raised["meeting_id"] == act["meeting_id"]
    assert COUNTY in {i["unit"] for i in meeting["invites"]}

    r = await client.post(f"/api/v1/plan-activations/{act['id']}/stand-down", json={"reason": "已平息"}, headers=officer.headers)
    down = await r.json()
    assert r.status == 200, down
    assert down["state"] == "stood_down"
    assert {o["state"] for o in down["orders"]} == {"cancelled"}
    assert {n["state"] for n in down["notices"] if n["user_id"]} == {"cancelled"}
    assert all(s["cancelled"] for s in down["checklist"])
    meeting = await (await client.get(f"/api/v1/meetings/{raised['meeting_id']}", headers=officer.headers)).json()
    assert meeting["status"] == "ended"
    for key in ("near", "car"):
        unit = await (await client.get(f"/api/v1/units/{squads[key]['id']}", headers=officer.headers)).json()
        assert unit["status"] == "available"
    got = await (await client.get(f"/api/v1/incidents/{case['id']}", headers=officer.headers)).json()
    actions = [e["action"] for e in got["timeline"]]
    assert {"plan.activated", "plan.raised", "plan.stood_down"} <= set(actions)
    r = await client.post(f"/api/v1/plan-activations/{act['id']}/stand-down", json={}, headers=officer.headers)
    assert r.status == 409


async def test_sms_through_the_gateway_and_escalation_to_the_deputy(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree, clock: FakeClock, gateway: tuple[Gateway, str]
) -> None:
    """The leader's SMS goes to the gateway in Tencent's SendSms shape and shows delivered; left
    unacknowledged past plans.escalate_after, the notice goes to the deputy on record, who acknowledges."""
    gw, url = gateway
    client = await make_client(
        plans_sms_gateway=url, plans_sms_style="tencent", plans_sms_sign="瑞安指挥", plans_sms_template="1234567",
        plans_sms_app_id="1400000000", plans_sms_api_key="k-123", plans_propose_interval=3600, plans_timer_interval=0.05,
    )
    ctx = app_of(client)
    people = await _people(make_user)
    deputy = people["mediator"]  # the deputy on record, not the plan's fallback (the township's duty officer)
    r = await client.put(
        f"/api/v1/plan-contacts/{people['leader'].user.id}",
        json={"mobile": "13800138000", "deputy_user_id": deputy.user.id},
        headers=people["admin"].headers,
    )
    assert r.status == 200 and (await r.json())["mobile"] == "138****8000"
    plan = await _post_plan(client, people["admin"])
    case = await _case(client, people["officer"], org_tree)
    r = await client.post(f"/api/v1/incidents/{case['id']}/plan", json={"plan": plan["id"]}, headers=people["officer"].headers)
    act = await r.json()
    assert r.status == 201, act

    async def delivered() -> Any:
        a = await service.get_activation(ctx, act["id"], people["officer"].user)
        n = next(n for n in a["notices"] if n["user_id"] == people["leader"].user.id)
        return n if n["deliveries"]["sms"]["state"] == "delivered" else None

    notice = await eventually(delivered)
    assert notice["state"] == "delivered"
    headers, body = gw.received[0]
    assert headers["X-TC-Action"] == "SendSms" and headers["Authorization"] == "Bearer k-123"
    assert body["PhoneNumberSet"] == ["+8613800138000"] and body["TemplateId"] == "1234567"
    assert body["TemplateParamSet"][0].startswith("讨薪预案已启动")

    clock.advance(601)
    await notices.escalate_due(ctx)

    async def escalated() -> Any:
        a = await service.get_activation(ctx, act["id"], people["officer"].user)
        return a if any(n["escalates"] == notice["id"] for n in a["notices"]) else None

    a = await eventually(escalated)
    old = next(n for n in a["notices"] if n["id"] == notice["id"])
    new = next(n for n in a["notices"] if n["escalates"] == notice["id"])
    assert old["state"] == "escalated" and old["escalated_to"] == new["id"]
    assert new["user_id"] == deputy.user.id and "未叫应" in new["text"]
    mine = await (await client.get("/api/v1/plan-notices", headers=deputy.headers)).json()
    assert [n["id"] for n in mine["notices"]] == [new["id"]]
    r = await client.post(f"/api/v1/plan-notices/{new['id']}/ack", headers=people["leader"].headers)
    assert r.status == 404  # not theirs
    r = await client.post(f"/api/v1/plan-notices/{new['id']}/ack", headers=deputy.headers)
    assert r.status == 200 and (await r.json())["state"] == "acknowledged"
    stats = await (await client.get("/api/v1/stats", headers=people["officer"].headers)).json()
    figures = stats["plans"]
    assert figures["activations"] == 1 and figures["escalated"] == 1 and figures["acknowledged"] == 1
    assert figures["ack_rate"] == 0.5  # the leader did not answer; the deputy did
    await asyncio.sleep(0)
    _ = json


class AliyunGateway:
    """A fake of Aliyun's SMS endpoint (outside the system) on 127.0.0.1: it checks the RPC signature
    of the form it receives with the account's secret, as the cloud does, and answers as SendSms."""

    def __init__(self, secret: str) -> None:
        self.secret = secret
        self.received: list[dict[str, str]] = []

    async def handle(self, request: web.Request) -> web.Response:
        form = dict(parse_qsl(await request.text(), keep_blank_values=True))
        signature = form.pop("Signature", "")
        self.received.append(form)
        if signature != sms.aliyun_signature(request.method, form, self.secret):
            return web.json_response({"Code": "SignatureDoesNotMatch", "Message": "Specified signature is not matched"}, status=400)
        return web.json_response({"Code": "OK", "Message": "OK", "BizId": "900619746936498440^0", "RequestId": "x"})


async def test_sms_signed_for_the_aliyun_endpoint_is_delivered(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """With the cloud's access key configured, the leader's SMS reaches an Aliyun-style endpoint as a
    form it verifies by its RPC signature (Code OK, BizId kept); the secret is sent nowhere."""
    gw = AliyunGateway("the-access-key-secret")
    app = web.Application()
    app.router.add_post("/", gw.handle)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server()
    try:
        client = await make_client(
            plans_sms_gateway=f"http://127.0.0.1:{server.port}/", plans_sms_style="aliyun", plans_sms_sign="瑞安指挥",
            plans_sms_template="SMS_154950909", plans_sms_access_key_id="LTAI-test", plans_sms_access_key_secret=gw.secret,
            plans_propose_interval=3600, plans_timer_interval=0.05,
        )
        ctx = app_of(client)
        people = await _people(make_user)
        r = await client.put(
            f"/api/v1/plan-contacts/{people['leader'].user.id}", json={"mobile": "13800138000"}, headers=people["admin"].headers
        )
        assert r.status == 200
        plan = await _post_plan(client, people["admin"])
        case = await _case(client, people["officer"], org_tree)
        r = await client.post(f"/api/v1/incidents/{case['id']}/plan", json={"plan": plan["id"]}, headers=people["officer"].headers)
        act = await r.json()
        assert r.status == 201, act

        async def sms_state() -> Any:
            a = await service.get_activation(ctx, act["id"], people["officer"].user)
            n = next(n for n in a["notices"] if n["user_id"] == people["leader"].user.id)
            return n["deliveries"]["sms"] if n["deliveries"]["sms"]["state"] in ("delivered", "failed") else None

        delivery = await eventually(sms_state)
        assert delivery["state"] == "delivered" and delivery["detail"] == "900619746936498440^0", delivery
        form = gw.received[0]
        assert form["AccessKeyId"] == "LTAI-test" and form["PhoneNumbers"] == "13800138000"
        assert form["SignName"] == "瑞安指挥" and json.loads(form["TemplateParam"])["text"].startswith("讨薪预案已启动")
        assert gw.secret not in json.dumps(form, ensure_ascii=False)
    finally:
        await server.close()


async def test_cases_that_do_not_match_are_not_proposed(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree, clock: FakeClock
) -> None:
    """A P3 wage claim, a fire hazard and a wage claim in another township (the trigger's units) get
    no proposal of the posted plan; a second report attached to a case counts towards min_reports."""
    client = await make_client(**QUIET)
    ctx = app_of(client)
    people = await _people(make_user)
    body = plan_body()
    body["trigger"]["min_reports"] = 2
    r = await client.post("/api/v1/plans", json=body, headers=people["admin"].headers)
    plan = await r.json()
    lat, lon = point_in(org_tree, GRID)
    olat, olon = point_in(org_tree, "330381002001G001")

    async def report(category: str, priority: str, at: tuple[float, float]) -> dict[str, Any]:
        r = await client.post(
            "/api/v1/incidents",
            json={"category": category, "description": "测试", "location": {"lat": at[0], "lon": at[1]}, "priority": priority},
            headers=people["officer"].headers,
        )
        out: dict[str, Any] = await r.json()
        assert r.status == 201, out
        return out

    await report("incident.stability.wage_claim", "P3", (lat, lon))
    await report("hazard.fire", "P1", (lat, lon))
    await report("incident.stability.wage_claim", "P1", (olat, olon))
    once = await report("incident.stability.wage_claim", "P1", (lat, lon))

    async def proposed_for_plan() -> list[int]:
        await service.propose_due(ctx)
        async with ctx.pool.acquire() as conn:
            rows = await conn.fetch("SELECT incident_id FROM plan_activations WHERE plan_id = $1", plan["id"])
        return [r["incident_id"] for r in rows]

    assert await proposed_for_plan() == []  # one report is not enough (min_reports = 2)
    await cases.attach_report(ctx, once["id"], channel="hotline", caller="13800138000")
    assert await proposed_for_plan() == [once["id"]]
    _ = clock
