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
    start_platform,
)
from tests.conftest import COUNTY, AppFactory, UserFactory


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


async def registered_device(
    client: TestClient[Any, Any], make_device: DeviceFactory, headers: dict[str, str], **options: Any
) -> Any:
    """A device registered and its catalogue taken in (its cameras listed)."""
    device = await make_device(client, **options)
    assert await device.register() == 200

    async def listed() -> bool:
        return len(await cameras(client, headers, device=device.device_id)) == len(device.channels)

    await poll(listed)
    return device


@pytest.mark.parametrize(
    ("sip", "media"), [("UDP", "udp"), ("UDP", "tcp-passive"), ("TCP", "tcp-active"), ("TCP", "udp")]
)
async def test_view_over_each_transport(
    platform: TestClient[Any, Any],
    make_device: DeviceFactory,
    make_user: UserFactory,
    viewers: Any,
    sip: str,
    media: str,
) -> None:
    """Signalling over UDP or TCP, media over UDP, TCP with the device connecting (we offer passive) or
    TCP with us connecting (we offer active, RFC 4145): the viewer decodes frames each way."""
    officer = await make_user("duty_officer", COUNTY)
    admin = await make_user("admin", COUNTY)
    resp = await platform.patch(
        f"/api/v1/gb28181/devices/{DEVICE}", json={"media_transport": media}, headers=admin.headers
    )
    assert resp.status == 200, await resp.text()
    device = await registered_device(platform, make_device, officer.headers, transport=sip)
    viewer: Viewer = viewers()
    assert await viewer.open(platform, device.channels[1].id, officer.headers) == 200

    async def decoded() -> bool:
        return len(viewer.frames) >= 10

    await poll(decoded)
    (stream,) = device.streams.values()
    expected = {"udp": "UDP", "tcp-passive": "TCP-passive", "tcp-active": "TCP-active"}[media]
    assert stream.transport == expected and stream.ssrc > 0


async def test_viewers_share_one_stream_and_the_last_one_out_ends_it(
    platform: TestClient[Any, Any], make_device: DeviceFactory, make_user: UserFactory, viewers: Any
) -> None:
    """Two viewers of one camera cost the device one INVITE; when both have left, the device gets a BYE."""
    officer = await make_user("duty_officer", COUNTY)
    device = await registered_device(platform, make_device, officer.headers)
    camera = device.channels[0].id
    first: Viewer = viewers()
    second: Viewer = viewers()
    assert await first.open(platform, camera, officer.headers) == 200
    assert await second.open(platform, camera, officer.headers) == 200

    async def both_decode() -> bool:
        return len(first.frames) >= 5 and len(second.frames) >= 5

    await poll(both_decode)
    invites = [m for m in device.messages if m.method == "INVITE"]
    assert len(invites) == 1
    for viewer in (first, second):
        resp = await platform.delete(
            f"/api/v1/cameras/{camera}/view/{viewer.session}", headers=officer.headers
        )
        assert resp.status == 200

    async def bye() -> bool:
        return device.byes == [invites[0].header("Call-ID")]

    await poll(bye)


async def test_ptz_command_arrives_with_the_right_bytes(
    platform: TestClient[Any, Any], make_device: DeviceFactory, make_user: UserFactory
) -> None:
    """PTZ up at speed 100, zoom in, stop and a preset call reach the channel as Annex A.3 bytes."""
    officer = await make_user("duty_officer", COUNTY)
    device = await registered_device(platform, make_device, officer.headers)
    camera = device.channels[2].id
    for body in (
        {"action": "up", "speed": 100},
        {"action": "zoom_in", "speed": 0xF0},
        {"action": "stop"},
        {"action": "preset_call", "preset": 3},
    ):
        resp = await platform.post(f"/api/v1/cameras/{camera}/ptz", json=body, headers=officer.headers)
        assert resp.status == 202, await resp.text()

    async def four() -> bool:
        return len(device.ptz_commands) == 4

    await poll(four)
    # Byte 8 is the sum of bytes 1–7 mod 256: A5+0F+08+64 = 0x120 → 20 (the command eXosip sent in the
    # captures), A5+0F+10+F0 → B4, A5+0F → B4, A5+0F+82+03 → 39.
    assert device.ptz_commands == [
        "A50F000800640020",
        "A50F00100000F0B4",
        "A50F0000000000B4",
        "A50F008200030039",
    ]
    assert all(m.uri.startswith(f"sip:{camera}@") for m in device.controls)


