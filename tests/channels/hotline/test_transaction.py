"""The SIP transaction layer without an event loop: time is a number passed in (RFC 3261 §17)."""

from __future__ import annotations

from dispatchd.channels.hotline.sip import Request, Response, response_to
from dispatchd.channels.hotline.transaction import (
    AckReceived,
    ClientResponse,
    ClientTimeout,
    Peer,
    RequestReceived,
    Send,
    ServerTimeout,
    Timers,
    TransactionLayer,
    response_destination,
    stamp_via,
)
from tests.channels.hotline.messages import CALLER, CALLER_TCP, invite, request, response_to_bye

T1, T2, T4 = 0.5, 4.0, 5.0


def sent(effects: list[object]) -> list[Request | Response]:
    return [e.message for e in effects if isinstance(e, Send)]


def statuses(effects: list[object]) -> list[int]:
    return [m.status for m in sent(effects) if isinstance(m, Response)]


def start_invite(
    layer: TransactionLayer, peer: Peer = CALLER, **kwargs: object
) -> tuple[tuple[str, ...], Request]:
    inv = stamp_via(invite(**kwargs), peer)
    effects = layer.receive_request(inv, peer, 0.0)
    assert statuses(effects) == [100]
    received = [e for e in effects if isinstance(e, RequestReceived)]
    assert len(received) == 1
    return received[0].key, inv


def test_invite_gets_trying_and_copies_get_the_last_response() -> None:
    """100 Trying goes out at once; INVITE copies get the last response and never reach the TU again."""
    layer = TransactionLayer()
    key, inv = start_invite(layer)
    again = layer.receive_request(inv, CALLER, 0.3)
    assert statuses(again) == [100] and not any(isinstance(e, RequestReceived) for e in again)
    layer.respond(key, response_to(inv, 180, to_tag="t"), 0.4)
    assert statuses(layer.receive_request(inv, CALLER, 0.6)) == [180]


def test_final_response_is_retransmitted_on_timer_g_until_the_ack() -> None:
    """A 486 over UDP repeats at T1, 2T1, 4T1 … capped at T2; the ACK stops it; Timer I then ends it."""
    layer = TransactionLayer(Timers(T1, T2, T4))
    key, inv = start_invite(layer)
    assert statuses(layer.respond(key, response_to(inv, 486, to_tag="t"), 0.0)) == [486]
    fired: list[float] = []
    now = 0.0
    while now < 12.0:
        deadline = layer.next_deadline()
        assert deadline is not None
        now = deadline
        if statuses(layer.tick(now)) == [486]:
            fired.append(now)
    assert fired == [0.5, 1.5, 3.5, 7.5, 11.5, 15.5]  # intervals 0.5, 1, 2, 4, 4, 4: doubling, capped at T2
    ack = request("ACK", branch="z9hG4bKinv1", to_tag="t")
    assert layer.receive_request(stamp_via(ack, CALLER), CALLER, now) == []
    assert layer.state(key) == "confirmed"
    assert sent(layer.tick(now + T4)) == []
    assert layer.state(key) is None


def test_unacknowledged_final_response_times_out_on_timer_h() -> None:
    """Without an ACK, Timer H (64*T1) ends the transaction and tells the TU."""
    layer = TransactionLayer()
    key, inv = start_invite(layer)
    layer.respond(key, response_to(inv, 404, to_tag="t"), 0.0)
    effects: list[object] = []
    now = 0.0
    while layer.state(key) is not None:
        deadline = layer.next_deadline()
        assert deadline is not None
        now = deadline
        effects += layer.tick(now)
    assert now == 64 * T1
    assert [e for e in effects if isinstance(e, ServerTimeout)] == [ServerTimeout(key, inv)]


def test_no_retransmission_over_tcp() -> None:
    """Over TCP Timer G is not set: the final response goes once, and Timer H still runs."""
    layer = TransactionLayer()
    key, inv = start_invite(layer, CALLER_TCP, transport="TCP")
    layer.respond(key, response_to(inv, 480, to_tag="t"), 0.0)
    assert layer.next_deadline() == 64 * T1
    assert sent(layer.tick(64 * T1)) == []


def test_accepted_state_absorbs_invite_copies_and_passes_ack_of_2xx() -> None:
    """After a 2xx (RFC 6026 Accepted), INVITE copies are absorbed; the 2xx's ACK goes to the TU."""
    layer = TransactionLayer()
    key, inv = start_invite(layer)
    ok = response_to(inv, 200, to_tag="t")
    assert statuses(layer.respond(key, ok, 0.0)) == [200]
    assert layer.state(key) == "accepted"
    assert layer.receive_request(inv, CALLER, 0.2) == []
    assert statuses(layer.respond(key, ok, 0.5)) == [200]  # the TU's own retransmission
    ack = stamp_via(request("ACK", branch="z9hG4bKack1", to_tag="t"), CALLER)
    assert layer.receive_request(ack, CALLER, 0.6) == [AckReceived(ack, CALLER)]
    layer.tick(64 * T1)
    assert layer.state(key) is None


