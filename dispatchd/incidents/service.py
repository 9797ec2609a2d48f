"""The case service: every report, call and alarm becomes a case, and every change to it is one
PostgreSQL transaction that writes the case, an append-only audit event and an outbox row.

Callers (the HTTP API, 平安通 reports, Open311, the hotline, JT/T 808 alarms, the deadline
timers) go through three functions:

* :func:`create_incident` — a new case (事件上报): grid by point, owning unit, default priority,
  case number, the ``report`` audit event, the accept-deadline timers and an outbox row.
* :func:`apply_action` — one step of the closed loop by a user (``accept`` … ``assign``),
  decided by the pure state machine :func:`dispatchd.domain.incident.decide` on the row locked
  ``FOR UPDATE``; the loser of a race gets 409 with the current case.
* :func:`get_incident` — the case with its timeline, as ``GET /api/v1/incidents/{id}``.

Refusals are the domain errors of :mod:`dispatchd.errors` (NotFound: unknown or outside the
caller's jurisdiction; Forbidden; Conflict with ``incident`` holding the current case; Invalid).
Every change is recorded by :func:`dispatchd.store.changes.record`: the audit row and the outbox row
in the transaction that writes the case.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import asyncpg
import structlog

from dispatchd.clock import LOCAL_TZ
from dispatchd.context import Context
from dispatchd.domain.hotlines import CALLERS_OUT
from dispatchd.domain.incident import (
    Action,
    Actor,
    AuditEvent,
    Command,
    DeadlineCancel,
    DeadlineExtend,
    DeadlineStart,
    Incident,
    OwnerChanged,
    Role,
    Rules,
    State,
    TransitionError,
    allowed_actions,
    case_operations,
    decide,
    on_created,
)
from dispatchd.domain.meetings import CONVENERS
from dispatchd.domain.taxonomy import PRIORITIES
from dispatchd.errors import Conflict, DomainError, Forbidden, Invalid, NotFound, conflict, invalid, not_found
from dispatchd.incidents import store
from dispatchd.incidents.query import CaseQuery, find
from dispatchd.incidents.slots import CASE_ENDED, CASE_EXTRAS
from dispatchd.incidents.store import CHANNELS
from dispatchd.store.changes import Actor as ChangeActor
from dispatchd.store.changes import Change, record
from dispatchd.store.orgs import unit_path
from dispatchd.store.users import User
from dispatchd.validate import Field, check_fields

log = structlog.get_logger("dispatchd.incidents")



TOPIC: Final = "incident"
# A case in these states has ended: what belongs to it ends too.
ENDED: Final = frozenset({State.rejected, State.merged, State.closed, State.evaluated})
# Levels at which a case may be owned by default ("handled at township level or below").
_ROUTING_LEVELS: Final = ("township", "community", "grid")

__all__ = [
    "ACTION_FIELDS",
    "CHANNELS",
    "apply_action",
    "attach_report",
    "create_incident",
    "get_incident",
]


def _not_found() -> NotFound:
    return not_found("案件", "case")


def _field_error(name: str, zh: str, en: str) -> Invalid:
    return invalid({name: (zh, en)})


def rules_of(ctx: Context) -> Rules:
    """The county's settings the closed loop's machine needs."""
    settings = ctx.settings.incidents
    return Rules(max_returns=settings.max_returns, max_extension_hours=settings.max_extension_hours)


def change_actor(user: User | None, channel: str = "system") -> ChangeActor:
    """Who made a change of a case: the user, or the channel it came in by."""
    return ChangeActor.of(user, channel)


async def record_case(
    ctx: Context,
    conn: asyncpg.Connection,
    after: Mapping[str, Any],
    action: str,
    actor: ChangeActor,
    *,
    from_state: str | None,
    note: str | None = None,
    detail: Mapping[str, Any] | None = None,
    also_to: Sequence[Sequence[str]] = (),
) -> None:
    """Record a change of a case (its row ``after`` the change is already written)."""
    data = store.summary_json(after, ctx.orgs, ctx.taxonomy)
    change = Change.of(TOPIC, after, action, data, actor, ctx.clock.now(), from_state=from_state, note=note)
    await record(conn, dataclasses.replace(change, detail=detail or {}, also_to=also_to))
    ctx.metrics.transitions.labels(action).inc()


@contextlib.asynccontextmanager
async def _transaction(
    ctx: Context, conn: asyncpg.Connection | None
) -> AsyncIterator[asyncpg.Connection]:
    """A transaction on a pooled connection, or a savepoint inside the caller's transaction."""
    if conn is not None:
        async with conn.transaction():
            yield conn
        return
    async with ctx.pool.acquire() as own, own.transaction():
        yield own


