"""HTTP API of cameras (``/api/v1/cameras``) and GB/T 28181 devices (``/api/v1/gb28181``), a case's
nearest cameras, and a camera as a source of a meeting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import structlog
from aiohttp import web

from dispatchd.channels.gb28181 import meeting, ptz, service
from dispatchd.channels.gb28181.meeting import source_url
from dispatchd.channels.gb28181.runtime import GB28181, Gb28181Collector, Gb28181Runtime, running
from dispatchd.domain.meetings import CONVENERS as MEETING_CONVENERS
from dispatchd.errors import Conflict, Invalid, NotFound, Unavailable
from dispatchd.incidents import service as incidents
from dispatchd.store.changes import Actor
from dispatchd.validate import Field
from dispatchd.video import store as meetings
from dispatchd.video.service import ROOMS
from dispatchd.video.store import NewInvite
from dispatchd.web.appkeys import CTX
from dispatchd.web.auth import current_user, jurisdiction, require_role
from dispatchd.web.routing import ApiRoute, add_routes
from dispatchd.web.validate import json_body, query_params, time_param

log = structlog.get_logger("dispatchd.gb28181")

TAG = "cameras"
EDITORS = ("duty_officer", "leader", "admin", "ops")
ADMINS = ("admin", "ops")
CONVENERS = tuple(sorted(MEETING_CONVENERS))

def _runtime(request: web.Request) -> Gb28181Runtime:
    runtime = request.app[CTX].get(GB28181)
    if runtime is None or runtime.edge is None or runtime.viewers is None:
        raise Unavailable(
            "本实例未运行 GB/T 28181 平台（端口被占用）",
            "this instance does not run the GB/T 28181 platform (its port is taken)",
            retry_after=30,
        )
    return runtime


def _camera_id(request: web.Request) -> str:
    return request.match_info["id"]


# ---- cameras --------------------------------------------------------------------------------------

LIST_QUERY = (
    Field("status", choices=("online", "offline")),
    Field("org", max_length=32, description="only cameras within this unit"),
    Field("device", max_length=20, description="only channels of this device"),
    Field("limit", "integer", minimum=1, maximum=20000),
)


async def list_cameras(request: web.Request) -> web.Response:
    q = query_params(request, LIST_QUERY)
    items = await service.list_cameras(
        request.app[CTX],
        jurisdiction(request),
        status=q.get("status"),
        org=q.get("org"),
        device=q.get("device"),
        limit=q.get("limit", 5000),
    )
    return web.json_response({"items": items})


NEAREST_QUERY = (
    Field("lat", "number", required=True, minimum=-90, maximum=90),
    Field("lon", "number", required=True, minimum=-180, maximum=180),
    Field("limit", "integer", minimum=1, maximum=100),
    Field("radius_m", "number", minimum=1, maximum=100000, description="default 2000"),
    Field("online", "boolean", description="only cameras online now"),
)


async def nearest_cameras(request: web.Request) -> web.Response:
    q = query_params(request, NEAREST_QUERY)
    items = await service.nearest_cameras(
        request.app[CTX],
        q["lat"],
        q["lon"],
        jurisdiction(request),
        limit=q.get("limit", 5),
        radius_m=q.get("radius_m", 2000.0),
        online_only=q.get("online", False),
    )
    return web.json_response({"lat": q["lat"], "lon": q["lon"], "items": items})


async def get_camera(request: web.Request) -> web.Response:
    camera = await service.get_camera(request.app[CTX], _camera_id(request), jurisdiction(request))
    runtime = request.app[CTX].get(GB28181)
    camera["viewers"] = runtime.viewers.of_camera(camera["id"]) if runtime and runtime.viewers else 0
    return web.json_response(camera)


EDIT_FIELDS = (
    Field("name", max_length=200),
    Field("lat", "number", minimum=-90, maximum=90, description="WGS-84; with lon"),
    Field("lon", "number", minimum=-180, maximum=180),
    Field("org", max_length=32, description="owning unit, instead of the grid of its position"),
    Field("reset_position", "boolean", description="back to the position the device reports"),
    Field("reset_org", "boolean", description="back to the unit of its position"),
)


async def edit_camera(request: web.Request) -> web.Response:
    user = require_role(request, *EDITORS)
    body = await json_body(request, EDIT_FIELDS)
    if ("lat" in body) != ("lon" in body):
        raise Invalid("lat 与 lon 需同时给出", "lat and lon go together", fields={"lon": ("缺少", "missing")})
    camera = await service.update_camera(
        request.app[CTX],
        _camera_id(request),
        jurisdiction(request),
        actor=user.username,
        name=body.get("name"),
        position=(body["lat"], body["lon"]) if "lat" in body else None,
        clear_position=bool(body.get("reset_position")),
        org=body.get("org"),
        clear_org=bool(body.get("reset_org")),
    )
    return web.json_response(camera)


VIEW_FIELDS = (Field("offer", "object", required=True, description='{"type": "offer", "sdp": "…"}'),)


async def view_camera(request: web.Request) -> web.Response:
    """A receive-only WebRTC session carrying the camera's live H.264 (one device stream for all)."""
    return await _open_view(request, await json_body(request, VIEW_FIELDS), None)


