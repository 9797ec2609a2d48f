"""The patrol log (网格日志): a grid worker starts and stops a patrol, the phone sends track points
while it runs, places visited are written down with notes; daily compliance per grid worker is
measured against the rule in ``[reports]`` (default: at least two patrols of at least two hours a
day, as Taizhou requires) and shown in the statistics as the ``patrols`` section.

A patrol belongs to the local day (UTC+8) it started on; it counts once it is stopped and lasted
at least ``patrol_min_hours``. Track points are keyed by their time, so a batch sent again after a
lost answer is stored once.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Final

import asyncpg
import structlog
from aiohttp import web

from dispatchd.channels.reports.service import parse_location, parse_time
from dispatchd.config import ReportSettings
from dispatchd.domain.geo import haversine_m
from dispatchd.domain.orgs import OrgTree
from dispatchd.incidents.service import LOCAL_TZ
from dispatchd.store.orgs import unit_path
from dispatchd.store.users import User
from dispatchd.web.appkeys import CLOCK, ORGS, POOL, SETTINGS
from dispatchd.web.auth import current_user, may_see, require_role
from dispatchd.web.errors import ApiError, not_found
from dispatchd.web.routing import ApiRoute
from dispatchd.web.validate import Field, invalid, json_body, query_params

log = structlog.get_logger("dispatchd.patrols")

TAG: Final = "patrols"
MAX_POINTS: Final = 1000
# Points may be stamped a little before the start or after now by phone clocks.
_SKEW: Final = timedelta(minutes=5)


# -- pure rules -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PatrolRule:
    """At least ``per_day`` patrols a day, each lasting at least ``min_duration``."""

    per_day: int
    min_duration: timedelta

    @classmethod
    def from_settings(cls, settings: ReportSettings) -> PatrolRule:
        return cls(settings.patrols_per_day, timedelta(hours=settings.patrol_min_hours))

    def counts(self, duration: timedelta) -> bool:
        return duration >= self.min_duration

    def met(self, durations: Iterable[timedelta]) -> bool:
        """Whether one day's finished patrols satisfy the rule."""
        return sum(1 for d in durations if self.counts(d)) >= self.per_day

    def as_json(self) -> dict[str, Any]:
        return {"patrols_per_day": self.per_day, "min_hours": self.min_duration.total_seconds() / 3600}


def track_length_m(points: Sequence[tuple[float, float]]) -> float:
    """Length of a track of (lat, lon) points in time order, in metres."""
    return sum(haversine_m(a[0], a[1], b[0], b[1]) for a, b in itertools.pairwise(points))


def local_days(start: datetime, end: datetime, today: date) -> tuple[date, date] | None:
    """The local days of the period ``[start, end)``, up to ``today``; None when it has none."""
    first = start.astimezone(LOCAL_TZ).date()
    last = min((end - timedelta(microseconds=1)).astimezone(LOCAL_TZ).date(), today)
    return (first, last) if first <= last else None


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
    }


_SELECT: Final = (
    "SELECT p.*, u.username,"
    " (SELECT count(*) FROM patrol_points t WHERE t.patrol_id = p.id) AS points,"
    " (SELECT count(*) FROM patrol_visits v WHERE v.patrol_id = p.id) AS visits"
    " FROM patrols p JOIN users u ON u.id = p.user_id"
)


def _rule(app: web.Application) -> PatrolRule:
    return PatrolRule.from_settings(app[SETTINGS].reports)


def _patrol_id(request: web.Request) -> int:
    try:
        value = int(request.match_info["id"])
    except ValueError:
        raise not_found("巡查", "patrol") from None
    if not 0 < value < 2**63:
        raise not_found("巡查", "patrol")
    return value


async def _visible(request: web.Request, conn: asyncpg.Connection, patrol_id: int) -> asyncpg.Record:
    row = await conn.fetchrow(_SELECT + " WHERE p.id = $1", patrol_id)
    user = current_user(request)
    if row is None or (row["user_id"] != user.id and not may_see(request, row["org_code"])):
        raise not_found("巡查", "patrol")
    return row


async def _own_running(conn: asyncpg.Connection, user: User, patrol_id: int) -> asyncpg.Record:
    """The caller's patrol, locked; 404 for anyone else's, 409 when it has stopped."""
    row = await conn.fetchrow("SELECT * FROM patrols WHERE id = $1 FOR UPDATE", patrol_id)
    if row is None or row["user_id"] != user.id:
        raise not_found("巡查", "patrol")
    if row["ended_at"] is not None:
        raise ApiError(409, "patrol_stopped", "该巡查已结束", "this patrol has already stopped")
    return row


