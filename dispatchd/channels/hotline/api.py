"""HTTP API of the hotline under ``/api/v1/hotline``: the call queue, calls to cases, the CTI
webhook, statistics, lines and officer presence. Calls outside the caller's jurisdiction answer 404."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, time, timedelta
from typing import Any, Final

import asyncpg
import structlog
from aiohttp import web

from dispatchd.channels.hotline import calls, remote
from dispatchd.channels.hotline.demo import run_demo
from dispatchd.channels.hotline.edge import SipEdge
from dispatchd.channels.hotline.presence import Presence
from dispatchd.channels.hotline.slots import HOTLINES, PRESENCE, SIP, SIP_PORTS, SipRuntime
from dispatchd.channels.hotline.stats import call_statistics
from dispatchd.clock import LOCAL_TZ
from dispatchd.context import Context
from dispatchd.domain.hotlines import load_hotlines
from dispatchd.domain.taxonomy import PRIORITIES
from dispatchd.errors import invalid, not_found
from dispatchd.incidents.stats import StatsSection, register_section
from dispatchd.store.outage import store_failure
from dispatchd.tasks import raise_if_cancelling, stop_tasks
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
    return _json(await remote.run(request.app[CTX], "answer", _call_id(request), user))


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


async def get_recording(request: web.Request) -> web.StreamResponse:
    user = require_role(request, *_VIEWERS)
    row = await calls.get_call(request.app[CTX], _call_id(request), user)
    if row is None or row["recording"] is None:
        raise not_found("录音", "recording")
    data_dir = request.app[CTX].settings.data.dir
    path = (data_dir / row["recording"]).resolve()
    if not path.is_file() or data_dir.resolve() not in path.parents:
        raise not_found("录音", "recording")
    return web.FileResponse(path, headers={"Content-Type": "audio/wav"})


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
        "Answer the call: 200 OK to the caller (its audio goes to the recording)",
        TAG,
        responses=_CALL_RESPONSES,
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
        "The recording of the caller's audio (WAV, G.711)",
        TAG,
        responses={200: "audio/wav", 404: "no recording"},
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
]


# -- assembly ------------------------------------------------------------------------------------------


def setup(app: web.Application) -> None:
    ctx = app[CTX]
    ctx[HOTLINES] = load_hotlines(ctx.settings.paths.hotlines, ctx.taxonomy)
    ctx[PRESENCE] = Presence(lambda: ctx.redis, ctx.clock, ctx.instance_id)
    runtime = ctx[SIP] = SipRuntime()
    ctx[SIP_PORTS] = runtime.ports
    calls.hotline_org(ctx)  # a wrong [hotline] org stops the start, with its name
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
    """The SIP edge, the queue round, the presence beat, the command listener and the demo callers."""
    ctx = app[CTX]
    settings = ctx.settings
    runtime = ctx[SIP]
    edge: SipEdge | None = SipEdge(ctx)
    assert edge is not None
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
    ]
    if edge is not None:
        tasks.append(asyncio.create_task(remote.serve_commands(ctx), name="hotline-commands"))
    if settings.demo.enabled and edge is not None:
        tasks.append(asyncio.create_task(run_demo(ctx), name="hotline-demo"))
    try:
        yield
    finally:
        await stop_tasks(tasks)
        if edge is not None:
            runtime.edge = None
            await edge.close()
            with contextlib.suppress(Exception):
                await calls.close_own_calls(ctx)
        runtime.ports.clear()


async def _queue_loop(ctx: Context) -> None:
    interval = ctx.settings.hotline.queue_interval
    while True:
        await asyncio.sleep(interval)
        try:
            await calls.queue_round(ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise_if_cancelling()
            if store_failure(ctx, exc) is None:  # an outage is logged once, by its tracker
                log.exception("hotline_queue_round_failed")
