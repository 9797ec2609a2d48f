"""Rows of ``incidents`` and ``incident_timers``: reading, writing, JSON, and a case's trail in the
audit log.

Every function here runs on a connection the caller holds inside its transaction; nothing here
opens a transaction or reads the clock.  :func:`summary_json` is the one shape of a case that lists,
the board and the change feed give out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import asyncpg

from dispatchd.domain.deadlines import plan_timers
from dispatchd.domain.geo import bbox_around, haversine_m
from dispatchd.domain.hotlines import normalise_number
from dispatchd.domain.incident import (
    ACTION_NAMES,
    OPEN_STATES,
    STATE_NAMES,
    Action,
    Incident,
    State,
)
from dispatchd.domain.orgs import OrgTree
from dispatchd.domain.taxonomy import Taxonomy
from dispatchd.store import changes
from dispatchd.store.users import User

# The channels a case can come in by.
CHANNELS: Final[tuple[str, ...]] = (
    "hotline",
    "grid_report",
    "open311",
    "gps_alarm",
    "officer",
    "walk_in",
    "video",
)

# Audit actions that are not commands of the state machine.
REPORT: Final = "report"
MERGED_IN: Final = "merged_in"
ATTACH: Final = "attach"
DEADLINE_WARNING: Final = "deadline_warning"
DEADLINE_OVERDUE: Final = "deadline_overdue"

_EVENT_NAMES: Final[Mapping[str, tuple[str, str]]] = {
    REPORT: ("报告事件", "report"),
    MERGED_IN: ("并入重复案件", "duplicate merged in"),
    ATTACH: ("追加来源", "another report attached"),
    DEADLINE_WARNING: ("临期预警", "deadline warning"),
    DEADLINE_OVERDUE: ("超期", "overdue"),
}

# The open states as SQL on table alias ``i``: the one spelling of "open" in every query.
OPEN_SQL: Final = "i.state IN (" + ", ".join(f"'{s}'" for s in sorted(OPEN_STATES)) + ")"

# States in which a case can still take a duplicate (merge is legal from them).
MERGEABLE: Final = frozenset({State.reported, State.accepted})
# States a merge target may not be in.
DEAD: Final = frozenset({State.rejected, State.merged})
_DEAD_SQL: Final = "i.state IN (" + ", ".join(f"'{s}'" for s in sorted(DEAD)) + ")"


def normalise_caller(caller: str | None) -> str | None:
    """One spelling of a calling number, so the same caller is recognised; None when blank."""
    if caller is None or not caller.strip():
        return None
    return normalise_number(caller) or caller.strip()


# -- the domain view of a row ---------------------------------------------------------------------


def to_domain(row: Mapping[str, Any]) -> Incident:
    """The part of a case row the state machine needs."""
    return Incident(
        id=row["id"],
        state=State(row["state"]),
        version=row["version"],
        priority=row["priority"],
        category=row["category"],
        owner_unit=row["owner_unit"],
        grid=row["grid"],
        reporter_id=row["reporter_id"],
        lead_department=row["lead_department"],
        co_departments=tuple(row["co_departments"]),
        squad_unit=row["squad_unit"],
        feedback_from=tuple(row["feedback_from"]),
        merged_into=row["merged_into"],
        satisfaction=row["satisfaction"],
        escalations=row["escalations"],
        signed=tuple(row["signed"]),
        returns=row["returns"],
        extension_hours=row["extension_hours"],
        extension_department=row["extension_department"],
        extensions=row["extensions"],
        urged=row["urged"],
        supervised=row["supervised"],
    )


def may_view(tree: OrgTree, viewer: User, row: Mapping[str, Any]) -> bool:
    """Who sees a case: its owning unit or its place lies in the viewer's subtree (属地), the
    viewer reported it, or the viewer's department handles it."""
    if tree.is_within(row["owner_unit"], viewer.org):
        return True
    if row["grid"] is not None and tree.is_within(row["grid"], viewer.org):
        return True
    if row["reporter_id"] is not None and row["reporter_id"] == viewer.id:
        return True
    department = viewer.department
    return department is not None and (
        department == row["lead_department"] or department in row["co_departments"]
    )


