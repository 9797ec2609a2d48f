"""WAVE files (RIFF, Microsoft WAVE format with the fmt tags of RFC 2361), sans sockets.

Prompts are read from WAV files in whatever format an editor saves them (16-bit PCM at any rate,
mono or stereo; G.711 μ-law or A-law) and turned into 8 kHz mono samples. Recordings are written
as they are made by :class:`WavWriter`, whose header is completed when it is closed.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import IO, Final

import numpy as np
import numpy.typing as npt

from dispatchd.channels.hotline.voice import g711

__all__ = ["WavError", "WavWriter", "read_wav", "resample", "wav_bytes"]

#: WAVE format tags (RFC 2361 appendix A): PCM, A-law, μ-law.
PCM: Final = 1
ALAW: Final = 6
MULAW: Final = 7
_MAX_SECONDS: Final = 3600 * 4


class WavError(ValueError):
    """Not a WAV file this module reads."""


def _chunks(data: bytes) -> dict[bytes, bytes]:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise WavError("not a RIFF WAVE file")
    found: dict[bytes, bytes] = {}
    offset = 12
    while offset + 8 <= len(data):
        name, size = data[offset : offset + 4], struct.unpack_from("<I", data, offset + 4)[0]
        body = data[offset + 8 : offset + 8 + size]
        found.setdefault(name, body)
        offset += 8 + size + (size & 1)  # chunks are word-aligned
    return found


def read_wav(data: bytes, rate: int = 8000) -> npt.NDArray[np.int16]:
    """Mono 16-bit samples at ``rate`` from a WAV file's bytes (PCM 16-bit, G.711; any channels)."""
    chunks = _chunks(data)
    fmt, body = chunks.get(b"fmt "), chunks.get(b"data")
    if fmt is None or body is None or len(fmt) < 16:
        raise WavError("no fmt or data chunk")
    tag, channels, source_rate, _, _, bits = struct.unpack_from("<HHIIHH", fmt)
    if tag == 0xFFFE and len(fmt) >= 26:  # WAVE_FORMAT_EXTENSIBLE: the real tag opens the subformat GUID
        tag = struct.unpack_from("<H", fmt, 24)[0]
    if channels < 1 or source_rate < 1000:
        raise WavError("bad channel count or rate")
    if tag == PCM and bits == 16:
        samples = np.frombuffer(body[: len(body) // 2 * 2], dtype="<i2").astype(np.int16)
    elif tag in (ALAW, MULAW) and bits == 8:
        samples = g711.decode(body, g711.PCMA if tag == ALAW else g711.PCMU)
    else:
        raise WavError(f"format tag {tag} with {bits} bits is not read (16-bit PCM or G.711)")
    if channels > 1:
        frames = len(samples) // channels
        samples = samples[: frames * channels].reshape(frames, channels).mean(axis=1).astype(np.int16)
    if len(samples) > _MAX_SECONDS * source_rate:
        raise WavError("longer than four hours")
    return resample(samples, source_rate, rate)


def resample(samples: npt.NDArray[np.int16], source: int, target: int) -> npt.NDArray[np.int16]:
    """Linear interpolation after a moving-average low-pass when going down (enough for speech prompts)."""
    if source == target or len(samples) == 0:
        return samples
    data = samples.astype(np.float64)
    if target < source:
        width = max(round(source / target), 1)
        data = np.convolve(data, np.ones(width) / width, mode="same")
    count = int(len(data) * target / source)
    positions = np.arange(count) * (source / target)
    return np.asarray(np.rint(np.interp(positions, np.arange(len(data)), data)), dtype=np.int16)


def _header(tag: int, rate: int, data_bytes: int) -> bytes:
    width = 2 if tag == PCM else 1
    if tag == PCM:
        fmt = struct.pack("<HHIIHH", PCM, 1, rate, rate * width, width, 8 * width)
        return (
            b"RIFF"
            + struct.pack("<I", 4 + 8 + len(fmt) + 8 + data_bytes)
            + b"WAVE"
            + b"fmt "
            + struct.pack("<I", len(fmt))
            + fmt
            + b"data"
            + struct.pack("<I", data_bytes)
        )
    # Non-PCM formats carry cbSize in fmt and a fact chunk with the sample count (RIFF spec).
    fmt = struct.pack("<HHIIHHH", tag, 1, rate, rate, 1, 8, 0)
    return (
        b"RIFF"
        + struct.pack("<I", 4 + 8 + len(fmt) + 12 + 8 + data_bytes)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"fact"
        + struct.pack("<II", 4, data_bytes)
        + b"data"
        + struct.pack("<I", data_bytes)
    )


def wav_bytes(samples: npt.NDArray[np.int16], rate: int = 8000) -> bytes:
    """A whole 16-bit PCM mono WAV file in memory (tests, generated prompts)."""
    data = np.asarray(samples, dtype="<i2").tobytes()
    return _header(PCM, rate, len(data)) + data


class WavWriter:
    """A WAV file written as audio comes: 16-bit PCM (``"pcm"``) or G.711 as is (``"PCMU"``/``"PCMA"``).

    The header is written with length 0 first and completed on :meth:`close`; at most four hours.
    """

    def __init__(self, path: Path, kind: str = "pcm", rate: int = 8000) -> None:
        self.path = path
        self.rate = rate
        self.tag = {"pcm": PCM, "PCMU": MULAW, "PCMA": ALAW}[kind]
        self.written = 0
        self._limit = _MAX_SECONDS * rate * (2 if self.tag == PCM else 1)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] | None = path.open("wb")
        self._file.write(_header(self.tag, rate, 0))

    def write_samples(self, samples: npt.NDArray[np.int16]) -> None:
        self.write(np.asarray(samples, dtype="<i2").tobytes())

    def write(self, data: bytes) -> None:
        if self._file is None or not data or self.written + len(data) > self._limit:
            return
        self._file.write(data)
        self.written += len(data)

    def close(self) -> None:
        if self._file is None:
            return
        self._file.seek(0)
        self._file.write(_header(self.tag, self.rate, self.written))
        self._file.close()
        self._file = None
