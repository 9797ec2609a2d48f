"""The hotline's queue, records, CTI webhook, statistics and caller history over HTTP, on real stores."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import hmac
import json
import random
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from dispatchd.channels.hotline import calls
from dispatchd.channels.hotline.demo import _desk_round
from dispatchd.channels.hotline.presence import Presence
from dispatchd.channels.hotline.slots import PRESENCE, SIP_PORTS
from dispatchd.channels.hotline.uac import SipCaller
from dispatchd.clock import FakeClock
from dispatchd.config import ConfigError, Settings
from dispatchd.context import Context
from dispatchd.http_server import build_app
from dispatchd.store.keys import hotline_instance
from dispatchd.web.appkeys import CTX
from tests.conftest import COUNTY, AppFactory, StoreUrls, UserFactory

KEY = "cti-test-key"
TOWNSHIP = "330381001"  # 安阳街道, inside the demo county


@pytest.fixture
async def hotline(make_client: AppFactory) -> TestClient[Any, Any]:
    """An instance with the CTI webhook on."""
    return await make_client(hotline_cti_hmac_key=KEY)


def app_of(client: TestClient[Any, Any]) -> Context:
    return client.server.app[CTX]


async def cti(
    client: TestClient[Any, Any], clock: FakeClock, event: str, call_id: str, *, key: str = KEY, **fields: Any
) -> Any:
    """Post a CTI event signed as the PBX would sign it."""
    body = json.dumps({"event": event, "call_id": call_id, **fields}).encode()
    stamp = str(int(clock.now().timestamp()))
    signature = "sha256=" + hmac.new(key.encode(), stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return await client.post(
        "/api/v1/hotline/events",
        data=body,
        headers={
            "Content-Type": "application/json",
            "X-Dispatchd-Timestamp": stamp,
            "X-Dispatchd-Signature": signature,
        },
    )


async def ring(
    client: TestClient[Any, Any], clock: FakeClock, call_id: str, caller: str, callee: str
) -> dict[str, Any]:
    response = await cti(client, clock, "ringing", call_id, caller=caller, callee=callee)
    assert response.status == 200
    call: dict[str, Any] = (await response.json())["call"]
    return call


async def test_cti_webhook_is_signed(
    hotline: TestClient[Any, Any], clock: FakeClock, make_client: AppFactory
) -> None:
    """The webhook takes only events signed with the key and a fresh timestamp; without a key it is off."""
    assert (
        await cti(hotline, clock, "ringing", "p1", key="wrong", caller="1", callee="967999")
    ).status == 401
    unsigned = await hotline.post("/api/v1/hotline/events", json={"event": "ringing", "call_id": "p1"})
    assert unsigned.status == 401
    response = await cti(hotline, clock, "ringing", "p1", caller="13900001111", callee="967999")
    assert response.status == 200
    stale_stamp = str(int(clock.now().timestamp()) - 3600)
    body = b'{"event": "ended", "call_id": "p1"}'
    signature = (
        "sha256=" + hmac.new(KEY.encode(), stale_stamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    )
    stale = await hotline.post(
        "/api/v1/hotline/events",
        data=body,
        headers={"X-Dispatchd-Timestamp": stale_stamp, "X-Dispatchd-Signature": signature},
    )
    assert stale.status == 401 and (await stale.json())["error"]["code"] == "stale_signature"
    off = await make_client()
    assert (await cti(off, clock, "ringing", "p2", caller="1", callee="967999")).status == 403


async def test_cti_call_through_its_states_with_durations(
    hotline: TestClient[Any, Any], clock: FakeClock, make_user: UserFactory
) -> None:
    """ringing → answered by a known agent → ended: the same queue and records as SIP, with durations."""
    officer = await make_user("duty_officer", COUNTY, username="agent007")
    call = await ring(hotline, clock, "pbx-1", "+86 139 0000 2222", "0577-6589 0109")
    assert call["source"] == "cti" and call["caller"] == "13900002222" and call["dialled"] == "057765890109"
    assert call["department"] == "330381-STHJ" and call["state"] == "queued"
    clock.advance(6)
    answered = await cti(hotline, clock, "answered", "pbx-1", agent="agent007")
    body = (await answered.json())["call"]
    assert (
        body["state"] == "answered" and body["agent_user_id"] == officer.user.id and body["wait_seconds"] == 6
    )
    clock.advance(95)
    ended = (await (await cti(hotline, clock, "ended", "pbx-1")).json())["call"]
    assert ended["state"] == "ended" and ended["talk_seconds"] == 95 and ended["wait_seconds"] == 6
    again = await cti(hotline, clock, "ringing", "pbx-1", caller="13900002222", callee="0577-6589 0109")
    assert (await again.json())["call"]["id"] == call["id"]  # a repeated event does not make a second call
    refused = await hotline.post(f"/api/v1/hotline/calls/{call['id']}/answer", headers=officer.headers)
    assert refused.status == 409


async def test_statistics_against_nfpa_1225(
    hotline: TestClient[Any, Any], clock: FakeClock, make_user: UserFactory
) -> None:
    """Share answered within 10 s and abandonment rate: one quick answer, one late, one abandoned."""
    leader = await make_user("leader", COUNTY)
    await ring(hotline, clock, "a", "13900000001", "967999")
    await ring(hotline, clock, "b", "13900000002", "967999")
    await ring(hotline, clock, "c", "13900000003", "0577-6589 0108")
    clock.advance(4)
    await cti(hotline, clock, "answered", "a", agent="x")
    clock.advance(26)
    await cti(hotline, clock, "answered", "b", agent="x")
    await cti(hotline, clock, "ended", "c")
    await ring(hotline, clock, "d", "13900000004", "967999")  # still waiting: counted in neither share
    response = await hotline.get("/api/v1/hotline/stats", headers=leader.headers)
    assert response.status == 200
    figures = await response.json()
    assert figures["offered"] == 4 and figures["answered"] == 2 and figures["abandoned"] == 1
    assert figures["waiting"] == 1 and figures["answered_within_target"] == 1
    assert figures["share_answered_within_target"] == pytest.approx(1 / 3, abs=1e-3)
    assert figures["abandonment_rate"] == pytest.approx(1 / 3, abs=1e-3)
    assert figures["meets_standard"] is False and figures["standard"]["answer_target_s"] == 10
    assert figures["median_wait_s"] == 17.0
    by_line = {line["dialled"]: line for line in figures["by_line"]}
    assert by_line["967999"]["offered"] == 3 and by_line["057765890108"]["abandoned"] == 1
    overall = await (await hotline.get("/api/v1/stats", headers=leader.headers)).json()
    assert overall["hotline"]["offered"] == 4


async def test_ringing_goes_to_the_longest_idle_officer_and_moves_on(
    hotline: TestClient[Any, Any], clock: FakeClock, make_user: UserFactory
) -> None:
    """Available officers are rung longest idle first; an unanswered ring passes on; elsewhere is never rung."""
    first = await make_user("duty_officer", COUNTY, username="first")
    second = await make_user("duty_officer", COUNTY, username="second")
    township = await make_user("duty_officer", TOWNSHIP, username="township")
    for account in (first, second, township):
        clock.advance(1)
        response = await hotline.post(
            "/api/v1/hotline/presence", json={"available": True}, headers=account.headers
        )
        assert response.status == 200
    call = await ring(hotline, clock, "r1", "13900000005", "967999")
    assert call["state"] == "ringing" and call["ringing_user_id"] == first.user.id
    other = await ring(hotline, clock, "r2", "13900000006", "967999")
    assert other["ringing_user_id"] == second.user.id  # the first is already ringing
    third = await ring(hotline, clock, "r3", "13900000007", "967999")
    assert third["state"] == "queued"  # the township officer does not take the county's hotline

    ctx = app_of(hotline)
    clock.advance(21)  # past ring_timeout: both rings pass on
    await calls.queue_round(ctx)
    rows = {
        c["id"]: c
        for c in (await (await hotline.get("/api/v1/hotline/calls", headers=first.headers)).json())["calls"]
    }
    assert rows[call["id"]]["ringing_user_id"] == second.user.id
    assert rows[other["id"]]["ringing_user_id"] == first.user.id
    answered = await hotline.post(f"/api/v1/hotline/calls/{call['id']}/answer", headers=second.headers)
    assert answered.status == 409 and (await answered.json())["error"]["code"] == "cti_call"
    officers = [o.username for o in await ctx[PRESENCE].available()]
    assert officers == ["township", "first", "second"]  # who let a ring pass went to the back
    away = await hotline.post("/api/v1/hotline/presence", json={"available": False}, headers=first.headers)
    assert away.status == 200
    listed = await (await hotline.get("/api/v1/hotline/presence", headers=first.headers)).json()
    assert {o["username"]: o["available"] for o in listed["officers"]}["first"] is False


async def test_caller_history_and_duplicate_suggestion(
    hotline: TestClient[Any, Any], clock: FakeClock, make_user: UserFactory
) -> None:
    """A repeat caller shows their earlier call and case; the case is suggested as the same matter."""
    officer = await make_user("duty_officer", COUNTY)
    earlier = await ring(hotline, clock, "h1", "13900000008", "0577-6589 0104")
    made = await hotline.post(
        f"/api/v1/hotline/calls/{earlier['id']}/incident",
        json={"description": "邻居装修噪音扰民", "address": "安阳街道某小区"},
        headers=officer.headers,
    )
    assert made.status == 201
    case = (await made.json())["incident"]
    assert case["category"] == "incident.dispute" and case["caller"] == "13900000008"
    clock.advance(3600)
    later = await ring(hotline, clock, "h2", "139 0000 0008", "967999")
    listed = await (await hotline.get("/api/v1/hotline/calls?state=queued", headers=officer.headers)).json()
    [brief] = [c for c in listed["calls"] if c["id"] == later["id"]]
    assert brief["history"]["previous_calls"] == 1 and brief["history"]["cases"][0]["id"] == case["id"]
    detail = await (await hotline.get(f"/api/v1/hotline/calls/{later['id']}", headers=officer.headers)).json()
    assert [c["id"] for c in detail["history"]["previous_calls"]] == [earlier["id"]]
    assert [c["id"] for c in detail["history"]["suggested_duplicates"]] == [case["id"]]
    no_category = await hotline.post(
        f"/api/v1/hotline/calls/{later['id']}/incident",
        json={"description": "同一件事"},
        headers=officer.headers,
    )
    assert no_category.status == 422  # 967999 carries no category
    second = await hotline.post(
        f"/api/v1/hotline/calls/{later['id']}/incident",
        json={"description": "又来电反映装修噪音", "category": "incident.dispute"},
        headers=officer.headers,
    )
    duplicates = (await second.json())["incident"]["duplicates"]
    assert [d["id"] for d in duplicates] == [case["id"]] and duplicates[0]["reasons"] == ["same_caller"]


async def test_attach_a_call_to_a_case(
    hotline: TestClient[Any, Any], clock: FakeClock, make_user: UserFactory
) -> None:
    """A call attached to an existing case adds the hotline to its channels and links both ways."""
    officer = await make_user("duty_officer", COUNTY)
    created = await hotline.post(
        "/api/v1/incidents",
        json={"category": "hazard.fire", "description": "仓库消防通道堵塞", "address": "工业园区"},
        headers=officer.headers,
    )
    case = await created.json()
    call = await ring(hotline, clock, "t1", "13900000009", "0577-6589 0108")
    missing = await hotline.post(
        f"/api/v1/hotline/calls/{call['id']}/attach", json={"incident_id": 999999}, headers=officer.headers
    )
    assert missing.status == 404
    attached = await hotline.post(
        f"/api/v1/hotline/calls/{call['id']}/attach",
        json={"incident_id": case["id"]},
        headers=officer.headers,
    )
    assert attached.status == 200
    body = await attached.json()
    assert body["call"]["incident_id"] == case["id"] and "hotline" in body["incident"]["channels"]


async def test_jurisdiction_and_roles(
    hotline: TestClient[Any, Any], clock: FakeClock, make_user: UserFactory
) -> None:
    """A township officer does not see the county's calls (404); a grid worker may not list calls."""
    call = await ring(hotline, clock, "j1", "13900000010", "967999")
    township = await make_user("duty_officer", TOWNSHIP)
    assert (await hotline.get(f"/api/v1/hotline/calls/{call['id']}", headers=township.headers)).status == 404
    assert (await (await hotline.get("/api/v1/hotline/calls", headers=township.headers)).json())[
        "calls"
    ] == []
    answer = await hotline.post(f"/api/v1/hotline/calls/{call['id']}/answer", headers=township.headers)
    assert answer.status == 404
    grid = await make_user("grid_worker", COUNTY)
    assert (await hotline.get("/api/v1/hotline/calls", headers=grid.headers)).status == 403
    assert (await hotline.get("/api/v1/hotline/calls?state=nonsense", headers=township.headers)).status == 422


