"""Active/standby SIP: one instance of a deployment binds the SIP port, the others wait to take over.

A carrier trunk or a PBX sends its INVITEs to one address and port; one process can hold that port.
With ``[sip] standby`` on and a fixed ``[sip] port``, an instance binds the port only while it holds
the PostgreSQL session advisory lock of that port (:func:`sip_lock_key`). The others keep trying
every ``[sip] standby_interval`` seconds. When the holder stops, or its database connection dies,
PostgreSQL frees the lock, the next instance takes it and binds the port (on the same host the
port is free by then; on another host a floating address or the nginx stream proxy moves the
trunk's traffic). The holder checks its lock connection every interval and closes its edge when
the connection is gone, so two instances never both believe they hold the port.

The SIP dialogs of an instance live in its memory: calls in progress when it stops are closed
(``instance_lost``) by the queue round of a surviving instance, as without standby; its calls out
are closed when its edge closes. :func:`edge_tasks` and :func:`close_edge` are what runs beside an
edge and how it ends, with standby or without (``api``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Final

import asyncpg
import structlog

from dispatchd.channels.hotline import calls, remote
from dispatchd.channels.hotline.demo import run_demo
from dispatchd.channels.hotline.edge import SipEdge
from dispatchd.channels.hotline.escalation import keep_escalating
from dispatchd.channels.hotline.slots import SIP
from dispatchd.channels.hotline.voice import callouts
from dispatchd.context import Context
from dispatchd.tasks import raise_if_cancelling, stop_tasks

log = structlog.get_logger("dispatchd.sip")

# pg_try_advisory_lock key space of the SIP ports: "sip" in ASCII above the port number.
_SIP_LOCK_BASE: Final = 0x736970 << 16


def sip_lock_key(port: int) -> int:
    """The advisory lock key of one SIP port (instances on different ports do not exclude each other)."""
    return _SIP_LOCK_BASE | (port & 0xFFFF)


async def hold_sip_port(ctx: Context, serve: Callable[[Context], Awaitable[None]] | None = None) -> None:
    """Until cancelled: take the port's lock when it is free, and run the SIP edge while holding it."""
    serve = serve or serve_edge
    port = ctx.settings.sip.port
    interval = ctx.settings.sip.standby_interval
    key = sip_lock_key(port)
    waiting_logged = False
    while True:
        try:
            async with ctx.pool.acquire() as conn:
                if await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                    waiting_logged = False
                    log.info("sip_active", port=port, instance=ctx.instance_id)
                    try:
                        await _while_locked(conn, serve(ctx), interval)
                    finally:
                        if not conn.is_closed():
                            with contextlib.suppress(Exception):
                                await conn.execute("SELECT pg_advisory_unlock($1)", key)
                elif not waiting_logged:
                    waiting_logged = True
                    log.info("sip_standby", port=port, instance=ctx.instance_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise_if_cancelling()
            log.warning("sip_standby_error", port=port, error=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(interval)


async def _while_locked(conn: asyncpg.Connection, serving: Awaitable[None], interval: float) -> None:
    """Run ``serving`` while the lock's connection answers; stop it when the connection is lost."""
    task = asyncio.ensure_future(serving)
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=interval)
            if done:
                task.result()  # the edge stopped by itself: its error, if any, is logged by the caller
                return
            await asyncio.wait_for(conn.fetchval("SELECT 1"), max(interval, 1.0))
    finally:
        if not task.done():
            await stop_tasks([task])


async def serve_edge(ctx: Context) -> None:
    """Bind the SIP port and serve it (with :func:`edge_tasks`) until cancelled."""
    settings = ctx.settings
    runtime = ctx[SIP]
    edge = SipEdge(ctx)
    runtime.ports.update(await edge.start(settings.sip.port))
    runtime.edge = edge
    tasks = edge_tasks(ctx, edge)
    try:
        await asyncio.Future()  # until cancelled
    finally:
        await stop_tasks(tasks)
        await close_edge(ctx, edge)


def edge_tasks(ctx: Context, edge: SipEdge) -> list[asyncio.Task[None]]:
    """What runs beside a bound SIP edge, active/standby or not: commands from other instances,
    叫应 (its calls go out through this edge) and the demo callers."""
    tasks = [
        asyncio.create_task(remote.serve_commands(ctx), name="hotline-commands"),
        asyncio.create_task(keep_escalating(ctx, edge), name="voice-escalation"),
    ]
    if ctx.settings.demo.enabled:
        tasks.append(asyncio.create_task(run_demo(ctx), name="hotline-demo"))
    return tasks


async def close_edge(ctx: Context, edge: SipEdge) -> None:
    """The edge stops (its tasks stopped first): its calls in and out cannot go on, and are closed."""
    runtime = ctx[SIP]
    runtime.edge = None
    await edge.close()
    with contextlib.suppress(Exception):
        await calls.close_own_calls(ctx)
    with contextlib.suppress(Exception):
        await callouts.close_own(ctx)
    runtime.ports.clear()
