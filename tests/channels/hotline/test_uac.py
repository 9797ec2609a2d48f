"""Calls out through a trunk without an event loop: challenge and credentials, ringing, answer and ACK,
hang-up either way, CANCEL before and after the first provisional response, failures (RFC 3261 §8.1,
§9.1, §13.2, §17.1.1, §22; RFC 6026)."""

from __future__ import annotations

import itertools

import pytest

from dispatchd.channels.hotline.agent import (
    AgentConfig,
    CallAnswered,
    CallEnded,
    CallFailed,
    CallRinging,
    HotlineAgent,
    Trunk,
)
from dispatchd.channels.hotline.sip import Headers, Request, Response, parse_message, response_to
from dispatchd.channels.hotline.transaction import Peer, Send
from dispatchd.channels.hotline.voice.digest import parse_challenge, response

TRUNK = Peer("UDP", "10.0.0.20", 5060)
OFFER = b"v=0\r\no=dispatchd 1 1 IN IP4 10.0.0.5\r\ns=-\r\nc=IN IP4 10.0.0.5\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0 8 101\r\n"
ANSWER = b"v=0\r\no=phone 1 1 IN IP4 10.0.0.30\r\ns=-\r\nc=IN IP4 10.0.0.30\r\nt=0 0\r\nm=audio 7000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
T1 = 0.5


@pytest.fixture
def agent() -> HotlineAgent:
    counter = itertools.count(1)
    return HotlineAgent(
        accepts=lambda dialled: False,
        local_port=lambda transport: 5060,
        config=AgentConfig(advertise_host="10.0.0.5"),
        new_token=lambda: f"tok{next(counter)}",
    )


def trunk(username: str = "") -> Trunk:
    return Trunk(TRUNK, "trunk.example.cn", "967999", username, "secret" if username else "")


def sent(effects: list[object]) -> list[Request | Response]:
    return [e.message for e in effects if isinstance(e, Send)]


def others(effects: list[object]) -> list[object]:
    return [e for e in effects if not isinstance(e, Send)]


def reply(
    request: Request,
    status: int,
    *,
    tag: str = "far1",
    body: bytes = b"",
    extra: tuple[tuple[str, str], ...] = (),
) -> bytes:
    """The trunk's response, through its wire form."""
    answer = response_to(request, status, to_tag=tag if status > 100 else None, extra=list(extra), body=body)
    if body:
        answer = Response(
            answer.status, answer.reason, answer.headers.plus("Content-Type", "application/sdp"), body
        )
    return answer.encode()


def test_challenged_answered_acked_and_ended_by_the_far_end(agent: HotlineAgent) -> None:
    """INVITE → 407 (ACKed by the transaction) → INVITE again with Proxy-Authorization and CSeq 2 →
    180 (ringing) → 200 (ACK to the trunk, dialog made) → BYE from the phone ends it."""
    key, effects = agent.dial("13800000000", OFFER, trunk("desk"), "10.0.0.5", 0.0)
    [first] = sent(effects)
    assert (
        isinstance(first, Request)
        and first.method == "INVITE"
        and first.uri == "sip:13800000000@trunk.example.cn"
    )
    assert (first.headers.get("From") or "").startswith(
        "<sip:967999@trunk.example.cn>;tag="
    ) and first.body == OFFER
    challenge = ("Proxy-Authenticate", 'Digest realm="trunk", nonce="n0nce", qop="auth"')
    effects = agent.receive(reply(first, 407, extra=(challenge,)), TRUNK, 0.1)
    ack, second = sent(effects)
    assert isinstance(ack, Request) and ack.method == "ACK" and ack.vias[0].branch == first.vias[0].branch
    assert isinstance(second, Request) and second.cseq.number == 2 and second.call_id == first.call_id
    credentials = second.headers.get("Proxy-Authorization") or ""
    expected = response(
        parse_challenge(challenge[1]),
        username="desk",
        password="secret",
        method="INVITE",
        uri=second.uri,
        cnonce=credentials.split('cnonce="')[1].split('"')[0],
        nc=1,
    )
    assert f'response="{expected}"' in credentials
    assert others(agent.receive(reply(second, 100), TRUNK, 0.2)) == []
    assert others(agent.receive(reply(second, 180), TRUNK, 0.3)) == [CallRinging(key)]
    ok = reply(second, 200, body=ANSWER, extra=(("Contact", "<sip:13800000000@10.0.0.30:5080>"),))
    effects = agent.receive(ok, TRUNK, 1.0)
    [ack] = sent(effects)
    [answered] = others(effects)
    assert isinstance(answered, CallAnswered) and answered.answer is not None
    assert answered.answer.remote_rtp() == ("10.0.0.30", 7000)
    assert isinstance(ack, Request) and ack.method == "ACK" and ack.uri == "sip:13800000000@10.0.0.30:5080"
    assert ack.cseq.number == 2 and ack.vias[0].branch != second.vias[0].branch and ack.to.tag == "far1"
    assert sent(agent.receive(ok, TRUNK, 1.5)) == [ack]  # a 2xx copy: ACKed again
    assert agent.call_state(key) == "confirmed"

    bye = Request(
        "BYE",
        "sip:hotline@10.0.0.5:5060",
        Headers(
            [
                ("Via", "SIP/2.0/UDP 10.0.0.20:5060;branch=z9hG4bKbye1"),
                ("From", "<sip:13800000000@trunk.example.cn>;tag=far1"),
                ("To", f"{first.headers.get('From')}"),
                ("Call-ID", first.call_id),
                ("CSeq", "1 BYE"),
                ("Max-Forwards", "70"),
            ]
        ),
    )
    effects = agent.receive(bye.encode(), TRUNK, 5.0)
    assert [m.status for m in sent(effects) if isinstance(m, Response)] == [200]
    assert others(effects) == [CallEnded(key, "remote_hangup")] and key not in agent


