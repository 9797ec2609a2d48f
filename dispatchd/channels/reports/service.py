"""Grid reports (平安通): submitting a report exactly once, a grid worker's reports and their steps,
and verification tasks (核查) answered with notes and photos.

Exactly once: the client sends an ``Idempotency-Key``; the key's row in ``report_requests`` is
inserted in the same transaction as the case (``create_incident(..., conn=conn)`` runs as a
savepoint inside it). A retry that arrives while the first is still running waits on the unique
index until the first commits, then reads the stored answer; if the first failed, the retry
creates the case itself. The same key with a different report is refused with 422.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import asyncpg
import structlog

from dispatchd.channels.reports.media import StagedPhoto
from dispatchd.context import Context
from dispatchd.domain.incident import ACTION_NAMES, Action, State
from dispatchd.domain.taxonomy import PRIORITIES
from dispatchd.errors import DomainError, Invalid, conflict, invalid, not_found
from dispatchd.incidents import service as cases
from dispatchd.incidents import store as case_store
from dispatchd.incidents.query import DUE_FIRST, CaseQuery, find
from dispatchd.store.changes import trail
from dispatchd.store.users import User
from dispatchd.validate import Field, check_fields

log = structlog.get_logger("dispatchd.reports")

CHANNEL: Final = "grid_report"
# Observation times a little ahead of our clock are phone clocks that run fast, not the future.
_CLOCK_SKEW: Final = timedelta(minutes=10)

REPORT_FIELDS: Final = (
    Field("category", required=True, max_length=100, description="taxonomy code, e.g. hazard.fire"),
    Field("description", required=True, max_length=4000, description="what was seen"),
    Field("location", "object", description="{lat, lon}: WGS-84 point; location or address is required"),
    Field("address", max_length=500, description="where, in words"),
    Field("observed_at", max_length=40, description="ISO 8601 time with zone when it was seen"),
    Field("priority", choices=PRIORITIES, description="default: the category's"),
)

ANSWER_FIELDS: Final = (
    Field(
        "version", "integer", required=True, minimum=1, description="the case version the answer is based on"
    ),
    Field("note", max_length=4000, description="what was found on site"),
    Field("reason", max_length=2000, description="why the case goes back (required to reopen)"),
)


# -- input -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Report:
    category: str
    description: str
    lat: float | None
    lon: float | None
    address: str | None
    observed_at: datetime | None
    priority: str | None


def parse_location(value: Any, name: str = "location") -> tuple[float, float]:
    problem = {
        name: (
            "应为 {lat, lon}，纬度 -90–90，经度 -180–180",
            "must be {lat, lon} with lat -90..90 and lon -180..180",
        )
    }
    if not isinstance(value, dict):
        raise invalid(problem)
    lat, lon = value.get("lat"), value.get("lon")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lat, lon)):
        raise invalid(problem)
    assert isinstance(lat, int | float) and isinstance(lon, int | float)
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise invalid(problem)
    return float(lat), float(lon)


def parse_time(value: str, name: str) -> datetime:
    """An ISO 8601 time that carries its zone (phones know theirs)."""
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise invalid({name: ("应为 ISO 8601 时间", "must be an ISO 8601 date-time")}) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise invalid({name: ("时间须带时区（如 +08:00）", "time must carry a zone (e.g. +08:00)")})
    return moment


def report_checker(ctx: Context) -> Callable[[dict[str, Any]], Report]:
    """Validate a report body: every bad field named (422), in zh-CN and en."""

    def check(data: dict[str, Any]) -> Report:
        # Every field is checked, so that one answer names every mistake. An optional field sent
        # empty (a form's blank select) counts as not sent.
        optional = {f.name for f in REPORT_FIELDS if not f.required}
        data = {k: v for k, v in data.items() if not (k in optional and v == "")}
        errors: dict[str, tuple[str, str]] = {}
        body: dict[str, Any] = {}
        for f in REPORT_FIELDS:
            try:
                body.update(check_fields(data, (f,)))
            except DomainError as exc:
                errors.update(exc.fields)
        lat = lon = None
        if body.get("location") is not None:
            try:
                lat, lon = parse_location(body["location"])
            except DomainError as exc:
                errors.update(exc.fields)
        address = (body.get("address") or "").strip() or None
        if "location" not in data and address is None and "address" not in errors:
            errors["location"] = ("须提供位置或地址", "location or address is required")
        if "category" in body and body["category"] not in ctx.taxonomy:
            errors["category"] = ("未知的事件类别", "unknown category")
        if "description" in body and not body["description"].strip():
            errors["description"] = ("不能为空", "must not be empty")
        observed = None
        if body.get("observed_at"):
            try:
                observed = parse_time(body["observed_at"], "observed_at")
            except DomainError as exc:
                errors.update(exc.fields)
            else:
                if observed > ctx.clock.now() + _CLOCK_SKEW:
                    errors["observed_at"] = ("不能晚于当前时间", "must not lie in the future")
        if errors:
            raise invalid(errors)
        return Report(
            category=body["category"],
            description=body["description"].strip(),
            lat=lat,
            lon=lon,
            address=address,
            observed_at=observed,
            priority=body.get("priority"),
        )

    return check


def fingerprint(data: Mapping[str, Any], photos: Sequence[StagedPhoto] = ()) -> bytes:
    """What makes two submissions the same: the JSON object (key order and spacing aside) and the
    digests of its photos in order."""
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    digests = ",".join(p.sha256 for p in photos)
    return hashlib.sha256(f"{canonical}\n{digests}".encode()).digest()


# -- exactly once ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    status: int
    body: str  # JSON text, the same bytes on every retry
    incident_id: int | None
    replayed: bool


Work = Callable[[asyncpg.Connection], Awaitable[tuple[int, dict[str, Any], int | None]]]


def _key_reused() -> Invalid:
    return Invalid(
        "此 Idempotency-Key 已用于另一份不同的上报；新的上报请使用新的 Idempotency-Key",
        "this Idempotency-Key was already used for a different submission; use a new key for a new report",
        code="idempotency_key_reused",
        fields={"Idempotency-Key": ("已用于不同的内容", "already used for different content")},
    )


async def once(
    ctx: Context, *, scope: str, key: str | None, fingerprint: bytes, work: Work
) -> Outcome:
    """Run ``work`` in a transaction at most once per ``(scope, key)``; later calls with the same
    key and fingerprint get the first answer back (``replayed``), with another fingerprint 422.
    Without a key, ``work`` simply runs in a transaction."""
    now = ctx.clock.now()
    async with ctx.pool.acquire() as conn:
        async with conn.transaction():
            row_id: int | None = None
            if key is not None:
                # Concurrent duplicates block here on the unique index until the first commits
                # (then DO NOTHING) or rolls back (then this one inserts and does the work).
                row_id = await conn.fetchval(
                    "INSERT INTO report_requests (scope, idem_key, fingerprint, created_at)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT (scope, idem_key) DO NOTHING RETURNING id",
                    scope,
                    key,
                    fingerprint,
                    now,
                )
                if row_id is None:
                    stored = await conn.fetchrow(
                        "SELECT fingerprint, status, response, incident_id FROM report_requests"
                        " WHERE scope = $1 AND idem_key = $2",
                        scope,
                        key,
                    )
                    assert stored is not None and stored["response"] is not None
                    if bytes(stored["fingerprint"]) != fingerprint:
                        ctx.metrics.reports.labels("key_reused").inc()
                        raise _key_reused()
                    ctx.metrics.reports.labels("replayed").inc()
                    return Outcome(stored["status"], stored["response"], stored["incident_id"], True)
            status, body, incident_id = await work(conn)
            text = json.dumps(body, ensure_ascii=False, default=str)
            if row_id is not None:
                await conn.execute(
                    "UPDATE report_requests SET status = $2, response = $3, incident_id = $4 WHERE id = $1",
                    row_id,
                    status,
                    text,
                    incident_id,
                )
    return Outcome(status, text, incident_id, False)


# -- photos of a case ------------------------------------------------------------------------------


async def record_photos(
    conn: asyncpg.Connection,
    photos: Sequence[StagedPhoto],
    *,
    incident_id: int,
    uploaded_by: int | None,
    purpose: str,
    now: datetime,
) -> None:
    """The photo rows (once per digest) and their link to the case, inside the caller's transaction."""
    for p in photos:
        await conn.execute(
            "INSERT INTO photos (sha256, media_type, size, public_sha256, public_size, stripped, created_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (sha256) DO NOTHING",
            p.sha256,
            p.media_type,
            p.size,
            p.public_sha256,
            p.public_size,
            p.stripped,
            now,
        )
        await conn.execute(
            "INSERT INTO photo_links (sha256, incident_id, uploaded_by, purpose, created_at)"
            " VALUES ($1, $2, $3, $4, $5)",
            p.sha256,
            incident_id,
            uploaded_by,
            purpose,
            now,
        )


