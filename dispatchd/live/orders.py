"""Orders to squads: stored first, then pushed; receipts, accept and decline, resend and alerts.

Every change of an order is one transaction: the order row, and the audit row and outbox row the
recorder writes (:mod:`dispatchd.store.changes`, entity ``order``). The squad hub of every instance
reads those rows from the change feed and pushes the order to the connections of the unit's
members there (:mod:`dispatchd.live.squad`), so an order made on one instance reaches a squad
connected to another. Alerts for the duty officer are entities too (``alert``).

Timers (:class:`OrderTimers`) run on every instance against the application clock; a due order is
taken with ``FOR UPDATE SKIP LOCKED``, so two instances never fire one twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

import asyncpg
import structlog

from dispatchd.channels.reports.media import StagedPhoto
from dispatchd.channels.reports.service import record_photos
from dispatchd.context import Context
from dispatchd.domain import orders as machine
from dispatchd.domain.incident import OPEN_STATES, Action, Command, State
from dispatchd.domain.incident import Actor as DomainActor
from dispatchd.domain.orders import Order, OrderClock, OrderConflict, Step
from dispatchd.domain.units import DONE_STATUSES, STATUS_NAMES
from dispatchd.errors import Conflict, conflict, invalid, not_found
from dispatchd.incidents import service as cases
from dispatchd.incidents.store import may_view
from dispatchd.store.changes import Actor as ChangeActor
from dispatchd.store.changes import Change, bump, record, trail
from dispatchd.store.outage import store_failure
from dispatchd.store.users import User, get_user
from dispatchd.units.service import nearest_units, set_unit_status

log = structlog.get_logger("dispatchd.live.orders")

# Cases in these states take no more orders.
CLOSED_CASE_STATES = frozenset(str(s) for s in State) - {str(s) for s in OPEN_STATES}
DISPATCH_ROLES = ("duty_officer", "leader")


def order_clock(ctx: Context) -> OrderClock:
    s = ctx.settings.live
    return OrderClock(timedelta(seconds=s.resend_after), timedelta(seconds=s.accept_timeout))


def _iso(value: Any) -> str | None:
    return value.isoformat() if value is not None else None


def order_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """An order as the API, the board and the squad device see it."""
    o = as_machine(row)
    return {
        "id": row["id"],
        "incident_id": row["incident_id"],
        "unit_id": row["unit_id"],
        "unit_name": row["unit_name"],
        "org": row["org_path"][-1] if row["org_path"] else None,
        "org_path": list(row["org_path"]),
        "instructions": row["instructions"],
        "priority": row["priority"],
        "incident": row["incident"],
        "place": (row["incident"] or {}).get("place"),
        "state": row["state"],
        "version": row["version"],
        "sends": row["sends"],
        "created_by": row["created_by"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "last_sent_at": _iso(row["last_sent_at"]),
        "resend_at": _iso(row["resend_at"]),
        "accept_by": _iso(row["accept_by"]),
        "delivered_at": _iso(row["delivered_at"]),
        "accepted_at": _iso(row["accepted_at"]),
        "accepted_by": row["accepted_by"],
        "declined_at": _iso(row["declined_at"]),
        "decline_reason": row["decline_reason"],
        "alerted_at": _iso(row["alerted_at"]),
        "overdue": o.overdue,
        "closed_at": _iso(row["closed_at"]),
        "replaces": row["replaces"],
        "replaced_by": row["replaced_by"],
        "progress": row["progress"],
        "progress_name": _progress_name(row["progress"]),
        "handled_at": _iso(row["handled_at"]),
        "handled_note": row["handled_note"],
        "handled_photos": list(row["handled_photos"]),
    }


# The words of the squad phone's own buttons (the unit's statuses, and 处置完毕).
_PROGRESS_NAMES = {**{k: STATUS_NAMES[k] for k in ("en_route", "on_scene")}, "handled": ("处置完毕", "handled")}


def _progress_name(progress: str | None) -> dict[str, str] | None:
    if progress is None:
        return None
    zh, en = _PROGRESS_NAMES[progress]
    return {"zh-CN": zh, "en": en}


def as_machine(row: Mapping[str, Any]) -> Order:
    return Order(
        state=row["state"],
        sends=row["sends"],
        last_sent_at=row["last_sent_at"],
        resend_at=row["resend_at"],
        accept_by=row["accept_by"],
        delivered_at=row["delivered_at"],
        accepted_at=row["accepted_at"],
        declined_at=row["declined_at"],
        alerted_at=row["alerted_at"],
        closed_at=row["closed_at"],
        progress=row["progress"],
    )


def _conflict(exc: OrderConflict, row: Mapping[str, Any]) -> Conflict:
    return conflict(exc.message_zh, exc.message_en, code="illegal_order_move", extra={"order": order_json(row)})


async def _lock(conn: asyncpg.Connection, order_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow("SELECT * FROM orders WHERE id = $1 FOR UPDATE", order_id)


async def _record(
    conn: asyncpg.Connection,
    ctx: Context,
    row: Mapping[str, Any],
    event: str,
    actor: User | None,
    from_state: str | None,
    data: Mapping[str, Any] | None = None,
    *,
    publish: bool = True,
) -> None:
    """Record a change of an order (its row is written), inside the caller's transaction; a
    receipt from another member's device is audited, not news for the boards (``publish``)."""
    who, now = ChangeActor.of(actor), ctx.clock.now()
    change = Change.of("order", row, event, order_json(row), who, now, from_state=from_state, detail=data)
    await record(conn, change, publish=publish)
    ctx.metrics.live_orders.labels(event).inc()


