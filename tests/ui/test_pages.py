"""Every screen in a real browser: it loads offline, logs in, and draws what it should."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from dispatchd.domain.orgs import OrgTree
from dispatchd.store.outage import OUTAGES
from dispatchd.web.appkeys import CTX
from tests.conftest import COUNTY, PASSWORD, UserFactory
from tests.ui.conftest import (
    DESK,
    PHONE,
    TOWNSHIP,
    WALL,
    WALL_4K,
    Browsing,
    screenshot,
    seed_cases,
    wait_js,
)

pytestmark = pytest.mark.browser


async def test_login_form_leads_to_the_console(browsing: Browsing, make_user: UserFactory) -> None:
    """A duty officer logs in through the form and lands on the duty console with a stored token."""
    await make_user("duty_officer", COUNTY, username="zhangsan")
    page, watch = await browsing.open_page("/login", viewport=DESK)
    watch.expect("status of 401")  # the wrong password, on purpose
    await page.fill("#username", "zhangsan")
    await page.fill("#password", "wrong")
    await page.click("#login-submit")
    await page.wait_for_selector("#login-error:not([hidden])")
    assert "错误" in await page.inner_text("#login-error")
    await page.fill("#password", PASSWORD)
    await page.click("#login-submit")
    await page.wait_for_url("**/console")
    assert await page.evaluate("localStorage.getItem('dispatchd.token')")
    await page.wait_for_selector(".topbar .who")
    watch.check()


async def test_login_page_offline_in_both_languages(browsing: Browsing) -> None:
    """The login page loads with no console error and no foreign request, in Chinese and in English."""
    page, watch = await browsing.open_page("/login", viewport=DESK)
    await page.wait_for_selector("#lang-slot .lang-switch")
    assert await page.inner_text("#login-submit") == "登录"
    await screenshot(page, "login")
    await page.click(".lang-switch")
    await wait_js(page, "document.querySelector('#login-submit').textContent === 'Log in'")
    assert await page.evaluate("document.documentElement.lang") == "en"
    watch.check()


async def test_private_page_without_token_goes_to_login(browsing: Browsing) -> None:
    """Opening the board with no token leads to the login page, which will return there."""
    page, watch = await browsing.open_page("/board", viewport=DESK)
    await page.wait_for_url("**/login?next=%2Fboard")
    watch.check()


async def test_wrong_role_is_sent_to_its_own_screen(browsing: Browsing, make_user: UserFactory) -> None:
    """A grid worker opening the duty console is told so and offered the grid-worker app."""
    grid = await make_user("grid_worker", TOWNSHIP)
    page, watch = await browsing.open_page("/console", token=grid.token, viewport=DESK)
    await page.wait_for_selector(".wrong-role a[href='/grid']")
    watch.check()


@pytest.mark.parametrize(
    ("path", "role", "viewport", "name"),
    [
        ("/", "duty_officer", DESK, "index"),
        ("/board", "duty_officer", WALL, "board-1920x1080"),
        ("/board", "leader", WALL_4K, "board-3840x2160"),
        ("/console", "duty_officer", WALL, "console-1920x1080"),
        ("/stats", "leader", DESK, "stats-1600x900"),
        ("/admin", "admin", DESK, "admin-1600x900"),
        ("/squad", "squad_member", PHONE, "squad-390x844"),
        ("/grid", "grid_worker", PHONE, "grid-390x844"),
    ],
)
async def test_page_loads_clean(
    browsing: Browsing,
    client: TestClient[Any, Any],
    make_user: UserFactory,
    org_tree: OrgTree,
    path: str,
    role: str,
    viewport: dict[str, int],
    name: str,
) -> None:
    """The page loads for its role with no console error and no request to another host; a screenshot is kept."""
    org = TOWNSHIP if role in ("squad_member", "grid_worker") else COUNTY
    if role == "grid_worker":
        org = "330381001001G001"
    acct = await make_user(role, org)
    if path in ("/board", "/console", "/stats"):
        await seed_cases(client, await make_user("duty_officer", COUNTY), org_tree)
    if role == "squad_member":
        officer = await make_user("duty_officer", COUNTY)
        r = await client.post(
            "/api/v1/units",
            json={"name": "安阳应急中队一组", "kind": "team", "org": TOWNSHIP},
            headers=officer.headers,
        )
        unit = await r.json()
        await client.post(
            f"/api/v1/units/{unit['id']}/members",
            json={"username": acct.user.username},
            headers=officer.headers,
        )
    page, watch = await browsing.open_page(
        path, token=acct.token, viewport=viewport, mobile=viewport is PHONE
    )
    await page.wait_for_load_state("networkidle")
    await wait_js(page, "document.fonts.status === 'loaded'")
    await screenshot(page, name)
    text = await page.inner_text("body")
    assert "undefined" not in text and "null" not in text and "NaN" not in text
    watch.check()


async def test_english_switch_keeps_the_page(browsing: Browsing, make_user: UserFactory) -> None:
    """The language switch turns the console to English in place, and the choice is remembered."""
    acct = await make_user("duty_officer", COUNTY)
    page, watch = await browsing.open_page("/console", token=acct.token, viewport=DESK)
    await page.wait_for_selector("#state-tabs .tab")
    await page.evaluate("window.__same_page = true")
    await page.click(".topbar .lang-switch")
    await wait_js(page, "document.querySelector('#state-tabs .tab').textContent === 'Open'")
    assert await page.evaluate("window.__same_page") is True
    await page.reload()
    await wait_js(page, "document.querySelector('#state-tabs .tab')?.textContent === 'Open'")
    watch.check()


async def test_board_fits_the_screen_and_draws_the_grids(browsing: Browsing, make_user: UserFactory) -> None:
    """At 1920×1080 and 3840×2160 the board has no scrollbar and draws every grid of the county."""
    acct = await make_user("duty_officer", COUNTY)
    for viewport in (WALL, WALL_4K):
        page, watch = await browsing.open_page("/board", token=acct.token, viewport=viewport)

        await wait_js(page, "document.querySelectorAll('.map-grid').length > 100")
        overflow = await page.evaluate(
            "[document.documentElement.scrollWidth > innerWidth, document.documentElement.scrollHeight > innerHeight]"
        )
        assert overflow == [False, False]
        watch.check()


async def test_map_pans_and_zooms(browsing: Browsing, make_user: UserFactory) -> None:
    """Dragging the board's map moves it and the zoom button zooms it in."""
    acct = await make_user("duty_officer", COUNTY)
    page, watch = await browsing.open_page("/board", token=acct.token, viewport=WALL)
    await page.wait_for_selector(".map-grid")
    before = await page.get_attribute(".map-shapes", "transform")
    box = await page.locator("#map").bounding_box()
    assert box is not None
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    await page.mouse.move(cx, cy)
    await page.mouse.down()
    await page.mouse.move(cx + 120, cy + 60, steps=5)
    await page.mouse.up()
    await wait_js(page, f"document.querySelector('.map-shapes').getAttribute('transform') !== {before!r}")
    zoom = await page.get_attribute("#map", "data-zoom")
    await page.click(".map-zoom-in")
    await wait_js(page, f"document.querySelector('#map').dataset.zoom !== {zoom!r}")
    watch.check()