# -- submit ----------------------------------------------------------------------------------------


def routing(ctx: Context, case: Mapping[str, Any]) -> dict[str, Any]:
    """Where a new case went: its grid, community, township, county, owning unit, and the
    department that will handle it by default (the category's kind nearest the owner)."""
    tree, taxonomy = ctx.orgs, ctx.taxonomy
    department = None
    category = taxonomy.categories.get(case["category"])
    if category is not None:
        found = tree.find_department(case["owner_unit"], category.default_department)
        if found is not None:
            department = {
                "code": found.code,
                "name": found.name,
                "name_en": found.name_en,
                "kind": found.kind,
            }
    return {
        "grid": case["grid"],
        "community": case["community"],
        "township": case["township"],
        "county": case["county"],
        "owner": case["owner"],
        "department": department,
    }


async def submit_report(
    ctx: Context,
    user: User,
    report: Report,
    photos: Sequence[StagedPhoto],
    *,
    key: str,
    fingerprint: bytes,
    extra: Mapping[str, Any] | None = None,
) -> Outcome:
    """A grid worker's report becomes a case, exactly once per ``key``."""

    async def work(conn: asyncpg.Connection) -> tuple[int, dict[str, Any], int | None]:
        now = ctx.clock.now()
        case = await cases.create_incident(
            ctx,
            category=report.category,
            description=report.description,
            channel=CHANNEL,
            priority=report.priority,
            lat=report.lat,
            lon=report.lon,
            address=report.address,
            reporter_id=user.id,
            attachments=[p.url for p in photos],
            actor=user,
            observed_at=report.observed_at,
            extra=extra,
            conn=conn,
        )
        await record_photos(
            conn, photos, incident_id=case["id"], uploaded_by=user.id, purpose="report", now=now
        )
        body = {
            "incident_id": case["id"],
            "number": case["number"],
            "state": case["state"],
            "category": case["category"],
            "priority": case["priority"],
            "created_at": case["created_at"],
            "url": f"/api/v1/incidents/{case['id']}",
            "routed": routing(ctx, case),
            "photos": [p.as_json() for p in photos],
            "possible_duplicates": [
                {"id": d["id"], "number": d["number"], "state": d["state"], "reasons": d["reasons"]}
                for d in case["duplicates"]
            ],
        }
        return 201, body, case["id"]

    outcome = await once(ctx, scope=f"user:{user.id}", key=key, fingerprint=fingerprint, work=work)
    if not outcome.replayed:
        ctx.metrics.reports.labels("created").inc()
        log.info("report_submitted", incident_id=outcome.incident_id, photos=len(photos), user=user.username)
    else:
        log.info("report_replayed", incident_id=outcome.incident_id, user=user.username)
    return outcome