async def _apply(
    conn: asyncpg.Connection,
    ctx: Context,
    row: Mapping[str, Any],
    step: Step,
    actor: User | None,
    extra: Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
) -> asyncpg.Record:
    """Store the machine's new order (plus ``extra`` columns), audit it and emit it."""
    o = step.order
    values: dict[str, Any] = {
        "state": o.state,
        "sends": o.sends,
        "last_sent_at": o.last_sent_at,
        "resend_at": o.resend_at,
        "accept_by": o.accept_by,
        "delivered_at": o.delivered_at,
        "accepted_at": o.accepted_at,
        "declined_at": o.declined_at,
        "alerted_at": o.alerted_at,
        "closed_at": o.closed_at,
        "progress": o.progress,
        **dict(extra or {}),
    }
    new = await bump(conn, "order", row["id"], {**values, "updated_at": ctx.clock.now()})
    assert step.event is not None
    await _record(conn, ctx, new, step.event, actor, row["state"], data)
    return new


async def is_member(conn: asyncpg.Connection, unit_id: int, user_id: int) -> bool:
    found = await conn.fetchval(
        "SELECT 1 FROM unit_members WHERE unit_id = $1 AND user_id = $2", unit_id, user_id
    )
    return found is not None


def _case_info(ctx: Context, inc: Mapping[str, Any]) -> dict[str, Any]:
    """What the squad needs of the case, frozen into the order."""
    location = {"lat": inc["lat"], "lon": inc["lon"]} if inc["lat"] is not None and inc["lon"] is not None else None
    return {
        "id": inc["id"],
        "number": inc["number"],
        "category": inc["category"],
        "category_name": ctx.taxonomy.display_name(inc["category"]),
        "priority": inc["priority"],
        "description": inc["description"],
        "place": {
            "location": location,
            "address": inc["address"],
            "grid": inc["grid"],
            # The place as people say it: township / community / grid, by name.
            "area": _area_name(ctx, [inc["township"], inc["community"], inc["grid"]]),
        },
    }


def _area_name(ctx: Context, codes: list[str | None]) -> dict[str, str] | None:
    units = [ctx.orgs.units[c] for c in codes if c is not None and c in ctx.orgs.units]
    if not units:
        return None
    return {"zh-CN": " / ".join(u.name for u in units), "en": " / ".join(u.name_en or u.name for u in units)}


# -- creating -------------------------------------------------------------------------------------


async def create_order(
    ctx: Context,
    *,
    incident_id: int,
    unit_id: int,
    instructions: str,
    actor: User | None,
    dispatcher_org: str | None = None,
    replaces: int | None = None,
    conn: asyncpg.Connection | None = None,
) -> dict[str, Any]:
    """Store an order for the unit and put the unit on ``dispatched``; the feed pushes it.

    ``actor`` None is the system (automatic reassignment; then ``dispatcher_org`` is required).
    Refusals: 404 for a case or unit the actor may not see, 409 for a closed case or a unit off duty.
    """
    if conn is None:
        async with ctx.pool.acquire() as own, own.transaction():
            return await create_order(
                ctx,
                incident_id=incident_id,
                unit_id=unit_id,
                instructions=instructions,
                actor=actor,
                dispatcher_org=dispatcher_org,
                replaces=replaces,
                conn=own,
            )
    row = await _insert_order(ctx, conn, incident_id, unit_id, instructions, actor, dispatcher_org, replaces)
    return order_json(row)