async def test_squad_member_in_no_unit_is_told_so(browsing: Browsing, make_user: UserFactory) -> None:
    """A squad member who belongs to no unit sees that, not an endless "reconnecting"."""
    member = await make_user("squad_member", TOWNSHIP)
    page, watch = await browsing.open_page("/squad", token=member.token, viewport=PHONE, mobile=True)
    await page.wait_for_selector("#idle.no-unit")
    await page.wait_for_selector(".live[data-status='no_unit']")
    assert "未编入" in await page.inner_text("#idle h2")
    watch.check()


async def test_the_wall_and_the_console_say_when_a_store_is_down(browsing: Browsing, make_user: UserFactory) -> None:
    """When the instance sees Redis go down, the open wall and console show at once what that means
    (positions may lag), in the chosen language, and the bar goes when Redis is back; PostgreSQL's
    bar asks to try again."""
    leader = await make_user("duty_officer", COUNTY)
    wall, wall_watch = await browsing.open_page("/board", token=leader.token, user=leader.user.as_json(), viewport=WALL)
    desk, desk_watch = await browsing.open_page("/console", token=leader.token, user=leader.user.as_json())
    for page in (wall, desk):
        await page.wait_for_selector('.live[data-status="live"]')
    for watch in (wall_watch, desk_watch):
        watch.expect("status of 503")  # what the pages fetch while PostgreSQL is down is refused so
    outages = browsing.client.server.app[CTX][OUTAGES]
    outages.failed("redis", "ConnectionError: test")
    for page in (wall, desk):
        bar = await page.wait_for_selector("#stores-down", timeout=5000)
        assert "位置" in (await bar.inner_text())
    outages.failed("postgres", "ConnectionError: test")
    await wait_js(wall, "(document.querySelector('#stores-down') || {}).textContent?.includes('重试')")
    await wall.click(".lang-switch")
    await wait_js(wall, "(document.querySelector('#stores-down') || {}).textContent?.includes('try again')")
    outages.recovered("postgres")
    outages.recovered("redis")
    for page in (wall, desk):
        await wait_js(page, "document.querySelector('#stores-down') === null")
    wall_watch.check()
    desk_watch.check()
