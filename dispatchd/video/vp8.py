"""The VP8 RTP payload descriptor (RFC 7741 section 4.2): parse it and shift its picture numbers.

A forwarded VP8 packet keeps the publisher's payload, descriptor included. When a receiving slot
switches to another source or simulcast layer, the picture IDs and TL0PICIDX of the new stream
continue from the last ones the subscriber saw (as RFC 7741 section 4.2 requires of one stream:
PictureID increments by one per picture), so its decoder sees one stream; the rest of the payload
is shared by every subscriber, untouched.

```
      0 1 2 3 4 5 6 7
     +-+-+-+-+-+-+-+-+
     |X|R|N|S|R| PID | (REQUIRED)
     +-+-+-+-+-+-+-+-+
X:   |I|L|T|K| RSV   | (OPTIONAL)
     +-+-+-+-+-+-+-+-+
I:   |M| PictureID   | (OPTIONAL, 7 or 15 bits)
     +-+-+-+-+-+-+-+-+
L:   |   TL0PICIDX   | (OPTIONAL)
     +-+-+-+-+-+-+-+-+
T/K: |TID|Y| KEYIDX  | (OPTIONAL)
     +-+-+-+-+-+-+-+-+
```
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Descriptor:
    """What a forwarder needs of one VP8 payload descriptor."""

    start: bool  # S: the first packet of a VP8 partition
    partition: int  # PID
    picture_id: int | None
    picture_id_bits: int  # 7 or 15 (0 when absent)
    picture_id_at: int  # byte offset of the PictureID field (0 when absent)
    tl0picidx: int | None
    tl0picidx_at: int
    size: int  # length of the descriptor; the VP8 payload follows

    @property
    def keyframe_start(self) -> bool:
        """True for the first packet of a key frame (descriptor S=1, PID=0; then the frame tag's P bit
        is 0, RFC 6386 section 9.1) — checked with :func:`starts_keyframe`."""
        return self.start and self.partition == 0


def parse(payload: bytes) -> Descriptor:
    """The descriptor at the start of a VP8 RTP payload; ValueError when it is cut short."""
    if not payload:
        raise ValueError("empty VP8 payload")
    first = payload[0]
    pos = 1
    picture_id: int | None = None
    bits = 0
    pid_at = 0
    tl0: int | None = None
    tl0_at = 0
    if first & 0x80:  # X: extension byte
        if len(payload) < 2:
            raise ValueError("VP8 descriptor cut short")
        ext = payload[1]
        pos = 2
        if ext & 0x80:  # I: PictureID
            if len(payload) < pos + 1:
                raise ValueError("VP8 descriptor cut short")
            pid_at = pos
            if payload[pos] & 0x80:  # M: 15 bits
                if len(payload) < pos + 2:
                    raise ValueError("VP8 descriptor cut short")
                picture_id = ((payload[pos] & 0x7F) << 8) | payload[pos + 1]
                bits = 15
                pos += 2
            else:
                picture_id = payload[pos] & 0x7F
                bits = 7
                pos += 1
        if ext & 0x40:  # L: TL0PICIDX
            if len(payload) < pos + 1:
                raise ValueError("VP8 descriptor cut short")
            tl0, tl0_at = payload[pos], pos
            pos += 1
        if ext & 0x30:  # T or K: one byte of TID/Y/KEYIDX
            pos += 1
        if len(payload) < pos:
            raise ValueError("VP8 descriptor cut short")
    return Descriptor(bool(first & 0x10), first & 0x07, picture_id, bits, pid_at, tl0, tl0_at, pos)


def starts_keyframe(payload: bytes) -> bool:
    """True when this packet begins a VP8 key frame (RFC 7741 section 4.3, RFC 6386 section 9.1)."""
    try:
        d = parse(payload)
    except ValueError:
        return False
    return d.keyframe_start and len(payload) > d.size and payload[d.size] & 0x01 == 0


def shift(payload: bytes, d: Descriptor, picture_delta: int, tl0_delta: int) -> bytes:
    """``payload`` with its PictureID and TL0PICIDX moved on by the deltas (modulo their widths)."""
    if (d.picture_id is None or not picture_delta) and (d.tl0picidx is None or not tl0_delta):
        return payload
    out = bytearray(payload)
    if d.picture_id is not None:
        if d.picture_id_bits == 15:
            value = (d.picture_id + picture_delta) & 0x7FFF
            out[d.picture_id_at] = 0x80 | (value >> 8)
            out[d.picture_id_at + 1] = value & 0xFF
        else:
            out[d.picture_id_at] = (d.picture_id + picture_delta) & 0x7F
    if d.tl0picidx is not None:
        out[d.tl0picidx_at] = (d.tl0picidx + tl0_delta) & 0xFF
    return bytes(out)


def build(
    payload: bytes, *, start: bool, picture_id: int | None = None, tl0picidx: int | None = None
) -> bytes:
    """A descriptor (15-bit PictureID when given) followed by ``payload``: the serialize of :func:`parse`."""
    first = 0x10 if start else 0
    ext = 0
    tail = b""
    if picture_id is not None:
        ext |= 0x80
        tail += bytes([0x80 | ((picture_id >> 8) & 0x7F), picture_id & 0xFF])
    if tl0picidx is not None:
        ext |= 0x40
        tail += bytes([tl0picidx & 0xFF])
    if ext:
        return bytes([first | 0x80, ext]) + tail + payload
    return bytes([first]) + payload