async def _insert_order(
    ctx: Context,
    conn: asyncpg.Connection,
    incident_id: int,
    unit_id: int,
    instructions: str,
    actor: User | None,
    dispatcher_org: str | None,
    replaces: int | None,
) -> asyncpg.Record:
    tree = ctx.orgs
    inc = await conn.fetchrow("SELECT * FROM incidents WHERE id = $1", incident_id)
    if inc is None or (actor is not None and not may_view(tree, actor, inc)):
        raise not_found("事件", "case")
    if inc["state"] in CLOSED_CASE_STATES:
        raise conflict(
            "事件已结束，不能再派遣", f"the case is {inc['state']}: it takes no more orders", code="case_closed"
        )
    unit = await conn.fetchrow(
        "SELECT id, name, org_code, org_path, status FROM squad_units WHERE id = $1 FOR UPDATE", unit_id
    )
    if unit is None or (actor is not None and not tree.is_within(unit["org_code"], actor.org)):
        raise not_found("队伍", "unit")
    if unit["status"] == "off_duty":
        raise conflict("队伍不在岗，不能派遣", "the unit is off duty", code="unit_off_duty")
    now = ctx.clock.now()
    o = machine.new_order(now, order_clock(ctx))
    org = dispatcher_org or (actor.org if actor is not None else unit["org_code"])
    row = await conn.fetchrow(
        "INSERT INTO orders (incident_id, unit_id, org_path, dispatcher_org, instructions, priority, incident,"
        " state, created_by, created_at, updated_at, sends, last_sent_at, resend_at, accept_by, replaces,"
        " unit_name) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13, $14, $15, $16)"
        " RETURNING *",
        incident_id,
        unit_id,
        list(unit["org_path"]),
        org,
        instructions,
        inc["priority"],
        _case_info(ctx, inc),
        o.state,
        actor.id if actor is not None else None,
        now,
        o.sends,
        o.last_sent_at,
        o.resend_at,
        o.accept_by,
        replaces,
        unit["name"],
    )
    await _record(conn, ctx, row, "created", actor, None, {"unit_name": unit["name"]})
    if unit["status"] == "available":
        await set_unit_status(ctx, unit_id, "dispatched", actor.username if actor else "system", conn=conn)
    log.info("order_created", order_id=row["id"], incident_id=incident_id, unit_id=unit_id, replaces=replaces)
    return row


# -- reading ----------------------------------------------------------------------------------


async def get_order(ctx: Context, order_id: int, viewer: User) -> dict[str, Any] | None:
    """The order with its receipts and audit trail, if ``viewer`` sees its unit or is a member."""
    async with ctx.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
        if row is None:
            return None
        if not ctx.orgs.is_within(row["org_path"][-1], viewer.org) and not await is_member(
            conn, row["unit_id"], viewer.id
        ):
            return None
        receipts = await conn.fetch(
            "SELECT d.user_id, u.username, d.delivered_at, d.instance FROM order_deliveries d"
            " JOIN users u ON u.id = d.user_id WHERE d.order_id = $1 ORDER BY d.delivered_at, d.user_id",
            order_id,
        )
        events = await trail(conn, "order", order_id)
    out = order_json(row)
    out["receipts"] = [
        {"user_id": r["user_id"], "username": r["username"], "at": _iso(r["delivered_at"]), "instance": r["instance"]}
        for r in receipts
    ]
    out["timeline"] = [
        {
            "action": e["action"],
            "actor": e["actor_display"] or e["actor_name"],
            "at": _iso(e["at"]),
            "from_state": e["from_state"],
            "to_state": e["to_state"],
            "data": e["data"],
        }
        for e in events
    ]
    return out


async def list_orders(
    ctx: Context,
    viewer: User,
    *,
    unit_id: int | None = None,
    incident_id: int | None = None,
    open_only: bool = False,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Orders of units in the viewer's jurisdiction or of units the viewer is a member of; a squad
    member sees only the orders of their own units (whatever lies in their area)."""
    args: list[Any] = [viewer.id]
    sql = "SELECT * FROM orders o WHERE (EXISTS (SELECT 1 FROM unit_members m WHERE m.unit_id = o.unit_id AND m.user_id = $1)"
    if viewer.role != "squad_member":
        args.append(list(ctx.orgs.descendants(viewer.org)))
        sql += f" OR o.org_path && ${len(args)}::text[]"
    sql += ")"
    if unit_id is not None:
        args.append(unit_id)
        sql += f" AND o.unit_id = ${len(args)}"
    if incident_id is not None:
        args.append(incident_id)
        sql += f" AND o.incident_id = ${len(args)}"
    if open_only:
        sql += " AND o.state IN ('pending', 'delivered', 'accepted')"
    args.append(limit)
    sql += f" ORDER BY o.id DESC LIMIT ${len(args)}"
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(sql, *args)
    return [order_json(r) for r in rows]


async def unreceived_orders(conn: asyncpg.Connection, user_id: int) -> list[asyncpg.Record]:
    """Open orders of the user's units that the user's devices have not acknowledged, oldest first."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT o.* FROM orders o JOIN unit_members m ON m.unit_id = o.unit_id AND m.user_id = $1"
        " WHERE o.state IN ('pending', 'delivered', 'accepted')"
        " AND NOT EXISTS (SELECT 1 FROM order_deliveries d WHERE d.order_id = o.id AND d.user_id = $1)"
        " ORDER BY o.id",
        user_id,
    )
    return rows


