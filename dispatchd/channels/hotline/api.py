"""HTTP API of the hotline under ``/api/v1/hotline``: the call queue, calls to cases, the CTI
webhook, statistics, lines and officer presence; the voice — the answer's WebRTC offer, hold,
transfer, keys, recordings, calls out and 叫应 call lists (commands on a call run on the instance
holding it, :mod:`dispatchd.channels.hotline.remote`). Calls outside the caller's jurisdiction
answer 404. And the capability's assembly (:func:`setup`)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, time, timedelta
from pathlib import Path
from typing import Any, Final

import asyncpg
import structlog
from aiohttp import web

from dispatchd.channels.hotline import calls, console, remote
from dispatchd.channels.hotline.dialer import trunk_of
from dispatchd.channels.hotline.edge import SipEdge
from dispatchd.channels.hotline.notify import PersonCalls
from dispatchd.channels.hotline.presence import Presence
from dispatchd.channels.hotline.slots import HOTLINES, PERSON_CALLS, PRESENCE, SIP, SIP_PORTS, SipRuntime
from dispatchd.channels.hotline.standby import close_edge, edge_tasks, hold_sip_port
from dispatchd.channels.hotline.stats import call_statistics
from dispatchd.channels.hotline.voice import callouts, recordings
from dispatchd.clock import LOCAL_TZ
from dispatchd.context import Context
from dispatchd.domain.hotlines import CALLERS_OUT, load_hotlines
from dispatchd.domain.taxonomy import PRIORITIES
from dispatchd.errors import NotFound, invalid, not_found
from dispatchd.incidents.stats import StatsSection, register_section
from dispatchd.tasks import every, stop_tasks
from dispatchd.validate import Field
from dispatchd.web.appkeys import CTX
from dispatchd.web.auth import current_user, may_see, require_role
from dispatchd.web.errors import ApiError
from dispatchd.web.routing import ApiRoute, add_routes
from dispatchd.web.validate import json_body, query_params

log = structlog.get_logger("dispatchd.hotline")

TAG: Final = "hotline"
_VIEWERS: Final = ("duty_officer", "leader")
_SIGNATURE: Final = "X-Dispatchd-Signature"
_TIMESTAMP: Final = "X-Dispatchd-Timestamp"

LIST_FIELDS: Final = (
    Field(
        "state", max_length=100, description="comma-separated: ringing, queued, answered, abandoned, ended"
    ),
    Field("limit", "integer", minimum=1, maximum=500, description="page size, default 100"),
    Field("before", "integer", minimum=1, description="only calls with a smaller id (next page)"),
)
INCIDENT_FIELDS: Final = (
    Field("category", max_length=100, description="taxonomy code; default: the line's category"),
    Field("description", required=True, max_length=4000),
    Field("priority", choices=PRIORITIES, description="default: the category's"),
    Field("location", "object", description="{lat, lon}: WGS-84 point of what the caller reports"),
    Field("address", max_length=500),
)
ATTACH_FIELDS: Final = (Field("incident_id", "integer", required=True, minimum=1),)
CTI_FIELDS: Final = (
    Field("event", required=True, choices=("ringing", "answered", "ended")),
    Field("call_id", required=True, max_length=200, description="the PBX's id of the call"),
    Field("caller", max_length=40, description="calling number"),
    Field("callee", max_length=40, description="number dialled (967999 or a merged department line)"),
    Field("agent", max_length=64, description="answered: the agent (a dispatchd username where it is one)"),
    Field("caller_name", max_length=100),
    Field("at", max_length=40, description="ISO 8601 time of the event with zone; default: when received"),
)
STATS_FIELDS: Final = (
    Field("org", max_length=64, description="org code; default: the caller's unit"),
    Field("from", max_length=40, description="ISO date (local) or date-time; default 24 h before to"),
    Field("to", max_length=40, description="ISO date (local, inclusive) or date-time; default now"),
)
PRESENCE_FIELDS: Final = (Field("available", "boolean", required=True),)
ANSWER_FIELDS: Final = (
    Field(
        "offer",
        "object",
        description='optional WebRTC offer {type: "offer", sdp} of the console: the caller is bridged to it',
    ),
)
HOLD_FIELDS: Final = (Field("hold", "boolean", required=True, description="true: on hold; false: resume"),)
TRANSFER_FIELDS: Final = (
    Field("user_id", "integer", minimum=1, description="the duty officer whose console is to ring"),
    Field("number", max_length=32, description="or a number to ring through the trunk (a department)"),
)
KEY_FIELDS: Final = (
    Field("keys", required=True, max_length=32, description="DTMF keys to send to the caller (0-9 * # A-D)"),
)
CALLOUT_FIELDS: Final = (
    Field("offer", "object", required=True, description='WebRTC offer {type: "offer", sdp} of the console'),
    Field("kind", choices=("callback", "department"), description="callback (回访, default) or a department"),
    Field("incident_id", "integer", minimum=1, description="the case the call is about"),
    Field("number", max_length=32, description="number to ring; default (callback): the case's reporter"),
)
CALL_LIST_FIELDS: Final = (
    Field(
        "entries",
        "array",
        required=True,
        items="object",
        max_length=20,
        description="[{user_id, phone}] in the order to ring",
    ),
)
CALLOUT_QUERY: Final = (Field("incident_id", "integer", required=True, minimum=1),)
SIDE_QUERY: Final = (Field("side", choices=recordings.SIDES, description="one side only"),)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(
        data, status=status, dumps=lambda v: json.dumps(v, ensure_ascii=False, default=str)
    )


def _id(request: web.Request, what: tuple[str, str]) -> int:
    try:
        value = int(request.match_info["id"])
    except ValueError:
        raise not_found(*what) from None
    if not 0 < value < 2**63:
        raise not_found(*what)
    return value


def _call_id(request: web.Request) -> int:
    return _id(request, ("来电", "call"))


async def list_calls(request: web.Request) -> web.Response:
    user = require_role(request, *_VIEWERS)
    query = query_params(request, LIST_FIELDS)
    states = [s.strip() for s in str(query.get("state", "")).split(",") if s.strip()]
    bad = [s for s in states if s not in calls.STATES]
    if bad:
        raise invalid({"state": ("取值无效：" + "、".join(bad), "unknown state: " + ", ".join(bad))})
    limit = int(query.get("limit", 100))
    items = await calls.list_calls(request.app[CTX], user, states=states, limit=limit, before=query.get("before"))
    next_before = items[-1]["id"] if len(items) == limit else None
    return _json({"calls": items, "next_before": next_before})


async def get_call(request: web.Request) -> web.Response:
    user = require_role(request, *_VIEWERS)
    row = await calls.get_call(request.app[CTX], _call_id(request), user)
    if row is None:
        raise not_found("来电", "call")
    call = calls.call_json(request.app[CTX], row)
    call["history"] = await calls.caller_history(request.app[CTX], row, user)
    async with request.app[CTX].pool.acquire() as conn:
        call["timeline"] = await calls.timeline(conn, row["id"])
    return _json(call)


async def answer_call(request: web.Request) -> web.Response:
    user = require_role(request, "duty_officer")
    # An empty body is an answer without a console (a PBX desk, the recording only).
    offer = console.parse_offer(await json_body(request, ANSWER_FIELDS)) if request.can_read_body else None
    arguments = {"offer": offer} if offer is not None else {}
    return _json(await remote.run(request.app[CTX], "answer", _call_id(request), user, **arguments))


async def hangup_call(request: web.Request) -> web.Response:
    user = require_role(request, "duty_officer")
    return _json(await remote.run(request.app[CTX], "hangup", _call_id(request), user))


async def incident_from_call(request: web.Request) -> web.Response:
    user = require_role(request, "duty_officer")
    call_id = _call_id(request)
    body = await json_body(request, INCIDENT_FIELDS)
    location = body.get("location")
    if location is not None and not (
        isinstance(location.get("lat"), int | float) and isinstance(location.get("lon"), int | float)
    ):
        raise invalid({"location": ("应为 {lat, lon}", "must be {lat, lon}")})
    call, case = await calls.link_incident(request.app[CTX], call_id, user, create=body)
    return _json({"call": call, "incident": case}, status=201)


async def attach_call(request: web.Request) -> web.Response:
    user = require_role(request, "duty_officer")
    call_id = _call_id(request)
    body = await json_body(request, ATTACH_FIELDS)
    call, case = await calls.link_incident(request.app[CTX], call_id, user, attach_to=int(body["incident_id"]))
    return _json({"call": call, "incident": case})


def _audio(path: Path) -> web.FileResponse:
    return web.FileResponse(path, headers={"Content-Type": "audio/wav", "Cache-Control": "private, no-store"})


async def get_recording(request: web.Request) -> web.StreamResponse:
    """``GET /calls/{id}/recording[?side=caller|officer]``: both sides mixed, or one side."""
    user = current_user(request)
    ctx = request.app[CTX]
    side = request.query.get("side") or None  # any other side: no such recording (404)
    row = await calls.get_call(ctx, _call_id(request), None)
    try:
        if row is None or not await recordings.may_hear(ctx, user, row):
            raise not_found("录音", "recording")
        path = recordings.recording_file(ctx.settings.data.dir, row["recording"], side)
    except NotFound:
        raise not_found("录音", "recording") from None
    return _audio(path)


async def hold_call(request: web.Request) -> web.Response:
    user = require_role(request, "duty_officer")
    body = await json_body(request, HOLD_FIELDS)
    return _json(await remote.run(request.app[CTX], "hold", _call_id(request), user, on=bool(body["hold"])))


async def key_call(request: web.Request) -> web.Response:
    user = require_role(request, "duty_officer")
    body = await json_body(request, KEY_FIELDS)
    keys = str(body["keys"]).upper()
    if not keys or any(k not in "0123456789*#ABCD" for k in keys):
        raise invalid({"keys": ("只能包含 0-9 * # A-D", "only 0-9 * # A-D")})
    return _json(await remote.run(request.app[CTX], "key", _call_id(request), user, keys=keys))


async def transfer_call(request: web.Request) -> web.Response:
    user = require_role(request, "duty_officer")
    body = await json_body(request, TRANSFER_FIELDS)
    if bool(body.get("user_id")) == bool(body.get("number")):
        raise invalid({"user_id": ("user_id 与 number 二选一", "give either user_id or number")})
    ctx = request.app[CTX]
    if body.get("number"):
        return _json(await remote.run(ctx, "transfer_out", _call_id(request), user, number=str(body["number"])))
    return _json(await remote.run(ctx, "transfer", _call_id(request), user, to_user=int(body["user_id"])))


_CALLOUT: Final = ("外呼", "call out")


async def place_callout(request: web.Request) -> web.Response:
    user = require_role(request, *CALLERS_OUT)
    body = await json_body(request, CALLOUT_FIELDS)
    offer = console.parse_offer(body)
    assert offer is not None
    result = await console.place_callout(
        request.app[CTX],
        user,
        offer=offer,
        kind=str(body.get("kind") or "callback"),
        incident_id=body.get("incident_id"),
        number=body.get("number"),
    )
    return _json(result, status=201)


async def get_callout(request: web.Request) -> web.Response:
    user = current_user(request)
    row = await callouts.get(request.app[CTX], _id(request, _CALLOUT), user)
    return _json(callouts.callout_json(row))


async def list_callouts(request: web.Request) -> web.Response:
    user = current_user(request)
    query = query_params(request, CALLOUT_QUERY)
    if "incident_id" not in query:
        raise invalid({"incident_id": ("必填", "is required")})
    items = await callouts.list_for_incident(request.app[CTX], int(query["incident_id"]), user)
    return _json({"callouts": items})


async def hangup_callout(request: web.Request) -> web.Response:
    user = require_role(request, "duty_officer")
    return _json(await remote.run(request.app[CTX], "callout_hangup", _id(request, _CALLOUT), user))


async def callout_recording(request: web.Request) -> web.StreamResponse:
    user = current_user(request)
    ctx = request.app[CTX]
    side = request.query.get("side") or None  # any other side: no such recording (404)
    try:
        row = await callouts.get(ctx, _id(request, _CALLOUT), user)
        path = recordings.recording_file(ctx.settings.data.dir, row["recording"], side)
    except NotFound:
        raise not_found("录音", "recording") from None
    return _audio(path)


async def get_call_list(request: web.Request) -> web.Response:
    user = require_role(request, "duty_officer", "leader")
    entries = await callouts.call_list(request.app[CTX], _id(request, ("队伍", "unit")), user)
    return _json({"entries": entries})


async def put_call_list(request: web.Request) -> web.Response:
    user = require_role(request, "duty_officer")
    body = await json_body(request, CALL_LIST_FIELDS)
    entries = body["entries"]
    if not all(isinstance(e, dict) for e in entries):
        raise invalid({"entries": ("每项应为 {user_id, phone}", "each entry must be {user_id, phone}")})
    ctx = request.app[CTX]
    saved = await callouts.set_call_list(
        ctx, _id(request, ("队伍", "unit")), user, entries, ctx[HOTLINES].area_code
    )
    return _json({"entries": saved})


async def voice_config(request: web.Request) -> web.Response:
    """What the console needs before it opens a voice session: ICE servers, whether calls out work."""
    current_user(request)
    ctx = request.app[CTX]
    video = ctx.settings.video
    servers = [
        {"urls": url, "username": video.ice_username, "credential": video.ice_credential}
        if video.ice_username
        else {"urls": url}
        for url in video.ice_servers.split()
    ]
    edge = ctx[SIP].edge
    return _json({"ice_servers": servers, "calls_out": edge is not None and edge.dialer.trunk is not None})


async def case_recordings(request: web.Request) -> web.Response:
    """The recordings of a case's calls in and out, for whoever may see the case."""
    user = current_user(request)
    query = query_params(request, CALLOUT_QUERY)
    if "incident_id" not in query:
        raise invalid({"incident_id": ("必填", "is required")})
    items = await recordings.of_case(request.app[CTX], int(query["incident_id"]), user)
    return _json({"recordings": items})


