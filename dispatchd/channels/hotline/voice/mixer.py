"""The two-sided recording, sans I/O: each leg's audio placed on one timeline and mixed.

The caller's and the officer's audio reach the bridge as separate streams with clocks of their
own. Each leg is placed where its first frame arrived (``now`` since the call's start) and
continues from there frame after frame, as long as it stays within ``tolerance`` of the arrival
time; further off (a pause, a hold, a clock that drifts), it is placed anew at its arrival. Audio
older than ``delay`` is final: :meth:`Mixer.flush` hands it out mixed (the sum, clipped to 16
bits) and, on request, per leg, lined up with the mix so the files can be laid over each other.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["Mixer"]

Samples = npt.NDArray[np.int16]


class _Leg:
    __slots__ = ("cursor", "segments")

    def __init__(self) -> None:
        self.cursor: int | None = None  # where the next frame of this leg goes, in samples
        self.segments: list[tuple[int, Samples]] = []


class Mixer:
    """Legs by name; ``start`` is the monotonic time of sample 0."""

    def __init__(
        self,
        start: float,
        legs: Sequence[str] = ("caller", "officer"),
        *,
        rate: int = 8000,
        tolerance: float = 0.12,
        delay: float = 0.5,
    ) -> None:
        self.start = start
        self.rate = rate
        self.tolerance = round(tolerance * rate)
        self.delay = delay
        self.legs = {name: _Leg() for name in legs}
        self.position = 0  # everything before this sample has been flushed

    def add(self, leg: str, samples: Samples, now: float) -> None:
        """A frame of ``leg`` that arrived at ``now``."""
        track = self.legs[leg]
        arrival = round((now - self.start) * self.rate)
        if track.cursor is None or abs(arrival - track.cursor) > self.tolerance:
            track.cursor = arrival
        at = track.cursor
        track.cursor += len(samples)
        if at + len(samples) <= self.position:
            return  # too late for what was already written
        if at < self.position:
            samples, at = samples[self.position - at :], self.position
        track.segments.append((at, samples))

    def flush(self, now: float | None = None) -> tuple[Samples, dict[str, Samples]]:
        """The mix and each leg from the last flush up to ``now − delay`` (everything with None)."""
        if now is None:
            ends = [at + len(s) for track in self.legs.values() for at, s in track.segments]
            upto = max([self.position, *ends])
        else:
            upto = max(round((now - self.delay - self.start) * self.rate), self.position)
        length = upto - self.position
        per_leg: dict[str, Samples] = {}
        total = np.zeros(length, dtype=np.int32)
        for name, track in self.legs.items():
            lane = np.zeros(length, dtype=np.int32)
            keep: list[tuple[int, Samples]] = []
            for at, samples in track.segments:
                offset = at - self.position
                if offset >= length:
                    keep.append((at, samples))
                    continue
                fits = min(len(samples), length - offset)
                lane[offset : offset + fits] += samples[:fits]
                if fits < len(samples):
                    keep.append((upto, samples[fits:]))
            track.segments = keep
            total += lane
            per_leg[name] = np.clip(lane, -32768, 32767).astype(np.int16)
        self.position = upto
        return np.clip(total, -32768, 32767).astype(np.int16), per_leg
