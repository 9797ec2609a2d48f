"""The caller and the officer hear each other: a SIP caller speaking 440 Hz, an aiortc officer speaking
1,000 Hz, answered through POST /calls/{id}/answer with a WebRTC offer, checked by frequency."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from dispatchd.channels.hotline.voice import g711, tones, wav
from tests.channels.hotline.voice.conftest import call_state, eventually, sip_port, until, waiting_call
from tests.channels.hotline.voice.peers import OfficerPeer, ToneCaller, share_at
from tests.conftest import COUNTY, UserFactory


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
        await caller.answered.wait()
        assert caller.final_status == 200

        await until(lambda: len(peer.heard()) > 8000 * 1.5 and len(caller.heard()) > 8000 * 1.5)
        assert share_at(peer.heard(), 440) > 0.9 and share_at(peer.heard(), 1000) < 0.05
        assert share_at(caller.heard(), 1000) > 0.9 and share_at(caller.heard(), 440) < 0.05

        await caller.press("5")
        await until(lambda: {"type": "dtmf", "key": "5"} in peer.messages)

        hung = await voice_client.post(f"/api/v1/hotline/calls/{call['id']}/hangup", headers=officer.headers)
        assert hung.status == 200 and (await hung.json())["state"] == "ended"
        await caller.bye_received.wait()
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