def test_non_invite_transaction() -> None:
    """BYE gets its response; a copy gets the same again; Timer J ends it (64*T1 UDP, at once TCP)."""
    layer = TransactionLayer()
    bye = stamp_via(request("BYE", branch="z9hG4bKbye1", to_tag="t", cseq=2), CALLER)
    [received] = layer.receive_request(bye, CALLER, 0.0)
    assert isinstance(received, RequestReceived)
    assert layer.receive_request(bye, CALLER, 0.1) == []  # Trying: absorbed
    assert statuses(layer.respond(received.key, response_to(bye, 200), 0.2)) == [200]
    assert statuses(layer.receive_request(bye, CALLER, 0.3)) == [200]
    assert layer.state(received.key) == "completed"
    layer.tick(0.2 + 64 * T1)
    assert layer.state(received.key) is None
    tcp = stamp_via(request("OPTIONS", branch="z9hG4bKo1", transport="TCP"), CALLER_TCP)
    [got] = layer.receive_request(tcp, CALLER_TCP, 0.0)
    assert isinstance(got, RequestReceived)
    layer.respond(got.key, response_to(tcp, 200), 0.0)
    layer.tick(0.0)
    assert layer.state(got.key) is None


def test_cancel_finds_its_invite() -> None:
    """A CANCEL matches the INVITE with the same branch and sent-by (§9.2), and nothing else."""
    layer = TransactionLayer()
    key, _ = start_invite(layer)
    cancel = stamp_via(request("CANCEL", branch="z9hG4bKinv1"), CALLER)
    assert layer.find_invite(cancel) == key
    other = stamp_via(request("CANCEL", branch="z9hG4bKelse"), CALLER)
    assert layer.find_invite(other) is None
    [received] = layer.receive_request(cancel, CALLER, 0.1)
    assert isinstance(received, RequestReceived) and received.key != key


def test_rfc2543_matching_without_magic_cookie() -> None:
    """Requests without a z9hG4bK branch match by Call-ID, From tag, CSeq and Via (§17.2.3)."""
    layer = TransactionLayer()
    inv = stamp_via(invite(branch="oldstyle1"), CALLER)
    effects = layer.receive_request(inv, CALLER, 0.0)
    [received] = [e for e in effects if isinstance(e, RequestReceived)]
    assert statuses(layer.receive_request(inv, CALLER, 0.1)) == [100]
    layer.respond(received.key, response_to(inv, 603, to_tag="t"), 0.2)
    ack = stamp_via(request("ACK", branch="oldstyle1", to_tag="t"), CALLER)
    assert layer.receive_request(ack, CALLER, 0.3) == []
    assert layer.state(received.key) == "confirmed"


def test_client_transaction_retransmits_then_times_out() -> None:
    """Our BYE repeats on Timer E (T1 doubling to T2) and gives up on Timer F (64*T1)."""
    layer = TransactionLayer()
    bye = request("BYE", branch="z9hG4bKours", to_tag="t", cseq=1)
    key, effects = layer.send_request(bye, CALLER, 0.0)
    assert sent(effects) == [bye]
    times: list[float] = []
    outcome: list[object] = []
    while layer.state(key) is not None:
        deadline = layer.next_deadline()
        assert deadline is not None
        step = layer.tick(deadline)
        if sent(step):
            times.append(deadline)
        outcome += [e for e in step if isinstance(e, ClientTimeout)]
    assert times[:5] == [0.5, 1.5, 3.5, 7.5, 11.5]
    assert outcome == [ClientTimeout(key, bye)]


def test_client_transaction_completes_on_response() -> None:
    """A 200 to our BYE reaches the TU once; copies of it are absorbed; Timer K ends it."""
    layer = TransactionLayer()
    bye = request("BYE", branch="z9hG4bKours2", to_tag="t", cseq=1)
    key, _ = layer.send_request(bye, CALLER, 0.0)
    ok = response_to_bye(bye)
    assert layer.receive_response(ok, 0.1) == [ClientResponse(key, bye, ok)]
    assert layer.receive_response(ok, 0.2) == []
    layer.tick(0.1 + T4)
    assert layer.state(key) is None
    assert layer.receive_response(ok, 9.0) == []  # stray: dropped


