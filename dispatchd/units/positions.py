"""Live positions in Redis: one hash per unit plus a GEO set, written by the position sink.

Hash fields (bytes): ``lat lon at speed heading battery source device``; ``at`` is the fix time in
unix seconds, absent numbers are empty strings.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from redis.asyncio import Redis

from dispatchd.domain.units import Position
from dispatchd.store import keys


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
