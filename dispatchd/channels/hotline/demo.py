"""Simulated callers of ``dispatchd dev`` (filled in below)."""

from __future__ import annotations

from aiohttp import web


async def run_demo(app: web.Application) -> None:
    return None
