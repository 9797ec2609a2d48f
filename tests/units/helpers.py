"""Helpers shared by the squad-unit and position-server tests."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp.test_utils import TestClient

from dispatchd.units.slots import GPS_PORTS
from dispatchd.web.appkeys import CTX

MAYU = "330381116"
# A point in Mayu town (马屿镇), and one about 2 km east of it.
MAYU_LAT, MAYU_LON = 27.7425, 120.48


def gps_port(client: TestClient[Any, Any], protocol: str) -> int:
    return client.server.app[CTX][GPS_PORTS][protocol]


async def make_unit(
    client: TestClient[Any, Any],
    headers: dict[str, str],
    name: str = "马屿应急中队一组",
    kind: str = "team",
    org: str = MAYU,
) -> dict[str, Any]:
    r = await client.post("/api/v1/units", json={"name": name, "kind": kind, "org": org}, headers=headers)
    assert r.status == 201, await r.text()
    unit: dict[str, Any] = await r.json()
    return unit


async def add_device(
    client: TestClient[Any, Any],
    headers: dict[str, str],
    unit_id: int,
    protocol: str,
    identifier: str,
    **extra: Any,
) -> dict[str, Any]:
    r = await client.post(
        f"/api/v1/units/{unit_id}/devices",
        json={"protocol": protocol, "identifier": identifier, **extra},
        headers=headers,
    )
    assert r.status == 201, await r.text()
    device: dict[str, Any] = await r.json()
    return device


async def get_unit(client: TestClient[Any, Any], headers: dict[str, str], unit_id: int) -> dict[str, Any]:
    r = await client.get(f"/api/v1/units/{unit_id}", headers=headers)
    assert r.status == 200, await r.text()
    unit: dict[str, Any] = await r.json()
    return unit


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 5.0) -> Any:
    """Poll ``check`` until it returns something truthy (I/O done elsewhere), for at most ``within`` s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def metric(client: TestClient[Any, Any], name: str, **labels: str) -> float:

    value = client.server.app[CTX].metrics.registry.get_sample_value(name, labels)
    return float(value or 0.0)
