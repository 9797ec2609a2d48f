"""The patrol log (网格日志): a grid worker starts and stops a patrol, the phone sends track points
while it runs, places visited are written down with notes; daily compliance per grid worker is
measured against the rule in ``[reports]`` (default: at least two patrols of at least two hours a
day, as Taizhou requires) and shown in the statistics as the ``patrols`` section.

A patrol belongs to the local day (UTC+8) it started on; it counts once it is stopped and lasted
at least ``patrol_min_hours``. Track points are keyed by their time, so a batch sent again after a
lost answer is stored once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any, Final

import asyncpg
import structlog

from dispatchd.channels.reports.service import parse_location, parse_time
from dispatchd.clock import LOCAL_TZ
from dispatchd.config import ReportSettings
from dispatchd.context import Context
from dispatchd.domain.orgs import OrgTree
from dispatchd.domain.patrols import Patrol, PatrolRule, PatrolStopped, local_days, track_length_m
from dispatchd.errors import Conflict, DomainError, invalid, not_found
from dispatchd.store.changes import Actor as ChangeActor
from dispatchd.store.changes import Change, record
from dispatchd.store.orgs import unit_path
from dispatchd.store.users import User

log = structlog.get_logger("dispatchd.patrols")

MAX_POINTS: Final = 1000


def rule_of(settings: ReportSettings) -> PatrolRule:
    return PatrolRule(settings.patrols_per_day, timedelta(hours=settings.patrol_min_hours))


# -- rows -------------------------------------------------------------------------------------------


def patrol_json(row: Mapping[str, Any], rule: PatrolRule, now: datetime) -> dict[str, Any]:
    end = row["ended_at"]
    duration = (end or now) - row["started_at"]
    return {
        "id": row["id"],
        "user_id": row["user_id"],
        "username": row.get("username"),
        "org": row["org_code"],
        "local_day": row["local_day"].isoformat(),
        "started_at": row["started_at"].isoformat(),
        "ended_at": end.isoformat() if end else None,
        "running": end is None,
        "duration_s": round(duration.total_seconds()),
        "counts": end is not None and rule.counts(duration),
        "distance_m": round(row["distance_m"], 1),
        "points": row.get("points", 0),
        "visits": row.get("visits", 0),
        "notes": row["notes"],
        "version": row["version"],
    }


def _visit_json(row: Mapping[str, Any]) -> dict[str, Any]:
    location = {"lat": row["lat"], "lon": row["lon"]} if row["lat"] is not None else None
    return {
        "id": row["id"],
        "at": row["at"].isoformat(),
        "place": row["place"],
        "location": location,
        "note": row["note"],
    }


_SELECT: Final = (
    "SELECT p.*, u.username,"
    " (SELECT count(*) FROM patrol_points t WHERE t.patrol_id = p.id) AS points,"
    " (SELECT count(*) FROM patrol_visits v WHERE v.patrol_id = p.id) AS visits"
    " FROM patrols p JOIN users u ON u.id = p.user_id"
)


def _rule(ctx: Context) -> PatrolRule:
    return rule_of(ctx.settings.reports)


def _not_found() -> DomainError:
    return not_found("巡查", "patrol")


def _stopped() -> Conflict:
    return Conflict(PatrolStopped.message_zh, PatrolStopped.message_en, code="patrol_stopped")


async def _record(
    ctx: Context,
    conn: asyncpg.Connection,
    patrol_id: int,
    action: str,
    user: User,
    *,
    from_state: str | None,
    detail: Mapping[str, Any] | None = None,
    publish: bool = True,
) -> asyncpg.Record:
    """Record a change of a patrol (its row is written); return the row as the API shows it."""
    row = await conn.fetchrow(_SELECT + " WHERE p.id = $1", patrol_id)
    state = Patrol(row["started_at"], row["ended_at"]).state
    now = ctx.clock.now()
    data = patrol_json(row, _rule(ctx), now)
    change = Change.of("patrol", row, action, data, ChangeActor.of(user), now, state=state, from_state=from_state)
    await record(conn, dataclasses.replace(change, detail=detail or {}), publish=publish)
    result: asyncpg.Record = row
    return result


async def _own(conn: asyncpg.Connection, user: User, patrol_id: int) -> asyncpg.Record:
    """The caller's patrol, locked; NotFound for anyone else's."""
    row = await conn.fetchrow("SELECT * FROM patrols WHERE id = $1 FOR UPDATE", patrol_id)
    if row is None or row["user_id"] != user.id:
        raise _not_found()
    result: asyncpg.Record = row
    return result


def _belongs(row: Mapping[str, Any], at: datetime, now: datetime) -> bool:
    try:
        return Patrol(row["started_at"], row["ended_at"]).check_adding(at, now)
    except PatrolStopped:
        raise _stopped() from None


# -- the grid worker's log --------------------------------------------------------------------------


async def start(ctx: Context, user: User, notes: str | None) -> dict[str, Any]:
    """Start a patrol of ``user`` (one running at a time: Conflict with the running one)."""
    now = ctx.clock.now()
    async with ctx.pool.acquire() as conn:
        try:
            async with conn.transaction():
                patrol_id = await conn.fetchval(
                    "INSERT INTO patrols (user_id, org_code, org_path, started_at, local_day, notes)"
                    " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                    user.id,
                    user.org,
                    unit_path(ctx.orgs, user.org),
                    now,
                    now.astimezone(LOCAL_TZ).date(),
                    notes,
                )
                row = await _record(ctx, conn, patrol_id, "start", user, from_state=None)
        except asyncpg.UniqueViolationError:
            running = await conn.fetchrow(_SELECT + " WHERE p.user_id = $1 AND p.ended_at IS NULL", user.id)
            raise Conflict(
                "已有一次巡查正在进行，请先结束它",
                "a patrol is already running; stop it first",
                code="patrol_running",
                extra={"patrol": patrol_json(running, _rule(ctx), now) if running else None},
            ) from None
    log.info("patrol_started", patrol_id=patrol_id)
    return patrol_json(row, _rule(ctx), now)


async def add_points(ctx: Context, user: User, patrol_id: int, points: Sequence[Any]) -> dict[str, Any]:
    """Track points of the caller's running patrol; a batch sent again is stored once."""
    now = ctx.clock.now()
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _own(conn, user, patrol_id)
        errors: dict[str, tuple[str, str]] = {}
        ats: list[datetime] = []
        lats: list[float] = []
        lons: list[float] = []
        accs: list[float | None] = []
        for i, point in enumerate(points):
            name = f"points[{i}]"
            try:
                lat, lon = parse_location(point, name)
                at = parse_time(str(point.get("at", "")) if isinstance(point, dict) else "", f"{name}.at")
            except DomainError as exc:
                errors.update(exc.fields)
                continue
            if not _belongs(row, at, now):
                errors[f"{name}.at"] = ("不在巡查时段内", "lies outside the patrol's time")
                continue
            accuracy = point.get("accuracy")
            if accuracy is not None and (
                not isinstance(accuracy, int | float) or isinstance(accuracy, bool) or accuracy < 0
            ):
                errors[f"{name}.accuracy"] = ("应为非负数（米）", "must be a non-negative number of metres")
                continue
            ats.append(at)
            lats.append(lat)
            lons.append(lon)
            accs.append(float(accuracy) if accuracy is not None else None)
        if errors:
            raise invalid(errors)
        status = await conn.execute(
            "INSERT INTO patrol_points (patrol_id, at, lat, lon, accuracy)"
            " SELECT $1, t.at, t.lat, t.lon, t.acc FROM unnest($2::timestamptz[], $3::float8[], $4::float8[],"
            " $5::real[]) AS t(at, lat, lon, acc) ON CONFLICT (patrol_id, at) DO NOTHING",
            patrol_id,
            ats,
            lats,
            lons,
            accs,
        )
        total = await conn.fetchval("SELECT count(*) FROM patrol_points WHERE patrol_id = $1", patrol_id)
    stored = int(status.rsplit(" ", 1)[-1])
    log.debug("patrol_points", patrol_id=patrol_id, received=len(ats), stored=stored)
    return {"received": len(ats), "stored": stored, "points": total}


