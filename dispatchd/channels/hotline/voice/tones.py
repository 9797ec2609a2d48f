"""Tones made and heard, sans I/O: generators for prompts and tests, a Goertzel detector.

The Goertzel algorithm (Goertzel 1958; as used for DTMF in ITU-T Q.24 receivers) gives the power
of one frequency bin of a block with one multiply-add per sample; :func:`tone_share` divides it
by the block's energy, so "is this 440 Hz?" does not depend on how loud the tone is.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

__all__ = [
    "DTMF_FREQUENCIES",
    "dominant",
    "dtmf_tone",
    "goertzel_power",
    "silence",
    "sweep_shares",
    "tone",
    "tone_share",
]

RATE: Final = 8000
#: ITU-T Q.23: (low group, high group) Hz of each key.
DTMF_FREQUENCIES: Final = {
    "1": (697, 1209), "2": (697, 1336), "3": (697, 1477), "A": (697, 1633),
    "4": (770, 1209), "5": (770, 1336), "6": (770, 1477), "B": (770, 1633),
    "7": (852, 1209), "8": (852, 1336), "9": (852, 1477), "C": (852, 1633),
    "*": (941, 1209), "0": (941, 1336), "#": (941, 1477), "D": (941, 1633),
}  # fmt: skip


def tone(
    frequencies: float | Sequence[float],
    seconds: float,
    *,
    rate: int = RATE,
    level: float = 0.3,
    start: int = 0,
) -> npt.NDArray[np.int16]:
    """A sum of sines at ``level`` of full scale; ``start`` continues the phase of an earlier block."""
    freqs = [frequencies] if isinstance(frequencies, int | float) else list(frequencies)
    n = np.arange(start, start + round(seconds * rate), dtype=np.float64)
    wave = sum(np.sin(2 * np.pi * f * n / rate) for f in freqs) / max(len(freqs), 1)
    return np.asarray(np.rint(np.asarray(wave) * level * 32767), dtype=np.int16)


def silence(seconds: float, *, rate: int = RATE) -> npt.NDArray[np.int16]:
    return np.zeros(round(seconds * rate), dtype=np.int16)


def dtmf_tone(key: str, seconds: float = 0.1, *, rate: int = RATE) -> npt.NDArray[np.int16]:
    """The Q.23 dual tone of ``key`` (for in-band prompts such as a menu's "press 1" beep)."""
    return tone(DTMF_FREQUENCIES[key.upper()], seconds, rate=rate)


def beeps(
    frequency: float, count: int, *, on: float = 0.15, off: float = 0.1, rate: int = RATE
) -> npt.NDArray[np.int16]:
    """``count`` short beeps: the prompt used when a configured WAV file is missing."""
    parts: list[npt.NDArray[np.int16]] = []
    for _ in range(count):
        parts += [tone(frequency, on, rate=rate), silence(off, rate=rate)]
    return np.concatenate(parts) if parts else silence(0.0)


def goertzel_power(samples: npt.ArrayLike, frequency: float, rate: int = RATE) -> float:
    """|X(k)|² of the bin nearest ``frequency`` over the block, by the Goertzel recurrence."""
    block = np.asarray(samples, dtype=np.float64)
    n = len(block)
    if n == 0:
        return 0.0
    k = round(n * frequency / rate)
    coefficient = 2.0 * math.cos(2.0 * math.pi * k / n)
    s1 = s2 = 0.0
    for x in block.tolist():
        s1, s2 = x + coefficient * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coefficient * s1 * s2


def tone_share(samples: npt.ArrayLike, frequency: float, rate: int = RATE) -> float:
    """The share (0–1) of the block's energy at ``frequency``: 1 for a pure tone on a bin, ~0 without it.

    By Parseval, a real sine on bin k puts half its energy in bin k and half in bin N−k, so the bin's
    power is doubled and divided by N times the energy.
    """
    block = np.asarray(samples, dtype=np.float64)
    energy = float(np.dot(block, block))
    if energy <= 0.0:
        return 0.0
    return min(2.0 * goertzel_power(block, frequency, rate) / (len(block) * energy), 1.0)


def dominant(samples: npt.ArrayLike, candidates: Iterable[float], rate: int = RATE) -> tuple[float, float]:
    """The candidate frequency with the largest share of the block's energy, and that share."""
    shares = {f: tone_share(samples, f, rate) for f in candidates}
    best = max(shares, key=lambda f: shares[f])
    return best, shares[best]


def sweep_shares(
    samples: npt.ArrayLike, frequency: float, *, block: int = 800, rate: int = RATE
) -> list[float]:
    """:func:`tone_share` of each ``block``-sample block in turn (where in a recording a tone is)."""
    array = np.asarray(samples)
    return [
        tone_share(array[i : i + block], frequency, rate) for i in range(0, len(array) - block + 1, block)
    ]
