"""Which duty officers can take a call now, longest idle first — shared by every instance (Redis).

An officer is *present* while at least one of their consoles is connected (:meth:`Presence.connected`
and :meth:`Presence.disconnected`, fed by the board websocket or by the console's
``POST /api/v1/hotline/presence``) and *available* while present and not on a call. Ringing goes to
the available officer who has been idle longest (ACD "longest idle agent"): answering a call takes
them out of the idle set, the end of their call puts them back with the time it ended, and a ring
they let pass moves them to the back.

Consoles are counted per instance. Each instance keeps its key alive in Redis
(:func:`~dispatchd.store.keys.hotline_instance`, every :data:`PRESENCE_BEAT` seconds, for
:data:`PRESENCE_TTL`; the queue round reads the same key for the SIP calls an instance holds) and
reaps, atomically, the consoles of instances whose key has expired: an instance that crashed or was killed takes its officers' presence
with it within half a minute instead of leaving them ringable until they reconnect.

Redis holds only this rebuildable state (see :mod:`dispatchd.store.keys`); a restart of Redis
empties it until the consoles reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import structlog
from redis.asyncio import Redis

from dispatchd.clock import Clock
from dispatchd.store.keys import (
    HOTLINE_CONNECTIONS,
    HOTLINE_IDLE,
    HOTLINE_OFFICERS,
    hotline_instance,
)
from dispatchd.store.outage import classify
from dispatchd.store.redis import as_text
from dispatchd.store.users import User
from dispatchd.tasks import raise_if_cancelling

log = structlog.get_logger("dispatchd.hotline")

#: Roles that answer the hotline.
ANSWERING_ROLES = ("duty_officer", "admin")
#: Seconds an instance's consoles count after its last beat, and seconds between beats.
PRESENCE_TTL: Final = 30
PRESENCE_BEAT: Final = 10.0

# Drop the consoles of instances whose key has expired, and the officers left with none: KEYS are
# the connections hash ("<user id>@<instance>" -> count), the idle set and the officers hash; ARGV[1]
# the prefix of the instances' keys. Returns the user ids that are gone.
_REAP = r"""
local fields = redis.call('HGETALL', KEYS[1])
local live = {}
local alive = {}
for i = 1, #fields, 2 do
  local field = fields[i]
  local user, instance = string.match(field, '^(.-)@(.+)$')
  if user == nil then
    redis.call('HDEL', KEYS[1], field)
  else
    if alive[instance] == nil then
      alive[instance] = redis.call('EXISTS', ARGV[1] .. instance) == 1
    end
    if alive[instance] then live[user] = true else redis.call('HDEL', KEYS[1], field) end
  end
end
local gone = {}
local officers = redis.call('HKEYS', KEYS[3])
for _, user in ipairs(officers) do
  if not live[user] then
    redis.call('ZREM', KEYS[2], user)
    redis.call('HDEL', KEYS[3], user)
    table.insert(gone, user)
  end
end
return gone
"""


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

    def __init__(self, redis: Callable[[], Redis], clock: Clock, instance_id: str) -> None:
        self._get_redis = redis
        self._clock = clock
        self.instance_id = instance_id

    @property
    def _redis(self) -> Redis:
        return self._get_redis()

    def _now(self) -> float:
        return self._clock.now().timestamp()

    def _field(self, user_id: int) -> str:
        return f"{user_id}@{self.instance_id}"

    async def _consoles(self, user_id: int) -> int:
        """How many consoles the officer has open, on every instance."""
        prefix = f"{user_id}@"
        counts = await self._redis.hgetall(HOTLINE_CONNECTIONS)
        return sum(max(0, int(n)) for f, n in counts.items() if as_text(f).startswith(prefix))

    async def connected(self, user: User) -> None:
        """A console of ``user`` connected; the first one makes them present and available."""
        if user.role not in ANSWERING_ROLES:
            return
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(hotline_instance(self.instance_id), "1", ex=PRESENCE_TTL)
            pipe.hincrby(HOTLINE_CONNECTIONS, self._field(user.id), 1)
            await pipe.execute()
        if await self._consoles(user.id) == 1:
            await self._remember(user)
            await self._redis.zadd(HOTLINE_IDLE, {str(user.id): self._now()}, nx=True)

    async def disconnected(self, user: User) -> None:
        """A console closed; with the last one (on any instance) the officer is gone."""
        field = self._field(user.id)
        if int(await self._redis.hincrby(HOTLINE_CONNECTIONS, field, -1)) <= 0:
            await self._redis.hdel(HOTLINE_CONNECTIONS, field)
        if await self._consoles(user.id) == 0:
            await self.leave(user.id)

    async def set_available(self, user: User, available: bool) -> None:
        """The officer says ready (present and idle from now) or not ready (away)."""
        if not available:
            await self._redis.zrem(HOTLINE_IDLE, str(user.id))
            return
        if user.role not in ANSWERING_ROLES:
            return
        await self._remember(user)
        if await self._consoles(user.id) == 0:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.set(hotline_instance(self.instance_id), "1", ex=PRESENCE_TTL)
                pipe.hset(HOTLINE_CONNECTIONS, self._field(user.id), 1)
                await pipe.execute()
        await self._redis.zadd(HOTLINE_IDLE, {str(user.id): self._now()}, nx=True)

    async def leave(self, user_id: int) -> None:
        prefix = f"{user_id}@"
        fields = [f for f in await self._redis.hkeys(HOTLINE_CONNECTIONS) if as_text(f).startswith(prefix)]
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(HOTLINE_IDLE, str(user_id))
            pipe.hdel(HOTLINE_OFFICERS, str(user_id))
            if fields:
                pipe.hdel(HOTLINE_CONNECTIONS, *fields)
            await pipe.execute()

    async def beat(self) -> None:
        """Keep this instance (its consoles and its calls) alive for another :data:`PRESENCE_TTL` seconds."""
        await self._redis.set(hotline_instance(self.instance_id), "1", ex=PRESENCE_TTL)

    async def reap(self) -> list[int]:
        """Forget the consoles of instances that stopped beating; return the officers now gone."""
        script = self._redis.register_script(_REAP)
        gone = await script(
            keys=[HOTLINE_CONNECTIONS, HOTLINE_IDLE, HOTLINE_OFFICERS],
            args=[hotline_instance("")],
        )
        users = [int(as_text(u)) for u in gone]
        if users:
            log.warning("hotline_presence_reaped", users=users)
        return users

    async def run(self) -> None:
        """Beat and reap every :data:`PRESENCE_BEAT` seconds until cancelled; stop beating on the way out."""
        try:
            while True:
                try:
                    await self.beat()
                    await self.reap()
                except Exception as exc:
                    raise_if_cancelling()
                    if classify(exc) is None:  # a Redis outage is logged once, by its tracker
                        log.warning("hotline_presence_beat_failed", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(PRESENCE_BEAT)
        finally:
            with contextlib.suppress(Exception):
                await self._redis.delete(hotline_instance(self.instance_id))

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
        idle = {as_text(member): float(score) for member, score in scores}
        out: list[Officer] = []
        for raw_id, raw in known.items():
            info = json.loads(raw)
            user_id = as_text(raw_id)
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