# -- the device's answers -------------------------------------------------------------------------


async def _lock_case_of(conn: asyncpg.Connection, order_id: int, mode: str) -> asyncpg.Record | None:
    """Lock the order's case (and, for ``FOR SHARE``, its unit) before the order itself.

    Lock order in every transaction that writes an order: the case, the unit, the order, and only
    then the first recorded change, whose outbox lock is held until commit (store/changes.py). A row
    lock taken after that lock waits while holding it, and deadlocks with a writer of that row that
    waits for the outbox.
    """
    head = await conn.fetchrow("SELECT incident_id, unit_id FROM orders WHERE id = $1", order_id)
    if head is None:
        return None
    await conn.execute(f"SELECT 1 FROM incidents WHERE id = $1 {mode}", head["incident_id"])
    if mode == "FOR SHARE":
        await conn.execute("SELECT 1 FROM squad_units WHERE id = $1 FOR UPDATE", head["unit_id"])
    return head


async def _member_order(conn: asyncpg.Connection, order_id: int, user: User) -> asyncpg.Record:
    row = await _lock(conn, order_id)
    if row is None or not await is_member(conn, row["unit_id"], user.id):
        raise not_found("指令", "order")
    return row


async def _receipt(ctx: Context, conn: asyncpg.Connection, order_id: int, user: User) -> bool:
    inserted = await conn.fetchval(
        "INSERT INTO order_deliveries (order_id, user_id, delivered_at, instance) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT DO NOTHING RETURNING user_id",
        order_id,
        user.id,
        ctx.clock.now(),
        ctx.instance_id,
    )
    return inserted is not None


async def acknowledge(ctx: Context, order_id: int, user: User) -> dict[str, Any]:
    """A member's device received the order: record the receipt; the first one delivers it."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _member_order(conn, order_id, user)
        fresh = await _receipt(ctx, conn, order_id, user)
        step = machine.acknowledge(as_machine(row), ctx.clock.now())
        if step.changed:
            row = await _apply(conn, ctx, row, step, user)
        elif fresh:
            # Another member's device has it too: audited, not news for the boards.
            await _record(conn, ctx, row, "receipt", user, row["state"], publish=False)
    return order_json(row)


async def accept(ctx: Context, order_id: int, user: User) -> dict[str, Any]:
    """The squad takes the order (a receipt is implied); an alert about it is resolved."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _member_order(conn, order_id, user)
        await _receipt(ctx, conn, order_id, user)
        try:
            step = machine.accept(as_machine(row), ctx.clock.now())
        except OrderConflict as exc:
            raise _conflict(exc, row) from None
        if step.changed:
            row = await _apply(conn, ctx, row, step, user, extra={"accepted_by": user.id})
            await _resolve_alerts(ctx, conn, order_id, user, "accepted")
    return order_json(row)


