"""Keyframe requests of the forwarding path, without peers."""

from __future__ import annotations

from dispatchd.video import vp8
from dispatchd.video.forward import KEYFRAME_REQUEST_FRAMES, ForwardedTrack, Source, h264_payloads
from dispatchd.video.framing import EncodedFrame


def _frame(n: int, keyframe: bool = False) -> EncodedFrame:
    return EncodedFrame(data=b"\x00" * 10, timestamp=n * 3000, keyframe=keyframe)


async def test_a_lost_keyframe_request_is_sent_again_while_a_slot_waits() -> None:
    """A slot waiting for the source's first keyframe asks again when the first request brought none,
    and stops asking once the keyframe arrives."""
    requests: list[int] = []
    source = Source("p1", "video", "VP8", request_keyframe=lambda: requests.append(1))
    track = ForwardedTrack("video")
    track.show(source)
    assert len(requests) == 1
    for n in range(KEYFRAME_REQUEST_FRAMES):
        source.deliver(_frame(n))
    assert len(requests) == 2
    assert track.frames_sent == 0 and track.waits_for_keyframe(source)
    source.deliver(_frame(KEYFRAME_REQUEST_FRAMES, keyframe=True))
    assert not track.waits_for_keyframe(source)
    for n in range(KEYFRAME_REQUEST_FRAMES + 1, KEYFRAME_REQUEST_FRAMES + 20):  # fewer than the queue holds
        source.deliver(_frame(n))
    assert len(requests) == 2


async def test_no_request_again_when_nobody_waits() -> None:
    """An expired request is not repeated when no slot is waiting for a keyframe of that source."""
    requests: list[int] = []
    source = Source("p1", "video", "VP8", request_keyframe=lambda: requests.append(1))
    source.request_keyframe()
    for n in range(2 * KEYFRAME_REQUEST_FRAMES):
        source.deliver(_frame(n))
    assert len(requests) == 1


def test_frames_without_rtp_payloads_are_packetised_once_by_their_source() -> None:
    """A camera's frame (no publisher packets) is cut into RTP payloads once: VP8 with one descriptor per
    packet (RFC 7741: S on the first, one picture ID per frame), H.264 as single NAL units and FU-A
    fragments (RFC 6184 section 5.8) that put the NAL unit back together."""
    vp8_source = Source("camera", "video", "VP8")
    data = bytes(range(256)) * 12  # 3072 bytes
    frame = EncodedFrame(data=data, timestamp=0, keyframe=True)
    payloads = vp8_source.payloads(frame)
    assert vp8_source.payloads(frame) is payloads  # once, shared by every slot
    descriptors = [vp8.parse(p) for p in payloads]
    assert [d.start for d in descriptors] == [True, False, False]
    assert len({d.picture_id for d in descriptors}) == 1
    assert b"".join(p[d.size :] for p, d in zip(payloads, descriptors, strict=True)) == data

    idr = bytes([0x65]) + b"\x01" * 2500
    annex_b = b"\x00\x00\x00\x01\x67sps" + b"\x00\x00\x00\x01\x68pps" + b"\x00\x00\x01" + idr
    parts = h264_payloads(annex_b)
    assert parts[:2] == [b"\x67sps", b"\x68pps"]
    fragments = parts[2:]
    assert all(f[0] & 0x1F == 28 and f[0] & 0x60 == 0x60 for f in fragments)  # FU-A, NRI of the IDR
    assert fragments[0][1] & 0x80 and fragments[-1][1] & 0x40 and all(f[1] & 0x1F == 5 for f in fragments)
    assert bytes([0x65]) + b"".join(f[2:] for f in fragments) == idr
