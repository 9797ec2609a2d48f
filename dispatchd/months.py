"""The monthly partitions of the tables partitioned by time (migrations 0016 and 0017,
:mod:`dispatchd.store.partitions`): the squads' track (``track_points``) and the audit log
(``audit_log``).

Each instance runs the round at start and every :data:`ROUND_EVERY` seconds, one at a time per
table (an advisory lock): the months from now to :data:`MONTHS_AHEAD` ahead exist; the track's
months that ended before ``[units] track_retention_days`` are dropped whole (and older stray rows
deleted). The audit log is kept: none of its months is dropped here.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

import structlog

from dispatchd.context import Context
from dispatchd.store import partitions
from dispatchd.tasks import every

log = structlog.get_logger("dispatchd.store")

MONTHS_AHEAD: Final = 2
ROUND_EVERY: Final = 6 * 3600.0


def retention_days(ctx: Context) -> dict[str, int]:
    """Days each partitioned table keeps (0: every month)."""
    return {"track_points": ctx.settings.units.track_retention_days, "audit_log": 0}


async def months_round(ctx: Context) -> dict[str, tuple[list[str], list[str], int]]:
    """One round over every partitioned table: {table: (months made, months dropped, stray rows
    deleted)}."""
    now = ctx.clock.now()
    done: dict[str, tuple[list[str], list[str], int]] = {}
    async with ctx.pool.acquire() as conn:
        for table, days in retention_days(ctx).items():
            made = await partitions.ensure_months(conn, table, now, MONTHS_AHEAD)
            dropped: list[str] = []
            deleted = 0
            if days > 0:
                dropped, deleted = await partitions.drop_before(conn, table, now - timedelta(days=days))
            if made or dropped or deleted:
                log.info("partition_months", table=table, made=made, dropped=dropped, stray_rows_deleted=deleted)
            done[table] = (made, dropped, deleted)
    return done


async def keep_months(ctx: Context, interval: float = ROUND_EVERY) -> None:
    """:func:`months_round` now and every ``interval`` seconds, until cancelled."""
    await every(ctx, interval, lambda: months_round(ctx), "partition_round_failed", logger=log)
