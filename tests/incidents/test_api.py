"""The closed loop over HTTP on a real port with the real PostgreSQL."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from dispatchd.domain.orgs import OrgTree
from dispatchd.web.appkeys import CTX
from tests.conftest import UserFactory
from tests.incidents.helpers import (
    COUNTY,
    GRID,
    JUSTICE,
    OTHER_GRID,
    OTHER_TOWN,
    POLICE,
    TOWN,
    act,
    fetch,
    report,
)


async def test_whole_loop_to_evaluated_with_timeline(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """A case walks report → evaluated over the API and its timeline names who did each step and when."""
    officer = await make_user("duty_officer", TOWN)
    handler = await make_user("department_handler", TOWN, department=JUSTICE)
    worker = await make_user("grid_worker", GRID)
    case = await report(client, officer, org_tree, priority="P2")
    assert {"id", "number", "state", "version"} <= set(case)
    assert (case["state"], case["version"], case["priority"]) == ("reported", 1, "P2")
    case = await act(client, officer, case, "accept")
    case = await act(client, officer, case, "dispatch", department=JUSTICE)
    case = await act(client, handler, case, "start")
    case = await act(client, handler, case, "feedback", note="已现场调解，双方签订协议", photos=["p1.jpg"])
    case = await act(client, worker, case, "verify", note="现场核实")
    case = await act(client, officer, case, "close")
    case = await act(client, officer, case, "evaluate", satisfaction=5)
    assert (case["state"], case["version"], case["satisfaction"]) == ("evaluated", 8, 5)

    got = await fetch(client, officer, case["id"])
    assert got["state"] == "evaluated" and got["overdue"] is False
    steps = [(e["action"], e["actor"], e["from_state"], e["to_state"]) for e in got["timeline"]]
    assert steps == [
        ("report", officer.user.username, None, "reported"),
        ("accept", officer.user.username, "reported", "accepted"),
        ("dispatch", officer.user.username, "accepted", "dispatched"),
        ("start", handler.user.username, "dispatched", "in_progress"),
        ("feedback", handler.user.username, "in_progress", "fed_back"),
        ("verify", worker.user.username, "fed_back", "verified"),
        ("close", officer.user.username, "verified", "closed"),
        ("evaluate", officer.user.username, "closed", "evaluated"),
    ]
    assert all(e["at"] for e in got["timeline"])
    assert got["timeline"][4]["data"]["photos"] == ["p1.jpg"]
    assert got["closed_level"] == "township" and got["deadline"] is None


async def test_illegal_transition_is_409_with_explanation(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Closing a case that was only reported answers 409 illegal_transition, explained, with the case."""
    officer = await make_user("duty_officer", TOWN)
    case = await report(client, officer, org_tree)
    error = (await act(client, officer, case, "close", expect=409))["error"]
    assert error["code"] == "illegal_transition" and "待受理" in error["message"]
    assert error["incident"]["state"] == "reported" and error["incident"]["version"] == 1
    resp = await client.post(
        f"/api/v1/incidents/{case['id']}/actions/close",
        json={"version": 1},
        headers={**officer.headers, "Accept-Language": "en"},
    )
    assert resp.status == 409 and "reported" in (await resp.json())["error"]["message"]
    assert (await fetch(client, officer, case["id"]))["version"] == 1


