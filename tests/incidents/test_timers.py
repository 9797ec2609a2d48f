"""Deadline timers in PostgreSQL, fired by the single clock: warning, overdue, automatic escalation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp.test_utils import TestClient

from dispatchd.clock import FakeClock
from dispatchd.context import Context
from dispatchd.domain.orgs import OrgTree
from dispatchd.incidents.timers import fire_due
from tests.conftest import AppFactory, UserFactory
from tests.incidents.helpers import COUNTY, TOWN, act, fetch, report

AppOf = Callable[[TestClient[Any, Any]], Context]


async def test_deadline_warns_then_overdue_then_parent_unit_owns_it(
    client: TestClient[Any, Any], app_of: AppOf, clock: FakeClock, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """A P1 case left unaccepted is warned at 80 %, overdue at 5 min and, after the grace, owned by the county."""
    officer = await make_user("duty_officer", TOWN)
    county = await make_user("duty_officer", COUNTY)
    ctx = app_of(client)
    case = await report(client, officer, org_tree, priority="P1")
    assert case["deadline"]["step"] == "accept" and case["overdue"] is False

    clock.advance(3 * 60)
    await fire_due(ctx)
    case = await fetch(client, officer, case["id"])
    assert case["deadline"]["warned"] is False and case["overdue"] is False

    clock.advance(60)  # 4 min: 80 % of the 5-minute accept limit
    await fire_due(ctx)
    case = await fetch(client, officer, case["id"])
    assert case["deadline"]["warned"] is True and case["overdue"] is False

    clock.advance(60)  # 5 min: the limit
    await fire_due(ctx)
    case = await fetch(client, officer, case["id"])
    assert case["overdue"] is True and case["owner_unit"] == TOWN
    overdue_list = await (await client.get("/api/v1/incidents?overdue=true", headers=officer.headers)).json()
    assert [c["id"] for c in overdue_list["items"]] == [case["id"]]

    clock.advance(ctx.settings.incidents.escalate_grace)
    await fire_due(ctx)
    case = await fetch(client, county, case["id"])
    assert case["owner_unit"] == COUNTY and case["org_path"][-1] == COUNTY
    assert case["state"] == "reported" and case["overdue"] is True and case["version"] == 2
    actions = [(e["action"], e["actor"]) for e in case["timeline"]]
    assert actions == [
        ("report", officer.user.username),
        ("deadline_warning", "system"),
        ("deadline_overdue", "system"),
        ("escalate", "system"),
    ]
    assert case["timeline"][-1]["data"]["to_unit"] == COUNTY
    assert await fire_due(ctx) == 0  # nothing fires twice


async def test_finishing_a_step_stops_its_clock(
    client: TestClient[Any, Any], app_of: AppOf, clock: FakeClock, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Accepting in time cancels the accept timers; the dispatch clock runs from the acceptance."""
    officer = await make_user("duty_officer", TOWN)
    ctx = app_of(client)
    case = await report(client, officer, org_tree, priority="P1")
    clock.advance(2 * 60)
    case = await act(client, officer, case, "accept")
    assert case["deadline"]["step"] == "dispatch"
    clock.advance(4 * 60)  # the accept deadline has passed, the 10-minute dispatch one has not
    await fire_due(ctx)
    case = await fetch(client, officer, case["id"])
    assert case["overdue"] is False and case["owner_unit"] == TOWN
    clock.advance(6 * 60)
    await fire_due(ctx)
    case = await fetch(client, officer, case["id"])
    assert case["overdue"] is True and case["ever_overdue"] is True
    case = await act(client, officer, case, "dispatch", department="330381001-SFS")
    assert case["overdue"] is False and case["ever_overdue"] is True and case["deadline"]["step"] == "start"


async def test_timers_survive_a_restart_and_fire_once_across_instances(
    make_client: AppFactory, app_of: AppOf, clock: FakeClock, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Timers written by one instance are fired by others after it stops, each exactly once."""
    officer = await make_user("duty_officer", TOWN)
    first = await make_client()
    case = await report(first, officer, org_tree, priority="P1")
    await first.close()
    second, third = await make_client(), await make_client()
    clock.advance(5 * 60)
    await asyncio.gather(fire_due(app_of(second)), fire_due(app_of(third)))
    case = await fetch(second, officer, case["id"])
    actions = [e["action"] for e in case["timeline"]]
    assert actions == ["report", "deadline_warning", "deadline_overdue"]
    assert case["overdue"] is True
