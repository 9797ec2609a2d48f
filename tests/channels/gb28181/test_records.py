"""A camera's recordings, asked of its device (GB/T 28181 §9.7 RecordInfo) and played back (§9.8) by
a duty officer through the API: the simulated device (written from the standard) answers in parts over real SIP on
loopback; the officer gets every recording overlapping the period, in time order with aware times;
an answer is complete only when all its parts came; bad periods are refused."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from dispatchd.channels.gb28181.edge import MAX_RECORDS, RecordSearch
from dispatchd.channels.gb28181.manscdp import RecordInfo, RecordItem
from dispatchd.channels.gb28181.runtime import GB28181
from dispatchd.domain.orgs import OrgTree
from dispatchd.web.appkeys import CTX
from tests.channels.gb28181.conftest import DeviceFactory, Viewer, poll, start_platform
from tests.channels.gb28181.device import xml_text
from tests.channels.gb28181.test_platform import registered_device
from tests.conftest import COUNTY, UserFactory

DAY = [
    ("2026-05-03T06:00:00", "2026-05-03T07:00:00"),
    ("2026-05-03T07:00:00", "2026-05-03T08:00:00"),
    ("2026-05-03T08:00:00", "2026-05-03T09:00:00"),
    ("2026-05-02T06:00:00", "2026-05-02T07:00:00"),  # the day before: outside the period asked
]


async def test_the_officer_lists_a_cameras_recordings_for_a_period(
    platform: TestClient[Any, Any], make_device: DeviceFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Three recordings of the morning come back in two parts (two per message), whole and in time
    order, their times in UTC+8 as the device meant them; the query named the camera's channel and
    the period in Beijing time; the day before is not asked for."""
    officer = await make_user("duty_officer", COUNTY)
    device = await registered_device(platform, make_device, officer.headers)
    camera = device.channels[0]
    device.recordings[camera.id] = list(reversed(DAY))
    r = await platform.get(
        f"/api/v1/cameras/{camera.id}/records",
        params={"from": "2026-05-02T21:30:00Z", "to": "2026-05-03T01:30:00Z"},  # 05:30–09:30 Beijing
        headers=officer.headers,
    )
    assert r.status == 200, await r.text()
    body = await r.json()
    assert body["complete"] is True and body["total"] == 3
    assert [(x["start"], x["end"]) for x in body["records"]] == [(s + "+08:00", e + "+08:00") for s, e in DAY[:3]]
    assert all(x["seconds"] == 3600 and x["channel"] == camera.id for x in body["records"])
    assert body["camera"]["name"] == camera.name
    (query,) = device.record_queries
    assert xml_text(query.body, "DeviceID") == camera.id
    assert (xml_text(query.body, "StartTime"), xml_text(query.body, "EndTime")) == ("2026-05-03T05:30:00", "2026-05-03T09:30:00")


