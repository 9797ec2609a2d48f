"""Notices that reach people: the console (the change feed), SMS through the gateway, receipts,
acknowledgement (叫应), and escalation to the deputy of whoever did not acknowledge in time.

A notice is entity ``plan_notice``; its ``org_path`` is the person's unit, so the person's console
(and those above it) hears of every change through the change feed. SMS goes out after the commit
that made the notice: the loop claims it (an audited change), calls the gateway, and records the
answer. Escalation runs on the application clock (tests move a FakeClock).
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import Iterable, Mapping
from datetime import timedelta
from typing import Any, Final

import aiohttp
import asyncpg
import structlog

from dispatchd.channels.hotline.slots import PERSON_CALLS, PersonCall, PersonCaller
from dispatchd.context import Context
from dispatchd.domain.plans import Selector
from dispatchd.errors import DomainError, conflict, forbidden, invalid, not_found
from dispatchd.plans import sms
from dispatchd.plans.service import add_notice, notice_json, people
from dispatchd.plans.slots import NOTICES_WAKE
from dispatchd.store.changes import SYSTEM, Actor, Change, record
from dispatchd.store.db import like_anywhere
from dispatchd.store.outage import log_unless_outage
from dispatchd.store.users import User, get_user
from dispatchd.tasks import raise_if_cancelling

log = structlog.get_logger("dispatchd.plans.notices")

# Who stands in for a warning's grid worker when no deputy is on record.
WARNING_DEPUTY = Selector(role="duty_officer", at="township")


async def _person(conn: asyncpg.Connection, user_id: int | None) -> asyncpg.Record | None:
    if user_id is None:
        return None
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT id, username, display_name, role, org_code, department_code FROM users WHERE id = $1", user_id
    )
    return row


async def _change(
    ctx: Context,
    conn: asyncpg.Connection,
    notice_id: int,
    columns: Mapping[str, Any],
    action: str,
    actor: Actor,
    *,
    from_state: str,
    detail: Mapping[str, Any] | None = None,
    publish: bool = True,
) -> asyncpg.Record:
    names = list(columns)
    sets = "".join(f"{n} = ${i + 2}, " for i, n in enumerate(names))
    row: asyncpg.Record = await conn.fetchrow(
        f"UPDATE plan_notices SET {sets}updated_at = ${len(names) + 2}, version = version + 1 WHERE id = $1 RETURNING *",
        notice_id,
        *[columns[n] for n in names],
        ctx.clock.now(),
    )
    person = await _person(conn, row["user_id"])
    name = (person["display_name"] or person["username"]) if person is not None else None
    await record(
        conn,
        Change.of("plan_notice", row, action, notice_json(row, name), actor, ctx.clock.now(), from_state=from_state, detail=detail),
        publish=publish,
    )
    return row


async def _own_notice(conn: asyncpg.Connection, notice_id: int, user: User) -> asyncpg.Record:
    row: asyncpg.Record | None = await conn.fetchrow("SELECT * FROM plan_notices WHERE id = $1 FOR UPDATE", notice_id)
    if row is None or row["user_id"] != user.id:
        raise not_found("通知", "notice")
    return row


async def receipt(ctx: Context, notice_id: int, user: User) -> dict[str, Any]:
    """The person's console showed the notice: it is delivered."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _own_notice(conn, notice_id, user)
        deliveries = dict(row["deliveries"])
        if (deliveries.get("console") or {}).get("state") == "delivered":
            return notice_json(row)
        deliveries["console"] = {"state": "delivered", "at": ctx.clock.now().isoformat()}
        state = "delivered" if row["state"] == "sent" else row["state"]
        row = await _change(ctx, conn, notice_id, {"deliveries": deliveries, "state": state}, "delivered", Actor.of(user), from_state=row["state"])
    return notice_json(row)


