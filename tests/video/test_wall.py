"""Simulcast and the chair's wall with real browsers: Chromium's three layers, a 3×3 wall decoding nine sites."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, pack_remb_fci

from dispatchd.video.service import ROOMS
from dispatchd.web.appkeys import CTX
from tests.conftest import COUNTY, ROOT, UserFactory
from tests.video.conftest import create_meeting, ws_url
from tests.video.peers import MeetingPeer
from tests.video.test_browser import browser, page_url, poll  # noqa: F401  # browser: the fixture

pytestmark = pytest.mark.browser

SCREENSHOTS = ROOT / "artifacts" / "screenshots"


async def send_remb(peer: MeetingPeer, mid: str, bitrate: int) -> None:
    """Send the server an RTCP REMB (draft-alvestrand-rmcat-remb) for the stream received on ``mid``."""
    transceiver = next(t for t in peer.pc.getTransceivers() if t.mid == mid)
    sources = transceiver.receiver.getSynchronizationSources()
    assert sources, "nothing received on that m-line yet"
    packet = RtcpPsfbPacket(
        fmt=RTCP_PSFB_APP, ssrc=1, media_ssrc=0, fci=pack_remb_fci(bitrate, [s.source for s in sources])
    )
    await transceiver.receiver.transport._send_rtp(bytes(packet))


async def three_layers_then_the_high_one_for_the_speaker(chair: MeetingPeer, room: Any, site_id: str, widen: int) -> str:
    """The site's three layers (rids l, m, h) reach the server; on the chair's 9-way wall its tile gets
    the low layer; after roll call the same slot gets the high one, at least ``widen`` times as
    wide. Returns the slot's mid."""

    def three_layers_arrive() -> bool:
        site = room.participants.get(site_id)
        return site is not None and len(site.layers) == 3 and all(s.frames_in > 10 for s in site.layers)

    await chair.wait_for(three_layers_arrive, 60)
    assert sorted(s.rid for s in room.participants[site_id].layers) == ["h", "l", "m"]

    await chair.send("layout", tiles=9)
    await chair.wait_for(lambda: chair.layer_of(site_id) == "l", 30)
    mid = chair.slot_of(site_id)
    assert mid is not None
    seen = len(chair.sizes[mid])
    await chair.wait_for(lambda: len(chair.sizes[mid]) > seen + 10, 30)
    low_width = chair.sizes[mid][-1][0]

    await chair.send("rollcall", participant=site_id)
    await chair.wait_for(lambda: chair.layer_of(site_id) == "h", 30)
    assert chair.slot_of(site_id) == mid  # the same slot, now large: a layer switch, not a new stream
    await chair.wait_for(lambda: chair.sizes[mid][-1][0] >= widen * low_width, 30)
    return mid


async def test_a_chromium_site_publishes_three_layers_and_a_slot_moving_to_speaker_gets_the_high_one(
    video_client: TestClient[Any, Any], make_user: UserFactory, browser: Any  # noqa: F811
) -> None:
    """A Chromium page publishes its camera in three simulcast layers (rids l, m, h), each reaching the
    server. The aiortc chair watches a 9-way wall: the site's tile gets the low layer, decoded at a
    quarter of the camera's width; after roll call (点名) the same slot shows the site as speaker and
    the chair decodes the high layer at full width; a REMB from the chair's side saying its link
    carries 120 kbit/s brings that slot down to the low layer."""
    officer = await make_user("duty_officer", COUNTY)
    data = await create_meeting(video_client, officer.headers, invite=["330381001"])
    site_id = data["links"][0]["participant"]
    chair = MeetingPeer(ws_url(video_client, data["chair_link"]["url"]), colour="red", slots=10)
    await chair.join()
    page = await (await browser.new_context()).new_page()
    try:
        await page.goto(page_url(video_client, data["links"][0]["url"]))
        room = next(iter(video_client.server.app[CTX][ROOMS].rooms.values()))
        mid = await three_layers_then_the_high_one_for_the_speaker(chair, room, site_id, widen=4)
        assert [s.rid for s in room.participants[site_id].layers] == ["l", "m", "h"]  # in the order sent
        assert video_client.server.app[CTX][ROOMS].totals.layer_switches >= 1

        # The chair's link turns out short: its REMB (as a browser sends it) lowers the speaker's layer.
        # A browser repeats its REMB about once a second; the server gives a step up a few seconds.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while chair.layer_of(site_id) != "l":
            assert loop.time() < deadline, "the REMB did not lower the layer"
            await send_remb(chair, mid, 120_000)
            await asyncio.sleep(0.5)
    finally:
        await page.close()
        await chair.close()


async def test_the_chairs_nine_way_wall_decodes_nine_sites_at_once_beside_the_speaker(
    video_client: TestClient[Any, Any], make_user: UserFactory, browser: Any  # noqa: F811
) -> None:
    """Ten sites join; the chair's Chromium page chooses a 9-way wall and calls one site: the page shows
    that site large and the nine others in a 3×3 grid, and every one of the ten is decoding frames."""
    officer = await make_user("duty_officer", COUNTY)
    townships = ["330381001", "330381002", "330381007", "330381009", "330381010", "330381101", "330381116"]
    units = [*townships, "330381120", "330381001001", "330381002001"]
    data = await create_meeting(video_client, officer.headers, invite=units)
    assert len(data["links"]) == 10
    colours = ["red", "green", "blue", "white"]
    sites = [
        MeetingPeer(ws_url(video_client, link["url"]), colour=colours[i % 4], decode=False)
        for i, link in enumerate(data["links"])
    ]
    page = await (await browser.new_context()).new_page()
    try:
        for site in sites:
            await site.join()
        await page.goto(page_url(video_client, data["chair_link"]["url"]))
        await page.locator("#wallctl").wait_for(state="visible")
        await page.locator("#layout").select_option("9")
        speaker = sites[4].id
        await page.locator(f'#roster li[data-participant="{speaker}"] button.rollcall').click()
        everyone = {site.id for site in sites}

        async def all_ten_decoding() -> bool:
            got = await page.evaluate("window.meet.decodedByParticipant()")
            return set(got) == everyone and all(n > 5 for n in got.values())

        await poll(all_ten_decoding, 90)
        on_stage = await page.eval_on_selector_all(
            "#stage .tile:not([hidden])", "(tiles) => tiles.map((t) => t.dataset.participant)"
        )
        on_wall = await page.eval_on_selector_all(
            "#wall .tile:not([hidden])", "(tiles) => tiles.map((t) => t.dataset.participant)"
        )
        assert on_stage == [speaker]
        assert len(on_wall) == 9 and set(on_wall) == everyone - {speaker}
        columns = await page.eval_on_selector("#wall", "(w) => getComputedStyle(w).gridTemplateColumns")
        assert len(columns.split()) == 3  # a 3×3 grid
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=str(SCREENSHOTS / "meet-wall-chromium.png"))
        assert await page.locator("#error").text_content() == ""  # no offer crossed another
    finally:
        await page.close()
        for site in sites:
            await site.close()
