"""MPEG-2 program stream (PS), sans I/O: a byte stream in, video access units out, and back.

GB/T 28181-2016 Annex C carries video as an MPEG program stream (ISO/IEC 13818-1 §2.5) over RTP:
each frame is one *pack* — a pack header, on key frames a system header and a program stream map
(PSM), then one or more PES packets holding the frame's H.264 or H.265 byte stream (Annex B start
codes) with its PTS. What this module implements, by section of ISO/IEC 13818-1:

* §2.5.3.3 the pack header (``00 00 01 BA``) with its stuffing, and the MPEG-1 pack header of
  ISO/IEC 11172-1 §2.4.3.2, which some encoders still write;
* §2.5.3.5 the system header (``BB``), skipped by its length;
* §2.5.4 the program stream map (``BC``): the ``stream_type`` of each elementary stream, so
  ``0x1B`` H.264, ``0x24`` H.265, ``0x10`` MPEG-4 video, ``0x80`` SVAC, ``0x90`` G.711 …
  (GB/T 28181-2016 Annex C lists the types devices use);
* §2.4.3.6 / §2.4.3.7 PES packets with their PTS and DTS (and the MPEG-1 PES syntax), video streams
  ``E0``–``EF`` assembled into access units, other streams skipped by their length;
* §2.5.3.2 the program end code (``B9``).

:class:`PsDemuxer` takes bytes in pieces of any size (an RTP payload cuts a pack anywhere). An access
unit is complete when a PES with another PTS starts, or when the caller says the frame ended
(:meth:`PsDemuxer.flush`, on the RTP marker bit, so no frame waits for the next). Bytes that are not
a start code are skipped until the next one, and counted. :func:`mux` writes one access unit as one
pack — the serialising half, used to round-trip and by the benchmark's cameras.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "STREAM_TYPES",
    "AccessUnit",
    "PsDemuxer",
    "PsError",
    "crc32_mpeg2",
    "guess_codec",
    "is_keyframe",
    "mux",
    "nal_types",
    "pack_header",
    "pes_packets",
    "program_stream_map",
    "system_header",
]

#: stream_type → codec name (ISO/IEC 13818-1 Table 2-34, GB/T 28181-2016 Annex C).
STREAM_TYPES: Final = {
    0x10: "MPEG4",
    0x1B: "H264",
    0x24: "H265",
    0x80: "SVAC",
    0x0F: "AAC",
    0x90: "G711A",
    0x91: "G711U",
    0x92: "G722",
    0x93: "G723",
    0x99: "G729",
    0x9B: "SVACA",
}
_CODEC_TYPES: Final = {"H264": 0x1B, "H265": 0x24, "MPEG4": 0x10, "SVAC": 0x80}

PACK: Final = 0xBA
SYSTEM: Final = 0xBB
PSM: Final = 0xBC
END: Final = 0xB9
PADDING: Final = 0xBE
#: Stream ids whose PES packets have no optional header (§2.4.3.7 Table 2-22).
_NO_PES_HEADER: Final = frozenset({0xBC, 0xBE, 0xBF, 0xF0, 0xF1, 0xF2, 0xF8, 0xFF})
#: Largest access unit kept (a 4K key frame is a few hundred kB); larger ones are dropped.
MAX_ACCESS_UNIT: Final = 8 * 1024 * 1024
#: Largest payload of one PES packet written by :func:`mux` (PES_packet_length is 16 bits).
MAX_PES_PAYLOAD: Final = 65000


class PsError(ValueError):
    """Bytes :func:`mux` cannot write (an out-of-range value)."""


@dataclass(frozen=True, slots=True)
class AccessUnit:
    """One coded picture as Annex B bytes, with its 90 kHz PTS (and DTS when the PES gave one).

    ``discontinuity``: bytes were lost or skipped before it, so the decoder may need a key frame.
    """

    codec: str
    data: bytes
    pts: int | None
    dts: int | None = None
    keyframe: bool = False
    discontinuity: bool = False


# ---- NAL units ------------------------------------------------------------------------------------


def _nal_headers(data: bytes) -> list[int]:
    """Offsets of the first byte of each NAL unit after a 00 00 01 start code."""
    found: list[int] = []
    pos = data.find(b"\x00\x00\x01")
    while pos != -1 and pos + 3 < len(data):
        found.append(pos + 3)
        pos = data.find(b"\x00\x00\x01", pos + 3)
    return found


def nal_types(codec: str, data: bytes) -> list[int]:
    """NAL unit types of an Annex B byte stream (H.264 §7.3.1, H.265 §7.3.1.2)."""
    if codec == "H265":
        return [(data[i] >> 1) & 0x3F for i in _nal_headers(data)]
    return [data[i] & 0x1F for i in _nal_headers(data)]


def is_keyframe(codec: str, data: bytes) -> bool:
    """A picture a decoder can start with: H.264 IDR or SPS; H.265 IRAP (16–23) or VPS/SPS."""
    types = nal_types(codec, data)
    if codec == "H265":
        return any(16 <= t <= 23 or t in (32, 33) for t in types)
    if codec == "H264":
        return any(t in (5, 7) for t in types)
    return True


def guess_codec(data: bytes) -> str:
    """H.264 or H.265 from the first NAL header, when no PSM said which (H.264 when unsure)."""
    for i in _nal_headers(data)[:4]:
        if i + 1 < len(data) and data[i] & 0x81 == 0 and data[i + 1] == 0x01:
            if (data[i] >> 1) & 0x3F in (32, 33, 34, 35, 19, 20, 1):
                return "H265"  # VPS, SPS, PPS, AUD, IDR or a trailing picture, layer 0, tid 1
        if data[i] & 0x80 == 0 and data[i] & 0x1F in (1, 5, 6, 7, 8, 9):
            return "H264"
    return "H264"


# ---- reading --------------------------------------------------------------------------------------


def _timestamp(b: bytes | bytearray, at: int) -> int:
    """A 33-bit PTS/DTS/SCR base in the 5-byte layout ``xxxx BBB1 BBBBBBBB BBBBBBB1 BBBBBBBB BBBBBBB1``."""
    return (
        ((b[at] >> 1) & 0x07) << 30
        | b[at + 1] << 22
        | (b[at + 2] >> 1) << 15
        | b[at + 3] << 7
        | b[at + 4] >> 1
    )


class PsDemuxer:
    """Video access units from a program stream fed in pieces (see the module documentation).

    ``codec`` is what the session negotiated, if anything; a PSM overrides it.
    """

    def __init__(self, codec: str | None = None) -> None:
        self._buf = bytearray()
        self._codec_hint = codec.upper() if codec else None
        self.stream_types: dict[int, int] = {}  # stream id → stream_type, from the PSM
        self._parts: list[bytes] = []
        self._size = 0
        self._pts: int | None = None
        self._dts: int | None = None
        self._last_pts: int | None = None
        self._stream: int | None = None
        self._discontinuity = False
        self.packs = 0
        self.pes_packets = 0
        self.skipped_bytes = 0
        self.dropped_units = 0

    @property
    def codec(self) -> str:
        if self._stream is not None and self._stream in self.stream_types:
            return STREAM_TYPES.get(self.stream_types[self._stream], "UNKNOWN")
        for stream, kind in self.stream_types.items():
            if 0xE0 <= stream <= 0xEF:
                return STREAM_TYPES.get(kind, "UNKNOWN")
        return self._codec_hint or "H264"

    def reset(self) -> None:
        """Bytes were lost (an RTP gap): drop the partial unit and what is buffered; the next unit
        says ``discontinuity``."""
        self._discontinuity = True
        self._buf.clear()
        self._parts.clear()
        self._size = 0
        self._pts = self._dts = None

    def feed(self, data: bytes) -> list[AccessUnit]:
        self._buf += data
        out: list[AccessUnit] = []
        buf = self._buf
        pos = 0
        while len(buf) - pos >= 4:
            if buf[pos] != 0 or buf[pos + 1] != 0 or buf[pos + 2] != 1:
                nxt = buf.find(b"\x00\x00\x01", pos + 1)
                skip = (nxt if nxt != -1 else len(buf) - 2) - pos
                self.skipped_bytes += skip
                self._discontinuity = True
                pos += skip
                continue
            code = buf[pos + 3]
            if code == PACK:
                if len(buf) - pos < 5:
                    break
                if buf[pos + 4] >> 6 == 0b01:  # MPEG-2 (§2.5.3.3)
                    if len(buf) - pos < 14:
                        break
                    total = 14 + (buf[pos + 13] & 0x07)
                elif buf[pos + 4] >> 4 == 0b0010:  # MPEG-1 (ISO/IEC 11172-1 §2.4.3.2)
                    total = 12
                else:
                    self.skipped_bytes += 4
                    self._discontinuity = True
                    pos += 4
                    continue
                if len(buf) - pos < total:
                    break
                self.packs += 1
                pos += total
            elif code == END:
                pos += 4
            elif code >= SYSTEM:
                if len(buf) - pos < 6:
                    break
                length = buf[pos + 4] << 8 | buf[pos + 5]
                if len(buf) - pos < 6 + length:
                    break
                packet = bytes(buf[pos : pos + 6 + length])
                pos += 6 + length
                if code == PSM:
                    self._read_psm(packet)
                elif 0xE0 <= code <= 0xEF:
                    out += self._read_video_pes(code, packet)
            else:
                # 00 00 01 followed by something that starts no system-layer unit: a start code
                # inside lost payload. Skip to the next candidate.
                self.skipped_bytes += 3
                self._discontinuity = True
                pos += 3
        del buf[:pos]
        return out

    def flush(self) -> list[AccessUnit]:
        """The frame ended (RTP marker): release the access unit being assembled."""
        unit = self._release()
        return [unit] if unit is not None else []

    def _read_psm(self, packet: bytes) -> None:
        # §2.5.4.1: version byte, marker byte, program_stream_info_length, descriptors,
        # elementary_stream_map_length, then (stream_type, elementary_stream_id, info_length, …).
        if len(packet) < 16:
            return
        info_length = packet[8] << 8 | packet[9]
        at = 10 + info_length
        if at + 2 > len(packet):
            return
        map_length = packet[at] << 8 | packet[at + 1]
        at += 2
        end = min(at + map_length, len(packet) - 4)
        types: dict[int, int] = {}
        while at + 4 <= end:
            stream_type, stream_id = packet[at], packet[at + 1]
            es_info = packet[at + 2] << 8 | packet[at + 3]
            types[stream_id] = stream_type
            at += 4 + es_info
        if types:
            self.stream_types = types

    def _read_video_pes(self, stream_id: int, packet: bytes) -> list[AccessUnit]:
        self.pes_packets += 1
        pts = dts = None
        if len(packet) > 8 and packet[6] >> 6 == 0b10:  # MPEG-2 PES header (§2.4.3.6)
            flags = packet[7] >> 6
            start = 9 + packet[8]
            if start > len(packet):
                self._discontinuity = True
                return []
            if flags & 0b10 and len(packet) >= 14:
                pts = _timestamp(packet, 9)
            if flags == 0b11 and len(packet) >= 19:
                dts = _timestamp(packet, 14)
        else:  # MPEG-1 PES header (ISO/IEC 11172-1 §2.4.3.3)
            at = 6
            while at < len(packet) and packet[at] == 0xFF and at < 6 + 16:
                at += 1
            if at < len(packet) and packet[at] >> 6 == 0b01:
                at += 2  # STD buffer scale and size
            if at < len(packet) and packet[at] >> 4 == 0b0010 and at + 5 <= len(packet):
                pts = _timestamp(packet, at)
                at += 5
            elif at < len(packet) and packet[at] >> 4 == 0b0011 and at + 10 <= len(packet):
                pts, dts = _timestamp(packet, at), _timestamp(packet, at + 5)
                at += 10
            elif at < len(packet) and packet[at] == 0x0F:
                at += 1
            start = at
        payload = packet[start:]
        out: list[AccessUnit] = []
        if pts is not None and self._parts and pts != self._pts:
            unit = self._release()
            if unit is not None:
                out.append(unit)
        if not self._parts:
            self._pts, self._dts = (pts, dts) if pts is not None else (self._last_pts, None)
        self._stream = stream_id
        if payload:
            if self._size + len(payload) > MAX_ACCESS_UNIT:
                self.dropped_units += 1
                self._parts.clear()
                self._size = 0
                self._discontinuity = True
                return out
            self._parts.append(payload)
            self._size += len(payload)
        return out

    def _release(self) -> AccessUnit | None:
        if not self._parts:
            return None
        data = b"".join(self._parts)
        self._parts.clear()
        self._size = 0
        if self._stream is not None and self._stream not in self.stream_types and self._codec_hint is None:
            self._codec_hint = guess_codec(data)
        codec = self.codec
        unit = AccessUnit(codec, data, self._pts, self._dts, is_keyframe(codec, data), self._discontinuity)
        self._discontinuity = False
        if self._pts is not None:
            self._last_pts = self._pts
        return unit


# ---- writing --------------------------------------------------------------------------------------


def _write_timestamp(prefix: int, value: int) -> bytes:
    value &= (1 << 33) - 1
    return bytes(
        [
            (prefix << 4) | ((value >> 30) & 0x07) << 1 | 1,
            (value >> 22) & 0xFF,
            ((value >> 15) & 0x7F) << 1 | 1,
            (value >> 7) & 0xFF,
            (value & 0x7F) << 1 | 1,
        ]
    )


def pack_header(scr: int, mux_rate: int = 6106) -> bytes:
    """An MPEG-2 pack header (§2.5.3.3): SCR base ``scr`` (90 kHz), extension 0, no stuffing.

    ``mux_rate`` is in units of 50 bytes/s (6106 ≈ 2.4 Mbit/s)."""
    if not 0 < mux_rate < 1 << 22:
        raise PsError("mux_rate out of range")
    base = scr & ((1 << 33) - 1)
    scr_bytes = bytes(
        [
            0x40 | ((base >> 30) & 0x07) << 3 | 0x04 | ((base >> 28) & 0x03),
            (base >> 20) & 0xFF,
            ((base >> 15) & 0x1F) << 3 | 0x04 | ((base >> 13) & 0x03),
            (base >> 5) & 0xFF,
            (base & 0x1F) << 3 | 0x04 | 0,  # SCR extension high bits (0)
            0x01,  # SCR extension low 7 bits (0) and marker
        ]
    )
    rate = bytes([(mux_rate >> 14) & 0xFF, (mux_rate >> 6) & 0xFF, (mux_rate & 0x3F) << 2 | 0x03])
    return b"\x00\x00\x01\xba" + scr_bytes + rate + b"\xf8"  # reserved 11111, pack_stuffing_length 0


def system_header(streams: list[tuple[int, int]], rate_bound: int = 6106) -> bytes:
    """A system header (§2.5.3.5) naming each ``(stream_id, buffer_size_bytes)``."""
    body = bytearray(
        [
            0x80 | (rate_bound >> 15) & 0x7F,
            (rate_bound >> 7) & 0xFF,
            (rate_bound & 0x7F) << 1 | 1,
            (sum(1 for s, _ in streams if 0xC0 <= s <= 0xDF) & 0x3F) << 2 | 0b00,  # audio_bound, fixed, CSPS
            0xE0 | (sum(1 for s, _ in streams if 0xE0 <= s <= 0xEF) & 0x1F),  # locks, marker, video_bound
            0x7F,  # packet_rate_restriction 0, reserved
        ]
    )
    for stream_id, size in streams:
        video = 0xE0 <= stream_id <= 0xEF
        scale = 1 if video else 0
        bound = size // (1024 if video else 128)
        body += bytes([stream_id, 0xC0 | scale << 5 | (bound >> 8) & 0x1F, bound & 0xFF])
    return b"\x00\x00\x01\xbb" + struct.pack(">H", len(body)) + bytes(body)


def crc32_mpeg2(data: bytes) -> int:
    """The CRC-32 of ISO/IEC 13818-1 Annex A (polynomial 0x04C11DB7, not reflected, init all ones)."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
            crc &= 0xFFFFFFFF
    return crc