def domain_actor(user: User) -> Actor:
    """The state machine's view of a user."""
    return Actor(
        user_id=user.id,
        username=user.username,
        role=Role(user.role),
        unit=user.org,
        department=user.department,
    )


def _default_owner(ctx: Context, grid: str | None, actor: User | None) -> str:
    """The township of the grid; without a grid the township of the actor's unit (or the actor's
    unit when it sits above township level); with neither, the county."""
    tree = ctx.orgs
    if grid is not None:
        return tree.ancestor_at(grid, "township") or tree.parent_of(grid) or grid
    if actor is not None and actor.org in tree:
        if tree.level_of(actor.org) in _ROUTING_LEVELS:
            return tree.ancestor_at(actor.org, "township") or actor.org
        return actor.org
    counties = tree.units_at("county")
    if not counties:
        raise RuntimeError("the organisation tree has no county to own a case without a place")
    return counties[0].code


# -- create ----------------------------------------------------------------------------------------


async def create_incident(
    ctx: Context,
    *,
    category: str,
    description: str,
    channel: str,
    priority: str | None = None,
    lat: float | None = None,
    lon: float | None = None,
    address: str | None = None,
    reporter_id: int | None = None,
    caller: str | None = None,
    attachments: Sequence[str] = (),
    owner_unit: str | None = None,
    actor: User | None = None,
    observed_at: datetime | None = None,
    extra: Mapping[str, Any] | None = None,
    conn: asyncpg.Connection | None = None,
) -> dict[str, Any]:
    """Open a case (事件上报) and return it as ``GET /api/v1/incidents/{id}`` shows it.

    One transaction (a savepoint in the caller's when ``conn`` is given) writes the case, its
    ``report`` audit event, the accept-deadline timers and an outbox row.  422 on an unknown
    category, priority, channel or owning unit, a blank description or a bad point.
    """
    tree, taxonomy, settings = ctx.orgs, ctx.taxonomy, ctx.settings.incidents
    now = ctx.clock.now()
    if category not in taxonomy:
        raise _field_error("category", "未知的事件类别", "unknown category")
    if priority is None:
        priority = taxonomy.get(category).default_priority
    elif priority not in PRIORITIES:
        raise _field_error("priority", "优先级应为 P1–P4", "priority must be one of P1, P2, P3, P4")
    if channel not in CHANNELS:
        raise _field_error("channel", "未知的来源渠道", "unknown channel; one of " + ", ".join(CHANNELS))
    description = (description or "").strip()
    if not description:
        raise _field_error("description", "不能为空", "must not be empty")
    if (lat is None) != (lon is None):
        raise _field_error("location", "纬度和经度须同时提供", "lat and lon must be given together")
    if lat is not None and lon is not None and not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise _field_error("location", "坐标超出 WGS-84 范围", "point lies outside WGS-84 ranges")
    if owner_unit is not None and owner_unit not in tree:
        raise _field_error("owner_unit", "未知的单位", "unknown unit")
    if observed_at is not None and (observed_at.tzinfo is None or observed_at.utcoffset() is None):
        raise _field_error("observed_at", "时间须带时区", "time must carry a time zone")

    grid = app_locate(ctx, lat, lon)
    owner = owner_unit or _default_owner(ctx, grid, actor)
    address = address.strip() if address and address.strip() else None
    row_values = {
        "category": category,
        "priority": priority,
        "description": description,
        "channel": channel,
        "lat": lat,
        "lon": lon,
        "address": address,
        "grid": grid,
        "community": tree.ancestor_at(grid, "community") if grid else None,
        "township": tree.ancestor_at(grid, "township") if grid else None,
        "county": tree.ancestor_at(grid, "county") if grid else None,
        "place_path": unit_path(tree, grid) if grid else [],
        "reporter_id": reporter_id,
        "caller": store.normalise_caller(caller),
        "attachments": list(dict.fromkeys(attachments)),
        "owner_unit": owner,
        "org_path": unit_path(tree, owner),
        "observed_at": observed_at,
        "extra": dict(extra or {}),
    }
    async with _transaction(ctx, conn) as c:
        number = await store.next_number(c, settings.county_prefix, now.astimezone(LOCAL_TZ))
        row = await c.fetchrow(
            "INSERT INTO incidents (number, state, version, category, priority, description, channel,"
            " channels, lat, lon, address, grid, community, township, county, place_path, reporter_id,"
            " caller, attachments, owner_unit, org_path, observed_at, created_at, updated_at, extra)"
            " VALUES ($1, 'reported', 1, $2, $3, $4, $5, ARRAY[$5]::text[], $6, $7, $8, $9, $10, $11, $12,"
            " $13, $14, $15, $16, $17, $18, $19, $20, $20, $21) RETURNING id",
            number,
            row_values["category"],
            row_values["priority"],
            row_values["description"],
            row_values["channel"],
            row_values["lat"],
            row_values["lon"],
            row_values["address"],
            row_values["grid"],
            row_values["community"],
            row_values["township"],
            row_values["county"],
            row_values["place_path"],
            row_values["reporter_id"],
            row_values["caller"],
            row_values["attachments"],
            row_values["owner_unit"],
            row_values["org_path"],
            row_values["observed_at"],
            now,
            row_values["extra"],
        )
        incident_id: int = row["id"]
        with structlog.contextvars.bound_contextvars(incident_id=incident_id, incident_number=number):
            for effect in on_created(now):
                if isinstance(effect, DeadlineStart):
                    await _start(ctx, c, incident_id, category, priority, effect)
            case_row = await _row(c, incident_id)
            reporter = (
                change_actor(actor) if actor is not None else ChangeActor(reporter_id, channel)
            )
            await record_case(
                ctx,
                c,
                case_row,
                store.REPORT,
                reporter,
                from_state=None,
                detail={"channel": channel, "grid": grid, "owner_unit": owner},
            )
            case = await _full_json(ctx, c, case_row, actor)
            log.info(
                "incident_created",
                channel=channel,
                category=category,
                priority=priority,
                grid=grid,
                owner_unit=owner,
                duplicates=len(case["duplicates"]),
            )
    return case


