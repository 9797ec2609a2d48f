"""Video meetings (综治视联网): signalling, rooms, and aiortc forwarding without transcoding."""

from __future__ import annotations

from aiohttp import web

from dispatchd.web.appkeys import BOARD_SECTIONS, METRICS, SETTINGS


def setup(app: web.Application) -> None:
    from dispatchd.video import api, seam, service

    seam.check_version()
    addresses = [a.strip() for a in app[SETTINGS].video.host_addresses.split(",") if a.strip()]
    if addresses:
        seam.limit_host_addresses(addresses)
    app[service.ROOMS] = rooms = service.Rooms(app)
    app[METRICS].registry.register(service.VideoCollector(rooms))
    app.cleanup_ctx.append(service.rooms_ctx)
    from dispatchd.web.routing import add_routes

    add_routes(app, api.ROUTES)
    app[BOARD_SECTIONS]["meetings"] = api.board_section