PLAYBACK_FIELDS = (
    *VIEW_FIELDS,
    Field("start", required=True, description="ISO 8601 (or unix seconds, as a string): where the recording starts"),
    Field("end", required=True, description="ISO 8601 (or unix seconds, as a string): where it stops, at most 24 h later"),
)
PLAYBACK_SPAN = timedelta(hours=24)


async def play_back(request: web.Request) -> web.Response:
    """A receive-only WebRTC session carrying the camera's recording of a time range (GB/T 28181
    §9.8 Playback): a device stream of the session's own, ended when the session ends."""
    body = await json_body(request, PLAYBACK_FIELDS)
    start, end = time_param("start", body["start"]), time_param("end", body["end"])
    if start >= end:
        raise Invalid("start 应早于 end", "start must be before end", fields={"start": ("应早于 end", "must be before end")})
    if end - start > PLAYBACK_SPAN:
        raise Invalid("一次最多回放 24 小时", "at most 24 hours at once", fields={"end": ("时段过长", "period too long")})
    return await _open_view(request, body, (int(start.timestamp()), int(end.timestamp())))


async def _open_view(request: web.Request, body: dict[str, Any], playback: tuple[int, int] | None) -> web.Response:
    user = current_user(request)
    offer = body["offer"]
    if not isinstance(offer, dict) or offer.get("type") != "offer" or not isinstance(offer.get("sdp"), str):
        raise Invalid(
            "offer 应为 {type: offer, sdp}",
            "offer must be {type: offer, sdp}",
            fields={"offer": ("格式错误", "bad format")},
        )
    ctx = request.app[CTX]
    camera_id = _camera_id(request)
    device_id, name, mode = await service.camera_route(ctx, camera_id, jurisdiction(request))
    runtime = _runtime(request)
    assert runtime.edge is not None and runtime.viewers is not None
    if not runtime.edge.registered(device_id):
        raise Conflict("摄像机所属设备不在线", "the camera's device is not registered", code="device_offline")
    runtime.modes[device_id] = mode
    session, answer = await runtime.viewers.open(
        camera_id, device_id, mode, offer["sdp"], user.username, playback=playback
    )
    out: dict[str, Any] = {
        "answer": {"type": "answer", "sdp": answer},
        "session": session,
        "camera": {"id": camera_id, "name": name},
    }
    if playback is not None:
        out["playback"] = {"start": playback[0], "end": playback[1]}
    return web.json_response(out)


