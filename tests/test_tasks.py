"""Stopping background tasks even when they swallow a cancellation; rounds that go on after a
failed one; work held through an outage carried out when the store is back."""

from __future__ import annotations

import asyncio
from collections import deque

import redis.exceptions
from structlog.testing import capture_logs

from dispatchd.tasks import drain, every, raise_if_cancelling, stop_tasks
from dispatchd.web.appkeys import CTX
from tests.conftest import AppFactory


async def _swallows_once() -> None:
    """A loop that loses its first cancellation, as wait_for or a failing cleanup can make it."""
    swallowed = False
    while True:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed = True
            asyncio.current_task().uncancel()  # type: ignore[union-attr]


async def _retry_loop(events: list[str]) -> None:
    """A retry loop whose cleanup turns the cancellation into an ordinary error."""
    while True:
        try:
            try:
                await asyncio.sleep(3600)
            finally:
                raise RuntimeError("connection busy")
        except Exception:
            events.append("caught")
            raise_if_cancelling()


async def test_stop_tasks_cancels_again_until_the_task_ends() -> None:
    """A task that swallowed one cancellation is cancelled again and stops; nothing is left running."""
    task = asyncio.create_task(_swallows_once())
    await asyncio.sleep(0)
    assert await stop_tasks([task], budget=5) == []
    assert task.cancelled()


async def test_raise_if_cancelling_stops_a_retry_loop() -> None:
    """A cancellation replaced by an exception in cleanup still ends the retry loop."""
    events: list[str] = []
    task = asyncio.create_task(_retry_loop(events))
    await asyncio.sleep(0)
    task.cancel()
    await asyncio.wait([task], timeout=5)
    assert task.done() and task.cancelled()
    assert events == ["caught"]


async def test_stop_tasks_reports_a_task_that_will_not_stop() -> None:
    """A task that ignores every cancellation is returned as still running once the budget is spent."""
    release = asyncio.Event()

    async def stubborn() -> None:
        while not release.is_set():
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                asyncio.current_task().uncancel()  # type: ignore[union-attr]

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    left = await stop_tasks([task], budget=0.6)
    assert left == [task] and not task.done()
    release.set()
    task.cancel()
    await asyncio.wait([task], timeout=5)
    assert task.done()


async def test_every_goes_on_after_a_failed_round(make_client: AppFactory) -> None:
    """A round that raises is logged as the loop's failure and the next round runs; a store failure
    is left to the outage tracker (no failure line of the loop); with wait_first the first round
    waits one interval; cancelling stops the loop."""
    client = await make_client()
    ctx = client.server.app[CTX]
    rounds = 0
    done = asyncio.Event()

    async def step() -> None:
        nonlocal rounds
        rounds += 1
        if rounds == 1:
            raise RuntimeError("a bad round")
        if rounds == 2:
            raise redis.exceptions.ConnectionError("Redis went away")
        if rounds == 4:
            done.set()

    with capture_logs() as logs:
        task = asyncio.create_task(every(ctx, 0.01, step, "test_round_failed"))
        await asyncio.wait_for(done.wait(), 5)
        assert await stop_tasks([task]) == []
    failed = [e for e in logs if e["event"] == "test_round_failed"]
    assert len(failed) == 1 and failed[0]["log_level"] == "error"
    assert rounds >= 4

    waited = asyncio.create_task(every(ctx, 0.5, step, "test_round_failed", wait_first=True))
    before = rounds
    await asyncio.sleep(0.1)
    assert rounds == before
    assert await stop_tasks([waited]) == []


async def test_drain_carries_out_held_work_until_a_store_fails_again(make_client: AppFactory) -> None:
    """Held items are carried out oldest first; one failing on its own is logged and dropped; a store
    failure stops the round and keeps that item and the rest for the next one."""
    client = await make_client()
    ctx = client.server.app[CTX]
    held: deque[str] = deque(["a", "bad", "b", "away", "c"])
    done: list[str] = []

    async def step(item: str) -> None:
        if item == "bad":
            raise ValueError("a broken item")
        if item == "away" and not done.count("retry"):
            raise redis.exceptions.ConnectionError("Redis went away")
        done.append(item)

    with capture_logs() as logs:
        assert await drain(ctx, held, step, "test_item_failed", fields=lambda i: {"item": i}) == 2
    assert done == ["a", "b"] and list(held) == ["away", "c"]
    assert [(e["event"], e["item"]) for e in logs if e["event"] == "test_item_failed"] == [("test_item_failed", "bad")]
    done.append("retry")
    assert await drain(ctx, held, step, "test_item_failed") == 2 and not held