def _parse_time(name: str, text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise invalid({name: ("应为带时区的 ISO 8601 时间", "must be an ISO 8601 time with zone")}) from None
    if value.tzinfo is None:
        raise invalid({name: ("应为带时区的 ISO 8601 时间", "must be an ISO 8601 time with zone")})
    return value


async def cti_event(request: web.Request) -> web.Response:
    """CTI webhook: ``X-Dispatchd-Timestamp`` (unix seconds) and ``X-Dispatchd-Signature``
    (``sha256=`` hex HMAC-SHA256 of ``"<timestamp>.<raw body>"`` with ``[hotline] cti_hmac_key``)."""
    ctx = request.app[CTX]
    key = ctx.settings.hotline.cti_hmac_key
    if not key:
        raise ApiError(403, "cti_disabled", "未配置 CTI 接口密钥", "the CTI webhook is not configured")
    raw = await request.read()
    stamp = request.headers.get(_TIMESTAMP, "")
    given = request.headers.get(_SIGNATURE, "")
    expected = "sha256=" + hmac.new(key.encode(), stamp.encode() + b"." + raw, hashlib.sha256).hexdigest()
    if not stamp.isdigit() or not hmac.compare_digest(given.encode(), expected.encode()):
        raise ApiError(401, "bad_signature", "签名无效", "missing or wrong signature")
    skew = abs(ctx.clock.now().timestamp() - int(stamp))
    if skew > ctx.settings.hotline.cti_max_skew:
        raise ApiError(401, "stale_signature", "签名时间超出允许范围", "signature timestamp too far from now")
    body = await json_body(request, CTI_FIELDS)
    at = _parse_time("at", body.get("at"))
    external = str(body["call_id"])
    new = calls.NewCall(
        source="cti",
        external_id=external,
        caller=str(body.get("caller") or "anonymous"),
        dialled=str(body.get("callee") or ""),
        caller_name=str(body.get("caller_name") or ""),
        at=at,
    )
    event = body["event"]
    if event == "ringing":
        if not body.get("callee"):
            raise invalid({"callee": ("必填", "is required")})
        call: dict[str, Any] | None = await calls.offer(ctx, new)
    else:
        call = None
        if body.get("callee"):
            call = await calls.offer(ctx, new)  # an event whose ringing never came: recorded all the same
        if event == "answered":
            call = await calls.cti_answered(ctx, external, body.get("agent"), at) or call
        else:
            call = await calls.caller_gone(ctx, "cti", external, "caller_hangup", at=at) or call
    if call is None:
        raise not_found("来电", "call")
    return _json({"call": call})


def _period(query: Mapping[str, Any], now: datetime) -> tuple[datetime, datetime]:
    def bound(name: str, end: bool) -> datetime | None:
        text = query.get(name)
        if not text:
            return None
        try:
            if len(text) == 10:
                day = datetime.fromisoformat(text).date()
                start = datetime.combine(day, time(0), LOCAL_TZ)
                return start + timedelta(days=1) if end else start
            value = datetime.fromisoformat(text)
        except ValueError:
            raise invalid(
                {name: ("应为 ISO 8601 日期或时间", "must be an ISO 8601 date or date-time")}
            ) from None
        return value if value.tzinfo else value.replace(tzinfo=LOCAL_TZ)

    end = bound("to", True) or now + timedelta(seconds=1)  # "up to now" includes a call offered just now
    start = bound("from", False) or end - timedelta(hours=24)
    if start >= end:
        raise invalid({"from": ("应早于 to", "must be before to")})
    return start, end


async def get_stats(request: web.Request) -> web.Response:
    user = require_role(request, *_VIEWERS)
    query = query_params(request, STATS_FIELDS)
    org = query.get("org") or user.org
    if org not in request.app[CTX].orgs or not may_see(request, org):
        raise not_found("单位", "unit")
    start, end = _period(query, request.app[CTX].clock.now())
    hotline = request.app[CTX].settings.hotline
    async with request.app[CTX].pool.acquire() as conn:
        figures = await call_statistics(
            conn,
            org=org,
            start=start,
            end=end,
            target_s=hotline.answer_target,
            share_required=hotline.answer_share,
        )
    return _json(figures)


async def get_lines(request: web.Request) -> web.Response:
    current_user(request)
    ctx = request.app[CTX]
    org = calls.hotline_org(ctx)
    tree = ctx.orgs
    lines = []
    for route in ctx[HOTLINES].values():
        department = tree.find_department(org, route.department_kind)
        lines.append(
            {
                "dialled": route.dialled,
                "name": {"zh-CN": route.name, "en": route.name_en},
                "department_kind": route.department_kind,
                "department": department.code if department else None,
                "category": route.category,
            }
        )
    return _json({"org": org, "lines": lines})


async def get_presence(request: web.Request) -> web.Response:
    user = require_role(request, *_VIEWERS)
    tree = request.app[CTX].orgs
    officers = await request.app[CTX][PRESENCE].officers()
    # Officers of the viewer's subtree, and those above it whose desks take its calls.
    visible = [
        o
        for o in officers
        if o.org in tree and (tree.is_within(o.org, user.org) or tree.is_within(user.org, o.org))
    ]
    return _json({"officers": [o.as_json() for o in visible]})


async def set_presence(request: web.Request) -> web.Response:
    user = require_role(request, "duty_officer")
    body = await json_body(request, PRESENCE_FIELDS)
    await request.app[CTX][PRESENCE].set_available(user, bool(body["available"]))
    await calls.queue_round(request.app[CTX])
    return _json({"available": bool(body["available"])})


_CALL_RESPONSES: Final = {
    200: "the call",
    404: "no such call in your jurisdiction",
    409: "the call is not in a state for this (error.call holds it), or is a CTI call",
}
_VOICE_RESPONSES: Final = {
    200: "the call",
    404: "no such call in your jurisdiction",
    409: "the call is not answered by you on a console (error.call holds it)",
}

ROUTES: Final[list[ApiRoute]] = [
    ApiRoute(
        "GET",
        "/api/v1/hotline/calls",
        list_calls,
        "Calls of the hotline queue and records, newest first, with each caller's history in brief",
        TAG,
        query=LIST_FIELDS,
        responses={200: "{calls: [...], next_before}"},
    ),
    ApiRoute(
        "GET",
        "/api/v1/hotline/calls/{id}",
        get_call,
        "A call with its timeline and the caller's previous calls, cases and suggested duplicates",
        TAG,
        responses={200: "the call", 404: "no such call in your jurisdiction"},
    ),
    ApiRoute(
        "POST",
        "/api/v1/hotline/calls/{id}/answer",
        answer_call,
        'Answer the call: 200 OK to the caller; with {offer: {type: "offer", sdp}} the caller is bridged'
        ' to that WebRTC peer and the call comes with {answer: {type: "answer", sdp}}; without, the'
        " caller is recorded only (a PBX desk)",
        TAG,
        body=ANSWER_FIELDS,
        responses={**_CALL_RESPONSES, 422: "the offer is malformed or has no usable audio"},
    ),
    ApiRoute(
        "POST",
        "/api/v1/hotline/calls/{id}/hangup",
        hangup_call,
        "End the call: BYE when answered, 480 while it rings",
        TAG,
        responses=_CALL_RESPONSES,
    ),
    ApiRoute(
        "POST",
        "/api/v1/hotline/calls/{id}/incident",
        incident_from_call,
        "Create a case from the call (channel hotline, caller and line filled in) and link them",
        TAG,
        body=INCIDENT_FIELDS,
        responses={
            201: "{call, incident}: the case includes duplicate candidates (same caller)",
            404: "no such call",
            409: "the call is already linked",
            422: "invalid input",
        },
    ),
    ApiRoute(
        "POST",
        "/api/v1/hotline/calls/{id}/attach",
        attach_call,
        "Link the call to an existing case (another report of it)",
        TAG,
        body=ATTACH_FIELDS,
        responses={200: "{call, incident}", 404: "no such call or case", 409: "the call is already linked"},
    ),
    ApiRoute(
        "GET",
        "/api/v1/hotline/calls/{id}/recording",
        get_recording,
        "The recording of both sides mixed (WAV, 16-bit PCM, 8 kHz); ?side=caller|officer for one side"
        " ([voice] record_legs). Duty officers and leaders of the jurisdiction, and whoever may see the"
        " call's case",
        TAG,
        query=SIDE_QUERY,
        responses={200: "audio/wav", 404: "no recording, or not yours to hear"},
    ),
    ApiRoute(
        "POST",
        "/api/v1/hotline/events",
        cti_event,
        "CTI webhook of a centre's own PBX: ringing, answered, ended (HMAC-SHA256 signed, see docs/hotline.md)",
        TAG,
        public=True,
        body=CTI_FIELDS,
        responses={
            200: "{call}",
            401: "bad or stale signature",
            403: "webhook not configured",
            422: "invalid",
        },
    ),
    ApiRoute(
        "GET",
        "/api/v1/hotline/stats",
        get_stats,
        "Call answering against NFPA 1225: share answered within the target, abandonment rate, waits",
        TAG,
        query=STATS_FIELDS,
        responses={200: "the figures, overall and per line"},
    ),
    ApiRoute("GET", "/api/v1/hotline/lines", get_lines, "The merged lines and where they route", TAG),
    ApiRoute(
        "GET",
        "/api/v1/hotline/presence",
        get_presence,
        "Duty officers present, the available ones longest idle first",
        TAG,
    ),
    ApiRoute(
        "POST",
        "/api/v1/hotline/presence",
        set_presence,
        "The current duty officer is ready (available) or not ready for calls",
        TAG,
        body=PRESENCE_FIELDS,
    ),
    ApiRoute(
        "GET",
        "/api/v1/hotline/voice",
        voice_config,
        "The console's voice settings: ICE servers for its WebRTC session, whether calls out are possible",
        TAG,
        responses={200: "{ice_servers, calls_out}"},
    ),
    ApiRoute(
        "GET",
        "/api/v1/hotline/recordings",
        case_recordings,
        "Recordings of a case's calls in and calls out, newest first, each with its url",
        TAG,
        query=CALLOUT_QUERY,
        responses={200: "{recordings: [{kind, id, number, at, url}]}", 404: "no such case"},
    ),
    ApiRoute(
        "POST",
        "/api/v1/hotline/callouts",
        place_callout,
        "Call out through the trunk with the console's audio (回访 to the case's reporter, or a department):"
        ' 201 with the call out and {answer: {type: "answer", sdp}}; the console\'s data channel hears'
        " ringing, answered, ended",
        TAG,
        body=CALLOUT_FIELDS,
        responses={
            201: "{call out…, answer}",
            404: "no such case",
            409: "no trunk, or no SIP here (error.code no_trunk, sip_unavailable)",
            422: "no number, or a bad offer",
        },
    ),
    ApiRoute(
        "GET",
        "/api/v1/hotline/callouts",
        list_callouts,
        "Calls out about a case, newest first",
        TAG,
        query=CALLOUT_QUERY,
        responses={200: "{callouts: [...]}", 404: "no such case"},
    ),
    ApiRoute(
        "GET",
        "/api/v1/hotline/callouts/{id}",
        get_callout,
        "A call out",
        TAG,
        responses={200: "the call out", 404: "none"},
    ),
    ApiRoute(
        "POST",
        "/api/v1/hotline/callouts/{id}/hangup",
        hangup_callout,
        "End a call out (CANCEL while it rings, BYE once answered)",
        TAG,
        responses={200: "the call out", 404: "none", 409: "it is over"},
    ),
    ApiRoute(
        "GET",
        "/api/v1/hotline/callouts/{id}/recording",
        callout_recording,
        "The recording of a call out (both sides mixed; ?side=caller for the far end, officer for ours)",
        TAG,
        query=SIDE_QUERY,
        responses={200: "audio/wav", 404: "no recording"},
    ),
    ApiRoute(
        "GET",
        "/api/v1/hotline/units/{id}/call-list",
        get_call_list,
        "叫应: whom the unit's phones ring, in order, about an order nobody accepted",
        TAG,
        responses={200: "{entries: [{position, user_id, username, phone}]}", 404: "no such unit"},
    ),
    ApiRoute(
        "PUT",
        "/api/v1/hotline/units/{id}/call-list",
        put_call_list,
        "叫应: set the unit's call list (members of the unit, each with a number)",
        TAG,
        body=CALL_LIST_FIELDS,
        responses={200: "{entries}", 404: "no such unit", 422: "not a member, twice, or a bad number"},
    ),
    ApiRoute(
        "POST",
        "/api/v1/hotline/calls/{id}/transfer",
        transfer_call,
        "Transfer the answered call to another duty officer (user_id: their console rings) or to a number"
        " through the trunk (number: a department; bridged once answered, back to the officer if not);"
        " the caller hears music meanwhile",
        TAG,
        body=TRANSFER_FIELDS,
        responses={**_VOICE_RESPONSES, 422: "not a duty officer of the call's jurisdiction, or not a number"},
    ),
    ApiRoute(
        "POST",
        "/api/v1/hotline/calls/{id}/hold",
        hold_call,
        "Hold (the caller hears music, the officer nothing) or resume a call answered on the console",
        TAG,
        body=HOLD_FIELDS,
        responses=_VOICE_RESPONSES,
    ),
    ApiRoute(
        "POST",
        "/api/v1/hotline/calls/{id}/keys",
        key_call,
        "Send DTMF keys to the caller's side (RFC 4733), e.g. into a department's menu",
        TAG,
        body=KEY_FIELDS,
        responses=_VOICE_RESPONSES,
    ),
]


# -- assembly ------------------------------------------------------------------------------------------


def setup(app: web.Application) -> None:
    ctx = app[CTX]
    ctx[HOTLINES] = load_hotlines(ctx.settings.paths.hotlines, ctx.taxonomy)
    ctx[PRESENCE] = Presence(lambda: ctx.redis, ctx.clock, ctx.instance_id)
    runtime = ctx[SIP] = SipRuntime()
    ctx[SIP_PORTS] = runtime.ports
    calls.hotline_org(ctx)  # a wrong [hotline] org stops the start, with its name
    if trunk_of(ctx.settings) is not None:
        ctx[PERSON_CALLS] = PersonCalls(ctx)
    add_routes(app, ROUTES)
    ctx.board_sections["calls"] = calls.board_section
    register_section(ctx, "hotline", _stats_section(ctx))
    app.cleanup_ctx.append(_hotline_ctx)


def _stats_section(ctx: Context) -> StatsSection:
    async def section(conn: asyncpg.Connection, org: str, start: datetime, end: datetime) -> dict[str, Any]:
        hotline = ctx.settings.hotline
        return await call_statistics(
            conn,
            org=org,
            start=start,
            end=end,
            target_s=hotline.answer_target,
            share_required=hotline.answer_share,
        )

    return section


async def _hotline_ctx(app: web.Application) -> AsyncIterator[None]:
    """The SIP edge, the queue round, the presence beat, the command listener, the recordings'
    retention, 叫应 and the demo callers."""
    ctx = app[CTX]
    settings = ctx.settings
    runtime = ctx[SIP]
    # Active/standby (standby.py): one instance of the deployment binds a fixed SIP port at a time.
    standby = settings.sip.standby and settings.sip.port != 0
    edge: SipEdge | None = None if standby else SipEdge(ctx)
    if edge is not None:
        try:
            runtime.ports.update(await edge.start(settings.sip.port))
            runtime.edge = edge
        except OSError as exc:
            # Another instance on this host has the port: this one serves the API without SIP intake.
            log.warning("sip_port_unavailable", port=settings.sip.port, error=str(exc))
            edge = None
    tasks = [
        asyncio.create_task(_queue_loop(ctx), name="hotline-queue"),
        asyncio.create_task(ctx[PRESENCE].run(), name="hotline-presence"),
        # Every instance deletes its own old recordings (under its data dir), active or standby.
        asyncio.create_task(recordings.keep_purging(ctx, calls.forget_recordings), name="voice-retention"),
    ]
    if standby:
        tasks.append(asyncio.create_task(hold_sip_port(ctx), name="sip-standby"))
    edge_work = edge_tasks(ctx, edge) if edge is not None else []
    try:
        yield
    finally:
        await stop_tasks([*edge_work, *tasks])
        if edge is not None:
            await close_edge(ctx, edge)
        runtime.ports.clear()


async def _queue_loop(ctx: Context) -> None:
    await every(
        ctx, ctx.settings.hotline.queue_interval, lambda: calls.queue_round(ctx), "hotline_queue_round_failed", wait_first=True, logger=log
    )
