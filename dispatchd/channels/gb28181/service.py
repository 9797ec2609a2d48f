"""Devices and cameras in PostgreSQL: what registrations, keep-alives and catalogues change, and what
the API reads and overrides. Services take a :class:`~dispatchd.context.Context` and raise
:mod:`dispatchd.errors`.

A camera is a video channel of a device's catalogue (GB/T 28181-2016 §9.5.3; ids of type 131 or
132, Annex D). Its position is stored in WGS-84: a device set up to report GCJ-02 has its
coordinates converted (:func:`dispatchd.domain.geo.gcj02_to_wgs84`), and ``0, 0`` — what devices
send when nobody entered a position — counts as none. Its owning unit is the grid its position lies
in (:class:`~dispatchd.domain.orgs.GridLocator`), else its device's unit, unless someone set it.

Every change of a device or camera goes through :func:`record_change`, the one place that hands
it to the change recorder (state, audit log and outbox in one transaction).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

import asyncpg
import structlog

from dispatchd.channels.gb28181 import digest
from dispatchd.channels.gb28181.manscdp import CatalogItem, DeviceInfo, RecordItem, gb_time
from dispatchd.channels.gb28181.registry import is_gb_id
from dispatchd.config import ConfigError
from dispatchd.context import Context
from dispatchd.domain.geo import bbox_around, gcj02_to_wgs84, haversine_m
from dispatchd.errors import Invalid, NotFound, invalid, not_found
from dispatchd.store.changes import Actor, Change, record
from dispatchd.store.orgs import unit_path

log = structlog.get_logger("dispatchd.gb28181")

CAMERA_COLUMNS = (
    "id, device_id, name, name_override, manufacturer, model, address, civil_code, status, reported_status, lat, lon,"
    " reported_lat, reported_lon, position_source, org_code, org_path, org_override, ptz_type, removed,"
    " version, created_at, updated_at"
)
DEVICE_COLUMNS = (
    "id, name, manufacturer, model, firmware, org_code, org_path, status, transport, remote, user_agent,"
    " media_transport, coordinates, ha1_md5 IS NOT NULL AS own_password, instance_id, registered_at,"
    " last_seen_at, version, created_at, updated_at"
)
MEDIA_TRANSPORTS = ("udp", "tcp-passive", "tcp-active")
COORDINATES = ("wgs84", "gcj02")
#: Catalogue events (§9.11.1) after which a channel is off, and after which it is gone.
_OFF_EVENTS = frozenset({"OFF", "VLOST", "DEFECT"})
_GONE_EVENTS = frozenset({"DEL"})


# ---- the one place changes are recorded ---------------------------------------------------------


async def record_change(
    ctx: Context,
    conn: asyncpg.Connection,
    entity: str,
    row: Mapping[str, Any],
    action: str,
    actor: str,
    detail: Mapping[str, Any] | None = None,
) -> None:
    """A device (``gb_device``) or camera (``camera``) changed, inside the caller's transaction:
    ``row`` is its new state (with ``id``, ``version``, ``org_path``, ``status``); ``actor`` a user
    name, or ``device`` for what a device reported."""
    data = camera_json(row) if entity == "camera" else device_json(row)
    who = Actor(None, actor)
    await record(conn, Change.of(entity, row, action, data, who, ctx.clock.now(), detail=detail))


# ---- helpers ------------------------------------------------------------------------------------


def default_org(ctx: Context) -> str:
    """``[gb28181] org``, else the first county of the organisation tree."""
    code = ctx.settings.gb28181.org
    tree = ctx.orgs
    if code:
        if code not in tree:
            raise ConfigError("[gb28181] org", code, "must be the code of a unit of the organisation tree")
        return code
    counties = tree.units_at("county")
    return counties[0].code if counties else next(iter(tree.units))


def wgs84_position(lat: float | None, lon: float | None, coordinates: str) -> tuple[float, float] | None:
    """The WGS-84 position of a reported one: None when missing, zero or out of range."""
    if lat is None or lon is None or not (math.isfinite(lat) and math.isfinite(lon)):
        return None
    if abs(lat) < 1e-6 and abs(lon) < 1e-6:
        return None  # "0.0000000": no position entered on the device
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        return None
    if coordinates == "gcj02":
        return gcj02_to_wgs84(lat, lon)
    return lat, lon


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def camera_json(row: Mapping[str, Any]) -> dict[str, Any]:
    """A camera as the API shows it: the contract's ``id, name, status, lat, lon`` and more."""
    return {
        "id": row["id"],
        "name": row["name"],
        "status": row["status"],
        "lat": row["lat"],
        "lon": row["lon"],
        "device_id": row["device_id"],
        "org": row["org_code"],
        "org_override": row["org_override"],
        "name_override": row["name_override"],
        "position_source": row["position_source"],
        "address": row["address"],
        "manufacturer": row["manufacturer"],
        "model": row["model"],
        "ptz": row["ptz_type"] in (1, 2, 4),
        "ptz_type": row["ptz_type"],
        "version": row["version"],
        "updated_at": _iso(row["updated_at"]),
    }


