"""Grid reports: the 平安通 API for grid workers (reports with photos, exactly once; my reports;
verification tasks; the patrol log) and Open311 GeoReport v2 for citizen apps (docs/reports.md).

``setup(app)`` adds the routes, the photo store under ``<data dir>/media``, the ``patrols``
statistics section and, with the demo on, the simulated grid workers.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from dispatchd.tasks import stop_tasks


def setup(app: web.Application) -> None:
    from dispatchd.channels.reports import api, open311, patrols
    from dispatchd.channels.reports.appkeys import MEDIA
    from dispatchd.channels.reports.media import MediaStore
    from dispatchd.incidents.stats import register_section
    from dispatchd.web.appkeys import SETTINGS
    from dispatchd.web.routing import add_routes

    add_routes(app, api.ROUTES + patrols.ROUTES + open311.ROUTES)
    app[MEDIA] = MediaStore(app[SETTINGS].data.dir / "media")
    register_section(app, "patrols", patrols.stats_section(app))
    app.cleanup_ctx.append(_reports_ctx)


async def _reports_ctx(app: web.Application) -> AsyncIterator[None]:
    import asyncio

    from dispatchd.channels.reports.appkeys import MEDIA
    from dispatchd.channels.reports.demo import run_demo
    from dispatchd.web.app import start_task
    from dispatchd.web.appkeys import CLOCK, SETTINGS

    # Temporary files untouched for an hour belong to no request any more.
    await asyncio.to_thread(app[MEDIA].prepare, app[CLOCK].now().timestamp() - 3600)
    demo = start_task(app, run_demo(app), "reports-demo") if app[SETTINGS].demo.enabled else None
    yield
    # The simulated workers stop first, so that nothing is filed while the daemon drains.
    if demo is not None:
        await stop_tasks([demo])
