"""A notice to a squad member reaches their phone over /ws/squad (a real websocket on loopback),
as well as their console's feed; acknowledging it from the phone closes it (API and Chromium)."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from dispatchd.domain.orgs import OrgTree
from tests.conftest import Account, AppFactory, UserFactory
from tests.live.helpers import make_case, make_squad
from tests.plans.helpers import COUNTY, GRID, TOWN, plan_body
from tests.ui.conftest import PHONE, Browsing


async def _squad_member_in_a_plan(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> tuple[Account, Account, dict[str, Any], dict[str, Any]]:
    """A squad member named by login in the test plan's notices, and a case the plan may run on:
    (officer, member, plan, case)."""
    officer = await make_user("duty_officer", COUNTY)
    admin = await make_user("admin", COUNTY)
    _, members = await make_squad(client, officer, make_user, org=TOWN, name="机动队")
    member = members[0]
    body = plan_body()
    body["levels"]["IV"]["notices"].append({"user": member.user.username, "via": ["console"], "text": "机动队立即集结"})
    r = await client.post("/api/v1/plans", json=body, headers=admin.headers)
    plan: dict[str, Any] = await r.json()
    assert r.status == 201, plan
    case = await make_case(client, officer, org_tree, grid=GRID, category="incident.stability.wage_claim")
    return officer, member, plan, case


async def test_a_squad_member_named_in_a_notice_gets_it_on_the_phone(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """The plan names a squad member by login: after activation the phone's socket carries a
    ``notice`` message with the text; the member acknowledges it and the plan shows acknowledged."""
    client = await make_client(plans_propose_interval=3600, plans_timer_interval=3600)
    officer, member, plan, case = await _squad_member_in_a_plan(client, make_user, org_tree)
    async with client.ws_connect(f"/ws/squad?token={member.token}") as ws:
        hello = await ws.receive_json(timeout=10)
        assert hello["type"] == "hello"
        r = await client.post(f"/api/v1/incidents/{case['id']}/plan", json={"plan": plan["id"]}, headers=officer.headers)
        assert r.status == 201, await r.text()
        notice: dict[str, Any] | None = None
        for _ in range(20):
            msg = await ws.receive_json(timeout=10)
            if msg["type"] == "notice":
                notice = msg["notice"]
                break
        assert notice is not None and notice["text"].startswith("机动队立即集结") and notice["user_id"] == member.user.id
    r = await client.post(f"/api/v1/plan-notices/{notice['id']}/ack", headers=member.headers)
    assert r.status == 200 and (await r.json())["state"] == "acknowledged"
    act = await (await client.get(f"/api/v1/incidents/{case['id']}", headers=officer.headers)).json()
    mine = next(n for n in act["plan"]["notices"] if n["user_id"] == member.user.id)
    assert mine["state"] == "acknowledged" and mine["acknowledged_at"]


@pytest.mark.browser
async def test_the_squad_phone_shows_the_notice_and_one_tap_acknowledges_it(
    browsing: Browsing, client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """On the squad member's phone (Chromium, phone screen) a plan's notice appears as a card with
    its text while the page is open; one tap on 确认收到 acknowledges it (叫应), the card goes, and the
    plan on the console shows the notice acknowledged by that member."""
    officer, member, plan, case = await _squad_member_in_a_plan(client, make_user, org_tree)
    page, watch = await browsing.open_page(
        "/squad", token=member.token, user=member.user.as_json(), viewport=PHONE, mobile=True, scale=2
    )
    await page.wait_for_selector('.live[data-status="live"]')
    r = await client.post(f"/api/v1/incidents/{case['id']}/plan", json={"plan": plan["id"]}, headers=officer.headers)
    assert r.status == 201, await r.text()
    card = await page.wait_for_selector("#notices .notice-card")
    assert "机动队立即集结" in await card.inner_text()
    await page.click("#notices .notice-card button.ack")
    await page.wait_for_selector("#notices .notice-card", state="detached")
    act = await (await client.get(f"/api/v1/incidents/{case['id']}", headers=officer.headers)).json()
    mine = next(n for n in act["plan"]["notices"] if n["user_id"] == member.user.id)
    assert mine["state"] == "acknowledged" and mine["acknowledged_by"] == member.user.id
    watch.check()
