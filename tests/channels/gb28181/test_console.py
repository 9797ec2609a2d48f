"""The screens in headless Chromium: the console lists a case's nearest cameras and one click plays a
camera's live video through the viewing contract (WebRTC, H.264 as the device sent it); a camera's
alarm leads the officer from its case to the camera and its recordings; the board's map draws the
cameras."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from dispatchd.channels.gb28181 import manscdp
from dispatchd.domain.orgs import OrgTree
from tests.channels.gb28181.conftest import GRIDS, DeviceFactory, cameras, poll
from tests.channels.gb28181.test_alarms import alarm, video_cases
from tests.channels.gb28181.test_platform import registered_device
from tests.conftest import COUNTY, UserFactory, require_tool
from tests.incidents.helpers import report
from tests.video.test_browser import CHROMIUM_FLAGS

pytestmark = pytest.mark.browser


@pytest.fixture
async def chromium() -> AsyncIterator[Any]:
    path = require_tool("chromium")
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            await browser.close()


async def test_console_plays_a_nearby_camera(
    platform: TestClient[Any, Any],
    make_device: DeviceFactory,
    make_user: UserFactory,
    org_tree: OrgTree,
    chromium: Any,
) -> None:
    """The case's nearest camera is listed first in the console; 查看视频 opens a viewer whose video plays."""
    officer = await make_user("duty_officer", COUNTY)
    device = await make_device(platform)
    assert await device.register() == 200

    async def listed() -> bool:
        return len(await cameras(platform, officer.headers)) == 3

    await poll(listed)
    case = await report(platform, officer, org_tree, grid=GRIDS[1])
    context = await chromium.new_context(locale="zh-CN")
    await context.add_init_script(
        f"localStorage.setItem('dispatchd.token', {json.dumps(officer.token)});"
        f"localStorage.setItem('dispatchd.user', {json.dumps(json.dumps({}))});"
    )
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        await page.goto(str(platform.make_url(f"/console?case={case['id']}")))
        row = page.locator(".camera-row").first
        await row.wait_for()
        assert device.channels[1].name in await row.inner_text()
        await row.locator("button", has_text="查看视频").click()
        viewer = page.locator(f'.camera-viewer[data-camera="{device.channels[1].id}"] video')
        await viewer.wait_for()

        async def playing() -> bool:
            frames = await viewer.evaluate("v => v.getVideoPlaybackQuality().totalVideoFrames")
            return bool(frames > 5) and await viewer.evaluate("v => v.videoWidth") == 160

        await poll(playing, limit=45)
        await page.locator(".camera-viewer .camera-close").click()

        async def bye() -> bool:
            return len(device.byes) == 1

        await poll(bye)
    finally:
        await context.close()
    assert not errors, errors


async def test_board_draws_the_cameras(
    platform: TestClient[Any, Any], make_device: DeviceFactory, make_user: UserFactory, chromium: Any
) -> None:
    """The wall board's snapshot carries the cameras, and its map draws one marker per camera."""
    officer = await make_user("duty_officer", COUNTY)
    device = await make_device(platform)
    assert await device.register() == 200

    async def listed() -> bool:
        return len(await cameras(platform, officer.headers)) == 3

    await poll(listed)
    context = await chromium.new_context(locale="zh-CN", viewport={"width": 1920, "height": 1080})
    await context.add_init_script(f"localStorage.setItem('dispatchd.token', {json.dumps(officer.token)});")
    page = await context.new_page()
    try:
        await page.goto(str(platform.make_url("/board")))
        for channel in device.channels:
            await page.locator(f'.map-layer-cameras [data-key="{channel.id}"]').wait_for(state="attached")
    finally:
        await context.close()


async def test_an_alarm_case_leads_the_officer_to_the_camera_and_its_recordings(
    platform: TestClient[Any, Any],
    make_device: DeviceFactory,
    make_user: UserFactory,
    chromium: Any,
) -> None:
    """A camera's intrusion alarm opens a case; the duty officer opens it on the console, finds the
    alarming camera first among the nearest (at 0 m), opens its viewer and, under 录像记录, today's
    recordings that the device holds, in time order; ▶ plays the first one back in a viewer of its
    own (the device got a Playback INVITE) beside the live one."""
    officer = await make_user("duty_officer", COUNTY)
    device = await registered_device(platform, make_device, officer.headers)
    camera = device.channels[2]
    today = datetime.now(manscdp.BEIJING).date().isoformat()
    device.recordings[camera.id] = [(f"{today}T08:00:00", f"{today}T09:00:00"), (f"{today}T06:00:00", f"{today}T07:30:00")]
    assert await device.message(alarm(9, camera.id, 1, 5, 6)) == 200

    async def opened() -> bool:
        return len(await video_cases(platform, officer.headers)) == 1

    await poll(opened)
    (case,) = await video_cases(platform, officer.headers)
    context = await chromium.new_context(locale="zh-CN", timezone_id="Asia/Shanghai")
    await context.add_init_script(f"localStorage.setItem('dispatchd.token', {json.dumps(officer.token)});")
    page = await context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
    try:
        await page.goto(str(platform.make_url(f"/console?case={case['id']}")))
        row = page.locator(".camera-row").first
        await row.wait_for()
        assert camera.name in await row.inner_text()
        await row.locator("button", has_text="查看视频").click()
        viewer = page.locator(f'.camera-viewer[data-camera="{camera.id}"]')
        await viewer.locator(".camera-records summary").click()
        await viewer.locator(".camera-record").nth(1).wait_for()
        shown = [" ".join(text.split()) for text in await viewer.locator(".camera-record").all_inner_texts()]
        assert shown == ["▶ 06:00–07:30 1小时30分", "▶ 08:00–09:00 1小时"]  # Beijing time, with the length
        await viewer.locator(".camera-record .camera-play").first.click()
        replay = page.locator('.camera-viewer[data-playback="true"]')
        assert "回放 06:00–07:30" in await replay.locator(".camera-head").inner_text()

        async def replaying() -> bool:
            return bool(await replay.locator("video").evaluate("v => v.getVideoPlaybackQuality().totalVideoFrames") > 5)

        await poll(replaying, limit=45)
        assert any("s=Playback" in s.offer for s in device.streams.values())
        while await page.locator(".camera-viewer").count():
            await page.locator(".camera-viewer .camera-close").first.click()

        async def both_ended() -> bool:
            return len(device.byes) == 2  # the live stream and the playback

        await poll(both_ended)
    finally:
        await context.close()
    assert not errors, errors
