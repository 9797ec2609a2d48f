"""叫应: when an order is not accepted in time, ring the unit's people until one accepts it.

An order still ``pending`` or ``delivered`` ``[voice] escalate_after`` seconds after it was sent,
whose unit has a call list, is claimed by one instance (``voice_escalations``, once per order). That
instance rings the people on the list in order through the trunk. Whoever answers hears the
escalation prompt; pressing 1 accepts the order — through :func:`dispatchd.live.orders.accept`, the
very path of the squad app's accept, as that member (registered as ``ORDER_ACCEPTANCE`` by live's
setup, so that the hotline imports nothing of live) — and they hear the confirmation; another key,
no key after the prompt was played twice, no answer within ``[voice] ring_timeout``, busy: the next
person. The run ends accepted, exhausted (nobody accepted) or stopped (the order was accepted or
cancelled meanwhile). Each call is a call out of kind ``escalation``, recorded like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from dispatchd.channels.hotline.dialer import Outbound
from dispatchd.channels.hotline.slots import HOTLINES, ORDER_ACCEPTANCE
from dispatchd.channels.hotline.voice import callouts
from dispatchd.channels.hotline.voice.switch import recording_paths
from dispatchd.context import Context
from dispatchd.domain.hotlines import Prompt
from dispatchd.errors import DomainError
from dispatchd.store.users import get_user
from dispatchd.tasks import every

log = structlog.get_logger("dispatchd.voice")

__all__ = ["escalate", "keep_escalating", "ring_for_key"]


async def keep_escalating(ctx: Context, edge: Any, interval: float = 1.0) -> None:
    """Claim due orders and ring for each, until cancelled (on an instance with a SIP edge)."""
    after = ctx.settings.voice.escalate_after
    if after <= 0 or edge.dialer.trunk is None:
        return

    async def round_() -> None:
        for row in await callouts.claim_escalations(ctx, after):
            log.info("escalation_started", order_id=row["order_id"], unit_id=row["unit_id"])
            edge.later(escalate(ctx, edge, int(row["order_id"]), int(row["unit_id"])))

    await every(ctx, interval, round_, "escalation_round_failed", wait_first=True, logger=log)


async def escalate(ctx: Context, edge: Any, order_id: int, unit_id: int) -> str:
    """One run for one order; returns how it ended (accepted, exhausted, stopped)."""
    outcome = "exhausted"
    accepted_by: int | None = None
    try:
        for target in await callouts.escalation_targets(ctx, unit_id):
            order = await callouts.order_row(ctx, order_id)
            if order["state"] not in callouts.AWAITING_ACCEPT:
                outcome = "stopped"
                break
            if await _ring(ctx, edge, order, target):
                outcome, accepted_by = "accepted", int(target["user_id"])
                break
    except Exception:
        log.exception("escalation_failed", order_id=order_id)
        outcome = "stopped"
    await callouts.finish_escalation(ctx, order_id, outcome, accepted_by)
    return outcome


async def _ring(ctx: Context, edge: Any, order: Any, target: Any) -> bool:
    """Ring one person; True when they accepted the order."""
    directory = ctx[HOTLINES]
    callout = await callouts.create(
        ctx,
        kind="escalation",
        org=order["org_path"][-1],
        area_code=directory.area_code,
        number=target["phone"],
        incident_id=order["incident_id"],
        order_id=order["id"],
        callee_id=target["user_id"],
    )
    result = await ring_for_key(
        ctx,
        edge,
        callout,
        directory.prompts.escalation,
        directory.prompts.escalation_accepted,
        lambda: _accept(ctx, order["id"], int(target["user_id"])),
        ("accepted", "not_accepted"),
    )
    accepted = result == "accepted"
    log.info("escalation_call", order_id=order["id"], callee_id=target["user_id"], accepted=accepted)
    return accepted


async def ring_for_key(
    ctx: Context,
    edge: Any,
    callout: dict[str, Any],
    prompt: Prompt,
    confirmation: Prompt,
    on_one: Callable[[], Awaitable[bool]],
    results: tuple[str, str],
) -> str:
    """Dial ``callout``'s number through the trunk; whoever answers hears ``prompt`` (twice at most)
    and pressing 1 runs ``on_one``; when that holds they hear ``confirmation``. The call out is
    recorded at each step and ends with ``results[0]`` (1 pressed and ``on_one`` held) or
    ``results[1]``; busy, no answer or a failure end it ``failed``. Returns the result recorded:
    ``results[0]``, ``results[1]``, ``busy``, ``no_answer`` or ``failed``."""
    settings = ctx.settings.voice
    outbound: Outbound = await edge.dialer.dial(callout["number"])
    await callouts.record(ctx, callout["id"], "dialled", external_id=outbound.key)
    if not await _answered(edge, outbound, settings.ring_timeout):
        reason, status = outbound.over.result() if outbound.over.done() else ("no_answer", 0)
        result = (
            "busy"
            if reason == "busy"
            else "no_answer"
            if reason in ("no_answer", "cancelled", "timeout")
            else "failed"
        )
        await callouts.record(
            ctx,
            callout["id"],
            "failed",
            state="failed",
            result=result,
            sip_status=status or None,
            ended_at=ctx.clock.now(),
        )
        return result
    mix, legs = recording_paths(
        ctx.settings.data.dir, ctx.clock.now(), callout["id"], legs=False, prefix="callout"
    )
    media = outbound.media
    media.record(mix, legs)
    await callouts.record(
        ctx,
        callout["id"],
        "answered",
        state="answered",
        answered_at=ctx.clock.now(),
        recording=str(mix.relative_to(ctx.settings.data.dir)),
    )
    keys: asyncio.Queue[str] = asyncio.Queue()
    media.on_key = keys.put_nowait
    media.mode = "prompts"
    spoken = edge.prompts.encoded(prompt, media.codec, beeps=3)
    pressed: str | None = None
    for _ in range(2):
        media.play([("prompt", spoken)])
        pressed = await _key(keys, outbound, len(spoken) / 8000 + settings.escalate_key_timeout)
        if pressed is not None or outbound.over.done():
            break
    held = False
    if pressed == "1" and not outbound.over.done():
        held = await on_one()
        if held:
            confirm = edge.prompts.encoded(confirmation, media.codec, beeps=1)
            media.play([("confirmed", confirm)])
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(len(confirm) / 8000 + 0.3):
                    await asyncio.shield(outbound.over)
    if not outbound.over.done():
        edge.dialer.hangup(outbound)
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            await asyncio.shield(outbound.over)
    ended = results[0] if held else results[1]
    await callouts.record(ctx, callout["id"], "ended", state="ended", result=ended, ended_at=ctx.clock.now())
    log.debug("call_out_keyed", callout_id=callout["id"], pressed=pressed, held=held)
    return ended


async def _answered(edge: Any, outbound: Outbound, ring_for: float) -> bool:
    answered: asyncio.Future[Any] = asyncio.ensure_future(outbound.answered.wait())
    over: asyncio.Future[Any] = outbound.over
    try:
        await asyncio.wait({answered, over}, timeout=ring_for, return_when=asyncio.FIRST_COMPLETED)
    finally:
        answered.cancel()
    if outbound.answered.is_set() and not outbound.over.done():
        return True
    if not outbound.over.done():
        edge.dialer.hangup(outbound)  # rang out: CANCEL
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await asyncio.shield(outbound.over)
    return False


async def _key(keys: asyncio.Queue[str], outbound: Outbound, wait_for: float) -> str | None:
    getting: asyncio.Future[Any] = asyncio.ensure_future(keys.get())
    over: asyncio.Future[Any] = outbound.over
    try:
        done, _ = await asyncio.wait({getting, over}, timeout=wait_for, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not getting.done():
            getting.cancel()
    return str(getting.result()) if getting in done else None


async def _accept(ctx: Context, order_id: int, user_id: int) -> bool:
    """The squad member's acceptance, recorded exactly as their phone's accept would record it."""
    async with ctx.pool.acquire() as conn:
        user = await get_user(conn, user_id)
    if user is None:
        return False
    accept = ctx.get(ORDER_ACCEPTANCE)
    if accept is None:
        log.error("escalation_cannot_accept", order_id=order_id, reason="orders are not set up here")
        return False
    try:
        order = await accept(order_id, user)
    except DomainError as exc:
        log.info("escalation_accept_refused", order_id=order_id, code=exc.code)
        return False
    return bool(order["state"] == "accepted")