async def test_offline_after_missed_keepalives_and_back(
    platform: TestClient[Any, Any], make_device: DeviceFactory, make_user: UserFactory, clock: FakeClock
) -> None:
    """After 3 × 10 s without keep-alive the device and its cameras are offline; a keep-alive brings them back."""
    officer = await make_user("duty_officer", COUNTY)
    device = await registered_device(platform, make_device, officer.headers)
    assert await device.keepalive() == 200
    clock.advance(31)

    async def offline() -> bool:
        return {c["status"] for c in await cameras(platform, officer.headers)} == {"offline"}

    await poll(offline)
    resp = await platform.get(f"/api/v1/gb28181/devices/{DEVICE}", headers=officer.headers)
    assert (await resp.json())["status"] == "offline"
    assert await device.keepalive() == 200

    async def online() -> bool:
        return {c["status"] for c in await cameras(platform, officer.headers)} == {"online"}

    await poll(online)


async def test_stalled_stream_is_requested_again(
    platform: TestClient[Any, Any],
    make_device: DeviceFactory,
    make_user: UserFactory,
    viewers: Any,
    clock: FakeClock,
) -> None:
    """A camera that stops sending without a BYE gets a BYE and a new INVITE; the viewer decodes again."""
    officer = await make_user("duty_officer", COUNTY)
    device = await registered_device(platform, make_device, officer.headers)
    viewer: Viewer = viewers()
    assert await viewer.open(platform, device.channels[0].id, officer.headers) == 200

    async def decoding(n: int) -> bool:
        return len(viewer.frames) >= n

    await poll(lambda: decoding(5))
    device.stop_media()
    clock.advance(9)  # past [gb28181] stall_timeout (8 s)

    async def reinvited() -> bool:
        return len([m for m in device.messages if m.method == "INVITE"]) == 2 and len(device.byes) == 1

    await poll(reinvited)
    before = len(viewer.frames)
    await poll(lambda: decoding(before + 5))


async def test_hostile_devices_do_not_harm_the_others(
    make_client: AppFactory, make_device: DeviceFactory, make_user: UserFactory
) -> None:
    """A wrong password, a flood, malformed XML and GBK text from other devices: the good device is
    still answered and served, and every refusal is counted in /metrics."""
    platform = await start_platform(make_client, gb28181_device_burst=40, gb28181_device_rate=5)
    officer = await make_user("duty_officer", COUNTY)
    good = await registered_device(platform, make_device, officer.headers)
    liar = await make_device(platform, device_id="33038100001320000002", password="guess")
    assert await liar.register() == 403
    noisy = await make_device(platform, device_id="33038100001320000003", channels=[])
    assert await noisy.register() == 200
    noisy.flood(600, b"<Notify><CmdType>Keepalive</CmdType>")
    from tests.channels.gb28181.device import manscdp

    gbk = manscdp(
        "Notify",
        "Alarm",
        5,
        "33038100001310000009",
        "<AlarmDescription>堃区越界报警</AlarmDescription>\n",
        "GBK",
    )
    assert await good.message(gbk) == 200
    assert await good.keepalive() == 200
    resp = await platform.post(f"/api/v1/gb28181/devices/{DEVICE}/catalog", headers=officer.headers)
    assert resp.status == 202
    metrics = await (await platform.get("/metrics")).text()
    assert 'dispatchd_gb28181_dropped_total{reason="rate_limited"}' in metrics
    assert 'dispatchd_gb28181_dropped_total{reason="malformed_xml"}' in metrics
    assert "dispatchd_gb28181_auth_failures_total 1.0" in metrics
    assert 'dispatchd_gb28181_devices{status="online"} 2.0' in metrics
    devices = await platform.get("/api/v1/gb28181/devices", headers=officer.headers)
    assert {d["id"] for d in (await devices.json())["items"]} == {DEVICE, "33038100001320000003"}


async def test_device_with_its_own_password(
    platform: TestClient[Any, Any], make_device: DeviceFactory, make_user: UserFactory
) -> None:
    """A password set through the API (kept as HA1) is the only one that device may use."""
    admin = await make_user("admin", COUNTY)
    own = "33038100001320000005"
    resp = await platform.patch(
        f"/api/v1/gb28181/devices/{own}", json={"password": "its-own-pw"}, headers=admin.headers
    )
    assert resp.status == 200 and (await resp.json())["own_password"] is True
    shared = await make_device(platform, device_id=own, channels=[])
    assert await shared.register() == 403
    assert await shared.register(password="its-own-pw") == 200


