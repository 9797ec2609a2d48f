"""HTTP API of the closed loop under ``/api/v1``: cases, one route per transition, statistics,
taxonomy.  Everything is limited to the caller's jurisdiction; a case outside it answers 404."""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, time, timedelta
from typing import Any, Final

from aiohttp import web

from dispatchd.clock import LOCAL_TZ
from dispatchd.domain.incident import Action, State
from dispatchd.domain.taxonomy import PRIORITIES
from dispatchd.errors import invalid, not_found
from dispatchd.incidents import board, service, stats, timers
from dispatchd.incidents.query import CaseQuery
from dispatchd.incidents.service import ACTION_FIELDS
from dispatchd.incidents.store import CHANNELS
from dispatchd.tasks import start_task, stop_tasks
from dispatchd.validate import Field
from dispatchd.web.appkeys import CTX
from dispatchd.web.auth import current_user, may_see, require_role
from dispatchd.web.errors import bad_request
from dispatchd.web.routing import ApiRoute, Handler, add_routes
from dispatchd.web.validate import json_body, query_params

TAG: Final = "incidents"
_CREATORS: Final = ("duty_officer", "leader", "grid_worker", "squad_member", "department_handler")

CREATE_FIELDS: Final = (
    Field("category", required=True, max_length=100, description="taxonomy code, e.g. incident.dispute"),
    Field("description", required=True, max_length=4000),
    Field("priority", choices=PRIORITIES, description="default: the category's"),
    Field("location", "object", description="{lat, lon}: WGS-84 point; location or address is required"),
    Field("address", max_length=500),
    Field("channel", choices=CHANNELS, description="default: grid_report for grid workers, else officer"),
    Field("caller", max_length=32, description="calling number (hotline)"),
    Field("attachments", "array", items="string", max_length=20),
    Field("owner_unit", max_length=64, description="owning unit; default: the township of the grid"),
    Field("observed_at", max_length=40, description="ISO 8601 time with zone when it was seen"),
)

LIST_FIELDS: Final = (
    Field("state", max_length=200, description="comma-separated states"),
    Field("category", max_length=400, description="comma-separated codes (sub-categories included)"),
    Field("priority", max_length=20, description="comma-separated P1–P4"),
    Field("channel", max_length=200, description="comma-separated channels"),
    Field("unit", max_length=64, description="org code: cases owned or placed in its subtree"),
    Field("department", max_length=64, description="department code: cases it handles (lead or co-handling)"),
    Field("overdue", "boolean"),
    Field("bbox", max_length=100, description="min_lon,min_lat,max_lon,max_lat (WGS-84)"),
    Field("q", max_length=200, description="free text in number, description, address, caller"),
    Field("limit", "integer", minimum=1, maximum=200, description="page size, default 50"),
    Field("cursor", max_length=200, description="next_cursor of the previous page"),
)

STATS_FIELDS: Final = (
    Field("org", max_length=64, description="org code; default: the caller's unit"),
    Field(
        "from",
        max_length=40,
        description="ISO date (local, inclusive) or date-time; default 30 days before to",
    ),
    Field(
        "to",
        max_length=40,
        description="ISO date (local, inclusive) or date-time (exclusive); default end of today",
    ),
    Field("format", choices=("json", "csv")),
)


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(
        data, status=status, headers=headers, dumps=lambda v: json.dumps(v, ensure_ascii=False, default=str)
    )


def _incident_id(request: web.Request) -> int:
    try:
        value = int(request.match_info["id"])
    except ValueError:
        raise not_found("案件", "case") from None
    if not 0 < value < 2**63:
        raise not_found("案件", "case")
    return value


def _parse_time(value: str, name: str, *, end: bool) -> datetime:
    """An ISO date (local day; ``end``: the day is included) or a date-time (no zone: local)."""
    try:
        if len(value) == 10:
            day = datetime.combine(datetime.fromisoformat(value).date(), time(0), LOCAL_TZ)
            return day + timedelta(days=1) if end else day
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise invalid({name: ("应为 ISO 8601 日期或时间", "must be an ISO 8601 date or date-time")}) from None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=LOCAL_TZ)


