"""The disk under grid reports: temporary files swept, photo allowances per user (429), a free-space
floor below which photos are refused (507) while text reports go on."""

from __future__ import annotations

import os
import time
from typing import Any

from dispatchd.channels.reports.media import MediaStore, UploadAllowance
from dispatchd.channels.reports.slots import MEDIA
from dispatchd.clock import FakeClock
from dispatchd.domain.orgs import OrgTree
from dispatchd.web.appkeys import CTX
from tests.channels.reports.helpers import GRID, form, png, report_body, submit
from tests.conftest import AppFactory, UserFactory


def test_allowance_refills_over_the_hour() -> None:
    """Past its photos an hour a user waits; the wait is the time until one photo's worth refills."""
    allowance = UploadAllowance(photos_per_hour=2, bytes_per_hour=10_000_000)
    assert allowance.wait(1, 0.0) == 0
    allowance.spend(1, 1000, 0.0)
    allowance.spend(1, 1000, 0.0)
    assert allowance.wait(1, 0.0) == 1800.0
    assert allowance.wait(2, 0.0) == 0  # another user is not affected
    assert allowance.wait(1, 1800.0) == 0


def test_allowance_counts_bytes_too() -> None:
    """A user who sent their megabytes for the hour waits even with photos left."""
    allowance = UploadAllowance(photos_per_hour=100, bytes_per_hour=1000)
    allowance.spend(1, 1500, 0.0)
    assert allowance.wait(1, 0.0) > 0
    assert allowance.wait(1, 3600.0) == 0


def test_sweep_removes_only_stale_temporary_files(tmp_path: Any) -> None:
    """Temporary files older than the cut-off go; fresh ones (a request in flight) stay."""
    store = MediaStore(tmp_path / "media")
    store.prepare()
    old, fresh = store.tmp_dir / "old.part", store.tmp_dir / "fresh.part"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    assert store.sweep(time.time() - 3600) == 1
    assert not old.exists() and fresh.exists()


async def test_photos_past_the_hourly_allowance_are_429(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree, clock: FakeClock
) -> None:
    """Past photos_per_hour a report with a photo is 429 with Retry-After; text alone is still taken;
    an hour later photos are taken again."""
    client = await make_client(reports_photos_per_hour=2)
    worker = await make_user("grid_worker", GRID)
    await submit(client, worker, form(report_body(org_tree), [("a.png", png(), "image/png")] * 2))
    _, body = await submit(client, worker, form(report_body(org_tree), [("b.png", png(), "image/png")]), expect=429)
    assert body["error"]["code"] == "photo_rate_exceeded"
    await submit(client, worker, report_body(org_tree))
    await submit(client, worker, form(report_body(org_tree)))
    clock.advance(3600)
    await submit(client, worker, form(report_body(org_tree), [("c.png", png(), "image/png")]))


async def test_below_the_free_space_floor_photos_are_507_and_text_goes_on(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree, app_of: Any
) -> None:
    """With less free space than min_free_mb, a photo is refused with 507 and leaves nothing in
    media/tmp; a report without photos is still created."""
    client = await make_client(reports_min_free_mb=1e9)
    worker = await make_user("grid_worker", GRID)
    _, body = await submit(client, worker, form(report_body(org_tree), [("a.png", png(), "image/png")]), expect=507)
    assert body["error"]["code"] == "disk_nearly_full"
    store = client.server.app[CTX][MEDIA]
    assert list(store.tmp_dir.glob("*.part")) == []
    await submit(client, worker, report_body(org_tree))
