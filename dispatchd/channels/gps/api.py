"""The position pipeline's assembly: the device directory, the batching sink, the OsmAnd HTTP
server and the JT/T 808 TCP server on their own ports, and (with the demo on) the simulated squads,
for the life of the instance. The sink is the units' position writer (:data:`dispatchd.units.slots.POSITIONS`).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import structlog
from aiohttp import web

from dispatchd.channels.gps.demo import run_demo
from dispatchd.channels.gps.intake import GpsIntake
from dispatchd.channels.gps.jt808_server import serve_jt808
from dispatchd.channels.gps.osmand_server import serve_osmand
from dispatchd.channels.gps.sink import PositionSink
from dispatchd.channels.gps.slots import INTAKE, JT808_SERVER, SINK
from dispatchd.channels.gps.spool import HeldSpool
from dispatchd.store.outage import OUTAGES
from dispatchd.tasks import stop_tasks
from dispatchd.units.devices import DeviceDirectory
from dispatchd.units.slots import DEVICES, GPS_PORTS, POSITIONS
from dispatchd.web.appkeys import CTX

log = structlog.get_logger("dispatchd.gps")

# Under the data directory: the held batches of every sink of the host (see spool.py).
SPOOL_DIR = "gps-held"


def setup(app: web.Application) -> None:
    app.cleanup_ctx.append(_positions_ctx)


async def _positions_ctx(app: web.Application) -> AsyncIterator[None]:
    """Device directory, sink, both protocol servers and the demo feed, for the life of the app."""
    ctx = app[CTX]
    settings = ctx.settings
    devices = ctx[DEVICES] = DeviceDirectory(ctx.pool, ctx.clock)
    # Fixes held through a PostgreSQL outage are kept on disk too, shared by the instances of the host.
    spool = HeldSpool(settings.data.dir / SPOOL_DIR)
    await asyncio.to_thread(spool.open)
    sink = ctx[SINK] = PositionSink(
        ctx.redis, ctx.pool, ctx.clock, settings.units, ctx.metrics, ctx.get(OUTAGES), spool
    )
    ctx[POSITIONS] = sink
    intake = ctx[INTAKE] = GpsIntake(ctx, sink, devices)
    flusher = asyncio.create_task(sink.run(), name="gps-sink")
    osmand = serve_osmand(ctx, intake, settings.osmand.host or settings.http.host, settings.osmand.port)
    jt808 = serve_jt808(
        intake,
        ctx.clock,
        ctx.metrics,
        settings.jt808.host or settings.http.host,
        settings.jt808.port,
        settings.jt808.idle_timeout,
        settings.jt808.reuse_port,
        max_per_address=settings.jt808.max_connections_per_address,
    )
    demo: asyncio.Task[None] | None = None
    try:
        osmand_port = await anext(osmand)
        try:
            server, jt808_port = await anext(jt808)
            ctx[JT808_SERVER] = server
            ctx[GPS_PORTS] = {"osmand": osmand_port, "jt808": jt808_port}
            if settings.demo.enabled:
                demo = asyncio.create_task(run_demo(ctx), name="gps-demo")
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