def program_stream_map(streams: list[tuple[int, int]], version: int = 0) -> bytes:
    """A PSM (§2.5.4.1) mapping each ``(stream_type, stream_id)``, without descriptors, with its CRC."""
    entries = b"".join(bytes([stream_type, stream_id, 0, 0]) for stream_type, stream_id in streams)
    body = (
        bytes([0x80 | 0x60 | (version & 0x1F), 0xFF])
        + b"\x00\x00"
        + struct.pack(">H", len(entries))
        + entries
    )
    head = b"\x00\x00\x01\xbc" + struct.pack(">H", len(body) + 4)
    return head + body + struct.pack(">I", crc32_mpeg2(head + body))


def pes_packets(stream_id: int, payload: bytes, pts: int | None, dts: int | None = None) -> bytes:
    """``payload`` as PES packets (§2.4.3.6) of at most :data:`MAX_PES_PAYLOAD` bytes; PTS on the first."""
    out = bytearray()
    first = True
    offset = 0
    while first or offset < len(payload):
        chunk = payload[offset : offset + MAX_PES_PAYLOAD]
        offset += len(chunk)
        optional = b""
        flags = 0
        if first and pts is not None:
            if dts is not None and dts != pts:
                flags = 0b11
                optional = _write_timestamp(0b0011, pts) + _write_timestamp(0b0001, dts)
            else:
                flags = 0b10
                optional = _write_timestamp(0b0010, pts)
        header = bytes([0x80, flags << 6, len(optional)]) + optional
        out += b"\x00\x00\x01" + bytes([stream_id]) + struct.pack(">H", len(header) + len(chunk))
        out += header + chunk
        first = False
    return bytes(out)


def mux(
    data: bytes,
    pts: int,
    *,
    codec: str = "H264",
    keyframe: bool | None = None,
    stream_id: int = 0xE0,
    dts: int | None = None,
) -> bytes:
    """One access unit as one pack: pack header, then (on a key frame) system header and PSM, then
    its PES packets — the layout GB/T 28181-2016 Annex C describes."""
    if codec not in _CODEC_TYPES:
        raise PsError(f"cannot write {codec} into a program stream")
    if not 0xE0 <= stream_id <= 0xEF:
        raise PsError("a video stream id is E0–EF")
    key = is_keyframe(codec, data) if keyframe is None else keyframe
    out = pack_header(pts if dts is None else dts)
    if key:
        out += system_header([(stream_id, 1024 * 1024)])
        out += program_stream_map([(_CODEC_TYPES[codec], stream_id)])
    return out + pes_packets(stream_id, data, pts, dts)
