"""The call queue and its records: one PostgreSQL transaction per change of a call.

A call is *offered* when it reaches the hotline (a SIP INVITE, or a CTI ``ringing`` event) and
then is, in turn:

* ``ringing`` — an officer's console rings: the available duty officer idle longest whose
  jurisdiction covers the hotline's unit, one call at a time per officer; after
  ``[hotline] ring_timeout`` the ring passes to the next one (and that officer goes to the back);
* ``queued`` — nobody is free: it waits, oldest first, for the next available officer;
* ``answered`` — an officer took it (any duty officer of the jurisdiction may, rung or not);
* ``abandoned`` — the caller hung up before the answer;
* ``ended`` — it was answered and is over, or the officer refused it while it rang.

An answered call given to another officer (``transfer``) rings again on their console, keeping its
first answer time and its history; hold, resume, a transfer to a number and a choice in the line's
menu change it without changing its state. The lifecycle is :mod:`dispatchd.domain.calls`.

``wait_seconds`` is offer to answer (or to abandonment), ``talk_seconds`` answer to end. Each change
writes the call row (its next version) and is recorded as entity ``call``
(:func:`dispatchd.store.changes.record`: the audit log and the outbox, routed by the hotline unit's
path), in one transaction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import asyncpg
import structlog

from dispatchd.channels.hotline.agent import CallStateError
from dispatchd.channels.hotline.presence import Officer
from dispatchd.channels.hotline.slots import HOTLINES, PRESENCE, SIP
from dispatchd.clock import LOCAL_TZ
from dispatchd.config import ConfigError
from dispatchd.context import Context
from dispatchd.domain import calls as machine
from dispatchd.domain.hotlines import normalise_number
from dispatchd.domain.incident import OPEN_STATES
from dispatchd.errors import Conflict, Invalid, conflict, not_found
from dispatchd.incidents import store as incident_store
from dispatchd.incidents.query import CaseQuery
from dispatchd.incidents.service import attach_report, create_incident
from dispatchd.store.changes import Actor as ChangeActor
from dispatchd.store.changes import Change, bump, record, trail
from dispatchd.store.keys import hotline_instance
from dispatchd.store.orgs import unit_path
from dispatchd.store.users import User

log = structlog.get_logger("dispatchd.hotline")

TOPIC: Final = "call"
STATES: Final = machine.STATES
WAITING: Final = machine.WAITING
LIVE: Final = machine.LIVE
# Serialises queue rounds across instances (pg_try_advisory_xact_lock): "hotline".
QUEUE_LOCK: Final = 0x686F746C696E65


@dataclass(frozen=True, slots=True)
class NewCall:
    """A call reaching the hotline: from SIP (``external_id`` = Call-ID;from-tag) or a CTI system."""

    source: str
    external_id: str
    caller: str
    dialled: str
    caller_name: str = ""
    instance_id: str | None = None
    at: datetime | None = None


def hotline_org(ctx: Context) -> str:
    """The unit whose desk takes the hotline: ``[hotline] org``, else the first county."""
    code = ctx.settings.hotline.org
    tree = ctx.orgs
    if code:
        if code not in tree:
            raise ConfigError("[hotline] org", code, "must be the code of a unit of the organisation tree")
        return code
    counties = tree.units_at("county")
    return counties[0].code if counties else next(iter(tree.units))


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _seconds(delta: timedelta) -> float:
    return round(max(delta.total_seconds(), 0.0), 3)


def call_json(ctx: Context, row: Mapping[str, Any]) -> dict[str, Any]:
    """A call as the API, the board and the change feed show it."""
    now = ctx.clock.now()
    offered, answered, ended = row["offered_at"], row["answered_at"], row["ended_at"]
    if answered is not None:
        wait = _seconds(answered - offered)
    else:
        wait = _seconds((ended or now) - offered)
    talk = _seconds((ended or now) - answered) if answered is not None else None
    department = ctx.orgs.departments.get(row["department_code"]) if row["department_code"] else None
    return {
        "id": row["id"],
        "source": row["source"],
        "caller": row["caller"],
        "caller_name": row["caller_name"],
        "dialled": row["dialled"],
        "line": {"zh-CN": row["line_name"], "en": row["line_name_en"]},
        "department": row["department_code"],
        "department_kind": row["department_kind"],
        "department_name": (
            {"zh-CN": department.name, "en": department.name_en} if department is not None else None
        ),
        "category": row["category"],
        "org": row["org_code"],
        "state": row["state"],
        "ringing_user_id": row["ringing_user_id"],
        "ring_deadline": _iso(row["ring_deadline"]),
        "agent_user_id": row["agent_user_id"],
        "agent_name": row["agent_name"],
        "offered_at": _iso(offered),
        "answered_at": _iso(answered),
        "ended_at": _iso(ended),
        "end_reason": row["end_reason"],
        "wait_seconds": wait,
        "talk_seconds": talk,
        "incident_id": row["incident_id"],
        "recording": row["recording"] is not None,
        "version": row["version"],
    }


# ---- writing ------------------------------------------------------------------------------------


async def _change(
    ctx: Context,
    conn: asyncpg.Connection,
    row: Mapping[str, Any],
    event: str,
    *,
    actor: User | None = None,
    actor_name: str | None = None,
    data: Mapping[str, Any] | None = None,
    publish: bool = True,
    **columns: Any,
) -> asyncpg.Record:
    """One change of a call: the state machine's new state and ``columns``, recorded, in the
    caller's transaction. :class:`~dispatchd.errors.Conflict` when ``event`` cannot happen now."""
    try:
        state = machine.next_state(row["state"], event)
    except machine.CallStateConflict as exc:
        raise Conflict(exc.message_zh, exc.message_en, code="call_state", extra={"call": call_json(ctx, row)}) from None
    new = await bump(conn, "call", row["id"], {**columns, "state": state}) if columns or state != row["state"] else row
    who = ChangeActor.of(actor, actor_name or "system")
    before = row["state"] if event != "offered" else None
    change = Change.of(TOPIC, new, event, call_json(ctx, new), who, ctx.clock.now(), from_state=before, detail=data)
    await record(conn, change, publish=publish)
    return new


