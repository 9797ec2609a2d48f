"""Every screen in a real browser: it loads offline, logs in, and shows what it should."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import COUNTY, PASSWORD, UserFactory
from tests.ui.conftest import DESK, PHONE, WALL, WALL_4K, Browsing, eventually, screenshot

pytestmark = pytest.mark.browser


async def test_login_form_leads_to_the_console(browsing: Browsing, make_user: UserFactory) -> None:
    """A duty officer logs in through the form and lands on the duty console with a stored token."""
    await make_user("duty_officer", COUNTY, username="zhangsan")
    page, watch = await browsing.open_page("/login", viewport=DESK)
    await page.fill("#username", "zhangsan")
    await page.fill("#password", "wrong")
    await page.click("#login-submit")
    await page.wait_for_selector("#login-error:not([hidden])")
    assert "错误" in await page.inner_text("#login-error")
    await page.fill("#password", PASSWORD)
    await page.click("#login-submit")
    await page.wait_for_url("**/console")
    assert await page.evaluate("localStorage.getItem('dispatchd.token')")
    await screenshot(page, "console-after-login")
    watch.check()


async def test_login_page_offline_in_both_languages(browsing: Browsing) -> None:
    """The login page loads with no console error and no foreign request, in Chinese and in English."""
    page, watch = await browsing.open_page("/login", viewport=DESK)
    await page.wait_for_selector("#lang-slot .lang-switch")
    assert await page.inner_text("#login-submit") == "登录"
    await screenshot(page, "login")
    await page.click(".lang-switch")
    await page.wait_for_function("document.querySelector('#login-submit').textContent === 'Log in'")
    assert await page.evaluate("document.documentElement.lang") == "en"
    watch.check()


async def test_private_page_without_token_goes_to_login(browsing: Browsing) -> None:
    """Opening the board with no token leads to the login page, which returns there afterwards."""
    page, watch = await browsing.open_page("/board", viewport=DESK)
    await page.wait_for_url("**/login?next=%2Fboard")
    watch.check()


@pytest.mark.parametrize(
    ("path", "role", "viewport", "name"),
    [
        ("/", "duty_officer", DESK, "index"),
        ("/board", "duty_officer", WALL, "board-1920x1080"),
        ("/board", "leader", WALL_4K, "board-3840x2160"),
    ],
)
async def test_page_loads_clean(
    browsing: Browsing,
    make_user: UserFactory,
    path: str,
    role: str,
    viewport: dict[str, int],
    name: str,
) -> None:
    """The page loads for its role without console errors or requests to other hosts; a screenshot is kept."""
    acct = await make_user(role, COUNTY)
    page, watch = await browsing.open_page(path, token=acct.token, viewport=viewport)
    await page.wait_for_load_state("networkidle")
    await screenshot(page, name)
    watch.check()


async def test_board_fits_the_screen_and_draws_the_grids(
    browsing: Browsing, client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """At 1920×1080 and 3840×2160 the board has no scrollbar and draws every grid of the county."""
    acct = await make_user("duty_officer", COUNTY)
    for viewport in (WALL, WALL_4K):
        page, watch = await browsing.open_page("/board", token=acct.token, viewport=viewport)
        await page.wait_for_selector(".map-grid")

        async def grids_drawn() -> bool:
            return int(await page.evaluate("document.querySelectorAll('.map-grid').length")) > 100

        await eventually(grids_drawn, what="grid boundaries drawn")
        overflow = await page.evaluate(
            "[document.documentElement.scrollWidth > innerWidth, document.documentElement.scrollHeight > innerHeight]"
        )
        assert overflow == [False, False]
        watch.check()
