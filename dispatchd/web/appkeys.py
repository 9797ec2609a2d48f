"""Typed keys of everything the application holds; nothing lives in module globals."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
from aiohttp import web
from redis.asyncio import Redis

from dispatchd.clock import Clock
from dispatchd.config import Settings
from dispatchd.context import Context
from dispatchd.domain.orgs import GridLocator, OrgTree
from dispatchd.domain.taxonomy import Taxonomy
from dispatchd.metrics import Metrics
from dispatchd.web.routing import ApiRoute

# The context services work in (dispatchd/context.py); the keys below are its parts, kept while
# services move over to it.
CTX = web.AppKey("ctx", Context)
SETTINGS = web.AppKey("settings", Settings)
CLOCK = web.AppKey("clock", Clock)
POOL = web.AppKey("pool", asyncpg.Pool)
REDIS = web.AppKey("redis", Redis)
ORGS = web.AppKey("orgs", OrgTree)
LOCATOR = web.AppKey("locator", GridLocator)
TAXONOMY = web.AppKey("taxonomy", Taxonomy)
METRICS = web.AppKey("metrics", Metrics)
API_ROUTES = web.AppKey("api_routes", list[ApiRoute])
PUBLIC_RESOURCES = web.AppKey("public_resources", set[str])
# Background tasks of the instance, cancelled on shutdown.
TASKS = web.AppKey("tasks", list[asyncio.Task[Any]])
INSTANCE_ID = web.AppKey("instance_id", str)
# Sections of the board snapshot, registered by each capability: name -> async (app, codes) -> data,
# where ``codes`` is the viewer's jurisdiction (a frozenset of unit codes).
BoardSection = Callable[[web.Application, frozenset[str]], Awaitable[Any]]
BOARD_SECTIONS = web.AppKey("board_sections", dict[str, BoardSection])
