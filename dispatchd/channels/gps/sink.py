"""The position sink: fixes in, batched writes out.

No fix costs a Redis round trip, an INSERT or a log line of its own. :meth:`PositionSink.submit`
is synchronous and cheap: it judges the fix against the unit's live position
(:func:`dispatchd.domain.units.judge_fix`) and queues it. Three loops write what was queued:

* live, every ``[units] live_flush_s``: the newest fix of each unit, pipelined Lua calls (one per
  ``LIVE_CHUNK`` units) that update each unit's hash and the GEO set unless Redis already holds a
  newer fix (another instance, or a blind-area re-upload after a restart);
* track, every ``[units] track_flush_s`` (at most a second): every accepted fix with one COPY into
  ``track_points``;
* publish, every half ``[units] publish_interval_s``: units whose position changed and was last
  published at least ``publish_interval_s`` ago, one outbox row (entity ``positions``) per owning org
  unit listing their new positions, in one statement (:func:`dispatchd.store.changes.publish_batch`).

Callers that must not answer before the fix is stored await :meth:`PositionSink.written`.

While PostgreSQL is unreachable, track batches are held, oldest first, and written when it answers
again; a fix is acknowledged once it is written *or held*. A held batch is kept in memory and, before
its fixes are acknowledged, on disk (:mod:`dispatchd.channels.gps.spool`), so that a daemon killed
during the outage loses none: the next sink of the host adopts the batches. Past ``[units] outage_buffer``
held fixes, :meth:`PositionSink.submit` refuses new ones (``outage_buffer_full``, counted) and the
protocol servers answer "retry" (OsmAnd 503 with Retry-After, JT/T 808 result 1): nothing
acknowledged is dropped. Each batch carries an id written with it in the same transaction
(``gps_batches``), so a batch whose write went unanswered is not written twice. While Redis is
unreachable the newest fix of each unit waits for it (the track in PostgreSQL is the record).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog
from redis.asyncio import Redis

from dispatchd.channels.gps.spool import HeldSpool
from dispatchd.clock import Clock
from dispatchd.config import UnitSettings
from dispatchd.domain.units import LIVE, TRACK_ONLY, FixRules, Position, judge_fix
from dispatchd.metrics import Metrics
from dispatchd.store import keys
from dispatchd.store.changes import publish_batch
from dispatchd.store.outage import Outages, classify

log = structlog.get_logger("dispatchd.gps")

TRACK_COLUMNS = (
    "unit_id",
    "device_id",
    "at",
    "lat",
    "lon",
    "speed_kmh",
    "heading",
    "altitude_m",
    "accuracy_m",
    "battery",
    "source",
    "received_at",
)

# Write the live positions of a batch of units: KEYS are the units' hashes, then the GEO set; ARGV[1]
# holds one line per unit, in KEYS order: "uid lat lon at speed heading battery source device"
# (tab-separated, empty for unknown). A unit whose hash already holds a newer fix is left alone.
_LIVE_SCRIPT = r"""
local geo = KEYS[#KEYS]
local i = 0
local written = 0
for uid, lat, lon, at, speed, heading, battery, source, device in
    string.gmatch(ARGV[1], "([^\t\n]*)\t([^\t\n]*)\t([^\t\n]*)\t([^\t\n]*)\t([^\t\n]*)\t([^\t\n]*)\t([^\t\n]*)\t([^\t\n]*)\t([^\t\n]*)\n") do
  i = i + 1
  local key = KEYS[i]
  local cur = redis.call('HGET', key, 'at')
  if not cur or tonumber(cur) <= tonumber(at) then
    redis.call('HSET', key, 'lat', lat, 'lon', lon, 'at', at, 'speed', speed, 'heading', heading,
               'battery', battery, 'source', source, 'device', device)
    redis.call('GEOADD', geo, lon, lat, uid)
    written = written + 1
  end
end
return written
"""
# Units per script call: bounds how long one call keeps Redis busy.
LIVE_CHUNK = 2000

# The verdict of a fix refused because the outage buffer is full: the device must send it again.
HELD_BACK = "outage_buffer_full"
# Seconds between prunes of gps_batches (ids of written batches are kept a day).
_PRUNE_EVERY = 3600.0
# Seconds between looks for held batches of sinks that ended (a crashed instance of the host).
ADOPT_EVERY = 30.0


def _num(value: float | None) -> str:
    return "" if value is None else repr(float(value))


class PositionSink:
    def __init__(
        self,
        redis: Redis,
        pool: asyncpg.Pool,
        clock: Clock,
        settings: UnitSettings,
        metrics: Metrics,
        outages: Outages | None = None,
        spool: HeldSpool | None = None,
    ) -> None:
        self.redis = redis
        self.outages = outages
        self.spool = spool
        self._spool_failed = False
        self.pool = pool
        self.clock = clock
        self.settings = settings
        self.metrics = metrics
        self.rules = FixRules(
            max_speed_kmh=settings.max_speed_kmh,
            max_future=timedelta(seconds=settings.max_future_s),
            china_only=settings.china_only,
        )
        self._script = redis.register_script(_LIVE_SCRIPT)
        self._last: dict[int, Position] = {}
        self._live: dict[int, Position] = {}
        self._track: list[tuple[Any, ...]] = []
        # Batches whose write failed (PostgreSQL unreachable), oldest first, and their rows in all.
        self._backlog: deque[tuple[uuid.UUID, list[tuple[Any, ...]]]] = deque()
        self._held = 0
        self._pruned_at: float | None = None
        self._dirty: set[int] = set()
        self._published: dict[int, float] = {}
        self._org_paths: dict[int, list[str]] = {}
        self._track_done: asyncio.Future[bool] | None = None
        self._live_lock = asyncio.Lock()
        self._track_lock = asyncio.Lock()
        self._publish_lock = asyncio.Lock()
        self._fixes = {
            (proto, use): metrics.gps_fixes.labels(proto, use)
            for proto in ("osmand", "jt808", "squad")
            for use in (LIVE, TRACK_ONLY)
        }
        # Accepted fixes are counted here and added to the metric at each live flush: a metric's
        # inc() takes a lock, too dear once per fix.
        self._counted: dict[tuple[str, str], int] = {}

    # -- in ------------------------------------------------------------------------------------

    def last(self, unit_id: int) -> Position | None:
        """The newest live fix of the unit this instance has accepted."""
        return self._last.get(unit_id)

    def submit(self, fix: Position, received_at: datetime | None = None) -> str:
        """Judge and queue one fix; return the verdict (``live``, ``track_only`` or why it was refused)."""
        now = received_at or self.clock.now()
        verdict = judge_fix(fix, self._last.get(fix.unit_id), now, self.rules)
        key = (fix.source, verdict)
        if key not in self._fixes:
            self.metrics.gps_filtered.labels(fix.source, verdict).inc()
            return verdict
        if self._backlog and self._held + len(self._track) >= self.settings.outage_buffer:
            # PostgreSQL is away and the buffer is full: refuse, so that the device keeps the fix.
            self.metrics.gps_refused.labels(fix.source, HELD_BACK).inc()
            return HELD_BACK
        self._counted[key] = self._counted.get(key, 0) + 1
        self._track.append(
            (
                fix.unit_id,
                fix.device_id,
                fix.at,
                fix.lat,
                fix.lon,
                fix.speed_kmh,
                fix.heading,
                fix.altitude_m,
                fix.accuracy_m,
                fix.battery,
                fix.source,
                now,
            )
        )
        if verdict == LIVE:
            self._last[fix.unit_id] = fix
            self._live[fix.unit_id] = fix
            self._dirty.add(fix.unit_id)
        return verdict

    def written(self) -> asyncio.Future[bool]:
        """Resolves once everything submitted so far is in PostgreSQL or held until it is back (True),
        or was dropped because PostgreSQL refused it as data (False).

        One future per batch, shared by every fix in it: await it through ``asyncio.shield``.
        """
        if self._track_done is not None and self._track:
            return self._track_done
        loop = asyncio.get_running_loop()
        if not self._track:
            done: asyncio.Future[bool] = loop.create_future()
            done.set_result(True)
            return done
        self._track_done = loop.create_future()
        return self._track_done

    @property
    def backlog(self) -> int:
        """Track rows waiting for their batched write (metrics: ``dispatchd_queue_depth``)."""
        return len(self._track)

    @property
    def pending(self) -> bool:
        return bool(self._live or self._track or self._backlog)

    def room(self, fixes: int, protocol: str) -> bool:
        """Whether ``fixes`` more can be taken now; when not (PostgreSQL is away and the outage buffer
        is full), they are counted as refused and the device must send them again. Ask before
        submitting a message's fixes, so that a message is taken whole or not at all."""
        if self._backlog and self._held + len(self._track) + fixes > self.settings.outage_buffer:
            self.metrics.gps_refused.labels(protocol, HELD_BACK).inc(fixes)
            return False
        return True

    @property
    def held(self) -> int:
        """Fixes held while PostgreSQL is unreachable."""
        return self._held + (len(self._track) if self._backlog else 0)

    def _quiet(self, exc: BaseException) -> bool:
        """Whether ``exc`` is a store outage (logged once by the outage tracker, not here)."""
        if self.outages is not None:
            failure = self.outages.note(exc)
        else:
            failure = classify(exc)
        return failure is not None and failure.outage

    # -- out -----------------------------------------------------------------------------------

    async def flush_pending(self) -> None:
        """Write whatever is queued now (read paths call this: what this instance took is readable)."""
        if self._live:
            await self.flush_live()
        if self._track or self._backlog:
            await self.flush_track()
        if self._dirty:
            await self.publish()

    async def flush_live(self) -> bool:
        """Write the newest queued fix of each unit to Redis; False if that failed."""
        self._fold_counts()
        async with self._live_lock:
            batch, self._live = self._live, {}
            try:
                if batch:
                    items = list(batch.items())
                    async with self.redis.pipeline(transaction=False) as pipe:
                        # execute() loads the script if Redis lacks it (redis-py types this set as sync Scripts).
                        pipe.scripts.add(self._script)  # type: ignore[arg-type]
                        for start in range(0, len(items), LIVE_CHUNK):
                            chunk = items[start : start + LIVE_CHUNK]
                            lines = "".join(
                                f"{uid}\t{p.lat!r}\t{p.lon!r}\t{p.at.timestamp()!r}\t{_num(p.speed_kmh)}\t"
                                f"{_num(p.heading)}\t{_num(p.battery)}\t{p.source}\t{p.device_id}\n"
                                for uid, p in chunk
                            )
                            unit_keys = [keys.unit_position(uid) for uid, _ in chunk]
                            pipe.evalsha(self._script.sha, len(chunk) + 1, *unit_keys, keys.UNITS_GEO, lines)
                        await pipe.execute()
                    self.metrics.gps_writes.labels("redis", "ok").inc()
                    self.metrics.gps_batch_rows.labels("redis").inc(len(batch))
            except Exception as exc:
                self.metrics.gps_writes.labels("redis", "error").inc()
                if not self._quiet(exc):
                    log.warning("gps_live_write_failed", units=len(batch), error=f"{type(exc).__name__}: {exc}")
                for uid, p in batch.items():  # keep the newest for the next attempt
                    self._live.setdefault(uid, p)
                return False
            return True

    def _fold_counts(self) -> None:
        counted, self._counted = self._counted, {}
        for key, n in counted.items():
            self._fixes[key].inc(n)

    async def flush_track(self) -> None:
        """Write the queued fixes as one batch, after any held batches, oldest first."""
        async with self._track_lock:
            rows, self._track = self._track, []
            done, self._track_done = self._track_done, None
            # The live part of these fixes goes first, so that "written" means readable too (when
            # Redis is away it waits for Redis: the track in PostgreSQL is the record).
            await self.flush_live()
            ok = True
            if rows:
                self._backlog.append((uuid.uuid4(), rows))
                self._held += len(rows)
            try:
                try:
                    ok = await self._write_backlog(rows)
                except Exception:
                    self.metrics.gps_writes.labels("postgres", "held").inc()
                    ok = await self._keep_held(rows)
            finally:
                if done is not None and not done.done():
                    done.set_result(ok)
            await self._prune()

    async def _write_backlog(self, rows: list[tuple[Any, ...]]) -> bool:
        """Write the held batches, oldest first; raise when PostgreSQL is away (the rest stay held).
        False when PostgreSQL refused ``rows`` (the newest batch) as data."""
        ok = True
        while self._backlog:
            batch, batch_rows = self._backlog[0]
            try:
                await self._write_batch(batch, batch_rows)
            except Exception as exc:
                if classify(exc) is not None:
                    self._quiet(exc)  # an outage begins (logged once), or the store is busy
                    raise  # hold the batch, try again at the next tick
                # PostgreSQL refused the rows themselves: keeping them would block the rest.
                log.exception("gps_track_batch_refused", rows=len(batch_rows))
                self.metrics.gps_writes.labels("postgres", "refused").inc()
                ok = ok and batch_rows is not rows
            else:
                self.metrics.gps_writes.labels("postgres", "ok").inc()
                self.metrics.gps_batch_rows.labels("postgres").inc(len(batch_rows))
            self._backlog.popleft()
            self._held -= len(batch_rows)
            if self.spool is not None and self.spool.holds(batch):
                try:
                    await asyncio.to_thread(self.spool.drop, batch)
                except OSError as exc:  # left on disk: a later adoption finds it written (gps_batches)
                    log.warning("gps_spool_drop_failed", error=f"{type(exc).__name__}: {exc}")
        return ok

    async def _keep_held(self, rows: list[tuple[Any, ...]]) -> bool:
        """Put the held batches not yet on disk there, before their fixes are acknowledged. When the
        newest (``rows``) cannot be, it is given up and False returned: its senders are told that it
        was not stored and send it again (nothing is acknowledged that a crash could lose)."""
        if self.spool is None:
            return True
        spool = self.spool
        for batch, batch_rows in list(self._backlog):
            if spool.holds(batch):
                continue
            try:
                await asyncio.to_thread(spool.put, batch, batch_rows)
            except OSError as exc:
                if not self._spool_failed:
                    log.error("gps_spool_failed", rows=len(batch_rows), error=f"{type(exc).__name__}: {exc}")
                    self._spool_failed = True
                self.metrics.gps_writes.labels("spool", "error").inc()
                if batch_rows is rows:
                    self._backlog.pop()
                    self._held -= len(rows)
                    return False
            else:
                if self._spool_failed:
                    log.info("gps_spool_recovered")
                    self._spool_failed = False
                self.metrics.gps_writes.labels("spool", "ok").inc()
        return True

    async def adopt(self) -> int:
        """Take over the held batches of sinks of this host that ended (killed during an outage, or
        stopped before PostgreSQL came back); they are written with the rest. Returns the fixes."""
        if self.spool is None:
            return 0
        try:
            found = await asyncio.to_thread(self.spool.adopt)
        except OSError as exc:
            log.error("gps_adopt_failed", error=f"{type(exc).__name__}: {exc}")
            return 0
        if not found:
            return 0
        async with self._track_lock:
            for batch in reversed(found):
                self._backlog.appendleft(batch)
                self._held += len(batch[1])
        fixes = sum(len(rows) for _, rows in found)
        log.info("gps_held_batches_adopted", batches=len(found), fixes=fixes)
        return fixes

    async def _write_batch(self, batch: uuid.UUID, rows: list[tuple[Any, ...]]) -> None:
        """COPY the rows unless the batch is already written (a write whose answer was lost)."""
        async with self.pool.acquire() as conn, conn.transaction():
            fresh = await conn.fetchval(
                "INSERT INTO gps_batches (batch) VALUES ($1) ON CONFLICT DO NOTHING RETURNING true", batch
            )
            if fresh:
                await conn.copy_records_to_table("track_points", records=rows, columns=TRACK_COLUMNS)

    async def _prune(self) -> None:
        mono = self.clock.monotonic()
        if self._backlog or (self._pruned_at is not None and mono - self._pruned_at < _PRUNE_EVERY):
            return
        self._pruned_at = mono
        try:
            async with self.pool.acquire() as conn:
                await conn.execute(
                    "DELETE FROM gps_batches WHERE written_at < $1", self.clock.now() - timedelta(days=1)
                )
        except Exception as exc:
            if not self._quiet(exc):
                log.warning("gps_batches_prune_failed", error=f"{type(exc).__name__}: {exc}")

    async def publish(self) -> None:
        """Outbox rows (topic ``positions``, one per org unit) for changed units, each unit at most once
        per interval."""
        if not self._dirty:
            return
        async with self._publish_lock:
            await self._publish()

    async def _publish(self) -> None:
        mono = self.clock.monotonic()
        interval = self.settings.publish_interval_s
        due = [uid for uid in self._dirty if mono - self._published.get(uid, -1e18) >= interval]
        if not due:
            return
        missing = [uid for uid in due if uid not in self._org_paths]
        async with self.pool.acquire() as conn:
            if missing:
                for r in await conn.fetch(
                    "SELECT id, org_path FROM squad_units WHERE id = ANY($1::bigint[])", missing
                ):
                    self._org_paths[r["id"]] = list(r["org_path"])
            # One row per owning org unit and tick (topic ``positions``), not one per unit: the feed's
            # cost is per row, and a county's squads move every second.
            groups: dict[tuple[str, ...], list[str]] = {}
            for uid in sorted(due):
                pos = self._last.get(uid)
                path = self._org_paths.get(uid)
                if pos is None or not path:
                    continue
                groups.setdefault(tuple(path), []).append(position_payload(uid, pos))
            if groups:
                items = [
                    (path[-1], path, '{"positions": [' + ", ".join(entries) + "]}")
                    for path, entries in groups.items()
                ]
                async with conn.transaction():
                    await publish_batch(conn, "positions", "moved", self.clock.now(), items)
        for uid in due:
            self._dirty.discard(uid)
            self._published[uid] = mono

    def forget_unit(self, unit_id: int) -> None:
        """Drop what this instance remembers of a unit (its org changed or it was deleted)."""
        self._org_paths.pop(unit_id, None)

    async def run(self) -> None:
        """The flush loops, for the life of the application, each on its own so none waits for another.

        Live positions go to Redis every ``live_flush_s``; the track goes to PostgreSQL every
        ``track_flush_s``, or at the next live tick when a caller waits for its fix to be stored;
        position changes go to the outbox every ``publish_interval_s``.
        """

        async def every(
            interval: float, step: Callable[[], Awaitable[Any]], when: Callable[[float], bool]
        ) -> None:
            waited = 0.0
            while True:
                await asyncio.sleep(interval)
                waited += interval
                if not when(waited):
                    continue
                waited = 0.0
                try:
                    await step()
                except Exception as exc:  # nothing may stop the loop; an outage is logged once
                    if not self._quiet(exc):
                        log.exception("gps_flush_failed")

        tick = self.settings.live_flush_s
        await self.adopt()
        await asyncio.gather(
            every(tick, self.flush_live, lambda _: True),
            every(
                tick,
                self.flush_track,
                lambda waited: waited >= self.settings.track_flush_s or self._track_done is not None,
            ),
            every(self.settings.publish_interval_s / 2, self.publish, lambda _: True),
            every(ADOPT_EVERY, self.adopt, lambda _: self.spool is not None),
        )

    async def close(self) -> None:
        """Write what is queued (shutdown)."""
        try:
            await asyncio.wait_for(self.flush_pending(), 5)
        except Exception as exc:
            log.warning("gps_final_flush_failed", error=f"{type(exc).__name__}: {exc}")
        kept = sum(len(rows) for batch, rows in self._backlog if self.spool is not None and self.spool.holds(batch))
        lost = self.held - kept
        if self.spool is not None:
            try:
                await asyncio.to_thread(self.spool.close)
            except OSError as exc:
                log.warning("gps_spool_close_failed", error=f"{type(exc).__name__}: {exc}")
        if kept:
            log.warning("gps_held_fixes_kept", fixes=kept)  # on disk: the next sink of the host adopts them
        if lost:
            log.warning("gps_held_fixes_lost", fixes=lost)


def _json_num(value: float | None) -> str:
    return "null" if value is None else repr(float(value))


def position_payload(unit_id: int, p: Position) -> str:
    """One unit's entry in a ``positions`` outbox row, as JSON text (built directly: thousands a second).

    The same fields as :meth:`Position.as_json` plus ``unit_id``.
    """
    return (
        f'{{"unit_id": {unit_id}, "lat": {p.lat!r}, "lon": {p.lon!r}, "at": "{p.at.isoformat()}", '
        f'"speed": {_json_num(p.speed_kmh)}, "heading": {_json_num(p.heading)}, '
        f'"battery": {_json_num(p.battery)}, "source": {json.dumps(p.source)}}}'
    )
