"""The one-number hotline (967999): SIP intake of the merged lines, the call queue, caller history.

``sip`` parses and writes SIP messages, ``transaction`` runs RFC 3261 transactions and ``agent``
answers calls, all three sans I/O; ``edge`` feeds them from UDP and TCP sockets; ``calls`` keeps
the queue and the records in PostgreSQL; ``presence`` knows which officers can take a call;
``remote`` carries commands to the instance holding a call; ``api`` is the HTTP side; ``demo``
the simulated callers of ``dispatchd dev``; ``voice`` the officer's voice in the console, prompts,
recordings and calls out (see its package documentation).

``setup(app)`` adds the ``/api/v1/hotline`` routes, the board section ``calls``, the ``hotline``
statistics section and one cleanup context running the SIP edge, the queue round, the command
listener, the recordings' retention, 叫应 and (with the demo on) the simulated callers.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from dispatchd.incidents.stats import StatsSection
from dispatchd.tasks import raise_if_cancelling, stop_tasks

log = structlog.get_logger("dispatchd.hotline")


def setup(app: web.Application) -> None:
    from dispatchd.channels.hotline import api, calls, voice_api
    from dispatchd.channels.hotline.appkeys import HOTLINES, PRESENCE, SIP, SIP_PORTS, SipRuntime
    from dispatchd.channels.hotline.presence import Presence
    from dispatchd.domain.hotlines import load_hotlines
    from dispatchd.incidents.stats import register_section
    from dispatchd.web.appkeys import BOARD_SECTIONS, CLOCK, INSTANCE_ID, REDIS, SETTINGS, TAXONOMY
    from dispatchd.web.routing import add_routes

    app[HOTLINES] = load_hotlines(app[SETTINGS].paths.hotlines, app[TAXONOMY])
    app[PRESENCE] = Presence(lambda: app[REDIS], app[CLOCK], app[INSTANCE_ID])
    runtime = app[SIP] = SipRuntime()
    app[SIP_PORTS] = runtime.ports
    calls.hotline_org(app)  # a wrong [hotline] org stops the start, with its name
    add_routes(app, api.ROUTES)
    add_routes(app, voice_api.ROUTES)
    app[BOARD_SECTIONS]["calls"] = calls.board_section
    register_section(app, "hotline", _stats_section(app))
    app.cleanup_ctx.append(hotline_ctx)


def _stats_section(app: web.Application) -> StatsSection:
    from dispatchd.channels.hotline.stats import call_statistics
    from dispatchd.web.appkeys import SETTINGS

    async def section(conn: asyncpg.Connection, org: str, start: datetime, end: datetime) -> dict[str, Any]:
        hotline = app[SETTINGS].hotline
        return await call_statistics(
            conn,
            org=org,
            start=start,
            end=end,
            target_s=hotline.answer_target,
            share_required=hotline.answer_share,
        )

    return section


async def hotline_ctx(app: web.Application) -> AsyncIterator[None]:
    """The SIP edge, the queue round, the presence beat, the command listener and the demo callers."""
    from dispatchd.channels.hotline import calls, remote
    from dispatchd.channels.hotline.appkeys import PRESENCE, SIP
    from dispatchd.channels.hotline.edge import SipEdge
    from dispatchd.web.appkeys import SETTINGS

    settings = app[SETTINGS]
    runtime = app[SIP]
    edge: SipEdge | None = SipEdge(app)
    assert edge is not None
    try:
        runtime.ports.update(await edge.start(settings.sip.port))
        runtime.edge = edge
    except OSError as exc:
        # Another instance on this host has the port: this one serves the API without SIP intake.
        log.warning("sip_port_unavailable", port=settings.sip.port, error=str(exc))
        edge = None
    tasks = [
        asyncio.create_task(_queue_loop(app), name="hotline-queue"),
        asyncio.create_task(app[PRESENCE].run(), name="hotline-presence"),
    ]
    if edge is not None:
        tasks.append(asyncio.create_task(remote.serve_commands(app), name="hotline-commands"))
        tasks.append(asyncio.create_task(_voice_retention(app), name="voice-retention"))
        tasks.append(asyncio.create_task(_voice_escalation(app, edge), name="voice-escalation"))
    if settings.demo.enabled and edge is not None:
        from dispatchd.channels.hotline.demo import run_demo

        tasks.append(asyncio.create_task(run_demo(app), name="hotline-demo"))
    try:
        yield
    finally:
        await stop_tasks(tasks)
        if edge is not None:
            runtime.edge = None
            await edge.close()
            with contextlib.suppress(Exception):
                await calls.close_own_calls(app)
            with contextlib.suppress(Exception):
                await _close_own_callouts(app)
        runtime.ports.clear()


async def _voice_retention(app: web.Application) -> None:
    """Recordings older than ``[voice] recording_days`` are deleted (each instance its own files)."""
    from dispatchd.channels.hotline.voice.recordings import keep_purging  # set up late, as above
    from dispatchd.web.appkeys import CTX  # set up late, as above

    await keep_purging(app[CTX])


async def _close_own_callouts(app: web.Application) -> None:
    from dispatchd.channels.hotline.voice.callouts import close_own  # set up late, as above
    from dispatchd.web.appkeys import CTX  # set up late, as above

    await close_own(app[CTX])


async def _voice_escalation(app: web.Application, edge: Any) -> None:
    """叫应: orders not accepted in time ring the unit's call list (with [voice] escalate_after)."""
    from dispatchd.channels.hotline.escalation import keep_escalating  # set up late, as above

    await keep_escalating(app, edge)


async def _queue_loop(app: web.Application) -> None:
    from dispatchd.channels.hotline import calls
    from dispatchd.web.appkeys import SETTINGS

    interval = app[SETTINGS].hotline.queue_interval
    while True:
        await asyncio.sleep(interval)
        try:
            await calls.queue_round(app)
        except asyncio.CancelledError:
            raise
        except Exception:
            raise_if_cancelling()
            log.exception("hotline_queue_round_failed")
