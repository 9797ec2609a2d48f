"""Calls out as records: callbacks, calls to departments and 叫应, and the units' call lists.

A service on the :class:`~dispatchd.context.Context`: it reads and writes PostgreSQL and raises
:mod:`dispatchd.errors`; the SIP and media side lives in :mod:`dispatchd.channels.hotline.dialer`.
A call out is an entity of its own, ``callout``: its creation and every change (:func:`record`;
:func:`close_own` when the instance stops; a recording deleted by the retention) write its row with
the next version and are recorded (:mod:`dispatchd.store.changes`) in the same transaction, routed
by the placing desk's unit. A change of a unit's call list is a change of the unit
(:func:`dispatchd.units.service.record_change`). 叫应 runs are claimed once per order in
``voice_escalations``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import asyncpg
import structlog

from dispatchd.context import Context
from dispatchd.domain.hotlines import normalise_number
from dispatchd.errors import Conflict, Invalid, NotFound
from dispatchd.incidents.store import visibility_sql
from dispatchd.store.changes import Actor, Change, bump
from dispatchd.store.changes import record as record_change
from dispatchd.store.orgs import unit_path
from dispatchd.store.users import User
from dispatchd.units.service import record_change as record_unit_change

log = structlog.get_logger("dispatchd.voice")

__all__ = [
    "KINDS",
    "call_list",
    "callout_json",
    "claim_escalations",
    "close_own",
    "create",
    "finish_escalation",
    "forget_recordings",
    "get",
    "list_for_incident",
    "record",
    "set_call_list",
]

ENTITY: Final = "callout"
KINDS: Final = ("callback", "department", "escalation", "notice")
LIVE: Final = ("dialling", "ringing", "answered")
AWAITING_ACCEPT: Final = ("pending", "delivered")


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def callout_json(row: Mapping[str, Any]) -> dict[str, Any]:
    talk = None
    if row["answered_at"] is not None and row["ended_at"] is not None:
        talk = round((row["ended_at"] - row["answered_at"]).total_seconds(), 3)
    return {
        "id": row["id"],
        "kind": row["kind"],
        "number": row["number"],
        "org": row["org_code"],
        "incident_id": row["incident_id"],
        "order_id": row["order_id"],
        "officer_id": row["officer_id"],
        "callee_id": row["callee_id"],
        "state": row["state"],
        "result": row["result"],
        "sip_status": row["sip_status"],
        "created_at": _iso(row["created_at"]),
        "ringing_at": _iso(row["ringing_at"]),
        "answered_at": _iso(row["answered_at"]),
        "ended_at": _iso(row["ended_at"]),
        "talk_seconds": talk,
        "recording": row["recording"] is not None,
        "version": row["version"],
    }


async def _incident_for(conn: asyncpg.Connection, incident_id: int, user: User) -> asyncpg.Record:
    args: list[Any] = [incident_id]
    clause = visibility_sql(user, args)
    row: asyncpg.Record | None = await conn.fetchrow(
        f"SELECT * FROM incidents i WHERE i.id = $1 AND {clause}", *args
    )
    if row is None:
        raise NotFound("案件不存在", "case not found")
    return row


def _number(ctx: Context, raw: str, area_code: str) -> str:
    number = normalise_number(raw, area_code)
    if number is None or not 3 <= len(number) <= 20:
        raise Invalid(
            "号码无效",
            "not a dialable number",
            fields={"number": ("不是可拨打的号码", "not a dialable number")},
        )
    return number


async def create(
    ctx: Context,
    *,
    kind: str,
    org: str,
    area_code: str,
    number: str | None,
    incident_id: int | None = None,
    order_id: int | None = None,
    officer: User | None = None,
    callee_id: int | None = None,
) -> dict[str, Any]:
    """A new call out, ``dialling``. A callback without a number rings the case's reporter."""
    if kind not in KINDS:
        raise Invalid("类型无效", "unknown kind", fields={"kind": ("类型无效", "unknown kind")})
    async with ctx.pool.acquire() as conn:
        if incident_id is not None and officer is not None:
            case = await _incident_for(conn, incident_id, officer)
            if not number:
                number = case["caller"]
        if not number:
            raise Invalid(
                "缺少号码（案件没有来电号码）",
                "a number is needed (the case has no caller's number)",
                fields={"number": ("必填", "is required")},
            )
        dialled = _number(ctx, number, area_code)
        async with conn.transaction():
            row = await conn.fetchrow(
                "INSERT INTO voice_callouts (kind, number, org_code, org_path, incident_id, order_id, officer_id,"
                " callee_id, instance_id, state, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'dialling', $10)"
                " RETURNING *",
                kind,
                dialled,
                org,
                unit_path(ctx.orgs, org),
                incident_id,
                order_id,
                officer.id if officer is not None else None,
                callee_id,
                ctx.instance_id,
                ctx.clock.now(),
            )
            assert row is not None
            who = Actor.of(officer, "escalation" if kind == "escalation" else "system")
            await record_change(
                conn,
                Change.of(ENTITY, row, "created", callout_json(row), who, ctx.clock.now(), detail={"kind": kind}),
            )
    log.info("callout_created", callout_id=row["id"], kind=kind, phone=dialled, incident_id=incident_id)
    return callout_json(row)


