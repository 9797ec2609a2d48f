"""The patrol log (网格日志), pure: a patrol's lifecycle, the daily rule, track length, local days.

A grid worker starts a patrol; while it runs the phone adds track points and places visited; the
worker stops it (stopping again changes nothing)::

    running ──point, visit──> running ──stop──> stopped

A patrol belongs to the local day (UTC+8) it started on and counts once it is stopped and lasted
at least the rule's minimum (Taizhou: two patrols of two hours a day). Nothing here reads the clock
or does I/O.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final

from dispatchd.clock import LOCAL_TZ
from dispatchd.domain.geo import haversine_m

RUNNING: Final = "running"
STOPPED: Final = "stopped"
# Points may be stamped a little before the start or after now by phone clocks.
CLOCK_SKEW: Final = timedelta(minutes=5)


class PatrolStopped(Exception):
    """Nothing more can be added to a stopped patrol."""

    message_zh = "该巡查已结束"
    message_en = "this patrol has already stopped"


@dataclass(frozen=True, slots=True)
class Patrol:
    """The lifecycle part of a patrol."""

    started_at: datetime
    ended_at: datetime | None

    @property
    def state(self) -> str:
        return RUNNING if self.ended_at is None else STOPPED

    def check_adding(self, at: datetime, now: datetime) -> bool:
        """Whether a point or visit stamped ``at`` belongs to this running patrol (raises
        :class:`PatrolStopped` once it has stopped; False for a time outside it)."""
        if self.ended_at is not None:
            raise PatrolStopped
        return self.started_at - CLOCK_SKEW <= at <= now + CLOCK_SKEW

    def stop(self, now: datetime) -> Patrol | None:
        """The patrol stopped at ``now``; None when it already was (a retry changes nothing)."""
        if self.ended_at is not None:
            return None
        return Patrol(self.started_at, max(now, self.started_at))


@dataclass(frozen=True)
class PatrolRule:
    """At least ``per_day`` patrols a day, each lasting at least ``min_duration``."""

    per_day: int
    min_duration: timedelta

    def counts(self, duration: timedelta) -> bool:
        return duration >= self.min_duration

    def met(self, durations: Iterable[timedelta]) -> bool:
        """Whether one day's finished patrols satisfy the rule."""
        return sum(1 for d in durations if self.counts(d)) >= self.per_day

    def as_json(self) -> dict[str, Any]:
        return {"patrols_per_day": self.per_day, "min_hours": self.min_duration.total_seconds() / 3600}


def track_length_m(points: Sequence[tuple[float, float]]) -> float:
    """Length of a track of (lat, lon) points in time order, in metres."""
    return sum(haversine_m(a[0], a[1], b[0], b[1]) for a, b in itertools.pairwise(points))


def local_days(start: datetime, end: datetime, today: date) -> tuple[date, date] | None:
    """The local days of the period ``[start, end)``, up to ``today``; None when it has none."""
    first = start.astimezone(LOCAL_TZ).date()
    last = min((end - timedelta(microseconds=1)).astimezone(LOCAL_TZ).date(), today)
    return (first, last) if first <= last else None
