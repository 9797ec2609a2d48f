"""The voice path's pure pieces without an event loop: RTP, G.711, RFC 4733, tones, WAV, the mixer."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest

from dispatchd.channels.hotline.voice import dtmf, g711, tones, wav
from dispatchd.channels.hotline.voice.mixer import Mixer
from dispatchd.channels.hotline.voice.rtp import RtpError, RtpPacket, build_rtp, is_rtcp, parse_rtp
from tests.channels.hotline.voice.captures import capture, udp_payloads

# ---- RTP ----------------------------------------------------------------------------------------


def test_rtp_round_trip_over_a_captured_call() -> None:
    """Every A-law packet of a real capture parses and serialises back to the same bytes."""
    packets = udp_payloads(capture("g711a.pcap"))
    assert len(packets) > 200
    sequences = []
    for data in packets:
        packet = parse_rtp(data)
        assert packet.payload_type == g711.PCMA and len(packet.payload) % 80 == 0
        assert packet.serialize() == data
        sequences.append(packet.sequence)
    assert sequences == sorted(sequences)


def test_rtp_keeps_csrc_extension_and_padding() -> None:
    """CSRCs, a header extension (RFC 3550 §5.3.1) and padding survive a round trip."""
    packet = RtpPacket(
        96,
        65535,
        2**32 - 1,
        0xDEADBEEF,
        b"abc",
        marker=True,
        csrc=(1, 2),
        extension=(0xBEDE, b"\x10\x01\x00\x00"),
        padding=4,
    )
    again = parse_rtp(packet.serialize())
    assert again == packet
    assert build_rtp(0, 70000, 5, 9, b"x", True) == RtpPacket(0, 70000 & 0xFFFF, 5, 9, b"x", True).serialize()


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80" * 11,
        b"\x40" + b"\x00" * 11,
        b"\x81" + b"\x00" * 11,
        b"\x90" + b"\x00" * 13,
        b"\xa0" + b"\x00" * 11,
    ],
)
def test_rtp_refuses_what_is_not_rtp(data: bytes) -> None:
    """Short packets, another version, a CSRC list, extension or padding running past the end."""
    with pytest.raises(RtpError):
        parse_rtp(data)


def test_rtcp_is_told_apart() -> None:
    """RFC 5761 §4: sender and receiver reports are recognised on a shared port; audio is not."""
    assert is_rtcp(b"\x80\xc8\x00\x06") and is_rtcp(b"\x81\xc9\x00\x07")
    assert not is_rtcp(build_rtp(0, 1, 1, 1, b"\xff"))


# ---- G.711 --------------------------------------------------------------------------------------


def _ffmpeg(codec: str, direction: str, data: bytes | np.ndarray) -> np.ndarray:
    context = av.CodecContext.create(codec, direction)
    context.format, context.layout, context.sample_rate = "s16", "mono", 8000
    if direction == "r":
        return np.concatenate([f.to_ndarray().ravel() for f in context.decode(av.Packet(bytes(data)))])
    context.time_base = fractions.Fraction(1, 8000)
    frame = av.AudioFrame.from_ndarray(np.asarray(data).reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate, frame.pts = 8000, 0
    encoded = b"".join(bytes(p) for p in context.encode(frame)) + b"".join(
        bytes(p) for p in context.encode(None)
    )
    return np.frombuffer(encoded, np.uint8)


@pytest.mark.parametrize(("name", "law"), [("pcm_mulaw", g711.PCMU), ("pcm_alaw", g711.PCMA)])
def test_g711_decodes_every_code_as_ffmpeg_does(name: str, law: int) -> None:
    """All 256 codes of each law decode to the same linear values as FFmpeg's decoder."""
    assert np.array_equal(g711.decode(bytes(range(256)), law), _ffmpeg(name, "r", bytes(range(256))))


