"""Broken and hostile input on the OsmAnd port: a 4xx naming the problem, never a 5xx or a retry."""

from __future__ import annotations

from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient

from tests.units.helpers import gps_port


async def _post(client: TestClient[Any, Any], body: bytes, content_type: str = "application/json") -> tuple[int, str]:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"http://127.0.0.1:{gps_port(client, 'osmand')}/", data=body, headers={"Content-Type": content_type}
        ) as r:
            return r.status, await r.text()


async def test_deeply_nested_json_is_400_not_a_retry(client: TestClient[Any, Any]) -> None:
    """JSON nested thousands deep is 400 naming the nesting (a 503 would make the phone retry forever)."""
    status, text = await _post(client, b"[" * 100000 + b"]" * 100000)
    assert status == 400 and "nested" in text


async def test_numbers_and_characters_out_of_bounds_are_400(client: TestClient[Any, Any]) -> None:
    """A number of thousands of digits, NUL in the query and a body that is no JSON are 400."""
    status, _ = await _post(client, b'{"location": {"coords": {"latitude": ' + b"9" * 5000 + b"}}}")
    assert status == 400
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{gps_port(client, 'osmand')}/?id=a%00b&lat=1&lon=2"
        async with http.get(url) as r:
            assert r.status == 400
    status, _ = await _post(client, b"\xff\xfe not json")
    assert status == 400


async def test_another_method_is_405_with_allow(client: TestClient[Any, Any]) -> None:
    """PUT on the OsmAnd port is 405 naming GET and POST."""
    async with aiohttp.ClientSession() as http:
        async with http.put(f"http://127.0.0.1:{gps_port(client, 'osmand')}/") as r:
            assert r.status == 405 and r.headers["Allow"] == "GET, POST"
            assert r.headers["Server"] == "dispatchd"
