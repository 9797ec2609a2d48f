"""Keyframe requests of the forwarding path, without peers."""

from __future__ import annotations

from dispatchd.video.forward import KEYFRAME_REQUEST_FRAMES, ForwardedTrack, Source
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
