"""The duty officer's journey in Chromium: a proposed plan on the console, started with one key, the
checklist with its timers and the groups shown; the wall lists the running plan."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from dispatchd.domain.orgs import OrgTree
from dispatchd.plans import service
from tests.conftest import COUNTY, UserFactory
from tests.live.helpers import app_of
from tests.plans.helpers import cap_document
from tests.ui.conftest import DESK, WALL, Browsing, create_case, grid_point, screenshot, wait_js

pytestmark = pytest.mark.browser


async def test_officer_confirms_a_proposed_plan_and_sees_the_checklist(
    browsing: Browsing, client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """A wage-claim case proposes the shipped 群体性讨薪 plan; on the console the officer presses Q and
    the plan runs: Ⅳ级, the five steps with time left, the three groups; after a typhoon warning the
board lists both plans and the warning with its acknowledgements, and draws the warning's area."""
    officer = await make_user("duty_officer", COUNTY)
    await make_user("leader", "330381001")
    _grid, _, _ = grid_point(org_tree)
    worker = await make_user("grid_worker", _grid)
    _, lat, lon = grid_point(org_tree)
    case = await create_case(client, officer, lat, lon, category="incident.stability.wage_claim", description="工人聚集讨薪")
    await service.propose_due(app_of(client))
    page, watch = await browsing.open_page(f"/console?case={case['id']}", token=officer.token, viewport=DESK)
    await page.wait_for_selector("#plan-confirm")
    # The proposal waits in the side column too, with a way to open its case.
    await page.wait_for_selector("#plan-list li[data-state='proposed']")
    await page.keyboard.press("q")
    await page.wait_for_selector(".plan-checklist li")
    steps = await page.evaluate("[...document.querySelectorAll('.plan-checklist li')].length")
    assert steps == 5
    assert await wait_js(page, "document.querySelector('.plan-checklist .plan-left')?.textContent.startsWith('剩余')")
    groups = await page.evaluate("[...document.querySelectorAll('.plan-groups li strong')].map(e => e.textContent)")
    assert groups == ["谈判组", "安抚组", "现场对接组"]
    assert await page.text_content(".plan-section .plan-level") == "Ⅳ级（一般）"
    await wait_js(page, "[...document.querySelectorAll('.timeline strong')].some(e => e.textContent.startsWith('启动应急预案'))")
    await page.wait_for_selector("#plan-list li[data-state='active']")
    await screenshot(page, "console-plan")
    r = await client.post(
        "/api/v1/alerts/cap", data=cap_document(org_tree, _grid), headers={**officer.headers, "Content-Type": "application/cap+xml"}
    )
    assert r.status == 202, await r.text()
    wall, wall_watch = await browsing.open_page("/board", token=officer.token, viewport=WALL)
    await wall.wait_for_selector("#plan-list li[data-id]")
    await wait_js(wall, "document.querySelectorAll('.map-area-overlay.map-warning').length === 1")
    worker_notice = next(n for n in (await r.json())["notices"] if n["user_id"] == worker.user.id)
    r = await client.post(f"/api/v1/plan-notices/{worker_notice['id']}/ack", headers=worker.headers)
    assert r.status == 200
    await wait_js(wall, "document.querySelector('#plan-list li:first-child .plan-who')?.textContent === 'grid_worker-330381001001G001-3'")
    await screenshot(wall, "board-plans")
    # The warning (first) with its acknowledgements, and both plans: 群体性讨薪 and 防台防汛 (started by it).
    assert await wall.text_content("#plan-count") == "3"
    first = await wall.text_content("#plan-list li:first-child") or ""
    assert "台风" in first and "已叫应 1/2" in first  # the grid worker answered, the township leader not yet
    section = await service.board_section(app_of(client), app_of(client).orgs.descendants(COUNTY))
    assert {p["plan_code"] for p in section} == {"mass-incident-wage", "typhoon-flood"}
    watch.check()
    wall_watch.check()
