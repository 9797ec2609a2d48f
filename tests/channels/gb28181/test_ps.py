"""MPEG program streams (ISO/IEC 13818-1 §2.5, GB/T 28181 Annex C): what ffmpeg writes demuxes to what
PyAV reads from the same file, and our own packs round-trip, in pieces of any size."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import av
import pytest

from dispatchd.channels.gb28181 import ps
from dispatchd.channels.gb28181.ps import AccessUnit, PsDemuxer
from tests.conftest import require_tool


def encode_clip(tmp_path: Path, codec: str, fmt: str, frames: int = 20) -> Path:
    """A small test pattern encoded by ffmpeg into a program stream (``vob``: MPEG-2, ``mpeg``: MPEG-1)."""
    ffmpeg = require_tool("ffmpeg")
    out = tmp_path / f"clip-{codec}.{fmt}"
    encoder = (
        ["-c:v", "libx264", "-profile:v", "baseline"]
        if codec == "h264"
        else ["-c:v", "libx265", "-x265-params", "log-level=error"]
    )
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", f"testsrc=size=160x120:rate=10:duration={frames / 10}", "-pix_fmt", "yuv420p",
         *encoder, "-g", "10", "-bf", "0", "-f", fmt, str(out)],
        check=True,
    )  # fmt: skip
    return out


def pyav_units(path: Path) -> list[tuple[bytes, int | None]]:
    with av.open(str(path)) as container:
        return [(bytes(p), p.pts) for p in container.demux(container.streams.video[0]) if p.size]


def demux_in_pieces(data: bytes, seed: int = 1) -> tuple[list[AccessUnit], PsDemuxer]:
    rng = random.Random(seed)
    demuxer = PsDemuxer()
    units: list[AccessUnit] = []
    pos = 0
    while pos < len(data):
        size = rng.randint(1, 1500)
        units += demuxer.feed(data[pos : pos + size])
        pos += size
    units += demuxer.flush()
    return units, demuxer


@pytest.mark.parametrize(("codec", "fmt"), [("h264", "vob"), ("h264", "mpeg"), ("hevc", "vob")])
def test_ffmpeg_program_streams(tmp_path: Path, codec: str, fmt: str) -> None:
    """ffmpeg's MPEG-2 (vob) and MPEG-1 (mpeg) program streams give the elementary stream and the PTS
    PyAV reads from the same file (ffmpeg packs several frames per PES, so units follow its PES PTS)."""
    path = encode_clip(tmp_path, codec, fmt)
    expected = pyav_units(path)
    units, demuxer = demux_in_pieces(path.read_bytes())
    assert b"".join(u.data for u in units) == b"".join(data for data, _ in expected)
    assert [u.pts for u in units] == [pts for _, pts in expected if pts is not None]
    assert {u.codec for u in units} == {"H264" if codec == "h264" else "H265"}
    assert units[0].keyframe
    assert demuxer.skipped_bytes == 0 and not any(u.discontinuity for u in units)


def encoded_frames(tmp_path: Path, codec: str = "h264") -> list[tuple[bytes, int]]:
    """The frames of an ffmpeg clip as PyAV parses them, at 10 fps on the 90 kHz clock."""
    path = encode_clip(tmp_path, codec, "vob")
    return [(data, 9000 * i) for i, (data, _) in enumerate(pyav_units(path))]


@pytest.mark.parametrize("codec", ["H264", "H265"])
def test_mux_round_trip(tmp_path: Path, codec: str) -> None:
    """Real encoder output muxed one pack per frame (PSM on key frames) demuxes back unit by unit."""
    source = encoded_frames(tmp_path, "h264" if codec == "H264" else "hevc")
    stream = b"".join(ps.mux(data, pts, codec=codec) for data, pts in source)
    units, demuxer = demux_in_pieces(stream, seed=7)
    assert [(u.data, u.pts) for u in units] == source
    assert [u.keyframe for u in units] == [ps.is_keyframe(codec, data) for data, _ in source]
    assert demuxer.stream_types == {0xE0: ps._CODEC_TYPES[codec]}
    assert all(u.codec == codec for u in units) and units[0].keyframe


def test_large_frame_spans_pes_packets() -> None:
    """A 200 kB frame is written as several PES packets (only the first with a PTS) and read back whole."""
    frame = b"\x00\x00\x00\x01\x65" + bytes(random.Random(3).randrange(256) for _ in range(200_000))
    stream = ps.mux(frame, 3600, codec="H264") + ps.mux(b"\x00\x00\x00\x01\x41abc", 7200, codec="H264")
    assert stream.count(b"\x00\x00\x01\xe0") >= 4
    demuxer = PsDemuxer()
    first = demuxer.feed(stream)
    assert [u.pts for u in first] == [3600]
    assert first[0].data == frame and first[0].keyframe
    assert [u.pts for u in demuxer.flush()] == [7200]


def test_pts_and_dts() -> None:
    """A PES with PTS and DTS gives both; 33-bit values survive."""
    pts, dts = 2**33 - 3000, 2**33 - 6000
    demuxer = PsDemuxer()
    units = demuxer.feed(ps.mux(b"\x00\x00\x01\x41x", pts, dts=dts, codec="H264"))
    units += demuxer.flush()
    assert [(u.pts, u.dts) for u in units] == [(pts, dts)]


def test_psm_crc_and_system_header_layout() -> None:
    """The PSM ends with the MPEG-2 CRC-32 of everything before it; headers have their start codes."""
    psm = ps.program_stream_map([(0x1B, 0xE0), (0x90, 0xC0)])
    assert psm[:4] == b"\x00\x00\x01\xbc" and int.from_bytes(psm[4:6], "big") == len(psm) - 6
    assert ps.crc32_mpeg2(psm[:-4]) == int.from_bytes(psm[-4:], "big")
    assert ps.crc32_mpeg2(b"123456789") == 0x0376E6E7  # the CRC-32/MPEG-2 check value
    assert ps.pack_header(0)[:4] == b"\x00\x00\x01\xba" and len(ps.pack_header(0)) == 14
    demuxer = PsDemuxer()
    demuxer.feed(ps.pack_header(90000) + ps.system_header([(0xE0, 1 << 20)]) + psm)
    assert demuxer.stream_types == {0xE0: 0x1B, 0xC0: 0x90} and demuxer.packs == 1


def test_garbage_and_audio_are_skipped() -> None:
    """Junk before a pack and an audio PES between frames are skipped; the video still comes through."""
    audio = b"\x00\x00\x01\xc0\x00\x05\x80\x00\x00\xaa\xbb"
    stream = b"\x13\x37junk\x00\x00\x01\x09" + ps.mux(b"\x00\x00\x01\x67sps\x00\x00\x01\x65idr", 100) + audio
    stream += ps.mux(b"\x00\x00\x01\x41p", 3700)
    demuxer = PsDemuxer()
    units = demuxer.feed(stream) + demuxer.flush()
    assert [u.pts for u in units] == [100, 3700]
    assert units[0].discontinuity and not units[1].discontinuity and demuxer.skipped_bytes > 0


def test_reset_drops_the_partial_unit() -> None:
    """After a loss, the half-received unit is dropped and the next one says discontinuity."""
    whole = ps.mux(b"\x00\x00\x01\x65" + b"x" * 5000, 100)
    demuxer = PsDemuxer()
    assert demuxer.feed(whole[:3000]) == []
    demuxer.reset()
    units = demuxer.feed(ps.mux(b"\x00\x00\x01\x65key", 3700)) + demuxer.flush()
    assert [(u.pts, u.discontinuity) for u in units] == [(3700, True)]


def test_mux_refuses() -> None:
    """Audio codecs and non-video stream ids are refused by the muxer."""
    with pytest.raises(ps.PsError):
        ps.mux(b"x", 0, codec="G711A")
    with pytest.raises(ps.PsError):
        ps.mux(b"x", 0, stream_id=0xC0)
