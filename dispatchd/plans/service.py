"""Plans as versioned data, and their activation on a case or an area.

One activation is ONE transaction that writes, and records through the change recorder: the groups
filled from departments and named people, the orders to the nearest available units of each kind
(:func:`dispatchd.live.orders.create_order`), the video consultation with its invitations
(:func:`dispatchd.video.store.create_meeting`), the notices to people and the checklist of timed
steps. Raising the level adds what the higher levels add; standing down cancels what is open.

Lock order (docs/development.md): the case, then the units, then the activation (and orders), and
only then the first recorded change.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final

import asyncpg
import structlog

from dispatchd.channels.hotline.slots import PERSON_CALLS
from dispatchd.context import Context
from dispatchd.domain import plans as rules
from dispatchd.domain.incident import OPEN_STATES
from dispatchd.domain.orgs import LEVELS, OrgTree
from dispatchd.domain.plans import LEVEL_NAMES, RESPONSE_LEVELS, STEP_TYPES, CaseFacts, Level, Plan, PlanError
from dispatchd.errors import DomainError, conflict, forbidden, invalid, not_found
from dispatchd.incidents import service as cases
from dispatchd.incidents.store import may_view
from dispatchd.live import orders as live_orders
from dispatchd.plans.slots import NOTICES_WAKE
from dispatchd.store.changes import Actor, Change, record
from dispatchd.store.orgs import unit_path
from dispatchd.store.users import User
from dispatchd.units.service import nearest_units
from dispatchd.video import store as meetings
from dispatchd.video.service import ROOMS
from dispatchd.video.store import NewInvite

log = structlog.get_logger("dispatchd.plans")

EDITORS: Final = ("admin",)
ACTIVATORS: Final = ("duty_officer", "leader")
OPEN: Final = ("proposed", "active")
_OPEN_CASE_STATES: Final = [str(s) for s in OPEN_STATES]
# People one selector may name at most (all grid workers of a township's grids, say).
_MAX_PEOPLE: Final = 200
# pg_advisory_xact_lock(int4, int4) namespace of starting a plan on an area ("plan" in ASCII); the
# two-int key space does not overlap the bigint one of store.changes and store.migrate.
PLAN_AREA_LOCK: Final = 0x706C616E

CALL_UNAVAILABLE: Final = (
    "未配置外呼中继（[voice] trunk）：请按号码人工拨打",
    "no trunk for calls out is configured ([voice] trunk): call the number by hand",
)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _plan_error(exc: PlanError) -> DomainError:
    key = exc.key or "plan"
    return invalid({key: (rules.reason_zh(exc.reason), exc.reason)})


def _level_name(level: str) -> dict[str, str]:
    zh, en = LEVEL_NAMES[level]
    return {"zh-CN": zh, "en": en}


# -- plans -------------------------------------------------------------------------------------------


def plan_json(row: Mapping[str, Any], body: Mapping[str, Any], tree: OrgTree | None = None) -> dict[str, Any]:
    """A plan as the API returns it: the fields as written, plus id, version, where it came from and
    (with the org tree) its unit's names."""
    out = {
        **dict(body),
        "id": row["id"],
        "version": row["current_version"],
        "source": row["source"],
        "created_at": _iso(row["created_at"]),
        "updated_at": _iso(row["updated_at"]),
    }
    unit = tree.units.get(str(body.get("org"))) if tree is not None else None
    if unit is not None:
        out["org_name"], out["org_name_en"] = unit.name, unit.name_en
    return out


def _plan_change(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "version": row["version"], "org_path": row["org_path"], "state": None}


async def _store_plan(
    ctx: Context,
    conn: asyncpg.Connection,
    plan: Plan,
    *,
    source: str,
    file: str | None,
    user: User | None,
) -> tuple[asyncpg.Record, bool]:
    """Insert the plan or its next version (in the caller's transaction); (row, changed)."""
    now, body = ctx.clock.now(), plan.as_json()
    row = await conn.fetchrow("SELECT * FROM plans WHERE code = $1 FOR UPDATE", plan.code)
    path = unit_path(ctx.orgs, plan.org)
    if row is None:
        row = await conn.fetchrow(
            "INSERT INTO plans (code, name, org_code, org_path, current_version, source, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, 1, $5, $6, $6) RETURNING *",
            plan.code,
            plan.name,
            plan.org,
            path,
            source,
            now,
        )
        action = "created"
    else:
        if user is not None and not ctx.orgs.is_within(row["org_code"], user.org):
            raise forbidden("该预案不属于您的辖区", "the plan belongs to a unit outside your jurisdiction")
        current = await conn.fetchval(
            "SELECT body FROM plan_versions WHERE plan_id = $1 AND version = $2", row["id"], row["current_version"]
        )
        if current == body:
            return row, False
        row = await conn.fetchrow(
            "UPDATE plans SET name = $2, org_code = $3, org_path = $4, current_version = current_version + 1,"
            " source = $5, version = version + 1, updated_at = $6 WHERE id = $1 RETURNING *",
            row["id"],
            plan.name,
            plan.org,
            path,
            source,
            now,
        )
        action = "revised"
    await conn.execute(
        "INSERT INTO plan_versions (plan_id, version, body, source, file, created_by, created_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)",
        row["id"],
        row["current_version"],
        body,
        source,
        file,
        user.id if user is not None else None,
        now,
    )
    actor = Actor.of(user, "config")
    # Read from the files at start-up: audited, not news for the boards (nothing changed on screen).
    await record(
        conn,
        Change.of("plan", _plan_change(row), action, plan_json(row, body), actor, now, detail={"version": row["current_version"], "source": source}),
        publish=source == "api",
    )
    log.info("plan_saved", plan_id=row["id"], plan_code=plan.code, version=row["current_version"], source=source)
    return row, True


async def save_plan(ctx: Context, body: Mapping[str, Any], user: User) -> tuple[dict[str, Any], bool]:
    """An admin posts a plan (same fields as the TOML): a new plan, or the next version of the plan
    with that code. Returns (plan, created)."""
    if user.role not in EDITORS:
        raise forbidden("只有管理员可以编辑预案", "only admins edit plans")
    try:
        plan = rules.parse_plan(body, tree=ctx.orgs, taxonomy=ctx.taxonomy)
    except PlanError as exc:
        raise _plan_error(exc) from None
    if not ctx.orgs.is_within(plan.org, user.org):
        raise invalid({"org": ("预案所属单位不在您的辖区内", "the plan's unit is outside your jurisdiction")})
    async with ctx.pool.acquire() as conn, conn.transaction():
        existed = await conn.fetchval("SELECT 1 FROM plans WHERE code = $1", plan.code)
        row, _ = await _store_plan(ctx, conn, plan, source="api", file=None, user=user)
    return plan_json(row, plan.as_json(), ctx.orgs), existed is None


