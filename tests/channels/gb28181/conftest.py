"""Fixtures of the GB/T 28181 platform tests: an application whose SIP and media stay on loopback, an
H.264 clip made by ffmpeg, simulated devices, and an aiortc viewer that decodes what it receives."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import av
import pytest
from aiohttp.test_utils import TestClient
from aiortc import RTCPeerConnection, RTCSessionDescription

from dispatchd.channels.gb28181.runtime import GB28181
from dispatchd.domain.orgs import OrgTree
from dispatchd.web.appkeys import CTX
from tests.channels.gb28181.device import Channel, SimulatedDevice
from tests.conftest import AppFactory, require_tool
from tests.incidents.helpers import point_in

PLATFORM_ID = "33038100002000000001"
DOMAIN = "3303810000"
PASSWORD = "sim-Passw0rd"
DEVICE = "33038100001320000001"
GRIDS = ("330381001001G001", "330381001001G002", "330381002001G001")


@pytest.fixture(scope="session")
def clip(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[bytes, bool]]:
    """Three seconds of ffmpeg's test pattern in H.264 (baseline, 160×120, 10 fps, a key frame a second),
    as access units with their key-frame flag."""
    ffmpeg = require_tool("ffmpeg")
    path = tmp_path_factory.mktemp("clip") / "testsrc.h264"
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
         "-i", "testsrc=size=160x120:rate=10:duration=3", "-pix_fmt", "yuv420p",
         "-c:v", "libx264", "-profile:v", "baseline", "-g", "10", "-bf", "0", "-f", "h264", str(path)],
        check=True,
    )  # fmt: skip
    with av.open(str(path)) as container:
        return [
            (bytes(p), bool(p.is_keyframe)) for p in container.demux(container.streams.video[0]) if p.size
        ]


async def start_platform(make_client: AppFactory, **overrides: object) -> TestClient[Any, Any]:
    """dispatchd with the GB/T 28181 platform on a free port and ICE on loopback only."""
    settings: dict[str, object] = {
        "video_host_addresses": "127.0.0.1",
        "gb28181_host": "127.0.0.1",
        "gb28181_password": PASSWORD,
        "gb28181_linger": 0,
        "gb28181_keepalive_interval": 10,
        "gb28181_missed_keepalives": 3,
    }
    settings.update(overrides)
    return await make_client(**settings)


@pytest.fixture
async def platform(make_client: AppFactory) -> TestClient[Any, Any]:
    return await start_platform(make_client)


def sip_port(client: TestClient[Any, Any]) -> int:
    return int(client.server.app[CTX][GB28181].ports["udp"])


DeviceFactory = Callable[..., Awaitable[SimulatedDevice]]


def channels(tree: OrgTree, device: str = DEVICE) -> list[Channel]:
    """Three cameras of a device, in three grids of two townships."""
    out = []
    for n, grid in enumerate(GRIDS, 1):
        lat, lon = point_in(tree, grid)
        out.append(Channel(f"{device[:10]}131{n:07d}", f"路口摄像机{n}", lat, lon))
    return out


@pytest.fixture
async def make_device(org_tree: OrgTree, clip: list[tuple[bytes, bool]]) -> AsyncIterator[DeviceFactory]:
    devices: list[SimulatedDevice] = []

    async def factory(client: TestClient[Any, Any], **options: Any) -> SimulatedDevice:
        device_id = options.pop("device_id", DEVICE)
        options.setdefault("channels", channels(org_tree, device_id))
        device = SimulatedDevice(
            device_id=device_id,
            platform=("127.0.0.1", sip_port(client)),
            password=options.pop("password", PASSWORD),
            platform_id=PLATFORM_ID,
            domain=DOMAIN,
            frames=clip,
            **options,
        )
        await device.start()
        devices.append(device)
        return device

    yield factory
    for device in devices:
        await device.close()


async def poll(check: Callable[[], Awaitable[bool]], limit: float = 30.0) -> None:
    """Wait until ``check()`` is true; fail after ``limit`` seconds (I/O is awaited, nothing is timed)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not await check():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def cameras(
    client: TestClient[Any, Any], headers: dict[str, str], **query: str
) -> list[dict[str, Any]]:
    resp = await client.get("/api/v1/cameras", params=query, headers=headers)
    assert resp.status == 200, await resp.text()
    items: list[dict[str, Any]] = (await resp.json())["items"]
    return items


class Viewer:
    """An aiortc peer viewing a camera through ``POST /api/v1/cameras/{id}/view``; decodes every frame."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection()
        self.frames: list[av.VideoFrame] = []
        self.session = ""
        self._task: asyncio.Task[None] | None = None

    async def open(
        self, client: TestClient[Any, Any], camera: str, headers: dict[str, str], playback: dict[str, Any] | None = None
    ) -> int:
        """Live view, or with ``playback`` ({start, end}) the recording (POST …/playback)."""
        self.pc.addTransceiver("video", direction="recvonly")

        @self.pc.on("track")
        def on_track(track: Any) -> None:
            self._task = asyncio.ensure_future(self._consume(track))

        await self.pc.setLocalDescription(await self.pc.createOffer())
        resp = await client.post(
            f"/api/v1/cameras/{camera}/{'view' if playback is None else 'playback'}",
            json={"offer": {"type": "offer", "sdp": self.pc.localDescription.sdp}, **(playback or {})},
            headers=headers,
        )
        if resp.status != 200:
            return resp.status
        data = await resp.json()
        assert data["answer"]["type"] == "answer"
        self.session = data["session"]
        await self.pc.setRemoteDescription(RTCSessionDescription(**data["answer"]))
        return 200

    async def _consume(self, track: Any) -> None:
        try:
            while True:
                frame = await track.recv()
                self.frames.append(frame)
        except Exception:
            return

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
        await self.pc.close()


@pytest.fixture
async def viewers() -> AsyncIterator[Callable[[], Viewer]]:
    made: list[Viewer] = []

    def factory() -> Viewer:
        viewer = Viewer()
        made.append(viewer)
        return viewer

    yield factory
    for viewer in made:
        await viewer.close()
