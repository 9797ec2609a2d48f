"""The asyncpg pool: JSON codecs and one place that opens it."""

from __future__ import annotations

import json

import asyncpg

from dispatchd.config import DatabaseSettings


async def init_connection(conn: asyncpg.Connection) -> None:
    for typ in ("json", "jsonb"):
        await conn.set_type_codec(
            typ,
            encoder=lambda v: json.dumps(v, ensure_ascii=False, default=str),
            decoder=json.loads,
            schema="pg_catalog",
        )


async def create_pool(url: str, settings: DatabaseSettings) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        url,
        min_size=settings.pool_min,
        max_size=settings.pool_max,
        init=init_connection,
        command_timeout=60,
    )
    assert pool is not None
    return pool
