"""The asyncpg pool: JSON codecs, deadlines on every call, and one place that opens it.

Every statement has a deadline twice over: PostgreSQL cancels it after ``[database]
statement_timeout`` (``statement_timeout`` of the session), and the client gives up one second
later (``command_timeout``) should the server not even answer that, as when it is frozen. Taking a
connection from the pool waits at most ``acquire_timeout`` (and so does giving it back); opening one
at most ``connect_timeout``. While :class:`~dispatchd.store.outage.Outages` knows PostgreSQL is
down, taking a connection fails at once with :class:`~dispatchd.store.outage.StoreDown`.
"""

from __future__ import annotations

import asyncio
import json
from types import TracebackType
from typing import Any

import asyncpg
from asyncpg.pool import PoolAcquireContext

from dispatchd.config import DatabaseSettings
from dispatchd.store.outage import POSTGRES, Outages, PoolBusy, classify


def like_anywhere(text: str) -> str:
    """A LIKE/ILIKE pattern matching ``text`` anywhere, its own ``%``, ``_`` and ``\\`` taken literally."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


async def init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ,
            encoder=lambda v: json.dumps(v, ensure_ascii=False, default=str),
            decoder=json.loads,
            schema="pg_catalog",
        )


class _Transaction:
    """A transaction that does not wait to roll back on a server that stopped answering.

    asyncpg rolls a transaction back when its block raises; after a statement timed out because the
    server is frozen, that ROLLBACK would wait out the deadline a second time. Closing the connection
    rolls the transaction back just as surely (the server ends it with the session), at once.
    """

    __slots__ = ("_conn", "_inner")

    def __init__(self, conn: asyncpg.Connection, inner: Any) -> None:
        self._conn = conn
        self._inner = inner

    async def __aenter__(self) -> Any:
        return await self._inner.__aenter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if isinstance(exc, TimeoutError):
            failure = classify(exc)
            if failure is not None and failure.store == POSTGRES and failure.outage:
                self._conn.terminate()
                return
        await self._inner.__aexit__(exc_type, exc, tb)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)  # start, commit, rollback: as asyncpg's


class DeadlineConnection(asyncpg.Connection):  # type: ignore[misc]  # asyncpg ships no types
    """A connection whose transactions give up at once on a server that stopped answering."""

    def transaction(self, **options: Any) -> Any:
        return _Transaction(self, super().transaction(**options))


class _Acquire:
    """``pool.acquire()`` with the pool's deadline and the outage check (await it or ``async with``)."""

    __slots__ = ("_inner", "_pool")

    def __init__(self, pool: DeadlinePool, timeout: float) -> None:
        self._pool = pool
        self._inner = PoolAcquireContext(pool, timeout)

    async def __aenter__(self) -> asyncpg.Connection:
        self._pool.check()
        try:
            return await self._inner.__aenter__()
        except TimeoutError as exc:
            raise PoolBusy("no pooled connection became free in time") from exc
        except Exception as exc:
            self._pool.failed(exc)
            raise

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None:
            self._pool.failed(exc)  # first: calls made while this connection is given back fail fast
        try:
            await self._inner.__aexit__(exc_type, exc, tb)
        except Exception:
            # Giving back a connection stuck in a timed-out statement fails too (the pool closes
            # it): the error that matters is the one the block raised, which goes on.
            if exc is None:
                raise

    def __await__(self) -> Any:
        self._pool.check()
        return self._inner.__await__()


class DeadlinePool(asyncpg.Pool):  # type: ignore[misc]  # asyncpg ships no types
    """An asyncpg pool whose ``acquire`` has a deadline by default and knows about outages."""

    def __init__(self, *args: Any, acquire_timeout: float, outages: Outages | None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.acquire_timeout = acquire_timeout
        self.outages = outages
        self._expiring: set[asyncio.Future[None]] = set()
        if outages is not None:
            outages.listeners.append(self._store_changed)

    def _store_changed(self, store: str, down: bool) -> None:
        """PostgreSQL is back: connections that lived through the outage (a statement timed out on
        them, a reset that never finished) are replaced, not handed to the next request."""
        if store == POSTGRES and not down and not self.is_closing():
            expiring = asyncio.ensure_future(self.expire_connections())
            self._expiring.add(expiring)
            expiring.add_done_callback(self._expiring.discard)

    def acquire(self, *, timeout: float | None = None) -> Any:
        return _Acquire(self, self.acquire_timeout if timeout is None else timeout)

    def check(self) -> None:
        if self.outages is not None:
            self.outages.check(POSTGRES)

    def failed(self, exc: BaseException) -> None:
        """An outage begins when a call fails because PostgreSQL is down or hung."""
        if self.outages is None:
            return
        failure = classify(exc)
        if failure is not None and failure.outage and failure.store == POSTGRES:
            self.outages.failed(POSTGRES, failure.error)


def connect_options(settings: DatabaseSettings) -> dict[str, Any]:
    """Deadlines of a connection (pool or single): connect, client-side command, server-side statement."""
    return {
        "timeout": settings.connect_timeout,
        "command_timeout": settings.statement_timeout + 1.0,
        "server_settings": {"statement_timeout": str(int(settings.statement_timeout * 1000))},
    }


async def create_pool(url: str, settings: DatabaseSettings, outages: Outages | None = None) -> asyncpg.Pool:
    pool = DeadlinePool(
        url,
        connection_class=DeadlineConnection,
        record_class=asyncpg.Record,
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        max_queries=50000,
        max_inactive_connection_lifetime=300.0,
        init=init_connection,
        setup=None,
        reset=None,
        loop=None,
        connect=None,
        acquire_timeout=settings.acquire_timeout,
        outages=outages,
        **connect_options(settings),
    )
    await pool
    return pool


async def probe(url: str, settings: DatabaseSettings) -> None:
    """Does PostgreSQL answer? A connection of its own, outside the pool (used while it is down)."""
    conn = await asyncpg.connect(url, timeout=settings.connect_timeout)
    try:
        await conn.fetchval("SELECT 1", timeout=settings.connect_timeout)
    finally:
        await conn.close(timeout=settings.connect_timeout)
