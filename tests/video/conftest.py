"""Fixtures of the video tests: an application whose media stays on loopback, and meeting helpers."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from aiohttp.test_utils import TestClient

from tests.conftest import AppFactory


@pytest.fixture
async def video_client(make_client: AppFactory) -> TestClient[Any, Any]:
    """The application with ICE host candidates on loopback only (no traffic leaves the machine)."""
    return await make_client(video_host_addresses="127.0.0.1")


def ws_url(client: TestClient[Any, Any], link: str) -> str:
    """The signalling websocket URL for a join link ``…/meet/{id}?t=TOKEN``."""
    parts = urlsplit(link)
    token = parse_qs(parts.query)["t"][0]
    return str(client.make_url(parts.path.replace("/meet/", "/ws/meet/", 1) + f"?token={token}"))


async def create_meeting(
    client: TestClient[Any, Any], headers: dict[str, str], **body: Any
) -> dict[str, Any]:
    body.setdefault("title", "防汛会商")
    body.setdefault("invite", ["330381001", "330381002"])
    resp = await client.post("/api/v1/meetings", json=body, headers=headers)
    assert resp.status == 201, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data
