"""The command chain in the browser, each person on their own screen: the grid worker's phone, the
duty console, the squad's phone and a department's console. The steps of the chain are taken by
clicks and keys only; the API is read to check what the screens say, and set up what comes before
the journey (accounts, squads, a case already dispatched where the journey starts later)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, Page

from dispatchd.clock import FakeClock
from dispatchd.domain.orgs import OrgTree
from tests.conftest import COUNTY, Account, AppFactory, UserFactory
from tests.incidents.helpers import JUSTICE, POLICE, act
from tests.live.helpers import make_squad
from tests.ui.conftest import (
    DESK,
    PHONE,
    TOWNSHIP,
    Browsing,
    create_case,
    eventually,
    grid_point,
    screenshot,
    wait_js,
)
from tests.ui.test_flows import JPEG

pytestmark = pytest.mark.browser


async def _state_is(page: Page, name: str) -> None:
    await wait_js(page, f"document.querySelector('.d-head .state')?.textContent === {name!r}", within=15)


async def _submit_dialog(page: Page) -> None:
    await page.click(".dialog button[type='submit']")
    await page.wait_for_selector(".dialog[open]", state="detached")


async def _orders(client: TestClient[Any, Any], who: Account, case_id: int) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/orders", params={"incident_id": str(case_id)}, headers=who.headers)
    assert r.status == 200, await r.text()
    found: list[dict[str, Any]] = (await r.json())["orders"]
    return found


async def test_from_a_grid_report_to_the_callback_each_on_their_own_screen(
    browsing: Browsing, client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """A grid worker reports on the phone; the officer accepts and dispatches from the console to
    the squad it proposes (the dialog says the deadline); the squad's phone accepts, arrives and
    reports handled with a photo, which is the case's feedback; the grid worker verifies; the
    officer closes it and records the callback from the 待回访 tab. The console names the squad and
    its progress; at the end no order is open and no alert waits."""
    grid_code, lat, lon = grid_point(org_tree)
    worker = await make_user("grid_worker", grid_code)
    officer = await make_user("duty_officer", COUNTY)
    unit, (member,) = await make_squad(client, officer, make_user, org=TOWNSHIP, name="安阳应急中队一组")

    # The squad's phone is on and shares its position, so the console proposes it.
    squad, squad_watch = await browsing.open_page(
        "/squad",
        token=member.token,
        viewport=PHONE,
        mobile=True,
        permissions=("geolocation",),
        geolocation={"latitude": lat + 0.001, "longitude": lon},
    )
    await squad.wait_for_selector(".live[data-status='live']")
    await squad.click("label.switch:has(#share)")
    await wait_js(squad, "document.querySelector('#share').checked")

    async def proposed() -> bool:
        r = await client.get(f"/api/v1/units/nearest?lat={lat}&lon={lon}", headers=officer.headers)
        body = await r.json()
        units = body if isinstance(body, list) else body.get("units") or body.get("items") or []
        return bool(units) and units[0]["id"] == unit["id"]

    await eventually(proposed, what="the squad's phone placed it nearest")

    # 1. The grid worker reports.
    grid, grid_watch = await browsing.open_page(
        "/grid",
        token=worker.token,
        viewport=PHONE,
        mobile=True,
        permissions=("geolocation",),
        geolocation={"latitude": lat, "longitude": lon},
    )
    await grid.wait_for_selector("#category option[value='incident.dispute']", state="attached")
    await grid.select_option("#category", "incident.dispute")
    await grid.fill("#description", "两户村民因宅基地界址发生争执，有推搡")
    await grid.click("#locate")
    await wait_js(grid, "window.dispatchdGrid.S.point !== null")
    assert await grid.inner_text("#submit-report") == "提交"
    await grid.click("#submit-report")
    await grid.wait_for_selector("#tab-mine:not([hidden]) #mine li[data-number]")
    number = await grid.get_attribute("#mine li[data-number]", "data-number")
    r = await client.get("/api/v1/reports", headers=worker.headers)
    case_id = next(c["id"] for c in (await r.json())["items"] if c["number"] == number)

    # 2. The officer accepts and dispatches to the proposed squad; the dialog says the deadline.
    console, console_watch = await browsing.open_page(f"/console?case={case_id}", token=officer.token, viewport=DESK)
    await console.wait_for_selector(".d-actions [data-action='accept']")
    await console.keyboard.press("a")
    await _state_is(console, "已立案")
    await console.keyboard.press("d")
    await console.wait_for_selector(f".dialog input[name='squad'][value='{unit['id']}']:checked")
    deadline = await console.inner_text(".dialog .dispatch-deadline")
    assert "签收" in deadline and "反馈" in deadline
    await screenshot(console, "chain-dispatch")
    await _submit_dialog(console)
    await _state_is(console, "已派遣")
    assert "安阳应急中队一组" in await console.inner_text(".d-info")

    # 3. The squad's phone rings; it accepts, arrives and reports handled with a photo.
    await squad.wait_for_selector("#order:not([hidden]) #accept")
    assert number in await squad.inner_text("#order")
    await squad.click("#accept")
    await wait_js(squad, "document.querySelector('#order-state')?.textContent.startsWith('已接受')")
    await squad.click("#on-scene")
    await console.wait_for_selector(".order-row:has-text('已到场')", timeout=15000)
    await squad.click("#handled")
    await squad.fill("#handled-note", "已到场调解，双方达成协议，界桩重新确认")
    await squad.set_input_files("#handled-photos", files=[{"name": "site.jpg", "mimeType": "image/jpeg", "buffer": JPEG}])
    await screenshot(squad, "chain-squad-handled")
    await squad.click(".handled-form button[type='submit']")
    await squad.wait_for_selector("#order", state="hidden")
    await _state_is(console, "已反馈")
    timeline = await console.inner_text(".timeline")
    assert "队伍到达现场（安阳应急中队一组）" in timeline and "已到场调解" in timeline

    # 4. The grid worker checks on site and verifies.
    await grid.click(".tabsbar [data-tab='tasks']")
    card = f".task-card[data-id='{case_id}']"
    await grid.wait_for_selector(card)
    assert "已到场调解" in await grid.inner_text(card)
    await grid.fill(f"{card} textarea", "现场核实，纠纷已化解")
    await grid.click(f"{card} .btn-ok")
    await grid.wait_for_selector(card, state="detached")
    await _state_is(console, "已核查")

    # 5. The officer closes it, then calls the reporter back from the 待回访 tab.
    await console.keyboard.press("c")
    await _submit_dialog(console)
    await _state_is(console, "已办结")
    await console.click("#state-tabs [data-tab='callback']")
    await console.click(f".case-item[data-id='{case_id}']")
    await console.wait_for_selector(".d-actions [data-action='callback']")
    await console.keyboard.press("b")
    await console.wait_for_selector(".dialog .stars")
    await screenshot(console, "chain-callback")
    await _submit_dialog(console)
    await _state_is(console, "已评价")

    r = await client.get(f"/api/v1/incidents/{case_id}", headers=officer.headers)
    case = await r.json()
    assert (case["satisfaction"], case["callback"]["reached"]) == (5, True)
    assert not [o for o in await _orders(client, officer, case_id) if o["state"] in ("pending", "delivered", "accepted")]
    r = await client.get("/api/v1/alerts", headers=officer.headers)
    assert [a for a in (await r.json())["alerts"] if a.get("incident_id") == case_id] == []
    for w in (squad_watch, grid_watch, console_watch):
        w.check()


async def test_a_department_signs_asks_for_time_is_granted_it_and_is_urged_on_its_console(
    browsing: Browsing, client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """A department handler's console opens on its own queue (本部门) with no error; it signs for
    the case and asks for 24 more hours; the officer's console shows the request and grants it; the
    handler sees the grant and, urged by the officer, a toast at once; it feeds back."""
    officer = await make_user("duty_officer", TOWNSHIP)
    handler = await make_user("department_handler", TOWNSHIP, department=JUSTICE)
    _, lat, lon = grid_point(org_tree)
    case = await create_case(client, officer, lat, lon, category="incident.dispute", priority="P3")
    case = await act(client, officer, case, "accept")
    case = await act(client, officer, case, "dispatch", department=JUSTICE)

    desk, desk_watch = await browsing.open_page("/console", token=handler.token, viewport=DESK)
    await desk.wait_for_selector("#state-tabs [data-tab='department'][aria-selected='true']")
    assert await desk.is_hidden("#calls-panel")
    await desk.click(f".case-item[data-id='{case['id']}']")
    await desk.wait_for_selector(".d-actions [data-action='sign']")
    await desk.keyboard.press("i")
    await wait_js(desk, "document.querySelector('.d-info')?.textContent.includes('已签收')")
    due = (await (await client.get(f"/api/v1/incidents/{case['id']}", headers=officer.headers)).json())["deadline"]["due_at"]
    await desk.keyboard.press("x")
    await desk.fill(".dialog input[name='hours']", "24")
    await desk.fill(".dialog textarea[name='reason']", "需等待土地部门的测绘结果")
    await _submit_dialog(desk)
    await desk.wait_for_selector(".d-head .tag-control:has-text('延期待批')")

    officer_page, officer_watch = await browsing.open_page(f"/console?case={case['id']}", token=officer.token, viewport=DESK)
    await officer_page.wait_for_selector(".d-actions [data-action='extend_decide']")
    assert "24" in await officer_page.inner_text(".d-info")
    await officer_page.keyboard.press("y")
    assert "需等待土地部门的测绘结果" in await officer_page.inner_text(".dialog")
    await _submit_dialog(officer_page)
    await wait_js(desk, "document.querySelector('.timeline')?.textContent.includes('同意延期 24 小时')", within=15)
    after = (await (await client.get(f"/api/v1/incidents/{case['id']}", headers=officer.headers)).json())["deadline"]["due_at"]
    assert after > due

    await officer_page.keyboard.press("u")
    await officer_page.fill(".dialog textarea[name='note']", "群众多次来电，请加快")
    await _submit_dialog(officer_page)
    await desk.wait_for_selector(".toast:has-text('被催办')", timeout=15000)
    await screenshot(desk, "chain-department-urged")

    await desk.wait_for_selector(".d-actions [data-action='start']")
    await desk.keyboard.press("s")
    await _state_is(desk, "处置中")
    await desk.keyboard.press("f")
    await desk.fill(".dialog textarea[name='note']", "已组织双方调解，达成协议")
    await _submit_dialog(desk)
    await _state_is(desk, "已反馈")
    desk_watch.check()
    officer_watch.check()


async def test_a_department_returns_a_case_and_the_officer_dispatches_it_again(
    browsing: Browsing, client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """The police station returns (退单) a case that is not its own, with a reason; it leaves the
    station's queue and the officer's console shows it back to dispatch, with the reason in the
    timeline; the officer dispatches it to the justice office."""
    officer = await make_user("duty_officer", TOWNSHIP)
    police = await make_user("department_handler", TOWNSHIP, department=POLICE)
    _, lat, lon = grid_point(org_tree)
    case = await create_case(client, officer, lat, lon, category="incident.dispute", priority="P3")
    case = await act(client, officer, case, "accept")
    case = await act(client, officer, case, "dispatch", department=POLICE)

    station, station_watch = await browsing.open_page(f"/console?case={case['id']}", token=police.token, viewport=DESK)
    await station.wait_for_selector(".d-actions [data-action='return']")
    await station.keyboard.press("t")
    await station.fill(".dialog textarea[name='reason']", "属于民事纠纷，应由司法所调解")
    await _submit_dialog(station)
    await _state_is(station, "已立案")
    await station.wait_for_selector(f".case-item[data-id='{case['id']}']", state="detached")

    desk, desk_watch = await browsing.open_page(f"/console?case={case['id']}", token=officer.token, viewport=DESK)
    await desk.wait_for_selector(".d-actions [data-action='dispatch']")
    assert "属于民事纠纷，应由司法所调解" in await desk.inner_text(".timeline")
    assert "1 次" in await desk.inner_text(".d-info")
    await desk.keyboard.press("d")
    await desk.select_option(".dialog select[name='department']", JUSTICE)
    await _submit_dialog(desk)
    await _state_is(desk, "已派遣")
    r = await client.get(f"/api/v1/incidents/{case['id']}", headers=officer.headers)
    assert (await r.json())["lead_department"] == JUSTICE
    station_watch.check()
    desk_watch.check()


async def test_an_invited_officer_joins_a_running_meeting_from_the_console_in_one_click(
    browsing: Browsing, client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """The county convenes a meeting inviting the township: the township officer's open console
    shows it at once with a toast, and one click on Join opens the meeting page with the officer's
    own link. An officer of a township not invited sees nothing."""
    convener = await make_user("duty_officer", COUNTY)
    invited = await make_user("duty_officer", TOWNSHIP)
    stranger = await make_user("duty_officer", "330381002")
    desk, watch = await browsing.open_page("/console", token=invited.token, viewport=DESK)
    other, other_watch = await browsing.open_page("/console", token=stranger.token, viewport=DESK)
    for page in (desk, other):
        await page.wait_for_selector(".live[data-status='live']")
    r = await client.post(
        "/api/v1/meetings", json={"title": "安阳劳资纠纷会商", "invite": [TOWNSHIP]}, headers=convener.headers
    )
    assert r.status == 201, await r.text()
    meeting = await r.json()
    await desk.wait_for_selector(f"#meeting-list li[data-id='{meeting['id']}']")
    await desk.wait_for_selector(".toast:has-text('安阳劳资纠纷会商')")
    await screenshot(desk, "chain-meeting-invited")
    async with desk.context.expect_page() as opened:
        await desk.click(f"#meeting-list li[data-id='{meeting['id']}'] .join")
    meet = await opened.value
    await meet.wait_for_url(re.compile(rf"/meet/{meeting['id']}\?t="))
    assert await other.is_hidden("#meetings-panel")
    await meet.close()
    watch.check()
    other_watch.check()


async def test_a_squad_phone_shows_its_own_orders_only_and_drops_one_whose_case_ends(
    browser: Browser, make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree, clock: FakeClock
) -> None:
    """Two squads of one township: each phone shows the order for its own unit and never the
    other's. Orders not accepted in time alert the console, named by the squad; when the officer
    rejects one case on the console that phone stops ringing and its order disappears, that alert
    leaves the console, and no order of the case stays open. Switched to English, the console's
    alerts and tabs and the phone's menu and order read in English without a reload."""
    client = await make_client(live_timer_interval=0.05)
    browsing = Browsing(client, browser)
    try:
        officer = await make_user("duty_officer", COUNTY)
        ours, (member,) = await make_squad(client, officer, make_user, org=TOWNSHIP, name="马屿应急中队一组")
        theirs, (other,) = await make_squad(client, officer, make_user, org=TOWNSHIP, name="安阳应急中队指挥车")
        _, lat, lon = grid_point(org_tree)
        case = await create_case(client, officer, lat, lon, description="仓库冒烟，有人员被困")
        elsewhere = await create_case(client, officer, lat, lon, category="incident.dispute", description="邻里纠纷")
        phone, phone_watch = await browsing.open_page("/squad", token=member.token, viewport=PHONE, mobile=True)
        their_phone, their_watch = await browsing.open_page("/squad", token=other.token, viewport=PHONE, mobile=True)
        for p in (phone, their_phone):
            await p.wait_for_selector(".live[data-status='live']")
        for c, unit in ((case, ours), (elsewhere, theirs)):
            r = await client.post(
                "/api/v1/orders",
                json={"incident_id": c["id"], "unit_id": unit["id"], "instructions": "立即赶赴现场"},
                headers=officer.headers,
            )
            assert r.status == 201, await r.text()
        await phone.wait_for_selector("#order:not([hidden]) #accept")
        await their_phone.wait_for_selector("#order:not([hidden]) #accept")
        assert case["number"] in await phone.inner_text("#order")
        assert elsewhere["number"] in await their_phone.inner_text("#order")
        mine = await phone.evaluate("[...window.dispatchdSquad.S.orders.values()].map((o) => o.incident_id)")
        assert mine == [case["id"]]
        assert await phone.evaluate("window.dispatchdSquad.ringing()") is True

        console, console_watch = await browsing.open_page(f"/console?case={case['id']}", token=officer.token, viewport=DESK)
        await console.wait_for_selector(".live[data-status='live']")
        clock.advance(61)
        await console.wait_for_selector("#alerts-panel:not([hidden]) #alert-list li")
        assert "马屿应急中队一组" in await console.inner_text("#alert-list")
        await console.wait_for_selector(".d-actions [data-action='reject']")
        await console.keyboard.press("r")
        await console.fill(".dialog textarea[name='reason']", "经核实为误报")
        await _submit_dialog(console)
        await _state_is(console, "不予受理")

        await phone.wait_for_selector("#order", state="hidden")
        assert await phone.evaluate("window.dispatchdSquad.ringing()") is False
        await wait_js(console, f"!document.querySelector('#alert-list').textContent.includes({case['number']!r})")
        assert elsewhere["number"] in await console.inner_text("#alert-list")  # the other case's alert stays
        assert not [o for o in await _orders(client, officer, case["id"]) if o["state"] in ("pending", "delivered", "accepted")]
        # The other squad's order, of a case still open, stays on its phone.
        assert elsewhere["number"] in await their_phone.inner_text("#order")
        # English, without a reload: the console's alerts and tabs, the phone's menu and order.
        await console.evaluate("window.__same_page = true")
        await console.click(".topbar .lang-switch")
        await wait_js(console, "document.querySelector('#alert-list').textContent.includes('did not accept the order')")
        assert "安阳应急中队指挥车" in await console.inner_text("#alert-list")
        assert await console.inner_text("#state-tabs [data-tab='open']") == "Open"
        assert await console.evaluate("window.__same_page") is True
        await their_phone.click("#menu-btn")
        await their_phone.click("#menu .lang-switch")
        await wait_js(their_phone, "document.querySelector('#menu .btn:last-child').textContent === 'Log out'")
        await wait_js(their_phone, "document.querySelector('#accept').textContent === 'Accept'")
        for w in (phone_watch, their_watch, console_watch):
            w.check()
    finally:
        await browsing.close()
