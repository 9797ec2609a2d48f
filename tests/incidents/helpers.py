"""Places and helpers shared by the case tests."""

from __future__ import annotations

from typing import Any

import shapely
from aiohttp.test_utils import TestClient

from dispatchd.domain.orgs import OrgTree
from tests.conftest import Account

COUNTY = "330381"
TOWN = "330381001"
OTHER_TOWN = "330381002"
COMMUNITY = "330381001001"
GRID = "330381001001G001"
OTHER_GRID = "330381002001G001"
JUSTICE = "330381001-SFS"  # the township's justice office (司法所)
POLICE = "330381001-PCS"  # the township's police station (派出所)


def point_in(tree: OrgTree, grid: str) -> tuple[float, float]:
    """A WGS-84 point (lat, lon) well inside ``grid``."""
    boundary = tree.get(grid).boundary
    assert boundary is not None
    point = shapely.Polygon(boundary).representative_point()
    return float(point.y), float(point.x)


async def report(
    client: TestClient[Any, Any],
    who: Account,
    tree: OrgTree,
    *,
    grid: str = GRID,
    expect: int = 201,
    **fields: Any,
) -> dict[str, Any]:
    """POST a case placed in ``grid``; returns the answer's JSON."""
    lat, lon = point_in(tree, grid)
    body: dict[str, Any] = {
        "category": "incident.dispute",
        "description": "两户村民因宅基地界址发生争执",
        "location": {"lat": lat, "lon": lon},
    }
    body.update(fields)
    resp = await client.post("/api/v1/incidents", json=body, headers=who.headers)
    data: dict[str, Any] = await resp.json()
    assert resp.status == expect, data
    return data


async def act(
    client: TestClient[Any, Any],
    who: Account,
    case: dict[str, Any] | int,
    action: str,
    *,
    version: int | None = None,
    expect: int = 200,
    **fields: Any,
) -> dict[str, Any]:
    """POST one action on a case (at the case's version unless given); returns the answer's JSON."""
    incident_id = case if isinstance(case, int) else case["id"]
    if version is None:
        assert isinstance(case, dict)
        version = case["version"]
    resp = await client.post(
        f"/api/v1/incidents/{incident_id}/actions/{action}",
        json={"version": version, **fields},
        headers=who.headers,
    )
    data: dict[str, Any] = await resp.json()
    assert resp.status == expect, data
    return data


async def fetch(
    client: TestClient[Any, Any], who: Account, incident_id: int, expect: int = 200
) -> dict[str, Any]:
    """GET a case."""
    resp = await client.get(f"/api/v1/incidents/{incident_id}", headers=who.headers)
    data: dict[str, Any] = await resp.json()
    assert resp.status == expect, data
    return data
