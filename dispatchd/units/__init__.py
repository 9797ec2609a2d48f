"""Squad units (应急中队): units, members, devices, status, live positions, tracks, nearest squad."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web

from dispatchd.units.appkeys import DEVICES
from dispatchd.units.devices import DeviceDirectory
from dispatchd.web.appkeys import BOARD_SECTIONS, CLOCK, POOL
from dispatchd.web.routing import add_routes


def setup(app: web.Application) -> None:
    """Routes of ``/api/v1/units``, the device directory, and the board section ``units``."""
    from dispatchd.units import api, service

    add_routes(app, api.ROUTES)
    app[BOARD_SECTIONS]["units"] = service.board_units

    async def devices_ctx(app: web.Application) -> AsyncIterator[None]:
        app[DEVICES] = DeviceDirectory(app[POOL], app[CLOCK])
        yield

    app.cleanup_ctx.append(devices_ctx)