def app_locate(ctx: Context, lat: float | None, lon: float | None) -> str | None:
    """The grid of a WGS-84 point (point in polygon), or None."""
    if lat is None or lon is None:
        return None
    return ctx.locator.locate(lat, lon)


# -- read ------------------------------------------------------------------------------------------


async def _row(conn: asyncpg.Connection, incident_id: int, *, lock: bool = False) -> asyncpg.Record:
    sql = "SELECT * FROM incidents WHERE id = $1" + (" FOR UPDATE" if lock else "")
    row = await conn.fetchrow(sql, incident_id)
    if row is None:
        raise _not_found()
    return row


async def _full_json(
    ctx: Context, conn: asyncpg.Connection, row: Mapping[str, Any], viewer: User | None
) -> dict[str, Any]:
    tree, taxonomy, settings = ctx.orgs, ctx.taxonomy, ctx.settings.incidents
    case = store.summary_json(row, tree, taxonomy)
    case["timeline"] = await store.timeline(conn, row["id"])
    # Each step's time limit for this case (seconds): the dispatch dialog says what clock it starts.
    try:
        limits = taxonomy.step_limits(row["category"], row["priority"])
        case["limits"] = {step: int(limit.total_seconds()) for step, limit in limits.items()}
    except (KeyError, ValueError):  # a category no longer configured
        case["limits"] = None
    case["merged"] = await store.merged_cases(conn, row["id"])
    case["squad_unit_name"] = (
        await conn.fetchval("SELECT name FROM squad_units WHERE id = $1", row["squad_unit"])
        if row["squad_unit"] is not None
        else None
    )
    duplicates: list[dict[str, Any]] = []
    if State(row["state"]) in store.MERGEABLE:
        duplicates = await store.duplicate_candidates(
            conn,
            row,
            tree=tree,
            viewer=viewer,
            radius_m=settings.duplicate_radius_m,
            window=timedelta(seconds=settings.duplicate_window_s),
            caller_window=timedelta(seconds=settings.duplicate_caller_window_s),
        )
    case["duplicates"] = duplicates
    case["allowed_actions"] = []
    if viewer is not None:
        current, actor = store.to_domain(row), domain_actor(viewer)
        case["allowed_actions"] = [
            *(str(a) for a in allowed_actions(current, actor, tree, rules_of(ctx))),
            *case_operations(current, actor, tree, CONVENERS, CALLERS_OUT),
        ]
    for name, extra in (ctx.get(CASE_EXTRAS) or {}).items():
        case[name] = await extra(ctx, conn, row, viewer)
    return case