async def acknowledge(ctx: Context, notice_id: int, user: User) -> dict[str, Any]:
    """The person acknowledges (叫应): no escalation any more."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _own_notice(conn, notice_id, user)
        if row["state"] == "acknowledged":
            return notice_json(row)
        if row["state"] in ("cancelled", "failed"):
            raise conflict("该通知已关闭", f"the notice is {row['state']}", code="notice_closed")
        now = ctx.clock.now()
        deliveries = dict(row["deliveries"])
        if "console" in deliveries and deliveries["console"].get("state") != "delivered":
            deliveries["console"] = {"state": "delivered", "at": now.isoformat()}
        row = await _change(
            ctx,
            conn,
            notice_id,
            {"state": "acknowledged", "acknowledged_at": now, "acknowledged_by": user.id, "escalate_at": None, "deliveries": deliveries},
            "acknowledged",
            Actor.of(user),
            from_state=row["state"],
        )
    log.info("notice_acknowledged", notice_id=notice_id, activation_id=row["activation_id"], warning_id=row["warning_id"])
    return notice_json(row)


async def my_notices(ctx: Context, user: User, *, open_only: bool = True) -> list[dict[str, Any]]:
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM plan_notices WHERE user_id = $1"
            + (" AND state IN ('sent', 'delivered', 'escalated')" if open_only else "")
            + " ORDER BY id DESC LIMIT 100",
            user.id,
        )
    return [notice_json(r, user.display_name or user.username) for r in rows]


# What a contact holds; a change names only what it changes.
CONTACT_KEYS: Final = ("mobile", "deputy_user_id")
# Contacts listed at most per page.
CONTACTS_PAGE: Final = 200


async def set_contact(ctx: Context, admin: User, user_id: int, changes: Mapping[str, Any]) -> dict[str, Any]:
    """How to reach a person (mobile) and who stands in (deputy); admins of the person's unit. Only
    the keys in ``changes`` change (None clears one): a deputy is set without retyping the mobile."""
    if admin.role != "admin":
        raise forbidden("只有管理员可以设置联系方式", "only admins set contacts")
    mobile = changes.get("mobile")
    mobile = (mobile or "").strip() or None
    if mobile is not None and not (mobile.lstrip("+").isdigit() and 6 <= len(mobile) <= 20):
        raise invalid({"mobile": ("手机号码格式错误", "not a phone number")})
    deputy_user_id = changes.get("deputy_user_id")
    async with ctx.pool.acquire() as conn, conn.transaction():
        person = await _person(conn, user_id)
        if person is None or not ctx.orgs.is_within(person["org_code"], admin.org):
            raise not_found("用户", "user")
        if deputy_user_id is not None:
            deputy = await _person(conn, deputy_user_id)
            if deputy is None or deputy_user_id == user_id:
                raise invalid({"deputy_user_id": ("代理人不存在或为本人", "no such deputy, or the person themself")})
        current = await conn.fetchrow(
            "SELECT mobile, deputy_user_id FROM plan_contacts WHERE user_id = $1 FOR UPDATE", user_id
        )
        if "mobile" not in changes:
            mobile = current["mobile"] if current else None
        if "deputy_user_id" not in changes:
            deputy_user_id = current["deputy_user_id"] if current else None
        await conn.execute(
            "INSERT INTO plan_contacts (user_id, mobile, deputy_user_id, updated_at) VALUES ($1, $2, $3, $4)"
            " ON CONFLICT (user_id) DO UPDATE SET mobile = $2, deputy_user_id = $3, updated_at = $4",
            user_id,
            mobile,
            deputy_user_id,
            ctx.clock.now(),
        )
    log.info(
        "contact_set",
        user_id=user_id,
        by=admin.username,
        changed=sorted(changes),
        has_mobile=mobile is not None,
        deputy_user_id=deputy_user_id,
    )
    return {"user_id": user_id, "mobile": sms.mask(mobile) if mobile else None, "deputy_user_id": deputy_user_id}


async def list_contacts(
    ctx: Context, admin: User, *, q: str | None = None, after: int | None = None, limit: int = CONTACTS_PAGE
) -> tuple[list[dict[str, Any]], int | None]:
    """The enabled accounts of the admin's jurisdiction with how to reach them (the mobile masked) and
    their deputy, by id; ``q`` matches the account or display name. Returns (page, next ``after``)."""
    if admin.role != "admin":
        raise forbidden("只有管理员可以查看联系方式", "only admins see contacts")
    codes = sorted(ctx.orgs.descendants(admin.org)) if admin.org in ctx.orgs.units else [admin.org]
    sql = (
        "SELECT u.id, u.username, u.display_name, u.role, u.org_code, u.department_code, c.mobile,"
        " c.deputy_user_id, d.username AS deputy_username, d.display_name AS deputy_display"
        " FROM users u LEFT JOIN plan_contacts c ON c.user_id = u.id LEFT JOIN users d ON d.id = c.deputy_user_id"
        " WHERE NOT u.disabled AND u.org_code = ANY($1::text[])"
    )
    args: list[Any] = [codes]
    if q:
        args.append(like_anywhere(q.strip()))
        sql += f" AND (u.username ILIKE ${len(args)} OR u.display_name ILIKE ${len(args)})"
    if after is not None:
        args.append(after)
        sql += f" AND u.id > ${len(args)}"
    args.append(limit + 1)
    sql += f" ORDER BY u.id LIMIT ${len(args)}"
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(sql, *args)
    more = len(rows) > limit
    rows = rows[:limit]
    tree = ctx.orgs
    out = []
    for r in rows:
        org = tree.units.get(r["org_code"])
        dept = tree.departments.get(r["department_code"]) if r["department_code"] else None
        out.append(
            {
                "user_id": r["id"],
                "username": r["username"],
                "name": r["display_name"] or r["username"],
                "role": r["role"],
                "org": r["org_code"],
                "org_name": org.name if org else r["org_code"],
                "org_name_en": org.name_en if org else r["org_code"],
                "department": r["department_code"],
                "department_name": dept.name if dept else None,
                "department_name_en": dept.name_en if dept else None,
                "mobile": sms.mask(r["mobile"]) if r["mobile"] else None,
                "deputy_user_id": r["deputy_user_id"],
                "deputy_name": (r["deputy_display"] or r["deputy_username"]) if r["deputy_user_id"] else None,
            }
        )
    return out, (rows[-1]["id"] if more and rows else None)


# -- SMS ---------------------------------------------------------------------------------------------


async def _next_pending(
    ctx: Context, conn: asyncpg.Connection, way: str
) -> tuple[asyncpg.Record, str | None] | None:
    """The next open notice waiting to go out by ``way`` (``sms``, ``call``), locked, with its
    person's mobile; None when there is none. A person with no mobile on record: that way is marked
    failed (action ``{way}_failed``) and the mobile is None."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "SELECT * FROM plan_notices WHERE deliveries->$1->>'state' = 'pending' AND state IN ('sent', 'delivered')"
        " ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED",
        way,
    )
    if row is None:
        return None
    mobile: str | None = await conn.fetchval("SELECT mobile FROM plan_contacts WHERE user_id = $1", row["user_id"])
    if mobile:
        return row, mobile
    deliveries = dict(row["deliveries"])
    deliveries[way] = {"state": "failed", "detail": "无手机号码 / no mobile number on record", "at": ctx.clock.now().isoformat()}
    await _change(ctx, conn, row["id"], {"deliveries": deliveries}, f"{way}_failed", SYSTEM, from_state=row["state"])
    return row, None


