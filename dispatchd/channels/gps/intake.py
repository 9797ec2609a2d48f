"""What both position servers share: device lookup, per-device rate limits, the sink, and alarms.

An emergency alarm (JT/T 808 alarm bit 0, 紧急报警; OsmAnd ``alarm=sos``) opens a P1 case at the
position through the case service, once per alarm: the terminal repeats the bit in every report
until the alarm is cleared, so a Redis key set with NX dedupes across reports and instances, and a
report without the bit ends the alarm.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

import structlog

from dispatchd.context import Context
from dispatchd.domain.units import Position, TokenBucket
from dispatchd.incidents.service import create_incident
from dispatchd.store import keys
from dispatchd.store.outage import log_unless_outage, store_failure
from dispatchd.units.devices import Device, DeviceDirectory
from dispatchd.units.positions import read_position

from .sink import PositionSink

log = structlog.get_logger("dispatchd.gps")

# An alarm's dedupe key lives this long if no report ever clears it.
ALARM_TTL = 24 * 3600
_KIND_ZH = {"team": "小组", "vehicle": "车辆", "person": "单兵", "motorbike": "摩托车", "ebike": "电动车"}


class GpsIntake:
    def __init__(self, ctx: Context, sink: PositionSink, devices: DeviceDirectory) -> None:
        self.ctx = ctx
        self.sink = sink
        self.devices = devices
        self.clock = ctx.clock
        self.metrics = ctx.metrics
        self.settings = ctx.settings.units
        self._buckets: dict[int, TokenBucket] = {}
        self._alarming: set[int] = set()
        self._tasks: set[asyncio.Task[Any]] = set()

    def refuse(self, protocol: str, reason: str) -> None:
        self.metrics.gps_refused.labels(protocol, reason).inc()

    def allow(self, device: Device, protocol: str, cost: float = 1.0) -> bool:
        """The per-device token bucket: ``[units] device_rate`` a second, ``device_burst`` at once."""
        now = self.clock.monotonic()
        bucket = self._buckets.get(device.id)
        if bucket is None:
            if len(self._buckets) > 200_000:
                self._buckets.clear()
            bucket = self._buckets[device.id] = TokenBucket(
                self.settings.device_rate, self.settings.device_burst, now
            )
        if bucket.take(now, cost):
            return True
        self.refuse(protocol, "rate_limited")
        return False

    def submit(self, fix: Position, received_at: datetime | None = None) -> str:
        return self.sink.submit(fix, received_at or self.clock.now())

    def alarm_state(self, device: Device, protocol: str, alarming: bool, position: Position | None) -> None:
        """Feed the emergency-alarm flag of every report; a rising edge opens a case."""
        unit_id = device.unit_id
        if alarming:
            if unit_id in self._alarming:
                return
            self._alarming.add(unit_id)
            self.metrics.gps_alarms.labels(protocol).inc()
            log.warning("gps_emergency_alarm", unit_id=unit_id, device_id=device.id, protocol=protocol)
            self._spawn(self._open_case(device, protocol, position))
        elif unit_id in self._alarming:
            self._alarming.discard(unit_id)
            self._spawn(self._clear(unit_id))

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _clear(self, unit_id: int) -> None:
        try:
            await self.ctx.redis.delete(keys.unit_alarm(unit_id))
        except Exception as exc:
            log_unless_outage(self.ctx, exc, "gps_alarm_clear_failed", unit_id=unit_id)

    async def _open_case(self, device: Device, protocol: str, position: Position | None) -> None:
        redis = self.ctx.redis
        key = keys.unit_alarm(device.unit_id)
        try:
            if not await redis.set(key, b"opening", nx=True, ex=ALARM_TTL):
                return  # this alarm already has its case (another report or instance opened it)
            if position is None:
                position = self.sink.last(device.unit_id) or await read_position(redis, device.unit_id)
            async with self.ctx.pool.acquire() as conn:
                unit = await conn.fetchrow(
                    "SELECT name, kind, org_code FROM squad_units WHERE id = $1", device.unit_id
                )
            if unit is None:
                return
            where = (
                f"位置 {position.lat:.6f}, {position.lon:.6f}（{position.at.isoformat()}）"
                if position
                else "位置未知（终端无定位）"
            )
            incident = await create_incident(
                self.ctx,
                category=self.settings.alarm_category,
                description=(
                    f"应急中队紧急报警（SOS）：{unit['name']}（{_KIND_ZH.get(unit['kind'], unit['kind'])}），"
                    f"终端 {device.identifier}（{protocol}），{where}。"
                    f" Emergency alarm from squad unit {unit['name']}, device {device.identifier}."
                ),
                channel="gps_alarm",
                priority="P1",
                lat=position.lat if position else None,
                lon=position.lon if position else None,
                owner_unit=None if position else unit["org_code"],
                observed_at=position.at if position else None,
                extra={"unit_id": device.unit_id, "device_id": device.id, "protocol": protocol},
            )
            await redis.set(key, str(incident.get("id", "")).encode(), ex=ALARM_TTL)
            log.warning(
                "gps_alarm_case_opened",
                unit_id=device.unit_id,
                incident_id=incident.get("id"),
                number=incident.get("number"),
            )
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if store_failure(self.ctx, exc) is None:  # an outage is logged once, by its tracker
                log.exception("gps_alarm_case_failed", unit_id=device.unit_id)
            self._alarming.discard(device.unit_id)  # the next report with the bit tries again
            try:
                await redis.delete(key)
            except Exception as exc:
                log.warning(
                    "gps_alarm_clear_failed", unit_id=device.unit_id, error=f"{type(exc).__name__}: {exc}"
                )

    async def close(self) -> None:
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
