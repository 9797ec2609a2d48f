"""Debian's Firefox ESR, headless with a fake camera and microphone, in a meeting (over WebDriver BiDi)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from dispatchd.video.service import ROOMS
from dispatchd.web.appkeys import CTX
from tests.conftest import COUNTY, UserFactory, require_tool
from tests.video.conftest import create_meeting, ws_url
from tests.video.firefox import Firefox, launch
from tests.video.peers import MeetingPeer
from tests.video.test_browser import page_url, poll
from tests.video.test_wall import three_layers_then_the_high_one_for_the_speaker

pytestmark = pytest.mark.browser


@pytest.fixture
async def firefox() -> AsyncIterator[Firefox]:
    async with launch(require_tool("firefox-esr")) as browser:
        yield browser


async def test_firefox_decodes_and_publishes_through_the_server(
    video_client: TestClient[Any, Any], make_user: UserFactory, firefox: Firefox
) -> None:
    """Firefox joins a meeting from its link, with its default autoplay policy, and

    (b) decodes the aiortc chair's video: framesDecoded rises on the inbound-rtp report of the m-line
        the server says carries the chair, and that tile is shown, captioned and playing (and
        neither "waiting for the chair" nor the chair's controls are);
    (a) after the chair's roll call (点名), publishes: the chair's aiortc peer decodes video and audio
        frames on the slots that carry the Firefox site;

    and the page logs no console or JavaScript error and requests nothing off this machine."""
    officer = await make_user("duty_officer", COUNTY)
    data = await create_meeting(video_client, officer.headers, invite=["330381001"])
    site_id = data["links"][0]["participant"]
    chair = MeetingPeer(ws_url(video_client, data["chair_link"]["url"]), colour="red", audio=True)
    await chair.join()
    tab = await firefox.new_tab()
    try:
        await tab.goto(page_url(video_client, data["links"][0]["url"]))

        async def plays_chair() -> bool:
            got = await tab.evaluate("window.meet.decodedByParticipant()")
            return bool(got.get(chair.id, 0) > 5)

        await poll(plays_chair)
        tile = f"document.querySelector('.tile[data-participant=\"{chair.id}\"]')"
        assert await tab.evaluate(f"!{tile}.hidden && !{tile}.querySelector('video').paused")
        assert (
            await tab.evaluate(f"{tile}.querySelector('figcaption').textContent") == "瑞安市（主持）"
        )
        assert await tab.evaluate("document.querySelector('#status').dataset.i18n") == "connected"
        # A site sees neither the chair's controls nor "waiting for the chair" over the picture.
        assert await tab.evaluate("document.querySelector('#chair').getClientRects().length") == 0
        assert await tab.evaluate("document.querySelector('#empty').getClientRects().length") == 0

        await chair.send("rollcall", participant=site_id)
        await chair.wait_for(lambda: chair.slot_of(site_id) is not None)
        video_mid = chair.slot_of(site_id)
        audio_mid = chair.slot_of(site_id, "audio")
        assert video_mid is not None and audio_mid is not None
        await chair.wait_for(lambda: chair.frames_by_mid[video_mid] > 10)
        await chair.wait_for(lambda: chair.frames_by_mid[audio_mid] > 25)  # half a second of Opus
        tab.check()
    finally:
        await chair.close()


async def test_firefox_without_the_meetings_codec_says_so(
    video_client: TestClient[Any, Any], make_user: UserFactory, firefox: Firefox
) -> None:
    """An H.264 meeting in a Firefox that has no H.264 (its OpenH264 plugin is a download that a
    closed network never gets) ends the join at once with a message naming the codec, instead of an
    offer the server must refuse and a page left "connecting"."""
    officer = await make_user("duty_officer", COUNTY)
    data = await create_meeting(video_client, officer.headers, invite=["330381001"], codec="H264")
    tab = await firefox.new_tab()
    await tab.goto(page_url(video_client, data["links"][0]["url"]))
    caps = await tab.evaluate("RTCRtpReceiver.getCapabilities('video').codecs.map((c) => c.mimeType)")
    if "video/H264" in caps:
        pytest.skip("this Firefox has the OpenH264 plugin")

    async def refused() -> bool:
        return bool(await tab.evaluate("document.querySelector('#status').dataset.i18n") == "failed")

    await poll(refused, 10)
    assert "H264" in await tab.evaluate("document.querySelector('#error').textContent")
    assert await tab.evaluate("window.meet.pc") is None
    tab.check()


async def test_firefox_publishes_three_simulcast_layers_and_the_speaker_gets_the_high_one(
    video_client: TestClient[Any, Any], make_user: UserFactory, firefox: Firefox
) -> None:
    """Firefox publishes its camera in three simulcast layers (rids l, m, h), each reaching the server;
    on the aiortc chair's 9-way wall the site's tile gets the low layer, and after roll call (点名) the
    same slot gets the high one, decoded at least twice as wide."""
    officer = await make_user("duty_officer", COUNTY)
    data = await create_meeting(video_client, officer.headers, invite=["330381001"])
    site_id = data["links"][0]["participant"]
    chair = MeetingPeer(ws_url(video_client, data["chair_link"]["url"]), colour="red", slots=10)
    await chair.join()
    tab = await firefox.new_tab()
    try:
        await tab.goto(page_url(video_client, data["links"][0]["url"]))
        room = next(iter(video_client.server.app[CTX][ROOMS].rooms.values()))
        await three_layers_then_the_high_one_for_the_speaker(chair, room, site_id, widen=2)
        tab.check()
    finally:
        await chair.close()