async def get_incident(
    ctx: Context,
    incident_id: int,
    viewer: User | None,
    *,
    conn: asyncpg.Connection | None = None,
) -> dict[str, Any] | None:
    """The case with its timeline, merged duplicates and duplicate candidates; None when it does
    not exist or ``viewer`` may not see it (``viewer=None``: no restriction)."""

    async def read(c: asyncpg.Connection) -> dict[str, Any] | None:
        row = await c.fetchrow("SELECT * FROM incidents WHERE id = $1", incident_id)
        if row is None or (viewer is not None and not store.may_view(ctx.orgs, viewer, row)):
            return None
        return await _full_json(ctx, c, row, viewer)

    if conn is not None:
        return await read(conn)
    async with ctx.pool.acquire() as own:
        return await read(own)


# -- another report of the same case --------------------------------------------------------------


async def attach_report(
    ctx: Context,
    incident_id: int,
    *,
    channel: str,
    actor: User | None = None,
    caller: str | None = None,
    attachments: Sequence[str] = (),
    note: str | None = None,
    data: Mapping[str, Any] | None = None,
    conn: asyncpg.Connection | None = None,
) -> dict[str, Any]:
    """Record another report of an existing case (a call attached to it, a repeated grid report):
    the channel joins ``channels``, attachments are added, an ``attach`` audit event and an outbox
    row are written, the version grows.  404 when the case is unknown or ``actor`` may not see it."""
    if channel not in CHANNELS:
        raise _field_error("channel", "未知的来源渠道", "unknown channel; one of " + ", ".join(CHANNELS))
    now = ctx.clock.now()
    async with _transaction(ctx, conn) as c:
        row = await c.fetchrow("SELECT * FROM incidents WHERE id = $1 FOR UPDATE", incident_id)
        if row is None or (actor is not None and not store.may_view(ctx.orgs, actor, row)):
            raise _not_found()
        with structlog.contextvars.bound_contextvars(incident_id=incident_id, incident_number=row["number"]):
            await c.execute(
                "UPDATE incidents SET channels = $2, attachments = $3, version = version + 1, updated_at = $4"
                " WHERE id = $1",
                incident_id,
                store.union(row["channels"], [channel]),
                store.union(row["attachments"], list(attachments)),
                now,
            )
            after = await _row(c, incident_id)
            await record_case(
                ctx,
                c,
                after,
                store.ATTACH,
                change_actor(actor, channel),
                from_state=row["state"],
                note=note,
                detail={
                    "channel": channel,
                    "caller": store.normalise_caller(caller),
                    "attachments": list(attachments),
                    **dict(data or {}),
                },
            )
            case = await _full_json(ctx, c, after, actor)
            log.info("incident_report_attached", channel=channel)
    return case


