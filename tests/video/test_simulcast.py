"""Simulcast without an event loop: layer choice, switching at keyframes with RTP rewriting, link estimates."""

from __future__ import annotations

import struct
from pathlib import Path

from dispatchd.video import vp8
from dispatchd.video.forward import RtpForwarder, RtpStream, Source
from dispatchd.video.framing import EncodedFrame
from dispatchd.video.layout import LARGE, MEDIUM, SMALL
from dispatchd.video.simulcast import (
    REPAIRED_RID_URI,
    RID_URI,
    Layer,
    LinkEstimate,
    Picture,
    allocate,
    answer_layers,
    choose_layer,
    extension_ids,
    offered_layers,
)

LOW = Layer(active=True, pixels=160 * 120, bitrate=100_000)
MID = Layer(active=True, pixels=320 * 240, bitrate=300_000)
HIGH = Layer(active=True, pixels=640 * 480, bitrate=1_200_000)


def test_a_tile_gets_the_low_layer_and_the_speaker_the_high_one() -> None:
    """Small tiles take the lowest layer, 4-way tiles the middle one, the speaker the highest, whatever
    order the layers were offered in."""
    layers = [HIGH, LOW, MID]  # as a browser may list them
    assert choose_layer(layers, SMALL) == 1
    assert choose_layer(layers, MEDIUM) == 2
    assert choose_layer(layers, LARGE) == 0


def test_a_paused_layer_is_not_chosen_and_a_budget_lowers_the_layer() -> None:
    """A layer the browser stopped sending is passed over; a link budget below a layer's rate lowers it."""
    paused = Layer(active=False, pixels=640 * 480, bitrate=0)
    assert choose_layer([LOW, MID, paused], LARGE) == 1
    assert choose_layer([LOW, MID, HIGH], LARGE, budget=500_000) == 1
    assert choose_layer([LOW, MID, HIGH], LARGE, budget=50_000) == 0  # never below the lowest


def test_allocation_spends_a_budget_on_the_large_picture_first() -> None:
    """Within one subscriber's budget every picture gets its low layer and the speaker is raised first."""
    layers = [LOW, MID, HIGH]
    pictures = [Picture(layers, SMALL)] * 4 + [Picture(layers, LARGE)]
    assert allocate(pictures, None) == [0, 0, 0, 0, 2]
    assert allocate(pictures, 4 * 100_000 + 300_000) == [0, 0, 0, 0, 1]
    assert allocate(pictures, 100_000) == [0, 0, 0, 0, 0]


def vp8_frame(picture_id: int, keyframe: bool, packets: int = 2) -> list[bytes]:
    """A VP8 frame as a publisher packetises it: 15-bit picture IDs, a key frame's tag in its first packet."""
    tag = (
        bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x80, 0x02, 0xE0, 0x01])
        if keyframe
        else bytes([0x31, 0, 0])
    )
    chunks = [tag + b"k" * 20] + [b"d" * 20] * (packets - 1)
    return [
        vp8.build(c, start=i == 0, picture_id=picture_id, tl0picidx=picture_id & 0xFF)
        for i, c in enumerate(chunks)
    ]


def frame(source_picture: int, timestamp: int, arrival: float, keyframe: bool = False) -> EncodedFrame:
    payloads = vp8_frame(source_picture, keyframe)
    data = b"".join(p[vp8.parse(p).size :] for p in payloads)
    return EncodedFrame(data, timestamp, keyframe, payloads=payloads, arrival=arrival)


def header(packet: bytes) -> tuple[bool, int, int, int]:
    """(marker, sequence number, timestamp, SSRC) of an RTP packet (RFC 3550 section 5.1)."""
    _, second, seq, ts, ssrc = struct.unpack_from("!BBHII", packet)
    return bool(second & 0x80), seq, ts, ssrc


def payload_of(packet: bytes) -> bytes:
    size = 12
    if packet[0] & 0x10:
        size += 4 + 4 * int.from_bytes(packet[14:16])
    return packet[size:]