async def decline(ctx: Context, order_id: int, user: User, reason: str | None) -> dict[str, Any]:
    """The squad refuses: the unit is free again and the duty officer is alerted with a suggestion."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _member_order(conn, order_id, user)
        await _receipt(ctx, conn, order_id, user)
        try:
            step = machine.decline(as_machine(row), ctx.clock.now())
        except OrderConflict as exc:
            raise _conflict(exc, row) from None
        if step.changed:
            row = await _apply(conn, ctx, row, step, user, extra={"decline_reason": reason})
            await _release_unit(ctx, conn, row["unit_id"], user)
            row = await _raise_alert(ctx, conn, row, "order_declined")
    return order_json(row)


# -- the officer's moves ------------------------------------------------------------------------------


async def _officer_order(ctx: Context, conn: asyncpg.Connection, order_id: int, user: User) -> asyncpg.Record:
    row = await _lock(conn, order_id)
    if row is None or not ctx.orgs.is_within(row["org_path"][-1], user.org):
        raise not_found("指令", "order")
    return row


async def cancel(ctx: Context, order_id: int, user: User) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _officer_order(ctx, conn, order_id, user)
        try:
            step = machine.cancel(as_machine(row), ctx.clock.now())
        except OrderConflict as exc:
            raise _conflict(exc, row) from None
        if step.changed:
            row = await _apply(conn, ctx, row, step, user)
            await _release_unit(ctx, conn, row["unit_id"], user)
            await _resolve_alerts(ctx, conn, order_id, user, "cancelled")
    return order_json(row)


async def cancel_case_orders(
    ctx: Context, conn: asyncpg.Connection, case: Mapping[str, Any], actor: DomainActor
) -> None:
    """A case reaction (incidents.slots.CASE_ENDED): the case was closed, rejected or merged, so its
    open orders are cancelled (the squads' phones are told and stop ringing), their alerts resolved,
    and their units are free again."""
    rows = await conn.fetch(
        "SELECT * FROM orders WHERE incident_id = $1 AND state IN ('pending', 'delivered', 'accepted')"
        " ORDER BY id FOR UPDATE",
        case["id"],
    )
    if not rows:
        return
    user = await get_user(conn, actor.user_id) if actor.user_id else None
    for row in rows:
        step = machine.cancel(as_machine(row), ctx.clock.now())
        after = await _apply(conn, ctx, row, step, user, data={"reason": "case_ended", "case_state": case["state"]})
        await _resolve_alerts(ctx, conn, row["id"], user, "case_ended")
        await _release_unit(ctx, conn, after["unit_id"], user, on_site=True)
    log.info("case_orders_cancelled", incident_id=case["id"], orders=[r["id"] for r in rows])


async def cancel_orders(
    ctx: Context, conn: asyncpg.Connection, order_ids: Sequence[int], user: User | None, reason: str
) -> list[int]:
    """Cancel those of ``order_ids`` still open, inside the caller's transaction (an emergency plan
    standing down): the squads are told, alerts resolved, units free again. The caller has locked
    the orders' case and units first (the lock order of this module); returns the ids cancelled."""
    rows = await conn.fetch(
        "SELECT * FROM orders WHERE id = ANY($1::bigint[]) AND state IN ('pending', 'delivered', 'accepted')"
        " ORDER BY id FOR UPDATE",
        list(order_ids),
    )
    for row in rows:
        step = machine.cancel(as_machine(row), ctx.clock.now())
        after = await _apply(conn, ctx, row, step, user, data={"reason": reason})
        await _resolve_alerts(ctx, conn, row["id"], user, reason)
        await _release_unit(ctx, conn, after["unit_id"], user, on_site=True)
    return [r["id"] for r in rows]


async def report_progress(
    ctx: Context, conn: asyncpg.Connection, unit_id: int, status: str, actor: User | str | None
) -> None:
    """A unit's status reaction: on its way or on the scene, its accepted orders say so (the case's
    timeline and the console show the order's progress with the unit's name)."""
    if status not in ("en_route", "on_scene"):
        return
    user = actor if isinstance(actor, User) else None
    rows = await conn.fetch(
        "SELECT * FROM orders WHERE unit_id = $1 AND state = 'accepted' ORDER BY id FOR UPDATE", unit_id
    )
    for row in rows:
        step = machine.progress(as_machine(row), status)
        if step.changed:
            await _apply(conn, ctx, row, step, user)


async def handled(
    ctx: Context, order_id: int, user: User, note: str, photos: Sequence[StagedPhoto] = ()
) -> dict[str, Any]:
    """The squad is done on site (处置完毕): the order is completed with the squad's notes and
    photos. Where the squad's unit handles the case itself (the case's squad), this is the case's
    feedback step too (started first if nobody had), in the same transaction."""
    note = note.strip()
    if not note:
        raise invalid({"note": ("请说明处置情况", "say what was done")})
    async with ctx.pool.acquire() as conn, conn.transaction():
        # The case first: its feedback step below locks it after this order's change is recorded,
        # and a lock taken after the outbox's (held to commit) would deadlock with a case closing.
        await _lock_case_of(conn, order_id, "FOR UPDATE")
        row = await _member_order(conn, order_id, user)
        now = ctx.clock.now()
        try:
            step = machine.handled(as_machine(row), now)
        except OrderConflict as exc:
            raise _conflict(exc, row) from None
        if not step.changed:
            return order_json(row)
        refs = [p.url for p in photos]
        row = await _apply(
            conn,
            ctx,
            row,
            step,
            user,
            extra={"handled_at": now, "handled_note": note, "handled_photos": refs},
            data={"note": note, "photos": refs},
        )
        await _resolve_alerts(ctx, conn, order_id, user, "handled")
        await record_photos(conn, photos, incident_id=row["incident_id"], uploaded_by=user.id, purpose="feedback", now=now)
        case = await conn.fetchrow("SELECT * FROM incidents WHERE id = $1 FOR UPDATE", row["incident_id"])
        if case is not None and case["squad_unit"] == row["unit_id"]:
            await _feed_back(ctx, conn, case, user, note, refs)
    log.info("order_handled", order_id=order_id, unit_id=row["unit_id"], photos=len(photos))
    return order_json(row)


