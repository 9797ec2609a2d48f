"""The duty console answers a real SIP call in headless Chromium: a fake microphone saying 1,000 Hz,
the caller saying 440 Hz, both heard; the caller's key shows on the console; the console hangs up."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from dispatchd.channels.hotline.voice import tones, wav
from tests.channels.hotline.voice.conftest import call_state, eventually, sip_port, until, waiting_call
from tests.channels.hotline.voice.peers import ToneCaller, share_at
from tests.conftest import COUNTY, AppFactory, UserFactory, require_tool
from tests.ui.conftest import CHROMIUM_ARGS, Browsing, screenshot, wait_js

pytestmark = pytest.mark.browser


@pytest.fixture
async def chromium_with_microphone(tmp_path: Path) -> AsyncIterator[Any]:
    """Chromium whose microphone is a WAV file of a 1,000 Hz tone (looped by the browser)."""
    path = require_tool("chromium")
    from playwright.async_api import async_playwright

    microphone = tmp_path / "microphone.wav"
    microphone.write_bytes(wav.wav_bytes(tones.tone(1000, 5.0, rate=48000), 48000))
    args = [
        *CHROMIUM_ARGS,
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-audio-capture={microphone}",
        "--allow-loopback-in-peer-connection",
        "--disable-features=WebRtcHideLocalIpsWithMdns",
        "--autoplay-policy=no-user-gesture-required",
    ]
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=path, headless=True, args=args)
        try:
            yield browser
        finally:
            await browser.close()


async def test_console_answers_in_chromium_and_hangs_up(
    make_client: AppFactory, make_user: UserFactory, chromium_with_microphone: Any
) -> None:
    """The answer key (W, as 接听) answers with a WebRTC offer from the page: the caller hears the fake microphone's
    1,000 Hz, the page receives the caller's audio, the key 7 the caller presses shows in the voice
    bar, and 挂断 sends the caller a BYE and ends the call; made a case, the call's recording plays in it."""
    client: TestClient[Any, Any] = await make_client(video_host_addresses="127.0.0.1")
    browsing = Browsing(client, chromium_with_microphone)
    officer = await make_user("duty_officer", COUNTY)
    caller = ToneCaller("127.0.0.1", sip_port(client), frequency=440)
    try:
        await caller.call()
        call = await waiting_call(client, officer.headers)
        page, watch = await browsing.open_page(
            "/console", token=officer.token, user=officer.user.as_json(), permissions=("microphone",)
        )
        await page.wait_for_selector(f'.call[data-id="{call["id"]}"] button.answer')
        toasts: list[str] = []
        page.on("console", lambda message: toasts.append(message.text))
        # The answer key: W takes the waiting call on the headset, as 接听 does.
        await page.keyboard.press("w")
        try:
            await page.wait_for_selector('#voice-bar[data-status="talking"]', timeout=30000)
        except Exception as exc:
            shown = await page.evaluate("[...document.querySelectorAll('.toast')].map(t => t.textContent)")
            raise AssertionError(f"not talking: toasts {shown}, console {toasts}") from exc
        await until(caller.answered.is_set)
        await until(lambda: len(caller.heard()) > 8000 * 2.5, limit=30)
        assert share_at(caller.heard(), 1000, skip=1.0) > 0.8
        inbound = await wait_js(
            page, "window.dispatchdConsole.voiceInbound().then(s => s && s.packets > 50 ? s : null)"
        )
        assert inbound["energy"] > 0  # the caller's tone played in the page
        await caller.press("7")
        await page.wait_for_selector("#voice-bar .keys:has-text('7')")
        await screenshot(page, "console-voice-call")
        await page.click("#voice-bar .voice-hangup")
        await until(caller.bye_received.is_set)

        async def ended() -> bool:
            return (await call_state(client, officer.headers, call["id"]))["state"] == "ended"

        await eventually(ended)
        await page.wait_for_selector("#voice-bar", state="hidden")

        # Made a case, the call's recording plays in the case's "calls and recordings".
        made = await client.post(
            f"/api/v1/hotline/calls/{call['id']}/incident",
            json={"category": "incident.dispute", "description": "来电反映纠纷"},
            headers=officer.headers,
        )
        assert made.status == 201
        case = (await made.json())["incident"]
        await page.goto(browsing.url(f"/console?case={case['id']}"))
        source = await (await page.wait_for_selector(".recording audio")).get_attribute("src")
        assert source is not None and f"/api/v1/hotline/calls/{call['id']}/recording" in source
        duration = await wait_js(
            page,
            # The case view may render again (a live change) and replace the element: look it up on
            # every try, and give up a try that waits too long.
            "(() => { const a = document.querySelector('.recording audio'); if (!a) return null;"
            " if (a.readyState >= 1) return a.duration; a.preload = 'auto'; a.load();"
            " return new Promise(r => { a.addEventListener('loadedmetadata', () => r(a.duration), {once: true});"
            " setTimeout(() => r(null), 3000); }); })()",
        )
        assert duration > 1.0  # a real WAV the browser reads, seconds long
        watch.check()
    finally:
        await caller.close()
        await browsing.close()
