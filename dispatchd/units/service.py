"""Squad units: create, members, devices, status, and views with the live position.

Every change writes the unit's state and is recorded (entity ``unit``: the audit row and the outbox
row, :mod:`dispatchd.store.changes`) in one transaction. Live positions come from Redis
(:mod:`dispatchd.units.positions`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import asyncpg

from dispatchd.context import Context
from dispatchd.domain.geo import haversine_m
from dispatchd.domain.units import (
    DEVICE_PROTOCOLS,
    UNIT_KINDS,
    UNIT_STATUSES,
    Position,
    StatusConflict,
    eta_seconds,
    is_stale,
    next_status,
)
from dispatchd.errors import conflict, invalid, not_found
from dispatchd.store import keys
from dispatchd.store.changes import Actor as ChangeActor
from dispatchd.store.changes import Change, bump, record
from dispatchd.store.orgs import unit_path
from dispatchd.store.outage import REDIS, note_degraded, store_failure
from dispatchd.store.users import User
from dispatchd.units.devices import digest, new_secret, normalise_identifier
from dispatchd.units.positions import current_positions, last_track_positions
from dispatchd.units.slots import DEVICES, STATUS_REACTIONS

UNIT_COLUMNS = "id, name, kind, org_code, org_path, status, version, created_at, updated_at"


def change_actor(actor: User | str | None) -> ChangeActor:
    """A user, or the system or a named channel (``"system"`` when None)."""
    if isinstance(actor, User):
        return ChangeActor.of(actor)
    return ChangeActor(None, actor or "system")


def unit_record(row: asyncpg.Record) -> dict[str, Any]:
    """A unit as JSON, without its position."""
    return {
        "id": row["id"],
        "name": row["name"],
        "kind": row["kind"],
        "org": row["org_code"],
        "org_path": list(row["org_path"]),
        "status": row["status"],
        "version": row["version"],
        "created_at": row["created_at"].isoformat(),
        "updated_at": row["updated_at"].isoformat(),
    }


def _stale_after(ctx: Context) -> timedelta:
    return timedelta(seconds=ctx.settings.units.stale_after)


def attach_position(ctx: Context, unit: dict[str, Any], pos: Position | None) -> dict[str, Any]:
    """Add ``position`` ({lat, lon, at, speed, heading, battery, source} or None) and ``stale``."""
    unit["position"] = pos.as_json() if pos else None
    unit["stale"] = is_stale(pos.at if pos else None, ctx.clock.now(), _stale_after(ctx))
    return unit


async def _changed(
    conn: asyncpg.Connection,
    row: asyncpg.Record,
    action: str,
    actor: ChangeActor,
    at: datetime,
    details: dict[str, Any],
    *,
    from_state: str | None = None,
) -> dict[str, Any]:
    """Record a change of the unit ``row`` (its new state), inside the caller's transaction."""
    unit = unit_record(row)
    await record(conn, Change.of("unit", row, action, unit, actor, at, from_state=from_state, detail=details))
    return unit


async def record_change(
    ctx: Context,
    conn: asyncpg.Connection,
    unit_id: int,
    action: str,
    actor: User | str | None,
    details: dict[str, Any],
) -> dict[str, Any]:
    """A change of the unit that another capability keeps (the hotline's 叫应 call list), recorded as
    the unit's, in the caller's transaction (the unit's row is locked; its columns do not change, as
    for a member added). NotFound when there is no such unit."""
    row = await conn.fetchrow(f"SELECT {UNIT_COLUMNS} FROM squad_units WHERE id = $1 FOR UPDATE", unit_id)
    if row is None:
        raise not_found("队伍", "unit")
    return await _changed(conn, row, action, change_actor(actor), ctx.clock.now(), details)


# -- units -----------------------------------------------------------------------------------------