async def _feed_back(
    ctx: Context, conn: asyncpg.Connection, case: asyncpg.Record, user: User, note: str, photos: Sequence[str]
) -> None:
    """The squad's report as the case's feedback: start it if it waits, then feed back."""
    actor = cases.domain_actor(user)
    if case["state"] == "dispatched":
        await cases.transition_locked(ctx, conn, case, Command(Action.start, case["version"]), actor, viewer=None)
        case = await conn.fetchrow("SELECT * FROM incidents WHERE id = $1 FOR UPDATE", case["id"])
    if case["state"] == "in_progress":
        command = Command(Action.feedback, case["version"], note=note, photos=tuple(photos))
        await cases.transition_locked(ctx, conn, case, command, actor, viewer=None)


async def reassign(
    ctx: Context, order_id: int, user: User, unit_id: int | None
) -> dict[str, Any]:
    """Give the case to ``unit_id`` (or the next nearest available unit): returns the new order."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await _officer_order(ctx, conn, order_id, user)
        if unit_id is None:
            suggestion = await suggest_unit(ctx, conn, row)
            if suggestion is None:
                raise conflict(
                    "附近没有可用的队伍", "no available unit with a live position nearby", code="no_unit_available"
                )
            unit_id = int(suggestion["unit_id"])
        try:
            step = machine.reassign(as_machine(row), ctx.clock.now())
        except OrderConflict as exc:
            raise _conflict(exc, row) from None
        new = await _insert_order(
            ctx, conn, row["incident_id"], unit_id, row["instructions"], user, row["dispatcher_org"], row["id"]
        )
        await _apply(conn, ctx, row, step, user, extra={"replaced_by": new["id"]}, data={"to_order": new["id"]})
        await _release_unit(ctx, conn, row["unit_id"], user)
        await _resolve_alerts(ctx, conn, order_id, user, "reassigned")
    return order_json(new)


async def complete_unit_orders(
    ctx: Context, conn: asyncpg.Connection, unit_id: int, status: str, actor: User | str | None
) -> None:
    """A unit's status reaction: returning or available, its accepted orders are done."""
    if status not in DONE_STATUSES:
        return
    user = actor if isinstance(actor, User) else None
    rows = await conn.fetch(
        "SELECT * FROM orders WHERE unit_id = $1 AND state = 'accepted' ORDER BY id FOR UPDATE", unit_id
    )
    for row in rows:
        await _apply(conn, ctx, row, machine.complete(as_machine(row), ctx.clock.now()), user)


async def _release_unit(
    ctx: Context, conn: asyncpg.Connection, unit_id: int, actor: User | None, *, on_site: bool = False
) -> None:
    """Back to available when the unit has no other open order and is only ``dispatched`` (or,
    ``on_site``: the case it went to ended, also when it is on its way or on the scene)."""
    busy = await conn.fetchval(
        "SELECT 1 FROM orders WHERE unit_id = $1 AND state IN ('pending', 'delivered', 'accepted')", unit_id
    )
    status = await conn.fetchval("SELECT status FROM squad_units WHERE id = $1", unit_id)
    freed = ("dispatched", "en_route", "on_scene") if on_site else ("dispatched",)
    if busy is None and status in freed:
        await set_unit_status(ctx, unit_id, "available", actor.username if actor else "system", conn=conn)


# -- alerts -----------------------------------------------------------------------------------------