async def record(
    ctx: Context, callout_id: int, action: str, actor: User | None = None, **columns: Any
) -> dict[str, Any]:
    """One change of a call out (``action``: dialled, ringing, answered, ended, failed): its columns
    and next version, recorded in the same transaction (``actor``: the officer, else the system)."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        before = await conn.fetchrow("SELECT state FROM voice_callouts WHERE id = $1 FOR UPDATE", callout_id)
        if before is None:
            raise NotFound("外呼不存在", "call out not found")
        row = await _changed(ctx, conn, callout_id, action, Actor.of(actor), before["state"], columns)
    log.info("callout_" + action, callout_id=callout_id, state=row["state"], result=row["result"])
    return callout_json(row)


async def _changed(
    ctx: Context,
    conn: asyncpg.Connection,
    callout_id: int,
    action: str,
    actor: Actor,
    from_state: str | None,
    columns: Mapping[str, Any],
    detail: Mapping[str, Any] | None = None,
    publish: bool = True,
) -> asyncpg.Record:
    """Write a call out's columns and next version, and record the change, in the caller's transaction."""
    row = await bump(conn, ENTITY, callout_id, columns)
    change = Change.of(
        ENTITY, row, action, callout_json(row), actor, ctx.clock.now(), from_state=from_state, detail=detail
    )
    await record_change(conn, change, publish=publish)
    return row


async def get(ctx: Context, callout_id: int, user: User | None) -> asyncpg.Record:
    """The call out, if ``user`` may see it (its desk's jurisdiction, or its case)."""
    async with ctx.pool.acquire() as conn:
        row: asyncpg.Record | None = await conn.fetchrow(
            "SELECT * FROM voice_callouts WHERE id = $1", callout_id
        )
        if row is None:
            raise NotFound("外呼不存在", "call out not found")
        if user is None or (user.org in ctx.orgs and ctx.orgs.is_within(row["org_code"], user.org)):
            return row
        if row["incident_id"] is not None:
            await _incident_for(conn, row["incident_id"], user)
            return row
    raise NotFound("外呼不存在", "call out not found")


async def list_for_incident(ctx: Context, incident_id: int, user: User) -> list[dict[str, Any]]:
    async with ctx.pool.acquire() as conn:
        await _incident_for(conn, incident_id, user)
        rows = await conn.fetch(
            "SELECT * FROM voice_callouts WHERE incident_id = $1 ORDER BY id DESC", incident_id
        )
    return [callout_json(r) for r in rows]


# ---- call lists (叫应) -----------------------------------------------------------------------------


async def _unit(conn: asyncpg.Connection, ctx: Context, unit_id: int, user: User) -> asyncpg.Record:
    unit = await conn.fetchrow("SELECT * FROM squad_units WHERE id = $1", unit_id)
    if unit is None or user.org not in ctx.orgs or not ctx.orgs.is_within(unit["org_code"], user.org):
        raise NotFound("队伍不存在", "unit not found")
    return unit


async def call_list(ctx: Context, unit_id: int, user: User) -> list[dict[str, Any]]:
    async with ctx.pool.acquire() as conn:
        await _unit(conn, ctx, unit_id, user)
        rows = await conn.fetch(
            "SELECT l.position, l.user_id, l.phone, u.username, u.display_name FROM unit_call_lists l"
            " JOIN users u ON u.id = l.user_id WHERE l.unit_id = $1 ORDER BY l.position",
            unit_id,
        )
    return [dict(r) for r in rows]


async def set_call_list(
    ctx: Context, unit_id: int, user: User, entries: Sequence[Mapping[str, Any]], area_code: str
) -> list[dict[str, Any]]:
    """Replace the unit's call list; every entry a member of the unit with a dialable number."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        await _unit(conn, ctx, unit_id, user)
        members = {
            r["user_id"]
            for r in await conn.fetch("SELECT user_id FROM unit_members WHERE unit_id = $1", unit_id)
        }
        seen: set[int] = set()
        rows: list[tuple[int, int, str]] = []
        for position, entry in enumerate(entries, start=1):
            member = entry.get("user_id")
            if not isinstance(member, int) or member not in members or member in seen:
                raise Invalid(
                    "名单中的人须是本队队员，且不重复",
                    "everyone on the list must be a member of the unit, once",
                    fields={"entries": (f"第 {position} 项", f"entry {position}")},
                )
            seen.add(member)
            rows.append((position, member, _number(ctx, str(entry.get("phone") or ""), area_code)))
        await conn.execute("DELETE FROM unit_call_lists WHERE unit_id = $1", unit_id)
        await conn.executemany(
            "INSERT INTO unit_call_lists (unit_id, position, user_id, phone) VALUES ($1, $2, $3, $4)",
            [(unit_id, *row) for row in rows],
        )
        await record_unit_change(ctx, conn, unit_id, "call_list", user, {"entries": len(rows)})
    return await call_list(ctx, unit_id, user)


# ---- 叫应 runs ------------------------------------------------------------------------------------


async def claim_escalations(ctx: Context, after: float, limit: int = 20) -> list[asyncpg.Record]:
    """Orders sent ``after`` seconds ago or more and still not accepted, whose unit has a call list and
    which no instance rings yet: claimed for this one (each order once, ever)."""
    cutoff = ctx.clock.now() - timedelta(seconds=after)
    async with ctx.pool.acquire() as conn, conn.transaction():
        rows: list[asyncpg.Record] = await conn.fetch(
            "INSERT INTO voice_escalations (order_id, unit_id, instance_id, state, started_at)"
            " SELECT o.id, o.unit_id, $2, 'calling', $3 FROM orders o"
            " WHERE o.state = ANY($4) AND o.created_at <= $1"
            " AND EXISTS (SELECT 1 FROM unit_call_lists l WHERE l.unit_id = o.unit_id)"
            " AND NOT EXISTS (SELECT 1 FROM voice_escalations e WHERE e.order_id = o.id)"
            f" ORDER BY o.id LIMIT {int(limit)}"
            " ON CONFLICT (order_id) DO NOTHING RETURNING order_id, unit_id",
            cutoff,
            ctx.instance_id,
            ctx.clock.now(),
            list(AWAITING_ACCEPT),
        )
    return rows


async def escalation_targets(ctx: Context, unit_id: int) -> list[asyncpg.Record]:
    async with ctx.pool.acquire() as conn:
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT position, user_id, phone FROM unit_call_lists WHERE unit_id = $1 ORDER BY position",
            unit_id,
        )
    return rows


async def order_row(ctx: Context, order_id: int) -> asyncpg.Record:
    async with ctx.pool.acquire() as conn:
        row: asyncpg.Record | None = await conn.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
    if row is None:
        raise NotFound("指令不存在", "order not found")
    return row


async def finish_escalation(ctx: Context, order_id: int, state: str, accepted_by: int | None = None) -> None:
    async with ctx.pool.acquire() as conn:
        await conn.execute(
            "UPDATE voice_escalations SET state = $2, finished_at = $3, accepted_by = $4 WHERE order_id = $1",
            order_id,
            state,
            ctx.clock.now(),
            accepted_by,
        )
    log.info("escalation_finished", order_id=order_id, state=state)


def refuse_when_busy(state: str) -> None:
    if state not in LIVE:
        raise Conflict("外呼已结束", "the call out is over", code="callout_over")


async def close_own(ctx: Context, reason: str = "shutdown") -> int:
    """This instance stops: its calls out still live end (answered ones ``ended``, the others
    ``failed``), each change recorded, and its 叫应 runs stop. Returns how many calls out were closed."""
    now = ctx.clock.now()
    async with ctx.pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT id, state, result FROM voice_callouts WHERE instance_id = $1 AND state = ANY($2) FOR UPDATE",
            ctx.instance_id,
            list(LIVE),
        )
        for row in rows:
            state = "ended" if row["state"] == "answered" else "failed"
            await _changed(
                ctx,
                conn,
                row["id"],
                state,
                Actor(None, "system"),
                row["state"],
                {"state": state, "result": row["result"] or reason, "ended_at": now},
                detail={"reason": reason},
            )
        await conn.execute(
            "UPDATE voice_escalations SET state = 'stopped', finished_at = $2 WHERE instance_id = $1 AND state = 'calling'",
            ctx.instance_id,
            now,
        )
    return len(rows)


async def forget_recordings(ctx: Context, prefix: str) -> int:
    """The retention deleted the recordings under ``prefix`` (a day folder): the calls out that had
    one no longer do, each change recorded (audit only: no board shows old calls out)."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT id, state FROM voice_callouts WHERE recording LIKE $1 || '%' ORDER BY id FOR UPDATE", prefix
        )
        for row in rows:
            await _changed(
                ctx,
                conn,
                row["id"],
                "recording_deleted",
                Actor(None, "retention"),
                row["state"],
                {"recording": None},
                detail={"days": ctx.settings.voice.recording_days},
                publish=False,
            )
    return len(rows)
