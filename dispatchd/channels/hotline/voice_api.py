"""HTTP side of the hotline's voice: the answer's WebRTC offer, hold, transfer, keys, recordings.

Routes under ``/api/v1/hotline``; the commands run on the instance holding the call
(:mod:`dispatchd.channels.hotline.remote`).
"""

from __future__ import annotations

import json
from typing import Any, Final

from aiohttp import web

from dispatchd.channels.hotline import console, remote
from dispatchd.channels.hotline.appkeys import HOTLINES, SIP
from dispatchd.channels.hotline.voice import callouts, recordings
from dispatchd.errors import DomainError, NotFound
from dispatchd.web.appkeys import CTX
from dispatchd.web.auth import current_user, require_role
from dispatchd.web.errors import ApiError, not_found
from dispatchd.web.routing import ApiRoute
from dispatchd.web.validate import Field, invalid, json_body, query_params

TAG: Final = "hotline"

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


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(
        data, status=status, dumps=lambda v: json.dumps(v, ensure_ascii=False, default=str)
    )


def _call_id(request: web.Request) -> int:
    try:
        value = int(request.match_info["id"])
    except ValueError:
        raise not_found("来电", "call") from None
    if not 0 < value < 2**63:
        raise not_found("来电", "call")
    return value


async def recording(request: web.Request) -> web.StreamResponse:
    """``GET /calls/{id}/recording[?side=caller|officer]``: both sides mixed, or one side."""
    user = current_user(request)
    ctx = request.app[CTX]
    side = request.query.get("side") or None
    async with ctx.pool.acquire() as conn:
        row = await conn.fetchrow("SELECT * FROM hotline_calls WHERE id = $1", _call_id(request))
    try:
        if row is None or not await recordings.may_hear(ctx, user, row):
            raise not_found("录音", "recording")
        path = recordings.recording_file(ctx.settings.data.dir, row["recording"], side)
    except NotFound:
        raise not_found("录音", "recording") from None
    return web.FileResponse(path, headers={"Content-Type": "audio/wav", "Cache-Control": "private, no-store"})


async def offer_in(request: web.Request) -> str | None:
    """The WebRTC offer of an answer's body, if it has one (an empty body is an answer without)."""
    if not request.can_read_body:
        return None
    return console.parse_offer(await json_body(request, ANSWER_FIELDS))


async def hold_call(request: web.Request) -> web.Response:
    user = require_role(request, "duty_officer")
    body = await json_body(request, HOLD_FIELDS)
    return _json(await remote.run(request.app, "hold", _call_id(request), user, on=bool(body["hold"])))


async def key_call(request: web.Request) -> web.Response:
    user = require_role(request, "duty_officer")
    body = await json_body(request, KEY_FIELDS)
    keys = str(body["keys"]).upper()
    if not keys or any(k not in "0123456789*#ABCD" for k in keys):
        raise invalid({"keys": ("只能包含 0-9 * # A-D", "only 0-9 * # A-D")})
    return _json(await remote.run(request.app, "key", _call_id(request), user, keys=keys))


