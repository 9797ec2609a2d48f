"""Live: the change feed, the board websocket, and orders pushed to squads with acknowledgement.

``setup(app)`` adds the routes (``/api/v1/orders``, ``/api/v1/alerts``, ``/ws/board``,
``/ws/squad``, ``/api/asyncapi.json``), the board sections ``orders`` and ``alerts``, and one
cleanup context that runs, for the life of the instance: the relay election and loop, the feed
subscriber, the board frame loop and heartbeat, the squad hub and the order timers. Websockets
are closed with 1001 (reconnect and resume) when the instance shuts down.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import structlog
from aiohttp import web

from dispatchd.tasks import stop_tasks

log = structlog.get_logger("dispatchd.live")


def setup(app: web.Application) -> None:
    from dispatchd.live import api, orders
    from dispatchd.web.appkeys import BOARD_SECTIONS
    from dispatchd.web.routing import add_routes

    add_routes(app, api.ROUTES)
    register_order_acceptance(app)
    app[BOARD_SECTIONS]["orders"] = orders.orders_section
    app[BOARD_SECTIONS]["alerts"] = orders.alerts_section
    app.cleanup_ctx.append(live_ctx)
    app.on_shutdown.append(close_websockets)


def register_order_acceptance(app: web.Application) -> None:
    """The hotline's 叫应 accepts an order, on the phone, through the squad app's own accept."""
    from dispatchd.channels.hotline.appkeys import ORDER_ACCEPTANCE  # like the others: set up late
    from dispatchd.live import orders  # like the others: set up late
    from dispatchd.store.users import User  # like the others: set up late
    from dispatchd.web.appkeys import CTX  # like the others: set up late

    async def accept(order_id: int, user: User) -> dict[str, Any]:
        return await orders.accept(app, order_id, user)

    app[CTX][ORDER_ACCEPTANCE] = accept


async def live_ctx(app: web.Application) -> AsyncIterator[None]:
    from dispatchd.live.appkeys import BOARD_HUB, FEED, ORDER_TIMERS, SQUAD_HUB
    from dispatchd.live.board import BoardHub
    from dispatchd.live.feed import Feed
    from dispatchd.live.orders import OrderTimers
    from dispatchd.live.squad import SquadHub
    from dispatchd.web.app import start_task

    feed = app[FEED] = Feed(app)
    await feed.start()
    board = app[BOARD_HUB] = BoardHub(app)
    board.received = feed.cursor
    squad = app[SQUAD_HUB] = SquadHub(app)
    timers = app[ORDER_TIMERS] = OrderTimers(app)
    feed.row_listeners.extend([board.on_rows, squad.on_rows])
    tasks = [
        start_task(app, feed.run_subscriber(), "live-feed-subscriber"),
        start_task(app, feed.run_relay(), "live-feed-relay"),
        start_task(app, board.run(), "live-board-frames"),
        start_task(app, board.run_heartbeat(), "live-board-heartbeat"),
        start_task(app, squad.run(), "live-squad-hub"),
        start_task(app, timers.run(), "live-order-timers"),
    ]
    try:
        await asyncio.wait_for(feed.subscribed.wait(), 10)
    except TimeoutError:
        log.warning("feed_not_subscribed_yet")
    log.info("live_started", cursor=feed.cursor)
    yield
    await stop_tasks(tasks)


async def close_websockets(app: web.Application) -> None:
    from dispatchd.live.appkeys import BOARD_HUB, SQUAD_HUB

    if BOARD_HUB in app:
        await app[BOARD_HUB].close_all()
    if SQUAD_HUB in app:
        await app[SQUAD_HUB].close_all()