async def suggest_unit(ctx: Context, conn: asyncpg.Connection, row: Mapping[str, Any]) -> dict[str, Any] | None:
    """The nearest available unit to the case, in the dispatcher's jurisdiction, not tried yet."""
    location = ((row["incident"] or {}).get("place") or {}).get("location")
    if not location:
        return None
    tried = {
        r["unit_id"]
        for r in await conn.fetch("SELECT DISTINCT unit_id FROM orders WHERE incident_id = $1", row["incident_id"])
    }
    codes = ctx.orgs.descendants(row["dispatcher_org"]) if row["dispatcher_org"] in ctx.orgs.units else frozenset()
    if not codes:
        return None
    candidates = await nearest_units(
        ctx, float(location["lat"]), float(location["lon"]), codes, status="available", limit=len(tried) + 5
    )
    for unit in candidates:
        if unit["id"] not in tried and not unit.get("stale"):
            return {
                "unit_id": unit["id"],
                "name": unit["name"],
                "kind": unit["kind"],
                "distance_m": unit.get("distance_m"),
                "eta_s": unit.get("eta_s"),
            }
    return None


def _alert_json(alert: Mapping[str, Any], row: Mapping[str, Any]) -> dict[str, Any]:
    kind = alert["kind"]
    number = (row["incident"] or {}).get("number")
    unit = row["unit_name"] or "应急队伍"
    if kind == "order_declined":
        zh, en = f"{unit}拒绝了事件 {number} 的指令", f"{row['unit_name'] or 'the squad'} declined the order of case {number}"
    else:
        zh = f"{unit}未在时限内接受事件 {number} 的指令"
        en = f"{row['unit_name'] or 'the squad'} did not accept the order of case {number} in time"
    return {
        "id": alert["id"],
        "kind": kind,
        "order_id": alert["order_id"],
        "incident_id": alert["incident_id"],
        "incident_number": number,
        "unit_id": alert["unit_id"],
        "suggestion": alert["suggestion"],
        "reassigned_to": alert["reassigned_to"],
        "created_at": _iso(alert["created_at"]),
        "resolved_at": _iso(alert["resolved_at"]),
        "resolution": alert["resolution"],
        "message": {"zh-CN": zh, "en": en},
    }


async def _raise_alert(
    ctx: Context, conn: asyncpg.Connection, row: asyncpg.Record, kind: str
) -> asyncpg.Record:
    """Alert the duty officer, with the next nearest available unit, or reassign if configured.

    Returns the order as it is afterwards (reassigned when an overdue order was given away).
    """
    suggestion = await suggest_unit(ctx, conn, row)
    reassigned_to: int | None = None
    if suggestion is not None and ctx.settings.live.auto_reassign:
        new = await _insert_order(
            ctx, conn, row["incident_id"], int(suggestion["unit_id"]), row["instructions"], None,
            row["dispatcher_org"], row["id"],
        )
        reassigned_to = new["id"]
        if row["state"] in machine.AWAITING_ACCEPT:
            step = machine.reassign(as_machine(row), ctx.clock.now())
            row = await _apply(conn, ctx, row, step, None, extra={"replaced_by": reassigned_to},
                               data={"to_order": reassigned_to})
            await _release_unit(ctx, conn, row["unit_id"], None)
        else:
            row = await conn.fetchrow(
                "UPDATE orders SET replaced_by = $2 WHERE id = $1 RETURNING *", row["id"], reassigned_to
            )
    now = ctx.clock.now()
    alert = await conn.fetchrow(
        "INSERT INTO live_alerts (kind, order_id, incident_id, unit_id, org_path, suggestion, reassigned_to,"
        " created_at, resolved_at, resolution) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING *",
        kind,
        row["id"],
        row["incident_id"],
        row["unit_id"],
        list(row["org_path"]),
        suggestion,
        reassigned_to,
        now,
        now if reassigned_to is not None else None,
        "reassigned automatically" if reassigned_to is not None else None,
    )
    await _record_alert(ctx, conn, alert, row, "raised", None)
    log.info("order_alert", order_id=row["id"], kind=kind, suggestion=suggestion, reassigned_to=reassigned_to)
    return row


async def _record_alert(
    ctx: Context,
    conn: asyncpg.Connection,
    alert: Mapping[str, Any],
    order: Mapping[str, Any],
    action: str,
    actor: User | None,
) -> None:
    state = "resolved" if alert["resolved_at"] is not None else "open"
    data, who, now = _alert_json(alert, order), ChangeActor.of(actor), ctx.clock.now()
    await record(conn, Change.of("alert", alert, action, data, who, now, state=state, note=alert["resolution"]))


async def _resolve_alerts(
    ctx: Context, conn: asyncpg.Connection, order_id: int, user: User | None, resolution: str
) -> None:
    rows = await conn.fetch(
        "UPDATE live_alerts SET resolved_at = $2, resolved_by = $3, resolution = $4, version = version + 1"
        " WHERE order_id = $1 AND resolved_at IS NULL RETURNING *",
        order_id,
        ctx.clock.now(),
        user.id if user is not None else None,
        resolution,
    )
    if not rows:
        return
    order = await conn.fetchrow("SELECT * FROM orders WHERE id = $1", order_id)
    for alert in rows:
        await _record_alert(ctx, conn, alert, order, "resolved", user)


