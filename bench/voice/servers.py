"""The systems under test, each in a process of its own driven by JSON lines on stdin/stdout.

``python -m bench.voice.servers bridge``: dispatchd's voice bridge — for each call a
:class:`~dispatchd.channels.hotline.voice.media.CallMedia` on the caller's side and, on the other,
either another ``CallMedia`` linked to it (``{"op": "sip"}``: a caller bridged to a department, RTP
both sides, what :func:`dispatchd.channels.hotline.console.transfer_out` builds) or the
officer's WebRTC leg answering an offer (``{"op": "webrtc"}``: the console's path, SRTP on that
side). Both run on one :class:`~dispatchd.channels.hotline.voice.media.MediaClock`, as in dispatchd.

``python -m bench.voice.servers relay``: the bare relay — two UDP sockets per call, each packet
sent on to where the other side's packets come from, nothing else.

Each answers ``{"caller_port", "far_port" | "answer"}`` per call, and ``{"pid"}`` first.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from typing import Any

import structlog

from dispatchd.channels.hotline.voice.media import CallMedia, MediaClock, link
from dispatchd.channels.hotline.voice.webrtc import OfficerLeg
from dispatchd.clock import SystemClock
from dispatchd.video import seam

HOST = "127.0.0.1"


class _Half(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.peer: tuple[str, int] | None = None
        self.other: _Half | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.peer = (str(addr[0]), int(addr[1]))
        other = self.other
        if other is not None and other.peer is not None and other.transport is not None:
            other.transport.sendto(data, other.peer)


async def _relay_call(caller: tuple[str, int], far: tuple[str, int]) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    a_t, a = await loop.create_datagram_endpoint(_Half, local_addr=(HOST, 0))
    b_t, b = await loop.create_datagram_endpoint(_Half, local_addr=(HOST, 0))
    a.other, b.other = b, a
    a.peer, b.peer = caller, far  # as an SDP would say
    return {"caller_port": a_t.get_extra_info("sockname")[1], "far_port": b_t.get_extra_info("sockname")[1]}


async def _bridge_sip(
    clock: MediaClock, monotonic: Any, caller: tuple[str, int], far: tuple[str, int]
) -> dict[str, Any]:
    a = CallMedia("a", codec=0, remote=caller, clock=monotonic)
    b = CallMedia("b", codec=0, remote=far, clock=monotonic)
    caller_port = await a.open(HOST)
    far_port = await b.open(HOST)
    link(a, b, on_a_closed=lambda: None, on_b_closed=lambda: None)
    clock.add(a)
    clock.add(b)
    return {"caller_port": caller_port, "far_port": far_port}


async def _bridge_webrtc(
    clock: MediaClock, monotonic: Any, caller: tuple[str, int], offer: str
) -> dict[str, Any]:
    from aiortc import RTCConfiguration

    a = CallMedia("a", codec=0, remote=caller, clock=monotonic)
    caller_port = await a.open(HOST)
    leg = await OfficerLeg.answer(offer, 0, RTCConfiguration(iceServers=[]))
    a.attach(leg)
    clock.add(a)
    return {"caller_port": caller_port, "answer": leg.answer_sdp}


async def main(kind: str) -> None:
    # stdout carries the answers: logs go to stderr, warnings only.
    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
    )
    seam.limit_host_addresses([HOST])
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    monotonic = SystemClock().monotonic
    clock = MediaClock(monotonic)

    def answer(data: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(data) + "\n")
        sys.stdout.flush()

    answer({"pid": os.getpid()})
    while line := await reader.readline():
        command = json.loads(line)
        caller = (HOST, int(command["caller"]))
        if kind == "relay":
            answer(await _relay_call(caller, (HOST, int(command["far"]))))
        elif command["op"] == "sip":
            answer(await _bridge_sip(clock, monotonic, caller, (HOST, int(command["far"]))))
        else:
            answer(await _bridge_webrtc(clock, monotonic, caller, command["offer"]))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
