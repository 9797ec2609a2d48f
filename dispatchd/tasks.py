"""Stopping background tasks for sure.

A task may lose its cancellation: on Python 3.11 ``asyncio.wait_for`` can swallow one, redis-py's
``PubSub.get_message(timeout=…)`` can too, and a cleanup step that raises inside ``finally`` replaces
the ``CancelledError`` with an ordinary exception that a retry loop then catches. Shutdown therefore
cancels again until the task ends or the budget (seconds) is spent, and retry loops check
:func:`raise_if_cancelling` before they go round again.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar

import structlog

from dispatchd.context import Context
from dispatchd.store.outage import store_failure

log = structlog.get_logger("dispatchd.tasks")

T = TypeVar("T")


def raise_if_cancelling() -> None:
    """Re-raise a cancellation of the current task that something swallowed or replaced."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


async def stop_tasks(tasks: Iterable[asyncio.Task[Any]], budget: float = 8.0) -> list[asyncio.Task[Any]]:
    """Cancel ``tasks`` and wait for them, cancelling again every 0.25 s; return any still running."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + budget
    pending = {t for t in tasks if not t.done()}
    while pending:
        for task in pending:
            task.cancel()
        remaining = deadline - loop.time()
        if remaining <= 0:
            break
        _done, pending = await asyncio.wait(pending, timeout=min(0.25, remaining))
    if pending:
        log.error("tasks_did_not_stop", tasks=sorted(t.get_name() for t in pending))
    return list(pending)


def start_task(ctx: Context, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
    """Run background work for the life of the instance; a crash is logged, not silent."""

    async def guarded() -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception:
            raise_if_cancelling()
            log.exception("background_task_failed", task=name)

    task = asyncio.create_task(guarded(), name=name)
    ctx.tasks.append(task)
    return task


async def every(
    ctx: Context,
    interval: float | Callable[[], float],
    step: Callable[[], Awaitable[Any]],
    failed: str,
    *,
    wait_first: bool = False,
    logger: Any = None,
) -> None:
    """Run ``step`` every ``interval`` seconds (a number, or read anew each round) until cancelled.

    A round that fails does not stop the next: a store outage is logged once by its tracker (and
    counted), anything else is logged as ``failed`` with its traceback. With ``wait_first`` the
    first round comes after one interval, else at once. ``logger``: the caller's (default: this
    module's).
    """
    out = logger if logger is not None else log

    def pause() -> float:
        return interval() if callable(interval) else interval

    if wait_first:
        await asyncio.sleep(pause())
    while True:
        try:
            await step()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise_if_cancelling()
            if store_failure(ctx, exc) is None:
                out.exception(failed)
        await asyncio.sleep(pause())


async def drain(
    ctx: Context,
    held: deque[T],
    step: Callable[[T], Awaitable[Any]],
    failed: str,
    *,
    fields: Callable[[T], Mapping[str, Any]] | None = None,
    logger: Any = None,
) -> int:
    """Carry out ``step`` on what was held through a store outage, oldest first, until a store fails
    again (the rest stays held for the next round). An item that fails otherwise is logged as
    ``failed`` (with ``fields`` of it) and dropped. Returns how many were carried out."""
    out = logger if logger is not None else log
    done = 0
    while held:
        item = held[0]
        try:
            await step(item)
        except Exception as exc:
            if store_failure(ctx, exc) is not None:
                break  # still away: the next round tries again
            out.exception(failed, **(fields(item) if fields is not None else {}))
        else:
            done += 1
        held.popleft()
    return done