async def add_visit(
    ctx: Context,
    user: User,
    patrol_id: int,
    *,
    place: str,
    location: Any | None,
    at_text: str | None,
    note: str | None,
) -> dict[str, Any]:
    """A place visited during the caller's running patrol, with a note (audited)."""
    now = ctx.clock.now()
    lat = lon = None
    if location is not None:
        lat, lon = parse_location(location)
    at = parse_time(at_text, "at") if at_text else now
    place = place.strip()
    if not place:
        raise invalid({"place": ("不能为空", "must not be empty")})
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _own(conn, user, patrol_id)
        if not _belongs(row, at, now):
            raise invalid({"at": ("不在巡查时段内", "lies outside the patrol's time")})
        visit = await conn.fetchrow(
            "INSERT INTO patrol_visits (patrol_id, at, place, lat, lon, note) VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (patrol_id, at, place) DO UPDATE SET note = EXCLUDED.note RETURNING *",
            patrol_id,
            at,
            place,
            lat,
            lon,
            note,
        )
        await _record(
            ctx, conn, patrol_id, "visit", user, from_state="running", detail=_visit_json(visit), publish=False
        )
    return _visit_json(visit)


async def stop(ctx: Context, user: User, patrol_id: int, notes: str | None) -> dict[str, Any]:
    """Stop the caller's patrol; stopping again (a retry) changes nothing."""
    now = ctx.clock.now()
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _own(conn, user, patrol_id)
        stopped = Patrol(row["started_at"], row["ended_at"]).stop(now)
        if stopped is not None:
            points = await conn.fetch(
                "SELECT lat, lon FROM patrol_points WHERE patrol_id = $1 ORDER BY at", patrol_id
            )
            distance = track_length_m([(p["lat"], p["lon"]) for p in points])
            await conn.execute(
                "UPDATE patrols SET ended_at = $2, distance_m = $3, version = version + 1,"
                " notes = CASE WHEN $4::text IS NULL THEN notes"
                " WHEN notes IS NULL THEN $4 ELSE notes || E'\\n' || $4 END WHERE id = $1",
                patrol_id,
                stopped.ended_at,
                distance,
                notes,
            )
            after = await _record(
                ctx, conn, patrol_id, "stop", user, from_state="running", detail={"distance_m": round(distance, 1)}
            )
            log.info(
                "patrol_stopped",
                patrol_id=patrol_id,
                duration_s=round((now - row["started_at"]).total_seconds()),
            )
        else:
            after = await conn.fetchrow(_SELECT + " WHERE p.id = $1", patrol_id)
    return patrol_json(after, _rule(ctx), now)