# -- transitions -----------------------------------------------------------------------------------

_VERSION = Field(
    "version", "integer", required=True, minimum=1, description="the case version the change is based on"
)
_NOTE = Field("note", max_length=4000, description="free-text note for the audit trail")
_REASON = Field("reason", max_length=2000, description="why (required for reject, reopen, escalate)")
_PHOTOS = Field("photos", "array", items="string", max_length=20, description="photo references")

# The body of each action: ``version`` is required; what each action itself requires is checked by
# the state machine after authorisation, so a stranger learns nothing about the case.
ACTION_FIELDS: Final[Mapping[Action, tuple[Field, ...]]] = {
    Action.accept: (_VERSION, _NOTE),
    Action.reject: (_VERSION, _REASON, _NOTE),
    Action.merge: (
        _VERSION,
        Field(
            "merge_into",
            "integer",
            minimum=1,
            description="id of the primary case (required; also read as into)",
        ),
        _NOTE,
    ),
    Action.dispatch: (
        _VERSION,
        Field(
            "department",
            max_length=64,
            description="lead department code; default: the category's department kind nearest the owner",
        ),
        Field(
            "co_departments", "array", items="string", max_length=20, description="co-handling departments"
        ),
        Field("squad_unit", "integer", minimum=1, description="emergency squad unit id"),
        _NOTE,
    ),
    Action.start: (_VERSION, _NOTE),
    Action.feedback: (
        _VERSION,
        Field(
            "department",
            max_length=64,
            description="on whose behalf (officers); handlers feed back for their own",
        ),
        Field("note", max_length=4000, description="what was done (required)"),
        _PHOTOS,
    ),
    Action.verify: (_VERSION, _NOTE, _PHOTOS),
    Action.reopen: (_VERSION, _REASON, _NOTE, _PHOTOS),
    Action.close: (_VERSION, _NOTE),
    Action.evaluate: (
        _VERSION,
        Field("satisfaction", "integer", description="satisfaction from the callback, 1–5 (required)"),
        _NOTE,
    ),
    Action.escalate: (_VERSION, _REASON, _NOTE),
    Action.sign: (_VERSION, _NOTE),
    Action.return_: (_VERSION, _REASON, _NOTE),
    Action.extend_request: (
        _VERSION,
        Field("hours", "integer", minimum=1, maximum=8760, description="how many more hours (required)"),
        _REASON,
    ),
    Action.extend_decide: (
        _VERSION,
        Field("grant", "boolean", description="true: the deadline moves by the hours asked (required)"),
        _NOTE,
    ),
    Action.urge: (_VERSION, _NOTE),
    Action.supervise: (_VERSION, _NOTE),
    Action.callback: (
        _VERSION,
        Field("reached", "boolean", description="whether the reporter was reached (required)"),
        Field("satisfaction", "integer", minimum=1, maximum=5, description="1–5 when reached"),
        Field("reopen", "boolean", description="not satisfied: hand the case back to its departments (发回重办)"),
        _NOTE,
    ),
    Action.assign: (
        _VERSION,
        Field(
            "target_unit",
            max_length=64,
            description="unit below the owning unit (required; also read as unit)",
        ),
        _NOTE,
    ),
}


# Other spellings clients use for a field, accepted when the documented name is absent.
_ALIASES: Final[Mapping[str, str]] = {
    "into": "merge_into",
    "lead_department": "department",
    "unit": "target_unit",
}