# -- handlers ---------------------------------------------------------------------------------------

START_FIELDS: Final = (Field("notes", max_length=4000, description="a note for the log"),)
STOP_FIELDS: Final = (Field("notes", max_length=4000, description="what the patrol found"),)
POINT_FIELDS: Final = (
    Field(
        "points",
        "array",
        items="object",
        required=True,
        max_length=MAX_POINTS,
        description="[{lat, lon, at, accuracy?}]",
    ),
)
VISIT_FIELDS: Final = (
    Field("place", required=True, max_length=200, description="the place visited"),
    Field("location", "object", description="{lat, lon} WGS-84"),
    Field("at", max_length=40, description="ISO 8601 with zone; default now"),
    Field("note", max_length=4000),
)
LIST_FIELDS: Final = (
    Field("date", max_length=10, description="local day YYYY-MM-DD"),
    Field("org", max_length=64, description="officers: patrols of the grid workers of this unit"),
    Field("limit", "integer", minimum=1, maximum=500),
)
COMPLIANCE_FIELDS: Final = (
    Field("org", max_length=64, description="default: your unit"),
    Field("from", max_length=10, description="first local day; default 6 days before to"),
    Field("to", max_length=10, description="last local day; default today"),
)


async def start_patrol(request: web.Request) -> web.Response:
    user = require_role(request, "grid_worker")
    body = await json_body(request, START_FIELDS)
    app = request.app
    now = app[CLOCK].now()
    async with app[POOL].acquire() as conn:
        try:
            patrol_id = await conn.fetchval(
                "INSERT INTO patrols (user_id, org_code, org_path, started_at, local_day, notes)"
                " VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
                user.id,
                user.org,
                unit_path(app[ORGS], user.org),
                now,
                now.astimezone(LOCAL_TZ).date(),
                body.get("notes"),
            )
        except asyncpg.UniqueViolationError:
            running = await conn.fetchrow(_SELECT + " WHERE p.user_id = $1 AND p.ended_at IS NULL", user.id)
            raise ApiError(
                409,
                "patrol_running",
                "已有一次巡查正在进行，请先结束它",
                "a patrol is already running; stop it first",
                extra={"patrol": patrol_json(running, _rule(app), now) if running else None},
            ) from None
        row = await conn.fetchrow(_SELECT + " WHERE p.id = $1", patrol_id)
    log.info("patrol_started", patrol_id=patrol_id)
    return web.json_response(
        patrol_json(row, _rule(app), now), status=201, headers={"Location": f"/api/v1/patrols/{patrol_id}"}
    )


async def add_points(request: web.Request) -> web.Response:
    user = require_role(request, "grid_worker")
    patrol_id = _patrol_id(request)
    body = await json_body(request, POINT_FIELDS)
    app = request.app
    now = app[CLOCK].now()
    async with app[POOL].acquire() as conn, conn.transaction():
        row = await _own_running(conn, user, patrol_id)
        errors: dict[str, tuple[str, str]] = {}
        ats: list[datetime] = []
        lats: list[float] = []
        lons: list[float] = []
        accs: list[float | None] = []
        for i, point in enumerate(body["points"]):
            name = f"points[{i}]"
            try:
                lat, lon = parse_location(point, name)
                at = parse_time(str(point.get("at", "")), f"{name}.at")
            except ApiError as exc:
                errors.update(exc.fields)
                continue
            if not (row["started_at"] - _SKEW <= at <= now + _SKEW):
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
    return web.json_response({"received": len(ats), "stored": stored, "points": total})


async def add_visit(request: web.Request) -> web.Response:
    user = require_role(request, "grid_worker")
    patrol_id = _patrol_id(request)
    body = await json_body(request, VISIT_FIELDS)
    app = request.app
    now = app[CLOCK].now()
    lat = lon = None
    if body.get("location") is not None:
        lat, lon = parse_location(body["location"])
    at = parse_time(body["at"], "at") if body.get("at") else now
    place = body["place"].strip()
    if not place:
        raise invalid({"place": ("不能为空", "must not be empty")})
    async with app[POOL].acquire() as conn, conn.transaction():
        row = await _own_running(conn, user, patrol_id)
        if not (row["started_at"] - _SKEW <= at <= now + _SKEW):
            raise invalid({"at": ("不在巡查时段内", "lies outside the patrol's time")})
        visit = await conn.fetchrow(
            "INSERT INTO patrol_visits (patrol_id, at, place, lat, lon, note) VALUES ($1, $2, $3, $4, $5, $6)"
            " ON CONFLICT (patrol_id, at, place) DO UPDATE SET note = EXCLUDED.note RETURNING *",
            patrol_id,
            at,
            place,
            lat,
            lon,
            body.get("note"),
        )
    return web.json_response(_visit_json(visit), status=201)


