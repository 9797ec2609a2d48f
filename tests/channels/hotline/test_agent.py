"""The hotline's SIP user agent server without an event loop: whole calls, refusals, bad input."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from dispatchd.channels.hotline.agent import (
    AgentConfig,
    CallAbandoned,
    CallConfirmed,
    CallEnded,
    CallOffered,
    CallStateError,
    Dropped,
    HotlineAgent,
    Rejected,
)
from dispatchd.channels.hotline.sdp import parse_sdp
from dispatchd.channels.hotline.sip import Request, Response, parse_message
from dispatchd.channels.hotline.transaction import Peer, Send
from dispatchd.domain.hotlines import load_hotlines
from dispatchd.domain.taxonomy import Taxonomy
from tests.channels.hotline.messages import CALLER, CALLER_TCP, OFFER, invite, request, response_to_bye

ROOT = Path(__file__).resolve().parents[3]
FIXTURES = Path(__file__).parent / "fixtures"
T1 = 0.5


@pytest.fixture
def agent(taxonomy: Taxonomy) -> HotlineAgent:
    directory = load_hotlines(ROOT / "config" / "hotlines.toml", taxonomy)
    counter = itertools.count(1)
    return HotlineAgent(
        accepts=lambda dialled: directory.route(dialled) is not None,
        local_port=lambda transport: 5060,
        config=AgentConfig(advertise_host="10.0.0.5", max_calls=3),
        new_token=lambda: f"tok{next(counter)}",
    )


def sent(effects: list[object]) -> list[Request | Response]:
    return [e.message for e in effects if isinstance(e, Send)]


def statuses(effects: list[object]) -> list[int]:
    return [m.status for m in sent(effects) if isinstance(m, Response)]


def events(effects: list[object]) -> list[object]:
    return [e for e in effects if not isinstance(e, Send)]


def feed(
    agent: HotlineAgent, message: Request | Response, now: float = 0.0, peer: Peer = CALLER
) -> list[object]:
    return list(agent.receive(message.encode(), peer, now))


def ring(agent: HotlineAgent, **kwargs: object) -> tuple[str, Response]:
    effects = feed(agent, invite(**kwargs))
    assert statuses(effects) == [100, 180]
    [offered] = events(effects)
    assert isinstance(offered, CallOffered)
    ringing = sent(effects)[1]
    assert isinstance(ringing, Response)
    return offered.call, ringing


def test_a_call_rings_is_answered_confirmed_and_hung_up_by_the_officer(agent: HotlineAgent) -> None:
    """INVITE → 100, 180; answer → 200 with SDP, repeated until the ACK; hangup → BYE; its 200 ends it."""
    effects = feed(agent, invite(dialled="0577-65890101"))
    [offered] = events(effects)
    assert isinstance(offered, CallOffered)
    assert (offered.caller, offered.caller_name, offered.dialled) == (
        "13800001111",
        "Caller",
        "0577-65890101",
    )
    ringing = sent(effects)[1]
    assert isinstance(ringing, Response) and ringing.to.tag == "tok1"
    assert ringing.headers.get("Contact") == "<sip:hotline@10.0.0.5:5060>"

    answered = agent.answer(offered.call, "10.0.0.5", 30000, 1.0)
    [ok] = sent(answered)
    assert isinstance(ok, Response) and ok.status == 200 and ok.to.tag == "tok1"
    sdp = parse_sdp(ok.body.decode())
    audio = sdp.audio()
    assert audio is not None and audio.port == 30000 and audio.formats == ("8", "101")  # caller's first: PCMA
    assert audio.direction == "recvonly" and sdp.connection == "10.0.0.5"
    assert sent(agent.tick(1.0 + T1)) == [ok]  # §13.3.1.4: retransmitted until the ACK
    assert sent(agent.tick(1.0 + 3 * T1)) == [ok]

    ack = request("ACK", dialled="0577-65890101", branch="z9hG4bKack", to_tag="tok1")
    assert events(feed(agent, ack, 2.0)) == [CallConfirmed(offered.call)]
    assert sent(agent.tick(10.0)) == []
    assert agent.call_state(offered.call) == "confirmed"

    [bye] = sent(agent.hangup(offered.call, 20.0))
    assert isinstance(bye, Request) and bye.method == "BYE"
    assert bye.uri == "sip:13800001111@10.0.0.9:5060"
    assert bye.from_.tag == "tok1" and bye.to.tag == "caller1" and bye.call_id == "call-1@10.0.0.9"
    assert bye.vias[0].branch is not None and bye.vias[0].branch.startswith("z9hG4bK")
    assert agent.hangup(offered.call, 20.1) == []  # already ending
    feed(agent, response_to_bye(bye), 20.2)
    assert offered.call not in agent


def test_cancel_before_answer_is_abandoned(agent: HotlineAgent) -> None:
    """CANCEL → 200 for it and 487 for the INVITE (§9.2); the call is abandoned; ACK of 487 absorbed."""
    call, _ = ring(agent)
    effects = feed(agent, request("CANCEL", branch="z9hG4bKinv1"), 3.0)
    assert sorted(statuses(effects)) == [200, 487]
    assert events(effects) == [CallAbandoned(call, "cancel")]
    assert call not in agent
    assert feed(agent, request("ACK", branch="z9hG4bKinv1", to_tag="tok1"), 3.1) == []
    with pytest.raises(CallStateError):
        agent.answer(call, "10.0.0.5", 30000, 3.2)


def test_caller_hangs_up_after_answer(agent: HotlineAgent) -> None:
    """A BYE from the caller in the dialog is answered 200 and ends the call."""
    call, _ = ring(agent)
    agent.answer(call, "10.0.0.5", 30000, 1.0)
    feed(agent, request("ACK", branch="z9hG4bKack", to_tag="tok1"), 1.1)
    effects = feed(agent, request("BYE", branch="z9hG4bKbye", to_tag="tok1", cseq=2), 30.0)
    assert statuses(effects) == [200]
    assert events(effects) == [CallEnded(call, "caller_hangup")]


def test_bye_in_early_dialog_abandons(agent: HotlineAgent) -> None:
    """A BYE before the answer gets 200, and the INVITE gets 487 (§15.1.2)."""
    call, _ = ring(agent)
    effects = feed(agent, request("BYE", branch="z9hG4bKbye", to_tag="tok1", cseq=2), 2.0)
    assert sorted(statuses(effects)) == [200, 487]
    assert events(effects) == [CallAbandoned(call, "bye")]


def test_no_ack_ends_the_call_with_bye(agent: HotlineAgent) -> None:
    """Without an ACK for 64*T1, the 200 stops repeating and a BYE ends the session (§13.3.1.4)."""
    call, _ = ring(agent)
    agent.answer(call, "10.0.0.5", 30000, 0.0)
    effects: list[object] = []
    while True:
        deadline = agent.next_deadline()
        assert deadline is not None
        step = agent.tick(deadline)
        effects += step
        if any(isinstance(e, CallEnded) for e in step):
            break
    assert deadline == 64 * T1
    assert events(effects) == [CallEnded(call, "no_ack")]
    assert [m.method for m in sent(effects) if isinstance(m, Request)] == ["BYE"]


def test_hangup_before_ack_waits_for_it(agent: HotlineAgent) -> None:
    """Hanging up while the 200 awaits its ACK sends the BYE when the ACK comes (§15)."""
    call, _ = ring(agent)
    agent.answer(call, "10.0.0.5", 30000, 0.0)
    assert agent.hangup(call, 0.1) == []
    effects = feed(agent, request("ACK", branch="z9hG4bKack", to_tag="tok1"), 0.2)
    assert [m.method for m in sent(effects) if isinstance(m, Request)] == ["BYE"]
    assert events(effects) == [CallConfirmed(call)]


def test_officer_refuses_a_ringing_call(agent: HotlineAgent) -> None:
    """Hanging up a call that still rings answers the INVITE 480."""
    call, _ = ring(agent)
    assert statuses(agent.hangup(call, 1.0)) == [480]
    assert call not in agent


def test_a_call_that_cannot_be_recorded_is_refused_503_with_retry_after(agent: HotlineAgent) -> None:
    """A ringing call the store cannot take is answered 503 with Retry-After (§21.5.4), so the
    carrier tries elsewhere or later; one past ringing is hung up as usual."""
    call, _ = ring(agent)
    [refusal] = [m for m in sent(agent.refuse_unavailable(call, 5, 1.0)) if isinstance(m, Response)]
    assert refusal.status == 503 and refusal.headers.get("Retry-After") == "5"
    assert call not in agent
    other, _ = ring(agent, call_id="second@x", branch="z9hG4bKinv2")
    sent(agent.answer(other, "10.0.0.5", 30000, 0.0))
    assert statuses(agent.refuse_unavailable(other, 5, 0.1)) == []  # before the ACK: the BYE waits (§15)


def test_reinvite_refreshes_with_the_same_answer(agent: HotlineAgent) -> None:
    """A re-INVITE in the confirmed dialog gets 200 with the SDP already agreed."""
    call, _ = ring(agent)
    [ok] = sent(agent.answer(call, "10.0.0.5", 30000, 0.0))
    feed(agent, request("ACK", branch="z9hG4bKack", to_tag="tok1"), 0.1)
    again = feed(agent, invite(branch="z9hG4bKre", to_tag="tok1", cseq=2), 900.0)
    [refresh] = [m for m in sent(again) if isinstance(m, Response) and m.status == 200]
    assert isinstance(ok, Response) and refresh.body == ok.body


def test_late_offer_gets_our_offer_in_the_200(agent: HotlineAgent) -> None:
    """An INVITE without SDP is answered with our offer (§13.2.1)."""
    call, _ = ring(agent, body=b"")
    [ok] = sent(agent.answer(call, "10.0.0.5", 30002, 0.0))
    audio = parse_sdp(ok.body.decode()).audio()
    assert audio is not None and audio.formats == ("0", "8", "101")


def test_options_and_out_of_dialog_requests(agent: HotlineAgent) -> None:
    """OPTIONS → 200 with Allow; BYE and CANCEL matching nothing → 481."""
    effects = feed(agent, request("OPTIONS", branch="z9hG4bKo"))
    [ok] = sent(effects)
    assert isinstance(ok, Response) and ok.status == 200
    assert ok.headers.get_all("Allow") == ["INVITE", "ACK", "CANCEL", "BYE", "OPTIONS"]
    assert statuses(feed(agent, request("BYE", branch="z9hG4bKb", to_tag="nope"))) == [481]
    assert statuses(feed(agent, request("CANCEL", branch="z9hG4bKnone"))) == [481]


@pytest.mark.parametrize(
    ("message", "status"),
    [
        (request("REGISTER", branch="z9hG4bKr"), 405),
        (request("SUBSCRIBE", branch="z9hG4bKs"), 405),
        (request("FROBNICATE", branch="z9hG4bKf"), 501),
        (invite(dialled="12345678901", branch="z9hG4bKn"), 404),
        (invite(branch="z9hG4bKv", version="SIP/3.0"), 505),
        (invite(branch="z9hG4bKq", extra=(("Require", "100rel"),)), 420),
        (invite(branch="z9hG4bKm", extra=(("Max-Forwards", "0"),)), 483),
        (invite(branch="z9hG4bKu", uri="im:967999@10.0.0.5"), 416),
        (invite(branch="z9hG4bKt", content_type="text/plain"), 415),
        (invite(branch="z9hG4bKg", body=OFFER.replace(b"8 0 101", b"18").replace(b"PCM", b"XXX")), 488),
    ],
)
def test_refusals(agent: HotlineAgent, message: Request, status: int) -> None:
    """What the hotline does not take is refused with the RFC 3261 status for it."""
    if message.headers.get_all("Max-Forwards") == ["70", "0"]:
        message = Request(
            message.method, message.uri, message.headers.with_("Max-Forwards", "0"), message.body
        )
    effects = feed(agent, message)
    assert statuses(effects)[-1] == status
    assert not any(isinstance(e, CallOffered) for e in effects)
    if status in (405, 501):
        [response] = [m for m in sent(effects) if isinstance(m, Response) and m.status == status]
        assert "INVITE" in (response.headers.get("Allow") or "")


def test_merged_request_and_full_queue(agent: HotlineAgent) -> None:
    """The same INVITE by another path gets 482 (§8.2.2.2); past max_calls new calls get 486."""
    ring(agent)
    assert statuses(feed(agent, invite(branch="z9hG4bKother")))[-1] == 482
    ring(agent, call_id="c2", branch="z9hG4bK2")
    ring(agent, call_id="c3", branch="z9hG4bK3")
    assert statuses(feed(agent, invite(call_id="c4", branch="z9hG4bK4")))[-1] == 486


def test_malformed_requests_get_400_naming_the_problem(agent: HotlineAgent) -> None:
    """A malformed request with a usable Via is answered 400 with the reason; others are dropped."""
    effects = list(agent.receive((FIXTURES / "malformed_missing_call_id.sip").read_bytes(), CALLER, 0.0))
    [answer] = sent(effects)
    assert isinstance(answer, Response) and answer.status == 400
    assert answer.reason == "Bad Request - missing Call-ID header field"
    assert events(effects) == [Rejected("UDP", "missing Call-ID header field")]
    for name in (
        "garbage.bin",
        "malformed_no_via.sip",
        "malformed_bad_via.sip",
        "malformed_request_line.sip",
    ):
        dropped = list(agent.receive((FIXTURES / name).read_bytes(), CALLER, 0.0))
        assert sent(dropped) == [] and len(dropped) == 1 and isinstance(dropped[0], Dropped)
    assert agent.calls() == []


def test_real_world_invites_ring(agent: HotlineAgent) -> None:
    """INVITEs from Asterisk, FreeSWITCH, a Cisco gateway and a carrier (compact form) all ring."""
    dialled = {}
    for name in (
        "asterisk_pjsip_invite.sip",
        "freeswitch_sofia_invite.sip",
        "cisco_gateway_invite.sip",
        "carrier_compact_invite.sip",
        "folded_invite.sip",
    ):
        agent.config = AgentConfig(advertise_host="10.0.0.5", max_calls=10)
        effects = list(agent.receive((FIXTURES / name).read_bytes(), CALLER, 0.0))
        offered = [e for e in effects if isinstance(e, CallOffered)]
        assert len(offered) == 1, (name, statuses(effects))
        dialled[name] = (offered[0].dialled, offered[0].caller)
    assert dialled["asterisk_pjsip_invite.sip"] == ("057765890101", "13857712345")
    assert dialled["cisco_gateway_invite.sip"] == ("65890108", "13912345678")
    assert dialled["carrier_compact_invite.sip"] == ("+8657765890104", "+8613757700001")


def test_over_tcp_responses_use_the_connection(agent: HotlineAgent) -> None:
    """Over TCP, responses and our BYE go back on the connection the INVITE came on."""
    effects = feed(agent, invite(transport="TCP", sent_by="10.0.0.9:40123"), peer=CALLER_TCP)
    assert {e.peer for e in effects if isinstance(e, Send)} == {CALLER_TCP}
    [offered] = [e for e in effects if isinstance(e, CallOffered)]
    [ok] = [e for e in agent.answer(offered.call, "10.0.0.5", 30000, 0.0) if isinstance(e, Send)]
    assert ok.peer == CALLER_TCP
    assert agent.next_deadline() == 64 * T1  # no retransmission over TCP, only the give-up
    feed(
        agent,
        request("ACK", transport="TCP", sent_by="10.0.0.9:40123", to_tag="tok1", branch="z9hG4bKa"),
        0.1,
        CALLER_TCP,
    )
    [bye] = [e for e in agent.hangup(offered.call, 1.0) if isinstance(e, Send)]
    assert bye.peer == CALLER_TCP and "transport=tcp" in str(
        parse_message(ok.message.encode()).headers.get("Contact")
    )