async def test_board_section_lists_live_calls(hotline: TestClient[Any, Any], clock: FakeClock) -> None:
    """The board's ``calls`` section has the live calls of the jurisdiction and today's counters."""
    await ring(hotline, clock, "b1", "13900000011", "967999")
    ctx = app_of(hotline)
    section = await ctx.board_sections["calls"](ctx, ctx.orgs.descendants(COUNTY))
    assert [c["caller"] for c in section["live"]] == ["13900000011"]
    assert section["counters"]["offered"] == 1 and section["counters"]["waiting"] == 1
    elsewhere = await ctx.board_sections["calls"](ctx, ctx.orgs.descendants(TOWNSHIP))
    assert elsewhere["live"] == []


async def eventually(probe: Callable[[], Awaitable[Any]]) -> Any:
    async with asyncio.timeout(15):
        while True:
            found = await probe()
            if found:
                return found
            await asyncio.sleep(0.05)


async def test_answered_call_audio_is_recorded(client: TestClient[Any, Any], make_user: UserFactory) -> None:
    """The caller's audio after the answer (no officer's console: recording only) lands in a 16-bit
    PCM WAV served by the API."""
    officer = await make_user("duty_officer", COUNTY)
    port = client.server.app[CTX][SIP_PORTS]["udp"]
    caller = SipCaller("127.0.0.1", port, caller="13900000012", dialled="967999")
    placing = asyncio.create_task(caller.place(patience=20, talk=0.5, audio_seconds=0.4))

    async def queued() -> list[dict[str, Any]]:
        body = await (await client.get("/api/v1/hotline/calls?state=queued", headers=officer.headers)).json()
        found: list[dict[str, Any]] = body["calls"]
        return found

    [call] = await eventually(queued)
    assert (
        await client.post(f"/api/v1/hotline/calls/{call['id']}/answer", headers=officer.headers)
    ).status == 200
    outcome = await asyncio.wait_for(placing, 30)
    assert outcome.outcome == "answered" and outcome.hung_up_by == "caller" and outcome.audio_packets == 20

    async def ended() -> Any:
        body = await (await client.get(f"/api/v1/hotline/calls/{call['id']}", headers=officer.headers)).json()
        return body if body["state"] == "ended" else None

    assert (await eventually(ended))["recording"] is True
    wav = await (
        await client.get(f"/api/v1/hotline/calls/{call['id']}/recording", headers=officer.headers)
    ).read()
    assert wav[:4] == b"RIFF" and wav[8:12] == b"WAVE"
    format_tag, channels, rate = struct.unpack("<HHI", wav[20:28])
    assert (format_tag, channels, rate) == (1, 1, 8000)  # 16-bit PCM: both sides can be mixed in it
    data_bytes = struct.unpack("<I", wav[40:44])[0]
    assert data_bytes == len(wav) - 44 and data_bytes >= 2 * 20 * 160  # all 20 packets, placed in time


