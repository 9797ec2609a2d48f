"""The command chain over HTTP, at the seams between people: orders belong to their case, a squad
sees only its own orders and finishes on the phone, departments sign, return and ask for time, the
command centre urges, supervises and calls back, and invited units reach their meeting."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from dispatchd.domain.orgs import OrgTree
from tests.conftest import COUNTY, UserFactory
from tests.incidents.helpers import JUSTICE, POLICE, act, fetch
from tests.live.helpers import GRID, TOWN, make_case, make_squad, order

OTHER_TOWN = "330381002"


async def _orders_of(client: TestClient[Any, Any], who: Any, **query: Any) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/orders", params={k: str(v).lower() for k, v in query.items()}, headers=who.headers)
    assert r.status == 200, await r.text()
    found: list[dict[str, Any]] = (await r.json())["orders"]
    return found


async def test_a_squad_member_sees_only_the_orders_of_their_own_units(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """GET /orders?open=true as a squad member lists the orders of their units only, not those of
    another squad of the same area; the officer sees both, named by the unit."""
    officer = await make_user("duty_officer", COUNTY)
    ours, (member,) = await make_squad(client, officer, make_user, name="马屿应急中队一组")
    theirs, _ = await make_squad(client, officer, make_user, name="安阳应急中队指挥车", kind="vehicle")
    case = await make_case(client, officer, org_tree)
    mine = await order(client, officer, case["id"], ours["id"])
    await order(client, officer, case["id"], theirs["id"])
    seen = await _orders_of(client, member, open=True)
    assert [o["id"] for o in seen] == [mine["id"]]
    assert {o["unit_name"] for o in await _orders_of(client, officer, open=True)} == {
        "马屿应急中队一组",
        "安阳应急中队指挥车",
    }


async def test_ending_a_case_cancels_its_open_orders_and_frees_their_units(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Rejecting, merging or closing a case leaves no order of it pending or accepted, resolves their
    alerts and puts their units back to available; the order's timeline says why."""
    officer = await make_user("duty_officer", COUNTY)
    unit, _ = await make_squad(client, officer, make_user)
    for how in ("reject", "merge"):
        case = await make_case(client, officer, org_tree)
        sent = await order(client, officer, case["id"], unit["id"])
        if how == "reject":
            await act(client, officer, case, "reject", reason="重复上报")
        else:
            primary = await make_case(client, officer, org_tree)
            await act(client, officer, case, "merge", merge_into=primary["id"])
        left = await _orders_of(client, officer, incident_id=case["id"])
        assert [o["state"] for o in left] == ["cancelled"], how
        r = await client.get(f"/api/v1/orders/{sent['id']}", headers=officer.headers)
        assert (await r.json())["timeline"][-1]["data"]["reason"] == "case_ended"
        r = await client.get(f"/api/v1/units/{unit['id']}", headers=officer.headers)
        assert (await r.json())["status"] == "available", how