def build_command(action: Action, body: Mapping[str, Any]) -> Command:
    """The state machine's command from a request body (422 naming each mistyped field)."""
    spelled = dict(body)
    for alias, name in _ALIASES.items():
        if spelled.get(name) is None and spelled.get(alias) is not None:
            spelled[name] = spelled[alias]
    data = check_fields(spelled, ACTION_FIELDS[action])
    return Command(
        action=action,
        version=data["version"],
        reason=data.get("reason"),
        note=data.get("note"),
        department=data.get("department"),
        co_departments=tuple(data.get("co_departments") or ()),
        squad_unit=data.get("squad_unit"),
        target_unit=data.get("target_unit"),
        merge_into=data.get("merge_into"),
        satisfaction=data.get("satisfaction"),
        photos=tuple(data.get("photos") or ()),
        hours=data.get("hours"),
        grant=data.get("grant"),
        reached=data.get("reached"),
        reopen=data.get("reopen"),
    )


async def apply_action(
    ctx: Context, incident_id: int, action: str, body: Mapping[str, Any], actor: User
) -> dict[str, Any]:
    """Take one step of the closed loop on behalf of ``actor``; return the case after it.

    ``body`` is the request body: ``version`` (the version the actor saw) and the action's
    fields.  404 when the case is unknown or outside the actor's sight, 403 when the role or
    the case's jurisdiction forbids it, 409 (``illegal_transition``, ``stale_version``) with the
    current case in ``error.incident``, 422 for bad input.
    """
    try:
        what = Action(action)
    except ValueError:
        raise not_found("操作", "action") from None
    command = build_command(what, body)
    try:
        async with ctx.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT * FROM incidents WHERE id = $1 FOR UPDATE", incident_id)
            if row is None or not store.may_view(ctx.orgs, actor, row):
                raise _not_found()
            with structlog.contextvars.bound_contextvars(
                incident_id=incident_id, incident_number=row["number"]
            ):
                case = await transition_locked(ctx, conn, row, command, domain_actor(actor), viewer=actor)
    except asyncpg.DeadlockDetectedError:
        raise conflict(
            "案件正被同时修改，请刷新后重试", "the case was changed at the same time; reload and retry"
        ) from None
    return case


async def _refuse(
    ctx: Context,
    conn: asyncpg.Connection,
    row: Mapping[str, Any],
    exc: TransitionError,
    viewer: User | None,
) -> DomainError:
    log.info("incident_action_refused", code=exc.code, state=row["state"], version=row["version"])
    if exc.code == "forbidden":
        return Forbidden(exc.message_zh, exc.message_en)
    if exc.code == "invalid":
        return Invalid(exc.message_zh, exc.message_en)
    current = await _full_json(ctx, conn, row, viewer)
    return Conflict(exc.message_zh, exc.message_en, code=exc.code, extra={"incident": current})


