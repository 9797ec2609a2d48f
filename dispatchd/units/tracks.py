"""The track's months: ``track_points`` is partitioned by month of the fix time (migration 0016,
:mod:`dispatchd.store.partitions`). Each instance runs the round at start and every
:data:`ROUND_EVERY` seconds (one at a time, by an advisory lock): the months from now to
:data:`MONTHS_AHEAD` ahead exist, and with ``[units] track_retention_days`` the months that ended
before the retention are dropped whole (and older stray rows deleted)."""

from __future__ import annotations

from datetime import timedelta
from typing import Final

import structlog

from dispatchd.context import Context
from dispatchd.store import partitions
from dispatchd.tasks import every

log = structlog.get_logger("dispatchd.units")

TABLE: Final = "track_points"
MONTHS_AHEAD: Final = 2
ROUND_EVERY: Final = 6 * 3600.0


async def track_round(ctx: Context) -> tuple[list[str], list[str], int]:
    """One round: (months made, months dropped, stray rows deleted)."""
    now = ctx.clock.now()
    async with ctx.pool.acquire() as conn:
        made = await partitions.ensure_months(conn, TABLE, now, MONTHS_AHEAD)
        dropped: list[str] = []
        deleted = 0
        days = ctx.settings.units.track_retention_days
        if days > 0:
            dropped, deleted = await partitions.drop_before(conn, TABLE, now - timedelta(days=days))
    if made or dropped or deleted:
        log.info("track_months", made=made, dropped=dropped, stray_rows_deleted=deleted)
    return made, dropped, deleted


async def keep_track_months(ctx: Context, interval: float = ROUND_EVERY) -> None:
    """:func:`track_round` now and every ``interval`` seconds, until cancelled."""
    await every(ctx, interval, lambda: track_round(ctx), "track_round_failed", logger=log)
