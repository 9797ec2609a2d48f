"""A camera's alarm into the command room: a case at the camera, a line about a fault, or a count
(:func:`dispatchd.domain.camera_alarms.judge` decides which).

The device repeats an alarm while the condition lasts, and several instances may hear one device in
turn, so a case is opened once per camera and kind of alarm within ``[gb28181] alarm_merge_s``: a
Redis key set with NX holds the case's id, and an alarm that finds it adds to that case's count
instead (``gb28181_alarm_merged``). Without Redis the case is opened anyway: a second case is
better than a missed intrusion. The case stands where the alarm says (when the device sends
coordinates), else at the camera; a camera without a position gives the case to its unit.
"""

from __future__ import annotations

from typing import Any

import structlog

from dispatchd.channels.gb28181.manscdp import Alarm, gb_time
from dispatchd.channels.gb28181.service import wgs84_position
from dispatchd.context import Context
from dispatchd.domain.camera_alarms import Judgement, judge
from dispatchd.incidents.service import create_incident
from dispatchd.store import keys
from dispatchd.store.outage import REDIS, note_degraded
from dispatchd.store.redis import as_text

log = structlog.get_logger("dispatchd.gb28181")

async def camera_alarm(ctx: Context, device_id: str, alarm: Alarm) -> tuple[Judgement, dict[str, Any] | None]:
    """Handle one alarm of a registered device; returns the judgement and the case it opened (None
    when it opened none: a fault, a note, a merged repeat, or alarm cases switched off)."""
    verdict = judge(alarm.method, alarm.alarm_type, alarm.priority)
    fields = {"device": device_id, "channel": alarm.device_id, "method": alarm.method, "alarm_type": alarm.alarm_type}
    if verdict.kind == "fault":
        log.warning("gb28181_device_fault", fault=verdict.name_en, **fields)
        return verdict, None
    settings = ctx.settings.gb28181
    if verdict.kind == "note" or not settings.alarm_cases:
        log.info("gb28181_alarm", alarm=verdict.name_en, priority=alarm.priority, **fields)
        return verdict, None
    async with ctx.pool.acquire() as conn:
        camera = await conn.fetchrow(
            "SELECT c.id, c.name, c.address, c.lat, c.lon, c.org_code, d.coordinates, d.org_code AS device_org,"
            " d.name AS device_name FROM gb_devices d LEFT JOIN cameras c ON c.id = $2 AND c.device_id = d.id"
            " WHERE d.id = $1",
            device_id,
            alarm.device_id,
        )
    if camera is None:
        log.warning("gb28181_alarm_unknown_device", **fields)
        return verdict, None
    if camera["id"] is None and alarm.device_id != device_id:
        # Neither one of its cameras nor the device itself: no case (a device cannot open cases
        # for channels it does not have, one per made-up id).
        log.warning("gb28181_alarm_unknown_channel", alarm=verdict.name_en, **fields)
        return verdict, None
    key = keys.camera_alarm(alarm.device_id, alarm.method, alarm.alarm_type)
    if settings.alarm_merge_s > 0:
        try:
            if not await ctx.redis.set(key, b"opening", nx=True, ex=settings.alarm_merge_s):
                existing = await ctx.redis.get(key)
                log.info("gb28181_alarm_merged", alarm=verdict.name_en, incident_id=as_text(existing) if existing is not None else None, **fields)
                return verdict, None
        except Exception as exc:  # Redis away: open the case anyway
            note_degraded(REDIS)
            log.warning("gb28181_alarm_not_deduplicated", error=f"{type(exc).__name__}: {exc}"[:200], **fields)
    reported = wgs84_position(alarm.latitude, alarm.longitude, camera["coordinates"])
    point = reported or (
        (camera["lat"], camera["lon"]) if camera["lat"] is not None and camera["lon"] is not None else None
    )
    where = camera["name"] or camera["device_name"] or alarm.device_id
    address = camera["address"] or None
    at = gb_time(alarm.time)
    description = (
        f"视频监控报警：{verdict.name}（{where}，通道 {alarm.device_id}"
        + (f"，{address}" if address else "")
        + (f"，报警时间 {alarm.time}" if alarm.time else "")
        + (f"，级别 {alarm.priority}" if alarm.priority else "")
        + (f"）。{alarm.description}" if alarm.description else "）。")
        + f" Camera alarm: {verdict.name_en} at {where}."
    )
    try:
        case = await create_incident(
            ctx,
            category=verdict.category or settings.alarm_category,
            description=description,
            channel="video",
            priority=verdict.priority,
            lat=point[0] if point else None,
            lon=point[1] if point else None,
            address=address,
            owner_unit=None if point else (camera["org_code"] or camera["device_org"]),
            observed_at=at,
            extra={"camera_id": alarm.device_id, "device_id": device_id, "alarm_method": alarm.method, "alarm_type": alarm.alarm_type},
        )
    except BaseException:
        try:
            await ctx.redis.delete(key)  # the next repeat of the alarm tries again
        except Exception as exc:
            log.warning("gb28181_alarm_key_not_cleared", error=f"{type(exc).__name__}: {exc}"[:200], **fields)
        raise
    if settings.alarm_merge_s > 0:
        try:
            await ctx.redis.set(key, str(case["id"]).encode(), ex=settings.alarm_merge_s)
        except Exception as exc:
            log.warning("gb28181_alarm_key_not_kept", error=f"{type(exc).__name__}: {exc}"[:200], **fields)
    log.warning("gb28181_alarm_case_opened", alarm=verdict.name_en, incident_id=case["id"], number=case.get("number"), **fields)
    return verdict, case

