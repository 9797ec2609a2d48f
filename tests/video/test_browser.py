"""Headless Chromium with a fake camera joins meetings from their links and decodes forwarded video."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import COUNTY, UserFactory, require_tool
from tests.video.conftest import create_meeting, ws_url
from tests.video.peers import MeetingPeer

pytestmark = pytest.mark.browser

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    # Keep ICE on this machine: loopback candidates, no mDNS names for host candidates.
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    path = require_tool("chromium")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


def page_url(client: TestClient[Any, Any], link: str) -> str:
    path = link.split("://", 1)[1].split("/", 1)[1]
    return str(client.make_url("/" + path))


async def poll(check: Any, limit: float = 45.0) -> None:
    """Wait until the async ``check()`` is true; fail after ``limit`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.25)


async def test_chromium_decodes_video_from_an_aiortc_peer(
    video_client: TestClient[Any, Any], make_user: UserFactory, browser: Any
) -> None:
    """A Chromium page joins from its link and its framesDecoded rises with the aiortc chair's video."""
    officer = await make_user("duty_officer", COUNTY)
    data = await create_meeting(video_client, officer.headers, invite=["330381001"])
    chair = MeetingPeer(ws_url(video_client, data["chair_link"]["url"]), colour="red", decode=False)
    await chair.join()
    page = await (await browser.new_context()).new_page()
    try:
        await page.goto(page_url(video_client, data["links"][0]["url"]))
        first = await page.evaluate("window.meet.framesDecoded()")

        async def rising() -> bool:
            return bool(await page.evaluate("window.meet.framesDecoded()") > first + 5)

        await poll(rising)
        assert await page.locator('.tile[data-slot="0"] figcaption').text_content() != ""
    finally:
        await page.close()
        await chair.close()


async def test_two_chromium_pages_see_each_other_after_roll_call(
    video_client: TestClient[Any, Any], make_user: UserFactory, browser: Any
) -> None:
    """Two Chromium pages with fake cameras: the participant plays the chair, and after the chair clicks
    roll call (点名) the chair plays the participant; a third participant's screen changes to show it too."""
    officer = await make_user("duty_officer", COUNTY)
    data = await create_meeting(video_client, officer.headers, invite=["330381001", "330381002"])
    context = await browser.new_context()
    chair_page = await context.new_page()
    site_page = await context.new_page()
    third = MeetingPeer(ws_url(video_client, data["links"][1]["url"]), colour=None, decode=False)
    try:
        await chair_page.goto(page_url(video_client, data["chair_link"]["url"]))
        await site_page.goto(page_url(video_client, data["links"][0]["url"]))
        await third.join()
        chair_id, site_id = data["chair_link"]["participant"], data["links"][0]["participant"]

        async def site_plays_chair() -> bool:
            got = await site_page.evaluate("window.meet.decodedByParticipant()")
            return bool(got.get(chair_id, 0) > 5)

        await poll(site_plays_chair)
        assert third.slot_of(site_id) is None
        # The chair brings the site on screen by clicking 点名 next to it in the roster.
        await chair_page.locator(f'#roster li[data-participant="{site_id}"] button.rollcall').click()

        async def chair_plays_site() -> bool:
            got = await chair_page.evaluate("window.meet.decodedByParticipant()")
            return bool(got.get(site_id, 0) > 5)

        await poll(chair_plays_site)
        await third.wait_for(lambda: third.slot_of(site_id) is not None)
    finally:
        await third.close()
        await context.close()


async def test_the_meeting_page_keeps_its_title_and_tells_each_side_what_it_waits_for(
    video_client: TestClient[Any, Any], make_user: UserFactory, browser: Any
) -> None:
    """The chair alone in its meeting is told it waits for the sites (never "waiting for the
    chair"), and the meeting's title stays in the page's header; a site that joins sees the chair
    named on its screen, and once the chair leaves, is told it waits for the chair."""
    officer = await make_user("duty_officer", COUNTY)
    data = await create_meeting(video_client, officer.headers, invite=["330381001"], title="安阳劳资纠纷会商")
    chair = await (await browser.new_context()).new_page()
    site = await (await browser.new_context()).new_page()
    try:
        await chair.goto(page_url(video_client, data["chair_link"]["url"]))

        async def chair_waits_for_sites() -> bool:
            return bool(await chair.locator("#empty").text_content() == "等待各方接入…")

        await poll(chair_waits_for_sites)
        assert await chair.locator("#title").text_content() == "安阳劳资纠纷会商"
        assert await chair.locator("header").is_visible()
        await site.goto(page_url(video_client, data["links"][0]["url"]))

        async def chair_named_on_the_site() -> bool:
            captions = await site.locator(".tile:not([hidden]) figcaption").all_text_contents()
            return any("主持" in c for c in captions)

        await poll(chair_named_on_the_site)
        await chair.context.close()

        async def site_waits_for_chair() -> bool:
            return bool(await site.locator("#empty").text_content() == "等待主持人…")

        await poll(site_waits_for_chair)
    finally:
        await site.close()
