"""Pure RTP framing: packets in, complete encoded frames out (no I/O, no clock, no decoding).

A video frame is the run of packets sharing one RTP timestamp; its last packet carries the marker
bit (RFC 3550 section 5.1; RFC 7741 section 4.1 for VP8, RFC 6184 section 5.1 for H.264). The
assembler releases a frame the moment its marker packet arrives and every packet before it is
present, instead of waiting for the first packet of the next frame, which would add one frame time
of delay. Packets lost for good (no retransmission within a few frames) make it skip to the next
frame and ask for a keyframe. Audio packets (Opus, RFC 7587) are each one frame and are released
as they arrive; a late one is dropped rather than delaying the others.
"""

from __future__ import annotations

from dataclasses import dataclass

VIDEO_CLOCK = 90000
# A packet this far behind the next expected one means the sender started a new sequence.
_RESTART_GAP = 3000
AUDIO_CLOCK = 48000


@dataclass(slots=True)
class EncodedFrame:
    """One encoded frame as forwarded: never decoded on the way through.

    ``timestamp`` is the RTP timestamp unwrapped and counted from the stream's first frame, in the
    codec's clock (90 kHz video, 48 kHz Opus); aiortc's receiver may overwrite it with its own
    mapping, which counts the same way.
    """

    data: bytes
    timestamp: int
    keyframe: bool
    discontinuity: bool = False  # frames were skipped before this one
    ssrc: int = 0
    # The publisher's RTP payloads (descriptors included), forwarded as they are; None when the
    # frame did not come by RTP (an RTSP camera) and is packetised by its source.
    payloads: list[bytes] | None = None
    arrival: float = 0.0  # monotonic seconds when its last packet arrived (passed in by the edge)


def is_keyframe(codec: str, data: bytes) -> bool:
    """True when the frame can be decoded on its own (a subscriber may start with it)."""
    codec = codec.upper()
    if codec == "VP8":
        # RFC 6386 section 9.1: bit 0 of the frame tag is 0 for a key frame.
        return len(data) >= 10 and data[0] & 0x01 == 0 and data[3:6] == b"\x9d\x01\x2a"
    if codec == "H264":
        return any(nal_type in (5, 7) for nal_type in h264_nal_types(data))
    return True  # audio: every Opus packet stands alone


def vp8_size(data: bytes) -> tuple[int, int] | None:
    """Width and height from a VP8 key frame header (RFC 6386 section 9.1), else None."""
    if not is_keyframe("VP8", data):
        return None
    width = int.from_bytes(data[6:8], "little") & 0x3FFF
    height = int.from_bytes(data[8:10], "little") & 0x3FFF
    return width, height


def h264_nal_types(data: bytes) -> list[int]:
    """NAL unit types of an Annex B byte stream (start codes 00 00 01 / 00 00 00 01)."""
    types: list[int] = []
    pos = data.find(b"\x00\x00\x01")
    while pos != -1 and pos + 3 < len(data):
        types.append(data[pos + 3] & 0x1F)
        pos = data.find(b"\x00\x00\x01", pos + 3)
    return types


def unwrap16(value: int, reference: int) -> int:
    """Extend a 16-bit sequence number to the value nearest ``reference`` (an extended number)."""
    diff = (value - reference) & 0xFFFF
    return reference + diff if diff < 0x8000 else reference - (0x10000 - diff)


def unwrap32(value: int, reference: int) -> int:
    """Extend a 32-bit RTP timestamp to the value nearest ``reference``."""
    diff = (value - reference) & 0xFFFFFFFF
    return reference + diff if diff < 0x80000000 else reference - (0x100000000 - diff)


@dataclass(slots=True)
class _Packet:
    timestamp: int
    marker: bool
    data: bytes
    payload: bytes | None


