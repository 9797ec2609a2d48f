"""The HTTP foundation every capability shares: the aiohttp application with its middlewares
(request id, JSON errors, one summary line per request, authentication) and the core routes
(health, login, the organisation tree, the web UI). The capabilities and the stores are put
together in :mod:`dispatchd.server`.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from typing import Any

import structlog
from aiohttp import web

from dispatchd.context import Context
from dispatchd.errors import DomainError
from dispatchd.store.outage import as_unavailable, begin_degraded, refused_value
from dispatchd.validate import text_is_storable
from dispatchd.web import auth, headers, health, orgs, ui
from dispatchd.web.appkeys import API_ROUTES, CTX, PUBLIC_RESOURCES
from dispatchd.web.errors import ApiError, from_domain, from_http_exception, request_language
from dispatchd.web.routing import add_routes
from dispatchd.web.server import (
    ConnectionGuard,
    GuardedRunner,
    http_runner,
    request_finished,
    request_started,
)

log = structlog.get_logger("dispatchd.http")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@web.middleware
async def request_context(request: web.Request, handler: Any) -> web.StreamResponse:
    """Bind a request id, turn every error into JSON, and log one summary line per request."""
    rid = request.headers.get("X-Request-ID", "")
    if not _REQUEST_ID.match(rid):
        rid = uuid.uuid4().hex[:16]
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id=rid)
    started = time.perf_counter()
    lang = request_language(request)
    degraded = begin_degraded()
    response: web.StreamResponse
    request_started(request)
    try:
        _check_characters(request)
        response = await handler(request)
    except ApiError as exc:
        response = exc.response(lang)
    except DomainError as exc:
        response = from_domain(exc).response(lang)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = from_http_exception(exc).response(lang)
    except asyncio.CancelledError:
        request_finished(request)
        raise
    except ConnectionError as exc:
        refusal = as_unavailable(request.app[CTX], exc)  # a store refusing connections (TCP)
        if refusal is not None:
            response = from_domain(refusal).response(lang)
        else:
            # The client went away (or was cut for sending too slowly): nobody is left to answer.
            response = ApiError(
                408, "request_timeout", "请求未能读完，连接已断开", "the request was not read in time"
            ).response(lang)
    except Exception as exc:
        # A store that is down or hung is answered 503 with Retry-After, and logged once per outage.
        refusal = as_unavailable(request.app[CTX], exc)
        if refusal is not None:
            if refusal.code == "store_busy":
                # Not an outage (a deadlock, a statement cancelled, the pool full): one line, no traceback.
                log.warning("store_busy", path=request.path, error=f"{type(exc).__name__}: {exc}"[:200])
            response = from_domain(refusal).response(lang)
        elif refused_value(exc):
            # The database refused a value the validation let through: a 422 for the client, and a
            # line for the developers to add the missing check.
            log.warning("store_refused_value", path=request.path, error=f"{type(exc).__name__}: {exc}"[:200])
            response = ApiError(
                422, "invalid_value", "请求中有无法保存的值", "the request holds a value that cannot be stored"
            ).response(lang)
        else:
            log.exception("unhandled_error", method=request.method, path=request.path)
            response = ApiError(
                500,
                "internal",
                "服务器内部错误，已记录",
                "internal error; it has been logged",
                extra={"request_id": rid},
            ).response(lang)
    request_finished(request)
    elapsed = time.perf_counter() - started
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    metrics = request.app[CTX].metrics
    metrics.http_requests.labels(request.method, route, str(response.status)).inc()
    metrics.http_latency.labels(request.method, route).observe(elapsed)
    if not response.prepared:
        response.headers["X-Request-ID"] = rid
        if degraded:
            # Redis-only state was left out of this answer (PostgreSQL is the record): say so.
            response.headers["Dispatchd-Degraded"] = ",".join(sorted(degraded))
    log.info(
        "http_request",
        method=request.method,
        path=request.path,
        route=route,
        status=response.status,
        duration_ms=round(elapsed * 1000, 2),
        remote=request.remote,
    )
    return response


def _check_characters(request: web.Request) -> None:
    """400 for a path or query with NUL or invalid Unicode: no handler or store ever sees them."""
    texts = [request.path, *request.query.keys(), *request.query.values()]
    if not all(text_is_storable(t) for t in texts):
        raise ApiError(
            400,
            "bad_characters",
            "地址或查询参数含 NUL 或无效的 Unicode 字符",
            "the path or query holds NUL or invalid Unicode",
        )


def http_app(ctx: Context) -> web.Application:
    """An aiohttp application serving ``ctx``: middlewares, core routes and the web UI."""
    app = web.Application(
        middlewares=[request_context, auth.auth_middleware],
        client_max_size=ctx.settings.http.max_body_mb * 1024 * 1024,
    )
    app[CTX] = ctx
    headers.setup(app)
    app[API_ROUTES] = []
    app[PUBLIC_RESOURCES] = set()
    add_routes(app, health.ROUTES + auth.ROUTES + orgs.ROUTES)
    app.on_startup.append(auth.warm_up)
    ui.setup(app)
    return app


def app_runner(app: web.Application, **kwargs: Any) -> GuardedRunner:
    """The runner of the HTTP port: its connections guarded by the ``[http]`` limits."""
    ctx = app[CTX]
    http = ctx.settings.http
    guard = ConnectionGuard(
        "http",
        ctx.metrics,
        header_timeout=http.header_timeout,
        body_timeout=http.body_timeout,
        max_per_address=http.max_connections_per_address,
    )
    return http_runner(app, guard, keepalive_timeout=http.keepalive_timeout, **kwargs)
