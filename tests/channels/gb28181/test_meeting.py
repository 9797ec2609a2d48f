"""A camera in a case's consultation: added as a source of the meeting, put on screen by roll call,
decoded by an aiortc participant and by headless Chromium on the meeting page."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from tests.channels.gb28181.conftest import DeviceFactory, cameras, poll
from tests.conftest import COUNTY, UserFactory, require_tool
from tests.video.conftest import create_meeting, ws_url
from tests.video.peers import MeetingPeer
from tests.video.test_browser import CHROMIUM_FLAGS, page_url


async def camera_in_meeting(
    platform: TestClient[Any, Any], make_device: DeviceFactory, headers: dict[str, str], **meeting: Any
) -> tuple[dict[str, Any], str, Any]:
    device = await make_device(platform)
    assert await device.register() == 200

    async def listed() -> bool:
        return len(await cameras(platform, headers)) == 3

    await poll(listed)
    data = await create_meeting(platform, headers, invite=["330381001"], **meeting)
    camera = device.channels[0].id
    resp = await platform.post(
        f"/api/v1/meetings/{data['id']}/cameras", json={"camera": camera}, headers=headers
    )
    assert resp.status == 201, await resp.text()
    added = await resp.json()
    assert added["codec"] == "H264" and added["kind"] == "camera"
    return data, added["id"], device


async def test_camera_on_screen_in_a_meeting(
    platform: TestClient[Any, Any], make_device: DeviceFactory, make_user: UserFactory
) -> None:
    """A VP8 meeting nobody joined yet switches to H.264 when a camera is added; after roll call the
    chair (aiortc) decodes the camera's frames."""
    officer = await make_user("duty_officer", COUNTY)
    data, participant, device = await camera_in_meeting(platform, make_device, officer.headers, codec="VP8")
    chair = MeetingPeer(ws_url(platform, data["chair_link"]["url"]), colour="red")
    try:
        await chair.join()
        await chair.wait_for(
            lambda: any(r["id"] == participant and r["publishing"] == ["video"] for r in chair.roster)
        )
        await chair.send("rollcall", participant=participant)
        await chair.wait_for(lambda: chair.slot_of(participant) is not None)
        mid = chair.slot_of(participant)
        assert mid is not None
        await chair.wait_for(lambda: chair.frames_by_mid[mid] >= 10)
    finally:
        await chair.close()
    assert len([m for m in device.messages if m.method == "INVITE"]) == 1


async def test_camera_refused_in_a_running_vp8_meeting(
    platform: TestClient[Any, Any], make_device: DeviceFactory, make_user: UserFactory
) -> None:
    """A meeting already under way in VP8 cannot take a camera (H.264): 409 naming the codec."""
    officer = await make_user("duty_officer", COUNTY)
    device = await make_device(platform)
    assert await device.register() == 200

    async def listed() -> bool:
        return len(await cameras(platform, officer.headers)) == 3

    await poll(listed)
    data = await create_meeting(platform, officer.headers, invite=["330381001"], codec="VP8")
    chair = MeetingPeer(ws_url(platform, data["chair_link"]["url"]), colour="red", decode=False)
    try:
        await chair.join()
        resp = await platform.post(
            f"/api/v1/meetings/{data['id']}/cameras",
            json={"camera": device.channels[0].id},
            headers=officer.headers,
        )
        assert resp.status == 409 and (await resp.json())["error"]["code"] == "codec"
    finally:
        await chair.close()


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


@pytest.mark.browser
async def test_chromium_decodes_the_camera_in_a_meeting(
    platform: TestClient[Any, Any], make_device: DeviceFactory, make_user: UserFactory, browser: Any
) -> None:
    """Headless Chromium joins the H.264 meeting from its link; after roll call of the camera its page
    decodes the camera's video."""
    officer = await make_user("duty_officer", COUNTY)
    data, participant, _device = await camera_in_meeting(platform, make_device, officer.headers, codec="H264")
    chair = MeetingPeer(ws_url(platform, data["chair_link"]["url"]), colour=None, decode=False)
    page = await (await browser.new_context()).new_page()
    try:
        await chair.join()
        await page.goto(page_url(platform, data["links"][0]["url"]))
        await chair.wait_for(
            lambda: any(r["id"] == participant and r["publishing"] == ["video"] for r in chair.roster)
        )
        await chair.send("rollcall", participant=participant)

        async def decoding() -> bool:
            got = await page.evaluate("window.meet.decodedByParticipant()")
            return bool(got.get(participant, 0) > 5)

        await poll(decoding, limit=45)
    finally:
        await page.close()
        await chair.close()
