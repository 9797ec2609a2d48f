"""G.711 μ-law and A-law (ITU-T G.711 §2, §3), vectorised with NumPy: bytes ⇄ 16-bit linear samples.

The bridge forwards G.711 between the caller and the officer without touching it; decoding is
needed only where audio is made or looked at: concealment of a lost packet, the mixed recording,
prompts read from WAV files, transcoding for a browser without G.711, and the tests' ears.

Decoding is a 256-entry table per law; encoding a 65,536-entry table indexed by the sample's
16 bits, both computed once at import from the segment rules of the Recommendation, so one call
of either direction is a single NumPy ``take``.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = ["ALAW_SILENCE", "ULAW_SILENCE", "decode", "encode", "payload_type", "silence", "transcode"]

Samples = npt.NDArray[np.int16]

#: RTP payload types of RFC 3551 §6 Table 4.
PCMU: Final = 0
PCMA: Final = 8
#: The code of a zero sample: μ-law 0xFF (positive zero), A-law 0xD5 (even bits inverted).
ULAW_SILENCE: Final = 0xFF
ALAW_SILENCE: Final = 0xD5

_ULAW_BIAS: Final = 0x84  # 132: added before segmenting so that every segment starts at a power of two
_ULAW_CLIP: Final = 32635


def _ulaw_decode_table() -> Samples:
    codes = ~np.arange(256, dtype=np.int32) & 0xFF  # §2: the code is transmitted with all bits inverted
    exponent = (codes >> 4) & 0x07
    mantissa = codes & 0x0F
    magnitude = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(codes & 0x80, -magnitude, magnitude).astype(np.int16)


def _bit_length(values: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    out = np.zeros_like(values)
    remaining = values.copy()
    while remaining.any():
        out += remaining > 0
        remaining >>= 1
    return out


def _signed(bits: npt.NDArray[np.int32]) -> npt.NDArray[np.int32]:
    return np.where(bits >= 32768, bits - 65536, bits)


def _ulaw_encode_table() -> npt.NDArray[np.uint8]:
    # §2 on the 14 most significant bits, negative values in ones' complement (as ITU-T G.191's
    # reference encoder): bias 33 in 14-bit units (132 in 16-bit), eight segments of 16 steps.
    linear = _signed(np.arange(65536, dtype=np.int32))
    magnitude = np.minimum(np.where(linear < 0, ~linear, linear) >> 2, 0x1FFF - 33) + 33
    segment = 1 + _bit_length(magnitude >> 6)
    code = ((8 - segment) << 4) | (0x0F - ((magnitude >> segment) & 0x0F))
    table: npt.NDArray[np.uint8] = np.where(linear >= 0, code | 0x80, code).astype(np.uint8)
    return table


def _alaw_decode_table() -> Samples:
    codes = np.arange(256, dtype=np.int32) ^ 0x55  # §3: even bits inverted
    segment = (codes & 0x70) >> 4
    value = (codes & 0x0F) << 4
    value = np.where(segment == 0, value + 8, value + 0x108)
    value = np.where(segment > 1, value << np.maximum(segment - 1, 0), value)
    return np.where(codes & 0x80, value, -value).astype(np.int16)


def _alaw_encode_table() -> npt.NDArray[np.uint8]:
    # §3 on the 13 most significant bits, negative values in ones' complement (as G.191's encoder):
    # 12 bits of magnitude, a linear first segment of 32 steps, then seven of 16 steps doubling.
    linear = _signed(np.arange(65536, dtype=np.int32))
    magnitude = np.where(linear < 0, ~linear, linear) >> 4
    exponent = np.maximum(_bit_length(magnitude) - 4, 0)
    code = np.where(
        magnitude > 15, (exponent << 4) + (magnitude >> np.maximum(exponent - 1, 0)) - 16, magnitude
    )
    code = np.where(linear >= 0, code | 0x80, code)
    return (code ^ 0x55).astype(np.uint8)


_DECODE: Final = {PCMU: _ulaw_decode_table(), PCMA: _alaw_decode_table()}
_ENCODE: Final = {PCMU: _ulaw_encode_table(), PCMA: _alaw_encode_table()}
_NAMES: Final = {"PCMU": PCMU, "PCMA": PCMA}
# μ-law ⇄ A-law without going through Python: the code of the other law for each code.
_TRANSCODE: Final = {
    (PCMU, PCMA): _ENCODE[PCMA][_DECODE[PCMU].view(np.uint16)],
    (PCMA, PCMU): _ENCODE[PCMU][_DECODE[PCMA].view(np.uint16)],
}


def payload_type(codec: str | int) -> int:
    """0 for PCMU, 8 for PCMA (names as in SDP, any case; payload types pass through)."""
    if isinstance(codec, int):
        if codec not in _DECODE:
            raise ValueError(f"payload type {codec} is not G.711")
        return codec
    try:
        return _NAMES[codec.upper()]
    except KeyError:
        raise ValueError(f"{codec!r} is not G.711 (PCMU or PCMA)") from None


def decode(payload: bytes, codec: str | int) -> Samples:
    """G.711 bytes to 16-bit linear samples (one per byte)."""
    table = _DECODE[payload_type(codec)]
    return table[np.frombuffer(payload, dtype=np.uint8)]


def encode(samples: npt.ArrayLike, codec: str | int) -> bytes:
    """16-bit linear samples to G.711 bytes; wider integers and floats are clipped to 16 bits first."""
    table = _ENCODE[payload_type(codec)]
    array = np.asarray(samples)
    if array.dtype != np.int16:
        array = np.clip(np.rint(array), -32768, 32767).astype(np.int16)
    return table[array.view(np.uint16)].tobytes()


def transcode(payload: bytes, source: str | int, target: str | int) -> bytes:
    """μ-law to A-law or back, one table lookup per byte (the same law: unchanged)."""
    source, target = payload_type(source), payload_type(target)
    if source == target:
        return payload
    return _TRANSCODE[(source, target)][np.frombuffer(payload, dtype=np.uint8)].tobytes()


def silence(samples: int, codec: str | int) -> bytes:
    """``samples`` bytes of digital silence in the law of ``codec``."""
    return bytes([ULAW_SILENCE if payload_type(codec) == PCMU else ALAW_SILENCE]) * samples
