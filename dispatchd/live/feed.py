"""The change feed: outbox rows, in seq order, to every instance.

One **relay** per deployment (whoever holds a PostgreSQL session advisory lock; when its connection
dies PostgreSQL releases the lock and another instance takes over within
``[live] relay_election_interval``) tails the outbox: ``SELECT … WHERE seq > last ORDER BY seq``,
woken by the ``NOTIFY`` the outbox trigger sends at commit, with a poll as fallback. Writers take one
advisory transaction lock before inserting (:mod:`dispatchd.store.changes`), so rows become visible
in seq order and the tail never skips one. It publishes each batch to Redis as
``{"prev": <seq published before>, "rows": [...]}`` and, when idle, a heartbeat (``rows: []``) every
second.

Every instance **subscribes** and keeps a cursor (the last seq it handed to its clients). A batch
whose ``prev`` is beyond the cursor means a lost message: the rows in between are read from
PostgreSQL first. After a Redis reconnect, or when the relay falls silent, the instance catches up
from PostgreSQL too; while Redis is down it polls PostgreSQL. Redis is never the only copy.

The leader also prunes rows older than ``[live] retention_hours`` and records the highest pruned
seq in ``feed_state``, so that a board resuming from before it gets a snapshot instead.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import Any

import asyncpg
import structlog
from redis.asyncio import Redis

from dispatchd.context import Context
from dispatchd.live.protocol import (
    ChangeRow,
    feed_envelope,
    parse_envelope,
    row_json,
)
from dispatchd.metrics import Metrics
from dispatchd.store import keys
from dispatchd.store.changes import prune_outbox
from dispatchd.store.outage import log_unless_outage
from dispatchd.tasks import raise_if_cancelling

log = structlog.get_logger("dispatchd.live.feed")

RELAY_LOCK = 0x72656C6179  # "relay": pg_try_advisory_lock key of the feed relay
NOTIFY_CHANNEL = "dispatchd_outbox"  # sent by the outbox trigger (migration 0005)
BATCH = 500  # rows per relay batch and per backfill page
RELAY_HEARTBEAT = 1.0  # seconds between relay heartbeats when idle
SILENCE = 3.0  # seconds without a message from the relay before the subscriber polls PostgreSQL
PRUNE_EVERY = 60.0  # seconds between retention passes of the relay

ROW_COLUMNS = "seq, topic, entity_id, org_path, created_at, payload::text AS payload"

RowListener = Callable[[Sequence[ChangeRow]], None]


def record_row(r: asyncpg.Record) -> ChangeRow:
    return ChangeRow(
        seq=r["seq"],
        topic=r["topic"],
        entity_id=r["entity_id"],
        org_path=tuple(r["org_path"]),
        at=r["created_at"].isoformat(),
        data=json.loads(r["payload"]),
    )


async def fetch_rows(
    conn: asyncpg.Connection, after: int, upto: int | None, limit: int, visible_to: str | None = None
) -> list[ChangeRow]:
    """Rows with ``after < seq <= upto`` in seq order, optionally only those a home unit sees."""
    sql = f"SELECT {ROW_COLUMNS} FROM outbox WHERE seq > $1"
    args: list[Any] = [after]
    if upto is not None:
        args.append(upto)
        sql += f" AND seq <= ${len(args)}"
    if visible_to is not None:
        args.append(visible_to)
        sql += f" AND ${len(args)} = ANY(org_path)"
    args.append(limit)
    sql += f" ORDER BY seq LIMIT ${len(args)}"
    return [record_row(r) for r in await conn.fetch(sql, *args)]


async def feed_head(conn: asyncpg.Connection) -> int:
    """The highest committed seq (0 when the outbox is empty)."""
    head: int = await conn.fetchval("SELECT coalesce(max(seq), 0) FROM outbox")
    return head


async def pruned_through(conn: asyncpg.Connection) -> int:
    value: int = await conn.fetchval("SELECT coalesce((SELECT pruned_through FROM feed_state), 0)")
    return value


async def prune(conn: asyncpg.Connection, before: Any) -> int:
    """Delete rows older than ``before`` (a contiguous run from the start); return the new mark."""
    return await prune_outbox(conn, before)


class Feed:
    """This instance's end of the change feed: the relay loop (if elected) and the subscriber."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.settings = ctx.settings.live
        self.pool: asyncpg.Pool = ctx.pool
        self.redis: Redis = ctx.redis
        self.metrics: Metrics = ctx.metrics
        self.cursor = 0  # last seq handed to the listeners
        self.row_listeners: list[RowListener] = []
        self.is_relay = False
        self.subscribed = asyncio.Event()
        self._last_prune = 0.0

    async def start(self) -> None:
        """Begin at the current head: clients that need older rows read them from PostgreSQL."""
        async with self.pool.acquire() as conn:
            self.cursor = await feed_head(conn)

    # -- handing rows to the listeners -----------------------------------------------------------

    def _deliver(self, rows: Sequence[ChangeRow]) -> None:
        fresh = [r for r in rows if r.seq > self.cursor]
        if not fresh:
            return
        self.cursor = fresh[-1].seq
        self.metrics.live_feed_rows.inc(len(fresh))
        for listener in self.row_listeners:
            try:
                listener(fresh)
            except Exception:
                log.exception("feed_listener_failed", listener=getattr(listener, "__qualname__", "?"))

    async def backfill(self, upto: int | None, reason: str) -> None:
        """Hand over every row after the cursor up to ``upto`` (None: the current head) from PostgreSQL."""
        async with self.pool.acquire() as conn:
            if upto is None:
                upto = await feed_head(conn)
            if upto <= self.cursor:
                return
            self.metrics.live_feed_backfills.labels(reason).inc()
            log.debug("feed_backfill", after=self.cursor, upto=upto, reason=reason)
            while self.cursor < upto:
                rows = await fetch_rows(conn, self.cursor, upto, BATCH)
                if not rows:
                    break
                self._deliver(rows)
        # Holes (rolled-back transactions) at the end: nothing more can commit at or below upto.
        self.cursor = max(self.cursor, upto)

    async def on_batch(self, data: bytes | str) -> None:
        prev, rows = parse_envelope(data)
        if prev > self.cursor:
            await self.backfill(prev, "gap")
        self._deliver(rows)

    # -- subscriber ------------------------------------------------------------------------------

    async def run_subscriber(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.CHANGES_CHANNEL)
                # Anything committed while we were not subscribed comes from PostgreSQL.
                await self.backfill(None, "subscribe")
                self.subscribed.set()
                heard = loop.time()
                while True:
                    msg = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    # redis-py can swallow a cancellation that arrives while it waits for a message.
                    raise_if_cancelling()
                    if msg is None:
                        if loop.time() - heard > SILENCE:
                            await self.backfill(None, "silence")
                            heard = loop.time()
                        continue
                    heard = loop.time()
                    await self.on_batch(msg["data"])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.subscribed.clear()
                raise_if_cancelling()
                log_unless_outage(self.ctx, exc, "feed_subscriber_error")
            finally:
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # redis-py leaves it untyped
                except Exception:  # the connection is already gone
                    pass
            # Redis is unreachable: keep clients current from PostgreSQL until it is back.
            try:
                await self.backfill(None, "redis_down")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling()
                log_unless_outage(self.ctx, exc, "feed_poll_error")
            await asyncio.sleep(self.settings.relay_poll_interval)

    # -- relay -----------------------------------------------------------------------------------

    async def run_relay(self) -> None:
        """Try to become the relay; lead while the lock is held; try again after a failure."""
        while True:
            try:
                async with self.pool.acquire() as conn:
                    if await conn.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK):
                        try:
                            await self._lead(conn)
                        finally:
                            self.is_relay = False
                            self.metrics.live_relay.set(0)
                            if not conn.is_closed():
                                await conn.execute("SELECT pg_advisory_unlock($1)", RELAY_LOCK)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Cleanup after a cancellation (UNLISTEN, unlock on a connection still busy with the
                # cancelled query) can raise and so hide the CancelledError: the task must still stop.
                raise_if_cancelling()
                log_unless_outage(self.ctx, exc, "relay_error")
            await asyncio.sleep(self.settings.relay_election_interval)

    async def _relay_start(self, conn: asyncpg.Connection) -> int:
        head = await feed_head(conn)
        try:
            raw = await self.redis.get(keys.FEED_RELAY_LAST)
        except Exception:
            raw = None
        last = int(raw) if raw else head
        # A mark beyond the head belongs to another database: start at the head.
        return head if last > head else last

    async def _lead(self, conn: asyncpg.Connection) -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()

        def notified(*_: object) -> None:
            wake.set()

        await conn.add_listener(NOTIFY_CHANNEL, notified)
        try:
            last = await self._relay_start(conn)
            self.is_relay = True
            self.metrics.live_relay.set(1)
            log.info("relay_elected", start=last)
            published_at = loop.time()
            while True:
                wake.clear()
                rows = await conn.fetch(
                    f"SELECT {ROW_COLUMNS} FROM outbox WHERE seq > $1 ORDER BY seq LIMIT $2", last, BATCH
                )
                if rows:
                    texts = [
                        row_json(
                            r["seq"], r["topic"], r["entity_id"], r["org_path"], r["created_at"], r["payload"]
                        )
                        for r in rows
                    ]
                    await self._publish(feed_envelope(last, texts), rows[-1]["seq"])
                    self.metrics.live_relay_published.inc(len(rows))
                    last = rows[-1]["seq"]
                    published_at = loop.time()
                    if len(rows) == BATCH:
                        continue
                elif loop.time() - published_at >= RELAY_HEARTBEAT:
                    await self._publish(feed_envelope(last, []), last)
                    published_at = loop.time()
                if loop.time() - self._last_prune >= PRUNE_EVERY:
                    await self.prune_once(conn)
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
                # that races with the wake-up, and the relay would then never stop.
                try:
                    async with asyncio.timeout(min(self.settings.relay_poll_interval, RELAY_HEARTBEAT)):
                        await wake.wait()
                except TimeoutError:
                    pass
        finally:
            if not conn.is_closed():
                await conn.remove_listener(NOTIFY_CHANNEL, notified)

    async def _publish(self, message: str, last: int) -> None:
        """Publish and record the mark atomically; wait for Redis rather than skip a batch."""
        delay = 0.05
        while True:
            try:
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.publish(keys.CHANGES_CHANNEL, message)
                    pipe.set(keys.FEED_RELAY_LAST, last)
                    await pipe.execute()
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log_unless_outage(self.ctx, exc, "relay_publish_failed")
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)

    async def prune_once(self, conn: asyncpg.Connection | None = None) -> int:
        """Delete rows past retention (by the application clock); return the highest pruned seq."""
        self._last_prune = asyncio.get_running_loop().time()
        before = self.ctx.clock.now() - timedelta(hours=self.settings.retention_hours)
        if conn is not None:
            return await prune(conn, before)
        async with self.pool.acquire() as own:
            return await prune(own, before)