async def sync_file_plans(ctx: Context, plans: Sequence[Plan], files: Mapping[str, str] | None = None) -> int:
    """The plans of config/plans/ into the database: a new plan, or a new version when its file
    changed since the version read from it last; a plan edited through the API since stays as the
    admins left it (logged). Returns how many versions were written."""
    written = 0
    for plan in plans:
        async with ctx.pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow("SELECT * FROM plans WHERE code = $1", plan.code)
            if row is not None and row["source"] == "api":
                log.info("plan_file_not_applied", plan_code=plan.code, reason="edited through the API since")
                continue
            _, changed = await _store_plan(
                ctx, conn, plan, source="file", file=(files or {}).get(plan.code), user=None
            )
            written += int(changed)
    return written


async def _current(conn: asyncpg.Connection, plan_id: int) -> tuple[asyncpg.Record, Plan] | None:
    row = await conn.fetchrow("SELECT * FROM plans WHERE id = $1", plan_id)
    if row is None:
        return None
    return row, await _version(conn, plan_id, row["current_version"])


async def _version(conn: asyncpg.Connection, plan_id: int, version: int) -> Plan:
    body = await conn.fetchval("SELECT body FROM plan_versions WHERE plan_id = $1 AND version = $2", plan_id, version)
    return rules.parse_plan(body)


def _plan_visible(ctx: Context, org: str, viewer: User) -> bool:
    """A plan of the viewer's subtree, or of a unit above the viewer (it covers them)."""
    tree = ctx.orgs
    return viewer.org in tree and (tree.is_within(org, viewer.org) or tree.is_within(viewer.org, org))


async def list_plans(ctx: Context, viewer: User) -> list[dict[str, Any]]:
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT p.*, v.body FROM plans p JOIN plan_versions v ON v.plan_id = p.id AND v.version = p.current_version"
            " ORDER BY p.code"
        )
    return [plan_json(r, r["body"], ctx.orgs) for r in rows if _plan_visible(ctx, r["org_code"], viewer)]


async def get_plan(ctx: Context, plan_id: int, viewer: User) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM plans WHERE id = $1", plan_id)
        if row is None or not _plan_visible(ctx, row["org_code"], viewer):
            raise not_found("预案", "plan")
        versions = await conn.fetch(
            "SELECT version, source, file, created_by, created_at, body FROM plan_versions WHERE plan_id = $1 ORDER BY version",
            plan_id,
        )
    current = versions[-1]["body"]
    out = plan_json(row, current, ctx.orgs)
    out["versions"] = [
        {"version": v["version"], "source": v["source"], "created_by": v["created_by"], "created_at": _iso(v["created_at"])}
        for v in versions
    ]
    return out


# -- who: selectors to people ------------------------------------------------------------------------


def target_units(ctx: Context, place: str, level: str | None) -> list[str]:
    """The units a selector's level names for ``place``: the place itself, the unit above it at that
    level, or every unit at that level below it."""
    tree = ctx.orgs
    if level is None or place not in tree:
        return [place]
    own = tree.level_of(place)
    if level == own:
        return [place]
    if LEVELS.index(level) < LEVELS.index(own):
        above = tree.ancestor_at(place, level)
        return [above] if above else []
    return [u.code for u in tree.subtree(place) if u.level == level]


async def people(ctx: Context, conn: asyncpg.Connection, sel: rules.Selector, place: str) -> list[asyncpg.Record]:
    """The accounts a selector names for ``place`` (enabled ones, by id)."""
    cols = "SELECT id, username, display_name, role, org_code, department_code FROM users WHERE NOT disabled"
    if sel.user is not None:
        return list(await conn.fetch(f"{cols} AND username = $1", sel.user))
    units = target_units(ctx, place, sel.at)
    if sel.role is not None:
        return list(
            await conn.fetch(f"{cols} AND role = $1 AND org_code = ANY($2::text[]) ORDER BY id LIMIT {_MAX_PEOPLE}", sel.role, units)
        )
    assert sel.department is not None
    depts = sorted({d.code for u in units if (d := ctx.orgs.find_department(u, sel.department)) is not None})
    if not depts:
        return []
    return list(
        await conn.fetch(f"{cols} AND department_code = ANY($1::text[]) ORDER BY id LIMIT {_MAX_PEOPLE}", depts)
    )


def _person_name(row: Mapping[str, Any]) -> str:
    return str(row["display_name"] or row["username"])


# The roles and department kinds as people say them (a role nobody fills is shown by name).
_ROLE_NAMES: Final = {
    "duty_officer": "值班员",
    "leader": "领导",
    "squad_member": "应急队员",
    "grid_worker": "网格员",
    "department_handler": "部门经办人",
}
_KIND_NAMES: Final = {
    "police": "公安",
    "justice": "司法",
    "work_safety": "安监",
    "fire": "消防",
    "environment": "环保",
    "market": "市场监管",
    "enforcement": "综合执法",
    "social_security": "社保",
    "petition": "信访",
    "emergency_squad": "应急中队",
    "civil_affairs": "民政",
    "health": "卫健",
    "transport": "交通",
    "water": "水利",
    "housing": "住建",
    "education": "教育",
    "other": "其他部门",
}


def _selector_label(ctx: Context, sel: rules.Selector, place: str) -> str:
    """Who a selector means, in words (for a role nobody fills): 安阳街道·领导, 瑞安市民政局."""
    return _selector_names(ctx, sel, place)[0]


def _selector_names(ctx: Context, sel: rules.Selector, place: str) -> tuple[str, str]:
    """(zh-CN, en) of :func:`_selector_label`."""
    if sel.user is not None:
        return sel.user, sel.user
    units = [ctx.orgs.get(u) for u in target_units(ctx, place, sel.at) if u in ctx.orgs][:3]
    zh_where = "、".join(u.name for u in units) or place
    en_where = ", ".join(u.name_en or u.name for u in units) or place
    if sel.role is not None:
        return f"{zh_where}·{_ROLE_NAMES.get(sel.role, sel.role)}", f"{en_where} · {sel.role.replace('_', ' ')}"
    assert sel.department is not None
    found = list({d.code: d for u in units if (d := ctx.orgs.find_department(u.code, sel.department)) is not None}.values())
    if found:
        return "、".join(d.name for d in found), ", ".join(d.name_en or d.name for d in found)
    kind = sel.department.replace("_", " ")
    return f"{zh_where}·{_KIND_NAMES.get(sel.department, sel.department)}", f"{en_where} · {kind}"


# -- notices -----------------------------------------------------------------------------------------


def notice_json(row: Mapping[str, Any], name: str | None = None) -> dict[str, Any]:
    return {
        "id": row["id"],
        "activation_id": row["activation_id"],
        "warning_id": row["warning_id"],
        "level": row["level"],
        "user_id": row["user_id"],
        "name": name if name is not None else row.get("person_name"),
        "label": row["label"],
        "via": list(row["via"]),
        "text": row["text"],
        "org": row["org_path"][-1] if row["org_path"] else None,
        "state": row["state"],
        "deliveries": row["deliveries"],
        "escalates": row["escalates"],
        "escalated_to": row["escalated_to"],
        "escalate_at": _iso(row["escalate_at"]),
        "acknowledged_at": _iso(row["acknowledged_at"]),
        "acknowledged_by": row["acknowledged_by"],
        "created_at": _iso(row["created_at"]),
        "version": row["version"],
    }


