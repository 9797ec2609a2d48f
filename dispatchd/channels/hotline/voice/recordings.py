"""Who may hear a recording, where its files are, and how long they are kept.

A call's recording is ``recordings/<yyyymmdd>/call-<id>.wav`` under the data dir: both sides mixed
(16-bit PCM, 8 kHz), with ``-caller`` and ``-officer`` files beside it when ``[voice] record_legs``
is on. Duty officers and leaders of the hotline's jurisdiction hear every call; anyone who may see
the case a call is linked to (the case's own rule, :func:`dispatchd.incidents.store.visibility_sql`)
hears that call — the department handling it, the grid worker who reported it.

Recordings older than ``[voice] recording_days`` are deleted, a day folder at a time, and the calls
and calls out lose their ``recording``: each of them a change recorded (action
``recording_deleted``, in the audit log only). The calls are the hotline's, around this package, so
:func:`purge` is handed the function that forgets theirs.
"""

from __future__ import annotations

import shutil
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Final

import structlog

from dispatchd.channels.hotline.voice import callouts
from dispatchd.context import Context
from dispatchd.errors import NotFound
from dispatchd.incidents.store import visibility_sql
from dispatchd.store.users import User
from dispatchd.tasks import every

log = structlog.get_logger("dispatchd.voice")

__all__ = ["SIDES", "Forget", "keep_purging", "may_hear", "of_case", "purge", "recording_file"]

SIDES: Final = ("caller", "officer")
HOTLINE_ROLES: Final = ("duty_officer", "leader")
# Forgets the recordings under a folder prefix ("recordings/20260101/") and records each change;
# returns how many rows lost theirs.
Forget = Callable[[Context, str], Awaitable[int]]


async def may_hear(ctx: Context, user: User, row: Mapping[str, Any]) -> bool:
    """The hotline's desk of the call's jurisdiction, or someone who may see its case."""
    if user.role in HOTLINE_ROLES and user.org in ctx.orgs and ctx.orgs.is_within(row["org_code"], user.org):
        return True
    incident = row["incident_id"]
    if incident is None:
        return False
    args: list[Any] = [incident]
    clause = visibility_sql(user, args)
    async with ctx.pool.acquire() as conn:
        found = await conn.fetchval(f"SELECT 1 FROM incidents i WHERE i.id = $1 AND {clause}", *args)
    return found is not None


def recording_file(data_dir: Path, stored: str | None, side: str | None) -> Path:
    """The file of a stored recording path (the mix, or one side); NotFound when there is none."""
    if not stored:
        raise NotFound("录音不存在", "recording not found")
    path = (data_dir / stored).resolve()
    if side is not None:
        if side not in SIDES:
            raise NotFound("录音不存在", "recording not found")
        path = path.with_name(f"{path.stem}-{side}{path.suffix}")
    root = data_dir.resolve()
    if root not in path.parents or not path.is_file():
        raise NotFound("录音不存在", "recording not found")
    return path


async def purge(ctx: Context, now: datetime, forget_calls: Forget) -> int:
    """Delete the day folders older than ``[voice] recording_days``; returns how many. The calls
    (``forget_calls``) and calls out of each lose their recording before its files go."""
    days = ctx.settings.voice.recording_days
    if days <= 0:
        return 0
    folder = ctx.settings.data.dir / "recordings"
    if not folder.is_dir():
        return 0
    cutoff = (now - timedelta(days=days)).strftime("%Y%m%d")
    removed = 0
    for day in sorted(p for p in folder.iterdir() if p.is_dir() and p.name.isdigit() and len(p.name) == 8):
        if day.name >= cutoff:
            break
        prefix = f"recordings/{day.name}/"
        await forget_calls(ctx, prefix)
        await callouts.forget_recordings(ctx, prefix)
        shutil.rmtree(day, ignore_errors=True)
        removed += 1
        log.info("recordings_purged", day=day.name, kept_days=days)
    return removed


async def of_case(ctx: Context, incident_id: int, user: User) -> list[dict[str, Any]]:
    """The recorded calls in and out of a case the user may see, newest first, with their urls."""
    args: list[Any] = [incident_id]
    clause = visibility_sql(user, args)
    async with ctx.pool.acquire() as conn:
        if await conn.fetchval(f"SELECT 1 FROM incidents i WHERE i.id = $1 AND {clause}", *args) is None:
            raise NotFound("案件不存在", "case not found")
        calls = await conn.fetch(
            "SELECT id, caller AS number, answered_at AS at FROM hotline_calls"
            " WHERE incident_id = $1 AND recording IS NOT NULL",
            incident_id,
        )
        outs = await conn.fetch(
            "SELECT id, number, answered_at AS at FROM voice_callouts WHERE incident_id = $1 AND recording IS NOT NULL",
            incident_id,
        )
    items = [
        {
            "kind": "call",
            "id": r["id"],
            "number": r["number"],
            "at": r["at"],
            "url": f"/api/v1/hotline/calls/{r['id']}/recording",
        }
        for r in calls
    ] + [
        {
            "kind": "callout",
            "id": r["id"],
            "number": r["number"],
            "at": r["at"],
            "url": f"/api/v1/hotline/callouts/{r['id']}/recording",
        }
        for r in outs
    ]
    items.sort(key=lambda item: (item["at"] is not None, item["at"]), reverse=True)
    return [{**item, "at": item["at"].isoformat() if item["at"] else None} for item in items]


async def keep_purging(ctx: Context, forget_calls: Forget, interval: float = 3600.0) -> None:
    """:func:`purge` now and every ``interval`` seconds, until cancelled."""
    await every(ctx, interval, lambda: purge(ctx, ctx.clock.now(), forget_calls), "recordings_purge_failed", logger=log)
