"""HTTP API of the live capability: orders, alerts, the two websockets, and the AsyncAPI document;
and its assembly (:func:`setup`)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable
from typing import Any

import structlog
from aiohttp import WSMsgType, web

from dispatchd.channels.hotline.slots import ORDER_ACCEPTANCE, PRESENCE, OrderAcceptance
from dispatchd.channels.reports.api import read_part_and_photos
from dispatchd.channels.reports.slots import MEDIA
from dispatchd.context import Context
from dispatchd.errors import DomainError, invalid, not_found
from dispatchd.incidents.slots import CASE_ENDED
from dispatchd.live import orders
from dispatchd.live.asyncapi import asyncapi_document
from dispatchd.live.board import BoardHub
from dispatchd.live.feed import Feed
from dispatchd.live.orders import OrderTimers
from dispatchd.live.slots import BOARD_HUB, FEED, ORDER_TIMERS, SQUAD_HUB
from dispatchd.live.squad import SquadHub
from dispatchd.store.outage import as_unavailable, store_failure
from dispatchd.store.users import User
from dispatchd.tasks import start_task, stop_tasks
from dispatchd.units.slots import STATUS_REACTIONS
from dispatchd.validate import Field, check_fields
from dispatchd.web.appkeys import CTX
from dispatchd.web.auth import current_user, jurisdiction, require_role
from dispatchd.web.errors import from_domain, request_language
from dispatchd.web.routing import ApiRoute, add_routes
from dispatchd.web.validate import json_body, query_params

log = structlog.get_logger("dispatchd.live")


def _id(request: web.Request) -> int:
    return int(request.match_info["id"])


ORDER_BODY = (
    Field("incident_id", "integer", required=True, minimum=1, description="the case to go to"),
    Field("unit_id", "integer", required=True, minimum=1, description="the squad unit that goes"),
    Field("instructions", max_length=2000, description="what to do there"),
)


async def create_order(request: web.Request) -> web.Response:
    user = require_role(request, *orders.DISPATCH_ROLES)
    body = await json_body(request, ORDER_BODY)
    order = await orders.create_order(
        request.app[CTX],
        incident_id=body["incident_id"],
        unit_id=body["unit_id"],
        instructions=str(body.get("instructions") or ""),
        actor=user,
    )
    return web.json_response(order, status=201)


ORDER_LIST_QUERY = (
    Field("unit_id", "integer", minimum=1),
    Field("incident_id", "integer", minimum=1),
    Field("open", "boolean", description="only pending, delivered and accepted orders"),
    Field("limit", "integer", minimum=1, maximum=500),
)


async def list_orders(request: web.Request) -> web.Response:
    q = query_params(request, ORDER_LIST_QUERY)
    found = await orders.list_orders(
        request.app[CTX],
        current_user(request),
        unit_id=q.get("unit_id"),
        incident_id=q.get("incident_id"),
        open_only=bool(q.get("open")),
        limit=q.get("limit", 100),
    )
    return web.json_response({"orders": found})


async def get_order(request: web.Request) -> web.Response:
    order = await orders.get_order(request.app[CTX], _id(request), current_user(request))
    if order is None:
        raise not_found("指令", "order")
    return web.json_response(order)


async def cancel_order(request: web.Request) -> web.Response:
    user = require_role(request, *orders.DISPATCH_ROLES)
    return web.json_response(await orders.cancel(request.app[CTX], _id(request), user))


REASSIGN_BODY = (
    Field("unit_id", "integer", minimum=1, description="the unit to give the case to; absent: the nearest available"),
)


async def reassign_order(request: web.Request) -> web.Response:
    user = require_role(request, *orders.DISPATCH_ROLES)
    body = await json_body(request, REASSIGN_BODY)
    order = await orders.reassign(request.app[CTX], _id(request), user, body.get("unit_id"))
    return web.json_response(order, status=201)


async def ack_order(request: web.Request) -> web.Response:
    return web.json_response(await orders.acknowledge(request.app[CTX], _id(request), current_user(request)))


async def accept_order(request: web.Request) -> web.Response:
    return web.json_response(await orders.accept(request.app[CTX], _id(request), current_user(request)))


DECLINE_BODY = (Field("reason", max_length=2000, description="why the squad cannot go"),)


async def decline_order(request: web.Request) -> web.Response:
    body = await json_body(request, DECLINE_BODY)
    order = await orders.decline(request.app[CTX], _id(request), current_user(request), body.get("reason"))
    return web.json_response(order)


HANDLED_FIELDS = (Field("note", required=True, max_length=4000, description="what the squad did on site"),)


async def handled_order(request: web.Request) -> web.Response:
    """The squad is done on site: JSON ``{note}``, or multipart with a ``handled`` JSON part and
    ``photo`` parts (the photos are the case's feedback photos too)."""
    user = current_user(request)
    ctx = request.app[CTX]
    store = ctx[MEDIA]
    async with store.staging() as stage:
        submission = await read_part_and_photos(
            request, stage, "handled", lambda data: check_fields(data, HANDLED_FIELDS)
        )
        order = await orders.handled(ctx, _id(request), user, str(submission.parsed["note"]), stage.photos)
        store.place_all(stage)
    return web.json_response(order)


async def list_alerts(request: web.Request) -> web.Response:
    return web.json_response({"alerts": await orders.open_alerts(request.app[CTX], jurisdiction(request))})


RESOLVE_BODY = (Field("note", max_length=2000, description="what was done"),)


async def resolve_alert(request: web.Request) -> web.Response:
    user = require_role(request, *orders.DISPATCH_ROLES)
    body = await json_body(request, RESOLVE_BODY)
    return web.json_response(await orders.resolve_alert(request.app[CTX], _id(request), user, body.get("note")))


async def asyncapi(request: web.Request) -> web.Response:
    doc = asyncapi_document()
    return web.json_response(doc, dumps=lambda o: json.dumps(o, ensure_ascii=False))


# -- the two websockets ----------------------------------------------------------------------------


async def board_ws(request: web.Request) -> web.StreamResponse:
    """``GET /ws/board?token=…&since=SEQ``: snapshot or resume, then changes (docs/live.md)."""
    user = current_user(request)
    since: int | None = None
    raw = request.query.get("since")
    if raw not in (None, ""):
        try:
            since = int(str(raw))
        except ValueError:
            since = -1
        if since < 0:
            raise invalid({"since": ("应为非负整数", "must be a non-negative integer")})
    ctx = request.app[CTX]
    # Pings every heartbeat_interval: a board that stops answering them is closed (an idle, dead peer).
    ws = web.WebSocketResponse(
        compress=ctx.settings.live.compression,
        max_msg_size=65536,
        heartbeat=ctx.settings.live.heartbeat_interval,
    )
    await ws.prepare(request)
    # A duty console (``console=1``) makes its officer present for the hotline queue while it is
    # connected: calls ring the logged-in officers (docs/hotline.md). A wall display does not.
    presence = ctx.get(PRESENCE) if request.query.get("console") == "1" else None
    if presence is not None and not await _present(ctx, presence.connected(user)):
        presence = None  # Redis is away: the board works, the officer is not offered calls meanwhile
    try:
        await _serve_board(ctx[BOARD_HUB], request, ws, user, since)
    finally:
        if presence is not None:
            await asyncio.shield(_present(ctx, presence.disconnected(user)))
    return ws


async def _present(ctx: Context, step: Awaitable[None]) -> bool:
    """Run a hotline presence step (Redis); False when Redis is unavailable (logged once per outage)."""
    try:
        await step
    except Exception as exc:
        if store_failure(ctx, exc) is None:
            raise
        return False
    return True


async def _serve_board(
    hub: BoardHub, request: web.Request, ws: web.WebSocketResponse, user: User, since: int | None
) -> None:
    transport = request.transport
    assert isinstance(transport, asyncio.Transport)
    c = hub.register(ws, transport, user)
    structlog.contextvars.bind_contextvars(conn_id=c.conn_id)
    try:
        await hub.start(c, since)
        async for _msg in ws:
            pass  # boards only listen; pings are answered by aiohttp
    except (ConnectionError, asyncio.CancelledError):
        pass
    except Exception as exc:
        if store_failure(request.app[CTX], exc) is not None:
            # RFC 6455 §7.4.1 1013 Try Again Later: a store is unavailable (logged once per outage).
            if not ws.closed:
                await ws.close(code=1013, message=b"store unavailable: reconnect later with since=")
        else:
            log.exception("board_failed", user=user.username)
            if not ws.closed:
                await ws.close(code=1011, message=b"internal error: reconnect")
    finally:
        hub.unregister(c)


async def squad_ws(request: web.Request) -> web.StreamResponse:
    """``GET /ws/squad?token=…``: orders for the user's units, receipts, status, positions."""
    user = current_user(request)
    ctx = request.app[CTX]
    settings = ctx.settings.live
    ws = web.WebSocketResponse(
        compress=settings.compression, heartbeat=settings.heartbeat_interval, max_msg_size=65536
    )
    await ws.prepare(request)
    hub = ctx[SQUAD_HUB]
    try:
        c = await hub.open(ws, user, request_language(request))
    except Exception as exc:
        if store_failure(ctx, exc) is None:
            raise
        # RFC 6455 §7.4.1 1013 Try Again Later: PostgreSQL is unavailable (logged once per outage).
        await ws.close(code=1013, message=b"store unavailable: reconnect later")
        return ws
    if c is None:
        return ws
    try:
        async for msg in ws:
            if msg.type == WSMsgType.TEXT:
                try:
                    await hub.handle(c, msg.data)
                except Exception as exc:
                    refusal = as_unavailable(ctx, exc)
                    if refusal is None:
                        raise
                    c.send({"type": "error", **_device_error(refusal, c.lang)})
            elif msg.type == WSMsgType.BINARY:
                c.send({"type": "error", "code": "invalid_json", "message": "binary messages are not used"})
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        await hub.close(c)
    return ws


def _device_error(exc: DomainError, lang: str) -> dict[str, Any]:
    """A refusal as the squad protocol sends it: the HTTP status the same request would get, too."""
    answer = from_domain(exc)
    return {"status": answer.status, **answer.body(lang)["error"]}


SINCE_QUERY = (
    Field("token", required=True, description="bearer token (browsers cannot set headers on websockets)"),
    Field("since", "integer", minimum=0, description="last seq received: resume instead of a snapshot"),
)

ROUTES = [
    ApiRoute(
        "POST",
        "/api/v1/orders",
        create_order,
        "Order a squad unit to a case; stored, then pushed to the unit's devices",
        "orders",
        body=ORDER_BODY,
        responses={201: "the order, state pending", 404: "case or unit not visible", 409: "case closed or unit off duty"},
    ),
    ApiRoute("GET", "/api/v1/orders", list_orders, "Orders of visible units or of my units", "orders", query=ORDER_LIST_QUERY),
    ApiRoute(
        "GET",
        r"/api/v1/orders/{id:\d+}",
        get_order,
        "An order with delivered_at, state, receipts and its timeline",
        "orders",
        responses={200: "the order", 404: "no such order"},
    ),
    ApiRoute("POST", r"/api/v1/orders/{id:\d+}/cancel", cancel_order, "Cancel an open order", "orders",
             responses={200: "the order", 409: "already final"}),
    ApiRoute(
        "POST",
        r"/api/v1/orders/{id:\d+}/reassign",
        reassign_order,
        "Give the case to another unit (default: the nearest available one); returns the new order",
        "orders",
        body=REASSIGN_BODY,
        responses={201: "the new order", 409: "not reassignable, or no unit available"},
    ),
    ApiRoute("POST", r"/api/v1/orders/{id:\d+}/ack", ack_order,
             "Receipt from a member's device (the websocket's ack, over HTTP)", "orders"),
    ApiRoute("POST", r"/api/v1/orders/{id:\d+}/accept", accept_order, "A member accepts the order", "orders",
             responses={200: "the order", 409: "not acceptable in its state"}),
    ApiRoute("POST", r"/api/v1/orders/{id:\d+}/decline", decline_order, "A member declines the order", "orders",
             body=DECLINE_BODY, responses={200: "the order", 409: "not declinable in its state"}),
    ApiRoute(
        "POST",
        r"/api/v1/orders/{id:\d+}/handled",
        handled_order,
        "The squad is done on site (处置完毕): notes and photos; the case's feedback when the squad handles it",
        "orders",
        body=HANDLED_FIELDS,
        content_type="multipart/form-data",
        responses={200: "the order, completed", 409: "not accepted", 413: "photo too large", 422: "no note"},
    ),
    ApiRoute("GET", "/api/v1/alerts", list_alerts, "Open alerts of the jurisdiction (orders not accepted)", "orders"),
    ApiRoute("POST", r"/api/v1/alerts/{id:\d+}/resolve", resolve_alert, "Mark an alert dealt with", "orders",
             body=RESOLVE_BODY),
    ApiRoute(
        "GET",
        "/ws/board",
        board_ws,
        "Websocket: board snapshot then changes in frames (see /api/asyncapi.json and docs/live.md)",
        "live",
        query=SINCE_QUERY,
        responses={101: "switching protocols", 422: "bad since"},
    ),
    ApiRoute(
        "GET",
        "/ws/squad",
        squad_ws,
        "Websocket: orders to the user's squad units, receipts, status, positions (see /api/asyncapi.json)",
        "live",
        query=SINCE_QUERY[:1],
        responses={101: "switching protocols"},
    ),
    ApiRoute("GET", "/api/asyncapi.json", asyncapi, "AsyncAPI 3.0 document of the two websockets", "live", public=True),
]


# -- assembly ------------------------------------------------------------------------------------------


def setup(app: web.Application) -> None:
    ctx = app[CTX]
    add_routes(app, ROUTES)
    ctx.board_sections["orders"] = orders.orders_section
    ctx.board_sections["alerts"] = orders.alerts_section
    if STATUS_REACTIONS not in ctx:
        ctx[STATUS_REACTIONS] = []
    ctx[STATUS_REACTIONS] += [orders.complete_unit_orders, orders.report_progress]
    if CASE_ENDED not in ctx:
        ctx[CASE_ENDED] = []
    ctx[CASE_ENDED].append(orders.cancel_case_orders)
    ctx[ORDER_ACCEPTANCE] = _order_acceptance(ctx)
    app.cleanup_ctx.append(_live_ctx)
    app.on_shutdown.append(_close_websockets)


def _order_acceptance(ctx: Context) -> OrderAcceptance:
    """The hotline's 叫应 accepts an order on the phone through the squad app's own accept."""

    async def accept(order_id: int, user: User) -> dict[str, Any]:
        return await orders.accept(ctx, order_id, user)

    return accept


async def _live_ctx(app: web.Application) -> AsyncIterator[None]:
    ctx = app[CTX]
    feed = ctx[FEED] = Feed(ctx)
    await feed.start()
    board = ctx[BOARD_HUB] = BoardHub(ctx)
    board.received = feed.cursor
    squad = ctx[SQUAD_HUB] = SquadHub(ctx, _device_error)
    timers = ctx[ORDER_TIMERS] = OrderTimers(ctx)
    feed.row_listeners.extend([board.on_rows, squad.on_rows])
    tasks = [
        start_task(ctx, feed.run_subscriber(), "live-feed-subscriber"),
        start_task(ctx, feed.run_relay(), "live-feed-relay"),
        start_task(ctx, board.run(), "live-board-frames"),
        start_task(ctx, board.run_heartbeat(), "live-board-heartbeat"),
        start_task(ctx, squad.run(), "live-squad-hub"),
        start_task(ctx, timers.run(), "live-order-timers"),
    ]
    try:
        await asyncio.wait_for(feed.subscribed.wait(), 10)
    except TimeoutError:
        log.warning("feed_not_subscribed_yet")
    log.info("live_started", cursor=feed.cursor)
    yield
    await stop_tasks(tasks)


async def _close_websockets(app: web.Application) -> None:
    ctx = app[CTX]
    if BOARD_HUB in ctx:
        await ctx[BOARD_HUB].close_all()
    if SQUAD_HUB in ctx:
        await ctx[SQUAD_HUB].close_all()
