"""The demo feed of squad positions (filled in by the demo county's simulated squads)."""

from __future__ import annotations

from aiohttp import web


async def run_demo(app: web.Application) -> None:
    """Simulated squads reporting over the real ports; nothing yet."""
    return None