async def send_pending_sms(ctx: Context, session: aiohttp.ClientSession, limit: int = 20) -> int:
    """Send the SMS of notices waiting for it; how many were tried."""
    s = ctx.settings.plans
    if not s.sms_gateway:
        return 0
    tried = 0
    for _ in range(limit):
        async with ctx.pool.acquire() as conn, conn.transaction():
            claimed = await _next_pending(ctx, conn, "sms")
            if claimed is None:
                break
            row, mobile = claimed
            if mobile is None:
                continue
            deliveries = dict(row["deliveries"])
            deliveries["sms"] = {"state": "sending", "at": ctx.clock.now().isoformat()}
            row = await _change(ctx, conn, row["id"], {"deliveries": deliveries}, "sms_sending", SYSTEM, from_state=row["state"], publish=False)
        tried += 1
        key = sms.AccessKey(s.sms_access_key_id, s.sms_access_key_secret, s.sms_region) if s.sms_access_key_secret else None
        request = sms.build_request(
            s.sms_style, mobile=mobile, text=row["text"], sign=s.sms_sign, template=s.sms_template, app_id=s.sms_app_id,
            secret=s.sms_api_key, url=s.sms_gateway, key=key, now=ctx.clock.now(), nonce=uuid.uuid4().hex,
        )
        ok, detail = False, ""
        try:
            async with session.post(
                s.sms_gateway,
                data=request.data,
                headers=request.headers,
                timeout=aiohttp.ClientTimeout(total=s.sms_timeout),
            ) as resp:
                text = await resp.text()
                try:
                    answer: Any = json.loads(text) if text else {}
                except ValueError:
                    answer = {}
                ok, detail = sms.accepted(s.sms_style, resp.status, answer)
        except (aiohttp.ClientError, TimeoutError) as exc:
            ok, detail = False, f"gateway unreachable: {type(exc).__name__}"
        async with ctx.pool.acquire() as conn, conn.transaction():
            current = await conn.fetchrow("SELECT * FROM plan_notices WHERE id = $1 FOR UPDATE", row["id"])
            deliveries = dict(current["deliveries"])
            deliveries["sms"] = {"state": "delivered" if ok else "failed", "detail": detail, "at": ctx.clock.now().isoformat()}
            state = "delivered" if ok and current["state"] == "sent" else current["state"]
            await _change(
                ctx, conn, row["id"], {"deliveries": deliveries, "state": state}, "sms_sent" if ok else "sms_failed", SYSTEM, from_state=current["state"]
            )
        log.info("notice_sms", notice_id=row["id"], accepted=ok, style=s.sms_style, mobile=sms.mask(mobile))
    return tried


