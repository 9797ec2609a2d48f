"""Open311 GeoReport v2 (https://wiki.open311.org/GeoReport_v2) at ``/open311/v2/``, so that
existing Open311 clients and citizen apps file into the same closed loop.

* ``GET services.{json,xml}``, ``GET services/{code}.{json,xml}``: the services are the
  categories of the two wings of the taxonomy (案事件 incidents, 隐患点 hazards); population
  information (the heart) is collected by grid workers and is not offered to the public. A
  category with sub-categories has ``metadata=true`` and one ``singlevaluelist`` attribute,
  ``subcategory``.
* ``POST requests.{json,xml}`` (``application/x-www-form-urlencoded`` per the spec, multipart
  accepted): ``api_key`` required (403 without a valid one). An optional ``Idempotency-Key``
  header makes retries safe, as on ``POST /api/v1/reports``. Answer 201.
* ``GET requests.{json,xml}`` with the spec's filters (``service_request_id`` list, which overrides
  the others, ``service_code`` list, ``start_date``, ``end_date``, ``status`` list), and
  ``GET requests/{id}.{json,xml}``: only requests filed through Open311, without any personal data.

Jurisdiction: ``jurisdiction_id`` is an organisation unit code. For a write it defaults to the
API key's unit and must lie within it; the point must lie in a grid within it (or in no grid at
all); the case is owned by the grid's township as any other. A read is limited to
``jurisdiction_id``, else to the API key's unit when a key is given, else to the whole tree.
Reads are public (no key) as the spec has them unless ``[reports] open311_public = false``.

Status: ``closed`` for closed, evaluated, rejected and merged cases, ``open`` for every other
step of the loop. Errors are the spec's ``[{"code", "description"}]`` or ``<errors>``, with the
HTTP status as code (404 unknown resources, 403 api_key, 400 anything else), one entry per bad field.
"""

from __future__ import annotations

import dataclasses
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Final

import asyncpg
import structlog
from aiohttp import web
from multidict import MultiDict, MultiDictProxy

from dispatchd.channels.reports import service as reports
from dispatchd.channels.reports.api import idempotency_key
from dispatchd.clock import LOCAL_TZ
from dispatchd.context import Context
from dispatchd.domain.incident import OPEN_STATES, STATE_NAMES, State
from dispatchd.domain.taxonomy import Category
from dispatchd.errors import DomainError
from dispatchd.incidents import service as cases
from dispatchd.incidents.query import CREATED_NEWEST_FIRST, CaseQuery, find
from dispatchd.store.apikeys import ApiKey, find_api_key
from dispatchd.store.changes import trails
from dispatchd.validate import Field
from dispatchd.web.appkeys import CTX
from dispatchd.web.errors import ApiError, from_domain, request_language
from dispatchd.web.routing import ApiRoute, add_routes

log = structlog.get_logger("dispatchd.open311")

TAG: Final = "open311"
CHANNEL: Final = "open311"
BASE: Final = "/open311/v2"
WINGS: Final = ("incident", "hazard")
SUBCATEGORY: Final = "subcategory"
_FORMAT: Final = "{fmt:(?:json|xml)}"
_ATTRIBUTE: Final = re.compile(r"^attribute\[([^\]\[]{1,64})\](\[\])?$")
_URL: Final = re.compile(r"^https?://[^\s]{1,1000}$")
# XML element names of list items (the Spark convention maps JSON arrays to these).
_ITEM: Final = {
    "services": "service",
    "service_requests": "request",
    "attributes": "attribute",
    "values": "value",
    "errors": "error",
    "endpoints": "endpoint",
    "formats": "format",
}


# -- formats ----------------------------------------------------------------------------------------


def _xml_value(parent: ET.Element, tag: str, value: Any) -> None:
    element = ET.SubElement(parent, tag)
    _fill(element, tag, value)


def _fill(element: ET.Element, tag: str, value: Any) -> None:
    if isinstance(value, Mapping):
        for key, item in value.items():
            _xml_value(element, key, item)
    elif isinstance(value, list | tuple):
        child = _ITEM.get(tag, "item")
        for item in value:
            _xml_value(element, child, item)
    elif isinstance(value, bool):
        element.text = "true" if value else "false"
    elif value is not None:
        element.text = str(value)