async def transfer_call(request: web.Request) -> web.Response:
    user = require_role(request, "duty_officer")
    body = await json_body(request, TRANSFER_FIELDS)
    if bool(body.get("user_id")) == bool(body.get("number")):
        raise invalid({"user_id": ("user_id 与 number 二选一", "give either user_id or number")})
    if body.get("number"):
        return _json(
            await remote.run(request.app, "transfer_out", _call_id(request), user, number=str(body["number"]))
        )
    return _json(
        await remote.run(request.app, "transfer", _call_id(request), user, to_user=int(body["user_id"]))
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


def _id(request: web.Request, what: tuple[str, str]) -> int:
    try:
        value = int(request.match_info["id"])
    except ValueError:
        raise not_found(*what) from None
    if not 0 < value < 2**63:
        raise not_found(*what)
    return value


def _domain(exc: DomainError) -> ApiError:
    return console.as_api_error(exc)


async def place_callout(request: web.Request) -> web.Response:
    user = require_role(request, "duty_officer")
    body = await json_body(request, CALLOUT_FIELDS)
    offer = console.parse_offer(body)
    assert offer is not None
    result = await console.place_callout(
        request.app,
        user,
        offer=offer,
        kind=str(body.get("kind") or "callback"),
        incident_id=body.get("incident_id"),
        number=body.get("number"),
    )
    return _json(result, status=201)


async def get_callout(request: web.Request) -> web.Response:
    user = current_user(request)
    try:
        row = await callouts.get(request.app[CTX], _id(request, ("外呼", "call out")), user)
    except DomainError as exc:
        raise _domain(exc) from None
    return _json(callouts.callout_json(row))


async def list_callouts(request: web.Request) -> web.Response:
    user = current_user(request)
    query = query_params(request, CALLOUT_QUERY)
    if "incident_id" not in query:
        raise invalid({"incident_id": ("必填", "is required")})
    try:
        items = await callouts.list_for_incident(request.app[CTX], int(query["incident_id"]), user)
    except DomainError as exc:
        raise _domain(exc) from None
    return _json({"callouts": items})


async def hangup_callout(request: web.Request) -> web.Response:
    user = require_role(request, "duty_officer")
    return _json(await remote.run(request.app, "callout_hangup", _id(request, ("外呼", "call out")), user))


async def callout_recording(request: web.Request) -> web.StreamResponse:
    user = current_user(request)
    ctx = request.app[CTX]
    try:
        row = await callouts.get(ctx, _id(request, ("外呼", "call out")), user)
        path = recordings.recording_file(
            ctx.settings.data.dir, row["recording"], request.query.get("side") or None
        )
    except DomainError:
        raise not_found("录音", "recording") from None
    return web.FileResponse(path, headers={"Content-Type": "audio/wav", "Cache-Control": "private, no-store"})


async def get_call_list(request: web.Request) -> web.Response:
    user = require_role(request, "duty_officer", "leader")
    try:
        entries = await callouts.call_list(request.app[CTX], _id(request, ("队伍", "unit")), user)
    except DomainError as exc:
        raise _domain(exc) from None
    return _json({"entries": entries})


async def put_call_list(request: web.Request) -> web.Response:
    user = require_role(request, "duty_officer")
    body = await json_body(request, CALL_LIST_FIELDS)
    entries = body["entries"]
    if not all(isinstance(e, dict) for e in entries):
        raise invalid({"entries": ("每项应为 {user_id, phone}", "each entry must be {user_id, phone}")})
    try:
        saved = await callouts.set_call_list(
            request.app[CTX], _id(request, ("队伍", "unit")), user, entries, request.app[HOTLINES].area_code
        )
    except DomainError as exc:
        raise _domain(exc) from None
    return _json({"entries": saved})


async def voice_config(request: web.Request) -> web.Response:
    """What the console needs before it opens a voice session: ICE servers, whether calls out work."""
    current_user(request)
    video = request.app[CTX].settings.video
    servers = [
        {"urls": url, "username": video.ice_username, "credential": video.ice_credential}
        if video.ice_username
        else {"urls": url}
        for url in video.ice_servers.split()
    ]
    edge = request.app[SIP].edge
    return _json({"ice_servers": servers, "calls_out": edge is not None and edge.dialer.trunk is not None})


async def case_recordings(request: web.Request) -> web.Response:
    """The recordings of a case's calls in and out, for whoever may see the case."""
    user = current_user(request)
    query = query_params(request, CALLOUT_QUERY)
    if "incident_id" not in query:
        raise invalid({"incident_id": ("必填", "is required")})
    ctx = request.app[CTX]
    try:
        items = await recordings.of_case(ctx, int(query["incident_id"]), user)
    except DomainError as exc:
        raise _domain(exc) from None
    return _json({"recordings": items})


_CALL_RESPONSES: Final = {
    200: "the call",
    404: "no such call in your jurisdiction",
    409: "the call is not answered by you on a console (error.call holds it)",
}

ROUTES: Final[list[ApiRoute]] = [
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
        query=(Field("side", choices=("caller", "officer")),),
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
        responses={**_CALL_RESPONSES, 422: "not a duty officer of the call's jurisdiction, or not a number"},
    ),
    ApiRoute(
        "POST",
        "/api/v1/hotline/calls/{id}/hold",
        hold_call,
        "Hold (the caller hears music, the officer nothing) or resume a call answered on the console",
        TAG,
        body=HOLD_FIELDS,
        responses=_CALL_RESPONSES,
    ),
    ApiRoute(
        "POST",
        "/api/v1/hotline/calls/{id}/keys",
        key_call,
        "Send DTMF keys to the caller's side (RFC 4733), e.g. into a department's menu",
        TAG,
        body=KEY_FIELDS,
        responses=_CALL_RESPONSES,
    ),
]
