"""HTTP API of grid reports (平安通) under ``/api/v1``: submit a report, my reports, verification
tasks and their answers, and the authenticated photo route."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import structlog
from aiohttp import BodyPartReader, MultipartReader, web
from aiohttp.http_exceptions import HttpProcessingError

from dispatchd.channels.reports import patrols, service
from dispatchd.channels.reports import photos as formats
from dispatchd.channels.reports.demo import run_demo
from dispatchd.channels.reports.media import SHA256, MediaStore, StagedPhoto, Staging, UploadAllowance
from dispatchd.channels.reports.slots import MEDIA
from dispatchd.context import Context
from dispatchd.domain.incident import Action, State
from dispatchd.errors import DomainError, TooLarge, invalid, not_found
from dispatchd.incidents import store as case_store
from dispatchd.incidents.stats import register_section
from dispatchd.tasks import start_task, stop_tasks
from dispatchd.validate import Field, check_fields, check_storable, may_hold_unstorable
from dispatchd.web.appkeys import CTX
from dispatchd.web.auth import current_user, require_role
from dispatchd.web.errors import ApiError, bad_request
from dispatchd.web.routing import ApiRoute, add_routes
from dispatchd.web.validate import json_body, parse_json, query_params

TAG: Final = "reports"
log = structlog.get_logger("dispatchd.reports")


# -- reading a submission: a JSON body, or multipart/form-data with one JSON part and photo parts,
# streamed part by part (photos go straight to temporary files) -----------------------------------

PHOTO_PART: Final = "photo"
_JSON_PART_MAX: Final = 256 * 1024


@dataclass
class Submission:
    data: dict[str, Any]
    parsed: Any  # what ``check`` returned for ``data``


def _bad_json(part: str) -> ApiError:
    return ApiError(
        400,
        "invalid_json",
        f"“{part}”部分应为 JSON 对象",
        f"the '{part}' part must be a JSON object",
        fields={part: ("应为 JSON 对象", "must be a JSON object")},
    )


def _parse_object(raw: bytes, part: str) -> dict[str, Any]:
    data = parse_json(raw, f"“{part}”部分", f"the '{part}' part") if raw.strip() else None
    if not isinstance(data, dict):
        raise _bad_json(part)
    if may_hold_unstorable(raw):
        check_storable(data)
    return data


def _malformed_multipart() -> ApiError:
    return ApiError(400, "invalid_multipart", "multipart 请求体无效", "malformed multipart body")


async def read_submission(
    request: web.Request,
    store: MediaStore,
    stage: Staging,
    *,
    json_part: str,
    check: Callable[[dict[str, Any]], Any],
    max_photos: int,
    photo_limit_bytes: int,
    admit: Callable[[], None] = lambda: None,
    received: Callable[[StagedPhoto], None] = lambda _staged: None,
) -> Submission:
    """The JSON object (from the body or the ``json_part`` part) checked by ``check`` as soon as it
    arrives, and the photos staged in ``stage`` (``admit`` is asked before each one and may refuse
    it, ``received`` told after). 400 for a malformed body, 413 for a photo too large or too many
    photos, 415 for a photo of another type, 422 for bad fields."""
    content_type = request.content_type
    if content_type == "multipart/form-data":
        return await _read_multipart(
            request, store, stage, json_part, check, max_photos, photo_limit_bytes, admit, received
        )
    if content_type in ("application/json", "application/octet-stream") or not request.body_exists:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, "payload_too_large", "请求体过大", "request body too large") from None
        data = _parse_object(raw, "body")
        return Submission(data, check(data))
    raise ApiError(
        415,
        "unsupported_media_type",
        "请求体应为 application/json 或 multipart/form-data",
        "the body must be application/json or multipart/form-data",
    )


async def _read_multipart(
    request: web.Request,
    store: MediaStore,
    stage: Staging,
    json_part: str,
    check: Callable[[dict[str, Any]], Any],
    max_photos: int,
    photo_limit_bytes: int,
    admit: Callable[[], None],
    received: Callable[[StagedPhoto], None],
) -> Submission:
    try:
        return await _read_parts(
            request, store, stage, json_part, check, max_photos, photo_limit_bytes, admit, received
        )
    except (ValueError, AssertionError, HttpProcessingError):
        # No boundary, a header line beyond aiohttp's limit, a part that does not parse.
        raise _malformed_multipart() from None


async def _read_parts(
    request: web.Request,
    store: MediaStore,
    stage: Staging,
    json_part: str,
    check: Callable[[dict[str, Any]], Any],
    max_photos: int,
    photo_limit_bytes: int,
    admit: Callable[[], None],
    received: Callable[[StagedPhoto], None],
) -> Submission:
    reader = await request.multipart()
    data: dict[str, Any] | None = None
    parsed: Any = None
    count = 0
    while True:
        part = await reader.next()
        if part is None:
            break
        if isinstance(part, MultipartReader) or not isinstance(part, BodyPartReader):
            raise ApiError(
                400, "invalid_multipart", "不支持嵌套的 multipart", "nested multipart is not supported"
            )
        name = part.name or ""
        if name == json_part:
            if data is not None:
                raise ApiError(
                    400, "duplicate_part", f"“{json_part}”部分重复", f"the '{json_part}' part appears twice"
                )
            raw = bytearray()
            while chunk := await part.read_chunk(64 * 1024):
                raw += chunk
                if len(raw) > _JSON_PART_MAX:
                    raise ApiError(
                        413,
                        "payload_too_large",
                        f"“{json_part}”部分超过 {_JSON_PART_MAX // 1024} KB",
                        f"the '{json_part}' part is larger than {_JSON_PART_MAX // 1024} KB",
                    )
            data = _parse_object(bytes(raw), json_part)
            parsed = check(data)
        elif name == PHOTO_PART:
            count += 1
            if count > max_photos:
                raise TooLarge(
                    f"照片过多：最多 {max_photos} 张",
                    f"too many photos: at most {max_photos}",
                    code="too_many_photos",
                    fields={PHOTO_PART: (f"最多 {max_photos} 张照片", f"at most {max_photos} photos")},
                )
            admit()
            received(await store.receive(stage, part, index=count, limit_bytes=photo_limit_bytes))
        else:
            raise ApiError(
                400,
                "unknown_part",
                f"未知的部分“{name}”（应为 {json_part} 或 {PHOTO_PART}）",
                f"unknown part '{name}' (expected '{json_part}' or '{PHOTO_PART}')",
            )
    if data is None:
        raise ApiError(
            400,
            "missing_part",
            f"缺少“{json_part}”部分（JSON）",
            f"the multipart body needs a '{json_part}' part (JSON)",
            fields={json_part: ("必填", "is required")},
        )
    return Submission(data, parsed)

_KEY_MAX: Final = 200
IDEMPOTENCY_KEY: Final = Field(
    "Idempotency-Key",
    required=True,
    max_length=_KEY_MAX,
    description="one unique value per report (1–200 printable ASCII), sent again unchanged with every retry",
)


def idempotency_key(request: web.Request, *, required: bool) -> str | None:
    """The ``Idempotency-Key`` header (IETF draft-ietf-httpapi-idempotency-key-header): printable
    ASCII, at most 200 characters; 400 when missing (where required) or malformed."""
    key = request.headers.get("Idempotency-Key")
    if key is None or not key.strip():
        if not required:
            return None
        raise ApiError(
            400,
            "idempotency_key_required",
            "缺少 Idempotency-Key 请求头：每次上报请生成一个唯一值，重试时原样带上",
            "the Idempotency-Key header is required: generate one unique value per report and send it "
            "again with every retry",
            fields={"Idempotency-Key": ("必填", "is required")},
        )
    key = key.strip().strip('"')
    if not (0 < len(key) <= _KEY_MAX) or not all(33 <= ord(c) < 127 for c in key):
        raise ApiError(
            400,
            "invalid_idempotency_key",
            "Idempotency-Key 应为 1–200 个可打印 ASCII 字符",
            "Idempotency-Key must be 1–200 printable ASCII characters",
            fields={"Idempotency-Key": ("格式无效", "malformed")},
        )
    return key

MINE_FIELDS: Final = (
    Field("state", max_length=200, description="comma-separated states"),
    Field("limit", "integer", minimum=1, maximum=200, description="page size, default 50"),
    Field("cursor", max_length=200, description="next_cursor of the previous page"),
)


def _json(data: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.json_response(
        data, status=status, headers=headers, dumps=lambda v: json.dumps(v, ensure_ascii=False, default=str)
    )


async def read_part_and_photos(request: web.Request, stage: Staging, json_part: str, check: Any) -> Submission:
    """Read the body; each photo only if the disk and the uploader's allowance take it; count refused
    photos by reason."""
    ctx = request.app[CTX]
    settings = ctx.settings.reports
    limit = int(settings.photo_max_mb * 1024 * 1024)
    store = ctx[MEDIA]
    user = current_user(request)
    try:
        return await read_submission(
            request,
            store,
            stage,
            json_part=json_part,
            check=check,
            max_photos=settings.max_photos,
            photo_limit_bytes=limit,
            admit=lambda: store.admit(user.id, ctx.clock.monotonic()),
            received=lambda staged: store.received(user.id, staged, ctx.clock.monotonic()),
        )
    except (ApiError, DomainError) as exc:
        outcome = {
            "photo_too_large": "too_large",
            "unsupported_photo_type": "unsupported",
            "photo_rate_exceeded": "rate_limited",
            "disk_nearly_full": "disk_full",
            "too_many_photos": "too_many",
        }.get(exc.code)
        if outcome is not None:
            ctx.metrics.photos.labels(outcome).inc()
        raise


# -- submit ----------------------------------------------------------------------------------------


async def submit_report(request: web.Request) -> web.Response:
    user = require_role(request, "grid_worker")
    key = idempotency_key(request, required=True)
    assert key is not None
    ctx = request.app[CTX]
    store = ctx[MEDIA]
    async with store.staging() as stage:
        submission = await read_part_and_photos(request, stage, "report", service.report_checker(ctx))
        outcome = await service.submit_report(
            ctx,
            user,
            submission.parsed,
            stage.photos,
            key=key,
            fingerprint=service.fingerprint(submission.data, stage.photos),
        )
        # After the commit (or on a retry of a committed report, which repairs a crash that
        # came between the commit and this line): move the files to their digests' names.
        store.place_all(stage)
    if not outcome.replayed:
        ctx.metrics.photos.labels("stored").inc(len(stage.photos))
    headers = {"Location": f"/api/v1/incidents/{outcome.incident_id}"}
    if outcome.replayed:
        headers["Idempotent-Replayed"] = "true"
    return web.Response(
        text=outcome.body,
        status=200 if outcome.replayed else outcome.status,
        content_type="application/json",
        charset="utf-8",
        headers=headers,
    )


# -- my reports and verification tasks -------------------------------------------------------------


def _encode_cursor(before: int) -> str:
    return base64.urlsafe_b64encode(json.dumps({"before": before}).encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> int:
    try:
        before = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["before"]
    except (binascii.Error, ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise bad_request("分页游标无效", "invalid cursor", code="invalid_cursor") from None
    if not isinstance(before, int) or isinstance(before, bool) or before < 1:
        raise bad_request("分页游标无效", "invalid cursor", code="invalid_cursor")
    return before


async def my_reports(request: web.Request) -> web.Response:
    user = current_user(request)
    query = query_params(request, MINE_FIELDS)
    states = tuple(s.strip() for s in (query.get("state") or "").split(",") if s.strip())
    bad = [s for s in states if s not in tuple(State)]
    if bad:
        raise invalid(
            {"state": ("取值无效，可选：" + "、".join(State), "values must be among " + ", ".join(State))}
        )
    before = _decode_cursor(query["cursor"]) if query.get("cursor") else None
    items, next_before = await service.my_reports(
        request.app[CTX], user, states=states, limit=query.get("limit", 50), before=before
    )
    return _json({"items": items, "next_cursor": _encode_cursor(next_before) if next_before else None})


async def verification_tasks(request: web.Request) -> web.Response:
    user = require_role(request, "grid_worker", "duty_officer", "leader")
    return _json({"items": await service.verification_tasks(request.app[CTX], user)})


def _incident_id(request: web.Request) -> int:
    try:
        value = int(request.match_info["id"])
    except ValueError:
        raise not_found("案件", "case") from None
    if not 0 < value < 2**63:
        raise not_found("案件", "case")
    return value


def _answer_handler(action: Action) -> Any:
    async def handler(request: web.Request) -> web.Response:
        user = current_user(request)
        incident_id = _incident_id(request)
        ctx = request.app[CTX]
        store = ctx[MEDIA]
        async with store.staging() as stage:
            submission = await read_part_and_photos(
                request, stage, "answer", lambda data: check_fields(data, service.ANSWER_FIELDS)
            )
            case = await service.answer_task(
                ctx, user, incident_id, str(action), submission.parsed, stage.photos
            )
            store.place_all(stage)
        ctx.metrics.photos.labels("stored").inc(len(stage.photos))
        return _json(case)

    handler.__name__ = f"task_{action}"
    handler.__qualname__ = handler.__name__
    return handler


# -- photos ----------------------------------------------------------------------------------------


async def get_media(request: web.Request) -> web.StreamResponse:
    """A photo for a user who may see one of its cases: the original for its uploader, the copy
    without metadata for everyone else. Anything else answers 404."""
    user = current_user(request)
    sha = request.match_info["sha"]
    if not SHA256.match(sha):
        raise not_found("照片", "photo")
    ctx = request.app[CTX]
    async with ctx.pool.acquire() as conn:
        photo = await conn.fetchrow(
            "SELECT * FROM photos WHERE sha256 = $1 OR public_sha256 = $1 ORDER BY sha256 = $1 DESC LIMIT 1",
            sha,
        )
        if photo is None:
            raise not_found("照片", "photo")
        rows = await conn.fetch(
            "SELECT l.uploaded_by, i.* FROM photo_links l JOIN incidents i ON i.id = l.incident_id"
            " WHERE l.sha256 = $1",
            photo["sha256"],
        )
    tree = ctx.orgs
    if not any(case_store.may_view(tree, user, r) for r in rows):
        raise not_found("照片", "photo")
    uploader = any(r["uploaded_by"] == user.id for r in rows)
    original = uploader and sha == photo["sha256"]
    served = photo["sha256"] if original else photo["public_sha256"]
    path = ctx[MEDIA].path(served)
    if not path.exists():
        raise not_found("照片", "photo")
    ext = formats.EXTENSIONS.get(photo["media_type"], "bin")
    return web.FileResponse(
        path,
        headers={
            "Content-Type": photo["media_type"],
            "Content-Disposition": f'inline; filename="{sha[:16]}.{ext}"',
            "Cache-Control": "private, max-age=3600",
            "Vary": "Authorization",
            "X-Content-Type-Options": "nosniff",
            "X-Photo-Variant": "original" if original else "public",
        },
    )


# -- routes ----------------------------------------------------------------------------------------

_ANSWER_RESPONSES: Final = {
    200: "the case after the answer",
    400: "malformed body",
    403: "not the grid worker of the case's grid nor its reporter",
    404: "no such case in your sight",
    409: "illegal transition or stale version; error.incident holds the current case",
    413: "photo too large",
    415: "photo not JPEG, PNG or WebP",
    422: "invalid fields",
}

ROUTES: Final[list[ApiRoute]] = [
    ApiRoute(
        "POST",
        "/api/v1/reports",
        submit_report,
        "Submit a grid report (平安通): JSON, or multipart with a `report` JSON part and `photo` parts;"
        " header Idempotency-Key required",
        TAG,
        body=service.REPORT_FIELDS,
        json_part="report",
        headers=(IDEMPOTENCY_KEY,),
        responses={
            201: "{incident_id, number, state, routed, photos, possible_duplicates}",
            200: "a retry with the same Idempotency-Key: the first answer, unchanged",
            400: "no Idempotency-Key or a malformed body",
            413: "a photo above the size limit",
            415: "a photo that is not JPEG, PNG or WebP (by content)",
            422: "invalid fields, too many photos, or the key reused for another report",
        },
    ),
    ApiRoute(
        "GET",
        "/api/v1/reports",
        my_reports,
        "My reports, newest first, each with its current step of the closed loop",
        TAG,
        query=MINE_FIELDS,
        responses={200: "{items, next_cursor}"},
    ),
    ApiRoute(
        "GET",
        "/api/v1/reports/tasks",
        verification_tasks,
        "Verification tasks (核查): fed-back cases in my grid or reported by me, with the feedback to check",
        TAG,
        responses={200: "{items}"},
    ),
    ApiRoute(
        "POST",
        r"/api/v1/reports/tasks/{id:\d+}/verify",
        _answer_handler(Action.verify),
        "Verify (核查) a fed-back case: JSON or multipart with an `answer` JSON part and `photo` parts",
        TAG,
        body=service.ANSWER_FIELDS,
        json_part="answer",
        responses=_ANSWER_RESPONSES,
    ),
    ApiRoute(
        "POST",
        r"/api/v1/reports/tasks/{id:\d+}/reopen",
        _answer_handler(Action.reopen),
        "Reopen (退回重办) a fed-back case with a reason: JSON or multipart with `answer` and `photo` parts",
        TAG,
        body=service.ANSWER_FIELDS,
        json_part="answer",
        responses=_ANSWER_RESPONSES,
    ),
    ApiRoute(
        "GET",
        "/api/v1/media/{sha:[0-9a-f]+}",
        get_media,
        "A photo of a case you may see (the uploader gets the original, others a copy without"
        " GPS/EXIF); ?token= works for <img>",
        TAG,
        responses={200: "image/jpeg, image/png or image/webp", 404: "no such photo in your sight"},
    ),
]


# -- the patrol log (网格日志) ---------------------------------------------------------------------

PATROL_TAG: Final = "patrols"
START_FIELDS: Final = (Field("notes", max_length=4000, description="a note for the log"),)
STOP_FIELDS: Final = (Field("notes", max_length=4000, description="what the patrol found"),)
POINT_FIELDS: Final = (
    Field(
        "points",
        "array",
        items="object",
        required=True,
        max_length=patrols.MAX_POINTS,
        description="[{lat, lon, at, accuracy?}]",
    ),
)
VISIT_FIELDS: Final = (
    Field("place", required=True, max_length=200, description="the place visited"),
    Field("location", "object", description="{lat, lon} WGS-84"),
    Field("at", max_length=40, description="ISO 8601 with zone; default now"),
    Field("note", max_length=4000),
)
PATROL_LIST_FIELDS: Final = (
    Field("date", max_length=10, description="local day YYYY-MM-DD"),
    Field("org", max_length=64, description="officers: patrols of the grid workers of this unit"),
    Field("limit", "integer", minimum=1, maximum=500),
)
COMPLIANCE_FIELDS: Final = (
    Field("org", max_length=64, description="default: your unit"),
    Field("from", max_length=10, description="first local day; default 6 days before to"),
    Field("to", max_length=10, description="last local day; default today"),
)


def _patrol_id(request: web.Request) -> int:
    try:
        value = int(request.match_info["id"])
    except ValueError:
        raise not_found("巡查", "patrol") from None
    if not 0 < value < 2**63:
        raise not_found("巡查", "patrol")
    return value


async def start_patrol(request: web.Request) -> web.Response:
    user = require_role(request, "grid_worker")
    body = await json_body(request, START_FIELDS)
    patrol = await patrols.start(request.app[CTX], user, body.get("notes"))
    return web.json_response(patrol, status=201, headers={"Location": f"/api/v1/patrols/{patrol['id']}"})


async def add_points(request: web.Request) -> web.Response:
    user = require_role(request, "grid_worker")
    patrol_id = _patrol_id(request)
    body = await json_body(request, POINT_FIELDS)
    return web.json_response(await patrols.add_points(request.app[CTX], user, patrol_id, body["points"]))


async def add_visit(request: web.Request) -> web.Response:
    user = require_role(request, "grid_worker")
    patrol_id = _patrol_id(request)
    body = await json_body(request, VISIT_FIELDS)
    visit = await patrols.add_visit(
        request.app[CTX],
        user,
        patrol_id,
        place=body["place"],
        location=body.get("location"),
        at_text=body.get("at"),
        note=body.get("note"),
    )
    return web.json_response(visit, status=201)


async def stop_patrol(request: web.Request) -> web.Response:
    user = require_role(request, "grid_worker")
    patrol_id = _patrol_id(request)
    body = await json_body(request, STOP_FIELDS)
    return web.json_response(await patrols.stop(request.app[CTX], user, patrol_id, body.get("notes")))


async def get_patrol(request: web.Request) -> web.Response:
    patrol = await patrols.get_patrol(request.app[CTX], current_user(request), _patrol_id(request))
    return web.json_response(patrol)


async def list_patrols(request: web.Request) -> web.Response:
    query = query_params(request, PATROL_LIST_FIELDS)
    day = patrols.parse_day(query["date"], "date") if query.get("date") else None
    found = await patrols.list_patrols(
        request.app[CTX], current_user(request), org=query.get("org"), day=day, limit=query.get("limit", 100)
    )
    return web.json_response(found)


async def get_compliance(request: web.Request) -> web.Response:
    query = query_params(request, COMPLIANCE_FIELDS)
    figures = await patrols.compliance_of(
        request.app[CTX], current_user(request), query.get("org"), query.get("from"), query.get("to")
    )
    return web.json_response(figures, dumps=lambda v: json.dumps(v, ensure_ascii=False))


PATROL_ROUTES: Final[list[ApiRoute]] = [
    ApiRoute(
        "POST",
        "/api/v1/patrols",
        start_patrol,
        "Start a patrol (网格日志; grid workers, one running at a time)",
        PATROL_TAG,
        body=START_FIELDS,
        responses={201: "the patrol", 409: "a patrol is already running (error.patrol)"},
    ),
    ApiRoute(
        "GET",
        "/api/v1/patrols",
        list_patrols,
        "Patrols: a grid worker's own, or those of the grid workers of a unit",
        PATROL_TAG,
        query=PATROL_LIST_FIELDS,
        responses={200: "{items, rule}"},
    ),
    ApiRoute(
        "GET",
        "/api/v1/patrols/compliance",
        get_compliance,
        "Daily patrol compliance per grid worker against the configured rule",
        PATROL_TAG,
        query=COMPLIANCE_FIELDS,
        responses={200: "rule, totals, by_unit, workers", 404: "unit outside your jurisdiction"},
    ),
    ApiRoute(
        "GET",
        r"/api/v1/patrols/{id:\d+}",
        get_patrol,
        "A patrol with its track (GeoJSON) and places visited",
        PATROL_TAG,
        responses={200: "the patrol", 404: "no such patrol in your sight"},
    ),
    ApiRoute(
        "POST",
        r"/api/v1/patrols/{id:\d+}/points",
        add_points,
        "Track points of a running patrol (a resent batch is stored once)",
        PATROL_TAG,
        body=POINT_FIELDS,
        responses={200: "{received, stored, points}", 409: "the patrol has stopped", 422: "bad points"},
    ),
    ApiRoute(
        "POST",
        r"/api/v1/patrols/{id:\d+}/visits",
        add_visit,
        "A place visited during a running patrol, with a note",
        PATROL_TAG,
        body=VISIT_FIELDS,
        responses={201: "the visit", 409: "the patrol has stopped"},
    ),
    ApiRoute(
        "POST",
        r"/api/v1/patrols/{id:\d+}/stop",
        stop_patrol,
        "Stop a patrol (stopping again changes nothing)",
        PATROL_TAG,
        body=STOP_FIELDS,
        responses={200: "the patrol with its duration and distance"},
    ),
]


# -- assembly ------------------------------------------------------------------------------------------


def setup(app: web.Application) -> None:
    ctx = app[CTX]
    add_routes(app, ROUTES + PATROL_ROUTES)
    reports = ctx.settings.reports
    ctx[MEDIA] = MediaStore(
        ctx.settings.data.dir / "media",
        min_free_bytes=reports.min_free_mb * 1024 * 1024,
        allowance=UploadAllowance(reports.photos_per_hour, reports.photo_mb_per_hour * 1024 * 1024),
    )
    register_section(ctx, "patrols", patrols.stats_section(ctx))
    app.cleanup_ctx.append(_reports_ctx)


async def _reports_ctx(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CTX]
    # Temporary files untouched for an hour belong to no request any more.
    await asyncio.to_thread(ctx[MEDIA].prepare, ctx.clock.now().timestamp() - 3600)
    demo = start_task(ctx, run_demo(ctx), "reports-demo") if ctx.settings.demo.enabled else None
    sweeper = start_task(ctx, _sweep_loop(ctx), "reports-tmp-sweep")
    yield
    # The simulated workers stop first, so that nothing is filed while the daemon drains.
    if demo is not None:
        await stop_tasks([demo])
    await stop_tasks([sweeper])


# Seconds between sweeps of media/tmp, and the age past which a temporary file belongs to nobody.
_SWEEP_EVERY: Final = 600.0
_TMP_STALE: Final = 3600.0


async def _sweep_loop(ctx: Context) -> None:
    """Every few minutes, what failed requests or a crash left in media/tmp goes (real time: files age
    on the disk's clock)."""
    while True:
        await asyncio.sleep(_SWEEP_EVERY)
        stale_before = time.time() - _TMP_STALE
        removed = await asyncio.to_thread(ctx[MEDIA].sweep, stale_before)
        if removed:
            log.info("media_tmp_swept", files=removed)
