"""The Redis client: deadlines on every call, no silent retries, and the outage check.

Every command waits at most ``[redis] socket_timeout`` for its answer and a connection at most
``connect_timeout`` to open; a failed command is not retried behind the caller's back (the caller
degrades, or answers 503, at once). While :class:`~dispatchd.store.outage.Outages` knows Redis is
down, taking a connection fails at once with :class:`~dispatchd.store.outage.StoreDown`.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from dispatchd.config import RedisSettings
from dispatchd.store.outage import REDIS, Outages


class GuardedPool(aioredis.ConnectionPool):
    """A connection pool that refuses at once while Redis is known to be down."""

    outages: Outages | None = None

    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        if self.outages is not None:
            self.outages.check(REDIS)
        return await super().get_connection(*args, **kwargs)  # type: ignore[no-untyped-call]  # redis-py leaves it untyped


def _options(settings: RedisSettings) -> dict[str, Any]:
    return {
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "retry": Retry(NoBackoff(), 0),
        "health_check_interval": 30,
    }


def open_redis(url: str, settings: RedisSettings, outages: Outages | None = None) -> aioredis.Redis:
    pool = GuardedPool.from_url(url, **_options(settings))
    pool.outages = outages
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes both


async def probe(url: str, settings: RedisSettings) -> None:
    """Does Redis answer? A client of its own (used while it is down)."""
    client = aioredis.Redis.from_url(url, **_options(settings))
    try:
        await client.ping()
    finally:
        await client.aclose()


def as_text(value: bytes | str) -> str:
    """A value read from Redis as text (the client gives bytes unless told to decode)."""
    return value.decode() if isinstance(value, bytes) else value