@pytest.mark.parametrize(("name", "law"), [("pcm_mulaw", g711.PCMU), ("pcm_alaw", g711.PCMA)])
def test_g711_encodes_every_sample_as_the_recommendation(name: str, law: int) -> None:
    """Every 16-bit value gets FFmpeg's code but on a few decision boundaries (G.191 truncates negative
    values in ones' complement, FFmpeg in two's), where it is the neighbouring code, as close."""
    linear = np.arange(-32768, 32768, dtype=np.int16)
    ours = np.frombuffer(g711.encode(linear, law), np.uint8)
    reference = _ffmpeg(name, "w", linear)
    differ = ours != reference
    assert differ.mean() < 0.02
    ours_error = np.abs(g711.decode(ours.tobytes(), law).astype(int) - linear)
    reference_error = np.abs(g711.decode(reference.tobytes(), law).astype(int) - linear)
    step = np.abs(np.diff(np.sort(g711.decode(bytes(range(256)), law).astype(int)))).max()
    assert (ours_error <= reference_error + step // 2 + 8).all()


def test_g711_codes_round_trip_and_silence() -> None:
    """decode then encode gives back every code (μ-law's negative zero 0x7F becomes 0xFF); silence is zero."""
    codes = bytes(range(256))
    assert g711.encode(g711.decode(codes, "PCMA"), "PCMA") == codes
    ulaw = g711.encode(g711.decode(codes, "pcmu"), 0)
    assert [i for i in range(256) if ulaw[i] != i] == [0x7F]
    assert not g711.decode(g711.silence(160, "PCMU"), 0).any()
    assert np.abs(g711.decode(g711.silence(160, "PCMA"), 8)).max() == 8  # A-law has no exact zero


def test_g711_transcodes_between_laws_by_table() -> None:
    """μ-law to A-law and back keeps a tone within one quantisation step."""
    signal = tones.tone(440, 0.1)
    ulaw = g711.encode(signal, "PCMU")
    alaw = g711.transcode(ulaw, "PCMU", "PCMA")
    assert g711.transcode(alaw, 8, 8) is alaw
    assert np.abs(g711.decode(alaw, 8).astype(int) - g711.decode(ulaw, 0).astype(int)).max() < 600
    with pytest.raises(ValueError):
        g711.payload_type("G722")


# ---- RFC 4733 -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("dtmf_2833_1.pcap", "1"),
        ("dtmf_2833_9.pcap", "9"),
        ("dtmf_2833_star.pcap", "*"),
        ("dtmf_2833_pound.pcap", "#"),
    ],
)
def test_captured_key_trains_are_read_once(name: str, key: str) -> None:
    """A real key train (start, updates, three ends) parses, round-trips, and counts as one press."""
    receiver = dtmf.DtmfReceiver()
    presses = []
    ends = 0
    for data in udp_payloads(capture(name)):
        packet = parse_rtp(data)
        event = dtmf.parse_event(packet.payload)
        assert dtmf.build_event(event) == packet.payload[:4]
        ends += event.end
        press = receiver.receive(packet.ssrc, packet.timestamp, packet.payload)
        if press is not None:
            presses.append(press.key)
    assert presses == [key] and ends >= 1


def test_key_train_we_send_reads_back_once_in_any_order() -> None:
    """Our train has one marker, growing durations and three identical ends (§2.5.1.4); shuffled and
    repeated it is still one press, and the next press of the same key is another."""
    train = dtmf.event_packets("5", duration=800, step=160)
    assert [m for m, _ in train].count(True) == 1 and train[0][0]
    events = [dtmf.parse_event(p) for _, p in train]
    assert [e.duration for e in events if not e.end] == sorted(e.duration for e in events if not e.end)
    assert [e for e in events if e.end] == [events[-1]] * 3 and events[-1].duration == 800
    receiver = dtmf.DtmfReceiver()
    shuffled = [p for _, p in reversed(train)] + [p for _, p in train]
    assert [r.key for p in shuffled if (r := receiver.receive(7, 1000, p))] == ["5"]
    assert receiver.receive(7, 2000, train[0][1]) == dtmf.KeyPress("5", 2000)
    assert receiver.receive(7, 3000, b"\x01") is None
    with pytest.raises(dtmf.DtmfError):
        dtmf.event_packets("x")


# ---- tones and WAV ------------------------------------------------------------------------------