async def offer(ctx: Context, call: NewCall) -> dict[str, Any]:
    """Record a new call and ring an officer or queue it; a call already known is returned as is."""
    tree = ctx.orgs
    directory = ctx[HOTLINES]
    route = directory.route(call.dialled)
    dialled = normalise_number(call.dialled, directory.area_code) or call.dialled
    org = hotline_org(ctx)
    department = tree.find_department(org, route.department_kind) if route is not None else None
    caller = incident_store.normalise_caller(call.caller) or "anonymous"
    now = ctx.clock.now()
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO hotline_calls (source, external_id, instance_id, caller, caller_name, dialled,"
            " line_name, line_name_en, department_kind, department_code, category, org_code, org_path,"
            " state, offered_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 'queued', $14)"
            " ON CONFLICT (source, external_id) DO NOTHING RETURNING *",
            call.source,
            call.external_id,
            call.instance_id,
            caller,
            call.caller_name[:100],
            dialled,
            route.name if route else "",
            route.name_en if route else "",
            route.department_kind if route else None,
            department.code if department else None,
            route.category if route else None,
            org,
            unit_path(tree, org),
            call.at or now,
        )
        if row is None:
            existing = await conn.fetchrow(
                "SELECT * FROM hotline_calls WHERE source = $1 AND external_id = $2",
                call.source,
                call.external_id,
            )
            assert existing is not None
            return call_json(ctx, existing)
        officer = await _pick_officer(ctx, conn, org, exclude=set())
        # A call rung at once is news for the boards only as ringing.
        await _change(
            ctx, conn, row, "offered", actor_name=call.source, data={"dialled": dialled}, publish=officer is None
        )
        if officer is not None:
            row = await _ring(ctx, conn, row, officer)
    ctx.metrics.hotline_calls.labels(call.source, "offered").inc()
    log.info(
        "call_offered",
        call_id=row["id"],
        source=call.source,
        caller=caller,
        dialled=dialled,
        department=row["department_code"],
        state=row["state"],
    )
    return call_json(ctx, row)


async def _pick_officer(
    ctx: Context, conn: asyncpg.Connection, org: str, exclude: set[int]
) -> Officer | None:
    """The available officer idle longest who sees ``org`` and whose console rings for no other call."""
    ringing = {
        r["ringing_user_id"]
        for r in await conn.fetch(
            "SELECT ringing_user_id FROM hotline_calls WHERE state = 'ringing' AND ringing_user_id IS NOT NULL"
        )
    }
    tree = ctx.orgs
    for officer in await ctx[PRESENCE].available():
        if officer.user_id in exclude or officer.user_id in ringing:
            continue
        if officer.org in tree and tree.is_within(org, officer.org):
            return officer
    return None


