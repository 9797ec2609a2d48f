"""Cameras of the public-security video network: dispatchd as a GB/T 28181 platform.

``manscdp`` (the XML), ``ptz`` (the 8-byte control command), ``sdp``, ``ps`` (MPEG program
streams), ``rtp`` (RTP and RFC 4571), ``digest`` (server-side digest), ``registry`` (devices,
keep-alive, catalogues) and ``agent`` (the SIP user agent) are pure: bytes or commands in, values
out, time passed in. ``edge`` runs the agent on the ``[gb28181] port`` sockets; ``streams`` keeps one
device stream per viewed channel and ``view`` the WebRTC viewers; ``service`` keeps devices and
cameras in PostgreSQL; ``api`` is the HTTP side; ``meeting`` puts a camera into a meeting.

``setup(app)`` adds the routes, the board section ``cameras``, the metrics, the meeting source kind
``camera`` and one cleanup context running the platform.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiohttp import web


def setup(app: web.Application) -> None:
    from dispatchd.channels.gb28181 import api, meeting
    from dispatchd.channels.gb28181.runtime import GB28181, Gb28181Collector, Gb28181Runtime
    from dispatchd.video.service import ROOMS
    from dispatchd.web.appkeys import BOARD_SECTIONS, CTX, METRICS
    from dispatchd.web.routing import add_routes

    runtime = Gb28181Runtime()
    app[CTX][GB28181] = runtime
    add_routes(app, api.ROUTES)
    app[BOARD_SECTIONS]["cameras"] = api.board_section
    app[METRICS].registry.register(Gb28181Collector(runtime))
    if ROOMS in app:
        app[ROOMS].source_starters["camera"] = meeting.starter(runtime)
    app.cleanup_ctx.append(gb28181_ctx)


async def gb28181_ctx(app: web.Application) -> AsyncIterator[None]:
    """The platform: SIP sockets, timers, streams and viewers, for the life of the application."""
    from dispatchd.channels.gb28181.runtime import running
    from dispatchd.web.appkeys import CTX

    async with running(app[CTX]):
        yield