def visibility_sql(viewer: User, args: list[Any]) -> str:
    """The SQL form of :func:`may_view` on table alias ``i``; appends its parameters to ``args``."""
    args.append(viewer.org)
    code = f"${len(args)}"
    clause = (
        f"(i.org_path @> ARRAY[{code}]::text[] OR i.place_path @> ARRAY[{code}]::text[]"
        f" OR i.reporter_id = ${len(args) + 1}"
    )
    args.append(viewer.id)
    if viewer.department:
        args.append(viewer.department)
        dept = f"${len(args)}"
        clause += f" OR i.lead_department = {dept} OR {dept} = ANY(i.co_departments)"
    return clause + ")"


def unit_in_scope_sql(code: str, args: list[Any]) -> str:
    """Cases owned within ``code``'s subtree or placed in it (the ``unit`` filter, statistics)."""
    args.append(code)
    n = f"${len(args)}"
    return f"(i.org_path @> ARRAY[{n}]::text[] OR i.place_path @> ARRAY[{n}]::text[])"


# -- writing ---------------------------------------------------------------------------------------


async def next_number(conn: asyncpg.Connection, prefix: str, day: datetime) -> str:
    """County prefix + date + sequence of the day (RA20260503-0007); ``day`` in local time."""
    n: int = await conn.fetchval(
        "INSERT INTO incident_number_days (day, last) VALUES ($1, 1)"
        " ON CONFLICT (day) DO UPDATE SET last = incident_number_days.last + 1 RETURNING last",
        day.date(),
    )
    return f"{prefix}{day:%Y%m%d}-{n:04d}"


async def start_clock(
    conn: asyncpg.Connection,
    taxonomy: Taxonomy,
    *,
    incident_id: int,
    category: str,
    priority: str,
    step: str,
    started_at: datetime,
    warn_share: float,
    grace: timedelta,
) -> datetime:
    """Start the clock of ``step`` (限期反馈): three timers, and the case's deadline; returns it."""
    limit = taxonomy.limit(category, priority, step)
    specs = plan_timers(step, started_at, limit, warn_share, grace)
    await conn.executemany(
        "INSERT INTO incident_timers (incident_id, step, kind, fire_at) VALUES ($1, $2, $3, $4)",
        [(incident_id, spec.step, spec.kind, spec.fire_at) for spec in specs],
    )
    due = started_at + limit
    await conn.execute(
        "UPDATE incidents SET deadline_step = $2, deadline_at = $3, warned = false, overdue = false"
        " WHERE id = $1",
        incident_id,
        step,
        due,
    )
    return due


async def extend_clock(conn: asyncpg.Connection, incident_id: int, by: timedelta, now: datetime) -> None:
    """An extension granted (延期): the running step's pending timers and its deadline move later by
    ``by``. A case already overdue is no longer, and is due again at the new deadline."""
    await conn.execute(
        "UPDATE incident_timers SET fire_at = fire_at + $2 WHERE incident_id = $1 AND fired_at IS NULL",
        incident_id,
        by,
    )
    row = await conn.fetchrow(
        "UPDATE incidents SET deadline_at = deadline_at + $2 WHERE id = $1 AND deadline_at IS NOT NULL"
        " RETURNING deadline_at, deadline_step, overdue",
        incident_id,
        by,
    )
    if row is not None and row["overdue"] and row["deadline_at"] > now:
        await conn.execute(
            "INSERT INTO incident_timers (incident_id, step, kind, fire_at) VALUES ($1, $2, 'overdue', $3)",
            incident_id,
            row["deadline_step"],
            row["deadline_at"],
        )
        await conn.execute("UPDATE incidents SET overdue = false WHERE id = $1", incident_id)