# -- phone calls -------------------------------------------------------------------------------------


def _forget(calling: dict[int, asyncio.Task[None]], notice_id: int, _done: asyncio.Task[None]) -> None:
    calling.pop(notice_id, None)


# The longest a notice call lasts (ringing, the notice spoken twice, the confirmation), and more: a
# notice still ``calling`` after it, rung by no call of the instance holding the SIP port, was being
# rung by an instance that stopped, and is rung again.
CALL_AT_MOST: Final = timedelta(minutes=10)


async def _redial_interrupted(ctx: Context, in_flight: Iterable[int]) -> int:
    """Put notices whose call was cut by a stopped instance back to ``pending``; how many."""
    now = ctx.clock.now()
    async with ctx.pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT * FROM plan_notices WHERE deliveries->'call'->>'state' = 'calling' AND state IN ('sent', 'delivered')"
            " AND (deliveries->'call'->>'at')::timestamptz < $1 AND NOT (id = ANY($2::bigint[]))"
            " ORDER BY id LIMIT 20 FOR UPDATE SKIP LOCKED",
            now - CALL_AT_MOST,
            list(in_flight),
        )
        for row in rows:
            deliveries = dict(row["deliveries"])
            deliveries["call"] = {
                "state": "pending",
                "detail": "上次呼叫中断，重拨 / the last call was cut off: ringing again",
                "at": now.isoformat(),
            }
            await _change(ctx, conn, row["id"], {"deliveries": deliveries}, "call_interrupted", SYSTEM, from_state=row["state"])
    for row in rows:
        log.info("notice_call_interrupted", notice_id=row["id"])
    return len(rows)


async def call_pending(ctx: Context, calling: dict[int, asyncio.Task[None]], limit: int = 20) -> int:
    """Ring the people of notices waiting for a call (on the instance holding the SIP port): each
    is claimed (``calling``) and rung in the background (``calling``: notice id → its call); how
    many were started. A call cut off by a stopped instance is rung again first."""
    caller = ctx.get(PERSON_CALLS)
    if caller is None or not caller.ready():
        return 0
    await _redial_interrupted(ctx, calling.keys())
    started = 0
    for _ in range(limit):
        async with ctx.pool.acquire() as conn, conn.transaction():
            claimed = await _next_pending(ctx, conn, "call")
            if claimed is None:
                break
            row, mobile = claimed
            if mobile is None:
                continue
            deliveries = dict(row["deliveries"])
            now = ctx.clock.now().isoformat()
            incident_id = None
            if row["activation_id"] is not None:
                incident_id = await conn.fetchval(
                    "SELECT incident_id FROM plan_activations WHERE id = $1", row["activation_id"]
                )
            deliveries["call"] = {"state": "calling", "at": now}
            row = await _change(ctx, conn, row["id"], {"deliveries": deliveries}, "calling", SYSTEM, from_state=row["state"])
        notice_id = int(row["id"])
        task = asyncio.create_task(_ring(ctx, caller, row, mobile, incident_id), name=f"notice-call-{notice_id}")
        calling[notice_id] = task
        task.add_done_callback(functools.partial(_forget, calling, notice_id))
        started += 1
    return started


_CALL_RESULTS: Final = {
    "acknowledged": ("delivered", "已接听并按1确认 / answered, acknowledged with key 1"),
    "not_acknowledged": ("delivered", "已接听，未按1确认 / answered, not acknowledged"),
    "busy": ("failed", "占线 / busy"),
    "no_answer": ("failed", "无人接听 / no answer"),
}


async def _ring(
    ctx: Context, caller: PersonCaller, row: Mapping[str, Any], mobile: str, incident_id: int | None
) -> None:
    notice_id, user_id = int(row["id"]), row["user_id"]

    async def by_key_1() -> bool:
        async with ctx.pool.acquire() as conn:
            user = await get_user(conn, user_id)
        if user is None:
            return False
        try:
            await acknowledge(ctx, notice_id, user)
        except DomainError:
            return False  # the notice was closed meanwhile
        return True

    try:
        result = await caller.call(
            PersonCall(
                number=mobile,
                text=row["text"],
                org=row["org_path"][-1],
                callee_id=user_id,
                acknowledge=by_key_1,
                incident_id=incident_id,
            )
        )
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log_unless_outage(ctx, exc, "notice_call_failed", notice_id=notice_id)
        result = "failed"
    state, detail = _CALL_RESULTS.get(result, ("failed", "呼叫失败 / the call failed"))
    async with ctx.pool.acquire() as conn, conn.transaction():
        current = await conn.fetchrow("SELECT * FROM plan_notices WHERE id = $1 FOR UPDATE", notice_id)
        deliveries = dict(current["deliveries"])
        deliveries["call"] = {"state": state, "detail": detail, "result": result, "at": ctx.clock.now().isoformat()}
        new_state = "delivered" if state == "delivered" and current["state"] == "sent" else current["state"]
        await _change(
            ctx, conn, notice_id, {"deliveries": deliveries, "state": new_state}, "called", SYSTEM,
            from_state=current["state"], detail={"result": result},
        )
    log.info("notice_called", notice_id=notice_id, result=result, mobile=sms.mask(mobile))