# -- reading ----------------------------------------------------------------------------------------


async def get_patrol(ctx: Context, viewer: User, patrol_id: int) -> dict[str, Any]:
    """A patrol with its track (GeoJSON) and places visited: its grid worker's, or in the viewer's
    jurisdiction."""
    now = ctx.clock.now()
    async with ctx.pool.acquire() as conn:
        row = await conn.fetchrow(_SELECT + " WHERE p.id = $1", patrol_id)
        if row is None or (row["user_id"] != viewer.id and not ctx.orgs.is_within(row["org_code"], viewer.org)):
            raise _not_found()
        points = await conn.fetch(
            "SELECT at, lat, lon, accuracy FROM patrol_points WHERE patrol_id = $1 ORDER BY at", row["id"]
        )
        visits = await conn.fetch(
            "SELECT * FROM patrol_visits WHERE patrol_id = $1 ORDER BY at, id", row["id"]
        )
    patrol = patrol_json(row, _rule(ctx), now)
    if row["ended_at"] is None:
        patrol["distance_m"] = round(track_length_m([(p["lat"], p["lon"]) for p in points]), 1)
    patrol["track"] = {
        "type": "Feature",
        "geometry": {"type": "LineString", "coordinates": [[p["lon"], p["lat"]] for p in points]},
        "properties": {
            "times": [p["at"].isoformat() for p in points],
            "accuracy": [p["accuracy"] for p in points],
        },
    }
    patrol["visits"] = [_visit_json(v) for v in visits]
    return patrol