def _visit_json(row: Mapping[str, Any]) -> dict[str, Any]:
    location = {"lat": row["lat"], "lon": row["lon"]} if row["lat"] is not None else None
    return {
        "id": row["id"],
        "at": row["at"].isoformat(),
        "place": row["place"],
        "location": location,
        "note": row["note"],
    }


async def stop_patrol(request: web.Request) -> web.Response:
    user = require_role(request, "grid_worker")
    patrol_id = _patrol_id(request)
    body = await json_body(request, STOP_FIELDS)
    app = request.app
    now = app[CLOCK].now()
    async with app[POOL].acquire() as conn, conn.transaction():
        row = await conn.fetchrow("SELECT * FROM patrols WHERE id = $1 FOR UPDATE", patrol_id)
        if row is None or row["user_id"] != user.id:
            raise not_found("巡查", "patrol")
        if row["ended_at"] is None:  # stopping again (a retry) changes nothing
            points = await conn.fetch(
                "SELECT lat, lon FROM patrol_points WHERE patrol_id = $1 ORDER BY at", patrol_id
            )
            distance = track_length_m([(p["lat"], p["lon"]) for p in points])
            notes = body.get("notes")
            await conn.execute(
                "UPDATE patrols SET ended_at = $2, distance_m = $3,"
                " notes = CASE WHEN $4::text IS NULL THEN notes"
                " WHEN notes IS NULL THEN $4 ELSE notes || E'\\n' || $4 END WHERE id = $1",
                patrol_id,
                now,
                distance,
                notes,
            )
            log.info(
                "patrol_stopped",
                patrol_id=patrol_id,
                duration_s=round((now - row["started_at"]).total_seconds()),
            )
        after = await conn.fetchrow(_SELECT + " WHERE p.id = $1", patrol_id)
    return web.json_response(patrol_json(after, _rule(app), now))


async def get_patrol(request: web.Request) -> web.Response:
    app = request.app
    now = app[CLOCK].now()
    async with app[POOL].acquire() as conn:
        row = await _visible(request, conn, _patrol_id(request))
        points = await conn.fetch(
            "SELECT at, lat, lon, accuracy FROM patrol_points WHERE patrol_id = $1 ORDER BY at", row["id"]
        )
        visits = await conn.fetch(
            "SELECT * FROM patrol_visits WHERE patrol_id = $1 ORDER BY at, id", row["id"]
        )
    patrol = patrol_json(row, _rule(app), now)
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
    return web.json_response(patrol)


def _day(value: str, name: str) -> date:
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise invalid({name: ("应为日期 YYYY-MM-DD", "must be a date YYYY-MM-DD")}) from None


async def list_patrols(request: web.Request) -> web.Response:
    user = current_user(request)
    query = query_params(request, LIST_FIELDS)
    app = request.app
    args: list[Any] = []
    if user.role == "grid_worker" and not query.get("org"):
        args.append(user.id)
        clauses = ["p.user_id = $1"]
    else:
        org = query.get("org") or user.org
        if org not in app[ORGS] or not may_see(request, org):
            raise not_found("单位", "unit")
        args.append(org)
        clauses = ["p.org_path @> ARRAY[$1]::text[]"]
    if query.get("date"):
        args.append(_day(query["date"], "date"))
        clauses.append(f"p.local_day = ${len(args)}")
    args.append(query.get("limit", 100))
    async with app[POOL].acquire() as conn:
        rows = await conn.fetch(
            _SELECT + f" WHERE {' AND '.join(clauses)} ORDER BY p.started_at DESC LIMIT ${len(args)}", *args
        )
    now = app[CLOCK].now()
    return web.json_response(
        {"items": [patrol_json(r, _rule(app), now) for r in rows], "rule": _rule(app).as_json()}
    )


# -- compliance ---------------------------------------------------------------------------------------

