"""HTTP API of the live capability: orders, alerts, the two websockets, and the AsyncAPI document."""

from __future__ import annotations

import json

from aiohttp import web

from dispatchd.live import orders
from dispatchd.live.asyncapi import asyncapi_document
from dispatchd.live.board import board_ws
from dispatchd.live.squad import squad_ws
from dispatchd.web.auth import current_user, jurisdiction, require_role
from dispatchd.web.errors import not_found
from dispatchd.web.routing import ApiRoute
from dispatchd.web.validate import Field, json_body, query_params


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
        request.app,
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
        request.app,
        current_user(request),
        unit_id=q.get("unit_id"),
        incident_id=q.get("incident_id"),
        open_only=bool(q.get("open")),
        limit=q.get("limit", 100),
    )
    return web.json_response({"orders": found})


async def get_order(request: web.Request) -> web.Response:
    order = await orders.get_order(request.app, _id(request), current_user(request))
    if order is None:
        raise not_found("指令", "order")
    return web.json_response(order)


async def cancel_order(request: web.Request) -> web.Response:
    user = require_role(request, *orders.DISPATCH_ROLES)
    return web.json_response(await orders.cancel(request.app, _id(request), user))


REASSIGN_BODY = (
    Field("unit_id", "integer", minimum=1, description="the unit to give the case to; absent: the nearest available"),
)


async def reassign_order(request: web.Request) -> web.Response:
    user = require_role(request, *orders.DISPATCH_ROLES)
    body = await json_body(request, REASSIGN_BODY)
    order = await orders.reassign(request.app, _id(request), user, body.get("unit_id"))
    return web.json_response(order, status=201)


async def ack_order(request: web.Request) -> web.Response:
    return web.json_response(await orders.acknowledge(request.app, _id(request), current_user(request)))


async def accept_order(request: web.Request) -> web.Response:
    return web.json_response(await orders.accept(request.app, _id(request), current_user(request)))


DECLINE_BODY = (Field("reason", max_length=2000, description="why the squad cannot go"),)


async def decline_order(request: web.Request) -> web.Response:
    body = await json_body(request, DECLINE_BODY)
    order = await orders.decline(request.app, _id(request), current_user(request), body.get("reason"))
    return web.json_response(order)


async def list_alerts(request: web.Request) -> web.Response:
    return web.json_response({"alerts": await orders.open_alerts(request.app, jurisdiction(request))})


RESOLVE_BODY = (Field("note", max_length=2000, description="what was done"),)


async def resolve_alert(request: web.Request) -> web.Response:
    user = require_role(request, *orders.DISPATCH_ROLES)
    body = await json_body(request, RESOLVE_BODY)
    return web.json_response(await orders.resolve_alert(request.app, _id(request), user, body.get("note")))


async def asyncapi(request: web.Request) -> web.Response:
    doc = asyncapi_document()
    return web.json_response(doc, dumps=lambda o: json.dumps(o, ensure_ascii=False))


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
