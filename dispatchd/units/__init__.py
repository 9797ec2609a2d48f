"""Squad units (应急中队): units, members, devices, status, live positions, tracks, nearest squad.

``setup(app)`` adds the ``/api/v1/units`` routes, the board section ``units``, and one cleanup
context that runs the position pipeline: the device directory, the batching sink, the OsmAnd HTTP
server and the JT/T 808 TCP server on their own ports, and (with the demo on) the simulated squads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from dispatchd.tasks import stop_tasks


def setup(app: web.Application) -> None:
    from dispatchd.units import api, service
    from dispatchd.web.appkeys import BOARD_SECTIONS
    from dispatchd.web.routing import add_routes

    add_routes(app, api.ROUTES)
    app[BOARD_SECTIONS]["units"] = service.board_units
    app.cleanup_ctx.append(positions_ctx)


async def positions_ctx(app: web.Application) -> AsyncIterator[None]:
    """Device directory, sink, both protocol servers and the demo feed, for the life of the app."""
    import asyncio

    import structlog

    from dispatchd.channels.gps.intake import GpsIntake
    from dispatchd.channels.gps.jt808_server import serve_jt808
    from dispatchd.channels.gps.osmand_server import serve_osmand
    from dispatchd.channels.gps.sink import PositionSink
    from dispatchd.units.appkeys import DEVICES, GPS_PORTS, INTAKE, JT808_SERVER, SINK
    from dispatchd.units.devices import DeviceDirectory
    from dispatchd.web.appkeys import CLOCK, METRICS, POOL, REDIS, SETTINGS

    log = structlog.get_logger("dispatchd.gps")
    settings = app[SETTINGS]
    devices = app[DEVICES] = DeviceDirectory(app[POOL], app[CLOCK])
    sink = app[SINK] = PositionSink(app[REDIS], app[POOL], app[CLOCK], settings.units, app[METRICS])
    intake = app[INTAKE] = GpsIntake(app, sink, devices)
    flusher = asyncio.create_task(sink.run(), name="gps-sink")
    osmand = serve_osmand(app, intake, settings.osmand.host or settings.http.host, settings.osmand.port)
    jt808 = serve_jt808(
        intake,
        app[CLOCK],
        app[METRICS],
        settings.jt808.host or settings.http.host,
        settings.jt808.port,
        settings.jt808.idle_timeout,
    )
    demo: asyncio.Task[None] | None = None
    try:
        osmand_port = await anext(osmand)
        try:
            server, jt808_port = await anext(jt808)
            app[JT808_SERVER] = server
            app[GPS_PORTS] = {"osmand": osmand_port, "jt808": jt808_port}
            if settings.demo.enabled:
                from dispatchd.units.demo import run_demo

                demo = asyncio.create_task(run_demo(app), name="gps-demo")
            try:
                yield
            finally:
                if demo is not None:
                    await stop_tasks([demo])
                await jt808.aclose()
        finally:
            await osmand.aclose()
    finally:
        await intake.close()
        await stop_tasks([flusher])
        await sink.close()
        log.info("gps_stopped")
