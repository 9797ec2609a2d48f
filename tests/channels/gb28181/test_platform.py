"""dispatchd as a GB/T 28181 platform against a device simulated from the standard, over real sockets:
registration, keep-alive, catalogue, live view decoded by an aiortc peer, PTZ, robustness."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from dispatchd.clock import FakeClock
from dispatchd.domain.orgs import OrgTree
from tests.channels.gb28181.conftest import (
    DEVICE,
    GRIDS,
    DeviceFactory,
    Viewer,
    cameras,
    poll,
)
from tests.conftest import COUNTY, UserFactory


async def test_device_registers_and_its_cameras_appear(
    platform: TestClient[Any, Any], make_device: DeviceFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """A device registers with digest, keeps alive, and its three channels appear online at their
    positions, each owned by the grid it stands in."""
    officer = await make_user("duty_officer", COUNTY)
    device = await make_device(platform)
    assert await device.register() == 200
    assert await device.keepalive() == 200

    async def three() -> bool:
        return len(await cameras(platform, officer.headers)) == 3

    await poll(three)
    found = {c["id"]: c for c in await cameras(platform, officer.headers)}
    for channel, grid in zip(device.channels, GRIDS, strict=True):
        camera = found[channel.id]
        assert camera["name"] == channel.name and camera["status"] == "online"
        assert (camera["lat"], camera["lon"]) == (channel.lat, channel.lon)
        assert camera["org"] == grid and camera["device_id"] == DEVICE
    subscribed = {m.header("Event") for m in device.subscriptions}
    assert subscribed == {"Catalog", "Alarm"}


async def test_view_decodes_frames(
    platform: TestClient[Any, Any],
    make_device: DeviceFactory,
    make_user: UserFactory,
    viewers: Any,
) -> None:
    """POST /view with an aiortc offer answers with H.264; the peer decodes frames of the ffmpeg clip."""
    officer = await make_user("duty_officer", COUNTY)
    device = await make_device(platform)
    assert await device.register() == 200

    async def listed() -> bool:
        return len(await cameras(platform, officer.headers)) == 3

    await poll(listed)
    viewer: Viewer = viewers()
    assert await viewer.open(platform, device.channels[0].id, officer.headers) == 200

    async def decoded() -> bool:
        return len(viewer.frames) >= 10

    await poll(decoded)
    assert (viewer.frames[-1].width, viewer.frames[-1].height) == (160, 120)
