"""Places and helpers shared by the case tests."""

from __future__ import annotations

import shapely

from dispatchd.domain.orgs import OrgTree

COUNTY = "330381"
TOWN = "330381001"
OTHER_TOWN = "330381002"
COMMUNITY = "330381001001"
GRID = "330381001001G001"
OTHER_GRID = "330381002001G001"


def point_in(tree: OrgTree, grid: str) -> tuple[float, float]:
    """A WGS-84 point (lat, lon) well inside ``grid``."""
    boundary = tree.get(grid).boundary
    assert boundary is not None
    point = shapely.Polygon(boundary).representative_point()
    return float(point.y), float(point.x)