def test_our_hangup_in_the_dialog_sends_bye_with_our_parties(agent: HotlineAgent) -> None:
    """After the answer, hanging up sends a BYE From us To the phone (with its tag), CSeq above the INVITE's."""
    key, effects = agent.dial("13800000000", OFFER, trunk(), "10.0.0.5", 0.0)
    [invite] = sent(effects)
    assert isinstance(invite, Request)
    agent.receive(reply(invite, 200, body=ANSWER), TRUNK, 0.5)
    [bye] = sent(agent.hangup(key, 1.0))
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert bye.from_.tag == invite.from_.tag and bye.to.tag == "far1" and bye.cseq.number == 2
    assert parse_message(bye.encode()).call_id == invite.call_id


def test_cancel_waits_for_a_provisional_response(agent: HotlineAgent) -> None:
    """§9.1: hanging up before any provisional response sends nothing; the CANCEL goes with the
    first 1xx; the 487 is ACKed and the call fails as cancelled."""
    key, effects = agent.dial("13800000000", OFFER, trunk(), "10.0.0.5", 0.0)
    [invite] = sent(effects)
    assert isinstance(invite, Request)
    assert agent.hangup(key, 0.1) == []
    effects = agent.receive(reply(invite, 180), TRUNK, 0.2)
    [cancel] = sent(effects)
    assert (
        isinstance(cancel, Request)
        and cancel.method == "CANCEL"
        and cancel.vias[0].branch == invite.vias[0].branch
    )
    assert cancel.cseq.number == 1 and cancel.uri == invite.uri
    effects = agent.receive(reply(invite, 487), TRUNK, 0.3)
    [ack] = sent(effects)
    assert isinstance(ack, Request) and ack.method == "ACK"
    assert others(effects) == [CallFailed(key, 487, "cancelled")] and key not in agent


def test_answer_crossing_the_cancel_is_acked_and_ended(agent: HotlineAgent) -> None:
    """A 200 that crossed our CANCEL: ACK, then BYE at once; the call counts as cancelled."""
    key, effects = agent.dial("13800000000", OFFER, trunk(), "10.0.0.5", 0.0)
    [invite] = sent(effects)
    assert isinstance(invite, Request)
    agent.receive(reply(invite, 183), TRUNK, 0.1)
    agent.hangup(key, 0.2)
    effects = agent.receive(reply(invite, 200, body=ANSWER), TRUNK, 0.3)
    assert [m.method for m in sent(effects) if isinstance(m, Request)] == ["ACK", "BYE"]
    assert others(effects) == [CallFailed(key, 487, "cancelled")]


def test_busy_and_no_answer(agent: HotlineAgent) -> None:
    """486 fails the call as busy; an INVITE nobody answers is retransmitted on Timer A and given
    up by Timer B (64·T1) as 408."""
    busy, effects = agent.dial("13800000001", OFFER, trunk(), "10.0.0.5", 0.0)
    [invite] = sent(effects)
    assert isinstance(invite, Request)
    assert others(agent.receive(reply(invite, 486), TRUNK, 0.1)) == [CallFailed(busy, 486, "Busy Here")]
    silent, effects = agent.dial("13800000002", OFFER, trunk(), "10.0.0.5", 10.0)
    assert len(sent(agent.tick(10.0 + T1))) == 1 and len(sent(agent.tick(10.0 + 3 * T1))) == 1
    assert CallFailed(silent, 408, "timeout") in others(agent.tick(10.0 + 64 * T1))
    assert silent not in agent