async def transition_locked(
    ctx: Context,
    conn: asyncpg.Connection,
    row: asyncpg.Record,
    command: Command,
    actor: Actor,
    *,
    viewer: User | None,
) -> dict[str, Any]:
    """Decide and persist one command on a case row the caller locked ``FOR UPDATE`` inside its
    transaction; returns the case after it (full JSON for ``viewer``)."""
    tree = ctx.orgs
    now = ctx.clock.now()
    current = store.to_domain(row)
    if command.action is Action.dispatch and command.department is None:
        command = dataclasses.replace(command, department=_default_department(ctx, current))
    try:
        decision = decide(current, command, actor, now, tree, rules_of(ctx))
    except TransitionError as exc:
        raise await _refuse(ctx, conn, row, exc, viewer) from None
    new = decision.incident
    action = command.action

    primary: asyncpg.Record | None = None
    if action is Action.merge:
        primary = await _merge_target(ctx, conn, row, command, viewer)
        new = dataclasses.replace(new, merged_into=primary["id"])
    if action is Action.dispatch:
        unknown = [d for d in new.handling_departments if d not in tree.departments]
        if unknown:
            raise _field_error(
                "department",
                f"未知的部门：{'、'.join(unknown)}",
                f"unknown departments: {', '.join(unknown)}",
            )
    if action is Action.assign and new.owner_unit not in tree:
        raise _field_error("target_unit", "未知的单位", "unknown unit")

    org_path = unit_path(tree, new.owner_unit)
    closing = action is Action.close
    called_back = action is Action.callback
    await conn.execute(
        "UPDATE incidents SET state = $2, version = $3, owner_unit = $4, org_path = $5,"
        " lead_department = $6, co_departments = $7, squad_unit = $8, feedback_from = $9,"
        " merged_into = $10, satisfaction = $11, escalations = $12, updated_at = $13,"
        " accepted_at = CASE WHEN $14 THEN $13 ELSE accepted_at END,"
        " dispatched_at = CASE WHEN $15 THEN coalesce(dispatched_at, $13) ELSE dispatched_at END,"
        " closed_at = CASE WHEN $16 THEN $13 ELSE closed_at END,"
        " closed_unit = CASE WHEN $16 THEN $4 ELSE closed_unit END,"
        " closed_level = CASE WHEN $16 THEN $17 ELSE closed_level END,"
        " evaluated_at = CASE WHEN $18 THEN $13 ELSE evaluated_at END,"
        " signed = $19, returns = $20, extension_hours = $21, extension_department = $22,"
        " extensions = $23, urged = $24, supervised = $25,"
        " callbacks = callbacks + CASE WHEN $26 THEN 1 ELSE 0 END,"
        " callback_at = CASE WHEN $26 THEN $13 ELSE callback_at END,"
        " callback_reached = CASE WHEN $26 THEN $27 ELSE callback_reached END"
        " WHERE id = $1",
        new.id,
        str(new.state),
        new.version,
        new.owner_unit,
        org_path,
        new.lead_department,
        list(new.co_departments),
        new.squad_unit,
        list(new.feedback_from),
        new.merged_into,
        new.satisfaction,
        new.escalations,
        now,
        action is Action.accept,
        action is Action.dispatch,
        closing,
        tree.level_of(new.owner_unit) if closing else None,
        action is Action.evaluate or (called_back and new.state is State.evaluated),
        list(new.signed),
        new.returns,
        new.extension_hours,
        new.extension_department,
        new.extensions,
        new.urged,
        new.supervised,
        called_back,
        command.reached if called_back else None,
    )
    moved: OwnerChanged | None = None
    audit: AuditEvent | None = None
    for effect in decision.effects:
        if isinstance(effect, AuditEvent):
            audit = effect
        elif isinstance(effect, DeadlineCancel):
            await store.stop_clock(conn, new.id, effect.step)
        elif isinstance(effect, DeadlineStart):
            await _start(ctx, conn, new.id, new.category, new.priority, effect)
        elif isinstance(effect, DeadlineExtend):
            await store.extend_clock(conn, new.id, timedelta(hours=effect.hours), now)
        elif isinstance(effect, OwnerChanged):
            moved = effect
    if primary is not None:
        await _absorb(ctx, conn, primary, row, actor, now)

    after = await _row(conn, new.id)
    # The unit that gave the case away hears of it too: the case leaves its board (its path no
    # longer covers the case).
    also_to = (
        [unit_path(tree, moved.from_unit)]
        if moved is not None and moved.from_unit not in after["org_path"]
        else []
    )
    assert audit is not None  # decide() always returns the audit event of the action
    await record_case(
        ctx,
        conn,
        after,
        str(action),
        ChangeActor(actor.user_id or None, actor.username, str(actor.role)),
        from_state=str(current.state),
        note=audit.note,
        detail=audit.data,
        also_to=also_to,
    )
    if new.state in ENDED and current.state not in ENDED:
        # What belongs to the case ends with it (its orders to squads, among others).
        for react in ctx.get(CASE_ENDED) or ():
            await react(ctx, conn, after, actor)
    case = await _full_json(ctx, conn, after, viewer)
    log.info(
        "incident_transition",
        action=str(action),
        from_state=str(current.state),
        to_state=str(new.state),
        version=new.version,
        owner_unit=new.owner_unit,
        actor=actor.username,
    )
    return case