async def _ring(
    ctx: Context, conn: asyncpg.Connection, row: Mapping[str, Any], officer: Officer
) -> asyncpg.Record:
    deadline = ctx.clock.now() + timedelta(seconds=ctx.settings.hotline.ring_timeout)
    return await _change(
        ctx,
        conn,
        row,
        "ring",
        data={"officer": officer.username},
        ringing_user_id=officer.user_id,
        ring_deadline=deadline,
    )


async def _locked(conn: asyncpg.Connection, call_id: int) -> asyncpg.Record | None:
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM hotline_calls WHERE id = $1 FOR UPDATE", call_id
    )
    return row


def _visible(ctx: Context, user: User | None, row: Mapping[str, Any]) -> bool:
    return user is None or ctx.orgs.is_within(row["org_code"], user.org)


def _state_conflict(row: Mapping[str, Any], ctx: Context) -> Conflict:
    return conflict(
        f"来电状态为 {row['state']}，不能执行此操作",
        f"the call is {row['state']}; this cannot be done now",
        code="call_state",
        extra={"call": call_json(ctx, row)},
    )


def state_conflict(row: Mapping[str, Any], ctx: Context) -> Conflict:
    """Conflict ``call_state`` with the call as it is (for commands of other modules on a call)."""
    return _state_conflict(row, ctx)


async def record_event(
    ctx: Context,
    call_id: int,
    user: User | None,
    event: str,
    data: Mapping[str, Any],
    **columns: Any,
) -> dict[str, Any]:
    """One change of a call made elsewhere (hold, resume, transfer, a menu choice): the lifecycle's
    next state (:mod:`dispatchd.domain.calls`), the columns given and the next version, recorded in
    one transaction. :class:`~dispatchd.errors.Conflict` when ``event`` cannot happen now."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _locked(conn, call_id)
        if row is None:
            raise not_found("来电", "call")
        row = await _change(
            ctx,
            conn,
            row,
            event,
            actor=user,
            data=data,
            **(columns or {"state": row["state"]}),  # the version moves even when nothing else does
        )
    return call_json(ctx, row)


class RemoteCall(Exception):
    """The call's SIP dialog lives on another instance: the command must be carried out there."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(instance_id)
        self.instance_id = instance_id


async def answer(ctx: Context, call_id: int, user: User) -> dict[str, Any]:
    """The officer takes the call: 200 OK to the caller (SIP), state ``answered``.

    Raises :class:`RemoteCall` when another instance holds the SIP dialog; 409 when the call is no
    longer waiting or is a CTI call (its PBX answers it).
    """
    now = ctx.clock.now()
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _locked(conn, call_id)
        if row is None or not _visible(ctx, user, row):
            raise not_found("来电", "call")
        if row["state"] not in WAITING:
            raise _state_conflict(row, ctx)
        if row["source"] == "cti":
            raise conflict(
                "此来电由中心自有交换机接听", "this call is answered on the centre's own PBX", code="cti_call"
            )
        if row["instance_id"] != ctx.instance_id:
            raise RemoteCall(row["instance_id"] or "")
        edge = ctx[SIP].edge
        if edge is None:
            raise conflict("本实例未接入 SIP", "this instance takes no SIP calls", code="sip_unavailable")
        try:
            recording = await edge.answer(row["external_id"], row["id"])
        except CallStateError:
            raise conflict("来电已挂断", "the caller has already hung up", code="call_gone") from None
        try:
            row = await _change(
                ctx,
                conn,
                row,
                "answer",
                actor=user,
                answered_at=row["answered_at"] or now,  # a transferred call keeps its first answer
                agent_user_id=user.id,
                agent_name=user.username,
                ringing_user_id=None,
                ring_deadline=None,
                recording=recording,
            )
        except BaseException:
            edge.hangup(row["external_id"])
            raise
    await ctx[PRESENCE].busy(user.id)
    ctx.metrics.hotline_calls.labels(row["source"], "answered").inc()
    log.info(
        "call_answered", call_id=call_id, officer=user.username, wait_s=call_json(ctx, row)["wait_seconds"]
    )
    return call_json(ctx, row)