async def close_view(request: web.Request) -> web.Response:
    current_user(request)
    runtime = _runtime(request)
    assert runtime.viewers is not None
    session = runtime.viewers.sessions.get(request.match_info["session"])
    if session is None or session.camera_id != _camera_id(request):
        raise NotFound("会话不存在", "no such viewing session")
    await runtime.viewers.close(session.id)
    return web.json_response({"closed": True})


RECORDS_QUERY = (
    Field("from", description="ISO 8601 or unix seconds; default: 24 h before `to`"),
    Field("to", description="ISO 8601 or unix seconds; default: now"),
)
# The longest period one recordings query may ask of a device.
RECORDS_SPAN = timedelta(days=7)


async def camera_records(request: web.Request) -> web.Response:
    """The recordings the camera's device holds for a period (GB/T 28181 §9.7 RecordInfo)."""
    q = query_params(request, RECORDS_QUERY)
    ctx = request.app[CTX]
    end = time_param("to", q["to"]) if "to" in q else ctx.clock.now()
    start = time_param("from", q["from"]) if "from" in q else end - timedelta(hours=24)
    if start >= end:
        raise Invalid("from 应早于 to", "from must be before to", fields={"from": ("应早于 to", "must be before to")})
    if end - start > RECORDS_SPAN:
        raise Invalid("一次最多查询 7 天", "at most 7 days at once", fields={"from": ("时段过长", "period too long")})
    camera_id = _camera_id(request)
    device_id, name, _mode = await service.camera_route(ctx, camera_id, jurisdiction(request))
    runtime = _runtime(request)
    assert runtime.edge is not None
    if not runtime.edge.registered(device_id):
        raise Conflict("摄像机所属设备不在线", "the camera's device is not registered", code="device_offline")
    found = await runtime.edge.search_records(device_id, camera_id, start, end)
    records = sorted(
        (service.record_json(r) for r in found.records), key=lambda r: (r["start"] or "", r["end"] or "")
    )
    log.info("gb28181_records", camera=camera_id, records=len(records), complete=found.complete)
    return web.json_response(
        {
            "camera": {"id": camera_id, "name": name},
            "from": start.isoformat(),
            "to": end.isoformat(),
            "complete": found.complete,
            "total": found.total,
            "records": records,
        }
    )


PTZ_FIELDS = (
    Field("action", choices=(*ptz.PTZ_ACTIONS, "preset_call", "preset_set", "preset_delete"), required=True),
    Field(
        "speed", "integer", minimum=0, maximum=255, description="pan/tilt speed (zoom: speed/16); default 128"
    ),
    Field("preset", "integer", minimum=1, maximum=255, description="preset number for preset_*"),
)


async def control_camera(request: web.Request) -> web.Response:
    """PTZ (GB/T 28181-2016 Annex A.3) for cameras that support it: a move, stop, or a preset."""
    require_role(request, *EDITORS)
    body = await json_body(request, PTZ_FIELDS)
    ctx = request.app[CTX]
    camera_id = _camera_id(request)
    camera = await service.get_camera(ctx, camera_id, jurisdiction(request))
    if camera["ptz_type"] == 3:
        raise Conflict("此摄像机为固定枪机，不支持云台控制", "this camera is fixed: no PTZ", code="no_ptz")
    action: str = body["action"]
    command: ptz.Command
    if action.startswith("preset_"):
        if "preset" not in body:
            raise Invalid("缺少预置位编号", "preset is required", fields={"preset": ("必填", "is required")})
        command = ptz.Preset(action.removeprefix("preset_"), body["preset"])
    else:
        command = ptz.move(action, body.get("speed", 0x80))
    code = ptz.encode(command).hex().upper()
    runtime = _runtime(request)
    assert runtime.edge is not None
    if not runtime.edge.control(camera["device_id"], camera_id, ptz_cmd=code):
        raise Conflict("摄像机所属设备不在线", "the camera's device is not registered", code="device_offline")
    return web.json_response({"sent": code, "action": action}, status=202)


# ---- devices --------------------------------------------------------------------------------------