def parse_day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise invalid({name: ("应为日期 YYYY-MM-DD", "must be a date YYYY-MM-DD")}) from None


async def list_patrols(
    ctx: Context, user: User, *, org: str | None, day: date | None, limit: int
) -> dict[str, Any]:
    """A grid worker's own patrols, or (``org``) those of the grid workers of a unit in sight."""
    args: list[Any] = []
    if user.role == "grid_worker" and not org:
        args.append(user.id)
        clauses = ["p.user_id = $1"]
    else:
        org = org or user.org
        if org not in ctx.orgs or not ctx.orgs.is_within(org, user.org):
            raise not_found("单位", "unit")
        args.append(org)
        clauses = ["p.org_path @> ARRAY[$1]::text[]"]
    if day is not None:
        args.append(day)
        clauses.append(f"p.local_day = ${len(args)}")
    args.append(limit)
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            _SELECT + f" WHERE {' AND '.join(clauses)} ORDER BY p.started_at DESC LIMIT ${len(args)}", *args
        )
    now = ctx.clock.now()
    return {"items": [patrol_json(r, _rule(ctx), now) for r in rows], "rule": _rule(ctx).as_json()}


# -- compliance ---------------------------------------------------------------------------------------

_WORKERS_SQL: Final = """
SELECT u.id, u.username, u.display_name, u.org_code,
       (u.created_at AT TIME ZONE 'UTC' + interval '8 hours')::date AS first_day,
       count(c.local_day) FILTER (WHERE c.counting >= $5) AS compliant_days,
       bool_or(c.local_day = $6 AND c.counting >= $5) AS compliant_today,
       coalesce(sum(c.patrols), 0)::int AS patrols,
       coalesce(sum(c.counting), 0)::int AS counting_patrols,
       coalesce(sum(c.seconds), 0)::float8 AS seconds
FROM users u
JOIN org_units o ON o.code = u.org_code
LEFT JOIN (
    SELECT user_id, local_day, count(*) AS patrols,
           count(*) FILTER (WHERE ended_at - started_at >= $4) AS counting,
           sum(extract(epoch FROM ended_at - started_at)) AS seconds
    FROM patrols
    WHERE ended_at IS NOT NULL AND local_day BETWEEN $2 AND $3
    GROUP BY user_id, local_day
) c ON c.user_id = u.id
WHERE u.role = 'grid_worker' AND NOT u.disabled AND o.path @> ARRAY[$1]::text[]
GROUP BY u.id
ORDER BY u.org_code, u.username
"""


def duty_days(first: date, last: date, today: date, joined: date, met_today: bool) -> int:
    """The local days of ``first``–``last`` a worker is measured on: from the day they joined, and
    today only once its rule is met (a day under way is not yet missed)."""
    start = max(first, joined)
    end = min(last, today - timedelta(days=1))
    days = max(0, (end - start).days + 1)
    if met_today and start <= today <= last:
        days += 1
    return days


