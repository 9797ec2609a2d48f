"""What the caller hears when no officer speaks, sans I/O: prompts in turn, then music or a tone.

A :class:`Player` holds a list of G.711 clips (already encoded in the caller's law) and hands out
one packet's worth of bytes for each packet time that passed (``now`` passed in), so a late tick
catches up instead of drifting. When the list is played out it repeats its ``loop`` clip (hold
music or the queue tone) or falls silent; :meth:`Player.finished` tells the IVR a prompt ended.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

__all__ = ["Player"]


class Player:
    def __init__(self, packet_samples: int = 160, rate: int = 8000, silence: bytes = b"\xff") -> None:
        self.packet_samples = packet_samples
        self.rate = rate
        self._silence = silence
        self._clips: deque[tuple[str, bytes]] = deque()
        self._current: tuple[str, bytes] | None = None
        self._offset = 0
        self._loop: bytes = b""
        self._started: float | None = None
        self._sent = 0  # packets handed out since _started
        self._finished: list[str] = []
        self.timestamp = 0  # of the next packet, on the player's own clock

    def play(self, clips: Iterable[tuple[str, bytes]], *, replace: bool = True) -> None:
        """Queue ``(name, G.711 bytes)`` clips; ``replace`` drops what was still to come."""
        if replace:
            self._clips.clear()
            self._current = None
            self._offset = 0
        self._clips.extend(clip for clip in clips if clip[1])

    def loop(self, clip: bytes) -> None:
        """What to repeat once the clips are played (empty: silence)."""
        self._loop = clip

    @property
    def busy(self) -> bool:
        return self._current is not None or bool(self._clips)

    def finished(self) -> list[str]:
        """Names of the clips that ended since the last call."""
        done, self._finished = self._finished, []
        return done

    def restart(self, now: float) -> None:
        """Start pacing from ``now`` (after the player was not listened to for a while)."""
        self._started = now
        self._sent = 0

    def due(self, now: float) -> list[tuple[int, bytes]]:
        """(timestamp, payload) of every packet due by ``now``."""
        if self._started is None:
            self.restart(now)
        assert self._started is not None
        due = int((now - self._started) * self.rate / self.packet_samples) + 1 - self._sent
        if due > 5:  # the loop stalled: do not burst a backlog at the caller
            self.restart(now)
            due = 1
        out: list[tuple[int, bytes]] = []
        for _ in range(max(due, 0)):
            out.append((self.timestamp, self._next_packet()))
            self.timestamp += self.packet_samples
            self._sent += 1
        return out

    def _next_packet(self) -> bytes:
        size = self.packet_samples
        chunk = b""
        while len(chunk) < size:
            if self._current is None:
                if self._clips:
                    self._current, self._offset = self._clips.popleft(), 0
                elif self._loop:
                    self._current, self._offset = ("loop", self._loop), 0
                else:
                    break
            name, data = self._current
            take = data[self._offset : self._offset + size - len(chunk)]
            chunk += take
            self._offset += len(take)
            if self._offset >= len(data):
                self._current = None
                if name != "loop":
                    self._finished.append(name)
        return chunk + self._silence * (size - len(chunk))
