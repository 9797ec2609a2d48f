"""Which duty officers can take a call now, longest idle first — shared by every instance (Redis).

An officer is *present* while at least one of their consoles is connected (:meth:`Presence.connected`
and :meth:`Presence.disconnected`, fed by the board websocket or by the console's
``POST /api/v1/hotline/presence``) and *available* while present and not on a call. Ringing goes to
the available officer who has been idle longest (ACD "longest idle agent"): answering a call takes
them out of the idle set, the end of their call puts them back with the time it ended, and a ring
they let pass moves them to the back.

Redis holds only this rebuildable state (see :mod:`dispatchd.store.keys`); a restart of Redis
empties it until the consoles reconnect.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from dispatchd.clock import Clock
from dispatchd.store.keys import HOTLINE_CONNECTIONS, HOTLINE_IDLE, HOTLINE_OFFICERS
from dispatchd.store.users import User

#: Roles that answer the hotline.
ANSWERING_ROLES = ("duty_officer", "admin")


@dataclass(frozen=True, slots=True)
class Officer:
    user_id: int
    username: str
    name: str
    org: str
    idle_since: float | None  # unix seconds; None when present but busy or away

    def as_json(self) -> dict[str, object]:
        return {
            "user_id": self.user_id,
            "username": self.username,
            "name": self.name,
            "org": self.org,
            "available": self.idle_since is not None,
        }


class Presence:
    """The presence registry; every method is one or two Redis round trips."""

    def __init__(self, redis: Callable[[], Redis], clock: Clock) -> None:
        self._get_redis = redis
        self._clock = clock

    @property
    def _redis(self) -> Redis:
        return self._get_redis()

    def _now(self) -> float:
        return self._clock.now().timestamp()

    async def connected(self, user: User) -> None:
        """A console of ``user`` connected; the first one makes them present and available."""
        if user.role not in ANSWERING_ROLES:
            return
        count = await self._redis.hincrby(HOTLINE_CONNECTIONS, str(user.id), 1)
        if int(count) == 1:
            await self._remember(user)
            await self._redis.zadd(HOTLINE_IDLE, {str(user.id): self._now()}, nx=True)

    async def disconnected(self, user: User) -> None:
        """A console closed; with the last one the officer is gone."""
        count = await self._redis.hincrby(HOTLINE_CONNECTIONS, str(user.id), -1)
        if int(count) <= 0:
            await self.leave(user.id)

    async def set_available(self, user: User, available: bool) -> None:
        """The officer says ready (present and idle from now) or not ready (away)."""
        if not available:
            await self._redis.zrem(HOTLINE_IDLE, str(user.id))
            return
        if user.role not in ANSWERING_ROLES:
            return
        await self._remember(user)
        if not await self._redis.hexists(HOTLINE_CONNECTIONS, str(user.id)):
            await self._redis.hset(HOTLINE_CONNECTIONS, str(user.id), 1)
        await self._redis.zadd(HOTLINE_IDLE, {str(user.id): self._now()}, nx=True)

    async def leave(self, user_id: int) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(HOTLINE_IDLE, str(user_id))
            pipe.hdel(HOTLINE_OFFICERS, str(user_id))
            pipe.hdel(HOTLINE_CONNECTIONS, str(user_id))
            await pipe.execute()

    async def busy(self, user_id: int) -> None:
        """The officer took a call: no more rings until it ends."""
        await self._redis.zrem(HOTLINE_IDLE, str(user_id))

    async def idle(self, user_id: int) -> None:
        """The officer's call ended: available again from now, if still present."""
        if await self._redis.hexists(HOTLINE_OFFICERS, str(user_id)):
            await self._redis.zadd(HOTLINE_IDLE, {str(user_id): self._now()})

    async def passed(self, user_id: int) -> None:
        """The officer let a ring pass: to the back of the line (if still available)."""
        await self._redis.zadd(HOTLINE_IDLE, {str(user_id): self._now()}, xx=True)

    async def officers(self) -> list[Officer]:
        """Every present officer: the available ones longest idle first, then the busy or away."""
        known = await self._redis.hgetall(HOTLINE_OFFICERS)
        scores: Any = await self._redis.zrange(HOTLINE_IDLE, 0, -1, withscores=True)
        idle = {_text(member): float(score) for member, score in scores}
        out: list[Officer] = []
        for raw_id, raw in known.items():
            info = json.loads(raw)
            user_id = _text(raw_id)
            out.append(
                Officer(int(user_id), info["username"], info.get("name", ""), info["org"], idle.get(user_id))
            )
        out.sort(key=lambda o: (o.idle_since is None, o.idle_since or 0.0, o.user_id))
        return out

    async def available(self) -> list[Officer]:
        """The available officers, longest idle first."""
        return [o for o in await self.officers() if o.idle_since is not None]

    async def _remember(self, user: User) -> None:
        info = {"username": user.username, "name": user.display_name, "org": user.org}
        await self._redis.hset(HOTLINE_OFFICERS, str(user.id), json.dumps(info, ensure_ascii=False))


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
