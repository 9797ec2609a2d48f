"""Recordings of both sides: one mixed file and one per side, who may hear them, how long they stay."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from dispatchd.channels.hotline import calls
from dispatchd.channels.hotline.voice import recordings, tones, wav
from dispatchd.clock import FakeClock
from dispatchd.domain.orgs import OrgTree
from dispatchd.web.appkeys import CTX
from tests.channels.hotline.voice.conftest import call_state, eventually, sip_port, until, waiting_call
from tests.channels.hotline.voice.peers import OfficerPeer, ToneCaller
from tests.conftest import COUNTY, AppFactory, UserFactory
from tests.incidents.helpers import GRID, OTHER_TOWN, TOWN, point_in


async def test_both_sides_per_side_files_and_who_may_hear_them(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree, clock: FakeClock
) -> None:
    """With record_legs on, the caller's file holds only 440 Hz and the officer's only 1,000 Hz while
    the mix holds both; a township user may hear it once the call's case lies in their township, one
    of another township may not; recordings older than recording_days are deleted, and that is
    recorded in the call's timeline."""
    client: TestClient[Any, Any] = await make_client(video_host_addresses="127.0.0.1", voice_record_legs=True)
    officer = await make_user("duty_officer", COUNTY)
    local = await make_user("grid_worker", TOWN)
    stranger = await make_user("grid_worker", OTHER_TOWN)
    caller = ToneCaller("127.0.0.1", sip_port(client))
    peer = OfficerPeer(1000)
    try:
        await caller.call()
        call = await waiting_call(client, officer.headers)
        answered = await client.post(
            f"/api/v1/hotline/calls/{call['id']}/answer",
            json={"offer": await peer.offer()},
            headers=officer.headers,
        )
        await peer.accept((await answered.json())["answer"])
        await until(lambda: len(peer.heard()) > 16000 and len(caller.heard()) > 16000)
        await caller.hangup()

        async def ended() -> bool:
            return (await call_state(client, officer.headers, call["id"]))["state"] == "ended"

        await eventually(ended)
    finally:
        await peer.close()
        await caller.close()

    async def fetch(who: Any, side: str = "") -> tuple[int, bytes]:
        query = f"?side={side}" if side else ""
        response = await client.get(
            f"/api/v1/hotline/calls/{call['id']}/recording{query}", headers=who.headers
        )
        return response.status, await response.read()

    async def closed() -> bool:
        status, data = await fetch(officer, "officer")
        return status == 200 and int.from_bytes(data[40:44], "little") > 0  # the header is completed at close

    await eventually(closed)
    caller_side = wav.read_wav((await fetch(officer, "caller"))[1])
    officer_side = wav.read_wav((await fetch(officer, "officer"))[1])
    mix = wav.read_wav((await fetch(officer))[1])
    assert (
        max(tones.sweep_shares(caller_side, 440)) > 0.9 and max(tones.sweep_shares(caller_side, 1000)) < 0.05
    )
    assert (
        max(tones.sweep_shares(officer_side, 1000)) > 0.9
        and max(tones.sweep_shares(officer_side, 440)) < 0.05
    )
    assert len(mix) == len(caller_side) == len(officer_side)  # one timeline
    assert max(tones.sweep_shares(mix, 440)) > 0.3 and max(tones.sweep_shares(mix, 1000)) > 0.3

    assert (await fetch(local))[0] == 404  # no case yet: only the hotline's desk
    lat, lon = point_in(org_tree, GRID)
    made = await client.post(
        f"/api/v1/hotline/calls/{call['id']}/incident",
        json={
            "category": "incident.dispute",
            "description": "邻里纠纷",
            "location": {"lat": lat, "lon": lon},
        },
        headers=officer.headers,
    )
    assert made.status == 201
    assert (await fetch(local))[0] == 200 and (await fetch(stranger))[0] == 404
    assert (await fetch(officer, "nobody"))[0] == 404

    ctx = client.server.app[CTX]
    assert await recordings.purge(ctx, clock.now(), calls.forget_recordings) == 0
    clock.advance(timedelta(days=ctx.settings.voice.recording_days + 1))
    assert await recordings.purge(ctx, clock.now(), calls.forget_recordings) == 1
    later = await make_user("duty_officer", COUNTY)  # the first officer's token has long expired
    after = await call_state(client, later.headers, call["id"])
    assert (await fetch(later))[0] == 404 and after["recording"] is False
    deleted = [e for e in after["timeline"] if e["action"] == "recording_deleted"]
    assert len(deleted) == 1 and deleted[0]["actor_name"] == "retention"  # the retention is recorded
