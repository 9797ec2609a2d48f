"""HTTP API of meetings, the signalling websocket and the meeting page."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from dispatchd.context import Context
from dispatchd.domain.meetings import CONVENERS
from dispatchd.domain.orgs import LEVELS
from dispatchd.errors import conflict, not_found
from dispatchd.store.changes import Actor
from dispatchd.store.orgs import unit_path
from dispatchd.validate import Field
from dispatchd.video import seam, store
from dispatchd.video.room import Participant, Room
from dispatchd.video.service import ROOMS, Rooms, VideoCollector, close_rooms
from dispatchd.video.signalling import MAX_MESSAGE, ProtocolError, dumps, parse
from dispatchd.video.store import Meeting, NewInvite
from dispatchd.web.appkeys import CTX
from dispatchd.web.auth import current_user, jurisdiction, require_role
from dispatchd.web.errors import ApiError
from dispatchd.web.routing import ApiRoute, add_routes
from dispatchd.web.validate import json_body, query_params

log = structlog.get_logger("dispatchd.video")

# "and all below, down to township": meetings of the video network stop at the township command room.
_MEETING_LEVELS = frozenset(LEVELS[: LEVELS.index("township") + 1])
_CONVENERS = tuple(sorted(CONVENERS))


def _link_base(request: web.Request) -> str:
    base: str = request.app[CTX].settings.video.link_base
    return base.rstrip("/") if base else f"{request.scheme}://{request.host}"


def _join_url(request: web.Request, meeting_id: int, token: str) -> str:
    return f"{_link_base(request)}/meet/{meeting_id}?t={token}"


def _meeting_id(request: web.Request) -> int:
    try:
        return int(request.match_info["id"])
    except ValueError:
        raise not_found("会议", "meeting") from None


async def _visible_meeting(request: web.Request) -> Meeting:
    """The meeting, if the caller's jurisdiction convened it or is invited to it; 404 otherwise."""
    meeting_id = _meeting_id(request)
    codes = jurisdiction(request)
    async with request.app[CTX].pool.acquire() as conn:
        meeting = await store.get_meeting(conn, meeting_id)
        if meeting is None:
            raise not_found("会议", "meeting")
        if meeting.org_code in codes:
            return meeting
        invites = await store.invites_of(conn, meeting_id)
    if any(inv.unit_code in codes for inv in invites):
        return meeting
    raise not_found("会议", "meeting")


def _expand_invites(request: web.Request, codes: list[str], descendants: bool, convener: str) -> list[str]:
    tree = request.app[CTX].orgs
    unknown = [c for c in codes if c not in tree]
    if unknown:
        raise ApiError(
            422,
            "invalid",
            f"未知单位：{'、'.join(unknown)}",
            f"unknown units: {', '.join(unknown)}",
            fields={"invite": ("含未知单位代码", "contains unknown unit codes")},
        )
    out: list[str] = []
    for code in codes:
        chosen = [code]
        if descendants:
            chosen = [u.code for u in tree.subtree(code) if u.level in _MEETING_LEVELS]
        out += [c for c in chosen if c != convener]
    return list(dict.fromkeys(out))


CREATE_FIELDS = (
    Field("title", required=True, max_length=200, description="会议主题"),
    Field(
        "invite", "array", required=True, max_length=1000, items="string", description="invited unit codes"
    ),
    Field("include_descendants", "boolean", description="also invite every unit below, down to township"),
    Field("org", description="convening unit (default: the caller's unit)"),
    Field("scheduled_at", description="ISO 8601 start time; absent or past = immediate"),
    Field("incident_id", max_length=64, description="the case this consultation is about"),
    Field("codec", choices=("VP8", "H264"), description="video codec (default from settings)"),
)