async def stop_clock(conn: asyncpg.Connection, incident_id: int, step: str | None) -> None:
    """Stop the clock of ``step`` (every clock with None): pending timers go, the case is no
    longer overdue for it."""
    await conn.execute(
        "DELETE FROM incident_timers WHERE incident_id = $1 AND fired_at IS NULL"
        " AND ($2::text IS NULL OR step = $2)",
        incident_id,
        step,
    )
    await conn.execute(
        "UPDATE incidents SET deadline_step = NULL, deadline_at = NULL, warned = false, overdue = false"
        " WHERE id = $1 AND ($2::text IS NULL OR deadline_step = $2)",
        incident_id,
        step,
    )


# -- JSON ------------------------------------------------------------------------------------------


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _department_json(tree: OrgTree, code: str) -> dict[str, Any]:
    dept = tree.departments.get(code)
    if dept is None:
        return {"code": code, "name": code, "name_en": code}
    return {"code": code, "name": dept.name, "name_en": dept.name_en, "kind": dept.kind, "org": dept.org}


def _unit_name(tree: OrgTree, code: str | None) -> dict[str, Any] | None:
    if code is None:
        return None
    unit = tree.units.get(code)
    if unit is None:
        return {"code": code, "name": code, "name_en": code, "level": None}
    return {"code": code, "name": unit.name, "name_en": unit.name_en, "level": unit.level}


def summary_json(row: Mapping[str, Any], tree: OrgTree, taxonomy: Taxonomy) -> dict[str, Any]:
    """A case without its timeline: what lists, the board and the change feed carry."""
    state = State(row["state"])
    case = to_domain(row)
    location = None
    if row["lat"] is not None and row["lon"] is not None:
        location = {"lat": row["lat"], "lon": row["lon"]}
    owner = tree.units.get(row["owner_unit"])
    deadline = None
    if row["deadline_step"] is not None:
        deadline = {
            "step": row["deadline_step"],
            "due_at": _iso(row["deadline_at"]),
            "warned": row["warned"],
            "overdue": row["overdue"],
        }
    return {
        "id": row["id"],
        "number": row["number"],
        "state": str(state),
        "state_name": {"zh-CN": STATE_NAMES[state].zh, "en": STATE_NAMES[state].en},
        "version": row["version"],
        "category": row["category"],
        "category_name": taxonomy.display_name(row["category"]),
        "priority": row["priority"],
        "description": row["description"],
        "channel": row["channel"],
        "channels": list(row["channels"]),
        "location": location,
        "address": row["address"],
        "grid": _unit_name(tree, row["grid"]),
        "community": _unit_name(tree, row["community"]),
        "township": _unit_name(tree, row["township"]),
        "county": _unit_name(tree, row["county"]),
        "reporter_id": row["reporter_id"],
        "caller": row["caller"],
        "attachments": list(row["attachments"]),
        "owner_unit": row["owner_unit"],
        "owner": _unit_name(tree, row["owner_unit"]),
        "owner_level": owner.level if owner is not None else None,
        "org_path": list(row["org_path"]),
        "lead_department": row["lead_department"],
        "co_departments": list(row["co_departments"]),
        "handling_departments": [_department_json(tree, d) for d in case.handling_departments],
        "feedback_from": list(row["feedback_from"]),
        "pending_feedback": list(case.pending_feedback) if state is State.in_progress else [],
        "squad_unit": row["squad_unit"],
        "merged_into": row["merged_into"],
        "satisfaction": row["satisfaction"],
        "escalations": row["escalations"],
        "signed": [_department_json(tree, d) for d in row["signed"]],
        "returns": row["returns"],
        "extension": (
            {"hours": row["extension_hours"], "department": _department_json(tree, row["extension_department"])}
            if row["extension_hours"] is not None
            else None
        ),
        "extensions": row["extensions"],
        "urged": row["urged"],
        "supervised": row["supervised"],
        "callback": (
            {"at": _iso(row["callback_at"]), "reached": row["callback_reached"], "attempts": row["callbacks"]}
            if row["callbacks"]
            else None
        ),
        "lead_department_name": _department_json(tree, row["lead_department"]) if row["lead_department"] else None,
        "overdue": row["overdue"],
        "ever_overdue": row["ever_overdue"],
        "deadline": deadline,
        "observed_at": _iso(row["observed_at"]),
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
        "accepted_at": _iso(row["accepted_at"]),
        "dispatched_at": _iso(row["dispatched_at"]),
        "closed_at": _iso(row["closed_at"]),
        "closed_level": row["closed_level"],
        "evaluated_at": _iso(row["evaluated_at"]),
        "extra": row["extra"],
    }


