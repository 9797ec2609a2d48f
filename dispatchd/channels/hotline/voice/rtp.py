"""RTP packets (RFC 3550 §5.1), sans I/O: parse and serialize, and tell RTCP apart (RFC 5761 §4).

The bridge touches every packet of every call, so this is deliberately small: one ``struct`` call
each way, the payload kept as the bytes it came in. CSRC lists and header extensions (§5.3.1) are
kept on parse and written back on serialize, so a packet round-trips unchanged; padding (§5.1, P
bit) is removed from the payload and its length remembered.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = ["RtpError", "RtpPacket", "build_rtp", "is_rtcp", "parse_rtp"]

_HEADER: Final = struct.Struct("!BBHII")
VERSION: Final = 2


class RtpError(ValueError):
    """Not an RTP packet we can read; the message says why."""


@dataclass(slots=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: tuple[int, bytes] | None = None  # (profile-defined 16 bits, data: a multiple of 4 bytes)
    padding: int = 0  # bytes of padding the packet carried (0: none)

    def serialize(self) -> bytes:
        return serialize_rtp(self)


def is_rtcp(data: bytes) -> bool:
    """RFC 5761 §4: on a shared port, a second byte of 192–223 is an RTCP packet type (200–204…)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


def parse_rtp(data: bytes) -> RtpPacket:
    """One RTP packet (§5.1); :class:`RtpError` for anything else."""
    if len(data) < 12:
        raise RtpError("shorter than an RTP header")
    first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
    if first >> 6 != VERSION:
        raise RtpError(f"RTP version {first >> 6}")
    offset = 12
    count = first & 0x0F
    csrc: tuple[int, ...] = ()
    if count:
        if len(data) < offset + 4 * count:
            raise RtpError("CSRC list runs past the packet")
        csrc = struct.unpack_from(f"!{count}I", data, offset)
        offset += 4 * count
    extension: tuple[int, bytes] | None = None
    if first & 0x10:  # §5.3.1 header extension
        if len(data) < offset + 4:
            raise RtpError("header extension runs past the packet")
        profile, words = struct.unpack_from("!HH", data, offset)
        end = offset + 4 + 4 * words
        if len(data) < end:
            raise RtpError("header extension runs past the packet")
        extension = (profile, bytes(data[offset + 4 : end]))
        offset = end
    end = len(data)
    padding = 0
    if first & 0x20:
        padding = data[-1]
        if padding == 0 or offset + padding > end:
            raise RtpError("bad padding length")
        end -= padding
    return RtpPacket(
        payload_type=second & 0x7F,
        sequence=sequence,
        timestamp=timestamp,
        ssrc=ssrc,
        payload=bytes(data[offset:end]),
        marker=bool(second & 0x80),
        csrc=tuple(csrc),
        extension=extension,
        padding=padding,
    )


def serialize_rtp(packet: RtpPacket) -> bytes:
    first = VERSION << 6 | len(packet.csrc)
    if packet.extension is not None:
        first |= 0x10
    if packet.padding:
        first |= 0x20
    parts = [
        _HEADER.pack(
            first,
            (0x80 if packet.marker else 0) | packet.payload_type,
            packet.sequence & 0xFFFF,
            packet.timestamp & 0xFFFFFFFF,
            packet.ssrc,
        )
    ]
    if packet.csrc:
        parts.append(struct.pack(f"!{len(packet.csrc)}I", *packet.csrc))
    if packet.extension is not None:
        profile, data = packet.extension
        if len(data) % 4:
            raise RtpError("header extension data must be a multiple of 4 bytes")
        parts.append(struct.pack("!HH", profile, len(data) // 4) + data)
    parts.append(packet.payload)
    if packet.padding:
        parts.append(bytes(packet.padding - 1) + bytes([packet.padding]))
    return b"".join(parts)


def build_rtp(
    payload_type: int, sequence: int, timestamp: int, ssrc: int, payload: bytes, marker: bool = False
) -> bytes:
    """The common case, written in one call: no CSRC, no extension, no padding."""
    return (
        _HEADER.pack(
            0x80, (0x80 if marker else 0) | payload_type, sequence & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc
        )
        + payload
    )


class RtpStream:
    """One outgoing RTP stream (RFC 3550 §5.1) fed by several sources in turn, sans I/O.

    The bridge sends the caller frames from the officer, then hold music, then the officer again;
    the caller must see one stream: one SSRC, sequence numbers without gaps, and timestamps that
    advance with the time that passed. Frames of the same source keep their own spacing; at a
    change of source, or a frame marked as the start of a talkspurt, the timestamp continues from
    the wall clock and the packet carries the marker bit (RFC 3551 §4.1).
    """

    def __init__(self, payload_type: int, ssrc: int, sequence: int, timestamp: int, rate: int = 8000) -> None:
        self.payload_type = payload_type
        self.ssrc = ssrc
        self.rate = rate
        self._sequence = sequence & 0xFFFF
        self._next = timestamp & 0xFFFFFFFF  # timestamp just after the last packet sent
        self._offset = 0
        self._source: object = None
        self._sent_at: float | None = None
        self.packets = 0

    def packet(
        self,
        source: object,
        timestamp: int,
        payload: bytes,
        now: float,
        marker: bool = False,
        payload_type: int | None = None,
    ) -> bytes:
        """The packet carrying ``payload`` that ``source`` stamped ``timestamp``."""
        if source is not self._source or marker:
            gap = 0
            if self._sent_at is not None:
                gap = max(round((now - self._sent_at) * self.rate) - len(payload), 0)
            self._offset = (self._next + gap - timestamp) & 0xFFFFFFFF
            self._source = source
            marker = True
        stamp = (timestamp + self._offset) & 0xFFFFFFFF
        data = build_rtp(
            self.payload_type if payload_type is None else payload_type,
            self._sequence,
            stamp,
            self.ssrc,
            payload,
            marker,
        )
        self._sequence = (self._sequence + 1) & 0xFFFF
        self._next = (stamp + len(payload)) & 0xFFFFFFFF
        self._sent_at = now
        self.packets += 1
        return data

    def event_packet(self, start: int, payload: bytes, marker: bool, payload_type: int) -> bytes:
        """A telephone-event packet (RFC 4733 §2.5.1.2: the timestamp of the event's start)."""
        data = build_rtp(payload_type, self._sequence, start, self.ssrc, payload, marker)
        self._sequence = (self._sequence + 1) & 0xFFFF
        self.packets += 1
        return data

    def now_timestamp(self, now: float) -> int:
        """The timestamp a packet sent at ``now`` would carry (for a DTMF event's start)."""
        if self._sent_at is None:
            return self._next
        return (self._next + max(round((now - self._sent_at) * self.rate), 0)) & 0xFFFFFFFF