async def test_the_squad_finishes_on_the_phone_and_that_is_the_cases_feedback(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """The squad accepts, goes, arrives and reports handled with a note: the order completes, and
    since the squad handles the case the case is fed back; the case's timeline shows each step of
    the order with the unit's name."""
    officer = await make_user("duty_officer", TOWN)
    unit, (member,) = await make_squad(client, officer, make_user, name="马屿应急中队一组")
    case = await make_case(client, officer, org_tree)
    case = await act(client, officer, case, "accept")
    case = await act(client, officer, case, "dispatch", department=POLICE, squad_unit=unit["id"])
    sent = await order(client, officer, case["id"], unit["id"])
    r = await client.post(f"/api/v1/orders/{sent['id']}/accept", headers=member.headers)
    assert r.status == 200
    for status in ("en_route", "on_scene"):
        r = await client.post(f"/api/v1/units/{unit['id']}/status", json={"status": status}, headers=member.headers)
        assert r.status == 200, await r.text()
    r = await client.post(f"/api/v1/orders/{sent['id']}/handled", json={"note": ""}, headers=member.headers)
    assert r.status == 422
    r = await client.post(
        f"/api/v1/orders/{sent['id']}/handled", json={"note": "已现场调解，双方和解"}, headers=member.headers
    )
    done = await r.json()
    assert r.status == 200, done
    assert (done["state"], done["progress"], done["handled_note"]) == ("completed", "handled", "已现场调解，双方和解")
    after = await fetch(client, officer, case["id"])
    assert after["state"] == "fed_back"
    steps = [e["action"] for e in after["timeline"] if e.get("source") == "order"]
    assert steps[:1] == ["order.created"] and {"order.accepted", "order.en_route", "order.on_scene", "order.handled"} <= set(steps)
    named = next(e for e in after["timeline"] if e["action"] == "order.on_scene")
    assert "马屿应急中队一组" in named["action_name"]["zh-CN"]


async def test_a_department_signs_asks_for_time_is_granted_it_and_feeds_back(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """签收 starts the handling clock; 延期 asked and granted moves the deadline by the hours asked
    and the timeline says who decided; the department then feeds back. Its queue lists the case."""
    officer = await make_user("duty_officer", TOWN)
    handler = await make_user("department_handler", TOWN, department=JUSTICE)
    case = await make_case(client, officer, org_tree)
    case = await act(client, officer, case, "accept")
    case = await act(client, officer, case, "dispatch", department=JUSTICE)
    r = await client.get("/api/v1/incidents", params={"department": JUSTICE}, headers=handler.headers)
    assert [c["id"] for c in (await r.json())["items"]] == [case["id"]]
    mine = await fetch(client, handler, case["id"])
    assert {"sign", "return", "extend_request"} <= set(mine["allowed_actions"])
    case = await act(client, handler, mine, "sign")
    assert case["deadline"]["step"] == "feedback" and [d["code"] for d in case["signed"]] == [JUSTICE]
    due = case["deadline"]["due_at"]
    case = await act(client, handler, case, "extend_request", hours=24, reason="需等待鉴定结果")
    assert case["extension"]["hours"] == 24 and "extend_decide" in (await fetch(client, officer, case["id"]))["allowed_actions"]
    case = await act(client, officer, case, "extend_decide", grant=True)
    assert case["extension"] is None and case["extensions"] == 1 and case["deadline"]["due_at"] > due
    decided = [e for e in case["timeline"] if e["action"] == "extend_decide"][-1]
    assert decided["actor"] == officer.user.username and decided["data"]["granted"] is True
    case = await act(client, handler, case, "start")
    case = await act(client, handler, case, "feedback", note="已调解")
    assert case["state"] == "fed_back"


async def test_a_department_returns_a_case_and_it_is_dispatched_again(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """退单 with a reason hands the case back to the dispatching unit (accepted again), which
    dispatches it elsewhere; the returning department may not act on it any more."""
    officer = await make_user("duty_officer", TOWN)
    police = await make_user("department_handler", TOWN, department=POLICE)
    justice = await make_user("department_handler", TOWN, department=JUSTICE)
    case = await make_case(client, officer, org_tree)
    case = await act(client, officer, case, "accept")
    case = await act(client, officer, case, "dispatch", department=POLICE)
    await act(client, police, case, "return", expect=422)  # a reason is required
    case = await act(client, police, case, "return", reason="属于民事纠纷，应由司法所调解")
    assert (case["state"], case["returns"], case["lead_department"]) == ("accepted", 1, None)
    case = await act(client, officer, case, "dispatch", department=JUSTICE)
    assert "start" in (await fetch(client, justice, case["id"]))["allowed_actions"]
    assert (await fetch(client, police, case["id"]))["allowed_actions"] == ["escalate"]


async def test_urging_supervising_and_the_callback(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """An officer urges and a leader supervises a case in hand (counted in the statistics per
    department); after it is closed the duty desk records the callback, and an unsatisfied reporter
    sends it back to its department (发回重办)."""
    officer = await make_user("duty_officer", TOWN)
    leader = await make_user("leader", COUNTY)
    handler = await make_user("department_handler", TOWN, department=JUSTICE)
    worker = await make_user("grid_worker", GRID)
    case = await make_case(client, officer, org_tree)
    case = await act(client, officer, case, "accept")
    case = await act(client, officer, case, "dispatch", department=JUSTICE)
    case = await act(client, officer, case, "urge", note="请尽快处置")
    case = await act(client, leader, case, "supervise")
    assert (case["urged"], case["supervised"]) == (1, True)
    case = await act(client, handler, case, "start")
    case = await act(client, handler, case, "feedback", note="已调解")
    case = await act(client, worker, case, "verify")
    case = await act(client, officer, case, "close")
    assert "callback" in case["allowed_actions"]
    case = await act(client, officer, case, "callback", reached=False)
    assert case["state"] == "closed" and case["callback"]["attempts"] == 1
    case = await act(client, officer, case, "callback", reached=True, satisfaction=2, reopen=True)
    assert case["state"] == "dispatched" and case["satisfaction"] == 2
    r = await client.get("/api/v1/stats", params={"org": TOWN}, headers=officer.headers)
    stats = await r.json()
    dept = next(d for d in stats["by_department"] if d["code"] == JUSTICE)
    assert (dept["urged"], dept["supervised"], stats["called_back"]) == (1, 1, 1)


async def test_invited_units_find_their_meeting_and_get_their_own_link(
    client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """A running meeting is listed for an officer of an invited township, who gets their own join
    link; an officer of a township not invited gets 404 and does not see it."""
    convener = await make_user("duty_officer", COUNTY)
    invited = await make_user("duty_officer", TOWN)
    stranger = await make_user("duty_officer", OTHER_TOWN)
    r = await client.post(
        "/api/v1/meetings", json={"title": "安阳劳资纠纷会商", "invite": [TOWN]}, headers=convener.headers
    )
    assert r.status == 201, await r.text()
    meeting = await r.json()
    r = await client.get("/api/v1/meetings", params={"status": "running"}, headers=invited.headers)
    assert [m["id"] for m in (await r.json())["meetings"]] == [meeting["id"]]
    r = await client.post(f"/api/v1/meetings/{meeting['id']}/join", headers=invited.headers)
    link = await r.json()
    assert r.status == 200 and f"/meet/{meeting['id']}?t=" in link["url"]
    assert link["role"] == "participant" and link["unit"]["code"] == TOWN
    r = await client.post(f"/api/v1/meetings/{meeting['id']}/join", headers=stranger.headers)
    assert r.status == 404
    r = await client.get("/api/v1/meetings", params={"status": "running"}, headers=stranger.headers)
    assert (await r.json())["meetings"] == []
    r = await client.post(f"/api/v1/meetings/{meeting['id']}/join", headers=convener.headers)
    assert (await r.json())["role"] == "chair"
