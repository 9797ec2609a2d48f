"""Spherical distance, bearing, boxes and the GCJ-02 display shift."""

from __future__ import annotations

import math

import pytest

from dispatchd.domain.geo import (
    EARTH_RADIUS_M,
    BBox,
    bbox_around,
    bounding_box,
    gcj02_to_wgs84,
    haversine_m,
    initial_bearing_deg,
    out_of_china,
    wgs84_to_gcj02,
)

RUIAN = (27.7803, 120.6552)  # lat, lon


def test_haversine_of_one_degree_of_latitude() -> None:
    """One degree along a meridian is R·π/180 metres, and distance is symmetric and zero at a point."""
    assert haversine_m(27.0, 120.0, 28.0, 120.0) == pytest.approx(EARTH_RADIUS_M * math.pi / 180, rel=1e-12)
    a = haversine_m(*RUIAN, 27.9943, 120.6994)
    assert a == pytest.approx(haversine_m(27.9943, 120.6994, *RUIAN))
    assert 23_000 < a < 25_000  # Ruian to Wenzhou city centre, about 24 km
    assert haversine_m(*RUIAN, *RUIAN) == 0.0


def test_haversine_of_antipodes_is_half_the_circumference() -> None:
    """The formula stays finite at its worst case, opposite points of the sphere."""
    assert haversine_m(0.0, 0.0, 0.0, 180.0) == pytest.approx(math.pi * EARTH_RADIUS_M)


@pytest.mark.parametrize(
    ("lat2", "lon2", "expected"),
    [(28.0, 120.0, 0.0), (27.0, 121.0, 90.0), (26.0, 120.0, 180.0), (27.0, 119.0, 270.0)],
)
def test_initial_bearing_compass_points(lat2: float, lon2: float, expected: float) -> None:
    """Bearings are degrees clockwise from north in [0, 360)."""
    assert initial_bearing_deg(27.0, 120.0, lat2, lon2) == pytest.approx(expected, abs=0.5)


def test_bounding_box_and_contains() -> None:
    """bounding_box spans (lon, lat) points; contains takes lat, lon and includes the edge."""
    box = bounding_box([(120.1, 27.5), (120.3, 27.9), (120.2, 27.6)])
    assert box == BBox(120.1, 27.5, 120.3, 27.9)
    assert box.contains(27.9, 120.3) and box.contains(27.7, 120.2)
    assert not box.contains(120.2, 27.7)  # swapped order is outside
    assert box.centre == pytest.approx((120.2, 27.7))
    assert box.as_list() == [120.1, 27.5, 120.3, 27.9]
    with pytest.raises(ValueError):
        bounding_box([])


def test_bbox_around_holds_every_point_at_the_radius() -> None:
    """Points 1 km away north, south, east and west all fall inside bbox_around(…, 1000)."""
    lat, lon = RUIAN
    box = bbox_around(lat, lon, 1000.0)
    dlat = math.degrees(1000.0 / EARTH_RADIUS_M)
    dlon = math.degrees(1000.0 / (EARTH_RADIUS_M * math.cos(math.radians(lat))))
    for p_lat, p_lon in ((lat + dlat, lon), (lat - dlat, lon), (lat, lon + dlon), (lat, lon - dlon)):
        assert haversine_m(lat, lon, p_lat, p_lon) == pytest.approx(1000.0, rel=1e-3)
        assert box.contains(p_lat, p_lon)
    assert not box.contains(lat + 2 * dlat, lon)
    assert bbox_around(89.9999, 0.0, 50_000).max_lat == 90.0
    with pytest.raises(ValueError):
        bbox_around(lat, lon, -1.0)


def test_wgs84_to_gcj02_matches_the_published_reference_point() -> None:
    """The shift of (39.915 N, 116.404 E) equals the value every public implementation prints."""
    lat, lon = wgs84_to_gcj02(39.915, 116.404)
    assert lat == pytest.approx(39.91640428150164, abs=1e-9)
    assert lon == pytest.approx(116.41024449916938, abs=1e-9)


@pytest.mark.parametrize("point", [RUIAN, (39.915, 116.404), (30.2875, 120.1536), (22.3, 114.17)])
def test_gcj02_round_trip_within_1e_5_degrees(point: tuple[float, float]) -> None:
    """WGS-84 → GCJ-02 → WGS-84 returns the starting point within 1e-5° (in fact about 1e-9°)."""
    back = gcj02_to_wgs84(*wgs84_to_gcj02(*point))
    assert back[0] == pytest.approx(point[0], abs=1e-5)
    assert back[1] == pytest.approx(point[1], abs=1e-5)
    assert max(abs(back[0] - point[0]), abs(back[1] - point[1])) < 1e-8


def test_gcj02_shift_in_ruian_is_a_few_hundred_metres() -> None:
    """In Zhejiang the display shift moves a point by a few hundred metres, as AMap users see."""
    shifted = wgs84_to_gcj02(*RUIAN)
    assert 100 < haversine_m(*RUIAN, *shifted) < 1000


def test_no_shift_outside_china() -> None:
    """Points outside the rough China box pass through both directions unchanged."""
    london = (51.5072, -0.1276)
    assert out_of_china(*london)
    assert not out_of_china(*RUIAN)
    assert wgs84_to_gcj02(*london) == london
    assert gcj02_to_wgs84(*london) == london