_WORKERS_SQL: Final = """
SELECT u.id, u.username, u.display_name, u.org_code,
       count(c.local_day) FILTER (WHERE c.counting >= $5) AS compliant_days,
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


async def compliance(
    conn: asyncpg.Connection, tree: OrgTree, rule: PatrolRule, org: str, first: date, last: date
) -> dict[str, Any]:
    """Patrol compliance of the grid workers of ``org``'s subtree on the local days
    ``first``–``last``: per worker and in total, and per child unit of ``org``."""
    days = (last - first).days + 1
    rows = await conn.fetch(_WORKERS_SQL, org, first, last, rule.min_duration, rule.per_day)
    workers = [
        {
            "user_id": r["id"],
            "username": r["username"],
            "display_name": r["display_name"],
            "org": r["org_code"],
            "days": days,
            "compliant_days": r["compliant_days"],
            "compliance_rate": round(r["compliant_days"] / days, 4) if days else None,
            "patrols": r["patrols"],
            "counting_patrols": r["counting_patrols"],
            "patrol_hours": round(r["seconds"] / 3600, 2),
        }
        for r in rows
    ]

    def totals(group: Sequence[dict[str, Any]]) -> dict[str, Any]:
        worker_days = len(group) * days
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


def stats_section(app: web.Application) -> Any:
    """The ``patrols`` section of ``GET /api/v1/stats``: compliance over the statistics period
    (days after today are left out; today counts as it stands), without the per-worker list."""

    async def section(conn: asyncpg.Connection, org: str, start: datetime, end: datetime) -> dict[str, Any]:
        rule = _rule(app)
        today = app[CLOCK].now().astimezone(LOCAL_TZ).date()
        span = local_days(start, end, today)
        if span is None:
            return {
                "rule": rule.as_json(),
                "days": 0,
                "grid_workers": 0,
                "compliance_rate": None,
                "by_unit": [],
            }
        figures = await compliance(conn, app[ORGS], rule, org, *span)
        figures.pop("workers")
        return figures

    return section


async def get_compliance(request: web.Request) -> web.Response:
    user = current_user(request)
    query = query_params(request, COMPLIANCE_FIELDS)
    app = request.app
    org = query.get("org") or user.org
    if org not in app[ORGS] or not may_see(request, org):
        raise not_found("单位", "unit")
    today = app[CLOCK].now().astimezone(LOCAL_TZ).date()
    last = _day(query["to"], "to") if query.get("to") else today
    first = _day(query["from"], "from") if query.get("from") else last - timedelta(days=6)
    if first > last:
        raise invalid({"from": ("须不晚于 to", "must not be after to")})
    if (last - first).days > 366:
        raise invalid({"from": ("时段不能超过 366 天", "the period may span at most 366 days")})
    async with app[POOL].acquire() as conn:
        figures = await compliance(conn, app[ORGS], _rule(app), org, first, last)
    if user.role == "grid_worker":
        figures["workers"] = [w for w in figures["workers"] if w["user_id"] == user.id]
    return web.json_response(figures, dumps=lambda v: json.dumps(v, ensure_ascii=False))


ROUTES: Final[list[ApiRoute]] = [
    ApiRoute(
        "POST",
        "/api/v1/patrols",
        start_patrol,
        "Start a patrol (网格日志; grid workers, one running at a time)",
        TAG,
        body=START_FIELDS,
        responses={201: "the patrol", 409: "a patrol is already running (error.patrol)"},
    ),
    ApiRoute(
        "GET",
        "/api/v1/patrols",
        list_patrols,
        "Patrols: a grid worker's own, or those of the grid workers of a unit",
        TAG,
        query=LIST_FIELDS,
        responses={200: "{items, rule}"},
    ),
    ApiRoute(
        "GET",
        "/api/v1/patrols/compliance",
        get_compliance,
        "Daily patrol compliance per grid worker against the configured rule",
        TAG,
        query=COMPLIANCE_FIELDS,
        responses={200: "rule, totals, by_unit, workers", 404: "unit outside your jurisdiction"},
    ),
    ApiRoute(
        "GET",
        r"/api/v1/patrols/{id:\d+}",
        get_patrol,
        "A patrol with its track (GeoJSON) and places visited",
        TAG,
        responses={200: "the patrol", 404: "no such patrol in your sight"},
    ),
    ApiRoute(
        "POST",
        r"/api/v1/patrols/{id:\d+}/points",
        add_points,
        "Track points of a running patrol (a resent batch is stored once)",
        TAG,
        body=POINT_FIELDS,
        responses={200: "{received, stored, points}", 409: "the patrol has stopped", 422: "bad points"},
    ),
    ApiRoute(
        "POST",
        r"/api/v1/patrols/{id:\d+}/visits",
        add_visit,
        "A place visited during a running patrol, with a note",
        TAG,
        body=VISIT_FIELDS,
        responses={201: "the visit", 409: "the patrol has stopped"},
    ),
    ApiRoute(
        "POST",
        r"/api/v1/patrols/{id:\d+}/stop",
        stop_patrol,
        "Stop a patrol (stopping again changes nothing)",
        TAG,
        body=STOP_FIELDS,
        responses={200: "the patrol with its duration and distance"},
    ),
]
