"""RTP (RFC 3550), RFC 4571 framing over TCP, and PS over RTP back to access units, with reordering and loss."""

from __future__ import annotations

import random

import pytest

from dispatchd.channels.gb28181 import ps
from dispatchd.channels.gb28181.rtp import (
    PsReceiver,
    Rfc4571Framer,
    RtpError,
    RtpPacket,
    frame_rfc4571,
    packetize,
    parse_rtp,
)

FRAMES = [
    (b"\x00\x00\x00\x01\x67sps\x00\x00\x00\x01\x68pps\x00\x00\x00\x01\x65" + bytes(range(256)) * 20, 0),
    *[(b"\x00\x00\x00\x01\x41" + bytes([i]) * (900 + 300 * i), 3600 * i) for i in range(1, 8)],
]


def rtp_stream(ssrc: int = 381000001, start_seq: int = 65530) -> list[bytes]:
    """The frames as a device sends them: one pack per frame, cut into RTP packets of one timestamp."""
    packets: list[bytes] = []
    seq = start_seq
    for data, pts in FRAMES:
        out = packetize(ps.mux(data, pts), payload_type=96, sequence=seq, timestamp=pts, ssrc=ssrc, size=1000)
        packets += out
        seq += len(out)
    return packets


def test_header_round_trip() -> None:
    """CSRCs, a header extension, the marker and padding survive encode → parse."""
    packet = RtpPacket(
        96, 65535, 2**32 - 1, 0xDEADBEEF, b"payload", True, (1, 2), (0xBEDE, b"\x10\x20\x30\x40")
    )
    assert parse_rtp(packet.encode()) == packet
    padded = bytearray(RtpPacket(96, 1, 2, 3, b"abc").encode() + b"\x00\x00\x03")
    padded[0] |= 0x20
    assert parse_rtp(bytes(padded)).payload == b"abc"


@pytest.mark.parametrize(
    "data",
    [
        b"\x80\x60",
        b"\x40" + b"\x00" * 11,
        b"\x8f" + b"\x00" * 11,
        b"\x90" + b"\x00" * 11,
        b"\xa0" + b"\x00" * 11,
    ],
)
def test_bad_packets(data: bytes) -> None:
    """Too short, version 1, a CSRC list or extension past the end, and padding of 0 raise RtpError."""
    with pytest.raises(RtpError):
        parse_rtp(data)


def test_rfc4571_in_any_pieces() -> None:
    """Length-prefixed packets cut at every possible place come out whole and in order."""
    packets = rtp_stream()
    stream = b"".join(frame_rfc4571(p) for p in packets)
    rng = random.Random(5)
    framer = Rfc4571Framer()
    out: list[bytes] = []
    pos = 0
    while pos < len(stream):
        step = rng.randint(1, 700)
        out += framer.feed(stream[pos : pos + step])
        pos += step
    assert out == packets and framer.buffered == 0
    with pytest.raises(RtpError):
        frame_rfc4571(b"x" * 70000)


def test_ps_over_rtp_in_order() -> None:
    """Each frame comes out as its marker packet arrives, across a sequence-number wrap."""
    receiver = PsReceiver(expected_ssrc=381000001)
    units = []
    for packet in rtp_stream():
        units += receiver.receive(packet)
    assert [(u.data, u.pts) for u in units] == FRAMES
    assert units[0].keyframe and receiver.ssrc == 381000001 and not receiver.ssrc_mismatch


def test_ps_over_rtp_reordered() -> None:
    """Packets swapped in pairs (UDP reordering) still give every frame, in order."""
    packets = rtp_stream()
    swapped = packets[:]
    for i in range(0, len(swapped) - 1, 2):
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    receiver = PsReceiver()
    units = [u for p in swapped for u in receiver.receive(p)]
    assert [u.pts for u in units] == [pts for _, pts in FRAMES]


def test_loss_skips_to_the_next_frames() -> None:
    """A lost packet loses its frame; the frames after it come through, the first marked discontinuity."""
    packets = rtp_stream()
    receiver = PsReceiver()
    lost = 6  # inside the second frame
    units = [u for i, p in enumerate(packets) if i != lost for u in receiver.receive(p)]
    pts = [u.pts for u in units]
    assert pts[0] == 0 and 3600 not in pts and pts[-1] == FRAMES[-1][1]
    assert next(u for u in units if u.pts != 0).discontinuity


def test_foreign_ssrc_and_garbage_are_dropped() -> None:
    """Packets of another SSRC and bytes that are not RTP are counted and dropped; the stream goes on."""
    receiver = PsReceiver(expected_ssrc=1)
    packets = rtp_stream(ssrc=42)
    units = receiver.receive(packets[0])
    intruder = RtpPacket(96, 1, 1, 99, b"\x00\x00\x01\xba", True).encode()
    units += receiver.receive(intruder) + receiver.receive(b"\x00garbage")
    for p in packets[1:]:
        units += receiver.receive(p)
    assert len(units) == len(FRAMES)
    assert (receiver.foreign_packets, receiver.bad_packets) == (1, 1) and receiver.ssrc_mismatch