async def hangup(ctx: Context, call_id: int, user: User) -> dict[str, Any]:
    """The officer ends the call: BYE when answered, 480 while it still rings (state ``ended``)."""
    now = ctx.clock.now()
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _locked(conn, call_id)
        if row is None or not _visible(ctx, user, row):
            raise not_found("来电", "call")
        if row["state"] not in LIVE:
            raise _state_conflict(row, ctx)
        if row["source"] == "cti":
            raise conflict(
                "此来电由中心自有交换机挂断", "this call is ended on the centre's own PBX", code="cti_call"
            )
        if row["instance_id"] != ctx.instance_id:
            raise RemoteCall(row["instance_id"] or "")
        edge = ctx[SIP].edge
        if edge is not None:
            edge.hangup(row["external_id"])
            edge.finished(row["external_id"])
        reason = "officer_hangup" if row["state"] == "answered" else "refused"
        row = await _change(
            ctx,
            conn,
            row,
            "end",
            actor=user,
            data={"reason": reason},
            ended_at=now,
            end_reason=reason,
            ringing_user_id=None,
            ring_deadline=None,
        )
    if row["agent_user_id"] is not None:
        await ctx[PRESENCE].idle(row["agent_user_id"])
    ctx.metrics.hotline_calls.labels(row["source"], "ended").inc()
    log.info("call_ended", call_id=call_id, reason=reason, officer=user.username)
    return call_json(ctx, row)


async def caller_gone(
    ctx: Context, source: str, external_id: str, reason: str, *, at: datetime | None = None
) -> dict[str, Any] | None:
    """The caller hung up (SIP CANCEL or BYE, CTI ``ended``): abandoned while waiting, else ended."""
    now = at or ctx.clock.now()
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT * FROM hotline_calls WHERE source = $1 AND external_id = $2 FOR UPDATE",
            source,
            external_id,
        )
        if row is None or row["state"] not in LIVE:
            return None
        # Waiting after a transfer is not abandoning: the caller was answered before.
        event = "abandon" if row["state"] in WAITING and row["answered_at"] is None else "end"
        row = await _change(
            ctx,
            conn,
            row,
            event,
            actor_name=source,
            data={"reason": reason},
            ended_at=max(now, row["offered_at"]),
            end_reason=reason,
            ringing_user_id=None,
            ring_deadline=None,
        )
    if row["agent_user_id"] is not None:
        await ctx[PRESENCE].idle(row["agent_user_id"])
    ctx.metrics.hotline_calls.labels(source, "abandoned" if event == "abandon" else "ended").inc()
    log.info("call_" + ("abandoned" if event == "abandon" else "ended"), call_id=row["id"], reason=reason)
    return call_json(ctx, row)


async def cti_answered(
    ctx: Context, external_id: str, agent: str | None, at: datetime | None
) -> dict[str, Any] | None:
    """A CTI ``answered`` event: the PBX's agent took the call (matched to a user by username)."""
    now = at or ctx.clock.now()
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT * FROM hotline_calls WHERE source = 'cti' AND external_id = $1 FOR UPDATE", external_id
        )
        if row is None or row["state"] not in WAITING:
            return call_json(ctx, row) if row is not None else None
        user_id = None
        if agent:
            user_id = await conn.fetchval("SELECT id FROM users WHERE username = $1", agent)
        row = await _change(
            ctx,
            conn,
            row,
            "answer",
            actor_name=agent or "cti",
            answered_at=max(now, row["offered_at"]),
            agent_user_id=user_id,
            agent_name=agent,
            ringing_user_id=None,
            ring_deadline=None,
        )
    if user_id is not None:
        await ctx[PRESENCE].busy(user_id)
    ctx.metrics.hotline_calls.labels("cti", "answered").inc()
    return call_json(ctx, row)


