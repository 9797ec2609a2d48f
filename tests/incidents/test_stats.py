"""Statistics per unit and period, as JSON and CSV, limited to the caller's jurisdiction."""

from __future__ import annotations

import csv
import io
from typing import Any

from aiohttp.test_utils import TestClient

from dispatchd.clock import FakeClock
from dispatchd.domain.orgs import OrgTree
from dispatchd.incidents.stats import register_section
from dispatchd.web.appkeys import CTX
from tests.conftest import UserFactory
from tests.incidents.helpers import COMMUNITY, COUNTY, JUSTICE, OTHER_GRID, OTHER_TOWN, TOWN, act, report


async def _closed_loop(
    client: TestClient[Any, Any], clock: FakeClock, make_user: UserFactory, tree: OrgTree
) -> int:
    officer = await make_user("duty_officer", TOWN)
    case = await report(client, officer, tree)
    clock.advance(600)
    case = await act(client, officer, case, "accept")
    clock.advance(600)
    case = await act(client, officer, case, "dispatch", department=JUSTICE)
    case = await act(client, officer, case, "start")
    case = await act(client, officer, case, "feedback", note="已调解")
    case = await act(client, officer, case, "verify")
    clock.advance(1800)
    case = await act(client, officer, case, "close")
    case = await act(client, officer, case, "evaluate", satisfaction=4)
    return int(case["id"])


async def test_statistics_show_the_case(
    client: TestClient[Any, Any], clock: FakeClock, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """After one full loop and one rejected report the township's figures count them, per unit and department."""
    await _closed_loop(client, clock, make_user, org_tree)
    officer = await make_user("duty_officer", TOWN)
    rejected = await report(client, officer, org_tree, channel="hotline", category="hazard.fire")
    await act(client, officer, rejected, "reject", reason="无效报告")
    resp = await client.get(
        f"/api/v1/stats?org={TOWN}&from=2026-05-01&to=2026-05-03", headers=officer.headers
    )
    assert resp.status == 200, await resp.text()
    stats = await resp.json()
    assert stats["org"]["code"] == TOWN
    assert (stats["received"], stats["accepted"], stats["closed"], stats["rejected"]) == (2, 1, 1, 1)
    assert stats["resolution_rate"] == 1.0
    assert stats["closed_township_or_below"] == 1 and stats["township_or_below_share"] == 1.0
    assert stats["overdue"] == 0 and stats["open"] == 0
    assert stats["median_dispatch_s"] == 1200.0 and stats["median_close_s"] == 3000.0
    assert stats["satisfaction"] == {"evaluated": 1, "mean": 4.0, "satisfied_share": 1.0}
    assert stats["by_channel"] == {"hotline": 1, "officer": 1}
    [dept] = stats["by_department"]
    assert dept["code"] == JUSTICE and dept["received"] == 1 and dept["median_close_s"] == 3000.0
    assert [u["code"] for u in stats["by_unit"]] == [COMMUNITY]
    assert {c["code"] for c in stats["by_category"]} == {"incident.dispute", "hazard.fire"}
    assert stats["previous_year"]["received"] == 0

    county = await make_user("leader", COUNTY)
    whole = await (await client.get("/api/v1/stats", headers=county.headers)).json()
    assert whole["org"]["code"] == COUNTY and whole["received"] == 2
    assert [u["code"] for u in whole["by_unit"]] == [TOWN]
    empty = await (await client.get(f"/api/v1/stats?org={OTHER_TOWN}", headers=county.headers)).json()
    assert empty["received"] == 0 and empty["resolution_rate"] is None


async def test_statistics_limited_to_jurisdiction(
    client: TestClient[Any, Any], clock: FakeClock, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Another township's unit answers 404, and its own figures do not include the case."""
    await _closed_loop(client, clock, make_user, org_tree)
    stranger = await make_user("duty_officer", OTHER_TOWN)
    resp = await client.get(f"/api/v1/stats?org={TOWN}", headers=stranger.headers)
    assert resp.status == 404
    own = await (await client.get("/api/v1/stats", headers=stranger.headers)).json()
    assert own["received"] == 0
    await report(client, stranger, org_tree, grid=OTHER_GRID)
    own = await (await client.get("/api/v1/stats", headers=stranger.headers)).json()
    assert own["received"] == 1


async def test_statistics_as_csv(
    client: TestClient[Any, Any], clock: FakeClock, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """The CSV export carries the same figures: one total row, one per child unit and per department."""
    await _closed_loop(client, clock, make_user, org_tree)
    officer = await make_user("duty_officer", TOWN)
    for url in ("/api/v1/stats.csv", "/api/v1/stats?format=csv"):
        resp = await client.get(url, headers=officer.headers)
        assert resp.status == 200 and resp.content_type == "text/csv"
        rows = list(csv.DictReader(io.StringIO((await resp.read()).decode("utf-8-sig"))))
        assert [(r["section"], r["code"]) for r in rows] == [
            ("total", TOWN),
            ("unit", COMMUNITY),
            ("department", JUSTICE),
        ]
        assert rows[0]["received"] == "1" and rows[0]["resolution_rate"] == "1.0"
        assert rows[0]["satisfaction_mean"] == "4.0"


async def test_statistics_bad_period(client: TestClient[Any, Any], make_user: UserFactory) -> None:
    """A malformed or reversed period answers 422; an unknown unit 404."""
    officer = await make_user("duty_officer", TOWN)
    for query in ("from=yesterday", "from=2026-05-03&to=2026-05-01", "format=xml"):
        resp = await client.get(f"/api/v1/stats?{query}", headers=officer.headers)
        assert resp.status == 422, query
    resp = await client.get("/api/v1/stats?org=nowhere", headers=officer.headers)
    assert resp.status == 404


async def test_other_capabilities_add_statistics_sections(
    client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """A section registered with register_section appears in the statistics under its name."""
    seen: list[str] = []

    async def patrols(conn: Any, org: str, start: Any, end: Any) -> dict[str, Any]:
        seen.append(org)
        return {"compliant": await conn.fetchval("SELECT 3")}

    register_section(client.server.app[CTX], "patrols", patrols)
    officer = await make_user("duty_officer", TOWN)
    stats = await (await client.get("/api/v1/stats", headers=officer.headers)).json()
    assert stats["patrols"] == {"compliant": 3} and seen == [TOWN]