async def create_meeting(request: web.Request) -> web.Response:
    user = require_role(request, *_CONVENERS)
    body = await json_body(request, CREATE_FIELDS)
    tree = request.app[CTX].orgs
    org = body.get("org") or user.org
    if org not in jurisdiction(request):
        raise ApiError(
            422,
            "invalid",
            "召集单位不在您的辖区内",
            "the convening unit is outside your jurisdiction",
            fields={"org": ("不在辖区内", "outside your jurisdiction")},
        )
    scheduled_at: datetime | None = None
    if body.get("scheduled_at"):
        try:
            scheduled_at = datetime.fromisoformat(body["scheduled_at"])
            if scheduled_at.tzinfo is None:
                raise ValueError
        except ValueError:
            raise ApiError(
                422,
                "invalid",
                "scheduled_at 应为带时区的 ISO 8601 时间",
                "scheduled_at must be an ISO 8601 time with an offset",
                fields={"scheduled_at": ("格式错误", "bad format")},
            ) from None
    settings = request.app[CTX].settings.video
    units = _expand_invites(request, body["invite"], bool(body.get("include_descendants")), org)
    if len(units) + 1 > settings.max_participants:
        raise ApiError(
            422,
            "too_many",
            f"参会单位超过上限 {settings.max_participants}",
            f"more than {settings.max_participants} participants",
            fields={"invite": ("过多", "too many")},
        )
    convener = tree.get(org)
    invites = [NewInvite(org, f"{convener.name}（主持）", "chair", "chair", user_id=user.id)]
    invites += [NewInvite(code, tree.get(code).name, "participant", "unit") for code in units]
    now = request.app[CTX].clock.now()
    async with request.app[CTX].pool.acquire() as conn:
        meeting, created = await store.create_meeting(
            conn,
            title=body["title"].strip(),
            org_code=org,
            org_path=unit_path(tree, org),
            created_by=user.id,
            actor=Actor.of(user),
            codec=body.get("codec") or settings.codec,
            incident_id=body.get("incident_id"),
            scheduled_at=scheduled_at,
            now=now,
            invites=invites,
        )
    log.info("meeting_created", meeting_id=meeting.id, invites=len(units))
    chair, token = created[0]
    assert token is not None
    links = []
    for inv, tok in created[1:]:
        assert tok is not None and inv.unit_code is not None
        unit = tree.get(inv.unit_code)
        links.append(
            {
                "unit": unit.code,
                "name": unit.name,
                "name_en": unit.name_en,
                "level": unit.level,
                "role": inv.role,
                "participant": inv.participant_id,
                "url": _join_url(request, meeting.id, tok),
            }
        )
    return web.json_response(
        {
            **meeting.as_json(),
            "chair_link": {"participant": chair.participant_id, "url": _join_url(request, meeting.id, token)},
            "links": links,
        },
        status=201,
    )


async def join_meeting(request: web.Request) -> web.Response:
    """A logged-in user of an invited unit (or of the convening one) gets their own join link; anyone
    else learns nothing (404). The convener joins as the chair."""
    user = current_user(request)
    ctx = request.app[CTX]
    tree = ctx.orgs
    meeting_id = _meeting_id(request)
    async with ctx.pool.acquire() as conn:
        meeting = await store.get_meeting(conn, meeting_id)
        if meeting is None:
            raise not_found("会议", "meeting")
        units = await store.invited_units(conn, meeting.id)
        # An invited unit's own users and those below it; of the convening unit, its own users only
        # (its subtree is not invited by convening).
        mine = [
            inv
            for inv in units
            if user.org == inv.unit_code
            or (inv.kind == "unit" and user.org in tree and tree.is_within(user.org, inv.unit_code or ""))
        ]
        if not mine:
            raise not_found("会议", "meeting")
        if meeting.status == "ended":
            raise conflict("会商已结束", "the meeting has ended", code="meeting_ended")
        # The closest invited unit above (or at) the user's own.
        unit = max(mine, key=lambda inv: len(tree.ancestors(inv.unit_code or "")))
        assert unit.unit_code is not None
        chair = meeting.created_by == user.id
        label = f"{tree.get(unit.unit_code).name}·{user.display_name or user.username}"
        invite, token = await store.personal_invite(
            conn, meeting, user.id, unit.unit_code, label, "chair" if chair else "participant", ctx.clock.now()
        )
    log.info("meeting_joined_by_link", meeting_id=meeting.id, unit=unit.unit_code, chair=chair)
    return web.json_response(
        {
            "url": _join_url(request, meeting.id, token),
            "participant": invite.participant_id,
            "meeting": meeting.as_json(),
            "unit": {"code": unit.unit_code, "name": tree.get(unit.unit_code).name},
            "role": invite.role,
        }
    )