async def link_incident(
    ctx: Context,
    call_id: int,
    user: User,
    *,
    create: Mapping[str, Any] | None = None,
    attach_to: int | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Make a case of the call (``create``: category, description, …) or attach it to one.

    One transaction: the case (created, or another report attached to it), the call's link and
    both outbox rows. 409 when the call is already linked; 422 without a category where the line
    has none.
    """
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _locked(conn, call_id)
        if row is None or not _visible(ctx, user, row):
            raise not_found("来电", "call")
        if row["incident_id"] is not None:
            raise conflict(
                "此来电已关联案件",
                "the call is already linked to a case",
                code="call_linked",
                extra={"call": call_json(ctx, row)},
            )
        hotline = {
            "call_id": row["id"],
            "dialled": row["dialled"],
            "line": row["line_name"],
            "department": row["department_code"],
        }
        if create is not None:
            category = create.get("category") or row["category"]
            if not category:
                raise Invalid(
                    "字段有误：category（此线路没有默认类别）",
                    "invalid fields: category (this line has no default category)",
                    fields={"category": ("必填", "is required")},
                )
            location = create.get("location") or {}
            case = await create_incident(
                ctx,
                category=str(category),
                description=str(create.get("description") or ""),
                channel="hotline",
                priority=create.get("priority"),
                lat=location.get("lat") if isinstance(location, Mapping) else None,
                lon=location.get("lon") if isinstance(location, Mapping) else None,
                address=create.get("address"),
                caller=row["caller"] if row["caller"] != "anonymous" else None,
                actor=user,
                extra={"hotline": hotline},
                conn=conn,
            )
            event = "incident"
        else:
            assert attach_to is not None
            case = await attach_report(
                ctx,
                attach_to,
                channel="hotline",
                actor=user,
                caller=row["caller"],
                note=f"来电 #{row['id']} {row['line_name']}".strip(),
                data={"hotline": hotline},
                conn=conn,
            )
            event = "attach"
        row = await _change(
            ctx,
            conn,
            row,
            event,
            actor=user,
            data={"incident_id": case["id"], "incident_number": case["number"]},
            incident_id=case["id"],
        )
    log.info("call_linked", call_id=call_id, incident_id=case["id"], how=event)
    return call_json(ctx, row), case


# ---- the queue round -----------------------------------------------------------------------------


async def queue_round(ctx: Context) -> int:
    """Pass expired rings to the next officer, hand waiting calls to free officers, and close the
    calls of instances that are gone. Returns how many calls changed. One instance at a time."""
    now = ctx.clock.now()
    changed = 0
    passed: list[int] = []
    async with ctx.pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval("SELECT pg_try_advisory_xact_lock($1)", QUEUE_LOCK):
            return 0
        present = {o.user_id for o in await ctx[PRESENCE].available()}
        rows = await conn.fetch(
            "SELECT * FROM hotline_calls WHERE state IN ('ringing', 'queued') ORDER BY offered_at, id FOR UPDATE"
        )
        # First every ring that is over (timed out, or its officer left) stops, so that all the
        # officers freed this round can be rung again below, each by another call than the one
        # they let pass.
        excluded: dict[int, set[int]] = {}
        waiting: list[asyncpg.Record] = []
        for row in rows:
            if row["state"] == "ringing" and row["ringing_user_id"] is not None:
                expired = row["ring_deadline"] is not None and row["ring_deadline"] <= now
                if not expired and row["ringing_user_id"] in present:
                    continue
                if expired:
                    excluded[row["id"]] = {row["ringing_user_id"]}
                    passed.append(row["ringing_user_id"])
                cleared = await conn.fetchrow(
                    "UPDATE hotline_calls SET ringing_user_id = NULL WHERE id = $1 RETURNING *", row["id"]
                )
                assert cleared is not None
                row = cleared
            waiting.append(row)
        for row in waiting:
            officer = await _pick_officer(ctx, conn, row["org_code"], excluded.get(row["id"], set()))
            if officer is not None:
                await _ring(ctx, conn, row, officer)
                changed += 1
            elif row["state"] == "ringing":
                await _change(
                    ctx, conn, row, "queue", ringing_user_id=None, ring_deadline=None
                )
                changed += 1
        # SIP calls held by an instance that stopped (its heartbeat key expired) cannot go on.
        instances = [
            r["instance_id"]
            for r in await conn.fetch(
                "SELECT DISTINCT instance_id FROM hotline_calls WHERE source = 'sip' AND state IN"
                " ('ringing', 'queued', 'answered') AND instance_id IS NOT NULL"
            )
        ]
        lost = [
            i for i in instances if i != ctx.instance_id and not await ctx.redis.exists(hotline_instance(i))
        ]
        changed += await _close_calls_of(ctx, conn, lost, "instance_lost")
    for user_id in passed:
        await ctx[PRESENCE].passed(user_id)
    return changed


# ---- reading ------------------------------------------------------------------------------------


async def _close_calls_of(
    ctx: Context, conn: asyncpg.Connection, instances: Sequence[str], reason: str
) -> int:
    """End the live SIP calls held by ``instances`` (abandoned while waiting, else ended)."""
    if not instances:
        return 0
    now = ctx.clock.now()
    rows = await conn.fetch(
        "SELECT * FROM hotline_calls WHERE source = 'sip' AND instance_id = ANY($1) AND state IN"
        " ('ringing', 'queued', 'answered') FOR UPDATE",
        list(instances),
    )
    for row in rows:
        waiting = row["state"] in WAITING
        await _change(
            ctx,
            conn,
            row,
            "abandon" if waiting else "end",
            data={"reason": reason},
            ended_at=now,
            end_reason=reason,
            ringing_user_id=None,
            ring_deadline=None,
        )
    return len(rows)


async def close_own_calls(ctx: Context, reason: str = "shutdown") -> int:
    """This instance stops: its SIP calls cannot go on."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        return await _close_calls_of(ctx, conn, [ctx.instance_id], reason)


async def forget_recordings(ctx: Context, prefix: str) -> int:
    """The retention deleted the recordings under ``prefix`` (a day folder): the calls that had one
    no longer do, each change recorded (audit only: no board shows calls that old)."""
    days = ctx.settings.voice.recording_days
    async with ctx.pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT * FROM hotline_calls WHERE recording LIKE $1 || '%' ORDER BY id FOR UPDATE", prefix
        )
        for row in rows:
            await _change(
                ctx,
                conn,
                row,
                "recording_deleted",
                actor_name="retention",
                data={"days": days},
                publish=False,
                recording=None,
            )
    return len(rows)


