"""The caller and the officer hear each other: a SIP caller speaking 440 Hz, an aiortc officer speaking
1,000 Hz, answered through POST /calls/{id}/answer with a WebRTC offer, checked by frequency."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from dispatchd.channels.hotline.voice import g711, tones, wav
from tests.channels.hotline.voice.conftest import call_state, eventually, sip_port, until, waiting_call
from tests.channels.hotline.voice.peers import OfficerPeer, ToneCaller, share_at
from tests.conftest import COUNTY, AppFactory, UserFactory


async def test_officer_and_caller_hear_each_other_and_the_officer_hangs_up(
    voice_client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """440 Hz reaches the officer and 1,000 Hz the caller in the caller's own law (PCMU, forwarded, not
    transcoded); a key the caller presses shows on the console's data channel; the officer's hang-up
    sends the caller a BYE and closes the console's peer; the recording holds both tones."""
    officer = await make_user("duty_officer", COUNTY)
    caller = ToneCaller("127.0.0.1", sip_port(voice_client), frequency=440, codec=g711.PCMU)
    peer = OfficerPeer(1000)
    try:
        await caller.call()
        call = await waiting_call(voice_client, officer.headers)
        response = await voice_client.post(
            f"/api/v1/hotline/calls/{call['id']}/answer",
            json={"offer": await peer.offer()},
            headers=officer.headers,
        )
        assert response.status == 200, await response.text()
        body = await response.json()
        assert body["state"] == "answered" and body["answer"]["type"] == "answer"
        await peer.accept(body["answer"])
        assert peer.answered_codec() == "PCMU"
        await until(caller.answered.is_set)
        assert caller.final_status == 200

        await until(lambda: len(peer.heard()) > 8000 * 1.5 and len(caller.heard()) > 8000 * 1.5)
        assert share_at(peer.heard(), 440) > 0.9 and share_at(peer.heard(), 1000) < 0.05
        assert share_at(caller.heard(), 1000) > 0.9 and share_at(caller.heard(), 440) < 0.05

        await caller.press("5")
        await until(lambda: {"type": "dtmf", "key": "5"} in peer.messages)

        hung = await voice_client.post(f"/api/v1/hotline/calls/{call['id']}/hangup", headers=officer.headers)
        assert hung.status == 200 and (await hung.json())["state"] == "ended"
        await until(caller.bye_received.is_set)
        await until(lambda: peer.state in ("closed", "failed") or {"type": "ended"} in peer.messages)
        ended = await call_state(voice_client, officer.headers, call["id"])
        assert ended["end_reason"] == "officer_hangup" and ended["recording"] is True

        async def recording() -> bytes | None:
            got = await voice_client.get(
                f"/api/v1/hotline/calls/{call['id']}/recording", headers=officer.headers
            )
            data = await got.read() if got.status == 200 else b""
            return data if len(data) > 44 + 2 * 8000 else None

        samples = wav.read_wav(await eventually(recording))
        shares_440 = tones.sweep_shares(samples, 440)
        shares_1000 = tones.sweep_shares(samples, 1000)
        assert max(shares_440) > 0.3 and max(shares_1000) > 0.3  # both sides, mixed in one file
    finally:
        await peer.close()
        await caller.close()


async def _answered(
    client: TestClient[Any, Any], headers: dict[str, str], caller: ToneCaller, peer: OfficerPeer
) -> dict[str, Any]:
    await caller.call()
    call = await waiting_call(client, headers)
    response = await client.post(
        f"/api/v1/hotline/calls/{call['id']}/answer", json={"offer": await peer.offer()}, headers=headers
    )
    assert response.status == 200, await response.text()
    body: dict[str, Any] = await response.json()
    await peer.accept(body["answer"])
    await until(caller.answered.is_set)
    return body


def _after(samples: Any, start: int) -> Any:
    return samples[start:]


