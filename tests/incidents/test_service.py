"""The case service called directly, on the real PostgreSQL: create, transition, read."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from dispatchd.context import Context
from dispatchd.domain.orgs import OrgTree
from dispatchd.errors import NotFound
from dispatchd.incidents.service import apply_action, attach_report, create_incident, get_incident
from tests.conftest import UserFactory
from tests.incidents.helpers import GRID, TOWN, point_in

AppOf = Callable[[TestClient[Any, Any]], Context]


async def test_create_routes_to_the_township_of_the_grid(
    client: TestClient[Any, Any], app_of: AppOf, org_tree: OrgTree, make_user: UserFactory
) -> None:
    """A case created by point lands in its grid, is owned by the grid's township and has a number."""
    officer = await make_user("duty_officer", TOWN)
    lat, lon = point_in(org_tree, GRID)
    ctx = app_of(client)
    case = await create_incident(
        ctx,
        category="incident.dispute",
        description="邻里纠纷",
        channel="officer",
        lat=lat,
        lon=lon,
        actor=officer.user,
    )
    assert case["state"] == "reported" and case["version"] == 1
    assert case["grid"]["code"] == GRID and case["owner_unit"] == TOWN
    assert case["number"].startswith("RA20260503-")
    assert [e["action"] for e in case["timeline"]] == ["report"]
    assert case["deadline"]["step"] == "accept"
    again = await get_incident(ctx, case["id"], officer.user)
    assert again == case
    accepted = await apply_action(ctx, case["id"], "accept", {"version": 1}, officer.user)
    assert accepted["state"] == "accepted" and accepted["version"] == 2


async def test_attach_report_adds_a_channel_inside_the_callers_transaction(
    client: TestClient[Any, Any], app_of: AppOf, org_tree: OrgTree, make_user: UserFactory
) -> None:
    """A call attached to a case adds its channel with an audit event; a rolled-back caller leaves nothing."""
    officer = await make_user("duty_officer", TOWN)
    ctx = app_of(client)
    lat, lon = point_in(org_tree, GRID)
    case = await create_incident(
        ctx, category="incident.dispute", description="纠纷", channel="grid_report", lat=lat, lon=lon
    )
    case = await attach_report(ctx, case["id"], channel="hotline", actor=officer.user, caller="13800001234")
    assert case["channels"] == ["grid_report", "hotline"] and case["version"] == 2
    assert [e["action"] for e in case["timeline"]] == ["report", "attach"]
    async with ctx.pool.acquire() as conn:
        try:
            async with conn.transaction():
                await create_incident(
                    ctx,
                    category="incident.dispute",
                    description="重复",
                    channel="open311",
                    address="x",
                    conn=conn,
                )
                raise RuntimeError("the caller fails after creating")
        except RuntimeError:
            pass
        assert await conn.fetchval("SELECT count(*) FROM incidents") == 1
        assert await conn.fetchval("SELECT count(*) FROM outbox WHERE topic = 'incident'") == 2
    stranger = await make_user("duty_officer", "330381002")
    with pytest.raises(NotFound):
        await attach_report(ctx, case["id"], channel="hotline", actor=stranger.user)


async def test_audit_trail_is_append_only(client: TestClient[Any, Any], app_of: AppOf) -> None:
    """The database refuses to change or delete an audit event."""
    ctx = app_of(client)
    case = await create_incident(
        ctx, category="hazard.fire", description="楼道堆物", channel="walk_in", address="x"
    )
    async with ctx.pool.acquire() as conn:
        for sql in ("UPDATE audit_log SET note = 'x'", "DELETE FROM audit_log"):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute(sql)
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM audit_log WHERE entity = 'incident' AND entity_id = $1", str(case["id"])
            )
            == 1
        )
