"""The demo feed: simulated grid workers file reports through the real service path."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from aiohttp.test_utils import TestClient

from dispatchd.channels.reports.demo import (
    HOURLY_WEIGHTS,
    ensure_workers,
    expected_per_hour,
    file_one,
    run_demo,
)
from dispatchd.domain.orgs import OrgTree


def test_daily_rhythm_peaks_in_daytime() -> None:
    """A demo day adds up to the configured count, mostly in working hours and little at night."""
    hours = expected_per_hour(30)
    assert abs(sum(hours) - 30) < 1e-9 and len(HOURLY_WEIGHTS) == 24
    assert max(range(24), key=hours.__getitem__) in range(8, 18)
    assert sum(hours[0:6]) < 0.05 * 30
    assert sum(hours[8:18]) > 0.6 * 30


async def test_demo_workers_file_cases_in_their_township(
    client: TestClient[Any, Any], app_of: Any, org_tree: OrgTree
) -> None:
    """One demo grid worker per township is created once; its reports become grid_report cases of that township."""
    ctx = app_of(client)
    workers = await ensure_workers(ctx)
    assert len(workers) == len(org_tree.units_at("township"))
    again = await ensure_workers(ctx)
    assert [w.user.id for w in again] == [w.user.id for w in workers]
    rng = random.Random(7)
    worker = workers[0]
    incident_id = await file_one(ctx, worker, rng)
    async with ctx.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM incidents WHERE id = $1", incident_id)
    township = org_tree.ancestor_at(worker.user.org, "township")
    assert row["channel"] == "grid_report" and row["reporter_id"] == worker.user.id
    assert row["grid"] in worker.grids and row["owner_unit"] == township


async def test_demo_feed_files_reports_by_itself(make_client: Any, app_of: Any) -> None:
    """The feed, sped up, files reports by itself until it is cancelled."""
    client = await make_client(demo_speed=10000, reports_demo_per_day=30)
    ctx = app_of(client)
    task = asyncio.create_task(run_demo(ctx))
    found = 0
    try:
        for _ in range(200):  # bounded poll for I/O, no timing asserted
            async with ctx.pool.acquire() as conn:
                found = await conn.fetchval(
                    "SELECT count(*) FROM incidents i JOIN users u ON u.id = i.reporter_id"
                    " WHERE u.username LIKE 'demo-grid-%' AND i.channel = 'grid_report'"
                )
            if found:
                break
            await asyncio.sleep(0.05)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert found >= 1
