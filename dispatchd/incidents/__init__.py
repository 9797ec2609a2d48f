"""The case service: create, transition, deadline timers, statistics (asyncpg + the pure domain).

``setup(app)`` adds the API routes, the deadline-timer loop, the ``incidents`` board section and
the registry of extra statistics sections (:func:`dispatchd.incidents.stats.register_section`).
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from dispatchd.incidents import api, board, stats, timers
from dispatchd.web.appkeys import BOARD_SECTIONS
from dispatchd.web.routing import add_routes


def setup(app: web.Application) -> None:
    """Register the closed loop on ``app``."""
    add_routes(app, api.ROUTES)
    app[timers.FIRING_LOCK] = asyncio.Lock()
    app.cleanup_ctx.append(timers.timers_ctx)
    app[BOARD_SECTIONS]["incidents"] = board.incidents_section
    if stats.STATS_SECTIONS not in app:
        app[stats.STATS_SECTIONS] = {}