def _default_department(ctx: Context, case: Incident) -> str | None:
    """The category's default handling department kind, nearest to the owning unit (upwards)."""
    category = ctx.taxonomy.categories.get(case.category)
    if category is None:
        return None
    found = ctx.orgs.find_department(case.owner_unit, category.default_department)
    return found.code if found is not None else None


async def _start(
    ctx: Context,
    conn: asyncpg.Connection,
    incident_id: int,
    category: str,
    priority: str,
    effect: DeadlineStart,
) -> None:
    settings = ctx.settings.incidents
    due = await store.start_clock(
        conn,
        ctx.taxonomy,
        incident_id=incident_id,
        category=category,
        priority=priority,
        step=effect.step,
        started_at=effect.started_at,
        warn_share=settings.warn_share,
        grace=timedelta(seconds=settings.escalate_grace),
    )
    log.debug("deadline_start", step=effect.step, due_at=due.isoformat())


async def _merge_target(
    ctx: Context,
    conn: asyncpg.Connection,
    row: Mapping[str, Any],
    command: Command,
    viewer: User | None,
) -> asyncpg.Record:
    """The primary case a duplicate merges into, locked; a chain of merges is followed to its end."""
    target_id = command.merge_into
    assert target_id is not None  # the state machine refused a merge without a target
    seen = {row["id"]}
    while True:
        target = await conn.fetchrow("SELECT * FROM incidents WHERE id = $1 FOR UPDATE", target_id)
        if target is None or (viewer is not None and not store.may_view(ctx.orgs, viewer, target)):
            raise _field_error("merge_into", "目标案件不存在", "no such case to merge into")
        if target["state"] != State.merged or target["merged_into"] is None:
            break
        target_id = target["merged_into"]
        if target_id in seen:
            raise _field_error("merge_into", "合并链出现循环", "the merge chain loops")
        seen.add(target_id)
    if target["id"] == row["id"]:
        raise _field_error("merge_into", "案件不能合并到自身", "a case cannot be merged into itself")
    if target["state"] == State.rejected:
        raise _field_error("merge_into", "目标案件已不予受理", "the target case was rejected")
    return target


async def _absorb(
    ctx: Context,
    conn: asyncpg.Connection,
    primary: Mapping[str, Any],
    duplicate: Mapping[str, Any],
    actor: Actor,
    now: datetime,
) -> None:
    """The primary takes in a merged duplicate: every channel and attachment, an audit event."""
    channels = store.union(primary["channels"], duplicate["channels"])
    attachments = store.union(primary["attachments"], duplicate["attachments"])
    await conn.execute(
        "UPDATE incidents SET channels = $2, attachments = $3, version = version + 1, updated_at = $4"
        " WHERE id = $1",
        primary["id"],
        channels,
        attachments,
        now,
    )
    after = await _row(conn, primary["id"])
    await record_case(
        ctx,
        conn,
        after,
        store.MERGED_IN,
        ChangeActor(actor.user_id or None, actor.username, str(actor.role)),
        from_state=primary["state"],
        detail={"merged_id": duplicate["id"], "merged_number": duplicate["number"], "channels": channels},
    )


# -- list ------------------------------------------------------------------------------------------


async def list_incidents(ctx: Context, query: CaseQuery) -> tuple[list[dict[str, Any]], int | None]:
    """A page of cases (newest first with the default order) and the id to continue before."""
    async with ctx.pool.acquire() as conn:
        rows, next_before = await find(conn, query)
    return [store.summary_json(r, ctx.orgs, ctx.taxonomy) for r in rows], next_before
