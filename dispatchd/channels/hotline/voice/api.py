"""HTTP side of the hotline's voice: the answer's WebRTC offer, hold, transfer, keys, recordings.

Routes under ``/api/v1/hotline``; the commands run on the instance holding the call
(:mod:`dispatchd.channels.hotline.remote`).
"""

from __future__ import annotations

import json
from typing import Any, Final

from aiohttp import web

from dispatchd.channels.hotline import remote
from dispatchd.channels.hotline.voice import console, recordings
from dispatchd.errors import NotFound
from dispatchd.web.appkeys import CTX
from dispatchd.web.auth import current_user, require_role
from dispatchd.web.errors import not_found
from dispatchd.web.routing import ApiRoute
from dispatchd.web.validate import Field, invalid, json_body

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
    Field(
        "user_id",
        "integer",
        required=True,
        minimum=1,
        description="the duty officer whose console is to ring",
    ),
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
    return _json(
        await remote.run(request.app, "transfer", _call_id(request), user, to_user=int(body["user_id"]))
    )


_CALL_RESPONSES: Final = {
    200: "the call",
    404: "no such call in your jurisdiction",
    409: "the call is not answered by you on a console (error.call holds it)",
}

ROUTES: Final[list[ApiRoute]] = [
    ApiRoute(
        "POST",
        "/api/v1/hotline/calls/{id}/transfer",
        transfer_call,
        "Transfer the answered call to another duty officer: the caller hears music, their console rings",
        TAG,
        body=TRANSFER_FIELDS,
        responses={**_CALL_RESPONSES, 422: "not a duty officer of the call's jurisdiction"},
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
