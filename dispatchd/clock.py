"""The single clock. Everything that needs the time of day asks a :class:`Clock`, so tests move it.

Wall-clock time (``now``) is for deadlines, audit and records; ``monotonic`` is for measuring and
pacing. :class:`FakeClock` is moved by tests with :meth:`FakeClock.advance` instead of sleeping.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta, timezone
from typing import Final, Protocol

# The local time of the counties served (China Standard Time, UTC+8): case numbers and local days.
LOCAL_TZ: Final = timezone(timedelta(hours=8), "CST")


class Clock(Protocol):
    def now(self) -> datetime: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2026, 5, 3, 8, 0, tzinfo=UTC)
        self._mono = 1000.0

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def advance(self, delta: timedelta | float) -> datetime:
        seconds = delta.total_seconds() if isinstance(delta, timedelta) else float(delta)
        if seconds < 0:
            raise ValueError("a clock does not go backwards")
        self._now += timedelta(seconds=seconds)
        self._mono += seconds
        return self._now