def test_a_slot_switches_layer_at_the_target_keyframe_and_the_stream_stays_continuous() -> None:
    """Moved from the low layer to the high one, a slot keeps forwarding the low layer until the high
    layer's keyframe (requested from that layer's publisher), then sends it on with consecutive
    sequence numbers, one SSRC, timestamps advanced by the time that passed, and VP8 picture IDs and
    TL0PICIDX that continue from the last ones sent."""
    asked: list[str] = []
    low = Source("site", "video", "VP8", request_keyframe=lambda: asked.append("l"), rid="l")
    high = Source("site", "video", "VP8", request_keyframe=lambda: asked.append("h"), rid="h")
    sent: list[bytes] = []
    slot = RtpForwarder("video")
    slot.attach(
        RtpStream(0x1234, 96, mid="3", mid_id=1, abs_send_time_id=3, sequence=65530, timestamp_base=0),
        sent.extend,
    )
    slot.show(low)
    # The two layers have their own timestamps and picture IDs, as two encoders of one camera.
    for n in range(3):
        t = 10.0 + n / 30
        low.deliver(frame(100 + n, 5000 + 3000 * n, t, keyframe=n == 0))
        high.deliver(frame(7000 + n, 900_000 + 3000 * n, t, keyframe=n == 0))
    slot.show(high)
    assert asked == ["l", "h"]  # the first keyframe of each, asked of that layer
    assert slot.showing == "site" and slot.pending is high
    for n in range(3, 6):
        t = 10.0 + n / 30
        low.deliver(frame(100 + n, 5000 + 3000 * n, t))
        high.deliver(frame(7000 + n, 900_000 + 3000 * n, t, keyframe=n == 5))
    assert slot.current is high and slot.pending is None
    low.deliver(frame(106, 5000 + 3000 * 6, 10.2))
    high.deliver(frame(7006, 900_000 + 3000 * 6, 10.2))

    headers = [header(p) for p in sent]
    assert {ssrc for *_, ssrc in headers} == {0x1234}
    seqs = [seq for _, seq, _, _ in headers]
    assert seqs == [(65530 + i) & 0xFFFF for i in range(len(sent))]  # across the wrap, no gap
    frames = [p for p in zip(sent[::2], sent[1::2], strict=True)]
    # Six frames of the low layer (the sixth came just before the high keyframe of the same
    # instant), then the high layer's keyframe and the frame after it.
    assert len(frames) == 8
    assert all(not header(a)[0] and header(b)[0] for a, b in frames)  # marker on the last packet
    stamps = [header(a)[2] for a, _ in frames]
    # One frame time apart, the keyframe of the same instant one tick after the frame before it.
    assert stamps == [0, 3000, 6000, 9000, 12000, 15000, 15001, 18001]
    pictures = [vp8.parse(payload_of(a)).picture_id for a, _ in frames]
    assert pictures == list(range(100, 108))
    tl0 = [vp8.parse(payload_of(b)).tl0picidx for _, b in frames]
    assert tl0 == list(range(100, 108))
    assert payload_of(frames[6][0])[5:] == vp8_frame(7005, True)[0][5:]  # the high layer's keyframe


def test_the_first_frame_after_a_switch_waits_for_a_keyframe_and_nack_is_answered_by_rtx() -> None:
    """A new slot forwards nothing before a keyframe; a NACKed packet comes back in RTX with its
    original sequence number in front (RFC 4588 section 4)."""
    source = Source("site", "video", "VP8", rid="l")
    sent: list[bytes] = []
    slot = RtpForwarder("video")
    stream = RtpStream(1, 96, rtx_ssrc=2, rtx_payload_type=97, sequence=10, timestamp_base=0)
    slot.attach(stream, sent.extend)
    slot.show(source)
    source.deliver(frame(1, 0, 1.0))
    assert sent == []
    source.deliver(frame(2, 3000, 1.033, keyframe=True))
    assert [header(p)[1] for p in sent] == [10, 11]
    slot.retransmit([11, 500])
    rtx = sent[-1]
    assert len(sent) == 3 and rtx[1] & 0x7F == 97 and header(rtx)[3] == 2
    assert payload_of(rtx)[:2] == (11).to_bytes(2) and payload_of(rtx)[2:] == payload_of(sent[1])