async def compliance(
    conn: asyncpg.Connection,
    tree: OrgTree,
    rule: PatrolRule,
    org: str,
    first: date,
    last: date,
    today: date,
) -> dict[str, Any]:
    """Patrol compliance of the grid workers of ``org``'s subtree on the local days
    ``first``–``last`` they were on duty (:func:`duty_days`): per worker and in total, and per child
    unit of ``org``."""
    days = (last - first).days + 1
    rows = await conn.fetch(_WORKERS_SQL, org, first, last, rule.min_duration, rule.per_day, today)
    workers = [
        {
            "user_id": r["id"],
            "username": r["username"],
            "display_name": r["display_name"],
            "org": r["org_code"],
            "days": (on_duty := duty_days(first, last, today, r["first_day"], bool(r["compliant_today"]))),
            "compliant_days": r["compliant_days"],
            "compliance_rate": round(r["compliant_days"] / on_duty, 4) if on_duty else None,
            "patrols": r["patrols"],
            "counting_patrols": r["counting_patrols"],
            "patrol_hours": round(r["seconds"] / 3600, 2),
        }
        for r in rows
    ]

    def totals(group: Sequence[dict[str, Any]]) -> dict[str, Any]:
        worker_days = sum(w["days"] for w in group)
        compliant = sum(w["compliant_days"] for w in group)
        return {
            "grid_workers": len(group),
            "worker_days": worker_days,
            "compliant_worker_days": compliant,
            "compliance_rate": round(compliant / worker_days, 4) if worker_days else None,
            "patrols": sum(w["patrols"] for w in group),
            "counting_patrols": sum(w["counting_patrols"] for w in group),
            "patrol_hours": round(sum(w["patrol_hours"] for w in group), 2),
        }

    by_unit = []
    for child in tree.children(org):
        group = [w for w in workers if w["org"] in tree and tree.is_within(w["org"], child.code)]
        by_unit.append({"code": child.code, "name": child.name, "name_en": child.name_en, **totals(group)})
    return {
        "rule": rule.as_json(),
        "from": first.isoformat(),
        "to": last.isoformat(),
        "days": days,
        **totals(workers),
        "by_unit": by_unit,
        "workers": workers,
    }


def stats_section(ctx: Context) -> Any:
    """The ``patrols`` section of ``GET /api/v1/stats``: compliance over the statistics period
    (days after today are left out; today counts as it stands), without the per-worker list."""

    async def section(conn: asyncpg.Connection, org: str, start: datetime, end: datetime) -> dict[str, Any]:
        rule = _rule(ctx)
        today = ctx.clock.now().astimezone(LOCAL_TZ).date()
        span = local_days(start, end, today)
        if span is None:
            return {
                "rule": rule.as_json(),
                "days": 0,
                "grid_workers": 0,
                "compliance_rate": None,
                "by_unit": [],
            }
        figures = await compliance(conn, ctx.orgs, rule, org, *span, today)
        figures.pop("workers")
        return figures

    return section


async def compliance_of(
    ctx: Context, user: User, org: str | None, first_text: str | None, last_text: str | None
) -> dict[str, Any]:
    """Compliance of a unit in sight over local days (default: the week up to today); a grid
    worker sees their own row only."""
    org = org or user.org
    if org not in ctx.orgs or not ctx.orgs.is_within(org, user.org):
        raise not_found("单位", "unit")
    today = ctx.clock.now().astimezone(LOCAL_TZ).date()
    last = parse_day(last_text, "to") if last_text else today
    first = parse_day(first_text, "from") if first_text else last - timedelta(days=6)
    if first > last:
        raise invalid({"from": ("须不晚于 to", "must not be after to")})
    if (last - first).days > 366:
        raise invalid({"from": ("时段不能超过 366 天", "the period may span at most 366 days")})
    async with ctx.pool.acquire() as conn:
        figures = await compliance(conn, ctx.orgs, _rule(ctx), org, first, last, today)
    if user.role == "grid_worker":
        figures["workers"] = [w for w in figures["workers"] if w["user_id"] == user.id]
    return figures
