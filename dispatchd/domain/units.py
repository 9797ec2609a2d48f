"""Squad units and their positions, pure: kinds, statuses, fix filtering, rate limits, ETAs.

Nothing here reads the clock or touches a store; the caller passes the time in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta

from dispatchd.domain.geo import EARTH_RADIUS_M, haversine_m, out_of_china

# 应急中队 forces: a team, a vehicle (the command vehicle), a person on foot, patrol motorbikes, e-bikes.
UNIT_KINDS = ("team", "vehicle", "person", "motorbike", "ebike")
UNIT_STATUSES = ("available", "dispatched", "en_route", "on_scene", "returning", "off_duty")
DEVICE_PROTOCOLS = ("osmand", "jt808")

# A unit's status (its lifecycle on duty). An order puts an available unit on ``dispatched``; the
# squad reports ``en_route``, ``on_scene``, ``returning``, ``available``; a unit going ``off_duty``
# must come back ``available`` before anything else, so that no order reaches a squad that is off.
STATUS_NAMES = {
    "available": ("待命", "available"),
    "dispatched": ("已派出", "dispatched"),
    "en_route": ("在途", "en route"),
    "on_scene": ("到达现场", "on scene"),
    "returning": ("返回中", "returning"),
    "off_duty": ("下班", "off duty"),
}
# The statuses in which a unit's accepted orders are done (it is on its way back, or free again).
DONE_STATUSES = frozenset({"returning", "available"})


class StatusConflict(Exception):
    """The unit cannot go from its status to the one asked."""

    def __init__(self, current: str, target: str) -> None:
        self.current = current
        self.target = target
        zh_now, en_now = STATUS_NAMES.get(current, (current, current))
        zh_to, en_to = STATUS_NAMES.get(target, (target, target))
        self.message_zh = f"队伍当前为“{zh_now}”，不能直接改为“{zh_to}”（请先改为“待命”）"
        self.message_en = f"the unit is {en_now}; it cannot become {en_to} before it is available again"
        super().__init__(self.message_en)


def next_status(current: str, target: str) -> str | None:
    """The status after asking for ``target``: None when it already is; :class:`StatusConflict`
    when an off-duty unit is asked for anything but available; ValueError for an unknown status."""
    if target not in UNIT_STATUSES:
        raise ValueError(f"unknown unit status {target!r}")
    if target == current:
        return None
    if current == "off_duty" and target != "available":
        raise StatusConflict(current, target)
    return target


@dataclass(frozen=True, slots=True)
class Position:
    """One fix of a unit, as kept live and in the track. ``at`` is the fix time (aware, UTC)."""

    unit_id: int
    device_id: int
    lat: float
    lon: float
    at: datetime
    source: str
    speed_kmh: float | None = None
    heading: float | None = None
    altitude_m: float | None = None
    accuracy_m: float | None = None
    battery: float | None = None

    def as_json(self) -> dict[str, object]:
        return {
            "lat": self.lat,
            "lon": self.lon,
            "at": self.at.isoformat(),
            "speed": self.speed_kmh,
            "heading": self.heading,
            "battery": self.battery,
            "source": self.source,
        }


@dataclass(frozen=True, slots=True)
class FixRules:
    """Which fixes may become a unit's live position (issue: filtering)."""

    max_speed_kmh: float = 300.0
    max_future: timedelta = timedelta(minutes=5)
    china_only: bool = False


# Verdicts of :func:`judge_fix`. ``live`` and ``track_only`` are accepted; the rest are refused and
# counted under their name.
LIVE = "live"
TRACK_ONLY = "track_only"  # older than the live position (a blind-area re-upload): history only
NULL_ISLAND = "null_island"
OUT_OF_RANGE = "out_of_range"
FUTURE = "future"
IMPOSSIBLE_SPEED = "impossible_speed"
DUPLICATE = "duplicate"


def judge_fix(fix: Position, previous: Position | None, now: datetime, rules: FixRules) -> str:
    """Classify a fix against the unit's live position ``previous`` at server time ``now``.

    Refused: a fix at (0, 0) (a terminal without a fix often sends zeros), outside the valid
    range or, with ``china_only``, outside China's box; more than ``max_future`` ahead of the
    server; an exact repeat of the live fix; a jump from the live fix faster than
    ``max_speed_kmh``. A fix older than the live one goes to the track only.
    """
    if fix.lat == 0 and fix.lon == 0:
        return NULL_ISLAND
    if not (math.isfinite(fix.lat) and math.isfinite(fix.lon)) or abs(fix.lat) > 90 or abs(fix.lon) > 180:
        return OUT_OF_RANGE
    if rules.china_only and out_of_china(fix.lat, fix.lon):
        return OUT_OF_RANGE
    if fix.at - now > rules.max_future:
        return FUTURE
    if previous is None:
        return LIVE
    if fix.at == previous.at and fix.lat == previous.lat and fix.lon == previous.lon:
        return DUPLICATE
    seconds = (fix.at - previous.at).total_seconds()
    distance = _approx_distance_m(previous.lat, previous.lon, fix.lat, fix.lon)
    if seconds <= 0:
        # Same time, elsewhere, or an older fix: history only, never the live position.
        return TRACK_ONLY if seconds < 0 else (LIVE if distance < 1 else IMPOSSIBLE_SPEED)
    if distance / seconds * 3.6 > rules.max_speed_kmh and distance > 100:
        return IMPOSSIBLE_SPEED
    return LIVE


def _approx_distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Equirectangular distance: within 0.5 % of the great circle below a few hundred km, and cheaper
    (this runs for every fix); beyond that, the great circle."""
    dlat = lat2 - lat1
    dlon = (lon2 - lon1 + 180) % 360 - 180
    if abs(dlat) > 2 or abs(dlon) > 2:
        return haversine_m(lat1, lon1, lat2, lon2)
    x = math.radians(dlon) * math.cos(math.radians((lat1 + lat2) / 2))
    return math.hypot(x, math.radians(dlat)) * EARTH_RADIUS_M


class TokenBucket:
    """Rate limit: ``rate`` tokens a second, at most ``burst`` saved; time comes from the caller."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        elapsed = now - self.stamp
        if elapsed > 0:
            self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
            self.stamp = now
        if self.tokens >= cost:
            self.tokens -= cost
            return True
        return False


def eta_seconds(distance_m: float, speed_kmh: float, route_factor: float) -> int:
    """Travel time over ``distance_m`` straight-line metres on roads ``route_factor`` longer."""
    return round(distance_m * route_factor / (speed_kmh / 3.6))


def is_stale(at: datetime | None, now: datetime, stale_after: timedelta) -> bool:
    """A unit with no fix, or whose last fix is older than ``stale_after``, is stale."""
    return at is None or now - at > stale_after