async def create_unit(
    ctx: Context, *, name: str, kind: str, org: str, actor: User | str | None
) -> dict[str, Any]:
    """Create a squad unit (status available) owned by org unit ``org``."""
    tree = ctx.orgs
    if kind not in UNIT_KINDS:
        raise invalid(
            {"kind": ("取值无效，可选：" + "、".join(UNIT_KINDS), "must be one of " + ", ".join(UNIT_KINDS))}
        )
    if org not in tree.units:
        raise invalid({"org": ("组织单位不存在", "unknown organisation unit")})
    now = ctx.clock.now()
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "INSERT INTO squad_units (name, kind, org_code, org_path, created_at, updated_at)"
            f" VALUES ($1, $2, $3, $4, $5, $5) RETURNING {UNIT_COLUMNS}",
            name.strip(),
            kind,
            org,
            unit_path(tree, org),
            now,
        )
        unit = await _changed(conn, row, "created", change_actor(actor), now, {})
    return attach_position(ctx, unit, None)


async def fetch_unit(conn: asyncpg.Connection, unit_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(f"SELECT {UNIT_COLUMNS} FROM squad_units WHERE id = $1", unit_id)


async def get_unit(ctx: Context, unit_id: int, *, details: bool = True) -> dict[str, Any] | None:
    """The unit with position and stale flag, and (``details``) its members and devices; None if unknown."""
    async with ctx.pool.acquire() as conn:
        row = await fetch_unit(conn, unit_id)
        if row is None:
            return None
        unit = unit_record(row)
        if details:
            members = await conn.fetch(
                "SELECT u.id, u.username, u.display_name, u.role FROM unit_members m"
                " JOIN users u ON u.id = m.user_id WHERE m.unit_id = $1 ORDER BY u.username",
                unit_id,
            )
            devices = await conn.fetch(
                "SELECT id, protocol, identifier, created_at, registered_at, disabled FROM devices"
                " WHERE unit_id = $1 ORDER BY id",
                unit_id,
            )
            unit["members"] = [dict(m) for m in members]
            unit["devices"] = [_device_json(d) for d in devices]
    positions = await current_positions(ctx, [unit_id])
    return attach_position(ctx, unit, positions.get(unit_id))


async def list_units(
    ctx: Context,
    codes: frozenset[str],
    *,
    status: str | None = None,
    kind: str | None = None,
    org: str | None = None,
) -> list[dict[str, Any]]:
    """Units owned by any of ``codes`` (a jurisdiction), optionally one org's subtree, with positions."""
    sql = f"SELECT {UNIT_COLUMNS} FROM squad_units WHERE org_code = ANY($1::text[])"
    args: list[Any] = [list(codes)]
    if status:
        args.append(status)
        sql += f" AND status = ${len(args)}"
    if kind:
        args.append(kind)
        sql += f" AND kind = ${len(args)}"
    if org:
        args.append(org)
        sql += f" AND ${len(args)} = ANY(org_path)"
    sql += " ORDER BY id"
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(sql, *args)
    positions = await current_positions(ctx, [r["id"] for r in rows])
    return [attach_position(ctx, unit_record(r), positions.get(r["id"])) for r in rows]


async def units_of_user(conn: asyncpg.Connection, user_id: int) -> list[int]:
    """Ids of the units the user is a member of (what ``/ws/squad`` serves)."""
    rows = await conn.fetch("SELECT unit_id FROM unit_members WHERE user_id = $1 ORDER BY unit_id", user_id)
    return [r["unit_id"] for r in rows]


async def set_unit_status(
    ctx: Context,
    unit_id: int,
    status: str,
    actor: User | str | None,
    conn: asyncpg.Connection | None = None,
) -> dict[str, Any]:
    """Set a unit's status with an audit row and an outbox row (topic ``unit``), in one transaction.

    With ``conn`` the change joins the caller's transaction (an order and the unit's status commit
    together); otherwise it runs in its own. Setting the status it already has writes nothing.
    The reactions registered in :data:`~dispatchd.units.slots.STATUS_REACTIONS` run in the same
    transaction. Invalid for an unknown status, NotFound for an unknown unit, Conflict for a move the
    lifecycle refuses (:func:`dispatchd.domain.units.next_status`).
    """
    if status not in UNIT_STATUSES:
        raise invalid(
            {
                "status": (
                    "取值无效，可选：" + "、".join(UNIT_STATUSES),
                    "must be one of " + ", ".join(UNIT_STATUSES),
                )
            }
        )
    now = ctx.clock.now()
    who = change_actor(actor)

    async def run(c: asyncpg.Connection) -> dict[str, Any]:
        row = await c.fetchrow(f"SELECT {UNIT_COLUMNS} FROM squad_units WHERE id = $1 FOR UPDATE", unit_id)
        if row is None:
            raise not_found("队伍", "unit")
        try:
            after = next_status(row["status"], status)
        except StatusConflict as exc:
            raise conflict(exc.message_zh, exc.message_en, code="unit_status") from None
        if after is None:
            unit = unit_record(row)
        else:
            new = await bump(c, "unit", unit_id, {"status": after, "updated_at": now})
            unit = await _changed(
                c, new, "status", who, now, {"from": row["status"], "to": after}, from_state=row["status"]
            )
        # Whoever set it, what reacts to a unit's status does so in the same transaction.
        for react in ctx.get(STATUS_REACTIONS) or ():
            await react(ctx, c, unit_id, status, actor)
        return unit

    if conn is None:
        async with ctx.pool.acquire() as own, own.transaction():
            unit = await run(own)
    elif conn.is_in_transaction():
        unit = await run(conn)
    else:
        async with conn.transaction():
            unit = await run(conn)
    positions = await current_positions(ctx, [unit_id])
    return attach_position(ctx, unit, positions.get(unit_id))


# -- members ---------------------------------------------------------------------------------------


async def add_member(
    ctx: Context, unit_id: int, username: str, actor: User | str | None, *, visible: frozenset[str]
) -> dict[str, Any]:
    """Put the user ``username`` (whose home unit is in ``visible``) in the unit; idempotent."""
    now = ctx.clock.now()
    async with ctx.pool.acquire() as conn, conn.transaction():
        user = await conn.fetchrow(
            "SELECT id, username, display_name, role, org_code FROM users WHERE username = $1 AND NOT disabled",
            username,
        )
        if user is None or user["org_code"] not in visible:
            raise invalid({"username": ("用户不存在", "no such user")})
        row = await conn.fetchrow(f"SELECT {UNIT_COLUMNS} FROM squad_units WHERE id = $1 FOR UPDATE", unit_id)
        if row is None:
            raise not_found("队伍", "unit")
        added = await conn.fetchval(
            "INSERT INTO unit_members (unit_id, user_id, added_at) VALUES ($1, $2, $3)"
            " ON CONFLICT DO NOTHING RETURNING user_id",
            unit_id,
            user["id"],
            now,
        )
        if added is not None:
            await _changed(
                conn,
                row,
                "member_added",
                change_actor(actor),
                now,
                {"user_id": user["id"], "username": username},
            )
    return {
        "unit_id": unit_id,
        "user": {k: user[k] for k in ("id", "username", "display_name", "role")},
        "added": added is not None,
    }


async def remove_member(ctx: Context, unit_id: int, username: str, actor: User | str | None) -> bool:
    now = ctx.clock.now()
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(f"SELECT {UNIT_COLUMNS} FROM squad_units WHERE id = $1 FOR UPDATE", unit_id)
        if row is None:
            raise not_found("队伍", "unit")
        user_id = await conn.fetchval(
            "DELETE FROM unit_members m USING users u WHERE m.unit_id = $1 AND m.user_id = u.id"
            " AND u.username = $2 RETURNING m.user_id",
            unit_id,
            username,
        )
        if user_id is None:
            return False
        await _changed(
            conn, row, "member_removed", change_actor(actor), now, {"user_id": user_id, "username": username}
        )
    return True


# -- devices ---------------------------------------------------------------------------------------


def _device_json(row: asyncpg.Record) -> dict[str, Any]:
    return {
        "id": row["id"],
        "protocol": row["protocol"],
        "identifier": row["identifier"],
        "created_at": row["created_at"].isoformat(),
        "registered_at": row["registered_at"].isoformat() if row["registered_at"] else None,
        "disabled": row["disabled"],
    }


async def register_device(
    ctx: Context,
    unit_id: int,
    protocol: str,
    identifier: str,
    actor: User | str | None,
    *,
    secret: str | None = None,
) -> dict[str, Any]:
    """Register a tracking device of the unit.

    OsmAnd: the answer carries ``key``, the device's HTTP key (``secret`` or a new one), shown once.
    JT/T 808: ``identifier`` is the terminal phone number; the auth code is issued when the terminal
    registers (0x8100), or preset with ``secret`` for terminals that only authenticate.
    """
    if protocol not in DEVICE_PROTOCOLS:
        raise invalid({"protocol": ("取值无效，可选：osmand、jt808", "must be one of osmand, jt808")})
    ident = normalise_identifier(protocol, identifier)
    if ident is None:
        msg = (
            ("终端手机号应为 1–20 位数字", "a terminal phone number is 1-20 digits")
            if protocol == "jt808"
            else ("标识应为 1–64 个可见 ASCII 字符", "1-64 printable ASCII characters without spaces")
        )
        raise invalid({"identifier": msg})
    if protocol == "osmand" and not secret:
        secret = new_secret("osmand")
    now = ctx.clock.now()
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(f"SELECT {UNIT_COLUMNS} FROM squad_units WHERE id = $1 FOR UPDATE", unit_id)
        if row is None:
            raise not_found("队伍", "unit")
        try:
            device = await conn.fetchrow(
                "INSERT INTO devices (unit_id, protocol, identifier, secret_hash, created_at)"
                " VALUES ($1, $2, $3, $4, $5) RETURNING *",
                unit_id,
                protocol,
                ident,
                digest(secret) if secret else None,
                now,
            )
        except asyncpg.UniqueViolationError:
            raise conflict(
                "该设备已登记", "this device is already registered", code="device_exists"
            ) from None
        await _changed(
            conn,
            row,
            "device_added",
            change_actor(actor),
            now,
            {"device_id": device["id"], "protocol": protocol, "identifier": ident},
        )
    ctx[DEVICES].forget(protocol, ident)
    out = _device_json(device)
    out["unit_id"] = unit_id
    if protocol == "osmand":
        out["key"] = secret
    elif secret:
        out["auth_code"] = secret
    return out


async def remove_device(ctx: Context, unit_id: int, device_id: int, actor: User | str | None) -> bool:
    now = ctx.clock.now()
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(f"SELECT {UNIT_COLUMNS} FROM squad_units WHERE id = $1 FOR UPDATE", unit_id)
        if row is None:
            raise not_found("队伍", "unit")
        device = await conn.fetchrow(
            "DELETE FROM devices WHERE id = $1 AND unit_id = $2 RETURNING protocol, identifier",
            device_id,
            unit_id,
        )
        if device is None:
            return False
        await _changed(
            conn,
            row,
            "device_removed",
            change_actor(actor),
            now,
            {"device_id": device_id, "protocol": device["protocol"], "identifier": device["identifier"]},
        )
    ctx[DEVICES].forget(device["protocol"], device["identifier"])
    return True


# -- positions: nearest squad, track, board --------------------------------------------------------


def kind_speed_kmh(ctx: Context, kind: str) -> float:
    speed: float = getattr(ctx.settings.units, f"speed_{kind}_kmh")
    return speed


async def nearest_units(
    ctx: Context,
    lat: float,
    lon: float,
    codes: frozenset[str],
    *,
    status: str | None = "available",
    kind: str | None = None,
    limit: int = 5,
    fresh_only: bool = False,
) -> list[dict[str, Any]]:
    """Units of the jurisdiction with a live position near (lat, lon), nearest first, with an ETA.

    Ranked by straight-line distance; ``eta_s`` is that distance times ``[units] route_factor`` at the
    configured speed of the unit's kind. A stale position is included and flagged (``stale``) unless
    ``fresh_only``.
    """
    settings = ctx.settings.units
    ids: list[int] | None
    try:
        found = await ctx.redis.geosearch(
            keys.UNITS_GEO,
            longitude=lon,
            latitude=lat,
            radius=settings.nearest_radius_km,
            unit="km",
            sort="ASC",
        )
        ids = [int(m) for m in found if isinstance(m, bytes | str)]
        if not ids:
            return []
    except Exception as exc:
        failure = store_failure(ctx, exc)
        if failure is None or failure.store != REDIS:
            raise
        # Redis is away: every unit of the jurisdiction is a candidate, placed by its last tracked fix.
        note_degraded(REDIS)
        ids = None
    sql = f"SELECT {UNIT_COLUMNS} FROM squad_units WHERE org_code = ANY($1::text[])"
    args: list[Any] = [list(codes)]
    if ids is not None:
        args.append(ids)
        sql += f" AND id = ANY(${len(args)}::bigint[])"
    if status:
        args.append(status)
        sql += f" AND status = ${len(args)}"
    if kind:
        args.append(kind)
        sql += f" AND kind = ${len(args)}"
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(sql, *args)
    if ids is None:
        positions = await last_track_positions(ctx.pool, [r["id"] for r in rows])
    else:
        positions = await current_positions(ctx, [r["id"] for r in rows])
    now = ctx.clock.now()
    ranked: list[tuple[float, dict[str, Any]]] = []
    for r in rows:
        pos = positions.get(r["id"])
        if pos is None:
            continue
        if ids is None and haversine_m(lat, lon, pos.lat, pos.lon) > settings.nearest_radius_km * 1000:
            continue
        unit = attach_position(ctx, unit_record(r), pos)
        if fresh_only and unit["stale"]:
            continue
        distance = haversine_m(lat, lon, pos.lat, pos.lon)
        unit["distance_m"] = round(distance, 1)
        unit["eta_s"] = eta_seconds(distance, kind_speed_kmh(ctx, r["kind"]), settings.route_factor)
        unit["position_age_s"] = max(0, round((now - pos.at).total_seconds()))
        ranked.append((distance, unit))
    ranked.sort(key=lambda item: (item[0], item[1]["id"]))
    return [u for _, u in ranked[:limit]]


async def track(
    ctx: Context, unit_id: int, start: datetime, end: datetime, limit: int
) -> list[asyncpg.Record]:
    """Track points of the unit with ``start <= at < end``, in time order (at most ``limit``)."""
    async with ctx.pool.acquire() as conn:
        rows: list[asyncpg.Record] = await conn.fetch(
            "SELECT at, lat, lon, speed_kmh, heading, altitude_m, accuracy_m, battery, source, received_at"
            " FROM track_points WHERE unit_id = $1 AND at >= $2 AND at < $3"
            " ORDER BY at, received_at LIMIT $4",
            unit_id,
            start,
            end,
            limit,
        )
    return rows


def track_geojson(unit_id: int, rows: list[asyncpg.Record]) -> dict[str, Any]:
    """A FeatureCollection of Point features in time order ([lon, lat] as GeoJSON wants)."""
    features = []
    for r in rows:
        props: dict[str, Any] = {"at": r["at"].isoformat(), "source": r["source"]}
        for name, column in (
            ("speed", "speed_kmh"),
            ("heading", "heading"),
            ("altitude", "altitude_m"),
            ("accuracy", "accuracy_m"),
            ("battery", "battery"),
        ):
            if r[column] is not None:
                props[name] = r[column]
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
                "properties": props,
            }
        )
    return {"type": "FeatureCollection", "unit_id": unit_id, "features": features}


async def board_units(ctx: Context, codes: frozenset[str]) -> list[dict[str, Any]]:
    """The board section ``units``: every unit of the jurisdiction with status, position and stale flag."""
    return await list_units(ctx, codes)