async def test_nearest_cameras_and_a_case(
    platform: TestClient[Any, Any], make_device: DeviceFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Cameras nearest to a point come nearest first with their distance; a case shows its nearest."""
    officer = await make_user("duty_officer", COUNTY)
    device = await registered_device(platform, make_device, officer.headers)
    from tests.incidents.helpers import report

    case = await report(platform, officer, org_tree, grid=GRIDS[1])
    resp = await platform.get(f"/api/v1/incidents/{case['id']}/cameras", headers=officer.headers)
    near = (await resp.json())["items"]
    assert near[0]["id"] == device.channels[1].id and near[0]["distance_m"] < 5
    assert [c["distance_m"] for c in near] == sorted(c["distance_m"] for c in near)
    first = device.channels[0]
    resp = await platform.get(
        "/api/v1/cameras/nearest",
        params={"lat": str(first.lat), "lon": str(first.lon), "limit": "1"},
        headers=officer.headers,
    )
    assert [c["id"] for c in (await resp.json())["items"]] == [first.id]


async def test_catalog_notifications_gcj02_and_overrides(
    platform: TestClient[Any, Any], make_device: DeviceFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Catalogue notifications switch a camera off and remove another; a device reporting GCJ-02 has
    its positions stored in WGS-84; a position and unit set by hand survive the next catalogue."""
    from dispatchd.domain.geo import gcj02_to_wgs84, wgs84_to_gcj02
    from tests.channels.gb28181.device import manscdp

    officer = await make_user("duty_officer", COUNTY)
    admin = await make_user("admin", COUNTY)
    device = await registered_device(platform, make_device, officer.headers)
    first, second, third = device.channels
    notify = (
        '<SumNum>2</SumNum>\n<DeviceList Num="2">\n'
        f"<Item>\n<DeviceID>{first.id}</DeviceID>\n<Event>OFF</Event>\n</Item>\n"
        f"<Item>\n<DeviceID>{second.id}</DeviceID>\n<Event>DEL</Event>\n</Item>\n</DeviceList>\n"
    )
    assert await device.message(manscdp("Notify", "Catalog", 77, DEVICE, notify)) == 200

    async def applied() -> bool:
        found = {c["id"]: c["status"] for c in await cameras(platform, officer.headers)}
        return found == {first.id: "offline", third.id: "online"}

    await poll(applied)
    # The camera's own position and unit, set by hand.
    resp = await platform.patch(
        f"/api/v1/cameras/{third.id}", json={"name": "莘塍路口", "org": "330381002"}, headers=officer.headers
    )
    assert resp.status == 200 and (await resp.json())["org"] == "330381002"
    # The device says its coordinates are GCJ-02 (as AMap gave them): its catalogue is read again.
    for channel in device.channels:
        assert channel.lat is not None and channel.lon is not None
        channel.lat, channel.lon = wgs84_to_gcj02(channel.lat, channel.lon)
    resp = await platform.patch(
        f"/api/v1/gb28181/devices/{DEVICE}", json={"coordinates": "gcj02"}, headers=admin.headers
    )
    assert resp.status == 200
    resp = await platform.post(f"/api/v1/gb28181/devices/{DEVICE}/catalog", headers=officer.headers)
    assert resp.status == 202
    expected = gcj02_to_wgs84(third.lat, third.lon)

    async def converted() -> bool:
        found = {c["id"]: c for c in await cameras(platform, officer.headers)}
        camera = found.get(third.id)
        return camera is not None and abs(camera["lat"] - expected[0]) < 1e-7 and len(found) == 3

    await poll(converted)
    found = {c["id"]: c for c in await cameras(platform, officer.headers)}
    assert found[third.id]["org"] == "330381002" and found[third.id]["name"] == "莘塍路口"
    assert abs(found[first.id]["lon"] - gcj02_to_wgs84(first.lat, first.lon)[1]) < 1e-7
    assert found[first.id]["org"] == GRIDS[0]


async def test_jurisdiction_and_metrics_of_streams(
    platform: TestClient[Any, Any], make_device: DeviceFactory, make_user: UserFactory, viewers: Any
) -> None:
    """A township officer lists only its township's cameras; /metrics counts the stream and its viewers."""
    officer = await make_user("duty_officer", COUNTY)
    township = await make_user("duty_officer", "330381001")
    device = await registered_device(platform, make_device, officer.headers)
    mine = {c["id"] for c in await cameras(platform, township.headers)}
    assert mine == {device.channels[0].id, device.channels[1].id}
    resp = await platform.post(
        f"/api/v1/cameras/{device.channels[2].id}/view",
        json={"offer": {"type": "offer", "sdp": "v=0"}},
        headers=township.headers,
    )
    assert resp.status == 404
    viewer: Viewer = viewers()
    assert await viewer.open(platform, device.channels[0].id, township.headers) == 200

    async def decoding() -> bool:
        return len(viewer.frames) >= 3

    await poll(decoding)
    metrics = await (await platform.get("/metrics")).text()
    assert 'dispatchd_gb28181_streams{state="playing",transport="udp"} 1.0' in metrics
    assert "dispatchd_gb28181_viewers 1.0" in metrics
    assert 'dispatchd_gb28181_stream_events_total{event="answered"} 1.0' in metrics
