"""Real WebRTC peers through the server: three aiortc participants, roll call, rotation, mute."""

from __future__ import annotations

import re
from typing import Any

from aiohttp.test_utils import TestClient

from dispatchd.video.service import ROOMS
from dispatchd.web.appkeys import CTX
from tests.conftest import COUNTY, UserFactory
from tests.video.conftest import create_meeting, ws_url
from tests.video.peers import MeetingPeer


async def _three(
    video_client: TestClient[Any, Any], make_user: UserFactory
) -> tuple[MeetingPeer, MeetingPeer, MeetingPeer]:
    officer = await make_user("duty_officer", COUNTY)
    data = await create_meeting(video_client, officer.headers, invite=["330381001", "330381002"])
    chair = MeetingPeer(ws_url(video_client, data["chair_link"]["url"]), colour="red")
    b = MeetingPeer(ws_url(video_client, data["links"][0]["url"]), colour="green")
    c = MeetingPeer(ws_url(video_client, data["links"][1]["url"]), colour="blue")
    for peer in (chair, b, c):
        await peer.join()
    return chair, b, c


async def test_three_peers_exchange_media_and_roll_call_switches(
    video_client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """Three aiortc peers each decode the others' video through the server; roll call changes what they get."""
    chair, b, c = await _three(video_client, make_user)
    try:
        # Before any roll call everyone sees the chair (red); the chair sees nobody yet.
        await b.wait_for(lambda: "red" in b.colours_seen())
        await c.wait_for(lambda: "red" in c.colours_seen())
        # 点名 B: the chair and C now receive B (green) as the speaker.
        await chair.send("rollcall", participant=b.id)
        await chair.wait_for(lambda: "green" in chair.colours_seen())
        await c.wait_for(lambda: "green" in c.colours_seen())
        assert c.slot_of(b.id) is not None and chair.slot_of(b.id) is not None
        # 点名 C: the chair and B now receive C (blue).
        await chair.send("rollcall", participant=c.id)
        await chair.wait_for(lambda: chair.slot_of(c.id) is not None)
        mid = chair.slot_of(c.id)
        assert mid is not None
        before = len(chair.received[mid])
        await chair.wait_for(lambda: "blue" in chair.received[mid][before:])
        await b.wait_for(lambda: "blue" in b.colours_seen())
        # Each peer has now decoded both others' video.
        assert chair.colours_seen() >= {"green", "blue"}
        assert b.colours_seen() >= {"red", "blue"}
        assert c.colours_seen() >= {"red", "green"}
        # C is the speaker and does not receive itself.
        assert c.slot_of(c.id) is None
    finally:
        for peer in (chair, b, c):
            await peer.close()


async def test_each_participant_receives_only_what_is_shown(
    video_client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """A participant's slots carry the chair and the speaker only; a site neither chair nor speaker is not forwarded to anyone."""
    chair, b, c = await _three(video_client, make_user)
    try:
        await chair.send("rollcall", participant=b.id)
        await c.wait_for(lambda: c.slot_of(b.id) is not None and c.slot_of(chair.id) is not None)
        room = next(iter(video_client.server.app[CTX][ROOMS].rooms.values()))
        sources = {pid: p.sources["video"] for pid, p in room.participants.items() if "video" in p.sources}
        await c.wait_for(lambda: len(sources) == 3)
        assert sources[c.id].subscribers == set()  # C is not on screen: nobody receives it
        assert len(sources[chair.id].subscribers) == 2  # B and C watch the chair
        assert len(sources[b.id].subscribers) == 2  # the chair and C watch the speaker
    finally:
        for peer in (chair, b, c):
            await peer.close()


async def test_only_the_chair_commands_and_hands_reach_the_chair(
    video_client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """A participant's roll call is refused; a raised hand shows on the roster and the chair gets that site."""
    chair, b, c = await _three(video_client, make_user)
    try:
        await b.send("rollcall", participant=c.id)
        await b.wait_for(lambda: any(m["type"] == "error" and m["code"] == "not_chair" for m in b.messages))
        await c.send("hand", raised=True)
        await chair.wait_for(lambda: any(r["id"] == c.id and r["hand"] for r in chair.roster))
        await chair.wait_for(lambda: chair.slot_of(c.id) is not None)
        await chair.send("mute", participant=b.id, muted=True)
        await b.wait_for(lambda: any(m["type"] == "muted" and m["muted"] for m in b.messages))
    finally:
        for peer in (chair, b, c):
            await peer.close()


async def test_a_rotation_interval_out_of_range_is_refused_by_name(
    video_client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """The chair's site rotation and page rotation refuse an interval outside 1–3600 s with
    ``bad_field`` naming it, and accept one inside."""
    chair, b, c = await _three(video_client, make_user)
    try:
        for kind, extra in (("rotate", {"participants": [b.id, c.id]}), ("page_rotate", {})):
            for bad in (0, 3601, True):
                before = len(chair.messages)
                await chair.send(kind, interval=bad, **extra)
                await chair.wait_for(
                    lambda before=before: any(
                        m["type"] == "error" and m["code"] == "bad_field" and "interval" in m.get("message", "")
                        for m in chair.messages[before:]
                    )
                )
        room = next(iter(video_client.server.app[CTX][ROOMS].rooms.values()))
        await chair.send("rotate", participants=[b.id, c.id], interval=5)
        await chair.wait_for(lambda: room.screen.as_json()["rotation"] is not None)
    finally:
        for peer in (chair, b, c):
            await peer.close()


async def test_the_server_asks_for_a_new_offer_when_a_participant_lacks_slots(
    video_client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """A participant that offered one video slot is asked to renegotiate once the chair and a speaker are
    both to be shown to it; after its new offer (on the same connection) it receives both."""
    officer = await make_user("duty_officer", COUNTY)
    data = await create_meeting(video_client, officer.headers, invite=["330381001", "330381002"])
    chair = MeetingPeer(ws_url(video_client, data["chair_link"]["url"]), colour="red")
    b = MeetingPeer(ws_url(video_client, data["links"][0]["url"]), colour="green")
    c = MeetingPeer(ws_url(video_client, data["links"][1]["url"]), colour=None, slots=1)
    try:
        for peer in (chair, b, c):
            await peer.join()
        await c.wait_for(lambda: "red" in c.colours_seen())
        assert c.asked == []  # the chair alone fits its one slot
        await chair.send("rollcall", participant=b.id)
        await c.wait_for(lambda: bool(c.asked))
        assert c.asked[-1] == {"type": "renegotiate", "video": 2, "audio": 0}
        await c.add_slots(video=2, audio=0)
        await c.wait_for(lambda: c.slot_of(b.id) is not None and c.slot_of(chair.id) is not None)
        mid = c.slot_of(b.id)
        assert mid is not None
        await c.wait_for(lambda: "green" in c.received[mid])
        assert len(c.asked) == 1  # satisfied: not asked again
        assert (await scrape(video_client))["dispatchd_video_renegotiations_total"] == 1
    finally:
        for peer in (chair, b, c):
            await peer.close()


async def scrape(client: TestClient[Any, Any]) -> dict[str, float]:
    """The samples of GET /metrics, by name with labels as written (``name{a="b"}``)."""
    r = await client.get("/metrics")
    assert r.status == 200
    text = await r.text()
    return {m[1]: float(m[2]) for m in re.finditer(r"^([a-z_]+(?:\{[^}]*\})?) (\S+)$", text, re.M)}


async def test_metrics_count_rooms_streams_frames_and_keyframe_requests(
    video_client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """/metrics shows this instance's room, its connected participants, the streams forwarded now, the
    frames in and out and the keyframe requests a roll call causes; the frame counters only grow."""
    chair, b, c = await _three(video_client, make_user)
    try:
        await b.wait_for(lambda: "red" in b.colours_seen())
        await c.wait_for(lambda: "red" in c.colours_seen())
        first = await scrape(video_client)
        assert first["dispatchd_video_rooms"] == 1
        assert first["dispatchd_video_participants"] == 3
        assert first['dispatchd_video_sources{kind="video"}'] == 3
        # B and C each receive the chair; nobody else is on screen yet.
        assert first['dispatchd_video_forwarded_streams{kind="video"}'] == 2
        assert first['dispatchd_video_frames_total{direction="in",kind="video"}'] > 0
        assert first['dispatchd_video_frames_total{direction="out",kind="video"}'] > 0
        requests = first["dispatchd_video_keyframe_requests_total"]
        await chair.send("rollcall", participant=b.id)
        await c.wait_for(lambda: "green" in c.colours_seen())
        second = await scrape(video_client)
        # The chair and C now also receive B; switching asked B for a keyframe.
        assert second['dispatchd_video_forwarded_streams{kind="video"}'] == 4
        assert second["dispatchd_video_keyframe_requests_total"] > requests
        for key in (
            'dispatchd_video_frames_total{direction="in",kind="video"}',
            'dispatchd_video_frames_total{direction="out",kind="video"}',
        ):
            assert second[key] > first[key]
    finally:
        for peer in (chair, b, c):
            await peer.close()


async def test_a_site_lays_out_a_wall_only_once_the_chair_allows_it(
    video_client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """A site's own wall is refused until the chair allows it (允许电视墙); then the site chooses a 4-way
    wall, receives the chair and the other site on it, and decodes the other site that the chair-and-
    speaker view would not have shown it; turning its wall off goes back to the chair alone."""
    chair, b, c = await _three(video_client, make_user)
    try:
        await b.send("layout", tiles=4)
        await b.wait_for(lambda: any(m["type"] == "error" and m["code"] == "no_wall" for m in b.messages))
        await chair.send("wall_allow", participant=b.id, allowed=True)
        await b.wait_for(lambda: b.id in b.screen.get("screen", {}).get("wall_allowed", []))
        await b.send("layout", tiles=4)
        await b.wait_for(lambda: (b.screen.get("wall") or {}).get("tiles") == 4)
        assert b.screen["shown"] == [chair.id, c.id]  # roll order: the chair, then the other site
        await b.wait_for(lambda: b.slot_of(c.id) is not None)
        mid = b.slot_of(c.id)
        assert mid is not None
        await b.wait_for(lambda: "blue" in b.received[mid])
        assert {s["size"] for s in b.screen["slots"] if s["participant"]} == {"medium"}
        await b.send("layout", tiles=0)
        await b.wait_for(lambda: b.screen.get("wall") is None and b.screen["shown"] == [chair.id])
    finally:
        for peer in (chair, b, c):
            await peer.close()