LIST_QUERY = (
    Field("status", choices=("scheduled", "running", "ended")),
    Field("incident_id", max_length=64, description="consultations of one case"),
    Field("limit", "integer", minimum=1, maximum=500),
)


async def list_meetings(request: web.Request) -> web.Response:
    q = query_params(request, LIST_QUERY)
    async with request.app[CTX].pool.acquire() as conn:
        meetings = await store.list_meetings(
            conn,
            jurisdiction(request),
            status=q.get("status"),
            incident_id=q.get("incident_id"),
            limit=q.get("limit", 100),
        )
    rooms = request.app[CTX][ROOMS]
    return web.json_response(
        {"meetings": [{**m.as_json(), "participants_online": rooms.participants(m.id)} for m in meetings]}
    )


async def get_meeting(request: web.Request) -> web.Response:
    meeting = await _visible_meeting(request)
    async with request.app[CTX].pool.acquire() as conn:
        invites = await store.invites_of(conn, meeting.id)
        recordings = await store.recordings_of(conn, meeting.id)
        events = await store.events_of(conn, meeting.id)
    room = request.app[CTX][ROOMS].rooms.get(meeting.id)
    return web.json_response(
        {
            **meeting.as_json(),
            "invites": [inv.as_json() for inv in invites],
            "roster": room.roster() if room is not None else [],
            "screen": room.screen.as_json() if room is not None else None,
            "recordings": recordings,
            "events": events,
        }
    )


async def end_meeting(request: web.Request) -> web.Response:
    user = require_role(request, *_CONVENERS)
    meeting = await _visible_meeting(request)
    if meeting.org_code not in jurisdiction(request):
        raise ApiError(
            403, "forbidden", "只有召集单位可以结束会议", "only the convening unit may end the meeting"
        )
    async with request.app[CTX].pool.acquire() as conn:
        ended = await store.set_status(conn, meeting.id, "ended", Actor.of(user), request.app[CTX].clock.now())
    await request.app[CTX][ROOMS].end(meeting.id)
    return web.json_response((ended or meeting).as_json())


SOURCE_FIELDS = (
    Field("label", required=True, max_length=100, description="name shown on screen"),
    Field("url", required=True, max_length=1000, description="rtsp:// URL of the camera"),
)


async def add_source(request: web.Request) -> web.Response:
    user = require_role(request, *_CONVENERS)
    meeting = await _visible_meeting(request)
    body = await json_body(request, SOURCE_FIELDS)
    url: str = body["url"].strip()
    if not url.lower().startswith(("rtsp://", "rtsps://")):
        raise ApiError(
            422,
            "invalid",
            "url 应为 rtsp:// 地址",
            "url must be an rtsp:// URL",
            fields={"url": ("应为 rtsp:// 地址", "must be rtsp://")},
        )
    if meeting.status == "ended":
        raise ApiError(409, "ended", "会议已结束", "the meeting has ended")
    async with request.app[CTX].pool.acquire() as conn:
        invite, _ = await store.add_invite(
            conn,
            meeting,
            NewInvite(None, body["label"].strip(), "participant", "rtsp", source_url=url),
            Actor.of(user),
            request.app[CTX].clock.now(),
        )
    room = request.app[CTX][ROOMS].rooms.get(meeting.id)
    if room is not None:
        request.app[CTX][ROOMS].start_puller(room, invite)
        await room.relayout(roster=True)
    return web.json_response(invite.as_json(), status=201)


