"""Slow and greedy clients are cut: headers and bodies that trickle in, too many connections from one
address on the HTTP, OsmAnd and JT/T 808 ports, idle keep-alive connections and idle board sockets."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp.test_utils import TestClient

from tests.conftest import AppFactory
from tests.units.helpers import gps_port, metric

# A client waits this long for the server to act before the test calls it hung.
WAIT = 10.0


async def _open(port: int, source: str = "127.0.0.1") -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, local_addr=(source, 0))


async def _until_closed(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection (within WAIT)."""
    return await asyncio.wait_for(reader.read(), WAIT)


async def test_headers_that_trickle_in_are_cut_with_408(make_client: AppFactory) -> None:
    """A client that never finishes its headers gets 408 and is closed after header_timeout."""
    client = await make_client(http_header_timeout=1)
    reader, writer = await _open(client.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    await writer.drain()
    answer = await _until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 408")
    assert metric(client, "dispatchd_http_connections_cut_total", port="http", reason="header_timeout") == 1
    writer.close()


async def test_a_silent_connection_is_cut_too(make_client: AppFactory) -> None:
    """A connection that sends nothing at all is closed after header_timeout."""
    client = await make_client(http_header_timeout=1)
    reader, writer = await _open(client.port)
    assert (await _until_closed(reader)).startswith(b"HTTP/1.1 408")
    writer.close()


async def test_a_body_that_stops_coming_is_cut(make_client: AppFactory) -> None:
    """A body that goes body_timeout without a byte is cut; the connection closes."""
    client = await make_client(http_body_timeout=1)
    reader, writer = await _open(client.port)
    writer.write(
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1000\r\n\r\n{\"username\": "
    )
    await writer.drain()
    await _until_closed(reader)
    assert metric(client, "dispatchd_http_connections_cut_total", port="http", reason="body_timeout") == 1
    writer.close()


async def test_a_slow_but_steady_body_is_read(client: TestClient[Any, Any]) -> None:
    """A body that keeps coming (a byte at a time) is read to the end and answered."""
    reader, writer = await _open(client.port)
    body = b'{"username": "nobody", "password": "x"}'
    writer.write(
        b"POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Connection: close\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n"
    )
    for i in range(0, len(body), 8):
        writer.write(body[i : i + 8])
        await writer.drain()
        await asyncio.sleep(0.05)
    assert (await _until_closed(reader)).startswith(b"HTTP/1.1 401")
    writer.close()


async def test_connections_per_address_are_capped_on_the_http_port(make_client: AppFactory) -> None:
    """Past max_connections_per_address from one address a new connection gets 429 and is closed;
    another address still connects, and a freed slot is taken again."""
    client = await make_client(http_max_connections_per_address=3)
    held = [await _open(client.port, "127.0.0.5") for _ in range(3)]
    reader, writer = await _open(client.port, "127.0.0.5")
    answer = await _until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 429") and b"Retry-After" in answer
    writer.close()
    other_reader, other = await _open(client.port, "127.0.0.6")
    other.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await _until_closed(other_reader)).startswith(b"HTTP/1.1 200")
    held[0][1].close()
    await asyncio.sleep(0.2)
    reader, writer = await _open(client.port, "127.0.0.5")
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert (await _until_closed(reader)).startswith(b"HTTP/1.1 200")
    for _, w in held[1:]:
        w.close()


async def test_connections_per_address_are_capped_on_the_gps_ports(make_client: AppFactory) -> None:
    """The OsmAnd port answers 429 and the JT/T 808 port closes a connection past the cap."""
    client = await make_client(osmand_max_connections_per_address=2, jt808_max_connections_per_address=2)
    osmand, jt808 = gps_port(client, "osmand"), gps_port(client, "jt808")
    held = [await _open(osmand) for _ in range(2)] + [await _open(jt808) for _ in range(2)]
    reader, writer = await _open(osmand)
    assert (await _until_closed(reader)).startswith(b"HTTP/1.1 429")
    writer.close()
    reader, writer = await _open(jt808)
    assert await _until_closed(reader) == b""
    writer.close()
    assert metric(client, "dispatchd_http_connections_cut_total", port="jt808", reason="per_address_cap") == 1
    for _, w in held:
        w.close()


async def test_an_idle_keep_alive_connection_is_closed(make_client: AppFactory) -> None:
    """After its answer, a kept-alive connection that sends nothing more is closed after the window."""
    client = await make_client(http_keepalive_timeout=1)
    reader, writer = await _open(client.port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await _until_closed(reader)
    assert answer.startswith(b"HTTP/1.1 200")
    writer.close()


async def test_a_board_that_does_not_answer_pings_is_closed(make_client: AppFactory, make_user: Any) -> None:
    """A board websocket whose peer never answers the server's pings is closed after the heartbeat."""
    from tests.live.helpers import RawWs, board_path  # the board test client

    client = await make_client(live_heartbeat_interval=1)
    officer = await make_user("duty_officer", "330381")
    ws = await RawWs.connect(client.port, board_path(officer))
    await asyncio.sleep(0.2)

    async def closed() -> bool:
        ws.sock.setblocking(False)
        try:
            return ws.sock.recv(65536) == b""
        except BlockingIOError:
            return False

    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT
    while not await closed():
        assert loop.time() < deadline, "the idle board was not closed"
        await asyncio.sleep(0.1)


async def test_a_malformed_request_is_one_info_line_without_its_bytes(
    client: TestClient[Any, Any], caplog: Any
) -> None:
    """Bytes that are not HTTP get 400; aiohttp's log of it is one INFO line, no traceback, no bytes."""
    import logging  # caplog reads the standard library's records

    caplog.set_level(logging.DEBUG, logger="aiohttp.server")
    reader, writer = await _open(client.port)
    writer.write(b"GET /\x00secret-bytes HTTP/1.1\r\nHost: x\r\n\r\n")
    answer = await _until_closed(reader)
    assert answer.split(b" ", 2)[1] == b"400" and b"secret-bytes" not in answer
    assert b"Server: dispatchd" in answer and b"aiohttp/" not in answer
    records = [r for r in caplog.records if r.name == "aiohttp.server"]
    assert records and all(r.levelno == logging.INFO and r.exc_info is None for r in records)
    assert not any("secret-bytes" in r.getMessage() for r in records)
    writer.close()