async def test_caller_hangs_up_and_the_console_is_told(
    voice_client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """The caller's BYE ends the call (caller_hangup) and both legs: the console hears "ended"."""
    officer = await make_user("duty_officer", COUNTY)
    caller = ToneCaller("127.0.0.1", sip_port(voice_client))
    peer = OfficerPeer(1000)
    try:
        call = await _answered(voice_client, officer.headers, caller, peer)
        await until(lambda: len(peer.heard()) > 4000)
        await caller.hangup()

        async def ended() -> bool:
            return (await call_state(voice_client, officer.headers, call["id"]))["state"] == "ended"

        await eventually(ended)
        assert (await call_state(voice_client, officer.headers, call["id"]))["end_reason"] == "caller_hangup"
        await until(lambda: {"type": "ended"} in peer.messages or peer.state in ("closed", "failed"))
    finally:
        await peer.close()
        await caller.close()


async def test_hold_resume_and_keys_to_the_caller(
    voice_client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """On hold neither side hears the other and the caller hears the hold chime; resumed, both again;
    keys the officer sends (API and data channel) reach the caller as RFC 4733 events."""
    officer = await make_user("duty_officer", COUNTY)
    caller = ToneCaller("127.0.0.1", sip_port(voice_client))
    peer = OfficerPeer(1000)
    try:
        call = await _answered(voice_client, officer.headers, caller, peer)
        await until(lambda: len(caller.heard()) > 8000 and len(peer.heard()) > 8000)
        held = await voice_client.post(
            f"/api/v1/hotline/calls/{call['id']}/hold", json={"hold": True}, headers=officer.headers
        )
        assert held.status == 200 and (await held.json())["on_hold"] is True
        await until(lambda: {"type": "hold", "on": True} in peer.messages)
        mark_caller, mark_peer = len(caller.heard()) + 800, len(peer.heard()) + 2400
        await until(lambda: len(caller.heard()) > mark_caller + 8000)
        on_hold = caller.heard()[mark_caller:]
        assert (
            share_at(on_hold, 1000, skip=0) < 0.05 and abs(on_hold[:4000].astype(int)).max() > 1000
        )  # the chime
        assert share_at(peer.heard()[mark_peer:], 440, skip=0) < 0.05  # nothing, or not the caller

        resumed = await voice_client.post(
            f"/api/v1/hotline/calls/{call['id']}/hold", json={"hold": False}, headers=officer.headers
        )
        assert resumed.status == 200 and (await resumed.json())["on_hold"] is False
        mark_caller = len(caller.heard()) + 800
        await until(lambda: len(caller.heard()) > mark_caller + 8000)
        assert share_at(caller.heard()[mark_caller:], 1000, skip=0) > 0.9

        keys = await voice_client.post(
            f"/api/v1/hotline/calls/{call['id']}/keys", json={"keys": "12"}, headers=officer.headers
        )
        assert keys.status == 200
        peer.send_key("#")
        from dispatchd.channels.hotline.voice.dtmf import DtmfReceiver

        def pressed() -> list[str]:
            receiver = DtmfReceiver()
            return [
                press.key
                for pt, _, payload in caller.received
                if pt == 101 and (press := receiver.receive(0, int.from_bytes(payload[:1], "big"), payload))
            ]

        await until(lambda: {"1", "2", "#"} <= set(pressed()))
        timeline = [
            e["event"] for e in (await call_state(voice_client, officer.headers, call["id"]))["timeline"]
        ]
        assert timeline[-2:] == ["hold", "resume"]
    finally:
        await peer.close()
        await caller.close()


async def test_transfer_to_another_officer(
    voice_client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """The first officer transfers: their console hears "transferred", the caller hears music, the
    second officer's console rings; they answer with their own peer and the two talk; the call keeps
    its first answer time and shows the transfer in its timeline."""
    first = await make_user("duty_officer", COUNTY, username="first")
    second = await make_user("duty_officer", COUNTY, username="second")
    caller = ToneCaller("127.0.0.1", sip_port(voice_client))
    peer_one, peer_two = OfficerPeer(1000), OfficerPeer(1500)
    try:
        call = await _answered(voice_client, first.headers, caller, peer_one)
        await until(lambda: len(caller.heard()) > 4000)
        moved = await voice_client.post(
            f"/api/v1/hotline/calls/{call['id']}/transfer",
            json={"user_id": second.user.id},
            headers=first.headers,
        )
        assert moved.status == 200, await moved.text()
        ringing = await moved.json()
        assert ringing["state"] == "ringing" and ringing["ringing_user_id"] == second.user.id
        await until(lambda: any(m.get("type") == "transferred" for m in peer_one.messages))
        again = await voice_client.post(
            f"/api/v1/hotline/calls/{call['id']}/answer",
            json={"offer": await peer_two.offer()},
            headers=second.headers,
        )
        assert again.status == 200, await again.text()
        body = await again.json()
        await peer_two.accept(body["answer"])
        assert body["agent_user_id"] == second.user.id and body["answered_at"] == call["answered_at"]
        mark = len(caller.heard())
        await until(lambda: len(peer_two.heard()) > 8000 * 1.5 and len(caller.heard()) > mark + 8000 * 1.5)
        assert share_at(peer_two.heard(), 440) > 0.9
        assert tones.tone_share(caller.heard()[-8000:], 1500) > 0.9
        events = [
            e["event"] for e in (await call_state(voice_client, second.headers, call["id"]))["timeline"]
        ]
        assert events == ["offered", "answer", "transfer", "answer"]
    finally:
        await peer_one.close()
        await peer_two.close()
        await caller.close()


async def test_laws_and_codecs_the_console_may_lack(
    voice_client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """An A-law caller and a console offering only PCMU is converted by table; a console offering only
    Opus is transcoded; in both the tones cross both ways."""
    officer = await make_user("duty_officer", COUNTY)
    for codecs, wire in ((("PCMU",), "PCMU"), (("opus",), "opus")):
        caller = ToneCaller("127.0.0.1", sip_port(voice_client), codec=g711.PCMA, ptime=30)
        peer = OfficerPeer(1000, codecs=codecs)
        try:
            await _answered(voice_client, officer.headers, caller, peer)
            assert peer.answered_codec() == wire
            await until(lambda p=peer, c=caller: len(p.heard()) > 8000 * 1.5 and len(c.heard()) > 8000 * 1.5)  # type: ignore[misc]
            assert share_at(peer.heard(), 440) > 0.85
            assert share_at(caller.heard(), 1000) > 0.85
            assert {len(p) for pt, _, p in caller.received if pt == g711.PCMA} == {240}  # its 30 ms ptime
        finally:
            await peer.close()
            await caller.close()


async def test_invite_without_offer_answers_in_the_ack(
    voice_client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """A caller whose INVITE carries no SDP gets our offer in the 200 and answers PCMA in its ACK
    (RFC 3261 §13.2.1): the bridge follows the ACK's address and law, and the tones cross."""
    officer = await make_user("duty_officer", COUNTY)
    caller = ToneCaller("127.0.0.1", sip_port(voice_client), codec=g711.PCMA, offer=False)
    peer = OfficerPeer(1000)
    try:
        await _answered(voice_client, officer.headers, caller, peer)
        await until(lambda: len(peer.heard()) > 12000 and len(caller.heard()) > 12000)
        assert share_at(peer.heard(), 440) > 0.9 and share_at(caller.heard(), 1000) > 0.9
        assert {pt for pt, _, _ in caller.received} == {g711.PCMA}
    finally:
        await peer.close()
        await caller.close()


@pytest.mark.sipp
async def test_sipp_caller_echoes_the_officer_through_the_bridge(
    voice_client: TestClient[Any, Any], make_user: UserFactory, tmp_path: Any
) -> None:
    """A third-party caller: sipp dials 967999 and echoes the RTP it receives (-rtp_echo); the officer's
    1,000 Hz goes to sipp and comes back through the bridge, so both directions work with another RTP
    stack; the officer's hang-up ends sipp's call cleanly."""
    import asyncio
    from pathlib import Path

    from tests.conftest import require_tool

    sipp = require_tool("sipp")
    scenario = Path(__file__).parents[1] / "scenarios" / "officer_hangs_up.xml"
    officer = await make_user("duty_officer", COUNTY)
    process = await asyncio.create_subprocess_exec(
        sipp,
        "-sf",
        str(scenario),
        "-s",
        "967999",
        "-key",
        "caller",
        "13900005555",
        "-i",
        "127.0.0.1",
        "-mi",
        "127.0.0.1",
        "-rtp_echo",
        "-m",
        "1",
        "-nostdin",
        "-timeout",
        "60s",
        "-timeout_error",
        f"127.0.0.1:{sip_port(voice_client)}",
        cwd=tmp_path,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    peer = OfficerPeer(1000)
    try:
        call = await waiting_call(voice_client, officer.headers)
        response = await voice_client.post(
            f"/api/v1/hotline/calls/{call['id']}/answer",
            json={"offer": await peer.offer()},
            headers=officer.headers,
        )
        assert response.status == 200
        await peer.accept((await response.json())["answer"])
        await until(lambda: len(peer.heard()) > 8000 * 2)
        assert share_at(peer.heard(), 1000, skip=0.5) > 0.9  # its own voice, back from sipp
        hung = await voice_client.post(f"/api/v1/hotline/calls/{call['id']}/hangup", headers=officer.headers)
        assert hung.status == 200
        assert await asyncio.wait_for(process.wait(), 30) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await peer.close()


async def test_answer_with_an_offer_on_another_instance(
    make_client: AppFactory, make_user: UserFactory
) -> None:
    """The officer's request reaches an instance that does not hold the call: the offer travels to the
    holder with the command, its WebRTC answer comes back, and the two still hear each other."""
    holder = await make_client(video_host_addresses="127.0.0.1")
    other = await make_client(video_host_addresses="127.0.0.1")
    officer = await make_user("duty_officer", COUNTY)
    caller = ToneCaller("127.0.0.1", sip_port(holder), frequency=440)
    peer = OfficerPeer(1000)
    try:
        await caller.call()
        call = await waiting_call(other, officer.headers)
        response = await other.post(
            f"/api/v1/hotline/calls/{call['id']}/answer",
            json={"offer": await peer.offer()},
            headers=officer.headers,
        )
        assert response.status == 200, await response.text()
        await peer.accept((await response.json())["answer"])
        await until(lambda: len(peer.heard()) > 12000 and len(caller.heard()) > 12000)
        assert share_at(peer.heard(), 440) > 0.9 and share_at(caller.heard(), 1000) > 0.9
        hung = await other.post(f"/api/v1/hotline/calls/{call['id']}/hangup", headers=officer.headers)
        assert hung.status == 200
        await until(caller.bye_received.is_set)
    finally:
        await peer.close()
        await caller.close()
