"""When a store fails: one place that recognises the failure, answers for it, and watches the store.

Every call to PostgreSQL or Redis has a deadline (:mod:`dispatchd.store.db`, :mod:`dispatchd.store.redis`),
so a store that is down or hung shows up as an exception within seconds. :func:`classify` says
whether an exception is such a failure, and of which store; :class:`Outages` then

* answers it as :class:`~dispatchd.errors.Unavailable` (503 with ``Retry-After`` over HTTP), in
  Chinese and English, from this one place (:meth:`Outages.unavailable`);
* logs one line when the store goes (``store_unavailable``) and one when it is back
  (``store_recovered``, with how long and how many calls were refused), never a traceback per call;
* while the store is known to be down, refuses calls to it at once (:meth:`Outages.check` raises
  :class:`StoreDown`) instead of letting each wait out its deadline, and probes it in the
  background on a connection of its own until it answers again.

A statement the server cancelled for running too long (``statement_timeout``) or a pool whose
connections are all busy is answered the same way, but is no outage: the store is working.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import asyncpg
import redis.exceptions
import structlog

from dispatchd.context import Context, Slot
from dispatchd.errors import Unavailable
from dispatchd.metrics import Metrics

log = structlog.get_logger("dispatchd.store")

POSTGRES: Final = "postgres"
REDIS: Final = "redis"
STORES: Final = (POSTGRES, REDIS)

_NAMES: Final = {
    POSTGRES: ("数据库", "the database (PostgreSQL)"),
    REDIS: ("实时数据服务", "the live-data store (Redis)"),
}


class StoreDown(Exception):
    """Raised instead of calling a store that is known to be down."""

    def __init__(self, store: str) -> None:
        super().__init__(f"{store} is unavailable")
        self.store = store


class PoolBusy(TimeoutError):
    """No pooled PostgreSQL connection became free within ``[database] acquire_timeout``."""


@dataclass(frozen=True, slots=True)
class Failure:
    """A store failure: which store, and whether it means the store is down (not merely busy)."""

    store: str
    outage: bool
    error: str


# InterfaceError messages of asyncpg that mean the connection is gone or stuck, not a misuse.
_CONNECTION_GONE: Final = ("connection is closed", "another operation is in progress", "pool is closing")
# ... and one that means the connection was lost before (the pool took it back): not news of an outage.
_CONNECTION_LOST_BEFORE: Final = "released back to the pool"


def _store_in_traceback(exc: BaseException) -> str | None:
    """The store whose client code ``exc`` was raised through (its traceback's frames), if any."""
    packages = set()
    for frame, _ in traceback.walk_tb(exc.__traceback__):
        module = frame.f_globals.get("__name__", "")
        if isinstance(module, str):
            packages.add(module.split(".", 1)[0])
    if "asyncpg" in packages:
        return POSTGRES
    if "redis" in packages:
        return REDIS
    return None


def _one(exc: BaseException) -> Failure | None:
    error = f"{type(exc).__name__}: {exc}"[:200]
    if isinstance(exc, StoreDown):
        return Failure(exc.store, True, error)
    if isinstance(exc, PoolBusy):
        return Failure(POSTGRES, False, error)
    if isinstance(exc, redis.exceptions.ConnectionError | redis.exceptions.TimeoutError):
        return Failure(REDIS, True, error)
    if isinstance(exc, asyncpg.exceptions.QueryCanceledError):
        return Failure(POSTGRES, False, error)  # statement_timeout: slow, not down
    if isinstance(exc, asyncpg.exceptions.TransactionRollbackError):
        return Failure(POSTGRES, False, error)  # deadlock or serialization failure: retry it
    if isinstance(exc, asyncpg.exceptions.InsufficientResourcesError):
        return Failure(POSTGRES, False, error)  # too many connections, disk full, out of memory
    if isinstance(exc, asyncpg.PostgresConnectionError | asyncpg.exceptions.OperatorInterventionError):
        return Failure(POSTGRES, True, error)  # connection lost, shutting down, cannot connect now
    if isinstance(exc, asyncpg.InterfaceError) and any(m in str(exc) for m in _CONNECTION_GONE):
        return Failure(POSTGRES, True, error)
    if isinstance(exc, asyncpg.InterfaceError) and _CONNECTION_LOST_BEFORE in str(exc):
        return Failure(POSTGRES, False, error)
    if isinstance(exc, asyncpg.exceptions.InternalClientError) and "another operation" in str(exc):
        return Failure(POSTGRES, True, error)  # a connection left broken by the server going away
    if isinstance(exc, TimeoutError | OSError):
        store = _store_in_traceback(exc)
        if store is not None:
            return Failure(store, True, error)
    return None


def classify(exc: BaseException) -> Failure | None:
    """The store failure behind ``exc`` (itself, or what caused it), or None for anything else."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        found = _one(current)
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


# Values PostgreSQL refused as data (SQLSTATE class 22, or an argument asyncpg could not encode): the
# input was wrong, and validation should have said so; the request is answered 422, not 500.
_BAD_VALUES: Final = (
    asyncpg.exceptions.CharacterNotInRepertoireError,
    asyncpg.exceptions.UntranslatableCharacterError,
    asyncpg.exceptions.NumericValueOutOfRangeError,
    asyncpg.exceptions.DatetimeFieldOverflowError,
    asyncpg.exceptions.InvalidTextRepresentationError,
    asyncpg.exceptions.InvalidDatetimeFormatError,
    asyncpg.exceptions.StringDataRightTruncationError,
    asyncpg.exceptions._base.DataError,
)


def refused_value(exc: BaseException) -> bool:
    """Did PostgreSQL (or asyncpg) refuse a value of the request as data?"""
    return isinstance(exc, _BAD_VALUES)


# What a request had to do without (Redis-only state), for a header that says so.
_DEGRADED: contextvars.ContextVar[set[str] | None] = contextvars.ContextVar(
    "dispatchd_degraded", default=None
)


def begin_degraded() -> set[str]:
    """Start collecting what the current request or connection does without."""
    found: set[str] = set()
    _DEGRADED.set(found)
    return found


def note_degraded(store: str) -> None:
    found = _DEGRADED.get()
    if found is not None:
        found.add(store)


Probe = Callable[[], Awaitable[object]]


@dataclass
class _State:
    down_since: float | None = None
    refused: int = 0
    recovered_at: float | None = None
    error: str = ""
    probe: asyncio.Task[None] | None = None


@dataclass(eq=False)
class Outages:
    """The state of each store as this instance sees it (one per instance: ``ctx[OUTAGES]``)."""

    metrics: Metrics
    retry_after: float = 5.0
    probe_interval: float = 0.5
    probe_timeout: float = 2.0
    # A call that began during an outage may fail after the store is back (its deadline ran out, its
    # connection was broken): within this many seconds of a recovery a failure is such old news,
    # not a new outage. The longest deadline of a store call (PostgreSQL's command timeout).
    stale_after_recovery: float = 0.0
    probes: dict[str, Probe] = field(default_factory=dict)
    # Called with (store, down) when a store goes down or comes back: the boards are told at once,
    # the pool drops the connections that lived through the outage.
    listeners: list[Callable[[str, bool], None]] = field(default_factory=list)
    _states: dict[str, _State] = field(default_factory=lambda: {s: _State() for s in STORES})
    _closed: bool = False

    def is_down(self, store: str) -> bool:
        return self._states[store].down_since is not None

    def down(self) -> list[str]:
        """The stores this instance sees down now, in :data:`STORES` order."""
        return [s for s in STORES if self._states[s].down_since is not None]

    def _changed(self, store: str) -> None:
        down = self.is_down(store)
        for listener in list(self.listeners):
            try:
                listener(store, down)
            except Exception:
                log.exception("store_listener_failed")

    def check(self, store: str) -> None:
        """Raise :class:`StoreDown` at once while ``store`` is known to be down."""
        state = self._states[store]
        if state.down_since is not None:
            state.refused += 1
            raise StoreDown(store)

    def note(self, exc: BaseException) -> Failure | None:
        """Record ``exc`` if it is a store failure (an outage begins at the first); return it."""
        failure = classify(exc)
        if failure is not None and failure.outage:
            self.failed(failure.store, failure.error)
        if failure is not None:
            self.metrics.store_failures.labels(failure.store, "outage" if failure.outage else "busy").inc()
        return failure

    def failed(self, store: str, error: str) -> None:
        state = self._states[store]
        if state.down_since is not None or self._closed:
            return
        now = asyncio.get_running_loop().time()
        if state.recovered_at is not None and now - state.recovered_at < self.stale_after_recovery:
            return
        state.down_since = now
        state.refused = 0
        state.error = error
        self.metrics.store_up.labels(store).set(0)
        self.metrics.store_outages.labels(store).inc()
        log.warning("store_unavailable", store=store, error=error)
        self._changed(store)
        if store in self.probes:
            state.probe = asyncio.create_task(self._probe(store), name=f"store-probe-{store}")

    def recovered(self, store: str) -> None:
        state = self._states[store]
        if state.down_since is None:
            return
        down_s = asyncio.get_running_loop().time() - state.down_since
        state.down_since = None
        state.probe = None
        state.recovered_at = asyncio.get_running_loop().time()
        self.metrics.store_up.labels(store).set(1)
        log.info("store_recovered", store=store, down_s=round(down_s, 1), refused=state.refused)
        self._changed(store)

    async def _probe(self, store: str) -> None:
        probe = self.probes[store]
        while True:
            await asyncio.sleep(self.probe_interval)
            try:
                async with asyncio.timeout(self.probe_timeout):
                    await probe()
            except asyncio.CancelledError:
                raise
            except Exception:  # still down: try again at the next interval
                continue
            self.recovered(store)
            return

    def unavailable(self, failure: Failure) -> Unavailable:
        """The answer to a request that met ``failure``."""
        return unavailable(failure, self.retry_after)

    async def close(self) -> None:
        self._closed = True
        tasks = [s.probe for s in self._states.values() if s.probe is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task


OUTAGES = Slot[Outages]("store_outages")


def unavailable(failure: Failure, retry_after: float = 5.0) -> Unavailable:
    """The refusal for a call that met ``failure``: 503 with ``Retry-After`` over HTTP."""
    zh, en = _NAMES[failure.store]
    if failure.outage:
        return Unavailable(
            f"{zh}暂时不可用，请稍后重试",
            f"{en} is unavailable for the moment; retry shortly",
            retry_after=retry_after,
            code="store_unavailable",
            extra={"store": failure.store},
        )
    return Unavailable(
        f"{zh}繁忙，请稍后重试",
        f"{en} is busy; retry shortly",
        retry_after=max(1.0, retry_after / 2),
        code="store_busy",
        extra={"store": failure.store},
    )


def outages_of(ctx: Context) -> Outages | None:
    return ctx.get(OUTAGES)


def store_failure(ctx: Context, exc: BaseException) -> Failure | None:
    """Classify ``exc`` and record it with the instance's outage tracker (if there is one)."""
    tracker = ctx.get(OUTAGES)
    if tracker is not None:
        return tracker.note(exc)
    return classify(exc)


def as_unavailable(ctx: Context, exc: BaseException) -> Unavailable | None:
    """The refusal for ``exc`` if it is a store failure (recorded as such), else None."""
    failure = store_failure(ctx, exc)
    if failure is None:
        return None
    tracker = ctx.get(OUTAGES)
    return unavailable(failure, tracker.retry_after if tracker is not None else 5.0)


def log_unless_outage(ctx: Context, exc: BaseException, event: str, **fields: object) -> None:
    """Log ``event`` as a warning, unless ``exc`` is a store failure: an outage is logged once by the
    tracker, and every failure is counted in ``dispatchd_store_failures_total``."""
    if store_failure(ctx, exc) is not None:
        return
    log.warning(event, error=f"{type(exc).__name__}: {exc}"[:300], **fields)