def record_json(item: RecordItem) -> dict[str, Any]:
    """One recording as the API shows it: times aware (from the device's Beijing time)."""
    start, end = gb_time(item.start_time), gb_time(item.end_time)
    return {
        "start": start.isoformat() if start else None,
        "end": end.isoformat() if end else None,
        "seconds": round((end - start).total_seconds()) if start and end else None,
        "name": item.name,
        "type": item.type or None,
        "file": item.file_path or None,
        "address": item.address or None,
        "size": item.file_size,
        "channel": item.device_id,
    }


def device_json(row: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "name": row["name"],
        "manufacturer": row["manufacturer"],
        "model": row["model"],
        "firmware": row["firmware"],
        "org": row["org_code"],
        "status": row["status"],
        "transport": row["transport"],
        "remote": row["remote"],
        "user_agent": row["user_agent"],
        "media_transport": row["media_transport"],
        "coordinates": row["coordinates"],
        "own_password": row["own_password"],
        "registered_at": _iso(row["registered_at"]),
        "last_seen_at": _iso(row["last_seen_at"]),
        "version": row["version"],
    }


# ---- what the SIP edge reports --------------------------------------------------------------------


async def device_registered(
    ctx: Context, device_id: str, *, transport: str, remote: str, user_agent: str, fresh: bool
) -> None:
    """A device registered (or refreshed its registration) with this instance: it is online."""
    now = ctx.clock.now()
    org = default_org(ctx)
    async with ctx.pool.acquire() as conn, conn.transaction():
        before = await conn.fetchrow("SELECT status FROM gb_devices WHERE id = $1 FOR UPDATE", device_id)
        row = await conn.fetchrow(
            "INSERT INTO gb_devices (id, org_code, org_path, status, transport, remote, user_agent, instance_id,"
            " registered_at, last_seen_at, created_at, updated_at)"
            " VALUES ($1, $2, $3, 'online', $4, $5, $6, $7, $8, $8, $8, $8)"
            " ON CONFLICT (id) DO UPDATE SET status = 'online', transport = $4, remote = $5, user_agent = $6,"
            " instance_id = $7, registered_at = CASE WHEN $9 THEN $8 ELSE gb_devices.registered_at END,"
            " last_seen_at = $8, updated_at = $8,"
            " version = gb_devices.version + CASE WHEN gb_devices.status = 'online' THEN 0 ELSE 1 END"
            f" RETURNING {DEVICE_COLUMNS}",
            device_id,
            org,
            unit_path(ctx.orgs, org),
            transport,
            remote,
            user_agent[:200],
            ctx.instance_id,
            now,
            fresh,
        )
        if before is None or before["status"] != "online":
            await record_change(ctx, conn, "gb_device", row, "online", "device", {"transport": transport})
            await _cameras_follow(ctx, conn, device_id, True)


