"""The hotline part of the demo (``dispatchd dev``): simulated callers dial the lines over real SIP.

Callers from a small pool of synthetic numbers (so that repeat callers and their history show)
dial 967999 or one of the merged department lines on this instance's SIP port over UDP loopback,
about one call every 90 seconds at ``demo.speed`` 1. Each has a patience (15–90 s) after which it
hangs up (CANCEL), and a talk time once answered. A simulated desk — the demo ``desk`` account —
answers most waiting calls after a few seconds, leaving the others for whoever runs the demo, and
makes a case of about half of the calls it answers. Every time is divided by ``demo.speed``.

The numbers are synthetic (the 1380577 block), not anyone's.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import Final

import structlog

from dispatchd.channels.hotline import calls
from dispatchd.channels.hotline.slots import HOTLINES, PRESENCE, SIP
from dispatchd.channels.hotline.uac import SipCaller
from dispatchd.context import Context
from dispatchd.errors import DomainError
from dispatchd.store.users import User, find_for_login
from dispatchd.tasks import stop_tasks

log = structlog.get_logger("dispatchd.demo")

MEAN_INTERVAL: Final = 90.0
DESK_USER: Final = "desk"  # the simulated officer (演示模拟值班员), never the real duty account
_CALLERS: Final = tuple(f"1380577{n:04d}" for n in (12, 87, 103, 256, 318, 421, 555, 602, 777, 808, 913, 999))
_NAMES: Final = ("张先生", "李女士", "王师傅", "陈阿姨", "刘先生", "", "", "")
_DESCRIPTIONS: Final = {
    "incident.dispute": "来电反映邻里因噪音发生纠纷，请求调解",
    "incident.dispute.labour": "来电反映工地拖欠工资，约二十名工人讨薪",
    "incident.dispute.consumer": "来电投诉商家拒绝退款",
    "hazard.fire": "来电反映楼道堆放杂物、电动车飞线充电",
    "hazard.public_order": "来电反映夜间有人在广场聚集滋事",
    "hazard.environment": "来电反映河道有异味，疑似偷排污水",
    "hazard.food_safety": "来电反映小餐馆卫生条件差",
    "hazard.work_safety": "来电反映厂房内违规使用明火作业",
}


async def run_demo(ctx: Context) -> None:
    """Simulated callers and the simulated desk, until cancelled."""
    speed = ctx.settings.demo.speed
    tasks: set[asyncio.Task[None]] = set()
    desk = asyncio.create_task(_desk(ctx), name="hotline-demo-desk")
    rng = random.Random()
    try:
        await asyncio.sleep(5 / speed)
        while True:
            task = asyncio.create_task(_one_call(ctx, rng), name="hotline-demo-call")
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            await asyncio.sleep(rng.expovariate(1 / MEAN_INTERVAL) / speed)
    finally:
        await stop_tasks([desk, *tasks])


async def _one_call(ctx: Context, rng: random.Random) -> None:
    speed = ctx.settings.demo.speed
    ports = ctx[SIP].ports
    if "udp" not in ports:
        return
    lines: list[str] = list(ctx[HOTLINES].keys())
    dialled = "967999" if rng.random() < 0.5 or not lines else rng.choice(lines)
    caller = SipCaller(
        "127.0.0.1", ports["udp"], caller=rng.choice(_CALLERS), dialled=dialled, display=rng.choice(_NAMES)
    )
    try:
        outcome = await caller.place(
            patience=rng.uniform(15, 90) / speed,
            talk=rng.uniform(30, 180) / speed,
            audio_seconds=min(2.0, 20 / speed),
        )
    except OSError:
        log.warning("demo_call_failed")
        return
    log.debug("demo_call_done", outcome=outcome.outcome, status=outcome.status)


async def _desk_user(ctx: Context) -> User | None:
    async with ctx.pool.acquire() as conn:
        found = await find_for_login(conn, DESK_USER)
    return found[0] if found is not None else None


async def _desk(ctx: Context) -> None:
    """The demo duty officer: available, answers most calls after 3–20 s, makes cases of half."""
    speed = ctx.settings.demo.speed
    rng = random.Random()
    patience: dict[int, float] = {}
    user: User | None = None
    while True:
        await asyncio.sleep(max(0.05, 1.0 / speed))
        try:
            if user is None:
                user = await _desk_user(ctx)
                if user is None:
                    continue
                await ctx[PRESENCE].set_available(user, True)
            await _desk_round(ctx, user, rng, patience)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("demo_desk_failed")


async def _desk_round(
    ctx: Context, user: User, rng: random.Random, patience: dict[int, float]
) -> None:
    speed = ctx.settings.demo.speed
    async with ctx.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, state, category, offered_at, answered_at, incident_id FROM hotline_calls"
            " WHERE state IN ('ringing', 'queued', 'answered') AND source = 'sip'"
        )
    for row in rows:
        wait = patience.setdefault(
            row["id"], rng.uniform(3, 20) / speed if rng.random() < 0.85 else float("inf")
        )
        if row["state"] in calls.WAITING:
            call = await calls.get_call(ctx, row["id"], None)
            if call is None:
                continue
            waited = calls.call_json(ctx, call)["wait_seconds"]
            if waited >= wait:
                with contextlib.suppress(DomainError, calls.RemoteCall):
                    await calls.answer(ctx, row["id"], user)
                    if rng.random() < 0.5:
                        category = row["category"] or rng.choice(sorted(_DESCRIPTIONS))
                        description = _DESCRIPTIONS.get(category, "群众来电反映情况，请核实处置")
                        await calls.link_incident(
                            ctx, row["id"], user, create={"category": category, "description": description}
                        )
    live = {row["id"] for row in rows}
    for call_id in [c for c in patience if c not in live]:
        del patience[call_id]
