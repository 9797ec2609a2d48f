"""HTTP API of squad units (``/api/v1/units``) and the assembly of the position pipeline."""

from __future__ import annotations

from datetime import timedelta

import structlog
from aiohttp import web

from dispatchd.domain.units import DEVICE_PROTOCOLS, UNIT_KINDS, UNIT_STATUSES
from dispatchd.errors import invalid, not_found
from dispatchd.units import service
from dispatchd.units.slots import GPS_PORTS, POSITIONS, STATUS_REACTIONS
from dispatchd.validate import Field
from dispatchd.web.appkeys import CTX
from dispatchd.web.auth import current_user, jurisdiction, may_see, require_role
from dispatchd.web.routing import ApiRoute, add_routes
from dispatchd.web.validate import json_body, query_params, time_param

log = structlog.get_logger("dispatchd.gps")

MANAGERS = ("duty_officer", "leader")


def _unit_id(request: web.Request) -> int:
    return int(request.match_info["id"])


async def _visible(request: web.Request) -> dict[str, object]:
    """The unit of the path if the caller may see it (404 otherwise: do not reveal it exists)."""
    unit = await service.get_unit(request.app[CTX], _unit_id(request), details=False)
    if unit is None or not may_see(request, str(unit["org"])):
        raise not_found("队伍", "unit")
    return unit


async def _fresh(request: web.Request) -> None:
    """Read your writes: what this instance accepted is in the stores before it is read back."""
    positions = request.app[CTX].get(POSITIONS)
    if positions is not None:
        await positions.flush_pending()


UNIT_BODY = (
    Field("name", required=True, max_length=100, description="e.g. 马屿应急中队一组"),
    Field("kind", required=True, choices=UNIT_KINDS),
    Field("org", required=True, max_length=32, description="owning org unit code"),
)


async def create_unit(request: web.Request) -> web.Response:
    user = require_role(request, *MANAGERS)
    body = await json_body(request, UNIT_BODY)
    if body["org"] not in request.app[CTX].orgs.units or not may_see(request, body["org"]):
        raise invalid(
            {"org": ("组织单位不存在或不在辖区内", "unknown organisation unit or outside your jurisdiction")}
        )
    unit = await service.create_unit(
        request.app[CTX], name=body["name"], kind=body["kind"], org=body["org"], actor=user
    )
    return web.json_response(unit, status=201)


LIST_QUERY = (
    Field("status", choices=UNIT_STATUSES),
    Field("kind", choices=UNIT_KINDS),
    Field("org", max_length=32, description="only this org unit's subtree"),
)


async def list_units(request: web.Request) -> web.Response:
    q = query_params(request, LIST_QUERY)
    await _fresh(request)
    units = await service.list_units(
        request.app[CTX], jurisdiction(request), status=q.get("status"), kind=q.get("kind"), org=q.get("org")
    )
    return web.json_response({"units": units})


async def get_unit(request: web.Request) -> web.Response:
    await _fresh(request)
    unit = await service.get_unit(request.app[CTX], _unit_id(request))
    if unit is None or not may_see(request, str(unit["org"])):
        raise not_found("队伍", "unit")
    return web.json_response(unit)


STATUS_BODY = (Field("status", required=True, choices=UNIT_STATUSES),)


async def set_status(request: web.Request) -> web.Response:
    user = current_user(request)
    unit = await _visible(request)
    body = await json_body(request, STATUS_BODY)
    if user.role not in (*MANAGERS, "admin"):
        # A squad member may set the status of a unit they belong to.
        async with request.app[CTX].pool.acquire() as conn:
            mine = await service.units_of_user(conn, user.id)
        if user.role != "squad_member" or unit["id"] not in mine:
            require_role(request, *MANAGERS)
    unit_id = int(str(unit["id"]))
    result = await service.set_unit_status(request.app[CTX], unit_id, body["status"], user)
    return web.json_response(result)


MEMBER_BODY = (Field("username", required=True, max_length=64),)


async def add_member(request: web.Request) -> web.Response:
    user = require_role(request, *MANAGERS)
    unit = await _visible(request)
    body = await json_body(request, MEMBER_BODY)
    result = await service.add_member(
        request.app[CTX], int(str(unit["id"])), body["username"], user, visible=jurisdiction(request)
    )
    return web.json_response(result, status=201 if result["added"] else 200)


async def remove_member(request: web.Request) -> web.Response:
    user = require_role(request, *MANAGERS)
    unit = await _visible(request)
    if not await service.remove_member(
        request.app[CTX], int(str(unit["id"])), request.match_info["username"], user
    ):
        raise not_found("队员", "member")
    return web.json_response({"ok": True})


DEVICE_BODY = (
    Field("protocol", required=True, choices=DEVICE_PROTOCOLS),
    Field(
        "identifier",
        required=True,
        max_length=64,
        description="OsmAnd/Traccar Client device identifier, or the JT/T 808 terminal phone number",
    ),
    Field(
        "key",
        max_length=128,
        description="optional: the OsmAnd device key (generated when absent) or a preset JT/T 808 auth code",
    ),
)


async def add_device(request: web.Request) -> web.Response:
    user = require_role(request, *MANAGERS)
    unit = await _visible(request)
    body = await json_body(request, DEVICE_BODY)
    key = body.get("key")
    if key is not None and (len(key) < 4 or not key.isascii() or any(c.isspace() for c in key)):
        raise invalid(
            {"key": ("应为至少 4 个 ASCII 字符，不含空格", "at least 4 ASCII characters without spaces")}
        )
    device = await service.register_device(
        request.app[CTX], int(str(unit["id"])), body["protocol"], body["identifier"], user, secret=key
    )
    if device["protocol"] == "osmand":
        # What to type into Traccar Client / OsmAnd as the server URL (the key travels in its query).
        host = (request.url.host or "127.0.0.1").strip("[]")
        port = request.app[CTX][GPS_PORTS]["osmand"]
        device["server_url"] = f"http://{host}:{port}/?key={device['key']}"
    return web.json_response(device, status=201)