async def list_devices(request: web.Request) -> web.Response:
    require_role(request, *EDITORS)
    return web.json_response({"items": await service.list_devices(request.app[CTX], jurisdiction(request))})


async def get_device(request: web.Request) -> web.Response:
    require_role(request, *EDITORS)
    return web.json_response(
        await service.device_of(request.app[CTX], request.match_info["id"], jurisdiction(request))
    )


DEVICE_FIELDS = (
    Field(
        "password",
        max_length=128,
        description="the device's own password (stored as digest HA1); empty: the shared one",
    ),
    Field("media_transport", choices=service.MEDIA_TRANSPORTS),
    Field("coordinates", choices=service.COORDINATES, description="datum of the positions it reports"),
    Field("org", max_length=32, description="owning unit"),
)


async def edit_device(request: web.Request) -> web.Response:
    """Set a device's own password, media transport, datum or unit (a device not seen yet is created)."""
    user = require_role(request, *ADMINS)
    body = await json_body(request, DEVICE_FIELDS)
    ctx = request.app[CTX]
    device = await service.set_device(
        ctx,
        request.match_info["id"],
        jurisdiction(request),
        actor=user.username,
        password=body.get("password"),
        media_transport=body.get("media_transport"),
        coordinates=body.get("coordinates"),
        org=body.get("org"),
    )
    runtime = ctx.get(GB28181)
    if runtime is not None:
        runtime.modes[device["id"]] = device["media_transport"]
        if runtime.edge is not None and "password" in body:
            await runtime.edge.refresh_credentials()
    return web.json_response(device)


async def refresh_catalog(request: web.Request) -> web.Response:
    require_role(request, *EDITORS)
    device = await service.device_of(request.app[CTX], request.match_info["id"], jurisdiction(request))
    runtime = _runtime(request)
    assert runtime.edge is not None
    if not runtime.edge.query(device["id"], "Catalog"):
        raise Conflict("设备不在线", "the device is not registered", code="device_offline")
    return web.json_response({"queried": True}, status=202)


async def platform(request: web.Request) -> web.Response:
    """What devices are configured with: platform id, domain (realm), port; and this instance's state."""
    require_role(request, *EDITORS)
    ctx = request.app[CTX]
    settings = ctx.settings.gb28181
    runtime = ctx.get(GB28181)
    edge = runtime.edge if runtime else None
    return web.json_response(
        {
            "platform_id": settings.platform_id,
            "domain": settings.domain,
            "port": (runtime.ports.get("udp") if runtime else None) or settings.port,
            "running": edge is not None,
            "devices": edge.snapshot() if edge else None,
            "streams": len(edge.streams.streams) if edge else 0,
            "viewers": len(runtime.viewers.sessions) if runtime and runtime.viewers else 0,
        }
    )


# ---- cases and consultations ----------------------------------------------------------------------

CASE_QUERY = (
    Field("limit", "integer", minimum=1, maximum=50),
    Field("radius_m", "number", minimum=1, maximum=100000, description="default 2000"),
)


async def case_cameras(request: web.Request) -> web.Response:
    """The cameras nearest to a case's place (the case must be visible to the caller)."""
    q = query_params(request, CASE_QUERY)
    case = await incidents.get_incident(request.app[CTX], int(request.match_info["id"]), current_user(request))
    if case is None:
        raise NotFound("案件不存在", "case not found")
    location = case.get("location") or {}
    lat, lon = location.get("lat"), location.get("lon")
    if lat is None or lon is None:
        return web.json_response({"incident_id": case["id"], "items": []})
    items = await service.nearest_cameras(
        request.app[CTX],
        lat,
        lon,
        jurisdiction(request),
        limit=q.get("limit", 6),
        radius_m=q.get("radius_m", 2000.0),
    )
    return web.json_response({"incident_id": case["id"], "lat": lat, "lon": lon, "items": items})


MEETING_CAMERA_FIELDS = (
    Field("camera", required=True, max_length=20, description="the camera's 20-digit id"),
)


