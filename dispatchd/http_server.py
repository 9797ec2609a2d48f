"""The HTTP server of dispatchd, and putting it together: settings in, one service context and one
aiohttp application out.

The stores (embedded servers, the asyncpg pool, Redis) open and close in the application's
``cleanup_ctx``, attached to the :class:`~dispatchd.context.Context` every service receives. Each
capability adds its routes, board sections and background work through the ``setup(app)`` of its
HTTP module, in the order of :data:`CAPABILITIES` (later ones stop first).
"""

from __future__ import annotations

import asyncio
import signal
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Final

import structlog
from aiohttp import web

from dispatchd import __version__, months, observe
from dispatchd.channels.gb28181 import api as gb28181
from dispatchd.channels.gps import api as gps
from dispatchd.channels.hotline import api as hotline
from dispatchd.channels.open311 import api as open311
from dispatchd.channels.reports import api as reports
from dispatchd.clock import Clock, SystemClock
from dispatchd.config import Settings
from dispatchd.context import Context
from dispatchd.demo import announce_accounts
from dispatchd.domain.orgs import GridLocator, OrgTree, load_org_tree
from dispatchd.domain.taxonomy import Taxonomy, load_taxonomy
from dispatchd.embedded import EmbeddedStores
from dispatchd.incidents import api as incidents
from dispatchd.live import api as live
from dispatchd.metrics import Metrics
from dispatchd.plans import api as plans
from dispatchd.store import db
from dispatchd.store import redis as redis_store
from dispatchd.store.migrate import migrate
from dispatchd.store.orgs import sync_org_tree
from dispatchd.store.outage import OUTAGES, POSTGRES, REDIS, Outages
from dispatchd.tasks import start_task, stop_tasks
from dispatchd.units import api as units
from dispatchd.video import api as video
from dispatchd.web.app import app_runner, http_app
from dispatchd.web.appkeys import CTX

log = structlog.get_logger("dispatchd.server")

# Seconds a migration statement may take at start-up (requests have [database] statement_timeout).
MIGRATION_TIMEOUT: Final = 3600.0

# Each capability registers itself: routes, board sections, cleanup contexts, background tasks.
CAPABILITIES: Final[tuple[Callable[[web.Application], None], ...]] = (
    units.setup,
    gps.setup,
    incidents.setup,
    live.setup,
    video.setup,
    hotline.setup,
    reports.setup,
    open311.setup,
    gb28181.setup,
    plans.setup,
)


def build_context(
    settings: Settings,
    clock: Clock | None = None,
    *,
    tree: OrgTree | None = None,
    locator: GridLocator | None = None,
    taxonomy: Taxonomy | None = None,
) -> Context:
    """The service context of one instance, without its stores (they open with the application)."""
    tree = tree or load_org_tree(settings.paths.orgs)
    ctx = Context(
        settings=settings,
        clock=clock or SystemClock(),
        orgs=tree,
        locator=locator or GridLocator(tree),
        taxonomy=taxonomy or load_taxonomy(settings.paths.taxonomy),
        metrics=Metrics(),
        instance_id=uuid.uuid4().hex[:8],
    )
    ctx[OUTAGES] = Outages(
        ctx.metrics,
        retry_after=settings.http.retry_after,
        probe_timeout=max(settings.database.connect_timeout, settings.redis.connect_timeout) + 1.0,
        stale_after_recovery=db.connect_options(settings.database)["command_timeout"],
    )
    return ctx


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
    ctx = build_context(settings, clock, tree=tree, locator=locator, taxonomy=taxonomy)
    app = http_app(ctx)

    async def stores_ctx(app: web.Application) -> AsyncIterator[None]:
        stores: EmbeddedStores | None = None
        db_url, redis_url = settings.database.url, settings.redis.url
        if settings.embedded_database or settings.embedded_redis:
            stores = EmbeddedStores.for_data_dir(settings.data.dir)
            await asyncio.to_thread(stores.start, settings.embedded_database, settings.embedded_redis)
            db_url = db_url or stores.postgres.url
            redis_url = redis_url or stores.redis.url
            log.info("embedded_stores_ready", data_dir=str(settings.data.dir))
        outages = ctx[OUTAGES]
        try:
            pool = await db.create_pool(db_url, settings.database, outages)
            async with pool.acquire() as conn:
                if migrate_on_start:
                    # Migrations may take longer than a request's statement timeout.
                    await conn.execute("SET statement_timeout = 0")
                    applied = await migrate(conn, statement_timeout=MIGRATION_TIMEOUT)
                    await conn.execute("RESET statement_timeout")
                    if applied:
                        log.info("migrations_applied", versions=[m.version for m in applied])
                await sync_org_tree(conn, ctx.orgs)
            redis = redis_store.open_redis(redis_url, settings.redis, outages)
            await redis.ping()
            ctx.attach_stores(pool, redis)
            outages.probes[POSTGRES] = lambda: db.probe(db_url, settings.database)
            outages.probes[REDIS] = lambda: redis_store.probe(redis_url, settings.redis)
            yield
            await stop_tasks(ctx.tasks)
            await outages.close()
            await redis.aclose()
            await asyncio.wait_for(pool.close(), 5)
        finally:
            if stores is not None:
                await asyncio.to_thread(stores.stop_started)
                log.info("embedded_stores_stopped")

    app.cleanup_ctx.append(stores_ctx)
    app.cleanup_ctx.append(_partition_months)
    for setup in CAPABILITIES:
        setup(app)
    _observe(app)
    return app


async def _partition_months(app: web.Application) -> AsyncIterator[None]:
    """The monthly partitions of the track and the audit log, for the life of the app."""
    ctx = app[CTX]
    task = start_task(ctx, months.keep_months(ctx), "partition-months")
    yield
    await stop_tasks([task])


def _observe(app: web.Application) -> None:
    """Queue depths, store probes, loop lag and order latencies on /metrics (dispatchd/observe.py)."""
    ctx = app[CTX]
    metrics = ctx[observe.OPS] = observe.OpsMetrics(ctx)

    async def loops(app: web.Application) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(observe.probe_stores(ctx, metrics), name="observe-stores"),
            asyncio.create_task(observe.order_loop(ctx, metrics), name="observe-orders"),
        ]
        yield
        await stop_tasks(tasks)

    app.cleanup_ctx.append(loops)


async def serve(
    settings: Settings, *, demo_accounts: bool = False, after_start: Callable[[], None] | None = None
) -> None:
    """Serve until SIGTERM or SIGINT, then drain (``demo_accounts``: seed and print them first)."""
    app = build_app(settings)
    if demo_accounts:

        async def seed(app: web.Application) -> None:
            await announce_accounts(app[CTX])

        app.on_startup.append(seed)
    runner = app_runner(app, access_log=None, handle_signals=False, shutdown_timeout=settings.http.shutdown_timeout)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await runner.setup()
    try:
        site = web.TCPSite(runner, settings.http.host, settings.http.port)
        await site.start()
        for addr in runner.addresses:
            log.info("listening", address=f"http://{addr[0]}:{addr[1]}", version=__version__)
        if after_start is not None:
            after_start()
        await stop.wait()
        log.info("stopping", reason="signal")
    finally:
        await runner.cleanup()
        log.info("stopped")