def event_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """One audit event of the timeline (a row of the audit log)."""
    action = row["action"]
    try:
        local = ACTION_NAMES[Action(action)]
        name = {"zh-CN": local.zh, "en": local.en}
    except ValueError:
        zh, en = _EVENT_NAMES.get(action, (action, action))
        name = {"zh-CN": zh, "en": en}
    return {
        "id": row["id"],
        "action": action,
        "action_name": name,
        "actor": row["actor_display"] or row["actor_name"],
        "actor_id": row["actor_id"],
        "actor_role": row["actor_role"],
        "at": _iso(row["at"]),
        "from_state": row["from_state"],
        "to_state": row["to_state"],
        "note": row["note"],
        "data": row["data"],
    }


# An emergency plan's steps as the case's timeline names them (with the plan's name).
_PLAN_STEPS: Final[Mapping[str, tuple[str, str]]] = {
    "proposed": ("建议启动应急预案", "plan proposed"),
    "activated": ("启动应急预案", "plan activated"),
    "raised": ("应急响应升级", "plan response raised"),
    "stood_down": ("应急响应终止", "plan stood down"),
    "dismissed": ("不启动应急预案", "plan proposal dismissed"),
    "step_done": ("预案步骤完成", "plan step done"),
}

# An order's steps as the case's timeline names them, with the squad unit's name.
_ORDER_STEPS: Final[Mapping[str, tuple[str, str]]] = {
    "created": ("派出指令", "order sent"),
    "resent": ("指令重发", "order sent again"),
    "delivered": ("指令已送达", "order delivered"),
    "receipt": ("指令已收到", "order received"),
    "accepted": ("队伍已接受", "squad accepted"),
    "declined": ("队伍已拒绝", "squad declined"),
    "overdue": ("超时未接受", "not accepted in time"),
    "en_route": ("队伍出发", "squad on its way"),
    "on_scene": ("队伍到达现场", "squad on the scene"),
    "handled": ("队伍处置完毕", "squad done on site"),
    "completed": ("指令完成", "order completed"),
    "cancelled": ("指令撤销", "order cancelled"),
    "reassigned": ("指令改派", "order given to another unit"),
}


def order_event_json(row: Mapping[str, Any], unit_name: str | None) -> dict[str, Any]:
    """One step of an order of the case, in the case's timeline."""
    zh, en = _ORDER_STEPS.get(row["action"], (row["action"], row["action"]))
    name = unit_name or f"#{row['entity_id']}"
    return {
        "id": f"o{row['id']}",
        "source": "order",
        "order_id": int(row["entity_id"]),
        "unit_name": unit_name,
        "action": f"order.{row['action']}",
        "action_name": {"zh-CN": f"{zh}（{name}）", "en": f"{en} ({name})"},
        "actor": row["actor_display"] or row["actor_name"],
        "actor_id": row["actor_id"],
        "actor_role": row["actor_role"],
        "at": _iso(row["at"]),
        "from_state": row["from_state"],
        "to_state": row["to_state"],
        "note": row["note"],
        "data": row["data"],
    }


