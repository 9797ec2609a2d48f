"""Squad-unit rules, pure: fix filtering, the token bucket, ETAs and staleness."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from dispatchd.domain.geo import haversine_m
from dispatchd.domain.units import (
    DUPLICATE,
    FUTURE,
    IMPOSSIBLE_SPEED,
    LIVE,
    NULL_ISLAND,
    OUT_OF_RANGE,
    TRACK_ONLY,
    FixRules,
    Position,
    TokenBucket,
    _approx_distance_m,
    eta_seconds,
    is_stale,
    judge_fix,
)

NOW = datetime(2026, 5, 3, 8, 0, tzinfo=UTC)


def fix(lat: float, lon: float, seconds: float = 0) -> Position:
    return Position(
        unit_id=1, device_id=1, lat=lat, lon=lon, at=NOW + timedelta(seconds=seconds), source="osmand"
    )


def test_first_fix_is_live_and_zero_is_null_island() -> None:
    """Without a previous fix a fix is live; (0, 0) never is."""
    assert judge_fix(fix(27.74, 120.48), None, NOW, FixRules()) == LIVE
    assert judge_fix(fix(0.0, 0.0), None, NOW, FixRules()) == NULL_ISLAND


def test_future_repeat_older_and_impossible_jumps() -> None:
    """Five minutes ahead is the limit; a repeat is a duplicate; older is track only; 280 km in 10 s is refused."""
    prev = fix(27.74, 120.48)
    rules = FixRules()
    assert judge_fix(fix(27.74, 120.48, 300), prev, NOW, rules) == LIVE
    assert judge_fix(fix(27.74, 120.48, 301), prev, NOW, rules) == FUTURE
    assert judge_fix(fix(27.74, 120.48), prev, NOW, rules) == DUPLICATE
    assert judge_fix(fix(27.741, 120.48, -10), prev, NOW, rules) == TRACK_ONLY
    assert judge_fix(fix(30.27, 120.15, 10), prev, NOW, rules) == IMPOSSIBLE_SPEED
    assert judge_fix(fix(27.75, 120.48, 60), prev, NOW, rules) == LIVE  # 1.1 km a minute: 67 km/h


def test_china_box_only_when_asked() -> None:
    """A fix in London passes by default and is out of range with china_only."""
    assert judge_fix(fix(51.5, -0.12), None, NOW, FixRules()) == LIVE
    assert judge_fix(fix(51.5, -0.12), None, NOW, FixRules(china_only=True)) == OUT_OF_RANGE


def test_approximate_distance_is_close_to_the_great_circle() -> None:
    """The cheap distance used for speed checks is within 0.5 % of haversine, near and far."""
    for a, b in (
        ((27.74, 120.48), (27.75, 120.49)),
        ((27.74, 120.48), (30.27, 120.15)),
        ((60, 179.9), (60, -179.9)),
    ):
        exact = haversine_m(a[0], a[1], b[0], b[1])
        assert abs(_approx_distance_m(a[0], a[1], b[0], b[1]) - exact) <= exact * 0.005


def test_token_bucket_refills_with_time() -> None:
    """A bucket of 3 at 1/s gives 3 at once, then one more a second later."""
    bucket = TokenBucket(1.0, 3, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(1.0) and not bucket.take(1.0)


def test_eta_and_staleness() -> None:
    """1 km at 36 km/h with factor 1.3 is 130 s; a fix 301 s old is stale at 300 s, none at all too."""
    assert eta_seconds(1000, 36.0, 1.3) == 130
    assert is_stale(NOW - timedelta(seconds=301), NOW, timedelta(seconds=300))
    assert not is_stale(NOW - timedelta(seconds=300), NOW, timedelta(seconds=300))
    assert is_stale(None, NOW, timedelta(seconds=300))
