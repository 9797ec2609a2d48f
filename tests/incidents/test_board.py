"""The incidents section of the board snapshot."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from dispatchd.domain.orgs import OrgTree
from dispatchd.web.appkeys import CTX
from tests.conftest import UserFactory
from tests.incidents.helpers import OTHER_GRID, OTHER_TOWN, TOWN, act, report


async def test_board_section_shows_open_cases_of_the_jurisdiction(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """The snapshot lists the jurisdiction's open cases, P1 first, with today's counters; closed and
    other townships' cases stay out."""
    officer = await make_user("duty_officer", TOWN)
    stranger = await make_user("duty_officer", OTHER_TOWN)
    routine = await report(client, officer, org_tree, priority="P4", channel="grid_report")
    urgent = await report(client, officer, org_tree, priority="P1", channel="hotline")
    rejected = await report(client, officer, org_tree)
    await act(client, officer, rejected, "reject", reason="无效")
    await report(client, stranger, org_tree, grid=OTHER_GRID)
    section = client.server.app[CTX].board_sections["incidents"]
    snapshot = await section(client.server.app[CTX], org_tree.descendants(TOWN))
    assert [c["id"] for c in snapshot["open"]] == [urgent["id"], routine["id"]]
    counters = snapshot["counters"]
    assert (counters["open"], counters["to_accept"], counters["received_today"]) == (2, 2, 3)
    assert counters["received_today_by_channel"] == {"grid_report": 1, "hotline": 1, "officer": 1}
