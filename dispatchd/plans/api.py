"""HTTP API of emergency plans, their activations and notices, and warnings in (CAP 1.2)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any, Final

import structlog
from aiohttp import web

from dispatchd.context import Context
from dispatchd.domain.plans import RESPONSE_LEVELS, Plan, load_plans
from dispatchd.errors import Forbidden, TooLarge, UnsupportedMedia, not_found
from dispatchd.incidents.slots import CASE_EXTRAS
from dispatchd.incidents.stats import register_section
from dispatchd.plans import notices, service, warnings
from dispatchd.plans.slots import FILE_PLANS, NOTICES_WAKE
from dispatchd.store.apikeys import find_api_key
from dispatchd.store.changes import Actor
from dispatchd.tasks import every, start_task, stop_tasks
from dispatchd.validate import Field, check_fields
from dispatchd.web.appkeys import CTX
from dispatchd.web.auth import authenticate, bearer_token, current_user, jurisdiction
from dispatchd.web.errors import ApiError
from dispatchd.web.routing import ApiRoute, add_routes
from dispatchd.web.validate import json_body, query_params

log = structlog.get_logger("dispatchd.plans")

TAG: Final = "plans"
CAP_TYPES: Final = ("application/cap+xml", "application/xml", "text/xml")
CAP_ROLES: Final = ("admin", "duty_officer", "leader")

PLAN_FIELDS: Final = (
    Field("code", required=True, max_length=64, description="lower-case name; posting an existing code makes its next version"),
    Field("name", required=True, max_length=200, description="预案名称"),
    Field("name_en", max_length=200),
    Field("org", required=True, max_length=64, description="the unit the plan belongs to (applies to its subtree)"),
    Field("description", max_length=4000),
    Field("trigger", "object", description="{categories, priorities, min_reports, units, warning_events, level}"),
    Field("levels", "object", required=True, description="{IV|III|II|I: {description, groups, forces, consult, notices, steps}}"),
)
ACTIVATE_FIELDS: Final = (
    Field("plan", "integer", required=True, minimum=1, maximum=2**63 - 1, description="the plan's id"),
    Field("level", choices=RESPONSE_LEVELS, description="response level (default: the trigger's)"),
)
LEVEL_FIELDS: Final = (Field("level", choices=RESPONSE_LEVELS, description="response level"),)
RAISE_FIELDS: Final = (Field("level", required=True, choices=RESPONSE_LEVELS, description="the higher level"),)
REASON_FIELDS: Final = (Field("reason", max_length=1000),)
CONTACT_FIELDS: Final = (
    Field("mobile", max_length=20, description="mobile number for SMS (personal data: never logged)"),
    Field("deputy_user_id", "integer", minimum=1, maximum=2**63 - 1, description="who stands in when they do not acknowledge"),
)
ACTIVATIONS_QUERY: Final = (Field("state", choices=("open", "all")),)
CONTACTS_QUERY: Final = (
    Field("q", max_length=64, description="part of the account or display name"),
    Field("after", "integer", minimum=0, maximum=2**63 - 1, description="the next_after of the previous page"),
    Field("limit", "integer", minimum=1, maximum=200, description="people per page (200)"),
)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda v: json.dumps(v, ensure_ascii=False, default=str))


def _id(request: web.Request, name: str = "id", what: tuple[str, str] = ("记录", "record")) -> int:
    try:
        return int(request.match_info[name])
    except ValueError:
        raise not_found(*what) from None


async def list_plans(request: web.Request) -> web.Response:
    return _json({"plans": await service.list_plans(request.app[CTX], current_user(request))})


async def create_plan(request: web.Request) -> web.Response:
    user = current_user(request)
    body = await json_body(request, PLAN_FIELDS)
    plan, created = await service.save_plan(request.app[CTX], body, user)
    return _json(plan, status=201 if created else 200)


async def get_plan(request: web.Request) -> web.Response:
    return _json(await service.get_plan(request.app[CTX], _id(request, what=("预案", "plan")), current_user(request)))


async def update_plan(request: web.Request) -> web.Response:
    """A new version of a plan (its code stays)."""
    user = current_user(request)
    ctx = request.app[CTX]
    current = await service.get_plan(ctx, _id(request, what=("预案", "plan")), user)
    body = await json_body(request, PLAN_FIELDS)
    if body.get("code") != current["code"]:
        raise ApiError(422, "invalid", "预案代码不能修改", "a plan's code cannot change", fields={"code": ("与原预案不同", "differs from the plan's")})
    plan, _ = await service.save_plan(ctx, body, user)
    return _json(plan)


async def activate_on_case(request: web.Request) -> web.Response:
    body = await json_body(request, ACTIVATE_FIELDS)
    out = await service.activate_on_case(
        request.app[CTX], _id(request, what=("案件", "case")), body["plan"], body.get("level"), current_user(request)
    )
    return _json(out, status=201)


async def activate_on_area(request: web.Request) -> web.Response:
    body = await json_body(request, ACTIVATE_FIELDS)
    out = await service.activate_on_area(
        request.app[CTX], request.match_info["code"], body["plan"], body.get("level"), current_user(request)
    )
    return _json(out, status=201)


async def list_activations(request: web.Request) -> web.Response:
    q = query_params(request, ACTIVATIONS_QUERY)
    ctx = request.app[CTX]
    codes = jurisdiction(request)
    if q.get("state", "open") == "open":
        return _json({"activations": await service.board_section(ctx, codes)})
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT * FROM plan_activations WHERE org_path && $1::text[] ORDER BY id DESC LIMIT 100", list(codes)
        )
        return _json({"activations": [await service.activation_json(ctx, conn, r) for r in rows]})


async def get_activation(request: web.Request) -> web.Response:
    return _json(await service.get_activation(request.app[CTX], _id(request), current_user(request)))


async def confirm(request: web.Request) -> web.Response:
    body = await json_body(request, LEVEL_FIELDS)
    return _json(await service.confirm(request.app[CTX], _id(request), current_user(request), body.get("level")))


async def dismiss(request: web.Request) -> web.Response:
    body = await json_body(request, REASON_FIELDS)
    return _json(await service.dismiss(request.app[CTX], _id(request), current_user(request), body.get("reason")))


async def raise_level(request: web.Request) -> web.Response:
    body = await json_body(request, RAISE_FIELDS)
    return _json(await service.raise_level(request.app[CTX], _id(request), body["level"], current_user(request)))


async def stand_down(request: web.Request) -> web.Response:
    body = await json_body(request, REASON_FIELDS)
    return _json(await service.stand_down(request.app[CTX], _id(request), current_user(request), body.get("reason")))


async def complete_step(request: web.Request) -> web.Response:
    return _json(
        await service.complete_step(request.app[CTX], _id(request), _id(request, "step"), current_user(request))
    )


async def my_notices(request: web.Request) -> web.Response:
    return _json({"notices": await notices.my_notices(request.app[CTX], current_user(request))})


async def notice_receipt(request: web.Request) -> web.Response:
    return _json(await notices.receipt(request.app[CTX], _id(request, what=("通知", "notice")), current_user(request)))


async def notice_ack(request: web.Request) -> web.Response:
    return _json(await notices.acknowledge(request.app[CTX], _id(request, what=("通知", "notice")), current_user(request)))


async def set_contact(request: web.Request) -> web.Response:
    user = current_user(request)
    raw = await json_body(request)
    checked = check_fields(raw, CONTACT_FIELDS)
    # A key left out stays as it is; a key given as null clears it.
    changes: dict[str, Any] = {k: checked.get(k) for k in notices.CONTACT_KEYS if k in raw}
    out = await notices.set_contact(request.app[CTX], user, _id(request, what=("用户", "user")), changes)
    return _json(out)


async def list_contacts(request: web.Request) -> web.Response:
    q = query_params(request, CONTACTS_QUERY)
    people, after = await notices.list_contacts(
        request.app[CTX], current_user(request), q=q.get("q"), after=q.get("after"), limit=q.get("limit", notices.CONTACTS_PAGE)
    )
    return _json({"contacts": people, "next_after": after})


async def _cap_actor(request: web.Request) -> tuple[Actor, str]:
    """An officer's bearer token (admin, duty officer, leader) or an API key (X-Api-Key), as the
    other machine endpoints take them; with the unit whose subtree it may warn."""
    ctx = request.app[CTX]
    token = bearer_token(request)
    if token:
        user = await authenticate(ctx, token)
        if user is None:
            raise ApiError(401, "unauthorized", "未登录或令牌无效", "no valid bearer token")
        if user.role not in CAP_ROLES:
            raise Forbidden("此操作需要管理员、值班员或领导角色", "this needs an admin, duty officer or leader")
        return Actor.of(user), user.org
    key = request.headers.get("X-Api-Key") or request.query.get("api_key")
    if key:
        async with ctx.pool.acquire() as conn:
            found = await find_api_key(conn, key)
        if found is not None:
            return Actor(None, f"apikey:{found.name}"), found.org
    raise ApiError(401, "unauthorized", "需要令牌或 API 密钥", "a bearer token or an X-Api-Key is required")


async def post_cap(request: web.Request) -> web.Response:
    ctx = request.app[CTX]
    actor, scope = await _cap_actor(request)
    if request.content_type not in CAP_TYPES:
        raise UnsupportedMedia("请求体应为 CAP 1.2 XML（application/cap+xml）", "the body must be CAP 1.2 XML (application/cap+xml)")
    limit = ctx.settings.plans.cap_max_kb * 1024
    document = await request.content.read(limit + 1)
    if len(document) > limit:
        raise TooLarge("CAP 文档过大", f"the CAP document is larger than {ctx.settings.plans.cap_max_kb} KB")
    out = await warnings.receive(ctx, document, actor, scope)
    return _json(out, status=202)


async def list_warnings(request: web.Request) -> web.Response:
    return _json({"warnings": await warnings.board_section(request.app[CTX], jurisdiction(request))})


_ACT: Final = {200: "the activation: groups, orders, meeting_id, notices, checklist", 403: "role", 404: "not in your jurisdiction", 409: "state does not allow it", 422: "invalid input"}

ROUTES: Final[list[ApiRoute]] = [
    ApiRoute("GET", "/api/v1/plans", list_plans, "Emergency plans (应急预案) that apply to your jurisdiction", TAG, responses={200: "{plans}"}),
    ApiRoute(
        "POST",
        "/api/v1/plans",
        create_plan,
        "Add an emergency plan (admins; same fields as config/plans/*.toml); an existing code gets its next version",
        TAG,
        body=PLAN_FIELDS,
        responses={201: "the new plan with id and version", 200: "the plan's next version", 403: "admins only", 422: "the plan is invalid (error.fields names the key)"},
    ),
    ApiRoute("GET", r"/api/v1/plans/{id:\d+}", get_plan, "A plan with its versions", TAG, responses={200: "the plan", 404: "unknown"}),
    ApiRoute(
        "PUT",
        r"/api/v1/plans/{id:\d+}",
        update_plan,
        "A new version of a plan (admins)",
        TAG,
        body=PLAN_FIELDS,
        responses={200: "the plan's new version", 403: "admins only", 404: "unknown", 422: "invalid plan"},
    ),
    ApiRoute(
        "POST",
        r"/api/v1/incidents/{id:\d+}/plan",
        activate_on_case,
        "Start a plan on a case (or confirm its proposal): groups, orders, consultation, notices, checklist in one transaction",
        TAG,
        body=ACTIVATE_FIELDS,
        responses={**_ACT, 201: "the activation"},
    ),
    ApiRoute(
        "POST",
        r"/api/v1/areas/{code:[0-9A-Za-z-]{1,64}}/plan",
        activate_on_area,
        "Start a plan on an area (opens a case for it)",
        TAG,
        body=ACTIVATE_FIELDS,
        responses={**_ACT, 201: "the activation"},
    ),
    ApiRoute("GET", "/api/v1/plan-activations", list_activations, "Plans proposed or running in your jurisdiction", TAG, query=ACTIVATIONS_QUERY, responses={200: "{activations}"}),
    ApiRoute("GET", r"/api/v1/plan-activations/{id:\d+}", get_activation, "One activation", TAG, responses={200: _ACT[200], 404: "unknown"}),
    ApiRoute("POST", r"/api/v1/plan-activations/{id:\d+}/confirm", confirm, "Confirm a proposed plan (the duty officer's one key)", TAG, body=LEVEL_FIELDS, responses=_ACT),
    ApiRoute("POST", r"/api/v1/plan-activations/{id:\d+}/dismiss", dismiss, "Decline a proposed plan", TAG, body=REASON_FIELDS, responses=_ACT),
    ApiRoute("POST", r"/api/v1/plan-activations/{id:\d+}/raise", raise_level, "Raise the response level: add what the higher levels add", TAG, body=RAISE_FIELDS, responses=_ACT),
    ApiRoute("POST", r"/api/v1/plan-activations/{id:\d+}/stand-down", stand_down, "Stand down: cancel open orders, end the consultation, close notices", TAG, body=REASON_FIELDS, responses=_ACT),
    ApiRoute("POST", r"/api/v1/plan-activations/{id:\d+}/steps/{step:\d+}/done", complete_step, "Tick a checklist step off", TAG, responses=_ACT),
    ApiRoute("GET", "/api/v1/plan-notices", my_notices, "Your open notices (plans and warnings)", TAG, responses={200: "{notices}"}),
    ApiRoute("POST", r"/api/v1/plan-notices/{id:\d+}/receipt", notice_receipt, "Your console showed the notice (delivered)", TAG, responses={200: "the notice", 404: "not yours"}),
    ApiRoute("POST", r"/api/v1/plan-notices/{id:\d+}/ack", notice_ack, "Acknowledge a notice (叫应)", TAG, responses={200: "the notice", 404: "not yours", 409: "closed"}),
    ApiRoute(
        "PUT",
        r"/api/v1/plan-contacts/{id:\d+}",
        set_contact,
        "A person's mobile (for SMS and calls) and deputy (for escalation); admins. A field left out stays as it is, null clears it",
        TAG,
        body=CONTACT_FIELDS,
        responses={200: "the contact, the number masked", 403: "admins only", 404: "unknown user", 422: "invalid"},
    ),
    ApiRoute(
        "GET",
        "/api/v1/plan-contacts",
        list_contacts,
        "The people of your jurisdiction with their mobile (masked) and deputy, by id; admins",
        TAG,
        query=CONTACTS_QUERY,
        responses={200: "{contacts, next_after}", 403: "admins only"},
    ),
    ApiRoute(
        "POST",
        "/api/v1/alerts/cap",
        post_cap,
        "A CAP 1.2 warning (application/cap+xml): covered grids asked to acknowledge, triggered plans started",
        "warnings",
        public=True,
        content_type="application/cap+xml",
        responses={
            202: "{id, event, units: [{code, name}], grids, notices, activations}",
            401: "no bearer token or API key",
            403: "role",
            413: "too large",
            415: "not XML",
            422: "not a CAP alert we can take (error.fields names the element)",
        },
    ),
    ApiRoute("GET", "/api/v1/warnings", list_warnings, "Active warnings with their area and who has acknowledged", "warnings", responses={200: "{warnings}"}),
]


async def _lifetime(app: web.Application) -> AsyncIterator[None]:
    """File plans into the database, then the proposal, notice and feed loops."""
    ctx = app[CTX]
    files: tuple[Plan, ...] = ctx[FILE_PLANS]
    await service.sync_file_plans(ctx, files)
    tasks = [
        start_task(ctx, _propose_loop(ctx), "plan-proposals"),
        start_task(ctx, notices.run_notices(ctx), "plan-notices"),
    ]
    if ctx.settings.plans.cap_feed_url:
        tasks.append(start_task(ctx, warnings.poll_feed(ctx), "cap-feed"))
    yield
    await stop_tasks(tasks)


async def _propose_loop(ctx: Context) -> None:
    await every(ctx, lambda: ctx.settings.plans.propose_interval, lambda: service.propose_due(ctx), "plan_proposals_failed", logger=log)


def setup(app: web.Application) -> None:
    """Register emergency plans on ``app``; a bad plan file stops here (PlanError names the key)."""
    ctx = app[CTX]
    ctx[FILE_PLANS] = tuple(load_plans(ctx.settings.paths.plans, ctx.orgs, ctx.taxonomy))
    ctx[NOTICES_WAKE] = asyncio.Event()
    add_routes(app, ROUTES)
    if CASE_EXTRAS not in ctx:
        ctx[CASE_EXTRAS] = {}
    ctx[CASE_EXTRAS]["plan"] = service.case_plan
    ctx.board_sections["plans"] = service.board_section
    ctx.board_sections["warnings"] = warnings.board_section
    register_section(ctx, "plans", service.stats_section)
    app.cleanup_ctx.append(_lifetime)
