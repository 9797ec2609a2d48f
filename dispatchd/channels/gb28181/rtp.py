"""RTP carrying an MPEG program stream, sans I/O: datagrams or a TCP byte stream in, access units out.

* RFC 3550 §5.1 the fixed RTP header (version 2, padding, extension, CSRCs, marker, payload type,
  sequence number, timestamp, SSRC) — :func:`parse_rtp` and :meth:`RtpPacket.encode`.
* RFC 4571 §2 RTP over a connection-oriented transport: every packet preceded by its 16-bit length
  (what GB/T 28181-2016 §9.2.2 prescribes for ``TCP/RTP/AVP``) — :class:`Rfc4571Framer` and
  :func:`frame_rfc4571`.
* GB/T 28181-2016 Annex C.2: a PS frame is cut into RTP packets of one timestamp, the last with the
  marker bit set — :func:`packetize`, and :class:`PsReceiver`, which puts frames back together in
  sequence order with :class:`~dispatchd.video.framing.FrameAssembler` (the one meetings use: a
  frame is released as soon as its marker packet and everything before it are in) and hands each
  frame to a :class:`~dispatchd.channels.gb28181.ps.PsDemuxer`.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

from dispatchd.channels.gb28181.ps import AccessUnit, PsDemuxer
from dispatchd.video.framing import FrameAssembler

__all__ = [
    "PsReceiver",
    "Rfc4571Framer",
    "RtpError",
    "RtpPacket",
    "frame_rfc4571",
    "packetize",
    "parse_rtp",
]

#: Payload bytes per packet written by :func:`packetize` (fits a 1500-byte MTU with IP/UDP/RTP).
PAYLOAD_SIZE: Final = 1400


class RtpError(ValueError):
    """Bytes that are not an RTP packet."""


@dataclass(frozen=True, slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrcs: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None  # (profile, data)

    def encode(self) -> bytes:
        first = 0x80 | (0x10 if self.extension is not None else 0) | len(self.csrcs)
        second = (0x80 if self.marker else 0) | self.payload_type
        out = struct.pack(
            "!BBHII", first, second, self.sequence & 0xFFFF, self.timestamp & 0xFFFFFFFF, self.ssrc
        )
        out += b"".join(struct.pack("!I", c) for c in self.csrcs)
        if self.extension is not None:
            profile, data = self.extension
            if len(data) % 4:
                raise RtpError("an RTP header extension is a whole number of 32-bit words")
            out += struct.pack("!HH", profile, len(data) // 4) + data
        return out + self.payload


def parse_rtp(data: bytes) -> RtpPacket:
    """Read one RTP packet (RFC 3550 §5.1); padding is removed from the payload."""
    if len(data) < 12:
        raise RtpError("shorter than an RTP header")
    first, second, sequence, timestamp, ssrc = struct.unpack_from("!BBHII", data)
    if first >> 6 != 2:
        raise RtpError(f"RTP version {first >> 6}, not 2")
    offset = 12 + 4 * (first & 0x0F)
    if offset > len(data):
        raise RtpError("CSRC list runs past the packet")
    csrcs = struct.unpack_from(f"!{first & 0x0F}I", data, 12)
    extension = None
    if first & 0x10:
        if offset + 4 > len(data):
            raise RtpError("header extension runs past the packet")
        profile, words = struct.unpack_from("!HH", data, offset)
        end = offset + 4 + 4 * words
        if end > len(data):
            raise RtpError("header extension runs past the packet")
        extension = (profile, bytes(data[offset + 4 : end]))
        offset = end
    end = len(data)
    if first & 0x20:
        padding = data[-1]
        if padding == 0 or end - padding < offset:
            raise RtpError("bad padding length")
        end -= padding
    return RtpPacket(
        second & 0x7F,
        sequence,
        timestamp,
        ssrc,
        bytes(data[offset:end]),
        bool(second & 0x80),
        csrcs,
        extension,
    )


def frame_rfc4571(packet: bytes) -> bytes:
    """One packet with its RFC 4571 length prefix."""
    if len(packet) > 0xFFFF:
        raise RtpError("an RFC 4571 frame holds at most 65535 bytes")
    return struct.pack("!H", len(packet)) + packet


class Rfc4571Framer:
    """Cut a TCP byte stream into RTP packets by their 16-bit length prefix (RFC 4571 §2)."""

    def __init__(self) -> None:
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        pos = 0
        buf = self._buf
        while len(buf) - pos >= 2:
            length = buf[pos] << 8 | buf[pos + 1]
            if len(buf) - pos - 2 < length:
                break
            out.append(bytes(buf[pos + 2 : pos + 2 + length]))
            pos += 2 + length
        del buf[:pos]
        return out


def packetize(
    frame: bytes, *, payload_type: int, sequence: int, timestamp: int, ssrc: int, size: int = PAYLOAD_SIZE
) -> list[bytes]:
    """One PS frame as RTP packets of one timestamp, the marker on the last (Annex C.2)."""
    chunks = [frame[i : i + size] for i in range(0, len(frame), size)] or [b""]
    return [
        RtpPacket(
            payload_type, (sequence + n) & 0xFFFF, timestamp, ssrc, chunk, n == len(chunks) - 1
        ).encode()
        for n, chunk in enumerate(chunks)
    ]


class PsReceiver:
    """RTP packets of one PS stream in, access units out (see the module documentation).

    The first packet's SSRC is the stream's (``expected_ssrc`` from the SDP's ``y=`` is noted, not
    enforced: some devices ignore it); packets of any other SSRC are dropped and counted. A frame
    lost for good makes the demuxer drop what it holds, and the next unit says ``discontinuity``.
    """

    def __init__(self, codec: str | None = None, expected_ssrc: int | None = None) -> None:
        # A 4K key frame can take a few hundred packets: room for 2048 before giving up on one.
        self.assembler = FrameAssembler("video", "PS", capacity=2048)
        self.demuxer = PsDemuxer(codec)
        self.expected_ssrc = expected_ssrc
        self.ssrc: int | None = None
        self.packets = 0
        self.bytes = 0
        self.foreign_packets = 0
        self.bad_packets = 0

    @property
    def ssrc_mismatch(self) -> bool:
        return self.expected_ssrc is not None and self.ssrc is not None and self.ssrc != self.expected_ssrc

    def receive(self, data: bytes) -> list[AccessUnit]:
        try:
            packet = parse_rtp(data)
        except RtpError:
            self.bad_packets += 1
            return []
        if self.ssrc is None:
            self.ssrc = packet.ssrc
        elif packet.ssrc != self.ssrc:
            self.foreign_packets += 1
            return []
        self.packets += 1
        self.bytes += len(data)
        frames, _ = self.assembler.push(
            packet.sequence, packet.timestamp, packet.marker, packet.payload, packet.ssrc
        )
        units: list[AccessUnit] = []
        for frame in frames:
            if frame.discontinuity:
                self.demuxer.reset()
            units += self.demuxer.feed(frame.data)
            units += self.demuxer.flush()
        return units