async def device_status(ctx: Context, device_id: str, online: bool, reason: str) -> None:
    """A device went offline (missed keep-alives, registration over) or came back."""
    now = ctx.clock.now()
    status = "online" if online else "offline"
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE gb_devices SET status = $2, version = version + 1, updated_at = $3"
            + (", last_seen_at = $3" if online else "")
            + f" WHERE id = $1 AND status <> $2 RETURNING {DEVICE_COLUMNS}",
            device_id,
            status,
            now,
        )
        if row is None:
            return
        await record_change(ctx, conn, "gb_device", row, status, "device", {"reason": reason})
        await _cameras_follow(ctx, conn, device_id, online)


async def _cameras_follow(ctx: Context, conn: asyncpg.Connection, device_id: str, online: bool) -> None:
    """A device's cameras are online with it (when their catalogue says ON) and offline with it."""
    rows = await conn.fetch(
        "UPDATE cameras SET status = $2, version = version + 1, updated_at = $3"
        " WHERE device_id = $1 AND NOT removed AND status <> $2"
        + (" AND upper(reported_status) IN ('ON', 'ONLINE', 'OK', '')" if online else "")
        + f" RETURNING {CAMERA_COLUMNS}",
        device_id,
        "online" if online else "offline",
        ctx.clock.now(),
    )
    for row in rows:
        await record_change(ctx, conn, "camera", row, row["status"], "device")


async def device_seen(ctx: Context, device_ids: Iterable[str]) -> None:
    """Note when devices were last heard from (batched by the edge)."""
    ids = list(device_ids)
    if not ids:
        return
    async with ctx.pool.acquire() as conn:
        await conn.execute(
            "UPDATE gb_devices SET last_seen_at = $2 WHERE id = ANY($1::text[])", ids, ctx.clock.now()
        )