async def resolve_alert(ctx: Context, alert_id: int, user: User, note: str | None) -> dict[str, Any]:
    """The officer dealt with the alert (for example by reassigning by hand)."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        alert = await conn.fetchrow("SELECT * FROM live_alerts WHERE id = $1 FOR UPDATE", alert_id)
        if alert is None or not ctx.orgs.is_within(alert["org_path"][-1], user.org):
            raise not_found("告警", "alert")
        order = await conn.fetchrow("SELECT * FROM orders WHERE id = $1", alert["order_id"])
        if alert["resolved_at"] is None:
            alert = await conn.fetchrow(
                "UPDATE live_alerts SET resolved_at = $2, resolved_by = $3, resolution = $4,"
                " version = version + 1 WHERE id = $1 RETURNING *",
                alert_id,
                ctx.clock.now(),
                user.id,
                note or "resolved",
            )
            await _record_alert(ctx, conn, alert, order, "resolved", user)
        return _alert_json(alert, order)


async def open_alerts(ctx: Context, codes: frozenset[str]) -> list[dict[str, Any]]:
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT a.*, o.incident AS order_incident, o.id AS oid, o.unit_name AS order_unit_name"
            " FROM live_alerts a JOIN orders o ON o.id = a.order_id"
            " WHERE a.resolved_at IS NULL AND a.org_path && $1::text[] ORDER BY a.id DESC LIMIT 200",
            list(codes),
        )
    return [
        _alert_json(r, {"id": r["oid"], "incident": r["order_incident"], "unit_name": r["order_unit_name"]})
        for r in rows
    ]


# -- board sections -----------------------------------------------------------------------------


async def orders_section(ctx: Context, codes: frozenset[str]) -> list[dict[str, Any]]:
    """Open orders of the jurisdiction's units."""
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM orders WHERE state IN ('pending', 'delivered', 'accepted') AND org_path && $1::text[]"
            " ORDER BY id DESC LIMIT 500",
            list(codes),
        )
    return [order_json(r) for r in rows]


async def alerts_section(ctx: Context, codes: frozenset[str]) -> list[dict[str, Any]]:
    return await open_alerts(ctx, codes)


# -- timers -------------------------------------------------------------------------------------


class OrderTimers:
    """Resend without receipt, alert without acceptance; driven by the application clock."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    async def run(self) -> None:
        interval = self.ctx.settings.live.timer_interval
        while True:
            try:
                await self.fire_due()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if store_failure(self.ctx, exc) is None:  # an outage is logged once, by its tracker
                    log.exception("order_timers_failed")
            await asyncio.sleep(interval)

    async def fire_due(self) -> int:
        """Fire every due timer; return how many orders were touched."""
        ctx = self.ctx
        now = ctx.clock.now()
        async with ctx.pool.acquire() as conn:
            ids = [
                r["id"]
                for r in await conn.fetch(
                    "SELECT id FROM orders WHERE resend_at <= $1 OR accept_by <= $1 ORDER BY id LIMIT 500", now
                )
            ]
        fired = 0
        for order_id in ids:
            async with ctx.pool.acquire() as conn, conn.transaction():
                # The case (shared: its steps wait, readers and new orders do not) and the unit
                # before the order: an alert or a reassignment writes them after the first change
                # is recorded (see _lock_case_of).
                if await _lock_case_of(conn, order_id, "FOR SHARE") is None:
                    continue
                row = await conn.fetchrow(
                    "SELECT * FROM orders WHERE id = $1 AND (resend_at <= $2 OR accept_by <= $2)"
                    " FOR UPDATE SKIP LOCKED",
                    order_id,
                    now,
                )
                if row is None:
                    continue
                fired += 1
                step = machine.resend(as_machine(row), now, order_clock(ctx))
                if step.changed:
                    row = await _apply(conn, ctx, row, step, None)
                    log.info("order_resent", order_id=order_id, sends=row["sends"])
                step = machine.expire_accept(as_machine(row), now)
                if step.changed:
                    row = await _apply(conn, ctx, row, step, None)
                    await _raise_alert(ctx, conn, row, "order_not_accepted")
                elif row["resend_at"] is None and row["accept_by"] is not None and row["accept_by"] <= now:
                    # A timer of an order that can no longer fire (a final state): clear it.
                    await conn.execute("UPDATE orders SET accept_by = NULL WHERE id = $1", order_id)
        return fired