async def timeline(conn: asyncpg.Connection, incident_id: int) -> list[dict[str, Any]]:
    """The case's trail in the audit log, with the steps of its orders to squads woven in by time."""
    events = [event_json(r) for r in await changes.trail(conn, "incident", incident_id)]
    orders = {
        r["id"]: r["unit_name"]
        for r in await conn.fetch("SELECT id, unit_name FROM orders WHERE incident_id = $1", incident_id)
    }
    if orders:
        steps = await changes.trails(conn, "order", list(orders))
        events += [order_event_json(r, orders[int(r["entity_id"])]) for r in steps if r["action"] != "receipt"]
    # The emergency plans run on the case (proposed, activated, raised, stood down: docs/plans.md).
    plans = [r["id"] for r in await conn.fetch("SELECT id FROM plan_activations WHERE incident_id = $1", incident_id)]
    if plans:
        for r in await changes.trails(conn, "plan_activation", plans):
            event = event_json(r)
            zh, en = _PLAN_STEPS.get(r["action"], (r["action"], r["action"]))
            plan = (r["data"] or {}).get("plan_name") or {}
            event["source"] = "plan"
            event["action"] = f"plan.{r['action']}"
            event["action_name"] = {
                "zh-CN": f"{zh}：{plan.get('zh-CN', '')}".rstrip("："),
                "en": f"{en}: {plan.get('en', '')}".rstrip(": "),
            }
            events.append(event)
    if orders or plans:
        events.sort(key=lambda e: (e["at"] or "", 0 if e.get("source") not in ("order", "plan") else 1))
    return events


async def duplicate_candidates(
    conn: asyncpg.Connection,
    row: Mapping[str, Any],
    *,
    tree: OrgTree,
    viewer: User | None,
    radius_m: float,
    window: timedelta,
    caller_window: timedelta,
) -> list[dict[str, Any]]:
    """Cases that may report the same thing: same category within ``radius_m`` and ``window``,
    or the same calling number within ``caller_window`` (rejected and merged cases excluded)."""
    created: datetime = row["created_at"]
    args: list[Any] = [row["id"]]
    clauses: list[str] = []
    lat, lon = row["lat"], row["lon"]
    if lat is not None and lon is not None:
        box = bbox_around(lat, lon, radius_m)
        args += [row["category"], box.min_lat, box.max_lat, box.min_lon, box.max_lon]
        args += [created - window, created + window]
        clauses.append(
            "(i.category = $2 AND i.lat BETWEEN $3 AND $4 AND i.lon BETWEEN $5 AND $6"
            " AND i.created_at BETWEEN $7 AND $8)"
        )
    if row["caller"] is not None:
        args += [row["caller"], created - caller_window, created + caller_window]
        n = len(args)
        clauses.append(f"(i.caller = ${n - 2} AND i.created_at BETWEEN ${n - 1} AND ${n})")
    if not clauses:
        return []
    rows = await conn.fetch(
        f"SELECT i.* FROM incidents i WHERE i.id <> $1 AND NOT ({_DEAD_SQL})"
        f" AND ({' OR '.join(clauses)}) ORDER BY i.created_at DESC, i.id DESC LIMIT 50",
        *args,
    )
    found: list[dict[str, Any]] = []
    for other in rows:
        if viewer is not None and not may_view(tree, viewer, other):
            continue
        reasons: list[str] = []
        distance: float | None = None
        if lat is not None and lon is not None and other["lat"] is not None and other["lon"] is not None:
            distance = haversine_m(lat, lon, other["lat"], other["lon"])
            close_in_time = abs(other["created_at"] - created) <= window
            if other["category"] == row["category"] and distance <= radius_m and close_in_time:
                reasons.append("nearby_same_category")
        if (
            row["caller"] is not None
            and other["caller"] == row["caller"]
            and abs(other["created_at"] - created) <= caller_window
        ):
            reasons.append("same_caller")
        if not reasons:
            continue
        found.append(
            {
                "id": other["id"],
                "number": other["number"],
                "state": other["state"],
                "category": other["category"],
                "created_at": _iso(other["created_at"]),
                "distance_m": round(distance, 1) if distance is not None else None,
                "reasons": reasons,
            }
        )
    return found


async def merged_cases(conn: asyncpg.Connection, incident_id: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT id, number, channels, created_at FROM incidents WHERE merged_into = $1 ORDER BY id",
        incident_id,
    )
    return [
        {
            "id": r["id"],
            "number": r["number"],
            "channels": list(r["channels"]),
            "created_at": _iso(r["created_at"]),
        }
        for r in rows
    ]


def union(first: Sequence[str], second: Sequence[str]) -> list[str]:
    """``first`` followed by what ``second`` adds, in order, without repeats."""
    out = list(dict.fromkeys(first))
    for item in second:
        if item not in out:
            out.append(item)
    return out