# -- escalation --------------------------------------------------------------------------------------


async def _deputy(ctx: Context, conn: asyncpg.Connection, row: Mapping[str, Any]) -> asyncpg.Record | None:
    """The person's deputy on record, else the one the plan names (relative to the place)."""
    deputy_id = await conn.fetchval("SELECT deputy_user_id FROM plan_contacts WHERE user_id = $1", row["user_id"])
    if deputy_id is not None:
        return await _person(conn, deputy_id)
    selector = row["deputy"]
    if row["warning_id"] is not None and not selector:
        selector = WARNING_DEPUTY.as_json()
    if not selector:
        return None
    place = row["org_path"][-1]
    if row["activation_id"] is not None:
        place = await conn.fetchval("SELECT area_code FROM plan_activations WHERE id = $1", row["activation_id"]) or place
    sel = Selector(user=selector.get("user"), role=selector.get("role"), department=selector.get("department"), at=selector.get("at"))
    for candidate in await people(ctx, conn, sel, place):
        if candidate["id"] != row["user_id"]:
            return candidate
    return None


async def escalate_due(ctx: Context, limit: int = 50) -> list[int]:
    """Notices unacknowledged at their ``escalate_at`` go to the person's deputy (a new notice);
    the ids of the new notices."""
    made: list[int] = []
    now = ctx.clock.now()
    for _ in range(limit):
        async with ctx.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT * FROM plan_notices WHERE escalate_at <= $1 AND state IN ('sent', 'delivered')"
                " ORDER BY escalate_at, id LIMIT 1 FOR UPDATE SKIP LOCKED",
                now,
            )
            if row is None:
                break
            deputy = await _deputy(ctx, conn, row)
            if deputy is None:
                await _change(
                    ctx, conn, row["id"], {"escalate_at": None}, "escalation_failed", SYSTEM, from_state=row["state"],
                    detail={"reason": "no deputy"},
                )
                continue
            original = await _person(conn, row["user_id"])
            who = (original["display_name"] or original["username"]) if original is not None else row["label"]
            new = await add_notice(
                ctx,
                conn,
                person=deputy,
                label=f"{deputy['display_name'] or deputy['username']}（代 {who}）",
                via=list(row["via"]),
                text=f"【未叫应，转代理人】{row['text']}",
                actor=SYSTEM,
                activation_id=row["activation_id"],
                warning_id=row["warning_id"],
                level=row["level"],
                escalates=row["id"],
                fallback_org=row["org_path"][-1],
            )
            await _change(
                ctx, conn, row["id"], {"state": "escalated", "escalated_to": new["id"], "escalate_at": None}, "escalated", SYSTEM,
                from_state=row["state"], detail={"deputy": deputy["id"]},
            )
        made.append(new["id"])
        log.info("notice_escalated", notice_id=row["id"], to_notice=new["id"], deputy_id=deputy["id"])
    return made


async def run_notices(ctx: Context) -> None:
    """The loop: SMS waiting to go out, calls to ring, escalations due; woken at once by a new notice.
    Calls under way when it stops are cancelled (the SIP edge ends their legs)."""
    wake = ctx[NOTICES_WAKE]
    interval = ctx.settings.plans.timer_interval
    calling: dict[int, asyncio.Task[None]] = {}
    try:
        async with aiohttp.ClientSession() as session:
            while True:
                try:
                    await send_pending_sms(ctx, session)
                    await call_pending(ctx, calling)
                    await escalate_due(ctx)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    raise_if_cancelling()
                    log_unless_outage(ctx, exc, "plan_notices_failed")
                wake.clear()
                try:
                    async with asyncio.timeout(interval):
                        await wake.wait()
                except TimeoutError:
                    pass
    finally:
        tasks = list(calling.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

__all__ = ["acknowledge", "call_pending", "escalate_due", "my_notices", "receipt", "run_notices", "send_pending_sms", "set_contact"]