async def share_video(request: web.Request) -> web.Response:
    """A squad member's phone camera joins as a participant (the squad app's "share video")."""
    user = current_user(request)
    meeting = await _visible_meeting(request)
    if meeting.status == "ended":
        raise ApiError(409, "ended", "会议已结束", "the meeting has ended")
    label = f"{user.display_name or user.username}（现场）"
    async with request.app[CTX].pool.acquire() as conn:
        invite, token = await store.add_invite(
            conn,
            meeting,
            NewInvite(user.org, label, "participant", "squad", user_id=user.id),
            Actor.of(user),
            request.app[CTX].clock.now(),
        )
    assert token is not None
    room = request.app[CTX][ROOMS].rooms.get(meeting.id)
    if room is not None:
        room.invites[invite.participant_id] = invite
        await room.relayout(roster=True)
    return web.json_response(
        {**invite.as_json(), "url": _join_url(request, meeting.id, token) + "&camera=environment"}, status=201
    )


async def meeting_socket(request: web.Request) -> web.StreamResponse:
    """Signalling for one participant: the join token in ``?token=`` is the credential."""
    meeting_id = _meeting_id(request)
    token = request.query.get("token", "")
    ctx = request.app[CTX]
    async with ctx.pool.acquire() as conn:
        meeting = await store.get_meeting(conn, meeting_id)
        invite = await store.invite_for_token(conn, meeting_id, token) if meeting else None
        if meeting is None or invite is None:
            raise ApiError(401, "bad_link", "会议链接无效或已撤销", "the meeting link is invalid or revoked")
        if meeting.status == "ended":
            raise ApiError(410, "ended", "会议已结束", "the meeting has ended")
        if meeting.status == "scheduled":
            meeting = (
                await store.set_status(conn, meeting_id, "running", Actor(None, invite.label), ctx.clock.now()) or meeting
            )
    rooms = ctx[ROOMS]
    room = await rooms.open(meeting)
    if room.online >= ctx.settings.video.max_participants and invite.participant_id not in room.participants:
        raise ApiError(409, "full", "会议人数已满", "the meeting is full")
    # Pinged every 10 s: a page that vanished (a closed laptop, a lost network) leaves within ~15 s.
    ws = web.WebSocketResponse(heartbeat=10, max_msg_size=MAX_MESSAGE)
    await ws.prepare(request)
    gauge = ctx.metrics.connections.labels("meeting")
    gauge.inc()
    structlog.contextvars.bind_contextvars(meeting_id=meeting_id, participant=invite.participant_id)
    participant = await room.join(invite, ws)
    try:
        async for raw in ws:
            if raw.type != WSMsgType.TEXT:
                continue
            try:
                await room.handle(participant, parse(raw.data))
            except ProtocolError as exc:
                lang_en = request.query.get("lang") == "en"
                await ws.send_str(
                    dumps("error", code=exc.code, message=exc.message_en if lang_en else exc.message_zh)
                )
            if participant.closed:
                break
    finally:
        gauge.dec()
        # Shielded: a client that vanished cancels this handler, and the others must still be told
        # that the site has left.
        await asyncio.shield(_leave(rooms, room, participant))
    return ws


async def _leave(rooms: Rooms, room: Room, participant: Participant) -> None:
    await room.leave(participant)
    await rooms.forget_if_empty(room)


_PAGE_TYPES = {
    ".html": "text/html",
    ".js": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
}
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "media-src 'self' blob: mediastream:; connect-src 'self'; object-src 'none'; base-uri 'none'"
)


def _meet_dir(request: web.Request) -> Path:
    root: Path = request.app[CTX].settings.paths.webui
    return root / "meet"


async def meet_page(request: web.Request) -> web.StreamResponse:
    """The meeting page; the join token travels in the link (``?t=``) and never leaves the page's origin."""
    _meeting_id(request)
    return _file(_meet_dir(request) / "index.html")


async def meet_asset(request: web.Request) -> web.StreamResponse:
    name = request.match_info["name"]
    path = _meet_dir(request) / name
    if "/" in name or name.startswith(".") or path.suffix not in _PAGE_TYPES or not path.is_file():
        raise not_found("文件", "file")
    return _file(path)


