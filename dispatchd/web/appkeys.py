"""Typed keys of what the aiohttp application holds: the service context and the HTTP registry."""

from __future__ import annotations

from aiohttp import web

from dispatchd.context import Context
from dispatchd.web.routing import ApiRoute

# The context services work in (dispatchd/context.py): stores, clock, settings, org tree, slots.
CTX = web.AppKey("ctx", Context)
# Every documented route, for /api/openapi.json.
API_ROUTES = web.AppKey("api_routes", list[ApiRoute])
# Routes that need no login (canonical paths).
PUBLIC_RESOURCES = web.AppKey("public_resources", set[str])
