"""Calls out through a trunk with real peers on loopback: a callback (回访) from a case with the
console's audio, and 叫应 — an order nobody accepted rings the unit's people until DTMF 1 accepts it."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from dispatchd.clock import FakeClock
from dispatchd.domain.orgs import OrgTree
from dispatchd.store.changes import trail
from dispatchd.web.appkeys import CTX
from tests.channels.hotline.voice.conftest import eventually, until
from tests.channels.hotline.voice.peers import OfficerPeer, PhoneTrunk, share_at
from tests.conftest import COUNTY, AppFactory, UserFactory
from tests.live.helpers import make_case, make_squad, order

REPORTER = "13900001234"


async def actions(client: TestClient[Any, Any], entity: str, entity_id: int) -> list[str]:
    """The actions of an entity's trail in the audit log, oldest first."""
    async with client.server.app[CTX].pool.acquire() as conn:
        return [row["action"] for row in await trail(conn, entity, entity_id)]


async def test_callback_to_the_reporter_with_the_console_audio(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """From a case, the officer calls its reporter back: the trunk challenges (digest), the phone
    rings and answers; each side hears the other's tone; the officer hangs up: the phone gets a BYE,
    the call out is ended/answered with a recording, each of its changes in the audit log; a second
    callback to a busy number fails busy."""
    trunk = PhoneTrunk(
        {REPORTER: "answer", "13900009999": "busy"}, frequency=440, username="desk", password="pw"
    )
    port = await trunk.start()
    client: TestClient[Any, Any] = await make_client(
        video_host_addresses="127.0.0.1",
        voice_trunk=f"127.0.0.1:{port}",
        voice_trunk_username="desk",
        voice_trunk_password="pw",
    )
    officer = await make_user("duty_officer", COUNTY)
    case = await make_case(client, officer, org_tree, caller=REPORTER)
    peer = OfficerPeer(1000)
    try:
        response = await client.post(
            "/api/v1/hotline/callouts",
            json={"incident_id": case["id"], "offer": await peer.offer()},
            headers=officer.headers,
        )
        assert response.status == 201, await response.text()
        body = await response.json()
        assert body["number"] == REPORTER and body["kind"] == "callback" and body["state"] == "dialling"
        await peer.accept(body["answer"])
        await until(lambda: {"type": "answered"} in peer.messages)
        assert trunk.challenged == 1 and trunk.authenticated == 1
        phone = trunk.call_to(REPORTER)
        assert phone is not None
        mark = len(peer.heard())
        await until(lambda: len(peer.heard()) > mark + 12000 and len(phone.heard()) > 12000)
        assert share_at(peer.heard()[mark:], 440, skip=0.2) > 0.9
        assert share_at(phone.heard(), 1000) > 0.9
        state = await (
            await client.get(f"/api/v1/hotline/callouts/{body['id']}", headers=officer.headers)
        ).json()
        assert state["state"] == "answered" and state["recording"] is True

        hung = await client.post(f"/api/v1/hotline/callouts/{body['id']}/hangup", headers=officer.headers)
        assert hung.status == 200
        await until(phone.ended.is_set)

        async def ended() -> dict[str, Any] | None:
            got = await (
                await client.get(f"/api/v1/hotline/callouts/{body['id']}", headers=officer.headers)
            ).json()
            return got if got["state"] == "ended" else None

        final = await eventually(ended)
        assert final["result"] == "answered" and final["talk_seconds"] is not None
        recorded = await actions(client, "callout", body["id"])
        assert recorded[:2] == ["created", "dialled"] and recorded[-2:] == ["answered", "ended"]
        listed = await (
            await client.get(f"/api/v1/hotline/callouts?incident_id={case['id']}", headers=officer.headers)
        ).json()
        assert [c["id"] for c in listed["callouts"]] == [body["id"]]
        recording = await client.get(
            f"/api/v1/hotline/callouts/{body['id']}/recording", headers=officer.headers
        )
        assert recording.status == 200 and (await recording.read())[:4] == b"RIFF"
    finally:
        await peer.close()

    busy_peer = OfficerPeer(1000)
    try:
        response = await client.post(
            "/api/v1/hotline/callouts",
            json={"incident_id": case["id"], "number": "139 0000 9999", "offer": await busy_peer.offer()},
            headers=officer.headers,
        )
        assert response.status == 201
        body = await response.json()
        await busy_peer.accept(body["answer"])

        async def failed() -> dict[str, Any] | None:
            got = await (
                await client.get(f"/api/v1/hotline/callouts/{body['id']}", headers=officer.headers)
            ).json()
            return got if got["state"] == "failed" else None

        assert (await eventually(failed))["result"] == "busy"
    finally:
        await busy_peer.close()
        await trunk.close()


async def test_an_order_nobody_accepts_rings_the_unit_until_key_1_accepts_it(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree, clock: FakeClock
) -> None:
    """叫应: the order stays unaccepted past escalate_after; the first person on the unit's list is
    busy, the second answers, hears the prompt and presses 1: the order is accepted by that member
    (through the squad app's own accept), the call ends, and the run is not started twice. Setting
    the call list is a change of the unit, in its trail."""
    first, second = "13900000001", "13900000002"
    trunk = PhoneTrunk({first: "busy", second: "answer"})
    port = await trunk.start()
    client: TestClient[Any, Any] = await make_client(
        video_host_addresses="127.0.0.1", voice_trunk=f"127.0.0.1:{port}", voice_escalate_after=60
    )
    officer = await make_user("duty_officer", COUNTY)
    unit, (leader, deputy) = await make_squad(client, officer, make_user, members=2)
    listed = await client.put(
        f"/api/v1/hotline/units/{unit['id']}/call-list",
        json={
            "entries": [
                {"user_id": leader.user.id, "phone": first},
                {"user_id": deputy.user.id, "phone": second},
            ]
        },
        headers=officer.headers,
    )
    assert listed.status == 200, await listed.text()
    assert [e["phone"] for e in (await listed.json())["entries"]] == [first, second]
    outsider = await make_user("squad_member", COUNTY)
    refused = await client.put(
        f"/api/v1/hotline/units/{unit['id']}/call-list",
        json={"entries": [{"user_id": outsider.user.id, "phone": first}]},
        headers=officer.headers,
    )
    assert refused.status == 422
    assert (await actions(client, "unit", unit["id"])).count("call_list") == 1
    case = await make_case(client, officer, org_tree)
    sent = await order(client, officer, case["id"], unit["id"])
    try:
        await asyncio.sleep(1.5)  # a round or more of the escalation loop
        assert trunk.rung == []  # nothing before escalate_after
        clock.advance(timedelta(seconds=61))
        await until(lambda: trunk.rung == [first, second], limit=20)
        phone = trunk.call_to(second)
        assert phone is not None
        await until(phone.answered.is_set)
        await until(lambda: len(phone.heard()) > 4000)  # the prompt is playing
        await trunk.press(second, "1")
        await until(phone.ended.is_set, limit=30)  # after the confirmation the hotline hangs up

        async def accepted() -> dict[str, Any] | None:
            got = await (await client.get(f"/api/v1/orders/{sent['id']}", headers=officer.headers)).json()
            return got if got["state"] == "accepted" else None

        done = await eventually(accepted)
        assert done["accepted_by"] == deputy.user.id

        async def settled() -> list[Any] | None:
            got = await (
                await client.get(
                    f"/api/v1/hotline/callouts?incident_id={case['id']}", headers=officer.headers
                )
            ).json()
            items = got["callouts"]
            return items if all(c["state"] in ("ended", "failed") for c in items) else None

        callouts = await eventually(settled)
        assert [(c["number"], c["result"]) for c in reversed(callouts)] == [
            (first, "busy"),
            (second, "accepted"),
        ]
        assert {c["kind"] for c in callouts} == {"escalation"}
        clock.advance(timedelta(seconds=120))
        await asyncio.sleep(1.5)
        assert len(trunk.rung) == 2  # one run per order, ever
    finally:
        await trunk.close()


async def test_transfer_to_a_department_number_bridges_the_two_calls(
    make_client: AppFactory, make_user: UserFactory
) -> None:
    """The officer transfers the caller to a department's number: the caller hears music while it
    rings, then the department (660 Hz) and the department the caller (440 Hz); the officer's
    console is told and freed; when the department hangs up, the caller gets a BYE and the call ends."""
    from dispatchd.channels.hotline.voice import tones
    from tests.channels.hotline.voice.conftest import call_state, sip_port, waiting_call
    from tests.channels.hotline.voice.peers import ToneCaller

    department = "057765890300"
    trunk = PhoneTrunk({department: "answer"}, frequency=660, ring_for=0.5)
    port = await trunk.start()
    client: TestClient[Any, Any] = await make_client(
        video_host_addresses="127.0.0.1", voice_trunk=f"127.0.0.1:{port}"
    )
    officer = await make_user("duty_officer", COUNTY)
    caller = ToneCaller("127.0.0.1", sip_port(client), frequency=440)
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
        await until(lambda: len(caller.heard()) > 8000)
        moved = await client.post(
            f"/api/v1/hotline/calls/{call['id']}/transfer",
            json={"number": "0577-6589 0300"},
            headers=officer.headers,
        )
        assert moved.status == 200, await moved.text()
        assert (await moved.json())["transfer"] == {"number": department, "state": "dialling"}
        await until(lambda: any(m.get("type") == "transferred" for m in peer.messages))
        phone = trunk.call_to(department)
        assert phone is not None
        mark = len(caller.heard())
        await until(lambda: len(phone.heard()) > 12000 and len(caller.heard()) > mark + 12000)
        assert tones.tone_share(caller.heard()[-8000:], 660) > 0.9
        assert share_at(phone.heard(), 440) > 0.9
        trunk.hangup(department)
        await until(caller.bye_received.is_set)

        async def ended() -> dict[str, Any] | None:
            got = await call_state(client, officer.headers, call["id"])
            return got if got["state"] == "ended" else None

        final = await eventually(ended)
        assert final["end_reason"] == "department_hangup"
        assert [e["event"] for e in final["timeline"]] == ["offered", "answer", "transfer_out", "end"]
    finally:
        await peer.close()
        await caller.close()
        await trunk.close()


@pytest.mark.sipp
async def test_sipp_squad_phone_accepts_with_a_captured_key_1(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree, clock: FakeClock, tmp_path: Any
) -> None:
    """叫应 with a third-party SIP peer: sipp as the squad leader's phone (the trunk) answers and plays a
    real captured RFC 4733 train of 1; the order is accepted by that member and sipp gets the BYE."""
    from pathlib import Path

    from tests.channels.hotline.voice.captures import capture
    from tests.conftest import require_tool

    sipp = require_tool("sipp")
    pcap = capture("dtmf_2833_1.pcap")
    port = ng_free_port()
    scenario = Path(__file__).parents[1] / "scenarios" / "squad_phone_presses_1.xml"
    process = await asyncio.create_subprocess_exec(
        sipp,
        "-sf",
        str(scenario),
        "-i",
        "127.0.0.1",
        "-p",
        str(port),
        "-mi",
        "127.0.0.1",
        "-m",
        "1",
        "-key",
        "key_pcap",
        str(pcap),
        "-nostdin",
        "-timeout",
        "60s",
        "-timeout_error",
        "-trace_err",
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        client: TestClient[Any, Any] = await make_client(
            video_host_addresses="127.0.0.1", voice_trunk=f"127.0.0.1:{port}", voice_escalate_after=30
        )
        officer = await make_user("duty_officer", COUNTY)
        unit, (leader,) = await make_squad(client, officer, make_user, members=1)
        listed = await client.put(
            f"/api/v1/hotline/units/{unit['id']}/call-list",
            json={"entries": [{"user_id": leader.user.id, "phone": "13900000007"}]},
            headers=officer.headers,
        )
        assert listed.status == 200
        case = await make_case(client, officer, org_tree)
        sent = await order(client, officer, case["id"], unit["id"])
        clock.advance(timedelta(seconds=31))

        async def accepted() -> dict[str, Any] | None:
            got = await (await client.get(f"/api/v1/orders/{sent['id']}", headers=officer.headers)).json()
            return got if got["state"] == "accepted" else None

        done = await eventually(accepted, limit=40)
        assert done["accepted_by"] == leader.user.id
        assert await asyncio.wait_for(process.wait(), 40) == 0  # sipp saw its BYE: the call ended cleanly
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def ng_free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_stopping_instance_ends_its_calls_out(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree, clean_stores: Any
) -> None:
    """A call out still ringing when its instance stops is recorded failed (shutdown), not left live,
    and the phone is sent a CANCEL."""
    import asyncpg

    trunk = PhoneTrunk({REPORTER: "ring"})
    port = await trunk.start()
    client: TestClient[Any, Any] = await make_client(
        video_host_addresses="127.0.0.1", voice_trunk=f"127.0.0.1:{port}"
    )
    officer = await make_user("duty_officer", COUNTY)
    case = await make_case(client, officer, org_tree, caller=REPORTER)
    peer = OfficerPeer(1000)
    try:
        response = await client.post(
            "/api/v1/hotline/callouts",
            json={"incident_id": case["id"], "offer": await peer.offer()},
            headers=officer.headers,
        )
        body = await response.json()
        await until(lambda: {"type": "ringing"} in peer.messages or trunk.call_to(REPORTER) is not None)
        await client.close()
        phone = trunk.call_to(REPORTER)
        assert phone is not None
        await until(lambda: phone.cancelled)
        conn = await asyncpg.connect(clean_stores.database)
        try:
            row = await conn.fetchrow("SELECT state, result FROM voice_callouts WHERE id = $1", body["id"])
        finally:
            await conn.close()
        assert (row["state"], row["result"]) == ("failed", "shutdown")
    finally:
        await peer.close()
        await trunk.close()
