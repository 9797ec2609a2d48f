"""Helpers of the live tests: a raw websocket client, outbox rows, squads and cases."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import socket
import struct
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from dispatchd.context import Context
from dispatchd.domain.orgs import OrgTree
from dispatchd.live.protocol import parse_frames
from dispatchd.store.changes import SYSTEM, Change, record
from dispatchd.web.appkeys import CTX
from tests.conftest import Account, UserFactory
from tests.incidents.helpers import point_in

COUNTY = "330381"
TOWN = "330381001"
OTHER_TOWN = "330381002"
GRID = "330381001001G001"


def app_of(client: TestClient[Any, Any]) -> Context:
    app: Context = client.server.app[CTX]
    return app


async def eventually(check: Callable[[], Awaitable[Any]], within: float = 10.0) -> Any:
    """Poll ``check`` until it returns something truthy, for at most ``within`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        result = await check()
        if result:
            return result
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def path_of(tree: OrgTree, code: str) -> list[str]:
    return [*reversed(tree.ancestors(code)), code]


NOW = datetime(2026, 5, 3, 8, 0, tzinfo=UTC)


async def emit_rows(
    conn: asyncpg.Connection, org_path: Sequence[str], n: int, *, topic: str = "test", size: int = 0
) -> list[int]:
    """``n`` outbox rows, each committed on its own; returns their seqs."""
    seqs = []
    for i in range(n):
        async with conn.transaction():
            change = Change(topic, i, 1, "test", list(org_path), {"i": i, "pad": "x" * size}, SYSTEM, NOW)
            seq = await record(conn, change)
            assert seq is not None
            seqs.append(seq)
    return seqs


class RawWs:
    """A websocket client on a plain socket: reads only when asked (a slow client is one that does not)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""
        self.frames: deque[tuple[int, bytes]] = deque()
        self.close_code: int | None = None

    @classmethod
    async def connect(cls, port: int, path: str, *, rcvbuf: int | None = None) -> RawWs:
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await loop.sock_sendall(sock, request.encode())
        ws = cls(sock)
        while b"\r\n\r\n" not in ws.buffer:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 4096), 10)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            ws.buffer += chunk
        head, rest = ws.buffer.split(b"\r\n\r\n", 1)
        frames, ws.buffer = parse_frames(rest)
        ws.frames.extend(frames)
        status = int(head.split()[1])
        if status != 101:
            sock.close()
            raise ConnectionError(f"handshake answered {status}")
        return ws

    async def receive(self, within: float = 10.0) -> dict[str, Any] | None:
        """The next JSON message; None once the server closed (``close_code`` says how)."""
        loop = asyncio.get_running_loop()
        while True:
            while self.frames:
                opcode, payload = self.frames.popleft()
                if opcode == 0x8:
                    self.close_code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                    await self._answer_close(payload[:2])
                    return None
                if opcode == 0x1:
                    message: dict[str, Any] = json.loads(payload)
                    return message
            if self.close_code is not None:
                return None
            chunk = await asyncio.wait_for(loop.sock_recv(self.sock, 262144), within)
            if not chunk:
                self.close_code = 1006
                return None
            frames, self.buffer = parse_frames(self.buffer + chunk)
            self.frames.extend(frames)

    async def _answer_close(self, body: bytes) -> None:
        """Echo the close (RFC 6455 §5.5.1), masked as a client must."""
        mask = os.urandom(4)
        masked = bytes(x ^ mask[i % 4] for i, x in enumerate(body))
        try:
            await asyncio.get_running_loop().sock_sendall(self.sock, bytes([0x88, 0x80 | len(body)]) + mask + masked)
        except OSError:
            pass

    async def receive_until(
        self, done: Callable[[list[dict[str, Any]]], bool], within: float = 15.0
    ) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not done(out):
            msg = await self.receive(max(0.01, deadline - loop.time()))
            if msg is None:
                break
            out.append(msg)
        return out

    def cut(self) -> None:
        """Drop the connection as a network would: no close frame."""
        self.sock.close()


def changes(messages: Sequence[dict[str, Any]]) -> list[int]:
    return [m["seq"] for m in messages if m["type"] == "change"]


def board_path(acct: Account, since: int | None = None) -> str:
    return f"/ws/board?token={acct.token}" + (f"&since={since}" if since is not None else "")


async def make_squad(
    client: TestClient[Any, Any],
    officer: Account,
    make_user: UserFactory,
    *,
    org: str = TOWN,
    name: str = "应急中队一组",
    kind: str = "team",
    members: int = 1,
) -> tuple[dict[str, Any], list[Account]]:
    r = await client.post("/api/v1/units", json={"name": name, "kind": kind, "org": org}, headers=officer.headers)
    assert r.status == 201, await r.text()
    unit: dict[str, Any] = await r.json()
    accounts = []
    for _ in range(members):
        member = await make_user("squad_member", org)
        r = await client.post(
            f"/api/v1/units/{unit['id']}/members", json={"username": member.user.username}, headers=officer.headers
        )
        assert r.status in (200, 201), await r.text()
        accounts.append(member)
    return unit, accounts


async def make_case(
    client: TestClient[Any, Any], officer: Account, tree: OrgTree, grid: str = GRID, **fields: Any
) -> dict[str, Any]:
    lat, lon = point_in(tree, grid)
    body = {
        "category": "incident.dispute",
        "description": "两户村民因宅基地界址发生争执",
        "location": {"lat": lat, "lon": lon},
        "priority": "P1",
        **fields,
    }
    r = await client.post("/api/v1/incidents", json=body, headers=officer.headers)
    assert r.status == 201, await r.text()
    case: dict[str, Any] = await r.json()
    return case


async def place_unit(client: TestClient[Any, Any], unit_id: int, lat: float, lon: float, at: datetime) -> None:
    """Give a unit a live position through the position sink, as a tracker would."""
    from dispatchd.channels.gps.slots import SINK
    from dispatchd.domain.units import Position

    sink = app_of(client)[SINK]
    verdict = sink.submit(Position(unit_id=unit_id, device_id=0, lat=lat, lon=lon, at=at, source="osmand"), at)
    assert verdict == "live", verdict
    await sink.flush_pending()


async def order(
    client: TestClient[Any, Any], officer: Account, case_id: int, unit_id: int, expect: int = 201
) -> dict[str, Any]:
    r = await client.post(
        "/api/v1/orders",
        json={"incident_id": case_id, "unit_id": unit_id, "instructions": "立即前往现场处置"},
        headers=officer.headers,
    )
    body: dict[str, Any] = await r.json()
    assert r.status == expect, body
    return body


async def get_order(client: TestClient[Any, Any], who: Account, order_id: int) -> dict[str, Any]:
    r = await client.get(f"/api/v1/orders/{order_id}", headers=who.headers)
    body: dict[str, Any] = await r.json()
    assert r.status == 200, body
    return body