def _file(path: Path) -> web.FileResponse:
    if not path.is_file():
        raise not_found("页面", "page")
    return web.FileResponse(
        path,
        headers={
            "Content-Type": _PAGE_TYPES[path.suffix] + "; charset=utf-8",
            "Cache-Control": "no-cache",
            "Content-Security-Policy": _CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",  # the join token is in the URL
        },
    )


async def board_section(ctx: Context, codes: frozenset[str]) -> Any:
    """Running meetings for the board: the viewer's jurisdiction convened them or is invited; each
    with the meeting's fields as its changes carry them (status, the invited units, who is online)."""
    async with ctx.pool.acquire() as conn:
        meetings = await store.running_meetings(conn, codes)
        invited = {m.id: [i.unit_code for i in await store.invited_units(conn, m.id) if i.kind == "unit"] for m in meetings}
    rooms = ctx[ROOMS]
    return [
        {**m.as_json(), "invited": invited[m.id], "participants_online": rooms.participants(m.id)}
        for m in meetings
    ]


ROUTES = [
    ApiRoute(
        "POST",
        "/api/v1/meetings",
        create_meeting,
        "Convene a video meeting; returns one join link per invited unit",
        "meetings",
        body=CREATE_FIELDS,
        responses={201: "created, with join links", 422: "invalid input"},
    ),
    ApiRoute(
        "GET",
        "/api/v1/meetings",
        list_meetings,
        "Meetings in your jurisdiction",
        "meetings",
        query=LIST_QUERY,
    ),
    ApiRoute(
        "GET",
        "/api/v1/meetings/{id:\\d+}",
        get_meeting,
        "A meeting: invites, roster, recordings",
        "meetings",
        responses={200: "the meeting", 404: "not found or not yours"},
    ),
    ApiRoute("POST", "/api/v1/meetings/{id:\\d+}/end", end_meeting, "End a meeting for everyone", "meetings"),
    ApiRoute(
        "POST",
        "/api/v1/meetings/{id:\\d+}/join",
        join_meeting,
        "Your own join link, as a user of an invited unit (or of the convening one)",
        "meetings",
        responses={200: "{url, participant, meeting, unit, role}", 404: "not invited", 409: "ended"},
    ),
    ApiRoute(
        "POST",
        "/api/v1/meetings/{id:\\d+}/sources",
        add_source,
        "Pull an RTSP camera into the meeting as a participant",
        "meetings",
        body=SOURCE_FIELDS,
        responses={201: "added"},
    ),
    ApiRoute(
        "POST",
        "/api/v1/meetings/{id:\\d+}/share",
        share_video,
        "A squad phone's camera joins the meeting: returns its join link",
        "meetings",
        responses={201: "join link"},
    ),
    ApiRoute(
        "GET",
        "/ws/meet/{id}",
        meeting_socket,
        "Meeting signalling websocket",
        "meetings",
        public=True,
        documented=False,
    ),
    ApiRoute("GET", "/meet/{id}", meet_page, "Meeting page", "meetings", public=True, documented=False),
    ApiRoute(
        "GET",
        "/meet/assets/{name}",
        meet_asset,
        "Meeting page assets",
        "meetings",
        public=True,
        documented=False,
    ),
]


# -- assembly ------------------------------------------------------------------------------------------


def setup(app: web.Application) -> None:
    ctx = app[CTX]
    seam.check_version()
    addresses = [a.strip() for a in ctx.settings.video.host_addresses.split(",") if a.strip()]
    if addresses:
        seam.limit_host_addresses(addresses)
    rooms = ctx[ROOMS] = Rooms(ctx)
    ctx.metrics.registry.register(VideoCollector(rooms))
    app.cleanup_ctx.append(_rooms_ctx)
    add_routes(app, ROUTES)
    ctx.board_sections["meetings"] = board_section


async def _rooms_ctx(app: web.Application) -> AsyncIterator[None]:
    """Rooms close (and their recordings are written down) before the stores do."""
    yield
    await close_rooms(app[CTX])
