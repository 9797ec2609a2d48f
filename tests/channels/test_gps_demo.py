"""The squad demo: simulated squads report over the real JT/T 808 and OsmAnd ports and move on the streets."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from dispatchd.channels.gps.demo import DEMO_SQUADS, Walker, run_demo, street_graph
from tests.conftest import COUNTY, UserFactory
from tests.units.helpers import eventually


def test_walker_stays_on_the_grid_edges(org_tree: Any) -> None:
    """A walk along Mayu's grid edges ends each leg on a vertex of the street graph, next to the last one."""
    import random

    graph = street_graph(org_tree, "330381116")
    walker = Walker(graph, random.Random(1), 20.0)
    visited = [walker.here]
    for _ in range(200):
        walker.advance(30, 20.0)
        if walker.previous is not None and walker.previous != visited[-1]:
            assert walker.previous in graph[visited[-1]]
            visited.append(walker.previous)
    assert len(visited) > 10
    assert all(p in graph for p in visited)


async def test_demo_squads_report_over_both_protocols(
    client: TestClient[Any, Any], make_user: UserFactory, app_of: Any
) -> None:
    """The demo feed gives every demo unit a position, from JT/T 808 and from OsmAnd devices."""
    ctx = app_of(client)
    duty = await make_user("duty_officer", COUNTY)
    demo = asyncio.create_task(run_demo(ctx, speed=100))

    async def all_positioned() -> list[dict[str, Any]] | None:
        r = await client.get("/api/v1/units", headers=duty.headers)
        units: list[dict[str, Any]] = (await r.json())["units"]
        if len(units) == len(DEMO_SQUADS) and all(u["position"] for u in units):
            return units
        return None

    try:
        units = await eventually(all_positioned, within=30)
    finally:
        demo.cancel()
        await asyncio.gather(demo, return_exceptions=True)
    assert {u["position"]["source"] for u in units} == {"jt808", "osmand"}
    assert {u["kind"] for u in units} == {"vehicle", "team", "motorbike", "ebike", "person"}
