"""Live positions in Redis: one hash per unit plus a GEO set, written by the position sink.

Hash fields (bytes): ``lat lon at speed heading battery source device``; ``at`` is the fix time in
unix seconds, absent numbers are empty strings.

Redis only speeds things up: while it is unavailable, :func:`current_positions` reads each unit's
last fix from its track in PostgreSQL instead (the answer then says it is degraded).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

import asyncpg
from redis.asyncio import Redis

from dispatchd.context import Context
from dispatchd.domain.units import Position
from dispatchd.store import keys
from dispatchd.store.outage import REDIS, note_degraded, store_failure


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def encode_position(p: Position) -> dict[str, str]:
    return {
        "lat": repr(p.lat),
        "lon": repr(p.lon),
        "at": repr(p.at.timestamp()),
        "speed": _num(p.speed_kmh),
        "heading": _num(p.heading),
        "battery": _num(p.battery),
        "source": p.source,
        "device": str(p.device_id),
    }


def _opt(raw: bytes | None) -> float | None:
    return float(raw) if raw else None


def decode_position(unit_id: int, h: Mapping[bytes, bytes]) -> Position | None:
    if not h or b"lat" not in h or b"lon" not in h or b"at" not in h:
        return None
    try:
        return Position(
            unit_id=unit_id,
            device_id=int(h.get(b"device") or 0),
            lat=float(h[b"lat"]),
            lon=float(h[b"lon"]),
            at=datetime.fromtimestamp(float(h[b"at"]), UTC),
            source=(h.get(b"source") or b"").decode(),
            speed_kmh=_opt(h.get(b"speed")),
            heading=_opt(h.get(b"heading")),
            battery=_opt(h.get(b"battery")),
        )
    except (ValueError, UnicodeDecodeError):
        return None


async def read_positions(redis: Redis, unit_ids: Iterable[int]) -> dict[int, Position]:
    """The live position of each unit that has one, in one pipelined round trip."""
    ids = list(unit_ids)
    if not ids:
        return {}
    async with redis.pipeline(transaction=False) as pipe:
        for uid in ids:
            pipe.hgetall(keys.unit_position(uid))
        results = await pipe.execute()
    out: dict[int, Position] = {}
    for uid, h in zip(ids, results, strict=True):
        p = decode_position(uid, h)
        if p is not None:
            out[uid] = p
    return out


async def read_position(redis: Redis, unit_id: int) -> Position | None:
    return (await read_positions(redis, [unit_id])).get(unit_id)


async def last_track_positions(pool: asyncpg.Pool, unit_ids: Iterable[int]) -> dict[int, Position]:
    """The newest fix of each unit from its track in PostgreSQL (one index probe per unit)."""
    ids = list(unit_ids)
    if not ids:
        return {}
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT u.id, t.device_id, t.at, t.lat, t.lon, t.speed_kmh, t.heading, t.battery, t.source"
            " FROM unnest($1::bigint[]) AS u(id) CROSS JOIN LATERAL ("
            "  SELECT device_id, at, lat, lon, speed_kmh, heading, battery, source FROM track_points"
            "  WHERE unit_id = u.id ORDER BY at DESC LIMIT 1) t",
            ids,
        )
    return {
        r["id"]: Position(
            unit_id=r["id"],
            device_id=r["device_id"],
            lat=r["lat"],
            lon=r["lon"],
            at=r["at"],
            source=r["source"],
            speed_kmh=r["speed_kmh"],
            heading=r["heading"],
            battery=r["battery"],
        )
        for r in rows
    }


async def current_positions(ctx: Context, unit_ids: Iterable[int]) -> dict[int, Position]:
    """Live positions from Redis; while Redis is unavailable, the last tracked fixes from PostgreSQL."""
    ids = list(unit_ids)
    try:
        return await read_positions(ctx.redis, ids)
    except Exception as exc:
        failure = store_failure(ctx, exc)
        if failure is None or failure.store != REDIS:
            raise
    note_degraded(REDIS)
    return await last_track_positions(ctx.pool, ids)
