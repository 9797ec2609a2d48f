"""The SIP parser and serializer over real-world messages, good and malformed (RFC 3261 §7, §20)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatchd.channels.hotline.sip import (
    Headers,
    KeepAlive,
    Request,
    Response,
    SipParseError,
    StreamFramer,
    canonical_name,
    parse_message,
    parse_name_addr,
    parse_uri,
    parse_via,
    response_to,
    split_list,
)

FIXTURES = Path(__file__).parent / "fixtures"
GOOD = sorted(
    p.name
    for p in FIXTURES.iterdir()
    if p.suffix == ".sip" and not p.name.startswith("malformed_no_blank") and "malformed" not in p.name
)


def load(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def request(name: str) -> Request:
    message = parse_message(load(name))
    assert isinstance(message, Request)
    return message


def without_length(headers: Headers) -> list[tuple[str, str]]:
    return [(n, v) for n, v in headers if n != "Content-Length"]


@pytest.mark.parametrize("name", GOOD)
def test_round_trip(name: str) -> None:
    """Every good fixture parses, serialises and parses again to the same message."""
    first = parse_message(load(name))
    again = parse_message(first.encode())
    assert type(again) is type(first)
    assert without_length(again.headers) == without_length(first.headers)
    assert again.body == first.body
    if isinstance(first, Request):
        assert isinstance(again, Request)
        assert (again.method, again.uri, again.version) == (first.method, first.uri, first.version)
    else:
        assert isinstance(again, Response)
        assert (again.status, again.reason) == (first.status, first.reason)
    assert again.encode() == first.encode()


def test_asterisk_invite() -> None:
    """An Asterisk (chan_pjsip) INVITE: rport Via, P-Asserted-Identity, SDP body framed by Content-Length."""
    invite = request("asterisk_pjsip_invite.sip")
    assert invite.method == "INVITE" and invite.uri == "sip:057765890101@10.20.1.5:5060"
    via = invite.vias[0]
    assert via.transport == "UDP" and via.sent_by == "10.20.1.10:5060"
    assert via.branch == "z9hG4bKPj3a1e8c4b-6f7d-4b2a-9b61-0c8e5f1a2d3e" and via.has_param("rport")
    assert (
        invite.from_.display == "13857712345" and invite.from_.tag == "7d8f2a6c-1b3e-4f5a-8c9d-0e1f2a3b4c5d"
    )
    assert invite.to.tag is None
    assert invite.cseq.number == 21043 and invite.cseq.method == "INVITE"
    assert invite.content_type == "application/sdp"
    assert invite.body.startswith(b"v=0\r\n") and invite.body.endswith(b"a=sendrecv\r\n")
    assert invite.headers.get_all("Supported") == ["100rel", "timer", "replaces", "norefersub"]
    assert len(invite.headers.get_all("Allow")) == 12


def test_freeswitch_invite_without_via_port() -> None:
    """A FreeSWITCH INVITE whose Via has no port, with headers after Content-Length."""
    invite = request("freeswitch_sofia_invite.sip")
    via = invite.vias[0]
    assert via.port is None and via.sent_by == "192.168.10.20"
    assert (
        invite.headers.get(
            "Remote-Party-ID",
        )
        is not None
    )
    assert invite.headers.get("X-FS-Support") == "update_display,send_info"
    assert parse_uri(invite.uri).user == "967999"


def test_cisco_invite() -> None:
    """A Cisco gateway INVITE: a local 8-digit number dialled, Timestamp, media-level c= line."""
    invite = request("cisco_gateway_invite.sip")
    assert parse_uri(invite.uri).user == "65890108"
    assert invite.headers.get("Timestamp") == "1777795200"
    assert (
        invite.headers.get(
            "Cisco-Guid",
        )
        == "2317359360-0304878048-2402738642-2593881197"
    )
    assert invite.call_id == "8A2B3C4D-12AB11E0-8F3AC1D2-9A8B7C6D@10.1.1.1"


def test_compact_forms_and_several_vias() -> None:
    """Compact header names expand (§7.3.3), and Vias on one line and on several keep their order."""
    invite = request("carrier_compact_invite.sip")
    assert invite.call_id == "a84b4c76e66710@pc33.carrier.example"
    assert [v.sent_by for v in invite.vias] == [
        "proxy2.carrier.example:5060",
        "proxy1.carrier.example",
        "203.0.113.7:5062",
    ]
    assert invite.vias[2].transport == "TCP" and invite.vias[2].param("received") == "203.0.113.7"
    assert invite.from_.display == "李四"
    assert parse_uri(invite.from_.uri).user == "+8613757700001"
    assert invite.headers.get("Supported") == "timer"
    assert invite.content_type == "application/sdp" and len(invite.body) == 177
    uri = parse_uri(invite.uri)
    assert uri.user == "+8657765890104" and uri.param("user") == "phone"
    assert all(
        name
        in (
            "Via",
            "From",
            "To",
            "Call-ID",
            "CSeq",
            "Contact",
            "Max-Forwards",
            "Supported",
            "Content-Type",
            "Content-Length",
        )
        for name, _ in invite.headers
    )


def test_folded_headers() -> None:
    """Continuation lines (§7.3.1) join their header field with one space."""
    invite = request("folded_invite.sip")
    assert invite.vias[0].branch == "z9hG4bKfolded77"
    assert invite.from_.display == "Chen" and invite.from_.tag == "98asjd8"
    assert invite.headers.get("Subject") == "I know you're there, pick up the phone and talk to me!"
    assert invite.body == b""


def test_bare_line_feeds() -> None:
    """A message written with LF instead of CRLF is still read."""
    invite = request("lf_only_invite.sip")
    assert invite.call_id == "lf-1@10.0.0.9" and invite.vias[0].port == 5070


def test_response() -> None:
    """A Status-Line message parses as a response with its status and reason."""
    response = parse_message(load("ok_response.sip"))
    assert isinstance(response, Response)
    assert (response.status, response.reason) == (200, "OK")
    assert response.cseq.method == "BYE" and response.vias[0].param("rport") == "5060"


def test_leading_crlf_and_trailing_bytes() -> None:
    """CRLFs before the start line are ignored (§7.5); bytes past Content-Length are not body (§18.3)."""
    raw = load("asterisk_options.sip")
    message = parse_message(b"\r\n\r\n" + raw + b"junk after the message")
    assert isinstance(message, Request) and message.method == "OPTIONS" and message.body == b""


MALFORMED = [
    ("malformed_missing_call_id.sip", "missing Call-ID header field", True),
    ("malformed_bad_cseq.sip", "bad CSeq", True),
    ("malformed_cseq_method.sip", "CSeq method does not match", True),
    ("malformed_no_via.sip", "missing Via header field", True),
    ("malformed_short_body.sip", "body shorter than Content-Length", True),
    ("malformed_header_no_colon.sip", "malformed header line", True),
    ("malformed_bad_from.sip", "unclosed quote", True),
    ("malformed_bad_via.sip", "bad Via", True),
    ("malformed_nul_in_header.sip", "control character in Max-Forwards", True),
    ("malformed_bad_max_forwards.sip", "bad Max-Forwards", True),
    ("malformed_bad_content_length.sip", "bad Content-Length", True),
    ("malformed_no_blank_line.sip", "no empty line after the header fields", True),
    ("malformed_request_line.sip", "not a SIP message: bad Request-Line", False),
    ("garbage.bin", "not a SIP message", False),
]


@pytest.mark.parametrize(("name", "reason", "has_partial"), MALFORMED)
def test_malformed(name: str, reason: str, has_partial: bool) -> None:
    """Each malformed message raises a parse error saying what was wrong, with the readable part."""
    with pytest.raises(SipParseError) as caught:
        parse_message(load(name))
    assert reason in caught.value.reason
    assert (caught.value.partial is not None) is has_partial


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\r\n\r\n",
        b"\x00" * 64,
        b"SIP/2.0\r\n\r\n",
        b"SIP/2.0 99 Too Low\r\n\r\n",
        b"INVITE\r\n\r\n",
        b"INV\xffITE sip:a@b SIP/2.0\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"INVITE sip:a@b SIP/2.0\r\nVia: SIP/2.0/UDP h;branch=z9hG4bK1\r\nCSeq: 99999999999 INVITE\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello on the plain port
        b"A" * 70000,
    ],
)
def test_garbage_never_escapes_as_another_exception(data: bytes) -> None:
    """Whatever the bytes, the parser raises only SipParseError."""
    with pytest.raises(SipParseError):
        parse_message(data)


def test_every_truncation_of_a_real_invite_fails_cleanly() -> None:
    """Each prefix of a real INVITE either parses or raises SipParseError: no other exception."""
    raw = load("cisco_gateway_invite.sip")
    for end in range(len(raw)):
        try:
            parse_message(raw[:end])
        except SipParseError:
            pass


def test_header_helpers() -> None:
    """Names are canonical and case-insensitive; lists split outside quotes and angle brackets."""
    assert canonical_name("i") == "Call-ID" and canonical_name("CALL-id") == "Call-ID"
    assert canonical_name("cseq") == "CSeq" and canonical_name("x-custom-thing") == "X-Custom-Thing"
    assert split_list('"a, b" <sip:x@y>;q=1, <sip:z@w;p=1,2>') == ['"a, b" <sip:x@y>;q=1', "<sip:z@w;p=1,2>"]
    address = parse_name_addr('"Zhang \\"San\\"" <sip:13800000000@h;user=phone>;tag=9;other')
    assert address.display == 'Zhang "San"' and address.tag == "9" and address.param("other") == ""
    assert parse_name_addr(str(address)) == address
    bare = parse_name_addr("sip:13800000000@h;tag=9")
    assert bare.uri == "sip:13800000000@h" and bare.tag == "9"
    via = parse_via("SIP / 2.0 / udp [2001:db8::1]:5060 ; branch=z9hG4bK1;rport")
    assert via.transport == "UDP" and via.host == "[2001:db8::1]" and via.port == 5060
    assert via.branch == "z9hG4bK1" and via.has_param("rport") and via.param("rport") == ""
    assert parse_uri("tel:+86-577-6589-0101;phone-context=+86").user == "+86-577-6589-0101"
    with pytest.raises(SipParseError, match="unsupported URI scheme"):
        parse_uri("mailto:someone@example.org")


def test_response_to_copies_the_right_fields() -> None:
    """A response copies Via (all), From, Call-ID, CSeq, tags To, and 100 copies Timestamp (§8.2.6)."""
    invite = request("cisco_gateway_invite.sip")
    trying = response_to(invite, 100, to_tag="ours")
    assert trying.headers.get("Timestamp") == "1777795200" and trying.to.tag is None
    ringing = response_to(invite, 180, to_tag="ours")
    assert ringing.to.tag == "ours" and ringing.reason == "Ringing"
    assert ringing.headers.get_all("Via") == invite.headers.get_all("Via")
    assert ringing.call_id == invite.call_id and str(ringing.cseq) == "101 INVITE"
    assert parse_message(ringing.encode()) == ringing.__class__(
        ringing.status, ringing.reason, ringing.headers.plus("Content-Length", "0"), b""
    )


def test_stream_framer_cuts_messages_at_any_boundary() -> None:
    """Two messages and a keep-alive fed byte by byte come out whole, in order (§18.3, RFC 5626)."""
    first, second = load("asterisk_pjsip_invite.sip"), load("asterisk_options.sip")
    stream = first + b"\r\n\r\n" + second
    framer = StreamFramer()
    out: list[bytes | KeepAlive] = []
    for i in range(len(stream)):
        out += framer.feed(stream[i : i + 1])
    assert out == [first, KeepAlive(), second]
    assert framer.buffered == 0
    framer = StreamFramer()
    assert framer.feed(stream) == [first, KeepAlive(), second]


def test_stream_framer_refuses_what_it_cannot_frame() -> None:
    """A bad Content-Length or an endless header section raises, with the readable part to answer."""
    with pytest.raises(SipParseError) as caught:
        StreamFramer().feed(load("malformed_bad_content_length.sip"))
    assert "bad Content-Length" in caught.value.reason and caught.value.partial is not None
    framer = StreamFramer(max_message=1000)
    with pytest.raises(SipParseError, match="header section too long"):
        framer.feed(b"INVITE sip:a@b SIP/2.0\r\n" + b"X-Pad: " + b"p" * 2000)
    with pytest.raises(SipParseError, match="too large"):
        StreamFramer(max_message=900).feed(load("asterisk_pjsip_invite.sip"))