async def timeline(conn: asyncpg.Connection, call_id: int) -> list[dict[str, Any]]:
    """The call's trail in the audit log, oldest first."""
    return [
        {
            "at": e["at"].isoformat(),
            "event": e["action"],
            "action": e["action"],
            "from_state": e["from_state"],
            "to_state": e["to_state"],
            "actor_name": e["actor_name"],
            "data": e["data"],
        }
        for e in await trail(conn, TOPIC, call_id)
    ]


async def get_call(ctx: Context, call_id: int, user: User | None) -> asyncpg.Record | None:
    async with ctx.pool.acquire() as conn:
        row: asyncpg.Record | None = await conn.fetchrow("SELECT * FROM hotline_calls WHERE id = $1", call_id)
    if row is None or not _visible(ctx, user, row):
        return None
    return row


async def list_calls(
    ctx: Context,
    user: User,
    *,
    states: Sequence[str] = (),
    limit: int = 100,
    before: int | None = None,
) -> list[dict[str, Any]]:
    """Calls of the viewer's jurisdiction, newest first, each with its caller's history in brief."""
    args: list[Any] = [user.org]
    where = ["c.org_path @> ARRAY[$1]::text[]"]
    if states:
        args.append(list(states))
        where.append(f"c.state = ANY(${len(args)})")
    if before is not None:
        args.append(before)
        where.append(f"c.id < ${len(args)}")
    args.append(limit)
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            f"SELECT * FROM hotline_calls c WHERE {' AND '.join(where)} ORDER BY c.id DESC LIMIT ${len(args)}",
            *args,
        )
        briefs = await _histories(ctx, conn, [r["caller"] for r in rows], user)
    out = []
    for row in rows:
        call = call_json(ctx, row)
        history = briefs.get(row["caller"], {"calls": 0, "cases": []})
        call["history"] = {
            "previous_calls": sum(1 for c in history["calls"] if c < row["id"]),
            "cases": history["cases"],
        }
        out.append(call)
    return out


def _case_brief(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "number": row["number"],
        "state": row["state"],
        "category": row["category"],
        "created_at": _iso(row["created_at"]),
    }


async def _cases_of(
    conn: asyncpg.Connection, callers: Sequence[str], user: User | None, root: str | None
) -> list[asyncpg.Record]:
    """Cases reported by these numbers, or linked to their calls, that the viewer may see."""
    args: list[Any] = [list(callers)]
    scope = CaseQuery(viewer=user, unit=root if user is None else None).where(args) or "TRUE"
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT DISTINCT ON (x.caller, i.id) x.caller AS by_caller, i.* FROM ("
        " SELECT caller, id AS incident_id FROM incidents WHERE caller = ANY($1)"
        " UNION SELECT caller, incident_id FROM hotline_calls WHERE caller = ANY($1) AND incident_id IS NOT NULL"
        f") x JOIN incidents i ON i.id = x.incident_id WHERE {scope}",
        *args,
    )
    return sorted(rows, key=lambda r: (r["created_at"], r["id"]), reverse=True)