async def test_a_period_without_recordings_and_bad_periods(
    platform: TestClient[Any, Any], make_device: DeviceFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """No recordings: an empty, complete answer. A period ending before it starts, longer than 7 days
    or not a time is refused 422 naming the field; a camera outside the jurisdiction is 404."""
    officer = await make_user("duty_officer", COUNTY)
    device = await registered_device(platform, make_device, officer.headers)
    camera = device.channels[0]
    path = f"/api/v1/cameras/{camera.id}/records"
    body = await (await platform.get(path, headers=officer.headers)).json()
    assert body["records"] == [] and body["complete"] is True
    for params, field in (
        ({"from": "2026-05-03T10:00:00Z", "to": "2026-05-03T09:00:00Z"}, "from"),
        ({"from": "2026-04-01T00:00:00Z", "to": "2026-05-03T00:00:00Z"}, "from"),
        ({"to": "yesterday"}, "to"),
    ):
        r = await platform.get(path, params=params, headers=officer.headers)
        assert r.status == 422 and field in (await r.json())["error"]["fields"], params
    township = await make_user("duty_officer", "330381002")
    r = await platform.get(path, headers=township.headers)
    assert r.status == 404


async def test_an_answer_in_parts_is_complete_only_when_every_part_came() -> None:
    """The search gathers parts until it holds SumNum recordings: one part of two leaves it
    incomplete and waiting, the second completes it."""
    loop = asyncio.get_running_loop()
    search = RecordSearch(loop.create_future())
    item = RecordItem("34020000001310000001", start_time="2026-05-03T06:00:00", end_time="2026-05-03T07:00:00")
    search.add(RecordInfo(7, "34020000001310000001", "通道", 2, (item,)))
    assert not search.complete and not search.done.done() and search.total == 2
    search.add(RecordInfo(7, "34020000001310000001", "通道", 2, (item,)))
    assert search.complete and search.done.done() and len(search.records) == 2


async def test_a_recording_is_played_back_in_a_stream_of_its_own(
    platform: TestClient[Any, Any], make_device: DeviceFactory, make_user: UserFactory, org_tree: OrgTree, viewers: Any
) -> None:
    """POST …/playback with a recording's range: the device gets an INVITE of its own with s=Playback,
    u=<channel>:0, t=<start> <end> in unix seconds and a y= SSRC marked as history (first digit 1);
    the viewer decodes its frames beside a live viewer of the same camera (two streams); closing the
    playback ends its stream with a BYE and leaves the live one; a range the wrong way is 422."""
    officer = await make_user("duty_officer", COUNTY)
    device = await registered_device(platform, make_device, officer.headers)
    camera = device.channels[0]
    live: Viewer = viewers()
    assert await live.open(platform, camera.id, officer.headers) == 200
    playback: Viewer = viewers()
    span = {"start": "2026-05-03T06:00:00+08:00", "end": "2026-05-03T07:30:00+08:00"}
    assert await playback.open(platform, camera.id, officer.headers, playback=span) == 200

    async def both_decode() -> bool:
        return len(live.frames) >= 10 and len(playback.frames) >= 10

    await poll(both_decode)
    offers = [s.offer for s in device.streams.values()]
    assert len(offers) == 2
    (history,) = [o for o in offers if "s=Playback" in o]
    lines = dict((line[:1], line[2:]) for line in history.split("\r\n") if len(line) > 2 and line[1] == "=")
    assert lines["u"] == f"{camera.id}:0"
    assert lines["t"] == "1777759200 1777764600"  # 06:00 and 07:30 Beijing time, 3 May 2026
    assert lines["y"].startswith("1") and len(lines["y"]) == 10
    r = await platform.delete(f"/api/v1/cameras/{camera.id}/view/{playback.session}", headers=officer.headers)
    assert r.status == 200

    async def one_bye() -> bool:
        return len(device.byes) == 1

    await poll(one_bye)
    frames = len(live.frames)
    await poll(lambda: _more(live, frames))
    r = await platform.post(
        f"/api/v1/cameras/{camera.id}/playback",
        json={"offer": {"type": "offer", "sdp": "v=0"}, "start": span["end"], "end": span["start"]},
        headers=officer.headers,
    )
    assert r.status == 422 and "start" in (await r.json())["error"]["fields"]


async def _more(viewer: Viewer, than: int) -> bool:
    return len(viewer.frames) > than + 5  # the live view goes on


async def test_the_end_of_a_recording_ends_its_playback(
    make_client: Any, make_device: DeviceFactory, make_user: UserFactory, org_tree: OrgTree, viewers: Any
) -> None:
    """The device sends 20 frames of the recording, then MediaStatus 121: the platform ends that
    playback with a BYE (long before a stall would: stall_timeout is a minute here) and does not ask
    for it again; the viewer got the frames."""
    platform = await start_platform(make_client, gb28181_stall_timeout=60)
    officer = await make_user("duty_officer", COUNTY)
    device = await registered_device(platform, make_device, officer.headers, playback_frames=20)
    camera = device.channels[1]
    viewer: Viewer = viewers()
    span = {"start": "2026-05-03T06:00:00+08:00", "end": "2026-05-03T06:10:00+08:00"}
    assert await viewer.open(platform, camera.id, officer.headers, playback=span) == 200

    async def ended() -> bool:
        return len(device.byes) == 1

    await poll(ended)
    edge = platform.server.app[CTX][GB28181].edge
    (playing,) = [s for s in edge.streams.streams.values() if s.playback is not None]
    assert playing.plan.state == "finished" and playing.plan.next_deadline() is None  # not asked again
    assert edge.streams.totals.invites == 1 and len(viewer.frames) >= 5


async def test_a_device_plays_back_at_most_four_recordings_at_once(
    platform: TestClient[Any, Any], make_device: DeviceFactory, make_user: UserFactory, org_tree: OrgTree, viewers: Any
) -> None:
    """Four playbacks of one device's cameras are taken; a fifth is refused 409 (playbacks_full), and
    once one is closed another is taken."""
    officer = await make_user("duty_officer", COUNTY)
    device = await registered_device(platform, make_device, officer.headers)
    span = {"start": "2026-05-03T06:00:00+08:00", "end": "2026-05-03T06:10:00+08:00"}
    opened: list[Viewer] = []
    for n in range(4):
        viewer: Viewer = viewers()
        assert await viewer.open(platform, device.channels[n % 3].id, officer.headers, playback=span) == 200
        opened.append(viewer)
    fifth: Viewer = viewers()
    fifth.pc.addTransceiver("video", direction="recvonly")
    await fifth.pc.setLocalDescription(await fifth.pc.createOffer())
    r = await platform.post(
        f"/api/v1/cameras/{device.channels[0].id}/playback",
        json={"offer": {"type": "offer", "sdp": fifth.pc.localDescription.sdp}, **span},
        headers=officer.headers,
    )
    assert r.status == 409 and (await r.json())["error"]["code"] == "playbacks_full"
    r = await platform.delete(f"/api/v1/cameras/{device.channels[0].id}/view/{opened[0].session}", headers=officer.headers)
    assert r.status == 200
    again: Viewer = viewers()
    assert await again.open(platform, device.channels[0].id, officer.headers, playback=span) == 200


async def test_a_device_cannot_fill_the_memory_with_recordings() -> None:
    """A device declaring a huge SumNum and sending part after part: the search keeps MAX_RECORDS,
    stops waiting there, and says it is incomplete."""
    search = RecordSearch(asyncio.get_running_loop().create_future())
    item = RecordItem("34020000001310000001", start_time="2026-05-03T06:00:00", end_time="2026-05-03T07:00:00")
    part = RecordInfo(7, "34020000001310000001", "通道", 10**9, (item,) * 2000)
    for _ in range(8):
        search.add(part)
    assert len(search.records) == MAX_RECORDS and search.done.done() and not search.complete
