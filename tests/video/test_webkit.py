"""The meeting page in WebKit (Debian's WebKitGTK under Xvfb, over WebDriver): the engine of Safari."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import COUNTY, ROOT, UserFactory, require_tool
from tests.video.conftest import create_meeting
from tests.video.test_browser import page_url, poll
from tests.video.webkit import Session, launch, minibrowser

pytestmark = pytest.mark.browser

SCREENSHOTS = ROOT / "artifacts" / "screenshots"


@pytest.fixture
async def webkit() -> AsyncIterator[Session]:
    driver = require_tool("WebKitWebDriver")
    xvfb = require_tool("Xvfb")
    browser = minibrowser() or require_tool("MiniBrowser")  # in a libexec directory, not on PATH
    async with launch(driver, xvfb, browser) as session:
        yield session


async def test_webkit_runs_the_meeting_page_and_says_it_cannot_join(
    video_client: TestClient[Any, Any], make_user: UserFactory, webkit: Session
) -> None:
    """In WebKit the meeting page's module script parses and runs (JavaScriptCore rejects what other
    engines accept now and then), signals over its websocket (the meeting's title comes from
    ``welcome``), lays out the join screen with its controls, switches language, and — since
    Debian's WebKitGTK has no RTCPeerConnection — says that this browser cannot join instead of
    failing on a ReferenceError. No console error or uncaught exception. Not proven here: media in
    Safari (WebRTC in WebKit), see docs/video.md."""
    officer = await make_user("duty_officer", COUNTY)
    data = await create_meeting(video_client, officer.headers, invite=["330381001"])
    await webkit.goto(page_url(video_client, data["links"][0]["url"]))
    assert await webkit.execute("return typeof window.meet") == "object", "the page's script did not run"

    async def refused() -> bool:
        return bool(await webkit.execute("return document.querySelector('#status').dataset.i18n") == "failed")

    await poll(refused, 15)
    shown = await webkit.execute(
        """
        const visible = (sel) => document.querySelector(sel).getClientRects().length > 0;
        return {
          title: document.querySelector('#title').textContent,
          error: document.querySelector('#error').textContent,
          controls: ['#mic', '#hand', '#leave', '#lang', '#roster'].every(visible),
          hidden: ['#chair', '#self', '#rec'].filter(visible),
          rtc: typeof RTCPeerConnection,
        };
        """
    )
    assert shown["rtc"] == "undefined"  # if this fails, WebKitGTK gained WebRTC: test media here
    assert shown["title"] == "防汛会商"
    assert "不支持 WebRTC" in shown["error"]
    assert shown["controls"] and shown["hidden"] == []
    await webkit.screenshot(SCREENSHOTS / "meet-webkit.png")

    await webkit.click("#lang")
    assert await webkit.execute("return document.querySelector('#mic').textContent") == "Mute microphone"
    assert await webkit.execute("return document.querySelector('#status').textContent") == "Connection failed"
    assert await webkit.errors() == []