# -- a grid worker's side of the loop --------------------------------------------------------------

# The steps of the closed loop (事件流转) a case waits for, by state: code, zh-CN, en.
_STEPS: Final[Mapping[State, tuple[str, str, str]]] = {
    State.reported: ("accept", "待受理", "awaiting acceptance"),
    State.accepted: ("dispatch", "待派遣", "awaiting dispatch"),
    State.dispatched: ("handle", "待处置", "awaiting handling"),
    State.in_progress: ("handle", "处置中", "being handled"),
    State.fed_back: ("verify", "待核查", "awaiting verification"),
    State.verified: ("close", "待结案", "awaiting closing"),
    State.closed: ("evaluate", "待评价", "awaiting evaluation"),
    State.evaluated: ("done", "已办结", "done"),
    State.rejected: ("done", "不予受理", "rejected"),
    State.merged: ("done", "已合并", "merged into another case"),
}
_STEP_ORDER: Final = ("accept", "dispatch", "handle", "verify", "close", "evaluate", "done")


def current_step(state: str) -> dict[str, Any]:
    code, zh, en = _STEPS[State(state)]
    return {
        "code": code,
        "index": _STEP_ORDER.index(code) + 1,
        "of": len(_STEP_ORDER),
        "name": {"zh-CN": zh, "en": en},
    }


