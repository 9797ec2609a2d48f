"""Pulled sources and recording: an RTSP camera on screen, a squad phone's link, muxed recordings."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import av
import pytest
from aiohttp.test_utils import TestClient

from dispatchd.web.appkeys import CTX
from tests.conftest import COUNTY, StoreUrls, UserFactory, require_tool
from tests.video.conftest import create_meeting, ws_url
from tests.video.peers import MeetingPeer
from tests.video.rtsp_relay import RtspRelay


@pytest.fixture
async def camera() -> AsyncIterator[RtspRelay]:
    """An RTSP camera: ffmpeg's test pattern (160×120, 10 fps, VP8) published to a local RTSP server."""
    ffmpeg = require_tool("ffmpeg")
    relay = RtspRelay()
    await relay.start()
    proc = await asyncio.create_subprocess_exec(
        ffmpeg, "-hide_banner", "-loglevel", "error", "-re",
        "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=60",
        "-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "150k", "-g", "10",
        "-f", "rtsp", "-rtsp_transport", "tcp", relay.url(),
        stdin=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await asyncio.wait_for(relay.announced.wait(), 20)
        yield relay
    finally:
        proc.terminate()
        await proc.wait()
        await relay.close()


async def test_rtsp_camera_is_put_on_screen(
    video_client: TestClient[Any, Any], make_user: UserFactory, camera: RtspRelay
) -> None:
    """An RTSP test pattern from ffmpeg joins as a participant; after roll call the chair decodes its video."""
    officer = await make_user("duty_officer", COUNTY)
    data = await create_meeting(video_client, officer.headers, invite=["330381001"])
    chair = MeetingPeer(ws_url(video_client, data["chair_link"]["url"]), colour="red")
    try:
        await chair.join()
        resp = await video_client.post(
            f"/api/v1/meetings/{data['id']}/sources",
            json={"label": "马屿镇路口监控", "url": camera.url()},
            headers=officer.headers,
        )
        assert resp.status == 201, await resp.text()
        cam = (await resp.json())["id"]
        await chair.wait_for(
            lambda: any(r["id"] == cam and r["publishing"] == ["video"] for r in chair.roster)
        )
        await chair.send("rollcall", participant=cam)
        await chair.wait_for(lambda: chair.slot_of(cam) is not None)
        mid = chair.slot_of(cam)
        assert mid is not None
        await chair.wait_for(lambda: chair.frames_by_mid[mid] >= 10)
    finally:
        await chair.close()


async def test_squad_phone_gets_a_join_link(
    video_client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """A squad member's "share video" returns a join link that joins as a participant labelled on site."""
    officer = await make_user("duty_officer", COUNTY)
    data = await create_meeting(video_client, officer.headers, invite=["330381001"])
    member = await make_user("squad_member", "330381001")
    resp = await video_client.post(f"/api/v1/meetings/{data['id']}/share", headers=member.headers)
    assert resp.status == 201
    share = await resp.json()
    assert share["kind"] == "squad" and "camera=environment" in share["url"]
    phone = MeetingPeer(ws_url(video_client, share["url"]), colour="white", slots=1)
    try:
        await phone.join()
        assert phone.me["kind"] == "squad" and phone.me["role"] == "participant"
    finally:
        await phone.close()


async def test_recording_muxes_forwarded_packets(
    video_client: TestClient[Any, Any], make_user: UserFactory, clean_stores: StoreUrls
) -> None:
    """The chair's recording writes a Matroska file of the forwarded VP8 and Opus packets, linked to the meeting and case."""
    officer = await make_user("duty_officer", COUNTY)
    data = await create_meeting(
        video_client, officer.headers, invite=["330381001"], incident_id="RA20260503-0001"
    )
    chair = MeetingPeer(
        ws_url(video_client, data["chair_link"]["url"]), colour="red", audio=True, decode=False
    )
    site = MeetingPeer(
        ws_url(video_client, data["links"][0]["url"]), colour="green", audio=True, decode=False
    )
    try:
        await chair.join()
        await site.join()
        await chair.send("rollcall", participant=site.id)
        await chair.send("record", on=True)
        await chair.wait_for(lambda: any(m["type"] == "recording" and m["on"] for m in chair.messages))
        from dispatchd.video.service import ROOMS

        room = video_client.server.app[CTX][ROOMS].rooms[data["id"]]
        await chair.wait_for(
            lambda: room.recorder is not None and sum(t.frames_sent for t in room.recorder.video) >= 15
        )
        await chair.send("record", on=False)
        await chair.wait_for(lambda: any(m["type"] == "recording" and not m["on"] for m in chair.messages))
    finally:
        await chair.close()
        await site.close()
    conn = await asyncpg.connect(clean_stores.database)
    try:
        row = await conn.fetchrow(
            "SELECT path, bytes, incident_id FROM meeting_recordings WHERE meeting_id = $1", data["id"]
        )
    finally:
        await conn.close()
    assert row is not None and row["bytes"] > 0 and row["incident_id"] == "RA20260503-0001"
    data_dir: Path = video_client.server.app[CTX].settings.data.dir
    with av.open(str(data_dir / row["path"])) as container:
        kinds = sorted({s.codec_context.name for s in container.streams})
        assert "vp8" in kinds and "opus" in kinds
        counts = {"video": 0, "audio": 0}
        for packet in container.demux():
            if packet.size:
                counts[packet.stream.type] += 1
        seconds = float(container.duration or 0) / av.time_base
    assert counts["video"] >= 10 and counts["audio"] >= 10
    assert seconds < 20  # timestamps kept their clock (a 90 kHz/ms mix-up would stretch it)
