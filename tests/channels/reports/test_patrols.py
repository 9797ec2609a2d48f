"""The patrol log (网格日志): start, track points, places visited, stop, and daily compliance."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from dispatchd.channels.reports.patrols import PatrolRule, local_days, track_length_m
from dispatchd.clock import FakeClock
from dispatchd.domain.orgs import OrgTree
from tests.channels.reports.helpers import GRID, TOWN, point_in
from tests.conftest import Account, UserFactory

RULE = PatrolRule(per_day=2, min_duration=timedelta(hours=2))


def test_rule_counts_long_enough_patrols() -> None:
    """Two patrols of at least two hours meet the Taizhou rule; shorter ones do not count."""
    two_hours = timedelta(hours=2)
    assert RULE.met([two_hours, two_hours + timedelta(minutes=5)])
    assert not RULE.met([two_hours, timedelta(hours=1, minutes=59)])
    assert not RULE.met([timedelta(hours=6)])
    assert RULE.met([timedelta(minutes=10), two_hours, two_hours])


def test_track_length_and_local_days() -> None:
    """A track's length sums its legs; a period's local days stop at today (UTC+8)."""
    assert track_length_m([(27.78, 120.65)]) == 0
    leg = track_length_m([(27.78, 120.65), (27.79, 120.65)])
    assert 1100 < leg < 1125  # 0.01° of latitude
    assert abs(track_length_m([(27.78, 120.65), (27.79, 120.65), (27.78, 120.65)]) - 2 * leg) < 1e-6
    start = datetime(2026, 5, 1, 16, 0, tzinfo=UTC)  # 2 May local
    end = datetime(2026, 5, 10, 16, 0, tzinfo=UTC)
    assert local_days(start, end, date(2026, 5, 5)) == (date(2026, 5, 2), date(2026, 5, 5))
    assert local_days(start, end, date(2026, 4, 30)) is None


async def patrol(
    client: TestClient[Any, Any], clock: FakeClock, who: Account, hours: float, tree: OrgTree
) -> dict[str, Any]:
    """One whole patrol of ``hours`` with two track points; returns it after stopping."""
    resp = await client.post("/api/v1/patrols", json={"notes": "出发"}, headers=who.headers)
    started = await resp.json()
    assert resp.status == 201, started
    lat, lon = point_in(tree, GRID)
    points = [
        {"lat": lat, "lon": lon, "at": clock.now().isoformat(), "accuracy": 8},
        {"lat": lat + 0.001, "lon": lon, "at": (clock.now() + timedelta(minutes=30)).isoformat()},
    ]
    clock.advance(timedelta(hours=hours))
    resp = await client.post(
        f"/api/v1/patrols/{started['id']}/points", json={"points": points}, headers=who.headers
    )
    assert resp.status == 200, await resp.text()
    resp = await client.post(
        f"/api/v1/patrols/{started['id']}/stop", json={"notes": "无异常"}, headers=who.headers
    )
    stopped: dict[str, Any] = await resp.json()
    assert resp.status == 200, stopped
    return stopped


async def test_a_patrol_with_track_and_visits(
    client: TestClient[Any, Any], make_user: UserFactory, clock: FakeClock, org_tree: OrgTree
) -> None:
    """A patrol records its track (resent points once), places visited and notes; it runs alone and stops once."""
    worker = await make_user("grid_worker", GRID)
    started = await (await client.post("/api/v1/patrols", json={}, headers=worker.headers)).json()
    assert started["running"] is True and started["org"] == GRID and started["local_day"] == "2026-05-03"
    resp = await client.post("/api/v1/patrols", json={}, headers=worker.headers)
    assert resp.status == 409 and (await resp.json())["error"]["patrol"]["id"] == started["id"]

    lat, lon = point_in(org_tree, GRID)
    clock.advance(600)
    batch = {
        "points": [
            {"lat": lat, "lon": lon, "at": clock.now().isoformat()},
            {"lat": lat + 0.002, "lon": lon, "at": (clock.now() + timedelta(seconds=1)).isoformat()},
        ]
    }
    url = f"/api/v1/patrols/{started['id']}"
    first = await (await client.post(f"{url}/points", json=batch, headers=worker.headers)).json()
    again = await (await client.post(f"{url}/points", json=batch, headers=worker.headers)).json()
    assert (first["stored"], again["stored"], again["points"]) == (2, 0, 2)
    stale = {"points": [{"lat": lat, "lon": lon, "at": "2026-05-02T08:00:00+08:00"}]}
    resp = await client.post(f"{url}/points", json=stale, headers={**worker.headers, "Accept-Language": "en"})
    assert resp.status == 422 and "points[0].at" in (await resp.json())["error"]["fields"]

    visit = {
        "place": "万松路 12 号出租房",
        "location": {"lat": lat, "lon": lon},
        "note": "新入住 3 人，已登记",
    }
    resp = await client.post(f"{url}/visits", json=visit, headers=worker.headers)
    assert resp.status == 201

    other = await make_user("grid_worker", GRID)
    assert (await client.post(f"{url}/points", json=batch, headers=other.headers)).status == 404

    clock.advance(timedelta(hours=2))
    stopped = await (
        await client.post(f"{url}/stop", json={"notes": "巡查结束"}, headers=worker.headers)
    ).json()
    assert stopped["running"] is False and stopped["counts"] is True
    assert stopped["duration_s"] == 2 * 3600 + 600 and 200 < stopped["distance_m"] < 240
    again_stopped = await (await client.post(f"{url}/stop", json={}, headers=worker.headers)).json()
    assert again_stopped == stopped
    assert (await client.post(f"{url}/points", json=batch, headers=worker.headers)).status == 409

    officer = await make_user("duty_officer", TOWN)
    full = await (await client.get(url, headers=officer.headers)).json()
    assert (
        full["track"]["geometry"]["type"] == "LineString"
        and len(full["track"]["geometry"]["coordinates"]) == 2
    )
    assert full["visits"][0]["place"] == "万松路 12 号出租房" and full["notes"] == "巡查结束"
    stranger = await make_user("duty_officer", "330381002")
    assert (await client.get(url, headers=stranger.headers)).status == 404


async def test_daily_compliance_in_statistics(
    client: TestClient[Any, Any], make_user: UserFactory, clock: FakeClock, org_tree: OrgTree
) -> None:
    """Two patrols of two hours make a compliant day; one does not; the statistics show the rate."""
    diligent = await make_user("grid_worker", GRID)
    lax = await make_user("grid_worker", GRID)
    await patrol(client, clock, diligent, 2, org_tree)
    await patrol(client, clock, diligent, 2.5, org_tree)
    await patrol(client, clock, lax, 3, org_tree)
    await patrol(client, clock, lax, 1, org_tree)  # too short to count
    officer = await make_user("duty_officer", TOWN)

    compliance = await (
        await client.get(
            f"/api/v1/patrols/compliance?org={TOWN}&from=2026-05-03&to=2026-05-03", headers=officer.headers
        )
    ).json()
    by_user = {w["username"]: w for w in compliance["workers"]}
    assert by_user[diligent.user.username]["compliant_days"] == 1
    assert by_user[lax.user.username]["compliant_days"] == 0
    assert by_user[lax.user.username]["patrols"] == 2 and by_user[lax.user.username]["counting_patrols"] == 1
    assert compliance["rule"] == {"patrols_per_day": 2, "min_hours": 2.0}
    assert compliance["compliance_rate"] == 0.5

    stats = await (
        await client.get(f"/api/v1/stats?org={TOWN}&from=2026-05-03&to=2026-05-03", headers=officer.headers)
    ).json()
    section = stats["patrols"]
    assert (section["grid_workers"], section["worker_days"], section["compliant_worker_days"]) == (2, 2, 1)
    assert section["compliance_rate"] == 0.5 and "workers" not in section
    community = next(u for u in section["by_unit"] if u["code"] == "330381001001")
    assert community["grid_workers"] == 2

    mine = await (await client.get("/api/v1/patrols/compliance", headers=lax.headers)).json()
    assert [w["username"] for w in mine["workers"]] == [lax.user.username]


async def test_rule_comes_from_settings(
    make_client: Any, make_user: UserFactory, clock: FakeClock, org_tree: OrgTree
) -> None:
    """A one-patrol-of-an-hour rule makes a single hour's patrol compliant."""
    client = await make_client(reports_patrols_per_day=1, reports_patrol_min_hours=1.0)
    worker = await make_user("grid_worker", GRID)
    assert (await patrol(client, clock, worker, 1, org_tree))["counts"] is True
    compliance = await (await client.get("/api/v1/patrols/compliance", headers=worker.headers)).json()
    assert compliance["workers"][0]["compliant_days"] == 1
