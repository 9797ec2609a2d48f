"""The GB/T 28181 SDP (§9.2, Annex F) over the captured INVITEs and answers: y=, f=, TCP setup."""

from __future__ import annotations

import pytest

from dispatchd.channels.gb28181.sdp import GbSdp, SdpError, make_ssrc, parse_sdp
from tests.channels.gb28181.captures import NAMES, body, message

SDP = [n for n in NAMES if (message(n).headers.get("Content-Type") or "").lower() == "application/sdp"]


@pytest.mark.parametrize("name", SDP)
def test_round_trip(name: str) -> None:
    """Every captured SDP parses, encodes and parses again to the same description."""
    first = parse_sdp(body(name))
    assert parse_sdp(first.encode()) == first


def test_udp_play_offer() -> None:
    """eXosip's live-view offer: s=Play, RTP/AVP, PS/H264/MPEG4, recvonly, y=0000001002 and an empty f=."""
    sdp = parse_sdp(body("exosip-invite-play-udp.sip"))
    assert (sdp.session_name, sdp.proto, sdp.port, sdp.direction) == ("Play", "RTP/AVP", 45056, "recvonly")
    assert sdp.payloads == (96, 98, 97) and sdp.encoding(96) == "PS" and sdp.encoding(98) == "H264"
    assert sdp.ssrc == "0000001002" and sdp.ssrc_number == 1002 and sdp.media_format == ""
    assert not sdp.tcp


def test_dahua_answer() -> None:
    """The Dahua dome's answer: sendonly PS on port 9712, i= line, streamprofile attribute, f= description."""
    sdp = parse_sdp(body("dahua-sd6c3230-invite-200ok.sip"))
    assert (sdp.host, sdp.port, sdp.direction, sdp.info) == (
        "192.168.6.71",
        9712,
        "sendonly",
        "VCam Live Video",
    )
    assert sdp.attributes == (("streamprofile", "0"),) and sdp.media_format == "v/0/0/0/0/0a/0/0/0"


def test_tcp_setup_roles() -> None:
    """TCP offers and answers pair setup roles (RFC 4145): active ↔ passive, with connection:new."""
    active = parse_sdp(body("qtgb28181-invite-play-tcp-active.sip"))
    hik = parse_sdp(body("hikvision-ds2cd5024efwd-invite-200ok-tcp.sip"))
    assert active.tcp and active.setup == "active" and active.connection_attr == "new"
    assert active.uri == "34020000001310000001:0"
    assert hik.tcp and hik.setup == "passive" and hik.media_format is None and hik.port == 15060
    passive = parse_sdp(body("gosip-invite-play-tcp-passive.sip"))
    dahua = parse_sdp(body("dahua-invite-200ok-tcp.sip"))
    assert (passive.setup, dahua.setup) == ("passive", "active")


def test_playback_answer_time_range() -> None:
    """The recorder's Playback answer keeps its t= range and its own attributes."""
    sdp = parse_sdp(body("hikvision-nvr-playback-invite-200ok.sip"))
    assert sdp.time != "0 0" and any(name == "filesize" for name, _ in sdp.attributes)


def test_ssrc_by_annex_f() -> None:
    """y= is 0 for live, digits 4–8 of the domain, then the stream number in 4 digits."""
    assert make_ssrc("3303810000", 7) == "0381000007"
    assert make_ssrc("3402000000", 1, live=False) == "1200000001"
    offer = GbSdp(
        "33038100002000000001", "127.0.0.1", 30000, connection="127.0.0.1", ssrc=make_ssrc("3303810000", 12)
    )
    assert parse_sdp(offer.encode()).ssrc_number == 381000012


@pytest.mark.parametrize(
    "text",
    [
        "o=x 0 0 IN IP4 h\r\nm=video 1 RTP/AVP 96\r\n",
        "v=0\r\nm=video 1 RTP/AVP 96\r\n",
        "v=0\r\no=x 0 0 IN IP4 h\r\n",
        "v=0\r\no=x 0 0 IN IP4 h\r\nm=video 70000 RTP/AVP 96\r\n",
        "v=0\r\no=x 0 0 IN IP4 h\r\nm=video 1 RTP/AVP 96\r\ny=abc\r\n",
        "v=0\r\no=x 0 0 IN IP4 h\r\nm=video 1 RTP/AVP 96\r\nm=audio 2 RTP/AVP 8\r\n",
        "v=0\r\nbad line\r\n",
    ],
)
def test_refused(text: str) -> None:
    """No v=0, no origin, no media, a bad port, a bad y=, two media lines or a bad line raise SdpError."""
    with pytest.raises(SdpError):
        parse_sdp(text)