async def add_to_meeting(request: web.Request) -> web.Response:
    """A camera joins a meeting as a source the chair can put on screen.

    Forwarding never transcodes, so the meeting must carry H.264: a VP8 meeting nobody has joined
    yet is switched to H.264; one already under way in VP8 is refused (convene it in H.264).
    """
    user = require_role(request, *CONVENERS)
    body = await json_body(request, MEETING_CAMERA_FIELDS)
    ctx = request.app[CTX]
    codes = jurisdiction(request)
    meeting_id = int(request.match_info["id"])
    device_id, name, mode = await service.camera_route(ctx, body["camera"], codes)
    rooms = ctx[ROOMS]
    async with request.app[CTX].pool.acquire() as conn, conn.transaction():
        meeting = await meetings.get_meeting(conn, meeting_id)
        if meeting is None or meeting.org_code not in codes:
            raise NotFound("会议不存在", "meeting not found")
        if meeting.status == "ended":
            raise Conflict("会议已结束", "the meeting has ended", code="ended")
        if meeting.codec != "H264":
            if rooms.participants(meeting.id) > 0:
                raise Conflict(
                    "会议正在以 VP8 进行，摄像机为 H.264：请以 H.264 召集会商",
                    "the meeting runs in VP8 and cameras send H.264: convene it in H.264",
                    code="codec",
                )
            await conn.execute("UPDATE meetings SET codec = 'H264' WHERE id = $1", meeting.id)
            meeting = await meetings.get_meeting(conn, meeting_id)
            assert meeting is not None
            stale = rooms.rooms.get(meeting.id)
            if stale is not None:
                await rooms.forget_if_empty(stale)
        invite, _ = await meetings.add_invite(
            conn,
            meeting,
            NewInvite(
                None,
                name or body["camera"],
                "participant",
                "camera",
                source_url=source_url(device_id, body["camera"]),
            ),
            Actor.of(user),
            request.app[CTX].clock.now(),
        )
    runtime = ctx.get(GB28181)
    if runtime is not None:
        runtime.modes[device_id] = mode
    room = rooms.rooms.get(meeting.id)
    if room is not None and not room.closed and "camera" in rooms.source_starters:
        rooms.source_starters["camera"](room, invite)
        await room.relayout(roster=True)
    return web.json_response(
        {**invite.as_json(), "camera": body["camera"], "codec": meeting.codec}, status=201
    )


# ---- the board ------------------------------------------------------------------------------------


async def board_section(app: web.Application, codes: frozenset[str]) -> Any:
    """Cameras with a position, for the board's map."""
    return await service.board_section(app[CTX], codes)


CAMERA_ID = r"{id:\d{20}}"