async def _histories(
    ctx: Context,
    conn: asyncpg.Connection,
    callers: Sequence[str],
    user: User | None,
    root: str | None = None,
) -> dict[str, dict[str, Any]]:
    numbers = sorted({c for c in callers if c and c != "anonymous"})
    if not numbers:
        return {}
    limit = ctx.settings.hotline.history_limit
    out: dict[str, dict[str, Any]] = {n: {"calls": [], "cases": []} for n in numbers}
    for r in await conn.fetch(
        "SELECT caller, array_agg(id ORDER BY id) AS ids FROM hotline_calls WHERE caller = ANY($1) GROUP BY caller",
        numbers,
    ):
        out[r["caller"]]["calls"] = list(r["ids"])
    for r in await _cases_of(conn, numbers, user, root):
        cases = out[r["by_caller"]]["cases"]
        if len(cases) < limit:
            cases.append(_case_brief(r))
    return out


async def caller_history(ctx: Context, row: Mapping[str, Any], user: User) -> dict[str, Any]:
    """The caller's previous calls and cases, and their open cases of the last
    ``[incidents] duplicate_caller_window_s`` seconds, suggested as the same matter (duplicates)."""
    caller = row["caller"]
    limit = ctx.settings.hotline.history_limit
    if not caller or caller == "anonymous":
        return {"previous_calls": [], "cases": [], "suggested_duplicates": []}
    window = timedelta(seconds=ctx.settings.incidents.duplicate_caller_window_s)
    async with ctx.pool.acquire() as conn:
        calls = await conn.fetch(
            "SELECT * FROM hotline_calls WHERE caller = $1 AND id <> $2 AND offered_at <= $3"
            " ORDER BY offered_at DESC, id DESC LIMIT $4",
            caller,
            row["id"],
            row["offered_at"],
            limit,
        )
        cases = await _cases_of(conn, [caller], user, None)
    suggested = [
        {**_case_brief(c), "reasons": ["same_caller"]}
        for c in cases
        if c["state"] in OPEN_STATES
        and abs(c["created_at"] - row["offered_at"]) <= window
        and c["id"] != row["incident_id"]
    ]
    return {
        "previous_calls": [call_json(ctx, c) for c in calls],
        "cases": [_case_brief(c) for c in cases[:limit]],
        "suggested_duplicates": suggested,
    }


def _top(ctx: Context, codes: frozenset[str]) -> str | None:
    """The top unit of a jurisdiction (a unit and everything below it)."""
    tree = ctx.orgs
    for code in sorted(codes):
        parent = tree.units[code].parent if code in tree else None
        if code in tree and (parent is None or parent not in codes):
            return code
    return None


async def board_section(ctx: Context, codes: frozenset[str]) -> dict[str, Any]:
    """The ``calls`` board section: live calls of the jurisdiction with their callers' history in
    brief, and today's counters (offered, answered, abandoned, answered within the target)."""
    root = _top(ctx, codes)
    if root is None:
        return {"live": [], "counters": {}}
    now = ctx.clock.now()
    today = now.astimezone(LOCAL_TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    target = ctx.settings.hotline.answer_target
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM hotline_calls WHERE org_path @> ARRAY[$1]::text[]"
            " AND state IN ('ringing', 'queued', 'answered') ORDER BY offered_at, id",
            root,
        )
        counters = await conn.fetchrow(
            "SELECT count(*) AS offered,"
            " count(*) FILTER (WHERE answered_at IS NOT NULL) AS answered,"
            " count(*) FILTER (WHERE state = 'abandoned') AS abandoned,"
            " count(*) FILTER (WHERE answered_at - offered_at <= make_interval(secs => $3)) AS answered_in_target,"
            " count(*) FILTER (WHERE state IN ('ringing', 'queued')) AS waiting"
            " FROM hotline_calls WHERE org_path @> ARRAY[$1]::text[] AND offered_at >= $2",
            root,
            today,
            target,
        )
        briefs = await _histories(ctx, conn, [r["caller"] for r in rows], None, root)
    live = []
    for row in rows:
        call = call_json(ctx, row)
        history = briefs.get(row["caller"], {"calls": [], "cases": []})
        call["history"] = {
            "previous_calls": sum(1 for c in history["calls"] if c < row["id"]),
            "cases": history["cases"],
        }
        live.append(call)
    return {"live": live, "counters": dict(counters) if counters else {}}
