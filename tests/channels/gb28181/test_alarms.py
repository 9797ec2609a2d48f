"""A camera's alarm reaches the command room: a simulated device (written from the standard) sends
alarm notifications over real SIP on loopback; an intrusion opens one P1 case at the camera (its
repeats add to it), motion detection and a disk fault open none, the fault is logged, and the duty
officer finds the case among the cases of channel "video"."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from dispatchd.channels.gb28181.manscdp import gb_time as alarm_time
from dispatchd.domain.orgs import OrgTree
from tests.channels.gb28181.conftest import DEVICE, GRIDS, DeviceFactory, poll
from tests.channels.gb28181.device import manscdp
from tests.channels.gb28181.test_platform import registered_device
from tests.conftest import COUNTY, UserFactory


def alarm(sn: int, channel: str, priority: int, method: int, alarm_type: int | None, when: str = "2026-05-03T16:00:05") -> bytes:
    """A Notify/Alarm body as §9.4 and Annex A.2.5 write it (the shape of the Hikvision capture)."""
    info = f"<Info>\n<AlarmType>{alarm_type}</AlarmType>\n</Info>\n" if alarm_type is not None else ""
    inner = (
        f"<AlarmPriority>{priority}</AlarmPriority>\n<AlarmMethod>{method}</AlarmMethod>\n"
        f"<AlarmTime>{when}</AlarmTime>\n{info}"
    )
    return manscdp("Notify", "Alarm", sn, channel, inner)


async def video_cases(client: TestClient[Any, Any], headers: dict[str, str]) -> list[dict[str, Any]]:
    r = await client.get("/api/v1/incidents", params={"channel": "video"}, headers=headers)
    assert r.status == 200, await r.text()
    items: list[dict[str, Any]] = (await r.json())["items"]
    return items


async def test_an_intrusion_opens_one_case_at_the_camera_and_noise_opens_none(
    platform: TestClient[Any, Any], make_device: DeviceFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Motion detection (the Hikvision capture's kind) and a disk fault open no case, the fault is
    logged; an intrusion at priority 1 on the second camera opens a P1 case of channel video at that
    camera, in its grid, naming the camera and the alarm; the same alarm twice more adds no case,
    nor does an intrusion on a channel the device does not have."""
    officer = await make_user("duty_officer", COUNTY)
    device = await registered_device(platform, make_device, officer.headers)
    camera = device.channels[1]
    with capture_logs() as logs:
        assert await device.message(alarm(1, camera.id, 4, 5, 2)) == 200
        assert await device.message(alarm(2, DEVICE, 3, 6, 1)) == 200

        async def fault_logged() -> bool:
            return any(e["event"] == "gb28181_device_fault" for e in logs)

        await poll(fault_logged)
    assert await video_cases(platform, officer.headers) == []

    assert await device.message(alarm(3, camera.id, 1, 5, 6)) == 200

    async def opened() -> bool:
        return len(await video_cases(platform, officer.headers)) == 1

    await poll(opened)
    for sn in (4, 5):
        assert await device.message(alarm(sn, camera.id, 1, 5, 6)) == 200
    # A channel the device does not have opens nothing (made-up ids cannot multiply cases).
    with capture_logs() as logs:
        assert await device.message(alarm(6, DEVICE[:10] + "1319999999", 1, 5, 6)) == 200

        async def refused() -> bool:
            return any(e["event"] == "gb28181_alarm_unknown_channel" for e in logs)

        await poll(refused)
    await poll(lambda: _counted(platform, "case", 4))  # four were judged cases: one case stands
    (case,) = await video_cases(platform, officer.headers)
    assert case["priority"] == "P1" and case["channel"] == "video"
    assert abs(case["location"]["lat"] - camera.lat) < 1e-6 and abs(case["location"]["lon"] - camera.lon) < 1e-6
    assert case["grid"]["code"] == GRIDS[1]
    assert "入侵检测报警" in case["description"] and camera.name in case["description"]


async def _counted(client: TestClient[Any, Any], kind: str, n: int) -> bool:
    text = await (await client.get("/metrics")).text()
    return f'dispatchd_gb28181_alarm_kinds_total{{kind="{kind}"}} {float(n)}' in text


def test_alarm_times_are_beijing_time() -> None:
    """GB/T 28181 times carry no zone and are read as UTC+8; a time with a zone keeps it; junk is None."""
    at = alarm_time("2025-04-22T11:26:02")
    assert at is not None and at.utcoffset() == timedelta(hours=8) and at.hour == 11
    with_zone = alarm_time("2025-04-22T03:26:02+00:00")
    assert with_zone is not None and with_zone.utcoffset() == timedelta(0)
    assert alarm_time("") is None and alarm_time("yesterday") is None