ROUTES = [
    ApiRoute(
        "GET",
        "/api/v1/cameras",
        list_cameras,
        "Cameras in your jurisdiction (GB/T 28181 channels)",
        TAG,
        query=LIST_QUERY,
    ),
    ApiRoute(
        "GET",
        "/api/v1/cameras/nearest",
        nearest_cameras,
        "Cameras nearest to a point, with distance",
        TAG,
        query=NEAREST_QUERY,
    ),
    ApiRoute(
        "GET",
        f"/api/v1/cameras/{CAMERA_ID}",
        get_camera,
        "A camera",
        TAG,
        responses={404: "unknown or not yours"},
    ),
    ApiRoute(
        "PATCH",
        f"/api/v1/cameras/{CAMERA_ID}",
        edit_camera,
        "Set a camera's name, position or owning unit",
        TAG,
        body=EDIT_FIELDS,
    ),
    ApiRoute(
        "POST",
        f"/api/v1/cameras/{CAMERA_ID}/view",
        view_camera,
        "View a camera: a receive-only WebRTC session with its live H.264 ({offer} → {answer, session})",
        TAG,
        body=VIEW_FIELDS,
        responses={
            200: "the answer",
            409: "device offline or not H.264",
            503: "platform not on this instance",
        },
    ),
    ApiRoute(
        "DELETE", f"/api/v1/cameras/{CAMERA_ID}/view/{{session}}", close_view, "End a viewing session", TAG
    ),
    ApiRoute(
        "POST",
        f"/api/v1/cameras/{CAMERA_ID}/playback",
        play_back,
        "Play a recording back: a receive-only WebRTC session with the camera's H.264 from `start` to `end`"
        " ({offer, start, end} → {answer, session}; ended with DELETE …/view/{session})",
        TAG,
        body=PLAYBACK_FIELDS,
        responses={
            200: "the answer",
            409: "device offline or not H.264",
            422: "bad range",
            503: "platform not on this instance",
        },
    ),
    ApiRoute(
        "GET",
        f"/api/v1/cameras/{CAMERA_ID}/records",
        camera_records,
        "Recordings the camera's device holds for a period, at most 7 days (GB/T 28181 RecordInfo);"
        " complete false when the device did not answer in full within 10 s",
        TAG,
        query=RECORDS_QUERY,
        responses={200: "{camera, from, to, complete, total, records}", 409: "device offline", 503: "platform not on this instance"},
    ),
    ApiRoute(
        "POST",
        f"/api/v1/cameras/{CAMERA_ID}/ptz",
        control_camera,
        "Pan, tilt, zoom or a preset (GB/T 28181 PTZCmd)",
        TAG,
        body=PTZ_FIELDS,
        responses={202: "sent to the device", 409: "no PTZ, or device offline"},
    ),
    ApiRoute("GET", "/api/v1/gb28181", platform, "The GB/T 28181 platform: id, domain, port, state", TAG),
    ApiRoute(
        "GET", "/api/v1/gb28181/devices", list_devices, "GB/T 28181 devices (cameras, NVRs, platforms)", TAG
    ),
    ApiRoute("GET", r"/api/v1/gb28181/devices/{id:\d{20}}", get_device, "A GB/T 28181 device", TAG),
    ApiRoute(
        "PATCH",
        r"/api/v1/gb28181/devices/{id:\d{20}}",
        edit_device,
        "Set a device's own password, media transport, datum or unit",
        TAG,
        body=DEVICE_FIELDS,
    ),
    ApiRoute(
        "POST",
        r"/api/v1/gb28181/devices/{id:\d{20}}/catalog",
        refresh_catalog,
        "Ask a device for its catalogue again",
        TAG,
    ),
    ApiRoute(
        "GET",
        r"/api/v1/incidents/{id:\d+}/cameras",
        case_cameras,
        "Cameras nearest to a case",
        TAG,
        query=CASE_QUERY,
    ),
    ApiRoute(
        "POST",
        r"/api/v1/meetings/{id:\d+}/cameras",
        add_to_meeting,
        "Add a camera to a meeting as a source (the meeting carries H.264)",
        TAG,
        body=MEETING_CAMERA_FIELDS,
        responses={201: "added", 409: "the meeting runs in VP8"},
    ),
]


# ---- putting it together ----------------------------------------------------------------------------


def setup(app: web.Application) -> None:
    """The routes, the board section ``cameras``, the metrics, the meeting source kind ``camera``
    and one cleanup context running the platform."""
    ctx = app[CTX]
    runtime = Gb28181Runtime()
    ctx[GB28181] = runtime
    add_routes(app, ROUTES)
    ctx.board_sections["cameras"] = service.board_section
    ctx.metrics.registry.register(Gb28181Collector(runtime))
    if ROOMS in ctx:
        ctx[ROOMS].source_starters["camera"] = meeting.starter(runtime)
    app.cleanup_ctx.append(gb28181_ctx)


async def gb28181_ctx(app: web.Application) -> AsyncIterator[None]:
    """The platform: SIP sockets, timers, streams and viewers, for the life of the application."""
    async with running(app[CTX]):
        yield