async def device_info(ctx: Context, device_id: str, info: DeviceInfo) -> None:
    """A device's DeviceInfo answer: name, maker, model, firmware."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE gb_devices SET name = $2, manufacturer = $3, model = $4, firmware = $5,"
            " version = version + 1, updated_at = $6"
            " WHERE id = $1 AND (name, manufacturer, model, firmware) IS DISTINCT FROM ($2, $3, $4, $5)"
            f" RETURNING {DEVICE_COLUMNS}",
            device_id,
            info.device_name[:200],
            info.manufacturer[:100],
            info.model[:100],
            info.firmware[:100],
            ctx.clock.now(),
        )
        if row is not None:
            await record_change(ctx, conn, "gb_device", row, "info", "device")


def _placement(ctx: Context, position: tuple[float, float] | None, device_org: str) -> tuple[str, list[str]]:
    code = None
    if position is not None:
        code = ctx.locator.locate(*position)
    code = code or device_org
    return code, unit_path(ctx.orgs, code)


async def merge_catalog(
    ctx: Context, device_id: str, items: Sequence[CatalogItem], *, complete: bool
) -> dict[str, int]:
    """Bring a device's cameras in line with its catalogue answer (video channels only).

    With ``complete``, cameras of the device missing from it are marked removed. Returns counts of
    ``added``, ``updated`` and ``removed`` cameras.
    """
    counts = {"added": 0, "updated": 0, "removed": 0}
    videos = [item for item in items if item.is_video]
    async with ctx.pool.acquire() as conn, conn.transaction():
        device = await conn.fetchrow(
            "SELECT id, org_code, coordinates, status FROM gb_devices WHERE id = $1 FOR UPDATE", device_id
        )
        if device is None:
            return counts
        for item in videos:
            outcome = await _upsert_camera(ctx, conn, device, item)
            if outcome:
                counts[outcome] += 1
        if complete:
            rows = await conn.fetch(
                "UPDATE cameras SET removed = true, status = 'offline', version = version + 1, updated_at = $3"
                f" WHERE device_id = $1 AND NOT removed AND id <> ALL($2::text[]) RETURNING {CAMERA_COLUMNS}",
                device_id,
                [item.device_id for item in videos],
                ctx.clock.now(),
            )
            for row in rows:
                await record_change(ctx, conn, "camera", row, "removed", "device")
            counts["removed"] = len(rows)
    return counts


async def _upsert_camera(
    ctx: Context, conn: asyncpg.Connection, device: Mapping[str, Any], item: CatalogItem
) -> str | None:
    now = ctx.clock.now()
    position = wgs84_position(item.latitude, item.longitude, device["coordinates"])
    reported = (item.latitude, item.longitude) if position is not None else (None, None)
    online = device["status"] == "online" and (item.online or item.status == "")
    existing = await conn.fetchrow(
        f"SELECT {CAMERA_COLUMNS} FROM cameras WHERE id = $1 FOR UPDATE", item.device_id
    )
    if existing is None:
        org, path = _placement(ctx, position, device["org_code"])
        row = await conn.fetchrow(
            "INSERT INTO cameras (id, device_id, name, manufacturer, model, address, civil_code, status,"
            " reported_status, lat, lon, reported_lat, reported_lon, position_source, org_code, org_path,"
            " ptz_type, created_at, updated_at)"
            " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $18)"
            f" RETURNING {CAMERA_COLUMNS}",
            item.device_id,
            device["id"],
            item.name[:200],
            item.manufacturer[:100],
            item.model[:100],
            item.address[:200],
            item.civil_code[:20],
            "online" if online else "offline",
            item.status[:20],
            position[0] if position else None,
            position[1] if position else None,
            reported[0],
            reported[1],
            "device" if position else "none",
            org,
            path,
            item.ptz_type,
            now,
        )
        await record_change(ctx, conn, "camera", row, "created", "device")
        return "added"
    manual = existing["position_source"] == "manual"
    lat, lon = (existing["lat"], existing["lon"]) if manual else (position or (None, None))
    source = "manual" if manual else ("device" if position else "none")
    if existing["org_override"]:
        org, path = existing["org_code"], list(existing["org_path"])
    else:
        org, path = _placement(
            ctx, (lat, lon) if lat is not None and lon is not None else None, device["org_code"]
        )
    values = {
        "device_id": device["id"],
        "name": existing["name"] if existing["name_override"] else (item.name[:200] or existing["name"]),
        "manufacturer": item.manufacturer[:100] or existing["manufacturer"],
        "model": item.model[:100] or existing["model"],
        "address": item.address[:200] or existing["address"],
        "civil_code": item.civil_code[:20] or existing["civil_code"],
        "status": "online" if online else "offline",
        "reported_status": item.status[:20],
        "lat": lat,
        "lon": lon,
        "reported_lat": reported[0],
        "reported_lon": reported[1],
        "position_source": source,
        "org_code": org,
        "org_path": path,
        "ptz_type": item.ptz_type if item.ptz_type is not None else existing["ptz_type"],
        "removed": False,
    }
    if all(existing[k] == v or (k == "org_path" and list(existing[k]) == v) for k, v in values.items()):
        return None
    names = list(values)
    sets = ", ".join(f"{name} = ${i + 2}" for i, name in enumerate(names))
    row = await conn.fetchrow(
        f"UPDATE cameras SET {sets}, version = version + 1, updated_at = ${len(names) + 2}"
        f" WHERE id = $1 RETURNING {CAMERA_COLUMNS}",
        item.device_id,
        *values.values(),
        now,
    )
    await record_change(ctx, conn, "camera", row, "updated", "device")
    return "updated"


async def catalog_changed(ctx: Context, device_id: str, items: Sequence[CatalogItem]) -> None:
    """Catalogue notifications (§9.11.1): ON/OFF/VLOST/DEFECT switch a camera, DEL removes it,
    ADD/UPDATE (or no event) bring it in line."""
    now = ctx.clock.now()
    async with ctx.pool.acquire() as conn, conn.transaction():
        device = await conn.fetchrow(
            "SELECT id, org_code, coordinates, status FROM gb_devices WHERE id = $1 FOR UPDATE", device_id
        )
        if device is None:
            return
        for item in items:
            if not item.is_video:
                continue
            event = item.event.upper()
            if event in _GONE_EVENTS:
                row = await conn.fetchrow(
                    "UPDATE cameras SET removed = true, status = 'offline', version = version + 1,"
                    f" updated_at = $3 WHERE id = $1 AND device_id = $2 AND NOT removed RETURNING {CAMERA_COLUMNS}",
                    item.device_id,
                    device_id,
                    now,
                )
                if row is not None:
                    await record_change(ctx, conn, "camera", row, "removed", "device")
            elif event in _OFF_EVENTS or event == "ON":
                status = "online" if event == "ON" and device["status"] == "online" else "offline"
                row = await conn.fetchrow(
                    "UPDATE cameras SET status = $3, reported_status = $4, version = version + 1, updated_at = $5"
                    f" WHERE id = $1 AND device_id = $2 AND status <> $3 RETURNING {CAMERA_COLUMNS}",
                    item.device_id,
                    device_id,
                    status,
                    "ON" if event == "ON" else "OFF",
                    now,
                )
                if row is not None:
                    await record_change(ctx, conn, "camera", row, status, "device", {"event": event})
            else:
                await _upsert_camera(ctx, conn, device, item)


async def offline_everywhere(ctx: Context, instance_id: str) -> None:
    """This instance stops: devices registered with it (and their cameras) are offline."""
    async with ctx.pool.acquire() as conn:
        ids = [
            r["id"]
            for r in await conn.fetch(
                "SELECT id FROM gb_devices WHERE instance_id = $1 AND status = 'online'", instance_id
            )
        ]
    for device_id in ids:
        await device_status(ctx, device_id, False, "platform_stopped")


async def own_credentials(ctx: Context) -> dict[str, digest.Credentials]:
    """Devices with a password of their own, for the realm in use (HA1 made for another realm is useless)."""
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, ha1_md5, ha1_sha256 FROM gb_devices WHERE ha1_md5 IS NOT NULL AND ha1_realm = $1",
            ctx.settings.gb28181.domain,
        )
    return {r["id"]: digest.Credentials(r["ha1_md5"], r["ha1_sha256"] or "") for r in rows}


# ---- what the API reads and changes ---------------------------------------------------------------


async def list_cameras(
    ctx: Context,
    codes: frozenset[str],
    *,
    status: str | None = None,
    org: str | None = None,
    device: str | None = None,
    limit: int = 5000,
) -> list[dict[str, Any]]:
    """Cameras of the jurisdiction (not removed), by name."""
    sql = f"SELECT {CAMERA_COLUMNS} FROM cameras WHERE NOT removed AND org_code = ANY($1::text[])"
    args: list[Any] = [list(codes)]
    if status:
        args.append(status)
        sql += f" AND status = ${len(args)}"
    if org:
        if org not in ctx.orgs:
            raise invalid({"org": ("组织单位不存在", "unknown organisation unit")})
        args.append(org)
        sql += f" AND ${len(args)} = ANY(org_path)"
    if device:
        args.append(device)
        sql += f" AND device_id = ${len(args)}"
    args.append(limit)
    sql += f" ORDER BY name, id LIMIT ${len(args)}"
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(sql, *args)
    return [camera_json(r) for r in rows]


async def get_camera(ctx: Context, camera_id: str, codes: frozenset[str]) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        row = await conn.fetchrow(
            f"SELECT {CAMERA_COLUMNS} FROM cameras WHERE id = $1 AND NOT removed", camera_id
        )
    if row is None or row["org_code"] not in codes:
        raise not_found("摄像机", "camera")
    return camera_json(row)


async def nearest_cameras(
    ctx: Context,
    lat: float,
    lon: float,
    codes: frozenset[str],
    *,
    limit: int = 5,
    radius_m: float = 2000.0,
    online_only: bool = False,
) -> list[dict[str, Any]]:
    """Cameras of the jurisdiction within ``radius_m`` of the point, nearest first, with ``distance_m``."""
    box = bbox_around(lat, lon, radius_m)
    sql = (
        f"SELECT {CAMERA_COLUMNS} FROM cameras WHERE NOT removed AND lat IS NOT NULL"
        " AND lat BETWEEN $1 AND $2 AND lon BETWEEN $3 AND $4 AND org_code = ANY($5::text[])"
    )
    if online_only:
        sql += " AND status = 'online'"
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(sql, box.min_lat, box.max_lat, box.min_lon, box.max_lon, list(codes))
    ranked: list[tuple[float, dict[str, Any]]] = []
    for row in rows:
        distance = haversine_m(lat, lon, row["lat"], row["lon"])
        if distance <= radius_m:
            camera = camera_json(row)
            camera["distance_m"] = round(distance, 1)
            ranked.append((distance, camera))
    ranked.sort(key=lambda pair: (pair[0], pair[1]["id"]))
    return [camera for _, camera in ranked[:limit]]


async def update_camera(
    ctx: Context,
    camera_id: str,
    codes: frozenset[str],
    *,
    actor: str,
    name: str | None = None,
    position: tuple[float, float] | None = None,
    clear_position: bool = False,
    org: str | None = None,
    clear_org: bool = False,
) -> dict[str, Any]:
    """Set what the device does not know or gets wrong: name, position (WGS-84), owning unit."""
    if org is not None and (org not in ctx.orgs or org not in codes):
        raise invalid(
            {"org": ("组织单位不存在或不在辖区内", "unknown organisation unit or outside your jurisdiction")}
        )
    if position is not None and not (-90 <= position[0] <= 90 and -180 <= position[1] <= 180):
        raise invalid({"lat": ("坐标超出范围", "coordinates out of range")})
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"SELECT {CAMERA_COLUMNS} FROM cameras WHERE id = $1 AND NOT removed FOR UPDATE", camera_id
        )
        if row is None or row["org_code"] not in codes:
            raise not_found("摄像机", "camera")
        device_org = await conn.fetchval("SELECT org_code FROM gb_devices WHERE id = $1", row["device_id"])
        lat, lon, source = row["lat"], row["lon"], row["position_source"]
        if position is not None:
            (lat, lon), source = position, "manual"
        elif clear_position:
            lat, lon, source = None, None, "none"
            if row["reported_lat"] is not None:
                device_coordinates = await conn.fetchval(
                    "SELECT coordinates FROM gb_devices WHERE id = $1", row["device_id"]
                )
                found = wgs84_position(row["reported_lat"], row["reported_lon"], device_coordinates)
                if found is not None:
                    (lat, lon), source = found, "device"
        override = row["org_override"]
        if org is not None:
            code, override = org, True
        elif clear_org or not override:
            code, override = _placement(ctx, (lat, lon) if lat is not None else None, device_org)[0], False
        else:
            code = row["org_code"]
        named = row["name_override"]
        new_name = row["name"]
        if name is not None:
            # A name set by hand stays through catalogues; an empty one gives naming back to the device.
            new_name, named = (name.strip()[:200], True) if name.strip() else (row["name"], False)
        updated = await conn.fetchrow(
            "UPDATE cameras SET name = $2, lat = $3, lon = $4, position_source = $5, org_code = $6,"
            " org_path = $7, org_override = $8, name_override = $10, version = version + 1, updated_at = $9"
            f" WHERE id = $1 RETURNING {CAMERA_COLUMNS}",
            camera_id,
            new_name,
            lat,
            lon,
            source,
            code,
            unit_path(ctx.orgs, code),
            override,
            ctx.clock.now(),
            named,
        )
        await record_change(ctx, conn, "camera", updated, "edited", actor)
    return camera_json(updated)


async def list_devices(ctx: Context, codes: frozenset[str]) -> list[dict[str, Any]]:
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            f"SELECT {DEVICE_COLUMNS} FROM gb_devices WHERE org_code = ANY($1::text[]) ORDER BY id",
            list(codes),
        )
    return [device_json(r) for r in rows]


async def device_of(ctx: Context, device_id: str, codes: frozenset[str]) -> dict[str, Any]:
    async with ctx.pool.acquire() as conn:
        row = await conn.fetchrow(f"SELECT {DEVICE_COLUMNS} FROM gb_devices WHERE id = $1", device_id)
    if row is None or row["org_code"] not in codes:
        raise not_found("设备", "device")
    return device_json(row)


async def set_device(
    ctx: Context,
    device_id: str,
    codes: frozenset[str],
    *,
    actor: str,
    password: str | None = None,
    media_transport: str | None = None,
    coordinates: str | None = None,
    org: str | None = None,
) -> dict[str, Any]:
    """Set a device's own password (kept as digest HA1 only), media transport, datum or unit.

    A device not yet seen is created (to give it a password before it first registers). An empty
    password removes its own one (the shared password applies again).
    """
    if not is_gb_id(device_id):
        raise invalid({"id": ("设备编码应为 20 位数字", "a device id is 20 digits")})
    if media_transport is not None and media_transport not in MEDIA_TRANSPORTS:
        raise invalid({"media_transport": ("取值无效", "must be one of " + ", ".join(MEDIA_TRANSPORTS))})
    if coordinates is not None and coordinates not in COORDINATES:
        raise invalid({"coordinates": ("取值无效", "must be wgs84 or gcj02")})
    if org is not None and (org not in ctx.orgs or org not in codes):
        raise invalid(
            {"org": ("组织单位不存在或不在辖区内", "unknown organisation unit or outside your jurisdiction")}
        )
    if password is not None and len(password) > 128:
        raise invalid({"password": ("密码过长", "password too long")})
    now = ctx.clock.now()
    realm = ctx.settings.gb28181.domain
    home = default_org(ctx)
    async with ctx.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            f"SELECT {DEVICE_COLUMNS} FROM gb_devices WHERE id = $1 FOR UPDATE", device_id
        )
        if row is None:
            if home not in codes and (org is None):
                raise NotFound("设备不存在", "device not found")
            target = org or home
            row = await conn.fetchrow(
                "INSERT INTO gb_devices (id, org_code, org_path, created_at, updated_at) VALUES ($1, $2, $3, $4, $4)"
                f" RETURNING {DEVICE_COLUMNS}",
                device_id,
                target,
                unit_path(ctx.orgs, target),
                now,
            )
        elif row["org_code"] not in codes:
            raise not_found("设备", "device")
        sets: list[str] = []
        args: list[Any] = [device_id]
        detail: dict[str, Any] = {}
        if password is not None:
            if password:
                credentials = digest.Credentials.from_password(device_id, realm, password)
                args += [credentials.md5, credentials.sha256, realm]
            else:
                args += [None, None, None]
            sets.append(
                f"ha1_md5 = ${len(args) - 2}, ha1_sha256 = ${len(args) - 1}, ha1_realm = ${len(args)}"
            )
            detail["password"] = "set" if password else "cleared"  # never the password itself
        for name, value in (("media_transport", media_transport), ("coordinates", coordinates)):
            if value is not None:
                args.append(value)
                sets.append(f"{name} = ${len(args)}")
                detail[name] = value
        if org is not None:
            args += [org, unit_path(ctx.orgs, org)]
            sets.append(f"org_code = ${len(args) - 1}, org_path = ${len(args)}")
            detail["org"] = org
        if not sets:
            raise Invalid("没有要修改的内容", "nothing to change")
        args.append(now)
        updated = await conn.fetchrow(
            f"UPDATE gb_devices SET {', '.join(sets)}, version = version + 1, updated_at = ${len(args)}"
            f" WHERE id = $1 RETURNING {DEVICE_COLUMNS}",
            *args,
        )
        await record_change(ctx, conn, "gb_device", updated, "edited", actor, detail)
    return device_json(updated)


async def camera_route(ctx: Context, camera_id: str, codes: frozenset[str]) -> tuple[str, str, str | None]:
    """(device id, camera name, the device's media transport or None) of a visible, present camera."""
    async with ctx.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT c.device_id, c.name, c.org_code, d.media_transport FROM cameras c"
            " JOIN gb_devices d ON d.id = c.device_id WHERE c.id = $1 AND NOT c.removed",
            camera_id,
        )
    if row is None or row["org_code"] not in codes:
        raise not_found("摄像机", "camera")
    return row["device_id"], row["name"], row["media_transport"]


async def board_section(ctx: Context, codes: frozenset[str]) -> list[dict[str, Any]]:
    """The board section ``cameras``: cameras of the jurisdiction that have a position."""
    return [c for c in await list_cameras(ctx, codes) if c["lat"] is not None]
