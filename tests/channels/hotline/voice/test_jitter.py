"""The jitter buffer without an event loop: time is passed in, packets are made from a known tone."""

from __future__ import annotations

import numpy as np
import pytest

from dispatchd.channels.hotline.voice import g711, tones
from dispatchd.channels.hotline.voice.jitter import JitterBuffer, OutFrame

SIGNAL = g711.encode(tones.tone(440, 2.0), "PCMU")


def packet(i: int, size: int = 160) -> tuple[int, int, bytes]:
    """(sequence, timestamp, payload) of the i-th packet of ``size`` samples."""
    return i, i * size, SIGNAL[i * size : (i + 1) * size]


def played(frames: list[OutFrame]) -> bytes:
    return b"".join(f.payload for f in frames)


def test_in_order_packets_pass_at_once_unchanged() -> None:
    """Same packet time in and out: each packet goes out as it arrives, bytes untouched (no decoding),
    timestamps continuous, marker on the first only."""
    jb = JitterBuffer("PCMU", 160)
    for i in range(10):
        sequence, timestamp, payload = packet(i)
        frames = jb.push(99, sequence, timestamp, payload, i * 0.02)
        assert frames == [OutFrame(i * 160, payload, False, i == 0)]
    assert jb.next_deadline() is None and jb.stats.concealed_samples == 0


@pytest.mark.parametrize(("size_in", "size_out"), [(240, 160), (80, 160), (160, 240), (80, 240)])
def test_repacketises_between_packet_times(size_in: int, size_out: int) -> None:
    """10/20/30 ms in, 20/30 ms out: the same samples in frames of the outgoing size, no delay
    beyond waiting for the samples of a whole frame."""
    jb = JitterBuffer(0, size_out)
    frames: list[OutFrame] = []
    for i in range(24000 // size_in // 4):
        sequence, timestamp, payload = packet(i, size_in)
        new = jb.push(1, sequence, timestamp, payload, i * size_in / 8000)
        # A frame goes out as soon as its last sample is in.
        assert len(played(frames + new)) == (i + 1) * size_in // size_out * size_out
        frames += new
    assert all(len(f.payload) == size_out for f in frames)
    assert played(frames) == SIGNAL[: len(played(frames))]
    assert [f.timestamp for f in frames] == [k * size_out for k in range(len(frames))]


def test_reorders_within_the_wait() -> None:
    """A packet overtaken by the next one is put back in its place if it comes within max_wait."""
    jb = JitterBuffer(0, 160, max_wait=0.06)
    out = jb.push(1, *packet(0), 0.0)
    out += jb.push(1, *packet(2), 0.04)
    assert len(out) == 1 and jb.next_deadline() == pytest.approx(0.10)
    out += jb.push(1, *packet(1), 0.045)
    out += jb.push(1, *packet(3), 0.06)
    assert played(out) == SIGNAL[: 4 * 160] and jb.stats.reordered == 1 and jb.stats.concealed_samples == 0


def test_conceals_a_lost_packet_then_drops_it_when_late() -> None:
    """A gap left open past max_wait is filled with the last frame fading out; the lost packet
    arriving later is dropped; the tone goes on undisturbed around it."""
    jb = JitterBuffer(0, 160, max_wait=0.06)
    out = jb.push(1, *packet(0), 0.0) + jb.push(1, *packet(1), 0.02)
    out += jb.push(1, *packet(3), 0.06)
    assert jb.tick(0.11) == []
    concealed = jb.tick(0.12)
    assert [f.concealed for f in concealed] == [True, False]
    assert concealed[0].timestamp == 320 and concealed[1].payload == packet(3)[2]
    assert jb.push(1, *packet(2), 0.13) == [] and jb.stats.late == 1
    fade = g711.decode(concealed[0].payload, 0).astype(float)
    assert np.abs(fade[-20:]).mean() < np.abs(fade[:20]).mean() + 1  # falling, not rising
    assert tones.tone_share(g711.decode(concealed[0].payload, 0), 440) > 0.5


def test_long_loss_fades_to_silence() -> None:
    """Concealment lasts conceal_limit samples, then it is silence."""
    jb = JitterBuffer(0, 160, max_wait=0.06, conceal_limit=320)
    jb.push(1, *packet(0), 0.0)
    jb.push(1, *packet(10), 0.2)
    frames = jb.tick(0.3)
    assert len(frames) == 10 and frames[-1].payload == packet(10)[2]
    assert not g711.decode(b"".join(f.payload for f in frames[3:9]), 0).any()
    assert jb.stats.concealed_samples == 9 * 160


def test_a_pause_is_not_loss() -> None:
    """Silence suppression: a timestamp jump with the next sequence number (or the marker bit)
    conceals nothing; the outgoing clock jumps as far and the marker marks the talkspurt."""
    jb = JitterBuffer(0, 160)
    jb.push(1, *packet(0), 0.0)
    after = jb.push(1, 1, 50 * 160, packet(50)[2], 1.0)
    assert after == [OutFrame(50 * 160, packet(50)[2], False, True)]
    marked = jb.push(1, 9, 80 * 160, packet(80)[2], 1.6, marker=True)
    assert marked[0].marker and marked[0].timestamp == 80 * 160 and jb.stats.concealed_samples == 0


def test_partial_frame_is_finished_when_the_stream_stops() -> None:
    """30 ms in, 20 ms out: the last 10 ms are sent, completed, when nothing more comes."""
    jb = JitterBuffer(0, 160)
    out = jb.push(1, 0, 0, SIGNAL[:240], 0.0)
    assert len(out) == 1 and jb.next_deadline() == pytest.approx(0.03 + 0.06)
    tail = jb.tick(0.1)
    assert len(tail) == 1 and tail[0].concealed and tail[0].payload[:80] == SIGNAL[160:240]


def test_duplicates_and_a_new_stream() -> None:
    """A copy of a packet is dropped; another SSRC, or a timestamp far away, starts afresh with a
    marker while the outgoing timestamps keep counting with the time that passed."""
    jb = JitterBuffer(0, 160)
    jb.push(1, *packet(0), 0.0)
    assert jb.push(1, *packet(1), 0.02) and jb.push(1, *packet(1), 0.021) == []
    assert jb.stats.duplicates + jb.stats.late == 1
    fresh = jb.push(2, 7000, 123456, packet(5)[2], 1.04)
    # 1.02 s after the last frame went out, less the frame it lasted: 8,000 samples further on.
    assert fresh[0].marker and fresh[0].timestamp == 320 + 8000 and jb.stats.resyncs == 1
    far = jb.push(2, 7001, 123456 + 160 + 10**8, packet(6)[2], 1.06)
    assert far[0].marker and jb.stats.resyncs == 2


def test_wraparound_of_sequence_and_timestamp() -> None:
    """Sequence numbers and timestamps wrapping past 2^16 and 2^32 are followed without a hitch."""
    jb = JitterBuffer(8, 160)
    alaw = g711.transcode(SIGNAL, 0, 8)
    out: list[OutFrame] = []
    for i in range(6):
        out += jb.push(
            5,
            (65533 + i) & 0xFFFF,
            (2**32 - 320 + i * 160) & 0xFFFFFFFF,
            alaw[i * 160 : (i + 1) * 160],
            i * 0.02,
        )
    assert played(out) == alaw[: 6 * 160] and jb.stats.concealed_samples == 0 and jb.stats.resyncs == 0