def test_via_stamping_and_response_destination() -> None:
    """received/rport are noted (§18.2.1, RFC 3581) and responses go where they say (§18.2.2)."""
    natted = Peer("UDP", "198.51.100.7", 61000)
    plain = stamp_via(request("OPTIONS", sent_by="10.0.0.9:5060"), natted)
    assert plain.vias[0].param("received") == "198.51.100.7"
    assert response_destination(plain, natted) == Peer("UDP", "198.51.100.7", 5060)
    with_rport = request("OPTIONS", sent_by="10.0.0.9:5060")
    headers = with_rport.headers.with_("Via", "SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bKr;rport")
    rport = stamp_via(Request("OPTIONS", with_rport.uri, headers), natted)
    assert rport.vias[0].param("rport") == "61000"
    assert response_destination(rport, natted) == Peer("UDP", "198.51.100.7", 61000)
    same = stamp_via(request("OPTIONS", sent_by="10.0.0.9:5070"), Peer("UDP", "10.0.0.9", 5070))
    assert same.vias[0].param("received") is None
    assert response_destination(same, CALLER_TCP) == CALLER_TCP


# -- INVITE client transactions (§17.1.1, RFC 6026): the GB/T 28181 platform's live-view INVITEs --------

DEVICE = Peer("UDP", "127.0.0.1", 5062)


def our_invite() -> Request:
    from dispatchd.channels.hotline.sip import Headers

    return Request(
        "INVITE",
        "sip:33038100001310000001@127.0.0.1:5062",
        Headers(
            [
                ("Via", "SIP/2.0/UDP 127.0.0.1:15060;branch=z9hG4bKinv1;rport"),
                ("From", "<sip:33038100002000000001@3303810000>;tag=ours"),
                ("To", "<sip:33038100001310000001@3303810000>"),
                ("Call-ID", "live-1"),
                ("CSeq", "1 INVITE"),
                ("Route", "<sip:proxy.example;lr>"),
            ]
        ),
    )


def device_response(request: Request, status: int) -> Response:
    return response_to(request, status, to_tag="dev")


def test_invite_client_retransmits_on_timer_a_and_times_out_on_b() -> None:
    """Over UDP the INVITE repeats at T1, 2T1, 4T1 … (no T2 cap) and Timer B (64·T1) gives up."""
    layer = TransactionLayer(Timers(T1, T2, T4))
    key, first = layer.send_invite(our_invite(), DEVICE, 0.0)
    assert [m.method for m in sent(first) if isinstance(m, Request)] == ["INVITE"]
    resent: list[float] = []
    now = 0.0
    timeout: list[object] = []
    while now <= 64 * T1:
        now = layer.next_deadline() or now + 1
        effects = layer.tick(now)
        if sent(effects):
            resent.append(now)
        timeout += [e for e in effects if isinstance(e, ClientTimeout)]
    assert resent[:5] == [0.5, 1.5, 3.5, 7.5, 15.5]
    assert len(timeout) == 1 and layer.state(key) is None


def test_invite_client_2xx_passes_each_copy_to_the_tu() -> None:
    """A provisional stops Timer A; the 2xx and its copies reach the TU (which ACKs them) until Timer M."""
    layer = TransactionLayer(Timers(T1, T2, T4))
    inv = our_invite()
    key, _ = layer.send_invite(inv, DEVICE, 0.0)
    trying = layer.receive_response(device_response(inv, 100), 0.1)
    assert [e.response.status for e in trying if isinstance(e, ClientResponse)] == [100]
    assert layer.tick(10.0) == [] and layer.state(key) == "proceeding"
    ok = device_response(inv, 200)
    assert [type(e) for e in layer.receive_response(ok, 11.0)] == [ClientResponse]
    assert [type(e) for e in layer.receive_response(ok, 12.0)] == [ClientResponse]
    layer.tick(11.0 + 64 * T1)
    assert layer.state(key) is None


def test_invite_client_acknowledges_a_refusal_itself() -> None:
    """A 486 is ACKed by the transaction (same branch, the response's To, the Route set), copies again."""
    layer = TransactionLayer(Timers(T1, T2, T4))
    inv = our_invite()
    key, _ = layer.send_invite(inv, DEVICE, 0.0)
    busy = device_response(inv, 486)
    effects = layer.receive_response(busy, 0.2)
    (ack,) = [m for m in sent(effects) if isinstance(m, Request)]
    assert ack.method == "ACK" and ack.uri == inv.uri and ack.vias[0].branch == "z9hG4bKinv1"
    assert ack.to.tag == "dev" and ack.cseq.number == 1 and ack.headers.get_all("Route") == ["<sip:proxy.example;lr>"]
    assert [e.response.status for e in effects if isinstance(e, ClientResponse)] == [486]
    again = layer.receive_response(busy, 1.0)
    assert [m.method for m in sent(again) if isinstance(m, Request)] == ["ACK"]
    assert not any(isinstance(e, ClientResponse) for e in again)
    layer.tick(0.2 + 32.0)
    assert layer.state(key) is None
