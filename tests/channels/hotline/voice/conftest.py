"""Fixtures of the voice tests: an application whose WebRTC stays on loopback, helpers to wait."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from dispatchd.channels.hotline.slots import SIP_PORTS
from dispatchd.web.appkeys import CTX
from tests.conftest import AppFactory


@pytest.fixture
async def voice_client(make_client: AppFactory) -> TestClient[Any, Any]:
    """The application with ICE host candidates on loopback only (no traffic leaves the machine)."""
    return await make_client(video_host_addresses="127.0.0.1")


def sip_port(client: TestClient[Any, Any]) -> int:
    ports: dict[str, int] = client.server.app[CTX][SIP_PORTS]
    return ports["udp"]


async def eventually(probe: Callable[[], Awaitable[Any]], limit: float = 20.0) -> Any:
    """Poll ``probe`` until it returns something truthy (bounded; for I/O, not for time)."""
    async with asyncio.timeout(limit):
        while True:
            found = await probe()
            if found:
                return found
            await asyncio.sleep(0.05)


async def until(predicate: Callable[[], bool], limit: float = 20.0) -> None:
    async def probe() -> bool:
        return predicate()

    await eventually(probe, limit)


async def waiting_call(client: TestClient[Any, Any], headers: dict[str, str]) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        body = await (await client.get("/api/v1/hotline/calls?state=queued,ringing", headers=headers)).json()
        found: list[dict[str, Any]] = body["calls"]
        return found[0] if found else None

    call: dict[str, Any] = await eventually(probe)
    return call


async def call_state(client: TestClient[Any, Any], headers: dict[str, str], call_id: int) -> dict[str, Any]:
    body: dict[str, Any] = await (
        await client.get(f"/api/v1/hotline/calls/{call_id}", headers=headers)
    ).json()
    return body
