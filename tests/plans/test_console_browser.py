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
from tests.ui.conftest import DESK, WALL, Browsing, create_case, grid_point, screenshot, wait_js

pytestmark = pytest.mark.browser


async def test_officer_confirms_a_proposed_plan_and_sees_the_checklist(
    browsing: Browsing, client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """A wage-claim case proposes the shipped 群体性讨薪 plan; on the console the officer presses Q and
    the plan runs: Ⅳ级, the five steps with time left, the three groups; the board lists it."""
    officer = await make_user("duty_officer", COUNTY)
    await make_user("leader", "330381001")
    _, lat, lon = grid_point(org_tree)
    case = await create_case(client, officer, lat, lon, category="incident.stability.wage_claim", description="工人聚集讨薪")
    await service.propose_due(app_of(client))
    page, watch = await browsing.open_page(f"/console?case={case['id']}", token=officer.token, viewport=DESK)
    await page.wait_for_selector("#plan-confirm")
    await page.keyboard.press("q")
    await page.wait_for_selector(".plan-checklist li")
    steps = await page.evaluate("[...document.querySelectorAll('.plan-checklist li')].length")
    assert steps == 5
    assert await wait_js(page, "document.querySelector('.plan-checklist .plan-left')?.textContent.startsWith('剩余')")
    groups = await page.evaluate("[...document.querySelectorAll('.plan-groups li strong')].map(e => e.textContent)")
    assert groups == ["谈判组", "安抚组", "现场对接组"]
    assert await page.text_content(".plan-section .plan-level") == "Ⅳ级（一般）"
    await wait_js(page, "[...document.querySelectorAll('.timeline strong')].some(e => e.textContent.startsWith('启动应急预案'))")
    await screenshot(page, "console-plan")
    wall, wall_watch = await browsing.open_page("/board", token=officer.token, viewport=WALL)
    await wall.wait_for_selector("#plan-list li[data-id]")
    assert "群体性讨薪" in (await wall.text_content("#plan-list") or "")
    watch.check()
    wall_watch.check()