def to_xml(root: str, value: Any) -> bytes:
    """The XML form of an answer: ``root`` holding ``value`` (lists as repeated items)."""
    element = ET.Element(root)
    _fill(element, root, value)
    body: bytes = ET.tostring(element, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="utf-8"?>\n' + body


def render(
    fmt: str, root: str, value: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    if fmt == "xml":
        return web.Response(
            body=to_xml(root, value), status=status, content_type="text/xml", charset="utf-8", headers=headers
        )
    return web.Response(
        text=json.dumps(value, ensure_ascii=False, default=str),
        status=status,
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


def errors_of(exc: ApiError, lang: str) -> list[dict[str, Any]]:
    """The spec's error list: one entry per bad field, else one for the error."""
    en = lang == "en"
    if exc.fields:
        return [
            {"code": exc.status, "description": f"{name}: {msgs[1] if en else msgs[0]}"}
            for name, msgs in exc.fields.items()
        ]
    return [{"code": exc.status, "description": exc.message_en if en else exc.message_zh}]


Handler = Callable[[web.Request, str], Awaitable[web.Response]]


def _route_handler(handler: Handler) -> Callable[[web.Request], Awaitable[web.Response]]:
    """Run an Open311 handler; refusals come back in the spec's error format."""

    async def wrapped(request: web.Request) -> web.Response:
        fmt = request.match_info.get("fmt", "json")
        try:
            try:
                return await handler(request, fmt)
            except DomainError as refusal:
                raise from_domain(refusal) from None
        except ApiError as exc:
            if exc.status >= 500:
                raise
            request.app[CTX].metrics.rejected_input.labels(CHANNEL).inc()
            return render(fmt, "errors", errors_of(exc, request_language(request)), status=exc.status)

    wrapped.__name__ = f"open311_{handler.__name__}"
    wrapped.__qualname__ = wrapped.__name__
    return wrapped


def _error(status: int, zh: str, en: str, field: str | None = None) -> ApiError:
    return ApiError(status, "open311", zh, en, fields={field: (zh, en)} if field else None)


# -- service discovery ------------------------------------------------------------------------------


async def get_discovery(request: web.Request, fmt: str) -> web.Response:
    """Service discovery (https://wiki.open311.org/Service_Discovery): where the GeoReport v2
    endpoint is and which formats it speaks."""
    base = f"{request.scheme}://{request.host}{BASE}"
    changeset = "2026-05-01T00:00:00+08:00"
    body = {
        "changeset": changeset,
        "contact": "社会治理综合指挥中心 / command centre duty desk",
        "key_service": "dispatchd apikey add --name NAME --org CODE",
        "endpoints": [
            {
                "specification": "http://wiki.open311.org/GeoReport_v2",
                "url": base,
                "changeset": changeset,
                "type": "production",
                "formats": ["text/xml", "application/json"],
            }
        ],
    }
    return render(fmt, "discovery", body)


# -- services -------------------------------------------------------------------------------------


def offered(ctx: Context) -> list[Category]:
    """The categories offered as Open311 services, in taxonomy order."""
    return [c for c in ctx.taxonomy.categories.values() if c.wing in WINGS]


def _name(category: Category, lang: str) -> str:
    return category.name_en if lang == "en" else category.name


def service_json(ctx: Context, category: Category, lang: str) -> dict[str, Any]:
    taxonomy = ctx.taxonomy
    parent = taxonomy.categories.get(category.parent) if category.parent else None
    if parent is not None:
        group = _name(parent, lang)
    else:
        wing = {"incident": ("案事件", "Incidents"), "hazard": ("隐患点", "Hazards")}[category.wing]
        group = wing[1] if lang == "en" else wing[0]
    description = f"{group} / {_name(category, lang)}"
    keywords = ", ".join(dict.fromkeys([category.name, category.name_en, *category.code.split(".")]))
    return {
        "service_code": category.code,
        "service_name": _name(category, lang),
        "description": description,
        "metadata": bool(category.children),
        "type": "realtime",
        "keywords": keywords,
        "group": group,
    }


def definition_json(ctx: Context, category: Category, lang: str) -> dict[str, Any]:
    taxonomy = ctx.taxonomy
    attributes: list[dict[str, Any]] = []
    if category.children:
        attributes.append(
            {
                "variable": True,
                "code": SUBCATEGORY,
                "datatype": "singlevaluelist",
                "required": False,
                "datatype_description": "子类别" if lang != "en" else "sub-category",
                "order": 1,
                "description": "更具体的事件类别（可选）"
                if lang != "en"
                else "a more specific category (optional)",
                "values": [
                    {"key": code, "name": _name(taxonomy.categories[code], lang)}
                    for code in category.children
                ],
            }
        )
    return {"service_code": category.code, "attributes": attributes}


def _service(ctx: Context, code: str) -> Category:
    category = ctx.taxonomy.categories.get(code)
    if category is None or category.wing not in WINGS:
        raise _error(404, f"服务 {code} 不存在", f"service_code {code} was not found", "service_code")
    return category


async def get_services(request: web.Request, fmt: str) -> web.Response:
    await _read_access(request)
    _jurisdiction(request, request.query.get("jurisdiction_id"), None)
    lang = request_language(request)
    return render(fmt, "services", [service_json(request.app[CTX], c, lang) for c in offered(request.app[CTX])])


async def get_service(request: web.Request, fmt: str) -> web.Response:
    await _read_access(request)
    _jurisdiction(request, request.query.get("jurisdiction_id"), None)
    category = _service(request.app[CTX], request.match_info["code"])
    return render(
        fmt, "service_definition", definition_json(request.app[CTX], category, request_language(request))
    )


# -- access and jurisdiction ----------------------------------------------------------------------


async def _api_key(request: web.Request, form: Mapping[str, str] | None = None) -> ApiKey | None:
    value = (form or {}).get("api_key") or request.query.get("api_key")
    if not value:
        return None
    async with request.app[CTX].pool.acquire() as conn:
        key = await find_api_key(conn, value)
    if key is None:
        raise _error(403, "api_key 无效", "invalid api_key", "api_key")
    return key


async def _read_access(request: web.Request) -> ApiKey | None:
    key = await _api_key(request)
    if key is None and not request.app[CTX].settings.reports.open311_public:
        raise _error(403, "需要 api_key", "api_key is required", "api_key")
    return key


def _jurisdiction(request: web.Request, given: str | None, key: ApiKey | None) -> str | None:
    """The unit a call is limited to: ``jurisdiction_id`` (within the key's unit), else the key's."""
    tree = request.app[CTX].orgs
    if given:
        if given not in tree:
            raise _error(
                404,
                f"jurisdiction_id {given} 不存在",
                f"jurisdiction_id {given} was not found",
                "jurisdiction_id",
            )
        if key is not None and not tree.is_within(given, key.org):
            raise _error(
                403,
                f"jurisdiction_id {given} 不在此 api_key 的管辖范围内",
                f"jurisdiction_id {given} lies outside this api_key's jurisdiction",
                "jurisdiction_id",
            )
        return given
    return key.org if key is not None else None


# -- POST requests --------------------------------------------------------------------------------

_LIMITS: Final = {
    "address_string": 500,
    "address_id": 100,
    "email": 254,
    "device_id": 100,
    "account_id": 100,
    "first_name": 100,
    "last_name": 100,
    "phone": 32,
    "description": 4000,
    "media_url": 1000,
    "jurisdiction_id": 64,
    "service_code": 100,
}

POST_FIELDS: Final = (
    Field("api_key", required=True, description="key from `dispatchd apikey add`"),
    Field("jurisdiction_id", description="organisation unit code; default: the api_key's unit"),
    Field("service_code", required=True, description="from services.json"),
    Field("lat", "number", description="WGS-84; lat and long, or address_string, or address_id"),
    Field("long", "number", description="WGS-84"),
    Field("address_string", max_length=500),
    Field("address_id", max_length=100),
    Field("email", max_length=254),
    Field("device_id", max_length=100),
    Field("account_id", max_length=100),
    Field("first_name", max_length=100),
    Field("last_name", max_length=100),
    Field("phone", max_length=32),
    Field("description", max_length=4000),
    Field("media_url", max_length=1000),
    Field("attribute[subcategory]", description="a sub-category code from services/{code}.json"),
)


def _float(
    form: Mapping[str, str], name: str, lo: float, hi: float, errors: dict[str, tuple[str, str]]
) -> float | None:
    raw = (form.get(name) or "").strip()
    if not raw:
        return None
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not (lo <= value <= hi):
        errors[name] = (f"应为 {lo:g}–{hi:g} 之间的数字", f"must be a number between {lo:g} and {hi:g}")
        return None
    return value


def _owner_for(ctx: Context, unit: str) -> str:
    """Who owns a request without a grid: the township of ``unit``, or ``unit`` above township level."""
    tree = ctx.orgs
    if tree.level_of(unit) in ("township", "community", "grid"):
        return tree.ancestor_at(unit, "township") or unit
    return unit


async def _form(request: web.Request) -> MultiDict[str]:
    merged: MultiDict[str] = MultiDict(request.query)
    if request.body_exists:
        try:
            posted: MultiDictProxy[Any] = await request.post()
        except (ValueError, web.HTTPRequestEntityTooLarge):
            raise _error(
                400, "请求体应为表单（application/x-www-form-urlencoded）", "the body must be a form"
            ) from None
        for name, value in posted.items():
            if isinstance(value, str):
                merged[name] = value
    return merged


async def post_request(request: web.Request, fmt: str) -> web.Response:
    ctx = request.app[CTX]
    form = await _form(request)
    key = await _api_key(request, form)
    if key is None:
        raise _error(403, "缺少 api_key", "api_key was not provided", "api_key")
    lang = request_language(request)
    errors: dict[str, tuple[str, str]] = {}
    for name, most in _LIMITS.items():
        if len(form.get(name) or "") > most:
            errors[name] = (f"长度不能超过 {most}", f"must have at most {most} characters")
    if errors:
        raise ApiError(400, "open311", "字段有误", "invalid fields", fields=errors)
    jurisdiction = _jurisdiction(request, (form.get("jurisdiction_id") or "").strip() or None, key)
    assert jurisdiction is not None
    code = (form.get("service_code") or "").strip()
    if not code:
        raise _error(400, "缺少 service_code", "service_code was not provided", "service_code")
    category = _service(ctx, code)
    attributes = {m.group(1): value for name, value in form.items() if (m := _ATTRIBUTE.match(name))}
    sub = (attributes.get(SUBCATEGORY) or "").strip()
    if sub:
        if sub not in category.children:
            errors[f"attribute[{SUBCATEGORY}]"] = (
                f"不是 {code} 的子类别",
                f"is not a sub-category of {code}",
            )
        else:
            category = ctx.taxonomy.categories[sub]
    lat = _float(form, "lat", -90, 90, errors)
    lon = _float(form, "long", -180, 180, errors)
    if (lat is None) != (lon is None) and "lat" not in errors and "long" not in errors:
        errors["lat"] = ("lat 与 long 须同时提供", "lat and long must be sent together")
    address = (form.get("address_string") or "").strip() or None
    address_id = (form.get("address_id") or "").strip() or None
    if lat is None and address is None and address_id is None and not errors:
        errors["lat"] = (
            "须提供位置：lat 与 long，或 address_string，或 address_id",
            "a location is required: lat and long, or address_string, or address_id",
        )
    media_url = (form.get("media_url") or "").strip() or None
    if media_url is not None and not _URL.match(media_url):
        errors["media_url"] = ("应为 http(s) 地址", "must be an http(s) URL")
    email = (form.get("email") or "").strip() or None
    if email is not None and "@" not in email:
        errors["email"] = ("电子邮件地址无效", "not an email address")
    grid = cases.app_locate(ctx, lat, lon)
    if grid is not None and not ctx.orgs.is_within(grid, jurisdiction):
        errors["lat"] = (
            f"位置不在 {jurisdiction} 的管辖范围内",
            f"the location lies outside jurisdiction {jurisdiction}",
        )
    if errors:
        raise ApiError(400, "open311", "字段有误", "invalid fields", fields=errors)

    description = (form.get("description") or "").strip() or f"{category.name}（Open311）"
    contact = {
        name: (form.get(name) or "").strip()
        for name in ("email", "first_name", "last_name", "account_id", "device_id")
        if (form.get(name) or "").strip()
    }
    extra = {
        "open311": {
            "api_key": key.name,
            "api_key_id": key.id,
            "jurisdiction_id": jurisdiction,
            **contact,
            **({"address_id": address_id} if address_id else {}),
            **({"attributes": attributes} if attributes else {}),
        }
    }
    if address is None and address_id is not None:
        address = f"address_id {address_id}"
    account_id = contact.get("account_id")
    idem = idempotency_key(request, required=False)
    canonical = {name: value for name, value in form.items() if name != "api_key"}

    async def work(conn: asyncpg.Connection) -> tuple[int, Any, int | None]:
        case = await cases.create_incident(
            ctx,
            category=category.code,
            description=description,
            channel=CHANNEL,
            lat=lat,
            lon=lon,
            address=address,
            caller=(form.get("phone") or "").strip() or None,
            attachments=[media_url] if media_url else (),
            owner_unit=None if grid is not None else _owner_for(ctx, jurisdiction),
            extra=extra,
            conn=conn,
        )
        notice = _notice(ctx, case)
        body = [{"service_request_id": case["number"], "service_notice": notice, "account_id": account_id}]
        return 201, body, case["id"]

    outcome = await reports.once(
        ctx, scope=f"apikey:{key.id}", key=idem, fingerprint=reports.fingerprint(canonical), work=work
    )
    ctx.metrics.reports.labels("open311").inc()
    body = json.loads(outcome.body)
    number = body[0]["service_request_id"]
    log.info("open311_request", incident_id=outcome.incident_id, api_key=key.name, replayed=outcome.replayed)
    # The notice is kept in both languages; the answer speaks the caller's.
    for item in body:
        item["service_notice"] = item["service_notice"]["en" if lang == "en" else "zh-CN"]
    return render(
        fmt,
        "service_requests",
        body,
        status=200 if outcome.replayed else 201,
        headers={"Location": f"{BASE}/requests/{number}.{fmt}"},
    )


def _notice(ctx: Context, case: Mapping[str, Any]) -> dict[str, str]:
    """What happens next: who received it and by when it is to be accepted."""
    owner = case["owner"] or {"name": case["owner_unit"], "name_en": case["owner_unit"]}
    limit = ctx.taxonomy.limit(case["category"], case["priority"], "accept")
    hours = limit.total_seconds() / 3600
    return {
        "zh-CN": f"已转至{owner['name']}，案件编号 {case['number']}，将在 {hours:g} 小时内受理",
        "en": f"routed to {owner['name_en']} as case {case['number']}; it will be accepted within {hours:g} h",
    }


# -- GET requests ---------------------------------------------------------------------------------

GET_FIELDS: Final = (
    Field("service_request_id", description="comma-separated; overrides the other filters"),
    Field("service_code", description="comma-separated (a code includes its sub-categories)"),
    Field("start_date", description="ISO 8601 with zone; default: end_date minus 90 days"),
    Field("end_date", description="ISO 8601 with zone; default: now"),
    Field("status", description="open, closed (comma-separated)"),
    Field("jurisdiction_id", description="organisation unit code"),
    Field("api_key", description="optional for reads; limits them to the key's unit"),
)


def _csv(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _when(value: str | None, name: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise _error(
            400, f"{name} 应为 ISO 8601 时间", f"{name} must be an ISO 8601 date-time", name
        ) from None
    if moment.tzinfo is None:
        raise _error(400, f"{name} 须带时区", f"{name} must carry a time zone (Z or ±HH:MM)", name)
    return moment


def _iso(value: datetime | None) -> str | None:
    return value.astimezone(LOCAL_TZ).isoformat(timespec="seconds") if value is not None else None


def _status_notes(
    row: Mapping[str, Any], last: Mapping[str, Any] | None, number_of: Mapping[int, str], lang: str
) -> str:
    state = State(row["state"])
    en = lang == "en"
    if state is State.rejected and last is not None:
        reason = (last["data"] or {}).get("reason") or last["note"] or ""
        return f"rejected: {reason}" if en else f"不予受理：{reason}"
    if state is State.merged and row["merged_into"] is not None:
        other = number_of.get(row["merged_into"], str(row["merged_into"]))
        return f"duplicate of {other}" if en else f"与 {other} 为同一事件，已合并"
    names = STATE_NAMES[state]
    return names.en if en else names.zh


def request_json(
    ctx: Context,
    row: Mapping[str, Any],
    last: Mapping[str, Any] | None,
    number_of: Mapping[int, str],
    lang: str,
) -> dict[str, Any]:
    """A case as an Open311 service request: what the public may know, nothing personal."""
    tree, taxonomy = ctx.orgs, ctx.taxonomy
    category = taxonomy.categories.get(row["category"])
    state = State(row["state"])
    closed = state not in OPEN_STATES
    if row["lead_department"] and row["lead_department"] in tree.departments:
        dept = tree.departments[row["lead_department"]]
        agency = dept.name_en if lang == "en" else dept.name
    else:
        owner = tree.units.get(row["owner_unit"])
        agency = (owner.name_en if lang == "en" else owner.name) if owner else row["owner_unit"]
    expected = None
    if not closed and category is not None:
        expected = row["created_at"] + sum(
            taxonomy.step_limits(row["category"], row["priority"]).values(), timedelta()
        )
    address = row["address"]
    if address is None and row["grid"]:
        parts = [
            tree.units[c]
            for c in (row["grid"], row["community"], row["township"], row["county"])
            if c in tree
        ]
        address = ", ".join(u.name_en if lang == "en" else u.name for u in parts)
    media = next((a for a in row["attachments"] if _URL.match(a)), None)
    updated = (
        row["closed_at"]
        if state in (State.closed, State.evaluated) and row["closed_at"]
        else row["updated_at"]
    )
    return {
        "service_request_id": row["number"],
        "status": "closed" if closed else "open",
        "status_notes": _status_notes(row, last, number_of, lang),
        "service_name": (category.name_en if lang == "en" else category.name)
        if category
        else row["category"],
        "service_code": row["category"],
        "description": row["description"],
        "agency_responsible": agency,
        "service_notice": None,
        "requested_datetime": _iso(row["created_at"]),
        "updated_datetime": _iso(updated),
        "expected_datetime": _iso(expected),
        "address": address,
        "address_id": None,
        "zipcode": None,
        "lat": row["lat"],
        "long": row["lon"],
        "media_url": media,
    }


async def _requests_json(
    ctx: Context, conn: asyncpg.Connection, rows: Sequence[asyncpg.Record], lang: str
) -> list[dict[str, Any]]:
    ids = [r["id"] for r in rows]
    # The last rejection of each (its reason is the status note).
    last = {int(r["entity_id"]): r for r in await trails(conn, "incident", ids) if r["action"] == "reject"}
    targets = [r["merged_into"] for r in rows if r["merged_into"] is not None]
    number_of: dict[int, str] = {}
    if targets:
        number_of = {
            r["id"]: r["number"]
            for r in await conn.fetch(
                "SELECT id, number FROM incidents WHERE id = ANY($1::bigint[])", targets
            )
        }
    return [request_json(ctx, r, last.get(r["id"]), number_of, lang) for r in rows]


def _scope(jurisdiction: str | None) -> CaseQuery:
    """Requests filed through Open311, within ``jurisdiction`` when one is given."""
    return CaseQuery(first_channel=CHANNEL, unit=jurisdiction, limit=None)


async def get_requests(request: web.Request, fmt: str) -> web.Response:
    ctx = request.app[CTX]
    settings = ctx.settings.reports
    key = await _read_access(request)
    jurisdiction = _jurisdiction(request, request.query.get("jurisdiction_id"), key)
    query = _scope(jurisdiction)
    ids = _csv(request.query.get("service_request_id"))
    if ids:
        # The spec: a list of ids overrides every other argument.
        query = dataclasses.replace(query, numbers=tuple(ids[: settings.open311_max_requests]))
    else:
        statuses = _csv(request.query.get("status"))
        bad = [s for s in statuses if s not in ("open", "closed")]
        if bad:
            raise _error(400, "status 应为 open 或 closed", "status must be open or closed", "status")
        end = _when(request.query.get("end_date"), "end_date")
        start = _when(request.query.get("start_date"), "start_date")
        days = timedelta(days=settings.open311_default_days)
        if end is None:
            end = start + days if start is not None else ctx.clock.now()
        if start is None:
            start = end - days
        if start > end:
            raise _error(
                400, "start_date 须早于 end_date", "start_date must be before end_date", "start_date"
            )
        query = dataclasses.replace(
            query,
            categories=tuple(_csv(request.query.get("service_code"))),
            open=None if set(statuses) in (set(), {"open", "closed"}) else statuses == ["open"],
            created_from=start,
            created_to=end + timedelta(microseconds=1),  # the spec's end_date is inclusive
        )
    query = dataclasses.replace(query, order=CREATED_NEWEST_FIRST, limit=settings.open311_max_requests)
    async with ctx.pool.acquire() as conn:
        rows, _ = await find(conn, query)
        body = await _requests_json(ctx, conn, rows, request_language(request))
    return render(fmt, "service_requests", body)


async def get_request(request: web.Request, fmt: str) -> web.Response:
    ctx = request.app[CTX]
    key = await _read_access(request)
    jurisdiction = _jurisdiction(request, request.query.get("jurisdiction_id"), key)
    wanted = request.match_info["id"]
    query = dataclasses.replace(_scope(jurisdiction), numbers=(wanted,))
    async with ctx.pool.acquire() as conn:
        rows, _ = await find(conn, query)
        row = rows[0] if rows else None
        if row is None:
            raise _error(
                404,
                f"服务请求 {wanted} 不存在",
                f"service_request_id {wanted} was not found",
                "service_request_id",
            )
        body = await _requests_json(ctx, conn, [row], request_language(request))
    return render(fmt, "service_requests", body)


_RESPONSES: Final = {200: "JSON array or XML document", 400: "error list", 403: "api_key", 404: "error list"}

ROUTES: Final[list[ApiRoute]] = [
    ApiRoute(
        "GET",
        f"/open311/discovery.{_FORMAT}",
        _route_handler(get_discovery),
        "Open311 service discovery: the GeoReport v2 endpoint and its formats",
        TAG,
        public=True,
        responses={200: "discovery document"},
    ),
    ApiRoute(
        "GET",
        f"{BASE}/services.{_FORMAT}",
        _route_handler(get_services),
        "Open311: services (the incident and hazard categories of the taxonomy)",
        TAG,
        public=True,
        query=(Field("jurisdiction_id"), Field("api_key")),
        responses=_RESPONSES,
    ),
    ApiRoute(
        "GET",
        f"{BASE}/services/{{code:[a-z0-9_.]+}}.{_FORMAT}",
        _route_handler(get_service),
        "Open311: a service definition (attribute subcategory)",
        TAG,
        public=True,
        query=(Field("jurisdiction_id"), Field("api_key")),
        responses=_RESPONSES,
    ),
    ApiRoute(
        "POST",
        f"{BASE}/requests.{_FORMAT}",
        _route_handler(post_request),
        "Open311: file a service request (api_key required; optional Idempotency-Key header)",
        TAG,
        public=True,
        body=POST_FIELDS,
        content_type="application/x-www-form-urlencoded",
        headers=(
            Field(
                "Idempotency-Key",
                max_length=200,
                description="optional: one unique value per request (printable ASCII), sent again with a retry",
            ),
        ),
        responses={
            201: "[{service_request_id, service_notice, account_id}]",
            200: "a retry (same Idempotency-Key)",
            400: "error list",
            403: "api_key",
            404: "unknown service_code or jurisdiction_id",
        },
    ),
    ApiRoute(
        "GET",
        f"{BASE}/requests.{_FORMAT}",
        _route_handler(get_requests),
        "Open311: service requests filed through Open311 (newest first, 90 days and 1000 at most by default)",
        TAG,
        public=True,
        query=GET_FIELDS,
        responses=_RESPONSES,
    ),
    ApiRoute(
        "GET",
        f"{BASE}/requests/{{id:[A-Za-z0-9_-]+}}.{_FORMAT}",
        _route_handler(get_request),
        "Open311: one service request by its service_request_id (the case number)",
        TAG,
        public=True,
        query=(Field("jurisdiction_id"), Field("api_key")),
        responses=_RESPONSES,
    ),
]


def setup(app: web.Application) -> None:
    add_routes(app, ROUTES)