class FrameAssembler:
    """Reassembles frames of one RTP stream in sequence order.

    ``push`` takes one depayloaded packet and returns the frames it completed (oldest first) and
    whether a keyframe should be requested from the sender (frames were lost for good).
    """

    def __init__(self, kind: str, codec: str, *, max_waiting_frames: int = 3, capacity: int = 512) -> None:
        if kind not in ("audio", "video"):
            raise ValueError(f"unknown kind {kind!r}")
        self.kind = kind
        self.codec = codec.upper()
        self.max_waiting_frames = max_waiting_frames
        self.capacity = capacity
        self._packets: dict[int, _Packet] = {}
        self._markers: list[int] = []  # extended sequence numbers of stored marker packets, ascending
        self._next: int | None = None  # extended sequence number the next frame starts at
        self._highest: int | None = None
        self._released = False
        self._ts_origin: int | None = None
        self._ts_last = 0
        self._discontinuity = False
        self.frames_released = 0
        self.frames_skipped = 0

    def push(
        self,
        sequence_number: int,
        timestamp: int,
        marker: bool,
        data: bytes,
        ssrc: int = 0,
        payload: bytes | None = None,
    ) -> tuple[list[EncodedFrame], bool]:
        """One packet: ``data`` depayloaded, ``payload`` as it came (kept for forwarding when given)."""
        seq = sequence_number if self._highest is None else unwrap16(sequence_number, self._highest)
        if self._next is not None and seq < self._next - _RESTART_GAP:
            self._restart()  # the sender restarted its sequence numbers: a new stream
            seq = sequence_number
        if self._highest is None or seq > self._highest:
            self._highest = seq
        if self.kind == "audio":
            return self._push_audio(seq, timestamp, data, ssrc, payload), False
        if self._next is None or (not self._released and seq < self._next):
            self._next = seq
        if seq < self._next or seq in self._packets:
            return [], False  # late, or a duplicate (a retransmission that crossed the original)
        self._packets[seq] = _Packet(timestamp, marker, data, payload)
        if marker:
            self._insert_marker(seq)
        frames: list[EncodedFrame] = []
        request_keyframe = False
        while True:
            frame = self._take_frame(ssrc)
            if frame is not None:
                frames.append(frame)
                continue
            if len(self._markers) > self.max_waiting_frames or (self._highest - self._next >= self.capacity):
                self._skip_head_frame()
                request_keyframe = True
                continue
            break
        return frames, request_keyframe

    def _restart(self) -> None:
        self._packets.clear()
        self._markers.clear()
        self._next = self._highest = None
        self._released = False
        self._discontinuity = True

    def _push_audio(
        self, seq: int, timestamp: int, data: bytes, ssrc: int, payload: bytes | None
    ) -> list[EncodedFrame]:
        if self._next is not None and seq < self._next:
            return []
        self._next = seq + 1
        self._released = True
        payloads = None if payload is None else [payload]
        return [EncodedFrame(data, self._unwrap_timestamp(timestamp), True, False, ssrc, payloads)]

    def _insert_marker(self, seq: int) -> None:
        markers = self._markers
        if not markers or seq > markers[-1]:
            markers.append(seq)
        else:
            markers.append(seq)
            markers.sort()

    def _take_frame(self, ssrc: int) -> EncodedFrame | None:
        """Release the frame starting at ``_next`` if all its packets up to the marker are here."""
        assert self._next is not None
        start = self._next
        first = self._packets.get(start)
        if first is None:
            return None
        seq = start
        parts: list[bytes] = []
        payloads: list[bytes] | None = []
        while True:
            packet = self._packets.get(seq)
            if packet is None:
                return None
            if packet.timestamp != first.timestamp:
                # A new timestamp without a marker before it: the sender set no marker bit, so
                # the frame ended at the packet before (RFC 3550 leaves the marker profile-defined).
                seq -= 1
                break
            parts.append(packet.data)
            if payloads is not None:
                if packet.payload is None:
                    payloads = None
                else:
                    payloads.append(packet.payload)
            if packet.marker:
                break
            seq += 1
        for s in range(start, seq + 1):
            del self._packets[s]
        self._markers = [m for m in self._markers if m > seq]
        self._next = seq + 1
        self._released = True
        data = b"".join(parts)
        frame = EncodedFrame(
            data,
            self._unwrap_timestamp(first.timestamp),
            is_keyframe(self.codec, data),
            self._discontinuity,
            ssrc,
            payloads,
        )
        self._discontinuity = False
        self.frames_released += 1
        return frame

    def _skip_head_frame(self) -> None:
        """Give up on the incomplete frame at the head: resume after the first marker."""
        assert self._next is not None
        if self._markers:
            resume = self._markers.pop(0) + 1
        else:
            assert self._highest is not None
            resume = self._highest + 1
        for s in [s for s in self._packets if s < resume]:
            del self._packets[s]
        self._next = resume
        self._discontinuity = True
        self.frames_skipped += 1

    def _unwrap_timestamp(self, timestamp: int) -> int:
        if self._ts_origin is None:
            self._ts_origin = timestamp
            self._ts_last = timestamp
        self._ts_last = unwrap32(timestamp, self._ts_last)
        return self._ts_last - self._ts_origin