def _item(ctx: Context, row: Mapping[str, Any]) -> dict[str, Any]:
    case = case_store.summary_json(row, ctx.orgs, ctx.taxonomy)
    case["step"] = current_step(row["state"])
    return case


async def my_reports(
    ctx: Context,
    user: User,
    *,
    states: Sequence[str] = (),
    limit: int = 50,
    before: int | None = None,
) -> tuple[list[dict[str, Any]], int | None]:
    """The cases ``user`` reported, newest first, each with its current step."""
    query = CaseQuery(reporter_id=user.id, states=tuple(states), limit=limit, before=before)
    async with ctx.pool.acquire() as conn:
        rows, next_before = await find(conn, query)
    return [_item(ctx, r) for r in rows], next_before


async def _feedback_of(conn: asyncpg.Connection, incident_id: int) -> list[dict[str, Any]]:
    """The feedback of the current round (since the last dispatch or reopen): what to check."""
    rows: list[asyncpg.Record] = []
    for event in await trail(conn, "incident", incident_id):
        if event["action"] in ("dispatch", "reopen"):
            rows = []
        elif event["action"] == "feedback":
            rows.append(event)
    return [
        {
            "at": r["at"].isoformat(),
            "by": r["actor_name"],
            "department": (r["data"] or {}).get("department"),
            "note": r["note"],
            "photos": (r["data"] or {}).get("photos", []),
        }
        for r in rows
    ]


async def verification_tasks(ctx: Context, user: User, *, limit: int = 100) -> list[dict[str, Any]]:
    """Cases fed back and waiting for a check (核查): for a grid worker those in their grid or
    reported by them; for duty officers and leaders those in their jurisdiction."""
    if user.role == "grid_worker":
        query = CaseQuery(grid_or_reporter=(user.org, user.id), states=("fed_back",))
    else:
        query = CaseQuery(viewer=user, states=("fed_back",))
    async with ctx.pool.acquire() as conn:
        rows, _ = await find(conn, dataclasses.replace(query, order=DUE_FIRST, limit=limit))
        tasks = []
        for row in rows:
            item = _item(ctx, row)
            item["feedback"] = await _feedback_of(conn, row["id"])
            tasks.append(item)
    return tasks


async def answer_task(
    ctx: Context,
    user: User,
    incident_id: int,
    action: str,
    body: Mapping[str, Any],
    photos: Sequence[StagedPhoto],
) -> dict[str, Any]:
    """Verify (核查) or reopen (退回重办) a fed-back case with a note and photos: the transition of
    the case service and the photos' rows commit together or not at all."""
    what = Action(action)
    assert what in (Action.verify, Action.reopen)
    command = cases.build_command(
        what,
        {
            "version": body.get("version"),
            "note": body.get("note"),
            "reason": body.get("reason"),
            "photos": [p.url for p in photos],
        },
    )
    now = ctx.clock.now()
    try:
        async with ctx.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT * FROM incidents WHERE id = $1 FOR UPDATE", incident_id)
            if row is None or not case_store.may_view(ctx.orgs, user, row):
                raise not_found("案件", "case")
            with structlog.contextvars.bound_contextvars(
                incident_id=incident_id, incident_number=row["number"]
            ):
                case = await cases.transition_locked(
                    ctx, conn, row, command, cases.domain_actor(user), viewer=user
                )
                await record_photos(
                    conn, photos, incident_id=incident_id, uploaded_by=user.id, purpose=action, now=now
                )
    except asyncpg.DeadlockDetectedError:
        raise conflict(
            "案件正被同时修改，请刷新后重试", "the case was changed at the same time; reload and retry"
        ) from None
    log.info("verification_answered", action=action, incident_id=incident_id, photos=len(photos))
    name = ACTION_NAMES[what]
    case["answer"] = {"action": action, "name": {"zh-CN": name.zh, "en": name.en}}
    return case
