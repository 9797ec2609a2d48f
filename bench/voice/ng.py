"""A small client of rtpengine's ng control protocol: bencoded dictionaries over UDP, each message
prefixed with a cookie the answer repeats (rtpengine's docs, "ng control protocol")."""

from __future__ import annotations

import asyncio
import secrets
import socket
from typing import Any


def encode(value: Any) -> bytes:
    if isinstance(value, bytes):
        return str(len(value)).encode() + b":" + value
    if isinstance(value, str):
        return encode(value.encode())
    if isinstance(value, int):
        return b"i" + str(value).encode() + b"e"
    if isinstance(value, list):
        return b"l" + b"".join(encode(v) for v in value) + b"e"
    if isinstance(value, dict):
        return b"d" + b"".join(encode(k) + encode(value[k]) for k in sorted(value)) + b"e"
    raise TypeError(type(value))


def decode(data: bytes, i: int = 0) -> tuple[Any, int]:
    kind = data[i : i + 1]
    if kind == b"i":
        end = data.index(b"e", i)
        return int(data[i + 1 : end]), end + 1
    if kind in (b"l", b"d"):
        i += 1
        items: list[Any] = []
        while data[i : i + 1] != b"e":
            item, i = decode(data, i)
            items.append(item)
        if kind == b"l":
            return items, i + 1
        return {items[k].decode(): items[k + 1] for k in range(0, len(items), 2)}, i + 1
    colon = data.index(b":", i)
    length = int(data[i:colon])
    return data[colon + 1 : colon + 1 + length], colon + 1 + length


def sdp(port: int) -> str:
    return (
        f"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\na=sendrecv\r\n"
    )


def audio_port(answer: dict[str, Any]) -> int:
    text = answer["sdp"].decode() if isinstance(answer["sdp"], bytes) else answer["sdp"]
    line = next(line for line in text.splitlines() if line.startswith("m=audio "))
    return int(line.split()[1])


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: dict[bytes, asyncio.Future[bytes]] = {}

    def datagram_received(self, data: bytes, addr: Any) -> None:
        cookie, _, body = data.partition(b" ")
        future = self.waiting.pop(cookie, None)
        if future is not None and not future.done():
            future.set_result(body)


class NgClient:
    def __init__(self, address: tuple[str, int]) -> None:
        self.address = address
        self.transport: asyncio.DatagramTransport | None = None
        self.protocol = _Protocol()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.transport, _ = await loop.create_datagram_endpoint(
            lambda: self.protocol, remote_addr=self.address
        )
        for _ in range(50):  # until rtpengine listens
            try:
                await asyncio.wait_for(self.call({"command": "ping"}), 0.2)
                return
            except TimeoutError:
                continue
        raise RuntimeError("rtpengine does not answer on its ng port")

    async def call(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.transport is not None
        cookie = secrets.token_hex(6).encode()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.protocol.waiting[cookie] = future
        self.transport.sendto(cookie + b" " + encode(message))
        answer, _ = decode(await future)
        result: dict[str, Any] = answer
        return result

    async def command(
        self, command: str, call_id: str, from_tag: str, sdp_text: str, to_tag: str = ""
    ) -> dict[str, Any]:
        message: dict[str, Any] = {
            "command": command,
            "call-id": call_id,
            "from-tag": from_tag,
            "sdp": sdp_text,
            "ICE": "remove",
        }
        if to_tag:
            message["to-tag"] = to_tag
        answer = await asyncio.wait_for(self.call(message), 5)
        if answer.get("result") != b"ok":
            raise RuntimeError(f"rtpengine refused {command}: {answer}")
        return answer

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