def _deliveries(ctx: Context, via: Sequence[str], has_person: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v in via:
        if not has_person:
            out[v] = {"state": "failed", "detail": "无人可通知 / nobody fills this"}
        elif v == "console":
            out[v] = {"state": "sent"}
        elif v == "sms":
            out[v] = (
                {"state": "pending"}
                if ctx.settings.plans.sms_gateway
                else {"state": "unavailable", "detail": "未配置短信网关 / no SMS gateway configured"}
            )
        elif ctx.get(PERSON_CALLS) is not None:
            out[v] = {"state": "pending"}  # rung by the instance holding the SIP port (plans.notices)
        else:
            out[v] = {"state": "unavailable", "detail": " / ".join(CALL_UNAVAILABLE)}
    return out


async def add_notice(
    ctx: Context,
    conn: asyncpg.Connection,
    *,
    person: Mapping[str, Any] | None,
    label: str,
    via: Sequence[str],
    text: str,
    actor: Actor,
    activation_id: int | None = None,
    warning_id: int | None = None,
    level: str | None = None,
    deputy: Mapping[str, Any] | None = None,
    escalates: int | None = None,
    fallback_org: str,
) -> asyncpg.Record:
    """Write one notice and record it (the person's console hears of it through the change feed)."""
    now = ctx.clock.now()
    org = person["org_code"] if person is not None else fallback_org
    state = "sent" if person is not None else "failed"
    escalate_at = now + timedelta(seconds=ctx.settings.plans.escalate_after) if person is not None else None
    row = await conn.fetchrow(
        "INSERT INTO plan_notices (activation_id, warning_id, level, user_id, label, via, text, org_path, state,"
        " deliveries, deputy, escalates, escalate_at, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $14) RETURNING *",
        activation_id,
        warning_id,
        level,
        person["id"] if person is not None else None,
        label,
        list(via),
        text,
        unit_path(ctx.orgs, org),
        state,
        _deliveries(ctx, via, person is not None),
        dict(deputy) if deputy else None,
        escalates,
        escalate_at,
        now,
    )
    name = _person_name(person) if person is not None else None
    await record(conn, Change.of("plan_notice", row, state, notice_json(row, name), actor, now))
    return row


async def notices_of(conn: asyncpg.Connection, where: str, value: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(
        "SELECT n.*, coalesce(nullif(u.display_name, ''), u.username) AS person_name FROM plan_notices n"
        f" LEFT JOIN users u ON u.id = n.user_id WHERE n.{where} = $1 ORDER BY n.id",
        value,
    )
    return [notice_json(r) for r in rows]


def wake_notices(ctx: Context) -> None:
    event = ctx.get(NOTICES_WAKE)
    if event is not None:
        event.set()


# -- activations -------------------------------------------------------------------------------------


def _activation_change(row: Mapping[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "version": row["version"], "org_path": row["org_path"], "state": row["state"]}


async def activation_json(ctx: Context, conn: asyncpg.Connection, act: Mapping[str, Any]) -> dict[str, Any]:
    """An activation with everything it made: groups, orders, shortfalls, meeting, notices, checklist."""
    now = ctx.clock.now()
    plan = await conn.fetchrow("SELECT code, name FROM plans WHERE id = $1", act["plan_id"])
    body = await conn.fetchval(
        "SELECT body FROM plan_versions WHERE plan_id = $1 AND version = $2", act["plan_id"], act["plan_version"]
    )
    groups = await conn.fetch("SELECT * FROM plan_groups WHERE activation_id = $1 ORDER BY id", act["id"])
    orders = await conn.fetch(
        "SELECT o.id, o.unit_id, o.unit_name, o.state, p.kind, p.level FROM plan_orders p JOIN orders o ON o.id = p.order_id"
        " WHERE p.activation_id = $1 ORDER BY o.id",
        act["id"],
    )
    short = await conn.fetch(
        "SELECT level, kind, missing FROM plan_shortfalls WHERE activation_id = $1 ORDER BY created_at", act["id"]
    )
    steps = await conn.fetch("SELECT * FROM plan_steps WHERE activation_id = $1 ORDER BY n", act["id"])
    meeting = await meetings.get_meeting(conn, act["meeting_id"]) if act["meeting_id"] else None
    area = ctx.orgs.get(act["area_code"]) if act["area_code"] in ctx.orgs else None
    running = act["state"] == "active"
    current = act["level"]
    defined = list((body or {}).get("levels", {}))
    return {
        "id": act["id"],
        "plan_id": act["plan_id"],
        "plan_code": plan["code"] if plan else None,
        "plan_name": {"zh-CN": plan["name"] if plan else "", "en": (body or {}).get("name_en", "")},
        "plan_version": act["plan_version"],
        "incident_id": act["incident_id"],
        "warning_id": act["warning_id"],
        "area": {"code": act["area_code"], "name": area.name if area else act["area_code"], "name_en": area.name_en if area else ""},
        "state": act["state"],
        "level": current,
        "level_name": _level_name(current),
        "levels": [{"code": c, "name": _level_name(c)} for c in RESPONSE_LEVELS if c in defined],
        "can_raise_to": [c for c in RESPONSE_LEVELS if c in defined and rules.higher(c, current)] if act["state"] in OPEN else [],
        "proposed_at": _iso(act["proposed_at"]),
        "activated_at": _iso(act["activated_at"]),
        "ended_at": _iso(act["ended_at"]),
        "reason": act["reason"],
        "version": act["version"],
        "groups": [
            {"id": g["id"], "level": g["level"], "name": g["name"], "name_en": g["name_en"], "members": g["members"]}
            for g in groups
        ],
        "orders": [
            {"id": o["id"], "unit_id": o["unit_id"], "unit_name": o["unit_name"], "state": o["state"], "kind": o["kind"], "level": o["level"]}
            for o in orders
        ],
        "shortfalls": [{"level": s["level"], "kind": s["kind"], "missing": s["missing"]} for s in short],
        "meeting_id": act["meeting_id"],
        "meeting": {"id": meeting.id, "title": meeting.title, "status": meeting.status} if meeting else None,
        "notices": await notices_of(conn, "activation_id", act["id"]),
        "checklist": [
            {
                "id": s["id"],
                "n": s["n"],
                "level": s["level"],
                "type": s["type"],
                "type_name": {"zh-CN": STEP_TYPES[s["type"]][0], "en": STEP_TYPES[s["type"]][1]},
                "title": s["title"],
                "title_en": s["title_en"],
                "due_at": _iso(s["due_at"]),
                "done_at": _iso(s["done_at"]),
                "done_by": s["done_by"],
                "cancelled": s["cancelled"],
                "overdue": running and s["done_at"] is None and not s["cancelled"] and s["due_at"] < now,
            }
            for s in steps
        ],
        "overdue_steps": sum(
            1 for s in steps if running and s["done_at"] is None and not s["cancelled"] and s["due_at"] < now
        ),
    }


async def _record_activation(
    ctx: Context,
    conn: asyncpg.Connection,
    act: Mapping[str, Any],
    action: str,
    actor: Actor,
    *,
    from_state: str | None,
    detail: Mapping[str, Any] | None = None,
    note: str | None = None,
) -> dict[str, Any]:
    data = await activation_json(ctx, conn, act)
    full = {"plan_name": data["plan_name"], "level": act["level"], **dict(detail or {})}
    await record(
        conn, Change.of("plan_activation", act, action, data, actor, ctx.clock.now(), from_state=from_state, note=note, detail=full)
    )
    return data


@dataclass
class _Picks:
    """Units chosen for the forces, nearest first per kind (locked before anything is recorded)."""

    by_kind: dict[str, list[int]] = field(default_factory=dict)


async def _candidates(
    ctx: Context, levels: Sequence[Level], lat: float | None, lon: float | None, codes: frozenset[str]
) -> dict[str, list[int]]:
    """Nearest available units of each kind the levels ask for (read before the transaction)."""
    wanted: dict[str, int] = {}
    for lv in levels:
        for f in lv.forces:
            wanted[f.kind] = wanted.get(f.kind, 0) + f.count
    if not wanted or lat is None or lon is None:
        return {kind: [] for kind in wanted}
    out: dict[str, list[int]] = {}
    for kind, count in wanted.items():
        found = await nearest_units(ctx, lat, lon, codes, kind=kind, limit=count + 5)
        out[kind] = [int(u["id"]) for u in found]
    return out


async def _lock_units(conn: asyncpg.Connection, candidates: Mapping[str, list[int]]) -> _Picks:
    """Lock every candidate unit (by id) and keep those still available, nearest first."""
    ids = sorted({i for v in candidates.values() for i in v})
    available: set[int] = set()
    if ids:
        rows = await conn.fetch("SELECT id, status FROM squad_units WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE", ids)
        available = {r["id"] for r in rows if r["status"] == "available"}
    return _Picks({kind: [i for i in v if i in available] for kind, v in candidates.items()})


def _place_of(case: Mapping[str, Any]) -> str:
    return str(case["grid"] or case["owner_unit"])


def _point(ctx: Context, case: Mapping[str, Any]) -> tuple[float | None, float | None]:
    if case["lat"] is not None and case["lon"] is not None:
        return float(case["lat"]), float(case["lon"])
    for code in (case["grid"], case["owner_unit"]):
        if code and code in ctx.orgs and ctx.orgs.get(code).centre is not None:
            lon, lat = ctx.orgs.get(code).centre  # type: ignore[misc]  # a (lon, lat) point
            return float(lat), float(lon)
    return None, None


async def _apply_levels(
    ctx: Context,
    conn: asyncpg.Connection,
    act: asyncpg.Record,
    plan: Plan,
    levels: Sequence[Level],
    case: Mapping[str, Any],
    picks: _Picks,
    user: User | None,
) -> dict[str, Any]:
    """Carry out what ``levels`` add, in the caller's transaction (every lock already taken)."""
    now, actor = ctx.clock.now(), Actor.of(user)
    place = str(act["area_code"])
    made: dict[str, Any] = {"groups": 0, "orders": [], "notices": 0, "steps": 0, "shortfalls": []}
    for lv in levels:
        for g in lv.groups:
            members: list[dict[str, Any]] = []
            for m in g.members:
                found = await people(ctx, conn, m.who, place)
                for p in found:
                    members.append(
                        {"label": m.label, "label_en": m.label_en, "user_id": p["id"], "name": _person_name(p), "unit": p["org_code"], "vacant": False}
                    )
                if not found:
                    members.append(
                        {
                            "label": m.label,
                            "label_en": m.label_en,
                            "user_id": None,
                            "name": _selector_names(ctx, m.who, place)[0],
                            "name_en": _selector_names(ctx, m.who, place)[1],
                            "unit": None,
                            "vacant": True,
                        }
                    )
            await conn.execute(
                "INSERT INTO plan_groups (activation_id, level, name, name_en, members, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
                act["id"],
                lv.code,
                g.name,
                g.name_en,
                members,
                now,
            )
            made["groups"] += 1
        for f in lv.forces:
            pool = picks.by_kind.get(f.kind, [])
            taken = 0
            while taken < f.count and pool:
                unit_id = pool.pop(0)
                order = await live_orders.create_order(
                    ctx,
                    incident_id=case["id"],
                    unit_id=unit_id,
                    instructions=f"【{plan.name}·{LEVEL_NAMES[lv.code][0]}】{f.instructions}".strip(),
                    actor=user,
                    dispatcher_org=case["owner_unit"],
                    conn=conn,
                )
                await conn.execute(
                    "INSERT INTO plan_orders (activation_id, order_id, level, kind) VALUES ($1, $2, $3, $4)",
                    act["id"],
                    order["id"],
                    lv.code,
                    f.kind,
                )
                made["orders"].append(order["id"])
                taken += 1
            if taken < f.count:
                await conn.execute(
                    "INSERT INTO plan_shortfalls (activation_id, level, kind, missing, created_at) VALUES ($1, $2, $3, $4, $5)",
                    act["id"],
                    lv.code,
                    f.kind,
                    f.count - taken,
                    now,
                )
                made["shortfalls"].append({"kind": f.kind, "missing": f.count - taken})
        for n in lv.notices:
            found = await people(ctx, conn, n.who, place)
            for p in found:
                await add_notice(
                    ctx,
                    conn,
                    person=p,
                    label=_person_name(p),
                    via=n.via,
                    text=f"{n.text}（{case['number']}）",
                    actor=actor,
                    activation_id=act["id"],
                    level=lv.code,
                    deputy=n.deputy.as_json() if n.deputy else None,
                    fallback_org=case["owner_unit"],
                )
                made["notices"] += 1
            if not found:
                await add_notice(
                    ctx,
                    conn,
                    person=None,
                    label=_selector_label(ctx, n.who, place),
                    via=n.via,
                    text=n.text,
                    actor=actor,
                    activation_id=act["id"],
                    level=lv.code,
                    fallback_org=case["owner_unit"],
                )
                made["notices"] += 1
        last = await conn.fetchval("SELECT coalesce(max(n), 0) FROM plan_steps WHERE activation_id = $1", act["id"])
        for i, s in enumerate(lv.steps, start=1):
            await conn.execute(
                "INSERT INTO plan_steps (activation_id, level, n, type, title, title_en, due_at, created_at)"
                " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                act["id"],
                lv.code,
                last + i,
                s.type,
                s.title,
                s.title_en,
                now + s.within,
                now,
            )
            made["steps"] += 1
    meeting_id = await _consult(ctx, conn, act, plan, levels, case, user)
    made["meeting_id"] = meeting_id
    return made


async def _consult(
    ctx: Context,
    conn: asyncpg.Connection,
    act: Mapping[str, Any],
    plan: Plan,
    levels: Sequence[Level],
    case: Mapping[str, Any],
    user: User | None,
) -> int | None:
    """Open the video consultation (or invite the units the new levels add to it)."""
    consults = [lv.consult for lv in levels if lv.consult is not None]
    if not consults:
        return act["meeting_id"]  # type: ignore[no-any-return]
    tree, now, actor = ctx.orgs, ctx.clock.now(), Actor.of(user)
    place = str(act["area_code"])
    first = consults[0]
    chair = (rules.place_unit_at(tree, place, first.chair) if first.chair else None) or case["owner_unit"]
    units: list[str] = []
    for c in consults:
        for lvl in c.invite:
            units += [u for u in target_units(ctx, place, lvl) if u != chair and u in tree]
    units = list(dict.fromkeys(units))[: max(0, ctx.settings.video.max_participants - 1)]
    if act["meeting_id"] is None:
        invites = [NewInvite(chair, f"{tree.get(chair).name}（主持）", "chair", "chair", user_id=user.id if user else None)]
        invites += [NewInvite(code, tree.get(code).name, "participant", "unit") for code in units]
        meeting, _ = await meetings.create_meeting(
            conn,
            title=f"{first.title}·{case['number']}",
            org_code=chair,
            org_path=unit_path(tree, chair),
            created_by=user.id if user else None,
            actor=actor,
            codec=ctx.settings.video.codec,
            incident_id=str(case["id"]),
            scheduled_at=None,
            now=now,
            invites=invites,
        )
        return meeting.id
    meeting_row = await meetings.get_meeting(conn, act["meeting_id"])
    if meeting_row is None or meeting_row.status == "ended":
        return act["meeting_id"]  # type: ignore[no-any-return]
    invited = {i.unit_code for i in await meetings.invited_units(conn, meeting_row.id)}
    for code in units:
        if code not in invited:
            await meetings.add_invite(conn, meeting_row, NewInvite(code, tree.get(code).name, "participant", "unit"), actor, now)
            meeting_row = await meetings.get_meeting(conn, meeting_row.id) or meeting_row
    return meeting_row.id


def _jurisdiction(ctx: Context, case: Mapping[str, Any], user: User | None) -> frozenset[str]:
    if user is not None:
        return ctx.orgs.descendants(user.org)
    county = ctx.orgs.ancestor_at(case["owner_unit"], "county") or case["owner_unit"]
    return ctx.orgs.descendants(county)


def _check_level(plan: Plan, level: str | None) -> str:
    chosen = level or plan.trigger.level
    if chosen not in RESPONSE_LEVELS or chosen not in plan.levels:
        raise invalid(
            {"level": (f"预案未定义该响应级别，可选：{'、'.join(plan.levels)}", "the plan defines levels " + ", ".join(plan.levels))}
        )
    return chosen


async def _locked_case(ctx: Context, conn: asyncpg.Connection, incident_id: int, user: User | None) -> asyncpg.Record:
    case = await conn.fetchrow("SELECT * FROM incidents WHERE id = $1 FOR UPDATE", incident_id)
    if case is None or (user is not None and not may_view(ctx.orgs, user, case)):
        raise not_found("案件", "case")
    if case["state"] not in _OPEN_CASE_STATES:
        raise conflict("事件已结束，不能启动预案", f"the case is {case['state']}: no plan can start on it", code="case_closed")
    return case


def _require(user: User) -> None:
    if user.role not in ACTIVATORS:
        raise forbidden("只有值班员和领导可以启动预案", "only duty officers and leaders run plans")


async def activate_on_case(
    ctx: Context,
    incident_id: int,
    plan_id: int,
    level: str | None,
    user: User | None,
    *,
    warning_id: int | None = None,
    area_code: str | None = None,
) -> dict[str, Any]:
    """Start a plan on a case (or confirm its proposal), in one transaction; the activation."""
    if user is not None:
        _require(user)
    async with ctx.pool.acquire() as conn:
        found = await _current(conn, plan_id)
        case_row = await conn.fetchrow("SELECT * FROM incidents WHERE id = $1", incident_id)
    if found is None or (user is not None and not _plan_visible(ctx, found[0]["org_code"], user)):
        raise not_found("预案", "plan")
    if case_row is None or (user is not None and not may_view(ctx.orgs, user, case_row)):
        raise not_found("案件", "case")
    prow, plan = found
    chosen = _check_level(plan, level)
    levels = plan.levels_up_to(chosen)
    lat, lon = _point(ctx, case_row)
    candidates = await _candidates(ctx, levels, lat, lon, _jurisdiction(ctx, case_row, user))
    async with ctx.pool.acquire() as conn, conn.transaction():
        case = await _locked_case(ctx, conn, incident_id, user)
        picks = await _lock_units(conn, candidates)
        out = await _run_on_case(ctx, conn, case, prow, plan, chosen, level, picks, user, warning_id, area_code)
    wake_notices(ctx)
    return out


async def _run_on_case(
    ctx: Context,
    conn: asyncpg.Connection,
    case: Mapping[str, Any],
    prow: Mapping[str, Any],
    plan: Plan,
    chosen: str,
    level: str | None,
    picks: _Picks,
    user: User | None,
    warning_id: int | None,
    area_code: str | None,
) -> dict[str, Any]:
    """The activation itself, in the caller's transaction (the case and the units locked)."""
    now, actor = ctx.clock.now(), Actor.of(user)
    plan_id, incident_id = prow["id"], case["id"]
    act = await conn.fetchrow(
        "SELECT * FROM plan_activations WHERE plan_id = $1 AND incident_id = $2 AND state IN ('proposed', 'active')"
        " FOR UPDATE",
        plan_id,
        incident_id,
    )
    if act is not None and act["state"] == "active":
        raise conflict(
            "该预案已在本案件上启动",
            "the plan already runs on this case",
            code="plan_active",
            extra={"activation": await activation_json(ctx, conn, act)},
        )
    from_state = act["state"] if act is not None else None
    levels = plan.levels_up_to(chosen)
    if act is None:
        act = await conn.fetchrow(
            "INSERT INTO plan_activations (plan_id, plan_version, incident_id, area_code, warning_id, org_path, state,"
            " level, activated_at, activated_by, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8, $9, $8, $8) RETURNING *",
            plan_id,
            prow["current_version"],
            incident_id,
            area_code or _place_of(case),
            warning_id,
            list(case["org_path"]),
            chosen,
            now,
            user.id if user else None,
        )
    else:
        plan = await _version(conn, plan_id, act["plan_version"])
        chosen = _check_level(plan, level or act["level"])
        levels = plan.levels_up_to(chosen)
    made = await _apply_levels(ctx, conn, act, plan, levels, case, picks, user)
    act = await conn.fetchrow(
        "UPDATE plan_activations SET state = 'active', level = $2, meeting_id = $3, activated_at = $4,"
        " activated_by = $5, updated_at = $4, version = version + 1 WHERE id = $1 RETURNING *",
        act["id"],
        chosen,
        made["meeting_id"],
        now,
        user.id if user else None,
    )
    out = await _record_activation(ctx, conn, act, "activated", actor, from_state=from_state, detail=made)
    log.info(
        "plan_activated",
        activation_id=act["id"],
        plan_id=plan_id,
        incident_id=incident_id,
        level=chosen,
        orders=len(made["orders"]),
        notices=made["notices"],
        meeting_id=made["meeting_id"],
    )
    return out


async def activate_on_area(
    ctx: Context,
    area_code: str,
    plan_id: int,
    level: str | None,
    user: User | None,
    *,
    warning_id: int | None = None,
    description: str | None = None,
) -> dict[str, Any]:
    """Start a plan on an area (a township a warning covers, or chosen by hand): it opens a case for
    the area (the orders, the consultation and the timeline belong to it) and runs the plan on it."""
    tree = ctx.orgs
    if area_code not in tree or (user is not None and not tree.is_within(area_code, user.org)):
        raise not_found("区域", "area")
    if user is not None:
        _require(user)
    async with ctx.pool.acquire() as conn:
        found = await _current(conn, plan_id)
        if found is None or (user is not None and not _plan_visible(ctx, found[0]["org_code"], user)):
            raise not_found("预案", "plan")
        busy = await conn.fetchval(
            "SELECT id FROM plan_activations WHERE plan_id = $1 AND area_code = $2 AND state IN ('proposed', 'active')",
            plan_id,
            area_code,
        )
    if busy is not None:
        raise conflict("该预案已在此区域启动", "the plan already runs for this area", code="plan_active", extra={"activation_id": busy})
    prow, plan = found
    if not plan.trigger.categories:
        raise invalid({"plan": ("预案未设事件类别，无法在区域上启动", "the plan names no case category to open a case with")})
    chosen = _check_level(plan, level)
    unit = tree.get(area_code)
    lat = lon = None
    if unit.centre is not None:
        lon, lat = unit.centre
    county = tree.ancestor_at(area_code, "county") or area_code
    codes = tree.descendants(user.org) if user is not None else tree.descendants(county)
    candidates = await _candidates(ctx, plan.levels_up_to(chosen), lat, lon, codes)
    async with ctx.pool.acquire() as conn, conn.transaction():
        # One start per plan and area at a time (two warnings for the same township arriving
        # together), then the check again under that lock; units next (the new case's row is this
        # transaction's own), then the case, then the plan.
        await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", PLAN_AREA_LOCK, f"{plan_id}:{area_code}")
        busy = await conn.fetchval(
            "SELECT id FROM plan_activations WHERE plan_id = $1 AND area_code = $2 AND state IN ('proposed', 'active')",
            plan_id,
            area_code,
        )
        if busy is not None:
            raise conflict(
                "该预案已在此区域启动", "the plan already runs for this area", code="plan_active", extra={"activation_id": busy}
            )
        picks = await _lock_units(conn, candidates)
        opened = await cases.create_incident(
            ctx,
            category=plan.trigger.categories[0],
            description=description or f"{plan.name}：{unit.name}",
            channel="officer",
            priority="P1",
            lat=lat,
            lon=lon,
            address=unit.name,
            owner_unit=area_code,
            actor=user,
            extra={"plan_id": plan_id, "warning_id": warning_id},
            conn=conn,
        )
        case = await conn.fetchrow("SELECT * FROM incidents WHERE id = $1 FOR UPDATE", opened["id"])
        out = await _run_on_case(ctx, conn, case, prow, plan, chosen, level, picks, user, warning_id, area_code)
    wake_notices(ctx)
    return out


async def _locked_activation(
    ctx: Context, conn: asyncpg.Connection, activation_id: int, user: User
) -> tuple[asyncpg.Record | None, asyncpg.Record]:
    """Lock the activation's case (first), then the activation; 404 outside the user's sight."""
    head = await conn.fetchrow("SELECT incident_id FROM plan_activations WHERE id = $1", activation_id)
    if head is None:
        raise not_found("预案启动记录", "plan activation")
    case = None
    if head["incident_id"] is not None:
        case = await conn.fetchrow("SELECT * FROM incidents WHERE id = $1 FOR UPDATE", head["incident_id"])
    act = await conn.fetchrow("SELECT * FROM plan_activations WHERE id = $1", activation_id)
    visible = case is not None and may_view(ctx.orgs, user, case)
    if not visible and not any(ctx.orgs.is_within(code, user.org) for code in act["org_path"][-1:]):
        raise not_found("预案启动记录", "plan activation")
    return case, act


async def get_activation(ctx: Context, activation_id: int, user: User) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        act = await conn.fetchrow("SELECT * FROM plan_activations WHERE id = $1", activation_id)
        if act is None:
            raise not_found("预案启动记录", "plan activation")
        case = await conn.fetchrow("SELECT * FROM incidents WHERE id = $1", act["incident_id"]) if act["incident_id"] else None
        if not ((case is not None and may_view(ctx.orgs, user, case)) or ctx.orgs.is_within(act["org_path"][-1], user.org)):
            raise not_found("预案启动记录", "plan activation")
        return await activation_json(ctx, conn, act)


async def confirm(ctx: Context, activation_id: int, user: User, level: str | None = None) -> dict[str, Any]:
    """The duty officer confirms a proposal (one key on the console): the plan runs."""
    _require(user)
    async with ctx.pool.acquire() as conn:
        act = await conn.fetchrow("SELECT * FROM plan_activations WHERE id = $1", activation_id)
    if act is None or act["incident_id"] is None:
        raise not_found("预案启动记录", "plan activation")
    if act["state"] != "proposed":
        raise conflict("该预案建议已处理", f"the proposal is {act['state']}", code="not_proposed")
    return await activate_on_case(ctx, act["incident_id"], act["plan_id"], level or act["level"], user)


async def dismiss(ctx: Context, activation_id: int, user: User, reason: str | None) -> dict[str, Any]:
    """The duty officer declines a proposal; the case is not proposed the plan again."""
    _require(user)
    async with ctx.pool.acquire() as conn, conn.transaction():
        _, act = await _locked_activation(ctx, conn, activation_id, user)
        act = await conn.fetchrow("SELECT * FROM plan_activations WHERE id = $1 FOR UPDATE", activation_id)
        if act["state"] != "proposed":
            raise conflict("该预案建议已处理", f"the proposal is {act['state']}", code="not_proposed")
        now = ctx.clock.now()
        act = await conn.fetchrow(
            "UPDATE plan_activations SET state = 'dismissed', ended_at = $2, reason = $3, updated_at = $2,"
            " version = version + 1 WHERE id = $1 RETURNING *",
            activation_id,
            now,
            reason,
        )
        return await _record_activation(ctx, conn, act, "dismissed", Actor.of(user), from_state="proposed", note=reason)


async def raise_level(ctx: Context, activation_id: int, level: str, user: User) -> dict[str, Any]:
    """Raise a running plan's level: what the levels above the current one add, in one transaction."""
    _require(user)
    async with ctx.pool.acquire() as conn:
        act = await conn.fetchrow("SELECT * FROM plan_activations WHERE id = $1", activation_id)
        if act is None:
            raise not_found("预案启动记录", "plan activation")
        plan = await _version(conn, act["plan_id"], act["plan_version"])
        case_row = await conn.fetchrow("SELECT * FROM incidents WHERE id = $1", act["incident_id"])
    if case_row is None or not may_view(ctx.orgs, user, case_row):
        raise not_found("预案启动记录", "plan activation")
    chosen = _check_level(plan, level)
    if act["state"] != "active":
        raise conflict("预案未在运行", f"the plan is {act['state']}", code="not_active")
    if not rules.higher(chosen, act["level"]):
        raise invalid({"level": ("只能升级到更高的响应级别", "the level must be higher than the current one")})
    levels = plan.levels_between(act["level"], chosen)
    lat, lon = _point(ctx, case_row)
    candidates = await _candidates(ctx, levels, lat, lon, _jurisdiction(ctx, case_row, user))
    async with ctx.pool.acquire() as conn, conn.transaction():
        case = await _locked_case(ctx, conn, act["incident_id"], user)
        picks = await _lock_units(conn, candidates)
        act = await conn.fetchrow("SELECT * FROM plan_activations WHERE id = $1 FOR UPDATE", activation_id)
        if act["state"] != "active" or not rules.higher(chosen, act["level"]):
            raise conflict("预案状态已变化", "the plan changed meanwhile", code="stale_plan")
        if act["meeting_id"] is not None:
            # Invitations added below write the meeting row: lock it before the first recorded change.
            await conn.execute("SELECT 1 FROM meetings WHERE id = $1 FOR UPDATE", act["meeting_id"])
        before = act["level"]
        made = await _apply_levels(ctx, conn, act, plan, levels, case, picks, user)
        act = await conn.fetchrow(
            "UPDATE plan_activations SET level = $2, meeting_id = $3, updated_at = $4, version = version + 1"
            " WHERE id = $1 RETURNING *",
            activation_id,
            chosen,
            made["meeting_id"],
            ctx.clock.now(),
        )
        out = await _record_activation(
            ctx, conn, act, "raised", Actor.of(user), from_state="active", detail={**made, "from_level": before}
        )
    log.info("plan_raised", activation_id=activation_id, level=chosen, from_level=before)
    wake_notices(ctx)
    return out


async def stand_down(ctx: Context, activation_id: int, user: User, reason: str | None) -> dict[str, Any]:
    """Stand a running plan down: its open orders cancelled, the consultation ended, open notices
    closed, open steps cancelled; one transaction."""
    _require(user)
    meeting_id = None
    async with ctx.pool.acquire() as conn, conn.transaction():
        case, act = await _locked_activation(ctx, conn, activation_id, user)
        order_ids = [r["order_id"] for r in await conn.fetch("SELECT order_id FROM plan_orders WHERE activation_id = $1", activation_id)]
        if order_ids:
            await conn.execute(
                "SELECT 1 FROM squad_units WHERE id IN (SELECT unit_id FROM orders WHERE id = ANY($1::bigint[]))"
                " ORDER BY id FOR UPDATE",
                order_ids,
            )
        act = await conn.fetchrow("SELECT * FROM plan_activations WHERE id = $1 FOR UPDATE", activation_id)
        if act["state"] != "active":
            raise conflict("预案未在运行", f"the plan is {act['state']}", code="not_active")
        # Every row written below is locked before the first recorded change (the outbox lock).
        await conn.execute(
            "SELECT 1 FROM orders WHERE id = ANY($1::bigint[]) ORDER BY id FOR UPDATE", order_ids
        )
        if act["meeting_id"] is not None:
            await conn.execute("SELECT 1 FROM meetings WHERE id = $1 FOR UPDATE", act["meeting_id"])
        await conn.execute(
            "SELECT 1 FROM plan_notices WHERE activation_id = $1 AND state IN ('sent', 'delivered') ORDER BY id FOR UPDATE",
            activation_id,
        )
        now, actor = ctx.clock.now(), Actor.of(user)
        cancelled = await live_orders.cancel_orders(ctx, conn, order_ids, user, "plan_stood_down")
        meeting_id = act["meeting_id"]
        if meeting_id is not None:
            await meetings.set_status(conn, meeting_id, "ended", actor, now)
        notices = await conn.fetch(
            "UPDATE plan_notices SET state = 'cancelled', escalate_at = NULL, updated_at = $2, version = version + 1"
            " WHERE activation_id = $1 AND state IN ('sent', 'delivered') RETURNING *",
            activation_id,
            now,
        )
        for n in notices:
            await record(conn, Change.of("plan_notice", n, "cancelled", notice_json(n), actor, now, detail={"reason": "plan_stood_down"}))
        await conn.execute(
            "UPDATE plan_steps SET cancelled = true WHERE activation_id = $1 AND done_at IS NULL", activation_id
        )
        act = await conn.fetchrow(
            "UPDATE plan_activations SET state = 'stood_down', ended_at = $2, reason = $3, updated_at = $2,"
            " version = version + 1 WHERE id = $1 RETURNING *",
            activation_id,
            now,
            reason,
        )
        out = await _record_activation(
            ctx,
            conn,
            act,
            "stood_down",
            actor,
            from_state="active",
            note=reason,
            detail={"orders_cancelled": cancelled, "notices_closed": len(notices), "meeting_ended": meeting_id},
        )
        _ = case
    if meeting_id is not None and ROOMS in ctx:
        await ctx[ROOMS].end(meeting_id)
    log.info("plan_stood_down", activation_id=activation_id, orders=len(cancelled), notices=len(notices))
    return out


async def complete_step(ctx: Context, activation_id: int, step_id: int, user: User) -> dict[str, Any]:
    """Tick a step of the checklist off."""
    _require(user)
    async with ctx.pool.acquire() as conn, conn.transaction():
        _, act = await _locked_activation(ctx, conn, activation_id, user)
        act = await conn.fetchrow("SELECT * FROM plan_activations WHERE id = $1 FOR UPDATE", activation_id)
        step = await conn.fetchrow(
            "SELECT * FROM plan_steps WHERE id = $1 AND activation_id = $2 FOR UPDATE", step_id, activation_id
        )
        if step is None:
            raise not_found("预案步骤", "step")
        if act["state"] != "active":
            raise conflict("预案未在运行", f"the plan is {act['state']}", code="not_active")
        if step["done_at"] is not None:
            raise conflict("该步骤已完成", "the step is done already", code="step_done")
        now = ctx.clock.now()
        await conn.execute("UPDATE plan_steps SET done_at = $2, done_by = $3 WHERE id = $1", step_id, now, user.id)
        act = await conn.fetchrow(
            "UPDATE plan_activations SET updated_at = $2, version = version + 1 WHERE id = $1 RETURNING *", activation_id, now
        )
        taken = (now - act["activated_at"]).total_seconds() if act["activated_at"] else None
        return await _record_activation(
            ctx,
            conn,
            act,
            "step_done",
            Actor.of(user),
            from_state="active",
            detail={"step": step_id, "type": step["type"], "title": step["title"], "seconds": taken, "overdue": step["due_at"] < now},
        )


# -- proposals ---------------------------------------------------------------------------------------


async def _facts_rows(conn: asyncpg.Connection, since: datetime, categories: Sequence[str]) -> list[asyncpg.Record]:
    """Open cases of the window in the triggers' categories (or below them), with their reports."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT i.*, 1 + (SELECT count(*) FROM incidents m WHERE m.merged_into = i.id)"
        " + (SELECT count(*) FROM audit_log a WHERE a.entity = 'incident' AND a.entity_id = i.id::text"
        " AND a.action = 'attach') AS reports"
        " FROM incidents i WHERE i.created_at >= $1 AND i.state = ANY($2::text[])"
        " AND EXISTS (SELECT 1 FROM unnest($3::text[]) c WHERE i.category = c OR i.category LIKE c || '.%')"
        " ORDER BY i.id",
        since,
        _OPEN_CASE_STATES,
        list(categories),
    )
    return rows


async def propose_due(ctx: Context) -> list[int]:
    """Propose plans for the open cases that match their triggers (each case once per plan); the
    proposals' ids. A loop runs it every ``plans.propose_interval``."""
    now = ctx.clock.now()
    since = now - timedelta(seconds=ctx.settings.plans.propose_window)
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT p.id, p.current_version, v.body FROM plans p"
            " JOIN plan_versions v ON v.plan_id = p.id AND v.version = p.current_version ORDER BY p.id"
        )
        plans = [(r, rules.parse_plan(r["body"])) for r in rows]
        plans = [(r, p) for r, p in plans if p.trigger.categories]
        if not plans:
            return []
        found = await _facts_rows(conn, since, sorted({c for _, p in plans for c in p.trigger.categories}))
        if not found:
            return []
        seen = {
            (r["plan_id"], r["incident_id"])
            for r in await conn.fetch(
                "SELECT plan_id, incident_id FROM plan_activations WHERE incident_id = ANY($1::bigint[])",
                [c["id"] for c in found],
            )
        }
    made: list[int] = []
    for case in found:
        facts = CaseFacts(
            category=case["category"],
            priority=case["priority"],
            reports=int(case["reports"]),
            places=tuple(case["place_path"]) + tuple(case["org_path"]),
        )
        for prow, plan in plans:
            if (prow["id"], case["id"]) in seen or not rules.matches(plan, facts):
                continue
            try:
                act = await _propose(ctx, prow, plan, case["id"], facts.reports)
            except asyncpg.UniqueViolationError:
                act = None  # another instance proposed it at the same moment
            if act is None:
                continue
            made.append(act["id"])
            log.info("plan_proposed", activation_id=act["id"], plan_id=prow["id"], incident_id=case["id"])
    return made


async def _propose(ctx: Context, prow: Mapping[str, Any], plan: Plan, incident_id: int, reports: int) -> asyncpg.Record | None:
    """Propose the plan for the case, unless it was ever proposed or run on it; the proposal."""
    now = ctx.clock.now()
    async with ctx.pool.acquire() as conn, conn.transaction():
        locked = await conn.fetchrow("SELECT * FROM incidents WHERE id = $1 FOR UPDATE", incident_id)
        if locked is None or locked["state"] not in _OPEN_CASE_STATES:
            return None
        act = await conn.fetchrow(
            "INSERT INTO plan_activations (plan_id, plan_version, incident_id, area_code, org_path, state, level,"
            " proposed_at, created_at, updated_at)"
            " SELECT $1, $2, $3, $4, $5, 'proposed', $6, $7, $7, $7"
            " WHERE NOT EXISTS (SELECT 1 FROM plan_activations WHERE plan_id = $1 AND incident_id = $3)"
            " RETURNING *",
            prow["id"],
            prow["current_version"],
            incident_id,
            _place_of(locked),
            list(locked["org_path"]),
            plan.trigger.level,
            now,
        )
        if act is None:
            return None
        await _record_activation(
            ctx, conn, act, "proposed", Actor(None, "system"), from_state=None, detail={"reports": reports}
        )
    return act


# -- what the case, the board and the statistics show ------------------------------------------------


async def case_plan(ctx: Context, conn: asyncpg.Connection, case: Mapping[str, Any], viewer: Any) -> dict[str, Any] | None:
    """The plan of a case as ``GET /incidents/{id}`` shows it: the running one, else a proposal, else
    the latest; with ``proposals`` (other plans proposed for it)."""
    rows = await conn.fetch(
        "SELECT * FROM plan_activations WHERE incident_id = $1"
        " ORDER BY CASE state WHEN 'active' THEN 0 WHEN 'proposed' THEN 1 ELSE 2 END, id DESC",
        case["id"],
    )
    if not rows:
        return None
    out = await activation_json(ctx, conn, rows[0])
    out["proposals"] = [
        {"id": r["id"], "plan_id": r["plan_id"], "level": r["level"]} for r in rows[1:] if r["state"] == "proposed"
    ]
    return out


async def board_section(ctx: Context, codes: frozenset[str]) -> Any:
    """Running and proposed plans of the jurisdiction, with their level and overdue steps."""
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM plan_activations WHERE state IN ('proposed', 'active') AND org_path && $1::text[]"
            " ORDER BY id DESC LIMIT 50",
            list(codes),
        )
        return [await activation_json(ctx, conn, r) for r in rows]


async def stats_section(conn: asyncpg.Connection, org: str, start: datetime, end: datetime) -> dict[str, Any]:
    """Activations in the period, time from activation to each kind of step, acknowledgement rates."""
    acts = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE state <> 'dismissed' AND activated_at IS NOT NULL) AS activations,"
        " count(*) FILTER (WHERE proposed_at IS NOT NULL) AS proposed,"
        " count(*) FILTER (WHERE state = 'dismissed') AS dismissed"
        " FROM plan_activations WHERE $1 = ANY(org_path) AND created_at >= $2 AND created_at < $3",
        org,
        start,
        end,
    )
    steps = await conn.fetch(
        "SELECT s.type, count(*) AS done,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM s.done_at - a.activated_at)) AS median_s,"
        " count(*) FILTER (WHERE s.done_at > s.due_at) AS late"
        " FROM plan_steps s JOIN plan_activations a ON a.id = s.activation_id"
        " WHERE $1 = ANY(a.org_path) AND a.created_at >= $2 AND a.created_at < $3 AND s.done_at IS NOT NULL"
        " GROUP BY s.type ORDER BY s.type",
        org,
        start,
        end,
    )
    acks = await conn.fetchrow(
        "SELECT count(*) FILTER (WHERE user_id IS NOT NULL) AS notices,"
        " count(*) FILTER (WHERE acknowledged_at IS NOT NULL) AS acknowledged,"
        " count(*) FILTER (WHERE state = 'escalated') AS escalated,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM acknowledged_at - created_at))"
        " FILTER (WHERE acknowledged_at IS NOT NULL) AS median_ack_s"
        " FROM plan_notices WHERE $1 = ANY(org_path) AND created_at >= $2 AND created_at < $3",
        org,
        start,
        end,
    )
    sent = int(acks["notices"] or 0)
    return {
        "activations": int(acts["activations"] or 0),
        "proposed": int(acts["proposed"] or 0),
        "dismissed": int(acts["dismissed"] or 0),
        "steps": [
            {
                "code": r["type"],
                "name": STEP_TYPES[r["type"]][0],
                "name_en": STEP_TYPES[r["type"]][1],
                "done": int(r["done"]),
                "median_s": float(r["median_s"]) if r["median_s"] is not None else None,
                "late": int(r["late"]),
            }
            for r in steps
        ],
        "notices": sent,
        "acknowledged": int(acks["acknowledged"] or 0),
        "escalated": int(acks["escalated"] or 0),
        "ack_rate": round(int(acks["acknowledged"] or 0) / sent, 4) if sent else None,
        "median_ack_s": float(acks["median_ack_s"]) if acks["median_ack_s"] is not None else None,
    }