async def remove_device(request: web.Request) -> web.Response:
    user = require_role(request, *MANAGERS)
    unit = await _visible(request)
    if not await service.remove_device(
        request.app[CTX], int(str(unit["id"])), int(request.match_info["device_id"]), user
    ):
        raise not_found("设备", "device")
    return web.json_response({"ok": True})


NEAREST_QUERY = (
    # Redis GEO and Web Mercator end at ±85.05112878° (EPSG:3857); nothing is dispatched beyond.
    Field("lat", "number", required=True, minimum=-85.05112878, maximum=85.05112878),
    Field("lon", "number", required=True, minimum=-180, maximum=180),
    Field(
        "status",
        choices=UNIT_STATUSES,
        description="default available; 'any' is not a value: omit with all=true",
    ),
    Field("all", "boolean", description="any status"),
    Field("kind", choices=UNIT_KINDS),
    Field("limit", "integer", minimum=1, maximum=100, description="default 5"),
    Field("fresh_only", "boolean", description="leave out units whose position is stale"),
)


async def nearest(request: web.Request) -> web.Response:
    q = query_params(request, NEAREST_QUERY)
    await _fresh(request)
    status = None if q.get("all") else q.get("status", "available")
    units = await service.nearest_units(
        request.app[CTX],
        q["lat"],
        q["lon"],
        jurisdiction(request),
        status=status,
        kind=q.get("kind"),
        limit=q.get("limit", 5),
        fresh_only=q.get("fresh_only", False),
    )
    return web.json_response({"lat": q["lat"], "lon": q["lon"], "status": status, "units": units})


TRACK_QUERY = (
    Field("from", description="ISO 8601 or unix seconds; default: 24 h before `to`"),
    Field("to", description="ISO 8601 or unix seconds (exclusive); default: now"),
    Field("limit", "integer", minimum=1, maximum=100000, description="most points (default 10000)"),
)


async def unit_track(request: web.Request) -> web.Response:
    q = query_params(request, TRACK_QUERY)
    unit = await _visible(request)
    end = time_param("to", q["to"]) if "to" in q else request.app[CTX].clock.now() + timedelta(seconds=1)
    start = time_param("from", q["from"]) if "from" in q else end - timedelta(hours=24)
    if start > end:
        raise invalid({"from": ("不能晚于 to", "must not be after to")})
    await _fresh(request)
    rows = await service.track(request.app[CTX], int(str(unit["id"])), start, end, q.get("limit", 10000))
    doc = service.track_geojson(int(str(unit["id"])), rows)
    return web.json_response(doc, content_type="application/geo+json")


UNIT = "units"
ROUTES = [
    ApiRoute(
        "POST",
        "/api/v1/units",
        create_unit,
        "Create a squad unit",
        UNIT,
        body=UNIT_BODY,
        responses={201: "the unit", 403: "role", 422: "invalid"},
    ),
    ApiRoute(
        "GET",
        "/api/v1/units",
        list_units,
        "Squad units of the jurisdiction with live positions",
        UNIT,
        query=LIST_QUERY,
    ),
    ApiRoute(
        "GET",
        "/api/v1/units/nearest",
        nearest,
        "Units nearest to a point, with distance and ETA (default: available ones)",
        UNIT,
        query=NEAREST_QUERY,
    ),
    ApiRoute(
        "GET",
        r"/api/v1/units/{id:\d+}",
        get_unit,
        "A unit with status, position {lat, lon, at, speed, heading}, members and devices",
        UNIT,
        responses={200: "the unit", 404: "unknown or outside jurisdiction"},
    ),
    ApiRoute(
        "POST", r"/api/v1/units/{id:\d+}/status", set_status, "Set a unit's status", UNIT, body=STATUS_BODY
    ),
    ApiRoute(
        "POST",
        r"/api/v1/units/{id:\d+}/members",
        add_member,
        "Put a squad member in the unit",
        UNIT,
        body=MEMBER_BODY,
        responses={201: "added", 200: "already a member", 422: "no such user"},
    ),
    ApiRoute(
        "DELETE",
        r"/api/v1/units/{id:\d+}/members/{username}",
        remove_member,
        "Take a member out of the unit",
        UNIT,
    ),
    ApiRoute(
        "POST",
        r"/api/v1/units/{id:\d+}/devices",
        add_device,
        "Register a tracking device (OsmAnd key shown once)",
        UNIT,
        body=DEVICE_BODY,
        responses={201: "the device", 409: "already registered"},
    ),
    ApiRoute(
        "DELETE",
        r"/api/v1/units/{id:\d+}/devices/{device_id:\d+}",
        remove_device,
        "Remove a tracking device",
        UNIT,
    ),
    ApiRoute(
        "GET",
        r"/api/v1/units/{id:\d+}/track",
        unit_track,
        "Track of a unit as GeoJSON Points in time order",
        UNIT,
        query=TRACK_QUERY,
    ),
]


# -- assembly ------------------------------------------------------------------------------------------


def setup(app: web.Application) -> None:
    ctx = app[CTX]
    add_routes(app, ROUTES)
    ctx.board_sections["units"] = service.board_units
    if STATUS_REACTIONS not in ctx:
        ctx[STATUS_REACTIONS] = []

