"""The admin's screen (/admin) in a real browser: plans read as people read them, edited as JSON with
the server's objections shown field by field, each save a new version; contacts found by name, a
mobile and a deputy set, a deputy changed without retyping the mobile; nobody else gets the screen."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from dispatchd.domain.orgs import DEPARTMENT_KINDS
from dispatchd.domain.units import UNIT_KINDS
from tests.conftest import COUNTY, ROOT, UserFactory
from tests.ui.conftest import DESK, TOWNSHIP, Browsing, screenshot, wait_js

pytestmark = pytest.mark.browser


async def test_admin_reads_edits_and_versions_a_plan(
    browsing: Browsing, client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """The county admin sees the shipped plans by name, opens one (levels, groups, units by name),
    is told where a JSON is broken and which field the server refuses, and a good edit becomes the
    next version, edited online."""
    admin = await make_user("admin", COUNTY)
    page, watch = await browsing.open_page("/admin", token=admin.token, viewport=DESK)
    watch.expect("status of 422")  # the refused edit, on purpose
    row = page.locator(".plan-row[data-code='mass-incident-wage']")
    await row.wait_for()
    assert "群体性讨薪事件应急联动预案" in await row.inner_text()
    assert "瑞安" in await row.inner_text()  # the unit by name, not 330381
    await row.click()
    detail = page.locator("#plan-detail")
    await detail.locator(".plan-tier[data-lv='IV']").wait_for()
    text = await detail.inner_text()
    assert "谈判组" in text and "乡镇（街道）" in text and "Ⅳ级（一般）" in text
    await screenshot(page, "admin-plan")

    await page.click("#plan-edit")
    body = json.loads(await page.input_value("#plan-json"))
    await page.click("#code-ref details:first-of-type summary")
    assert "incident.stability.wage_claim" in await page.inner_text("#code-ref")  # codes beside their names
    await screenshot(page, "admin-plan-editor")
    assert body["code"] == "mass-incident-wage" and "version" not in body and "id" not in body
    await page.fill("#plan-json", "{ not json")
    await page.click("#plan-save")
    await page.wait_for_selector("#plan-errors:not([hidden])")
    assert "JSON" in await page.inner_text("#plan-errors")

    bad = json.loads(json.dumps(body))
    bad["levels"]["IV"]["forces"][0]["kind"] = "tank"
    await page.fill("#plan-json", json.dumps(bad, ensure_ascii=False))
    await page.click("#plan-save")
    await wait_js(page, "document.querySelector('#plan-errors')?.textContent.includes('forces')")

    body["name"] = "群体性讨薪事件应急联动预案（修订）"
    await page.fill("#plan-json", json.dumps(body, ensure_ascii=False))
    await page.click("#plan-save")
    await wait_js(page, "document.querySelector('#plan-detail .panel-head')?.textContent.includes('修订')")
    assert "v2" in await page.inner_text("#plan-detail .panel-head")
    row_text = await page.inner_text(".plan-row[data-code='mass-incident-wage']")
    assert "v2" in row_text and "在线编辑" in row_text
    r = await client.get("/api/v1/plans", headers=admin.headers)
    plan = next(p for p in (await r.json())["plans"] if p["code"] == "mass-incident-wage")
    assert plan["version"] == 2 and plan["source"] == "api" and plan["name"].endswith("（修订）")
    watch.check()


async def test_admin_sets_a_mobile_and_a_deputy_and_changes_the_deputy_alone(
    browsing: Browsing, client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """A township admin finds the township head by name, records a mobile and a deputy (the number is
    shown masked), then removes the deputy without retyping the number: the number stays."""
    admin = await make_user("admin", TOWNSHIP)
    head = await make_user("leader", TOWNSHIP, username="陈镇长")
    await make_user("duty_officer", TOWNSHIP, username="周值班")
    page, watch = await browsing.open_page("/admin", token=admin.token, viewport=DESK)
    await page.wait_for_selector(".topbar .who")  # the page has started
    await page.click("#tab-contacts")
    await page.fill("#contact-q", "镇长")
    row = page.locator(f".contact-row[data-user='{head.user.id}']")
    await row.wait_for()
    await wait_js(page, "document.querySelectorAll('.contact-row').length === 1")
    await page.fill("#contact-q", "")
    await wait_js(page, "document.querySelectorAll('.contact-row').length === 3")
    await page.fill("#contact-q", "镇长")  # the page lists the head alone; the deputy is found anyway
    await wait_js(page, "document.querySelectorAll('.contact-row').length === 1")
    await row.locator(".contact-edit").click()
    await page.fill(".contact-mobile", "13800138000")
    await page.fill(".contact-deputy-q", "周")
    await wait_js(page, "[...document.querySelectorAll('.contact-deputy option')].some((o) => o.textContent.startsWith('周值班'))")
    options = await page.locator(".contact-deputy option").all_inner_texts()
    deputy = next(o for o in options if o.startswith("周值班"))
    await page.select_option(".contact-deputy", label=deputy)
    await page.click(".contact-save")
    await wait_js(page, f"document.querySelector(\".contact-row[data-user='{head.user.id}'] .mobile\")?.textContent === '138****8000'")
    assert await row.locator(".deputy").inner_text() == "周值班"
    await screenshot(page, "admin-contacts")

    await row.locator(".contact-edit").click()
    await page.select_option(".contact-deputy", value="")
    await page.click(".contact-save")
    await wait_js(page, f"document.querySelector(\".contact-row[data-user='{head.user.id}'] .deputy\")?.textContent === '未登记'")
    assert await row.locator(".mobile").inner_text() == "138****8000"
    r = await client.get("/api/v1/plan-contacts", params={"q": "陈镇长"}, headers=admin.headers)
    saved = (await r.json())["contacts"][0]
    assert saved["mobile"] == "138****8000" and saved["deputy_user_id"] is None
    watch.check()


async def test_the_admin_screen_is_for_admins_only(browsing: Browsing, make_user: UserFactory) -> None:
    """A duty officer opening /admin is told it is not their screen and offered the console; the
    start page shows the admin the administration card."""
    officer = await make_user("duty_officer", COUNTY)
    page, watch = await browsing.open_page("/admin", token=officer.token, viewport=DESK)
    await page.wait_for_selector(".wrong-role a[href='/console']")
    watch.check()
    admin = await make_user("admin", COUNTY)
    page, watch = await browsing.open_page("/", token=admin.token, viewport=DESK)
    await page.wait_for_selector(".screen-card[href='/admin']")
    assert "系统管理" in await page.inner_text(".topbar nav")
    watch.check()


def test_the_admin_screens_code_lists_are_the_servers() -> None:
    """The department and squad kinds the plan editor's code reference lists are exactly the server's
    (a kind added on one side and not the other fails here)."""
    text = (ROOT / "webui" / "js" / "pages" / "admin.js").read_text(encoding="utf-8")
    departments = re.search(r"const DEPARTMENT_KINDS = \[(.*?)\];", text, re.S)
    kinds = re.search(r'\["team", "vehicle"[^\]]*\]', text)
    assert departments is not None and kinds is not None
    assert re.findall(r'"([a-z_]+)"', departments.group(1)) == list(DEPARTMENT_KINDS)
    assert set(re.findall(r'"([a-z_]+)"', kinds.group(0))) == set(UNIT_KINDS)
