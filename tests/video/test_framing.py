"""Pure RTP framing: marker-bit release, reordering, loss, keyframe detection (no event loop)."""

from __future__ import annotations

from dispatchd.video.framing import FrameAssembler, h264_nal_types, is_keyframe, unwrap16, vp8_size

VP8_KEY = bytes([0x10, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0xA0, 0x00, 0x78, 0x00]) + b"key"
VP8_DELTA = bytes([0x31, 0x02, 0x00]) + b"delta"


def test_frame_released_on_marker_not_on_next_frame() -> None:
    """A frame comes out when its marker packet arrives, before any packet of the next frame."""
    asm = FrameAssembler("video", "VP8")
    assert asm.push(100, 9000, False, VP8_KEY[:5]) == ([], False)
    frames, pli = asm.push(101, 9000, True, VP8_KEY[5:])
    assert not pli and len(frames) == 1
    assert frames[0].data == VP8_KEY and frames[0].keyframe and frames[0].timestamp == 0


def test_reordered_and_retransmitted_packets_complete_the_frame() -> None:
    """Packets out of order, or one recovered by NACK retransmission, still give whole frames in order."""
    asm = FrameAssembler("video", "VP8")
    asm.push(10, 0, True, VP8_KEY)
    assert asm.push(13, 3000, True, b"c") == ([], False)  # 11 missing: frame 2 waits
    assert asm.push(12, 3000, False, b"b") == ([], False)
    frames, _ = asm.push(11, 3000, False, VP8_DELTA)  # the retransmission arrives
    assert [f.data for f in frames] == [VP8_DELTA + b"bc"]
    assert frames[0].timestamp == 3000 and not frames[0].keyframe
    assert asm.push(11, 3000, False, VP8_DELTA) == ([], False)  # a late duplicate is dropped


def test_lost_packets_skip_and_ask_for_a_keyframe() -> None:
    """When a frame stays incomplete while later frames complete, it is skipped and a keyframe requested."""
    asm = FrameAssembler("video", "VP8", max_waiting_frames=2)
    asm.push(1, 0, True, VP8_KEY)
    # seq 2 (part of ts 3000) is lost for good; frames at 6000, 9000, 12000 arrive whole.
    asm.push(3, 3000, True, b"x")
    asm.push(4, 6000, True, VP8_DELTA)
    frames, pli = asm.push(5, 9000, True, VP8_DELTA)
    assert pli
    assert frames and frames[0].discontinuity and frames[0].timestamp == 6000
    assert asm.frames_skipped == 1


def test_sequence_and_timestamp_wrap() -> None:
    """Sequence numbers wrapping at 65535 and timestamps at 2^32 keep frames in order."""
    assert unwrap16(2, 65534) == 65538
    asm = FrameAssembler("video", "VP8")
    asm.push(65535, 2**32 - 1500, True, VP8_KEY)
    frames, _ = asm.push(0, 1500, True, VP8_DELTA)
    assert frames[0].timestamp == 3000


def test_audio_packets_are_frames_and_late_ones_dropped() -> None:
    """Each Opus packet is released at once; one arriving after a later one is dropped, not waited for."""
    asm = FrameAssembler("audio", "opus")
    assert len(asm.push(5, 960, False, b"a")[0]) == 1
    assert len(asm.push(7, 2880, False, b"c")[0]) == 1
    assert asm.push(6, 1920, False, b"b")[0] == []


def test_keyframe_detection() -> None:
    """VP8 key frames (RFC 6386 frame tag + start code) and H.264 IDR/SPS are recognised, with VP8 size."""
    assert is_keyframe("VP8", VP8_KEY) and not is_keyframe("VP8", VP8_DELTA)
    assert vp8_size(VP8_KEY) == (160, 120)
    idr = b"\x00\x00\x00\x01\x67sps\x00\x00\x00\x01\x68pps\x00\x00\x01\x65idr"
    assert h264_nal_types(idr) == [7, 8, 5] and is_keyframe("H264", idr)
    assert not is_keyframe("H264", b"\x00\x00\x00\x01\x41slice")


def test_a_restarted_sequence_starts_a_new_stream() -> None:
    """Packets far behind the expected sequence (a restarted sender) begin a new stream instead of being dropped."""
    asm = FrameAssembler("video", "VP8")
    asm.push(20000, 0, True, VP8_KEY)
    frames, _ = asm.push(5, 3000, True, VP8_KEY)
    assert len(frames) == 1 and frames[0].discontinuity and frames[0].keyframe
