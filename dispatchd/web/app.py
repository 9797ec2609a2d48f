"""Application assembly: settings in, an aiohttp application out.

Resources (embedded servers, the asyncpg pool, Redis) open and close in ``cleanup_ctx``, one
generator each, stored under typed keys. Features add their routes and background work through
``setup(app)`` functions listed in :data:`FEATURES`.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import redis.asyncio as aioredis
import structlog
from aiohttp import web

from dispatchd.clock import Clock, SystemClock
from dispatchd.config import Settings
from dispatchd.context import Context
from dispatchd.domain.orgs import GridLocator, OrgTree, load_org_tree
from dispatchd.domain.taxonomy import Taxonomy, load_taxonomy
from dispatchd.embedded import EmbeddedStores
from dispatchd.metrics import Metrics
from dispatchd.store.db import create_pool
from dispatchd.store.migrate import migrate
from dispatchd.store.orgs import sync_org_tree
from dispatchd.tasks import raise_if_cancelling, stop_tasks
from dispatchd.web import auth, health, orgs, ui
from dispatchd.web.appkeys import (
    API_ROUTES,
    BOARD_SECTIONS,
    CLOCK,
    CTX,
    INSTANCE_ID,
    LOCATOR,
    METRICS,
    ORGS,
    POOL,
    PUBLIC_RESOURCES,
    REDIS,
    SETTINGS,
    TASKS,
    TAXONOMY,
)
from dispatchd.web.errors import ApiError, from_http_exception, request_language
from dispatchd.web.routing import add_routes

log = structlog.get_logger("dispatchd.http")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def _core_setup(app: web.Application) -> None:
    add_routes(app, health.ROUTES + auth.ROUTES + orgs.ROUTES)


def _feature_setups() -> list[Callable[[web.Application], None]]:
    """Each capability registers itself here: routes, cleanup contexts, background tasks."""
    from dispatchd import incidents, live, units, video
    from dispatchd.channels import hotline, reports
    from dispatchd.channels.gb28181 import api as gb28181

    return [
        _core_setup,
        ui.setup,
        units.setup,
        incidents.setup,
        live.setup,
        video.setup,
        hotline.setup,
        reports.setup,
        gb28181.setup,
    ]


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
    response: web.StreamResponse
    try:
        response = await handler(request)
    except ApiError as exc:
        response = exc.response(lang)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = from_http_exception(exc).response(lang)
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("unhandled_error", method=request.method, path=request.path)
        response = ApiError(
            500,
            "internal",
            "服务器内部错误，已记录",
            "internal error; it has been logged",
            extra={"request_id": rid},
        ).response(lang)
    elapsed = time.perf_counter() - started
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    metrics = request.app[METRICS]
    metrics.http_requests.labels(request.method, route, str(response.status)).inc()
    metrics.http_latency.labels(request.method, route).observe(elapsed)
    if not response.prepared:
        response.headers["X-Request-ID"] = rid
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


def build_app(
    settings: Settings,
    clock: Clock | None = None,
    *,
    migrate_on_start: bool = True,
    tree: OrgTree | None = None,
    locator: GridLocator | None = None,
    taxonomy: Taxonomy | None = None,
) -> web.Application:
    """``tree``, ``locator`` and ``taxonomy`` may be passed in pre-loaded (tests build many apps)."""
    tree = tree or load_org_tree(settings.paths.orgs)
    app = web.Application(
        middlewares=[request_context, auth.auth_middleware],
        client_max_size=settings.http.max_body_mb * 1024 * 1024,
    )
    app[SETTINGS] = settings
    app[CLOCK] = clock or SystemClock()
    app[ORGS] = tree
    app[LOCATOR] = locator or GridLocator(tree)
    app[TAXONOMY] = taxonomy or load_taxonomy(settings.paths.taxonomy)
    app[METRICS] = Metrics()
    app[API_ROUTES] = []
    app[PUBLIC_RESOURCES] = set()
    app[TASKS] = []
    app[BOARD_SECTIONS] = {}
    app[INSTANCE_ID] = uuid.uuid4().hex[:8]
    ctx = Context(
        settings=settings,
        clock=app[CLOCK],
        orgs=tree,
        locator=app[LOCATOR],
        taxonomy=app[TAXONOMY],
        metrics=app[METRICS],
        instance_id=app[INSTANCE_ID],
        tasks=app[TASKS],
    )
    app[CTX] = ctx

    async def stores_ctx(app: web.Application) -> AsyncIterator[None]:
        stores: EmbeddedStores | None = None
        db_url, redis_url = settings.database.url, settings.redis.url
        if settings.embedded_database or settings.embedded_redis:
            stores = EmbeddedStores.for_data_dir(settings.data.dir)
            await asyncio.to_thread(stores.start, settings.embedded_database, settings.embedded_redis)
            db_url = db_url or stores.postgres.url
            redis_url = redis_url or stores.redis.url
            log.info("embedded_stores_ready", data_dir=str(settings.data.dir))
        try:
            pool = await create_pool(db_url, settings.database)
            async with pool.acquire() as conn:
                if migrate_on_start:
                    applied = await migrate(conn)
                    if applied:
                        log.info("migrations_applied", versions=[m.version for m in applied])
                await sync_org_tree(conn, tree)
            app[POOL] = pool
            redis = aioredis.from_url(redis_url, decode_responses=False, health_check_interval=30)
            await redis.ping()
            app[REDIS] = redis
            ctx.attach_stores(pool, redis)
            yield
            background: list[asyncio.Task[Any]] = app[TASKS]
            await stop_tasks(background)
            await redis.aclose()
            await asyncio.wait_for(pool.close(), 5)
        finally:
            if stores is not None:
                await asyncio.to_thread(stores.stop_started)
                log.info("embedded_stores_stopped")

    app.cleanup_ctx.append(stores_ctx)
    for setup in _feature_setups():
        setup(app)
    return app


def start_task(app: web.Application, coro: Any, name: str) -> asyncio.Task[Any]:
    """Run background work for the life of the application; a crash is logged, not silent."""

    async def guarded() -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            raise_if_cancelling()
            log.exception("background_task_failed", task=name)

    task = asyncio.create_task(guarded(), name=name)
    app[TASKS].append(task)
    return task