async def test_stale_version_is_409_with_current_case(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """An action based on an old version answers 409 stale_version carrying the current case."""
    officer = await make_user("duty_officer", TOWN)
    case = await report(client, officer, org_tree)
    await act(client, officer, case, "accept")
    error = (await act(client, officer, case, "reject", reason="重复", expect=409))["error"]
    assert error["code"] == "stale_version"
    assert error["incident"]["state"] == "accepted" and error["incident"]["version"] == 2


async def test_two_simultaneous_transitions_one_wins(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Two officers acting on the same version at once: exactly one 200, the other 409 with the new state."""
    first = await make_user("duty_officer", TOWN)
    second = await make_user("duty_officer", COUNTY)
    case = await report(client, first, org_tree)

    async def post(who: Any, action: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        resp = await client.post(
            f"/api/v1/incidents/{case['id']}/actions/{action}",
            json={"version": 1, **body},
            headers=who.headers,
        )
        return resp.status, await resp.json()

    results = await asyncio.gather(post(first, "accept", {}), post(second, "reject", {"reason": "无效"}))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200, 409]
    winner = next(body for status, body in results if status == 200)
    loser = next(body for status, body in results if status == 409)
    assert loser["error"]["code"] == "stale_version"
    assert loser["error"]["incident"]["state"] == winner["state"]
    final = await fetch(client, first, case["id"])
    assert final["version"] == 2 and len(final["timeline"]) == 2


async def test_other_township_gets_404(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """A user of another township cannot read, list or act on the case: 404, as if it did not exist."""
    officer = await make_user("duty_officer", TOWN)
    stranger = await make_user("duty_officer", OTHER_TOWN)
    county = await make_user("leader", COUNTY)
    case = await report(client, officer, org_tree)
    await fetch(client, stranger, case["id"], expect=404)
    await act(client, stranger, case, "accept", expect=404)
    listed = await (await client.get("/api/v1/incidents", headers=stranger.headers)).json()
    assert listed["items"] == []
    resp = await client.get(f"/api/v1/incidents?unit={TOWN}", headers=stranger.headers)
    assert resp.status == 404
    assert (await fetch(client, county, case["id"]))["id"] == case["id"]
    missing = await client.get("/api/v1/incidents/999999", headers=officer.headers)
    assert missing.status == 404


async def test_duplicates_suggested_by_place_and_caller(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """A new case lists as candidates the same category within 100 m and the same caller within 24 h."""
    officer = await make_user("duty_officer", TOWN)
    first = await report(client, officer, org_tree, channel="grid_report")
    other_category = await report(client, officer, org_tree, category="hazard.fire")
    second = await report(client, officer, org_tree, channel="hotline", caller="13800001234")
    assert [d["id"] for d in second["duplicates"]] == [first["id"]]
    assert second["duplicates"][0]["reasons"] == ["nearby_same_category"]
    assert second["duplicates"][0]["distance_m"] == 0
    assert other_category["duplicates"] == []
    caller = await report(
        client, officer, org_tree, grid=OTHER_GRID, category="hazard.fire", caller="+86 138 0000 1234"
    )
    assert [(d["id"], d["reasons"]) for d in caller["duplicates"]] == [(second["id"], ["same_caller"])]


async def test_merge_keeps_audit_and_primary_lists_every_channel(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Merging a duplicate points it to the primary, keeps its own audit, and the primary gains its channel."""
    officer = await make_user("duty_officer", TOWN)
    primary = await report(client, officer, org_tree, channel="grid_report", attachments=["a.jpg"])
    duplicate = await report(client, officer, org_tree, channel="hotline", attachments=["b.jpg"])
    merged = await act(client, officer, duplicate, "merge", merge_into=primary["id"])
    assert merged["state"] == "merged" and merged["merged_into"] == primary["id"]
    assert [e["action"] for e in merged["timeline"]] == ["report", "merge"]
    got = await fetch(client, officer, primary["id"])
    assert got["channels"] == ["grid_report", "hotline"]
    assert got["attachments"] == ["a.jpg", "b.jpg"]
    assert [m["id"] for m in got["merged"]] == [duplicate["id"]]
    assert [e["action"] for e in got["timeline"]] == ["report", "merged_in"]
    assert got["version"] == 2 and got["duplicates"] == []
    third = await report(client, officer, org_tree, channel="walk_in")
    chained = await act(client, officer, third, "merge", merge_into=duplicate["id"])
    assert chained["merged_into"] == primary["id"]
    bad = await act(
        client, officer, await report(client, officer, org_tree), "merge", merge_into=999999, expect=422
    )
    assert bad["error"]["code"] == "invalid"


async def test_joint_handling_waits_for_every_department(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """With a lead and a co-handler, the case is fed back only when both have fed back."""
    officer = await make_user("duty_officer", TOWN)
    justice = await make_user("department_handler", TOWN, department=JUSTICE)
    police = await make_user("department_handler", TOWN, department=POLICE)
    case = await report(client, officer, org_tree)
    case = await act(client, officer, case, "accept")
    case = await act(client, officer, case, "dispatch", department=JUSTICE, co_departments=[POLICE])
    assert [d["code"] for d in case["handling_departments"]] == [JUSTICE, POLICE]
    case = await act(client, police, case, "start")
    case = await act(client, police, case, "feedback", note="已维持现场秩序")
    assert case["state"] == "in_progress" and case["pending_feedback"] == [JUSTICE]
    case = await act(client, justice, case, "feedback", note="已调解")
    assert case["state"] == "fed_back"
    unknown = await act(
        client,
        officer,
        await act(client, officer, await report(client, officer, org_tree), "accept"),
        "dispatch",
        department="NOPE",
        expect=422,
    )
    assert unknown["error"]["code"] == "invalid"


async def test_escalate_moves_owner_up_and_assign_brings_it_down(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Escalation gives the case to the county (org_path follows); the county can assign it back down."""
    officer = await make_user("duty_officer", TOWN)
    county = await make_user("duty_officer", COUNTY)
    case = await report(client, officer, org_tree)
    case = await act(client, officer, case, "escalate", reason="涉及多个乡镇，需县级协调")
    assert case["owner_unit"] == COUNTY and case["org_path"][-1] == COUNTY and case["escalations"] == 1
    seen = await fetch(client, officer, case["id"])  # still in the township's territory: visible
    forbidden = await act(client, officer, seen, "accept", expect=403)
    assert forbidden["error"]["code"] == "forbidden"
    listed = await (await client.get(f"/api/v1/incidents?unit={COUNTY}", headers=county.headers)).json()
    assert [c["id"] for c in listed["items"]] == [case["id"]]
    case = await act(client, county, case, "assign", target_unit=TOWN)
    assert case["owner_unit"] == TOWN and case["org_path"][-1] == TOWN
    assert [e["action"] for e in case["timeline"]] == ["report", "escalate", "assign"]


async def test_list_filters_and_cursor_pagination(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Listing pages through every case once, newest first, and filters by state, category, place and text."""
    officer = await make_user("duty_officer", COUNTY)
    made = [await report(client, officer, org_tree, description=f"第{i}号 纠纷") for i in range(5)]
    fire = await report(
        client,
        officer,
        org_tree,
        grid=OTHER_GRID,
        category="hazard.fire.blocked_access",
        priority="P1",
        description="消防通道被占用",
    )
    await act(client, officer, made[0], "accept")
    ids: list[int] = []
    url = "/api/v1/incidents?limit=2"
    while url:
        page = await (await client.get(url, headers=officer.headers)).json()
        assert len(page["items"]) <= 2
        ids += [c["id"] for c in page["items"]]
        url = f"/api/v1/incidents?limit=2&cursor={page['next_cursor']}" if page["next_cursor"] else ""
    assert ids == sorted([c["id"] for c in made] + [fire["id"]], reverse=True)

    async def listed(query: str) -> list[int]:
        resp = await client.get(f"/api/v1/incidents?{query}", headers=officer.headers)
        assert resp.status == 200, await resp.text()
        return [c["id"] for c in (await resp.json())["items"]]

    assert await listed("state=accepted") == [made[0]["id"]]
    assert await listed("category=hazard.fire") == [fire["id"]]
    assert await listed("priority=P1") == [fire["id"]]
    assert await listed("q=消防通道") == [fire["id"]]
    assert await listed(f"q={made[2]['number']}") == [made[2]["id"]]
    assert await listed(f"unit={OTHER_TOWN}") == [fire["id"]]
    lat, lon = fire["location"]["lat"], fire["location"]["lon"]
    assert await listed(f"bbox={lon - 0.001},{lat - 0.001},{lon + 0.001},{lat + 0.001}") == [fire["id"]]
    assert await listed("overdue=true") == []
    assert await listed("channel=officer&state=reported,accepted") == sorted(
        [c["id"] for c in made] + [fire["id"]], reverse=True
    )


async def test_bad_input_is_400_or_422_per_field(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Malformed JSON is 400, bad fields 422 naming each field, bad cursors 400, unknown actions 404."""
    officer = await make_user("duty_officer", TOWN)
    headers = {**officer.headers, "Content-Type": "application/json"}
    resp = await client.post("/api/v1/incidents", data=b"{not json", headers=headers)
    assert resp.status == 400 and (await resp.json())["error"]["code"] == "invalid_json"
    for body, field in [
        ({"description": "x", "address": "y"}, "category"),
        ({"category": "no.such", "description": "x", "address": "y"}, "category"),
        ({"category": "incident.dispute", "description": "  ", "address": "y"}, "description"),
        ({"category": "incident.dispute", "description": "x"}, "location"),
        ({"category": "incident.dispute", "description": "x", "location": {"lat": 99, "lon": 0}}, "location"),
        ({"category": "incident.dispute", "description": "x", "address": "y", "priority": "P9"}, "priority"),
        ({"category": "incident.dispute", "description": "x", "address": "y", "channel": "fax"}, "channel"),
        (
            {"category": "incident.dispute", "description": "x", "address": "y", "owner_unit": OTHER_TOWN},
            "owner_unit",
        ),
    ]:
        resp = await client.post("/api/v1/incidents", json=body, headers=officer.headers)
        error = (await resp.json())["error"]
        assert resp.status == 422 and field in error["fields"], (body, error)
    case = await report(client, officer, org_tree, address="万松路 1 号")
    resp = await client.post(
        f"/api/v1/incidents/{case['id']}/actions/accept", json={}, headers=officer.headers
    )
    assert resp.status == 422 and "version" in (await resp.json())["error"]["fields"]
    resp = await client.post(
        f"/api/v1/incidents/{case['id']}/actions/fly", json={"version": 1}, headers=officer.headers
    )
    assert resp.status == 404
    assert (await act(client, officer, case, "reject", expect=422))["error"]["code"] == "invalid"
    resp = await client.get("/api/v1/incidents?cursor=!!!", headers=officer.headers)
    assert resp.status == 400
    resp = await client.get("/api/v1/incidents?bbox=1,2,3", headers=officer.headers)
    assert resp.status == 422
    resp = await client.get("/api/v1/incidents?state=lost", headers=officer.headers)
    assert resp.status == 422
    ops = await make_user("ops", TOWN)
    resp = await client.post(
        "/api/v1/incidents",
        json={"category": "incident.dispute", "description": "x", "address": "y"},
        headers=ops.headers,
    )
    assert resp.status == 403


async def test_taxonomy_names_in_both_languages(client: TestClient[Any, Any], make_user: UserFactory) -> None:
    """GET /api/v1/taxonomy lists the categories with code and zh-CN/en names, sub-categories nested."""
    officer = await make_user("duty_officer", TOWN)
    tree = await (await client.get("/api/v1/taxonomy", headers=officer.headers)).json()
    codes = {c["code"] for c in tree}
    assert {"incident.dispute", "hazard.fire", "population.resident"} <= codes
    dispute = next(c for c in tree if c["code"] == "incident.dispute")
    assert dispute["name"] == {"zh-CN": "矛盾纠纷", "en": dispute["name"]["en"]} and dispute["name"]["en"]
    assert dispute["children"] and {"code", "name"} <= set(dispute["children"][0])


async def test_routes_documented_and_transitions_counted(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Every case route is in the OpenAPI document, and each transition is counted in the metrics."""
    doc = await (await client.get("/api/openapi.json")).json()
    for action in (
        "accept",
        "reject",
        "merge",
        "dispatch",
        "start",
        "feedback",
        "verify",
        "reopen",
        "close",
        "evaluate",
        "escalate",
        "assign",
    ):
        assert "post" in doc["paths"][f"/api/v1/incidents/{{id}}/actions/{action}"]
    for path in ("/api/v1/incidents", "/api/v1/incidents/{id}", "/api/v1/stats", "/api/v1/taxonomy"):
        assert path in doc["paths"]
    officer = await make_user("duty_officer", TOWN)
    case = await report(client, officer, org_tree)
    await act(client, officer, case, "accept")
    metrics = client.server.app[CTX].metrics
    assert metrics.transitions.labels("accept")._value.get() == 1
    text = await (await client.get("/metrics")).text()
    assert 'dispatchd_incident_transitions_total{action="accept"} 1.0' in text


async def test_dispatch_defaults_to_the_category_department(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Dispatch without a department goes to the category's department kind nearest the owner; aliases work."""
    officer = await make_user("duty_officer", TOWN)
    case = await act(client, officer, await report(client, officer, org_tree), "accept")
    case = await act(client, officer, case, "dispatch")
    assert case["lead_department"] == JUSTICE  # 矛盾纠纷 → justice → the township's 司法所
    primary = await report(client, officer, org_tree)
    duplicate = await report(client, officer, org_tree)
    merged = await act(client, officer, duplicate, "merge", into=primary["id"])
    assert merged["merged_into"] == primary["id"]


async def test_a_case_says_what_its_viewer_may_do(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """GET a case carries allowed_actions for the caller, as the server decides them: the officer may
    accept, reject, merge, escalate, assign, convene and call out about it (回访); an administrator is
    not offered handling steps; a department of the township may only pass the case up before it handles it, and is
    offered start once it is dispatched to it."""
    officer = await make_user("duty_officer", TOWN)
    admin = await make_user("admin", COUNTY)
    handler = await make_user("department_handler", TOWN, department=JUSTICE)
    case = await report(client, officer, org_tree)
    mine = await fetch(client, officer, case["id"])
    assert set(mine["allowed_actions"]) == {"accept", "reject", "merge", "escalate", "assign", "convene", "call_out"}
    assert "start" not in (await fetch(client, admin, case["id"]))["allowed_actions"]
    assert (await fetch(client, handler, case["id"]))["allowed_actions"] == ["escalate"]
    case = await act(client, officer, case, "accept")
    case = await act(client, officer, case, "dispatch", department=JUSTICE)
    assert "start" in case["allowed_actions"]  # a duty officer may start handling too (the rules say so)
    theirs = await fetch(client, handler, case["id"])
    assert "start" in theirs["allowed_actions"] and "accept" not in theirs["allowed_actions"]
    assert "start" not in (await fetch(client, admin, case["id"]))["allowed_actions"]