def test_vp8_descriptor_round_trip_and_shift() -> None:
    """Descriptors built with 15-bit picture IDs and TL0PICIDX parse back; shifting wraps both fields."""
    payload = vp8.build(b"\x9d", start=True, picture_id=0x7FFE, tl0picidx=255)
    d = vp8.parse(payload)
    assert (d.start, d.partition, d.picture_id, d.picture_id_bits, d.tl0picidx, d.size) == (
        True,
        0,
        0x7FFE,
        15,
        255,
        5,
    )
    shifted = vp8.parse(vp8.shift(payload, d, 3, 2))
    assert (shifted.picture_id, shifted.tl0picidx) == (1, 1)
    assert vp8.starts_keyframe(vp8_frame(1, True)[0]) and not vp8.starts_keyframe(vp8_frame(1, False)[0])
    assert vp8.parse(b"\x10\x00").picture_id is None


def test_a_short_link_lowers_at_once_and_rises_only_after_a_quiet_hold() -> None:
    """REMB below what is sent lowers the budget at once; it is raised by one probe after the hold, and a
    probe followed by congestion doubles the hold (hysteresis)."""
    link = LinkEstimate(hold=5.0)
    assert not link.on_remb(2_000_000, sending=1_000_000, now=0.0)
    assert link.budget is None
    assert link.on_remb(600_000, sending=1_000_000, now=1.0)
    assert link.budget == 600_000
    assert not link.tick(4.0)  # within the hold
    assert link.tick(6.0) and link.budget == 900_000  # one probe of ×1.5
    assert link.on_loss(0.2, sending=900_000, now=7.0)  # the probe brought loss
    assert link.budget == 810_000 and link.hold == 10.0
    assert not link.tick(15.0)
    assert link.tick(17.5)


def test_a_remb_lagging_behind_a_step_up_is_given_time_unless_it_falls() -> None:
    """Right after more is sent, a REMB still below it does not lower the budget; a falling one does."""
    link = LinkEstimate(hold=5.0)
    link.on_remb(1_000_000, sending=500_000, now=0.0)
    link.settle(now=1.0)  # a layer up: now 1.2 Mbit/s are sent
    assert not link.on_remb(1_050_000, sending=1_200_000, now=2.0)
    assert link.budget is None
    assert link.on_remb(700_000, sending=1_200_000, now=2.5)  # falling: the receiver saw overuse
    assert link.budget == 700_000
    assert not link.on_remb(700_000, sending=700_000, now=9.0)


OFFER = (Path(__file__).parent / "fixtures" / "chromium-simulcast-offer.sdp").read_text()


def test_a_chromium_simulcast_offer_is_read_and_answered_with_its_layers() -> None:
    """A captured Chromium offer (``sendEncodings`` with rids l, m, h) names three layers on its camera's
    m-line only; the answer accepts them with ``a=rid:… recv`` and ``a=simulcast:recv`` and the rid
    extensions at the offer's ids, and reading the answer gives the same layers back."""
    assert offered_layers(OFFER) == {"1": ["l", "m", "h"]}
    ids = extension_ids(OFFER, "1")
    assert ids[RID_URI] == 10 and ids[REPAIRED_RID_URI] == 11
    answer = (
        "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na=recvonly\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:1\r\na=recvonly\r\na=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid\r\n"
        "m=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:2\r\na=sendonly\r\n"
    )
    answered = answer_layers(answer, offered_layers(OFFER), OFFER)
    assert offered_layers(answered, "recv") == {"1": ["l", "m", "h"]}
    assert extension_ids(answered, "1")[RID_URI] == 10
    assert "a=simulcast" not in answered.split("a=mid:2")[1]
    assert answered.count("\r\n") == answered.count("\n")  # line ends kept as the answer had them
    assert answer_layers(answer, {}, OFFER) == answer
