"""A jitter buffer for G.711 between two legs, sans I/O: reorder, conceal loss, re-packetise.

The bridge forwards audio as it comes and adds delay only where it must:

* **In order, same packet time**: a packet is passed on the moment it arrives (no playout delay;
  both ends have jitter buffers of their own, a relay should not add another).
* **Re-packetising** between packet times (10, 20, 30 ms…, RFC 4566 ``a=ptime``): G.711 is one byte
  per sample, so samples are gathered and cut into frames of the outgoing packet time — never
  decoded. A 30 ms packet in gives one 20 ms frame at once and the rest with the next packet.
* **Reordering**: a packet after a gap waits up to ``max_wait`` for the missing one; what arrives
  in time is put back in order, what comes later than its place is dropped (RFC 3550 §A.1: the
  sequence number says what is missing, the timestamp where its samples go).
* **Loss**: a gap still open after ``max_wait`` is concealed (ITU-T G.711 Appendix I in its
  simplest form): the last real frame repeated with a gain falling to silence over
  ``conceal_limit`` samples, then silence. Only concealed samples are decoded and encoded.
* **Pauses** (silence suppression, RFC 3551 §4.1): a timestamp jump with no sequence number
  missing, or a packet with the marker bit, is a pause, not loss — nothing is concealed, the
  outgoing timestamps jump as far, and the next frame has the marker bit.
* **A new stream** (another SSRC, or a jump of more than ``max_jump`` samples) starts afresh.

Time is passed in (``now``, seconds on a monotonic clock); :meth:`JitterBuffer.tick` is called at
:meth:`JitterBuffer.next_deadline` to conceal what did not come.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from dispatchd.channels.hotline.voice import g711

__all__ = ["JitterBuffer", "JitterStats", "OutFrame"]

_MAX_PENDING: Final = 64


@dataclass(frozen=True, slots=True)
class OutFrame:
    """One frame to send: ``timestamp`` on the outgoing clock (continuous, in samples)."""

    timestamp: int
    payload: bytes
    concealed: bool = False
    marker: bool = False


@dataclass(slots=True)
class JitterStats:
    received: int = 0
    late: int = 0  # came after their place was played (dropped, wholly or partly)
    duplicates: int = 0
    reordered: int = 0  # arrived after a later packet, in time
    concealed_samples: int = 0
    resyncs: int = 0


def _diff32(a: int, b: int) -> int:
    """a − b on the 32-bit RTP timestamp circle (RFC 3550 §5.1), as a signed number."""
    d = (a - b) & 0xFFFFFFFF
    return d - 0x100000000 if d >= 0x80000000 else d


class JitterBuffer:
    """One direction of one call: packets of one G.711 law in, frames of ``out_samples`` out."""

    def __init__(
        self,
        codec: int | str,
        out_samples: int = 160,
        *,
        rate: int = 8000,
        max_wait: float = 0.06,
        conceal_limit: int = 480,
        max_jump: int = 8000 * 5,
    ) -> None:
        self.codec = g711.payload_type(codec)
        self.out_samples = out_samples
        self.rate = rate
        self.max_wait = max_wait
        self.conceal_limit = conceal_limit
        self.max_jump = max_jump
        self.stats = JitterStats()
        self._silence = g711.silence(1, self.codec)
        self._ssrc: int | None = None
        self._cursor = 0  # input timestamp of the next sample to take into the buffer
        self._last_seq = 0  # sequence number of the last packet taken
        self._pending: dict[int, tuple[int, bytes, float, bool]] = {}  # ts -> (seq, payload, arrival, marker)
        self._buf = bytearray()  # taken, not yet sent
        self._mask = bytearray()  # 1 where the byte in _buf was concealed
        self._out_ts = 0  # outgoing timestamp of _buf[0]
        self._marker = True
        self._history = b""  # the last real frame, for concealment
        self._run = 0  # samples concealed in a row
        self._last_arrival = 0.0
        self._last_packet_samples = out_samples
        self._last_emit = 0.0
        self._ready: list[OutFrame] = []  # whole frames cut before a pause, sent with the next emit

    # -- input ------------------------------------------------------------------------------

    def push(
        self, ssrc: int, sequence: int, timestamp: int, payload: bytes, now: float, marker: bool = False
    ) -> list[OutFrame]:
        """One RTP packet of audio; the frames that can go out now."""
        size = len(payload)
        if (
            size == self.out_samples
            and timestamp == self._cursor
            and ssrc == self._ssrc
            and not self._pending
            and not self._buf
            and not self._ready
        ):
            # The common case, in order and the same packet time: straight through, nothing copied.
            self.stats.received += 1
            self._cursor = (timestamp + size) & 0xFFFFFFFF
            self._last_seq = sequence
            self._history = payload
            self._run = 0
            self._last_arrival = self._last_emit = now
            self._last_packet_samples = size
            frame = OutFrame(self._out_ts & 0xFFFFFFFF, payload, False, self._marker)
            self._marker = False
            self._out_ts += size
            return [frame]
        if not payload:
            return []
        self.stats.received += 1
        out: list[OutFrame] = []
        if self._ssrc is None or ssrc != self._ssrc:
            out += self._restart(ssrc, sequence, timestamp, now)
        rel = _diff32(timestamp, self._cursor)
        if abs(rel) > self.max_jump:
            out += self._restart(ssrc, sequence, timestamp, now)
            rel = 0
        if rel < 0:
            if rel + len(payload) <= 0:
                self.stats.late += 1
                return out
            # Its beginning was already played (concealed): take the rest in its place.
            self.stats.late += 1
            payload, timestamp, rel = payload[-rel:], self._cursor, 0
        if timestamp in self._pending:
            self.stats.duplicates += 1
            return out
        if self._pending and rel < max(_diff32(t, self._cursor) for t in self._pending):
            self.stats.reordered += 1
        self._pending[timestamp] = (sequence, payload, now, marker)
        self._last_arrival = now
        self._last_packet_samples = len(payload)
        out += self._drain(now)
        if len(self._pending) > _MAX_PENDING:
            out += self._conceal_gap(now)
        return out

    def tick(self, now: float) -> list[OutFrame]:
        """Conceal what is overdue: a gap before a waiting packet, or the rest of a partial frame."""
        out: list[OutFrame] = []
        if self._pending:
            first = self._first_pending()
            if now >= self._pending[first][2] + self.max_wait:
                out += self._conceal_gap(now)
        elif self._buf and now >= self._last_arrival + self._last_packet_samples / self.rate + self.max_wait:
            missing = self.out_samples - len(self._buf) % self.out_samples
            self._append(self._conceal(missing), concealed=True)
            self._cursor = (self._cursor + missing) & 0xFFFFFFFF
            out += self._emit(now)
        return out

    def next_deadline(self) -> float | None:
        if self._pending:
            return self._pending[self._first_pending()][2] + self.max_wait
        if self._buf:
            return self._last_arrival + self._last_packet_samples / self.rate + self.max_wait
        return None

    # -- inside -----------------------------------------------------------------------------

    def _first_pending(self) -> int:
        return min(self._pending, key=lambda t: _diff32(t, self._cursor))

    def _restart(self, ssrc: int, sequence: int, timestamp: int, now: float) -> list[OutFrame]:
        """A new stream: send what is left (padded with silence), continue the outgoing clock."""
        out: list[OutFrame] = []
        started = self._ssrc is not None
        if self._buf:
            missing = self.out_samples - len(self._buf) % self.out_samples
            if missing != self.out_samples:
                self._append(self._silence * missing, concealed=False)
            out += self._emit(now)
        if started:
            self.stats.resyncs += 1
            # Keep the outgoing timestamps in step with the time that passed.
            gap = max(round((now - self._last_emit) * self.rate) - self.out_samples, 0)
            self._out_ts += gap
        self._pending.clear()
        self._ssrc = ssrc
        self._cursor = timestamp
        self._last_seq = (sequence - 1) & 0xFFFF
        self._marker = True
        self._run = 0
        return out

    def _drain(self, now: float) -> list[OutFrame]:
        while self._pending:
            if self._cursor in self._pending:
                sequence, payload, _, _ = self._pending.pop(self._cursor)
                self._take(sequence, payload)
                continue
            first = self._first_pending()
            sequence, _, _, marker = self._pending[first]
            if sequence == (self._last_seq + 1) & 0xFFFF or marker:
                self._pause(first)  # nothing is missing: the sender paused (RFC 3551 §4.1)
                continue
            break
        return self._emit(now)

    def _take(self, sequence: int, payload: bytes) -> None:
        self._append(payload, concealed=False)
        self._cursor = (self._cursor + len(payload)) & 0xFFFFFFFF
        self._last_seq = sequence
        self._history = (
            payload[-self.out_samples :]
            if len(payload) >= self.out_samples
            else (self._history + payload)[-self.out_samples :]
        )
        self._run = 0

    def _pause(self, timestamp: int) -> None:
        """Jump over a pause: the partial frame is finished with silence, the clock jumps as far."""
        jump = _diff32(timestamp, self._cursor)
        partial = len(self._buf) % self.out_samples
        if partial:
            fill = min(self.out_samples - partial, jump)
            self._append(self._silence * fill, concealed=False)
            jump -= fill
        self._flush_pending_frames()
        self._out_ts += jump
        self._cursor = timestamp
        self._marker = True
        self._run = 0

    def _flush_pending_frames(self) -> None:
        """Send whole frames now, and keep a remainder that is not a whole frame in the buffer."""
        self._ready.extend(self._cut())

    def _conceal_gap(self, now: float) -> list[OutFrame]:
        first = self._first_pending()
        gap = _diff32(first, self._cursor)
        if gap > 0:
            self._append(self._conceal(gap), concealed=True)
            self._cursor = first
            self._last_seq = (self._pending[first][0] - 1) & 0xFFFF
        return self._drain(now)

    def _conceal(self, samples: int) -> bytes:
        self.stats.concealed_samples += samples
        if not self._history or self._run >= self.conceal_limit:
            self._run += samples
            return self._silence * samples
        history = g711.decode(self._history, self.codec).astype(np.float64)
        repeats = -(-samples // len(history))
        wave = np.tile(history, repeats)[:samples]
        gain = np.clip(1.0 - (self._run + np.arange(samples)) / self.conceal_limit, 0.0, 1.0)
        self._run += samples
        return g711.encode(wave * gain, self.codec)

    def _append(self, data: bytes, *, concealed: bool) -> None:
        self._buf += data
        self._mask += (b"\x01" if concealed else b"\x00") * len(data)

    def _cut(self) -> list[OutFrame]:
        frames: list[OutFrame] = []
        size = self.out_samples
        while len(self._buf) >= size:
            frames.append(
                OutFrame(
                    self._out_ts & 0xFFFFFFFF, bytes(self._buf[:size]), any(self._mask[:size]), self._marker
                )
            )
            self._marker = False
            self._out_ts += size
            del self._buf[:size]
            del self._mask[:size]
        return frames

    def _emit(self, now: float) -> list[OutFrame]:
        frames = self._ready + self._cut()
        self._ready = []
        if frames:
            self._last_emit = now
        return frames
