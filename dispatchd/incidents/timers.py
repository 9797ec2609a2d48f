"""Deadline timers (限期反馈): warning, overdue and automatic escalation, fired from PostgreSQL.

Timers are rows of ``incident_timers`` written in the transaction that starts a step's clock
(:mod:`dispatchd.incidents.store`), so they survive a restart.  :func:`fire_due` fires every
timer due at the single clock's ``now``; :func:`run_timers` calls it every
``incidents.timer_interval`` seconds.  Tests move the fake clock and call :func:`fire_due`.

Each timer fires in its own transaction, which locks the case first (``FOR UPDATE SKIP
LOCKED``: a case another instance or an officer holds is left for the next round) and then the
timer, re-checking that it is still pending — so several instances never fire one timer twice,
and the lock order (case, then timer) is the same as a transition's.

* ``warning`` (临期): the case is marked ``warned``; audit ``deadline_warning``.
* ``overdue`` (超期): the case is marked ``overdue``; audit ``deadline_overdue``.
* ``escalate`` (超期上报): the state machine's ``escalate`` as :func:`system_actor` — the same
  rule path as a person passing the case one level up; at the top level it is logged and dropped.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Final

import asyncpg
import structlog

from dispatchd.context import Context, Slot
from dispatchd.domain.deadlines import system_actor
from dispatchd.domain.incident import Action, Command
from dispatchd.errors import DomainError
from dispatchd.incidents import store
from dispatchd.incidents.service import record_case, transition_locked
from dispatchd.store.changes import SYSTEM
from dispatchd.tasks import every

log = structlog.get_logger("dispatchd.incidents.timers")

# One round at a time per instance, so a caller of fire_due sees every due timer fired on return.
FIRING_LOCK: Final = Slot[asyncio.Lock]("incident_timer_lock")
_BATCH: Final = 200
_ESCALATION_REASON: Final = "超过办理时限，系统自动上报 (deadline passed: escalated automatically)"


async def fire_due(ctx: Context, now: datetime | None = None) -> int:
    """Fire every timer due at ``now`` (default: the clock's now); return how many fired."""
    when = now or ctx.clock.now()
    fired = 0
    async with ctx[FIRING_LOCK], ctx.pool.acquire() as conn:
        while True:
            due = await conn.fetch(
                "SELECT id, incident_id FROM incident_timers WHERE fired_at IS NULL AND fire_at <= $1"
                " ORDER BY fire_at, id LIMIT $2",
                when,
                _BATCH,
            )
            progressed = 0
            for timer in due:
                if await _fire_one(ctx, conn, timer["id"], timer["incident_id"], when):
                    progressed += 1
            fired += progressed
            if len(due) < _BATCH or progressed == 0:
                return fired


async def _fire_one(
    ctx: Context, conn: asyncpg.Connection, timer_id: int, incident_id: int, now: datetime
) -> bool:
    async with conn.transaction():
        case = await conn.fetchrow(
            "SELECT * FROM incidents WHERE id = $1 FOR UPDATE SKIP LOCKED", incident_id
        )
        if case is None:
            return False  # another instance or an officer holds it: next round
        timer = await conn.fetchrow(
            "SELECT * FROM incident_timers WHERE id = $1 AND fired_at IS NULL FOR UPDATE SKIP LOCKED",
            timer_id,
        )
        if timer is None:
            return False  # fired or cancelled meanwhile
        await conn.execute("UPDATE incident_timers SET fired_at = $2 WHERE id = $1", timer_id, now)
        with structlog.contextvars.bound_contextvars(incident_id=incident_id, incident_number=case["number"]):
            kind, step = timer["kind"], timer["step"]
            if kind == "escalate":
                await _escalate(ctx, conn, case, step)
            else:
                await _mark(ctx, conn, case, kind, step, timer["fire_at"], now)
    return True


async def _mark(
    ctx: Context,
    conn: asyncpg.Connection,
    case: asyncpg.Record,
    kind: str,
    step: str,
    fire_at: datetime,
    now: datetime,
) -> None:
    action = store.DEADLINE_WARNING if kind == "warning" else store.DEADLINE_OVERDUE
    if kind == "warning":
        await conn.execute("UPDATE incidents SET warned = true WHERE id = $1", case["id"])
    else:
        await conn.execute(
            "UPDATE incidents SET warned = true, overdue = true, ever_overdue = true WHERE id = $1",
            case["id"],
        )
    after = await conn.fetchrow("SELECT * FROM incidents WHERE id = $1", case["id"])
    await record_case(
        ctx,
        conn,
        after,
        action,
        SYSTEM,
        from_state=case["state"],
        detail={"step": step, "due_at": (case["deadline_at"] or fire_at).isoformat()},
    )
    log.info(action, step=step, state=case["state"], owner_unit=case["owner_unit"])


async def _escalate(ctx: Context, conn: asyncpg.Connection, case: asyncpg.Record, step: str) -> None:
    command = Command(Action.escalate, version=case["version"], reason=_ESCALATION_REASON)
    try:
        async with conn.transaction():  # a refusal leaves the fired timer recorded, nothing else
            await transition_locked(ctx, conn, case, command, system_actor(case["owner_unit"]), viewer=None)
    except DomainError as exc:
        log.warning("auto_escalation_refused", step=step, code=exc.code, reason=exc.message_en)
        return
    log.info("auto_escalated", step=step, from_unit=case["owner_unit"])


async def run_timers(ctx: Context) -> None:
    """Fire due timers every ``incidents.timer_interval`` seconds for the life of the app (a bad round
    is logged, an outage once; the next one tries again)."""
    await every(ctx, ctx.settings.incidents.timer_interval, lambda: fire_due(ctx), "deadline_timers_failed", logger=log)
