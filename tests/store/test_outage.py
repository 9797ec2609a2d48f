"""What counts as a store failure, and of which store (dispatchd.store.outage.classify)."""

from __future__ import annotations

import socket

import asyncpg
import pytest
import redis.asyncio as aioredis

from dispatchd.store.outage import POSTGRES, REDIS, PoolBusy, StoreDown, classify, unavailable


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_a_refused_postgres_connection_is_a_postgres_outage() -> None:
    """Connection refused on loopback (PostgreSQL over TCP stopped) is an outage of PostgreSQL."""
    with pytest.raises(OSError) as err:
        await asyncpg.connect(f"postgresql://x@127.0.0.1:{_closed_port()}/db", timeout=2)
    failure = classify(err.value)
    assert failure is not None and failure.store == POSTGRES and failure.outage


async def test_a_refused_redis_connection_is_a_redis_outage() -> None:
    """Connection refused to Redis is an outage of Redis."""
    client = aioredis.Redis(host="127.0.0.1", port=_closed_port(), socket_connect_timeout=1)
    with pytest.raises(Exception) as err:
        await client.ping()
    await client.aclose()
    failure = classify(err.value)
    assert failure is not None and failure.store == REDIS and failure.outage


def test_busy_is_not_an_outage_and_other_errors_are_not_store_failures() -> None:
    """A full pool or a cancelled statement is 'busy'; a plain ValueError or TimeoutError is nothing."""
    busy = classify(PoolBusy())
    assert busy is not None and busy.store == POSTGRES and not busy.outage
    cancelled = classify(asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout"))
    assert cancelled is not None and not cancelled.outage
    assert classify(ValueError("x")) is None and classify(TimeoutError()) is None
    down = classify(StoreDown(REDIS))
    assert down is not None and down.store == REDIS and down.outage


def test_the_refusal_is_bilingual_with_retry_after() -> None:
    """An outage is answered store_unavailable with the store's name and the retry delay."""
    failure = classify(StoreDown(POSTGRES))
    assert failure is not None
    refusal = unavailable(failure, 7)
    assert refusal.code == "store_unavailable" and refusal.retry_after == 7
    assert "数据库" in refusal.message("zh-CN") and "database" in refusal.message("en")
    assert refusal.extra == {"store": "postgres"}
