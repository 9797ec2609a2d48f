"""The context a service works in: stores, clock, settings, the organisation tree and the taxonomy.

A service receives a :class:`Context`, never the web application: it does not know which framework
serves it, and a test can build one without a server. The HTTP layer keeps the context under one
application key (``dispatchd.web.appkeys.CTX``).

The core is typed attributes. A capability that owns a long-lived component other capabilities
call (the squad hub, the call desk's presence, the position sink) registers it under a typed
:class:`Slot`, so ``ctx[PRESENCE]`` is as typed as ``ctx.pool``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

import asyncpg
from redis.asyncio import Redis

from dispatchd.clock import Clock
from dispatchd.config import Settings
from dispatchd.domain.orgs import GridLocator, OrgTree
from dispatchd.domain.taxonomy import Taxonomy
from dispatchd.metrics import Metrics

T = TypeVar("T")


class Slot(Generic[T]):
    """A typed name for a component registered on the context."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"Slot({self.name!r})"


# A section of the board snapshot: (context, the viewer's jurisdiction as unit codes) -> data.
BoardSection = Callable[["Context", frozenset[str]], Awaitable[Any]]


@dataclass(eq=False)
class Context:
    """What every service needs; the stores are attached once they are open."""

    settings: Settings
    clock: Clock
    orgs: OrgTree
    locator: GridLocator
    taxonomy: Taxonomy
    metrics: Metrics
    instance_id: str
    # Background work of the instance, stopped on shutdown (:func:`dispatchd.tasks.start_task`).
    tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    # Sections of the board snapshot, registered by each capability.
    board_sections: dict[str, BoardSection] = field(default_factory=dict)
    _pool: asyncpg.Pool | None = None
    _redis: Redis | None = None
    _slots: dict[Slot[Any], Any] = field(default_factory=dict)

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the PostgreSQL pool is not open yet")
        return self._pool

    @property
    def redis(self) -> Redis:
        if self._redis is None:
            raise RuntimeError("the Redis client is not open yet")
        return self._redis

    def attach_stores(self, pool: asyncpg.Pool, redis: Redis) -> None:
        self._pool = pool
        self._redis = redis

    def __getitem__(self, slot: Slot[T]) -> T:
        try:
            return cast(T, self._slots[slot])
        except KeyError:
            raise KeyError(f"{slot.name} is not registered") from None

    def __setitem__(self, slot: Slot[T], value: T) -> None:
        self._slots[slot] = value

    def __contains__(self, slot: Slot[Any]) -> bool:
        return slot in self._slots

    def get(self, slot: Slot[T], default: T | None = None) -> T | None:
        return cast("T | None", self._slots.get(slot, default))
