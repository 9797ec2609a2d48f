"""Small spherical geometry on WGS-84 points, and the GCJ-02 display shift.

dispatchd stores WGS-84 as GPS reports it.  AMap and Tencent tiles are drawn in GCJ-02, the
obfuscated datum every map published in mainland China must use, so a point is shifted only on
its way to such a map and shifted back when a user clicks one.  Distances use a sphere of the
IUGG mean Earth radius: within a county the error against the ellipsoid stays below 0.5 %.

Single points are passed as ``lat, lon`` (named); sequences of points as ``(lon, lat)`` pairs,
the order of boundary rings and GeoJSON.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

EARTH_RADIUS_M: Final = 6_371_008.8  # IUGG mean radius R1

# Krasovsky 1940 ellipsoid, on which the GCJ-02 shift is defined.
_GCJ_A: Final = 6_378_245.0
_GCJ_EE: Final = 0.00669342162296594323


def haversine_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Great-circle distance in metres between two WGS-84 points."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlmb = math.radians(lon2 - lon1)
    h = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(h)))


def initial_bearing_deg(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Initial bearing from the first point to the second, degrees clockwise from north, [0, 360)."""
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dlmb = math.radians(lon2 - lon1)
    y = math.sin(dlmb) * math.cos(phi2)
    x = math.cos(phi1) * math.sin(phi2) - math.sin(phi1) * math.cos(phi2) * math.cos(dlmb)
    bearing = math.degrees(math.atan2(y, x)) % 360.0
    return 0.0 if bearing == 360.0 else bearing


@dataclass(frozen=True, slots=True)
class BBox:
    """An axis-aligned box in degrees; does not cross the antimeridian."""

    min_lon: float
    min_lat: float
    max_lon: float
    max_lat: float

    def contains(self, lat: float, lon: float) -> bool:
        """True when the point lies inside the box or on its edge."""
        return self.min_lat <= lat <= self.max_lat and self.min_lon <= lon <= self.max_lon

    @property
    def centre(self) -> tuple[float, float]:
        """The middle of the box as ``(lon, lat)``."""
        return ((self.min_lon + self.max_lon) / 2, (self.min_lat + self.max_lat) / 2)

    def as_list(self) -> list[float]:
        """``[min_lon, min_lat, max_lon, max_lat]``, the GeoJSON ``bbox`` order."""
        return [self.min_lon, self.min_lat, self.max_lon, self.max_lat]


def bounding_box(points: Iterable[tuple[float, float]]) -> BBox:
    """The smallest box holding every ``(lon, lat)`` point; ValueError when there are none."""
    lons: list[float] = []
    lats: list[float] = []
    for lon, lat in points:
        lons.append(lon)
        lats.append(lat)
    if not lons:
        raise ValueError("bounding_box of no points")
    return BBox(min(lons), min(lats), max(lons), max(lats))


def bbox_around(lat: float, lon: float, radius_m: float) -> BBox:
    """A box certain to hold every point within ``radius_m`` of the centre (a coarse prefilter).

    Clamped at the poles and at ±180° longitude.
    """
    if radius_m < 0:
        raise ValueError("radius_m must not be negative")
    dlat = math.degrees(radius_m / EARTH_RADIUS_M)
    cos_lat = math.cos(math.radians(lat))
    dlon = 180.0 if cos_lat < 1e-12 else min(180.0, math.degrees(radius_m / (EARTH_RADIUS_M * cos_lat)))
    return BBox(
        max(-180.0, lon - dlon),
        max(-90.0, lat - dlat),
        min(180.0, lon + dlon),
        min(90.0, lat + dlat),
    )


def out_of_china(lat: float, lon: float) -> bool:
    """True outside the rough box where the GCJ-02 shift applies (the public convention)."""
    return not (72.004 <= lon <= 137.8347 and 0.8293 <= lat <= 55.8271)


def _shift_lat(x: float, y: float) -> float:
    ret = -100.0 + 2.0 * x + 3.0 * y + 0.2 * y * y + 0.1 * x * y + 0.2 * math.sqrt(abs(x))
    ret += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    ret += (20.0 * math.sin(y * math.pi) + 40.0 * math.sin(y / 3.0 * math.pi)) * 2.0 / 3.0
    ret += (160.0 * math.sin(y / 12.0 * math.pi) + 320.0 * math.sin(y * math.pi / 30.0)) * 2.0 / 3.0
    return ret


def _shift_lon(x: float, y: float) -> float:
    ret = 300.0 + x + 2.0 * y + 0.1 * x * x + 0.1 * x * y + 0.1 * math.sqrt(abs(x))
    ret += (20.0 * math.sin(6.0 * x * math.pi) + 20.0 * math.sin(2.0 * x * math.pi)) * 2.0 / 3.0
    ret += (20.0 * math.sin(x * math.pi) + 40.0 * math.sin(x / 3.0 * math.pi)) * 2.0 / 3.0
    ret += (150.0 * math.sin(x / 12.0 * math.pi) + 300.0 * math.sin(x / 30.0 * math.pi)) * 2.0 / 3.0
    return ret


def _gcj_offset(lat: float, lon: float) -> tuple[float, float]:
    dlat = _shift_lat(lon - 105.0, lat - 35.0)
    dlon = _shift_lon(lon - 105.0, lat - 35.0)
    rad_lat = math.radians(lat)
    magic = 1.0 - _GCJ_EE * math.sin(rad_lat) ** 2
    sqrt_magic = math.sqrt(magic)
    dlat = (dlat * 180.0) / ((_GCJ_A * (1.0 - _GCJ_EE)) / (magic * sqrt_magic) * math.pi)
    dlon = (dlon * 180.0) / (_GCJ_A / sqrt_magic * math.cos(rad_lat) * math.pi)
    return dlat, dlon


def wgs84_to_gcj02(lat: float, lon: float) -> tuple[float, float]:
    """Shift a WGS-84 point to GCJ-02 for display on AMap/Tencent tiles; returns ``(lat, lon)``."""
    if out_of_china(lat, lon):
        return lat, lon
    dlat, dlon = _gcj_offset(lat, lon)
    return lat + dlat, lon + dlon


def gcj02_to_wgs84(lat: float, lon: float) -> tuple[float, float]:
    """Undo :func:`wgs84_to_gcj02` (to about 1e-9°) by fixed-point iteration; returns ``(lat, lon)``.

    The shift has no closed-form inverse; it changes slowly, so a few rounds converge.
    """
    if out_of_china(lat, lon):
        return lat, lon
    w_lat, w_lon = lat, lon
    for _ in range(30):
        g_lat, g_lon = wgs84_to_gcj02(w_lat, w_lon)
        err_lat, err_lon = g_lat - lat, g_lon - lon
        w_lat -= err_lat
        w_lon -= err_lon
        if abs(err_lat) < 1e-12 and abs(err_lon) < 1e-12:
            break
    return w_lat, w_lon