def test_goertzel_tells_the_tones_apart() -> None:
    """A tone's share is ~1 at its frequency and ~0 elsewhere, whatever its level; a mix has both."""
    for level in (0.01, 0.5):
        block = tones.tone(440, 0.1, level=level)
        assert tones.tone_share(block, 440) > 0.99 and tones.tone_share(block, 1000) < 0.01
    mixed = tones.tone(440, 0.1) + tones.tone(1000, 0.1)
    assert tones.tone_share(mixed, 440) > 0.4 and tones.tone_share(mixed, 1000) > 0.4
    assert tones.dominant(tones.tone(1000, 0.1), [440, 1000])[0] == 1000
    assert tones.tone_share(tones.silence(0.1), 440) == 0.0
    key = tones.dtmf_tone("#")
    assert tones.tone_share(key, 941) > 0.3 and tones.tone_share(key, 1477) > 0.3


def test_tone_survives_g711() -> None:
    """440 Hz through μ-law and back is still 440 Hz (what the tests' ears rely on)."""
    decoded = g711.decode(g711.encode(tones.tone(440, 0.2), 0), 0)
    assert tones.tone_share(decoded, 440) > 0.98


def test_wav_reads_what_editors_write(tmp_path: object) -> None:
    """16-bit PCM at 16 kHz stereo and G.711 files become 8 kHz mono with the tone kept."""
    signal = tones.tone(440, 0.5, rate=16000)
    stereo = np.repeat(signal, 2)
    header = wav.wav_bytes(signal, 16000)
    data = (
        header[:22]
        + (2).to_bytes(2, "little")
        + (16000).to_bytes(4, "little")
        + (64000).to_bytes(4, "little")
        + (4).to_bytes(2, "little")
        + header[34:40]
        + (len(stereo) * 2).to_bytes(4, "little")
        + stereo.astype("<i2").tobytes()
    )
    samples = wav.read_wav(data)
    assert abs(len(samples) - 4000) <= 1 and tones.tone_share(samples[:800], 440) > 0.95
    from pathlib import Path

    path = Path(str(tmp_path)) / "a.wav"
    writer = wav.WavWriter(path, "PCMA")
    writer.write(g711.encode(tones.tone(1000, 0.3), "PCMA"))
    writer.close()
    back = wav.read_wav(path.read_bytes())
    assert len(back) == 2400 and tones.tone_share(back, 1000) > 0.98
    with pytest.raises(wav.WavError):
        wav.read_wav(b"RIFF0000WAVEjunk")


# ---- the two-sided mixer ------------------------------------------------------------------------


def test_mixer_lines_both_legs_up_and_mixes() -> None:
    """Two legs talking at once are summed; one leg late by jitter continues where it was; the
    per-leg lanes are aligned with the mix."""
    mixer = Mixer(start=100.0)
    caller, officer = tones.tone(440, 1.0), tones.tone(1000, 1.0)
    for i in range(50):
        now = 100.0 + i * 0.02
        mixer.add("caller", caller[i * 160 : (i + 1) * 160], now + (0.01 if i % 7 == 3 else 0.0))
        if i >= 25:
            mixer.add("officer", officer[(i - 25) * 160 : (i - 24) * 160], now)
    mixed, legs = mixer.flush(100.0 + 1.0 + mixer.delay)
    assert len(mixed) == 8000 and set(legs) == {"caller", "officer"}
    assert np.array_equal(legs["caller"], caller)  # jitter did not move the caller's frames
    assert tones.tone_share(mixed[:4000], 440) > 0.99
    second_half = mixed[4000:]
    assert tones.tone_share(second_half, 440) > 0.4 and tones.tone_share(second_half, 1000) > 0.4
    assert not legs["officer"][:4000].any() and np.array_equal(legs["officer"][4000:], officer[:4000])


def test_mixer_places_a_leg_anew_after_a_pause_and_flushes_the_rest() -> None:
    """A leg silent for seconds is placed at its arrival again; flush() without time empties it."""
    mixer = Mixer(start=0.0, legs=("caller",))
    mixer.add("caller", tones.tone(440, 0.02), 0.0)
    mixer.add("caller", tones.tone(440, 0.02), 3.0)
    mixed, _ = mixer.flush()
    assert len(mixed) == 24160 and not mixed[160:24000].any() and mixed[24000:].any()
    assert len(mixer.flush()[0]) == 0