def _csv_list(value: str | None, name: str, allowed: tuple[str, ...] | None = None) -> tuple[str, ...]:
    if not value:
        return ()
    items = tuple(dict.fromkeys(part.strip() for part in value.split(",") if part.strip()))
    if allowed is not None:
        bad = [item for item in items if item not in allowed]
        if bad:
            raise invalid(
                {
                    name: (
                        "取值无效，可选：" + "、".join(allowed),
                        "values must be among " + ", ".join(allowed),
                    )
                }
            )
    return items


# -- cases -----------------------------------------------------------------------------------------


async def create_incident(request: web.Request) -> web.Response:
    user = require_role(request, *_CREATORS)
    body = await json_body(request, CREATE_FIELDS)
    lat = lon = None
    location = body.get("location")
    if location is not None:
        lat, lon = location.get("lat"), location.get("lon")
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in (lat, lon))
        if not numbers or not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise invalid(
                {
                    "location": (
                        "应为 {lat, lon}，纬度 -90–90，经度 -180–180",
                        "must be {lat, lon} with lat -90..90 and lon -180..180",
                    )
                }
            )
        lat, lon = float(lat), float(lon)
    address = body.get("address")
    if location is None and not (address and address.strip()):
        raise invalid({"location": ("须提供位置或地址", "location or address is required")})
    if body["category"] not in request.app[CTX].taxonomy:
        raise invalid({"category": ("未知的事件类别", "unknown category")})
    owner = body.get("owner_unit")
    if owner is not None and (owner not in request.app[CTX].orgs or not may_see(request, owner)):
        raise invalid(
            {"owner_unit": ("单位不存在或不在管辖范围内", "unknown unit or outside your jurisdiction")}
        )
    observed = None
    if body.get("observed_at"):
        observed = _parse_time(body["observed_at"], "observed_at", end=False)
    channel = body.get("channel") or ("grid_report" if user.role == "grid_worker" else "officer")
    case = await service.create_incident(
        request.app[CTX],
        category=body["category"],
        description=body["description"],
        channel=channel,
        priority=body.get("priority"),
        lat=lat,
        lon=lon,
        address=address,
        reporter_id=user.id,
        caller=body.get("caller"),
        attachments=body.get("attachments") or (),
        owner_unit=owner,
        actor=user,
        observed_at=observed,
    )
    return _json(case, status=201, headers={"Location": f"/api/v1/incidents/{case['id']}"})