async def test_caller_who_gives_up_and_the_demo_desk(
    make_client: AppFactory, make_user: UserFactory, clock: FakeClock
) -> None:
    """A simulated caller out of patience CANCELs (abandoned); the demo desk answers a waiting call."""
    client = await make_client(demo_speed=1.0)
    ctx = app_of(client)
    port = ctx[SIP_PORTS]["udp"]
    gone = await SipCaller("127.0.0.1", port, caller="13900000013", dialled="967999").place(
        patience=0.5, talk=1
    )
    assert gone.outcome == "abandoned" and gone.status == 487
    desk = await make_user("duty_officer", COUNTY, username="desk")
    placing = asyncio.create_task(
        SipCaller("127.0.0.1", port, caller="13900000014", dialled="0577-65890113").place(
            patience=20, talk=0.2, audio_seconds=0
        )
    )

    async def waiting() -> list[Any]:
        async with ctx.pool.acquire() as conn:
            found: list[Any] = await conn.fetch("SELECT id FROM hotline_calls WHERE state = 'queued'")
        return found

    await eventually(waiting)
    clock.advance(30)  # longer than any desk's patience
    await _desk_round(ctx, desk.user, random.Random(1), {})
    outcome = await asyncio.wait_for(placing, 30)
    assert outcome.outcome == "answered"
    async with ctx.pool.acquire() as conn:
        states = [r["state"] for r in await conn.fetch("SELECT state FROM hotline_calls ORDER BY id")]
    assert states[0] == "abandoned"


