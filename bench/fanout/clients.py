"""Board clients for the fan-out benchmark, in their own process.

``python -m bench.fanout.clients PORT PATH N SAMPLE_EVERY``: opens N websocket connections (the
handshake by hand, no compression offered), prints ``{"ready": ...}``, then on ``measure`` (stdin)
starts counting and on ``stop`` prints the result as one JSON line and exits.

Only every SAMPLE_EVERY-th connection decodes what it receives (JSON of every message, latency from
the ``t`` the writer stamped into each change just before its commit); the others count bytes, so
that the load generator spends little of the machine the servers are measured on.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
from typing import Any

from bench.fanout.common import raise_fd_limit
from dispatchd.live.protocol import parse_frames


class Stats:
    def __init__(self) -> None:
        self.measuring = False
        self.latencies: list[float] = []
        self.bytes = 0
        self.closed = 0
        self.close_codes: dict[int, int] = {}
        self.duplicates = 0
        self.gaps = 0


class BoardClient(asyncio.Protocol):
    def __init__(self, request: bytes, sample: bool, stats: Stats) -> None:
        self.request = request
        self.sample = sample
        self.stats = stats
        self.buffer = b""
        self.open: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.handshaken = False
        self.last_seq = 0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        if not self.handshaken:
            self.buffer += data
            if b"\r\n\r\n" not in self.buffer:
                return
            head, data = self.buffer.split(b"\r\n\r\n", 1)
            self.buffer = b""
            self.handshaken = True
            if not self.open.done():
                self.open.set_result(head.split()[1] == b"101")
        self.stats.bytes += len(data)
        if not self.sample:
            return
        now = time.time()
        frames, self.buffer = parse_frames(self.buffer + data)
        for opcode, payload in frames:
            if opcode == 0x8:
                code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
                self.stats.close_codes[code] = self.stats.close_codes.get(code, 0) + 1
            elif opcode == 0x1:
                self._message(json.loads(payload), now)

    def _message(self, msg: Any, now: float) -> None:
        kind = msg.get("type")
        if kind == "frame":  # the baseline's one-message-per-frame mode
            for change in msg["changes"]:
                self._message(change, now)
        elif kind == "change":
            seq = msg["seq"]
            if self.last_seq:
                if seq <= self.last_seq:
                    self.stats.duplicates += 1
                elif seq != self.last_seq + 1:
                    self.stats.gaps += 1
            self.last_seq = max(self.last_seq, seq)
            if self.stats.measuring:
                self.stats.latencies.append(now - msg["data"]["t"])
        elif kind == "snapshot":
            self.last_seq = msg["seq"]

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.closed += 1
        if not self.open.done():
            self.open.set_result(False)


async def main(port: int, path: str, n: int, sample_every: int) -> None:
    raise_fd_limit()
    loop = asyncio.get_running_loop()
    stats = Stats()
    clients: list[BoardClient] = []
    started = time.perf_counter()

    async def one(i: int) -> None:
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        client = BoardClient(request, i % sample_every == 0, stats)
        await loop.create_connection(lambda: client, "127.0.0.1", port)
        if not await asyncio.wait_for(client.open, 60):
            raise SystemExit(f"connection {i} refused")
        clients.append(client)

    for start in range(0, n, 100):
        await asyncio.gather(*(one(i) for i in range(start, min(n, start + 100))))
    print(json.dumps({"ready": len(clients), "seconds": round(time.perf_counter() - started, 1)}), flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = (await reader.readline()).decode().strip()
        if line == "measure":
            stats.latencies.clear()
            stats.bytes = 0
            stats.measuring = True
        elif line in ("stop", ""):
            stats.measuring = False
            print(
                json.dumps(
                    {
                        "latencies": stats.latencies,
                        "bytes": stats.bytes,
                        "closed": stats.closed,
                        "close_codes": stats.close_codes,
                        "duplicates": stats.duplicates,
                        "gaps": stats.gaps,
                        "sampled": sum(1 for c in clients if c.sample),
                    }
                ),
                flush=True,
            )
            for c in clients:
                if c.transport is not None:
                    c.transport.abort()
            return


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])))