def _encode_cursor(before: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": before}).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        before = json.loads(raw)["before"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise bad_request("分页游标无效", "invalid cursor", code="invalid_cursor") from None
    if not isinstance(before, int) or isinstance(before, bool) or before < 1:
        raise bad_request("分页游标无效", "invalid cursor", code="invalid_cursor")
    return before


def _bbox(value: str | None) -> tuple[float, float, float, float] | None:
    if not value:
        return None
    problem = {
        "bbox": ("应为 最小经度,最小纬度,最大经度,最大纬度", "must be min_lon,min_lat,max_lon,max_lat")
    }
    try:
        parts = tuple(float(part) for part in value.split(","))
    except ValueError:
        raise invalid(problem) from None
    if len(parts) != 4:
        raise invalid(problem)
    min_lon, min_lat, max_lon, max_lat = parts
    if not (-180 <= min_lon <= max_lon <= 180 and -90 <= min_lat <= max_lat <= 90):
        raise invalid(problem)
    return min_lon, min_lat, max_lon, max_lat


async def list_incidents(request: web.Request) -> web.Response:
    user = current_user(request)
    query = query_params(request, LIST_FIELDS)
    unit = query.get("unit")
    if unit is not None and (unit not in request.app[CTX].orgs or not may_see(request, unit)):
        raise not_found("单位", "unit")
    where = CaseQuery(
        viewer=user,
        states=_csv_list(query.get("state"), "state", tuple(State)),
        categories=_csv_list(query.get("category"), "category"),
        priorities=_csv_list(query.get("priority"), "priority", PRIORITIES),
        channels=_csv_list(query.get("channel"), "channel", CHANNELS),
        unit=unit,
        department=query.get("department"),
        overdue=query.get("overdue"),
        bbox=_bbox(query.get("bbox")),
        text=(query.get("q") or "").strip() or None,
    )
    before = _decode_cursor(query["cursor"]) if query.get("cursor") else None
    page = dataclasses.replace(where, limit=query.get("limit", 50), before=before)
    items, next_before = await service.list_incidents(request.app[CTX], page)
    return _json({"items": items, "next_cursor": _encode_cursor(next_before) if next_before else None})


async def get_incident(request: web.Request) -> web.Response:
    case = await service.get_incident(request.app[CTX], _incident_id(request), current_user(request))
    if case is None:
        raise not_found("案件", "case")
    return _json(case)


def _action_handler(action: Action) -> Handler:
    async def handler(request: web.Request) -> web.Response:
        user = current_user(request)
        incident_id = _incident_id(request)
        body = await json_body(request)
        case = await service.apply_action(request.app[CTX], incident_id, str(action), body, user)
        return _json(case)

    handler.__name__ = f"incident_{action}"
    handler.__qualname__ = handler.__name__
    return handler


# -- statistics and taxonomy -----------------------------------------------------------------------


async def _statistics(request: web.Request) -> dict[str, Any]:
    user = current_user(request)
    query = query_params(request, STATS_FIELDS)
    org = query.get("org") or user.org
    if org not in request.app[CTX].orgs or not may_see(request, org):
        raise not_found("单位", "unit")
    # Default period: the 30 local days up to and including today.
    today = request.app[CTX].clock.now().astimezone(LOCAL_TZ).date()
    tomorrow = datetime.combine(today, time(0), LOCAL_TZ) + timedelta(days=1)
    end = _parse_time(query["to"], "to", end=True) if query.get("to") else tomorrow
    start = _parse_time(query["from"], "from", end=False) if query.get("from") else end - timedelta(days=30)
    if start >= end:
        raise invalid({"from": ("起始时间须早于结束时间", "must be before to")})
    async with request.app[CTX].pool.acquire() as conn:
        figures = await stats.statistics(
            conn, tree=request.app[CTX].orgs, taxonomy=request.app[CTX].taxonomy, org=org, start=start, end=end
        )
        for name, section in (request.app[CTX].get(stats.STATS_SECTIONS) or {}).items():
            figures[name] = await section(conn, org, start, end)
    return figures


def _csv_response(figures: dict[str, Any]) -> web.Response:
    name = f"stats-{figures['org']['code']}.csv"
    return web.Response(
        body=("\ufeff" + stats.to_csv(figures)).encode("utf-8"),  # BOM: spreadsheet programs read UTF-8
        content_type="text/csv",
        charset="utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"'},
    )


async def get_stats(request: web.Request) -> web.Response:
    figures = await _statistics(request)
    if request.query.get("format") == "csv":
        return _csv_response(figures)
    return _json(figures)


async def get_stats_csv(request: web.Request) -> web.Response:
    return _csv_response(await _statistics(request))


async def get_taxonomy(request: web.Request) -> web.Response:
    return _json(request.app[CTX].taxonomy.as_json())


# -- routes ----------------------------------------------------------------------------------------

_ACTION_SUMMARIES: Final[Mapping[Action, str]] = {
    Action.accept: "Accept (立案) a reported case",
    Action.reject: "Reject (不予受理) a reported case, with a reason",
    Action.merge: "Merge (合并) a duplicate into a primary case",
    Action.dispatch: "Dispatch (派遣) to a lead department, co-handlers and optionally a squad",
    Action.start: "Start handling (开始处置)",
    Action.feedback: "Feed back (反馈) what was done, once per handling department",
    Action.verify: "Verify (核查) the result",
    Action.reopen: "Reopen (退回重办) after feedback, with a reason",
    Action.close: "Close (结案) a verified case",
    Action.evaluate: "Evaluate (评价): satisfaction 1–5 from the callback",
    Action.escalate: "Escalate (上报) one level up, with a reason",
    Action.assign: "Assign (指派) down to a unit below the owner",
    Action.sign: "Sign for a dispatched case (签收, a handling department): its handling clock starts",
    Action.return_: "Return a case that is not the department's own (退单), with a reason",
    Action.extend_request: "Ask for more time (延期申请), with the hours and a reason",
    Action.extend_decide: "Grant or refuse a request for more time (延期审批)",
    Action.urge: "Urge the case's handler (催办)",
    Action.supervise: "Put the case under a leader's supervision (督办)",
    Action.callback: "Record the callback to the reporter (回访): reached, satisfaction, reopen",
}

_ACTION_RESPONSES: Final = {
    200: "the case after the action",
    403: "role or jurisdiction does not allow it",
    404: "no such case in your jurisdiction",
    409: "illegal transition or stale version; error.incident holds the current case",
    422: "invalid input",
}

ROUTES: Final[list[ApiRoute]] = [
    ApiRoute(
        "POST",
        "/api/v1/incidents",
        create_incident,
        "Report a case",
        TAG,
        body=CREATE_FIELDS,
        responses={201: "the new case (with timeline and duplicate candidates)", 422: "invalid input"},
    ),
    ApiRoute(
        "GET",
        "/api/v1/incidents",
        list_incidents,
        "List cases in your jurisdiction, newest first (cursor pagination)",
        TAG,
        query=LIST_FIELDS,
        responses={200: "{items, next_cursor}", 400: "bad cursor", 422: "invalid filter"},
    ),
    ApiRoute(
        "GET",
        r"/api/v1/incidents/{id:\d+}",
        get_incident,
        "A case with its audit timeline, merged duplicates and duplicate candidates",
        TAG,
        responses={200: "the case", 404: "no such case in your jurisdiction"},
    ),
    *(
        ApiRoute(
            "POST",
            rf"/api/v1/incidents/{{id:\d+}}/actions/{action}",
            _action_handler(action),
            _ACTION_SUMMARIES[action],
            TAG,
            body=ACTION_FIELDS[action],
            responses=_ACTION_RESPONSES,
        )
        for action in Action
    ),
    ApiRoute(
        "GET",
        "/api/v1/stats",
        get_stats,
        "Closed-loop statistics of a unit and period (format=csv for CSV)",
        "statistics",
        query=STATS_FIELDS,
        responses={200: "the figures", 404: "unit outside your jurisdiction", 422: "invalid period"},
    ),
    ApiRoute(
        "GET",
        "/api/v1/stats.csv",
        get_stats_csv,
        "Closed-loop statistics as CSV",
        "statistics",
        query=STATS_FIELDS[:3],
        responses={200: "text/csv", 404: "unit outside your jurisdiction"},
    ),
    ApiRoute(
        "GET",
        "/api/v1/taxonomy",
        get_taxonomy,
        "Case categories (一心两翼) with names in zh-CN and en, nested sub-categories",
        TAG,
        responses={200: "list of categories with code, name, children"},
    ),
]


# -- assembly ----------------------------------------------------------------------------------------


async def _timers_ctx(app: web.Application) -> AsyncIterator[None]:
    """The deadline-timer loop runs while the application does."""
    ctx = app[CTX]
    task = start_task(ctx, timers.run_timers(ctx), "incident-timers")
    yield
    await stop_tasks([task])


def setup(app: web.Application) -> None:
    """Register the closed loop on ``app``."""
    ctx = app[CTX]
    add_routes(app, ROUTES)
    ctx[timers.FIRING_LOCK] = asyncio.Lock()
    app.cleanup_ctx.append(_timers_ctx)
    ctx.board_sections["incidents"] = board.incidents_section
    if stats.STATS_SECTIONS not in ctx:
        ctx[stats.STATS_SECTIONS] = {}