async def test_stopping_instance_ends_its_calls(
    make_client: AppFactory, make_user: UserFactory, clean_stores: StoreUrls
) -> None:
    """An instance that stops refuses its waiting calls (480) and records them, and stops promptly."""
    client = await make_client()
    officer = await make_user("duty_officer", COUNTY)
    port = client.server.app[CTX][SIP_PORTS]["udp"]
    placing = asyncio.create_task(
        SipCaller("127.0.0.1", port, caller="13900000015", dialled="967999").place(patience=30, talk=1)
    )

    async def queued() -> list[Any]:
        body = await (await client.get("/api/v1/hotline/calls?state=queued", headers=officer.headers)).json()
        found: list[Any] = body["calls"]
        return found

    [call] = await eventually(queued)
    async with asyncio.timeout(30):
        await client.close()
    outcome = await asyncio.wait_for(placing, 30)
    assert outcome.outcome == "refused" and outcome.status == 480
    conn = await asyncpg.connect(clean_stores.database)
    try:
        row = await conn.fetchrow("SELECT state, end_reason FROM hotline_calls WHERE id = $1", call["id"])
    finally:
        await conn.close()
    assert (row["state"], row["end_reason"]) == ("abandoned", "shutdown")


def test_unknown_hotline_unit_is_a_configuration_error(settings: Settings) -> None:
    """A [hotline] org that names no unit stops the start with the key named."""
    wrong = dataclasses.replace(settings, hotline=dataclasses.replace(settings.hotline, org="nowhere"))
    with pytest.raises(ConfigError, match=r"\[hotline\] org"):
        build_app(wrong)


async def test_console_connection_makes_the_officer_present(
    client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """A duty console's board socket makes its officer available for calls until it closes; a wall display does not."""
    officer = await make_user("duty_officer", COUNTY, username="console-officer")
    presence = app_of(client)[PRESENCE]

    async def available() -> list[str]:
        return [o.username for o in await presence.available()]

    wall = await client.ws_connect(f"/ws/board?token={officer.token}")
    assert (await wall.receive_json(timeout=10))["type"] == "snapshot"
    assert await available() == []
    console = await client.ws_connect(f"/ws/board?token={officer.token}&console=1")
    assert (await console.receive_json(timeout=10))["type"] == "snapshot"
    assert await available() == ["console-officer"]
    await console.close()
    for _ in range(100):
        if not await available():
            break
        await asyncio.sleep(0.05)
    assert await available() == []
    await wall.close()


async def test_consoles_of_an_instance_that_stopped_beating_are_reaped(
    client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """An officer whose only console was on an instance that died is no longer rung once that
    instance's key has expired and a live instance reaps; an officer with a console on a live
    instance as well, and one connected here, stay present."""
    ctx = app_of(client)
    here: Presence = ctx[PRESENCE]
    crashed = Presence(lambda: ctx.redis, ctx.clock, "crashed1")  # an instance that will stop beating
    only_there = await make_user("duty_officer", COUNTY, username="only-there")
    both = await make_user("duty_officer", COUNTY, username="both")
    await crashed.connected(only_there.user)
    await crashed.connected(both.user)
    console = await client.ws_connect(f"/ws/board?token={both.token}&console=1")
    assert (await console.receive_json(timeout=10))["type"] == "snapshot"
    local = await make_user("duty_officer", COUNTY, username="local")
    await here.set_available(local.user, True)

    async def available() -> set[str]:
        return {o.username for o in await here.available()}

    assert await available() == {"only-there", "both", "local"}
    assert await here.reap() == []  # every instance still beats: nothing to reap
    await ctx.redis.delete(hotline_instance("crashed1"))  # its time to live ran out
    assert await here.reap() == [only_there.user.id]
    assert await available() == {"both", "local"}
    await console.close()
    for _ in range(100):
        if "both" not in await available():
            break
        await asyncio.sleep(0.05)
    assert await available() == {"local"}
