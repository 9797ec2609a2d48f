"""The baseline of the fan-out benchmark: a bare ``websockets`` server broadcasting the same changes.

``python -m bench.fanout.baseline PORT REDIS_URL FRAME_INTERVAL MODE`` subscribes to the same Redis
channel the dispatchd relay publishes to, gathers the rows like the board hub does (send at once
when idle, then at most every FRAME_INTERVAL seconds, start to start), encodes each change exactly as a board
``change`` message, and hands it to ``websockets.broadcast`` (no compression, no jurisdiction, no
snapshot, no resume, no slow-client policy: nothing but the broadcast). MODE ``messages`` broadcasts
each change as its own message (the same bytes dispatchd writes); ``frame`` broadcasts one message
per frame holding all its changes (one send per client per frame, as dispatchd writes).
"""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio as aioredis
from websockets.asyncio.server import ServerConnection, broadcast, serve

from bench.fanout.common import raise_fd_limit
from dispatchd.live.protocol import change_message, dumps, parse_envelope
from dispatchd.store import keys


async def main(port: int, redis_url: str, frame_interval: float, mode: str) -> None:
    raise_fd_limit()
    clients: set[ServerConnection] = set()
    pending: list[str] = []
    wake = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        clients.add(ws)
        try:
            await ws.wait_closed()
        finally:
            clients.discard(ws)

    async def subscribe() -> None:
        redis = aioredis.from_url(redis_url)
        pubsub = redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(keys.CHANGES_CHANNEL)
        async for msg in pubsub.listen():
            _, rows = parse_envelope(msg["data"])
            if rows:
                pending.extend(dumps(change_message(r)) for r in rows)
                wake.set()

    async def frames() -> None:
        loop = asyncio.get_running_loop()
        while True:
            await wake.wait()
            wake.clear()
            started = loop.time()
            batch = pending[:]
            pending.clear()
            if batch and clients:
                if mode == "messages":
                    for text in batch:
                        broadcast(clients, text)
                else:
                    broadcast(clients, '{"type":"frame","changes":[' + ",".join(batch) + "]}")
            await asyncio.sleep(max(0.0, started + frame_interval - loop.time()))

    async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None, max_queue=None):
        await asyncio.gather(subscribe(), frames())


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), sys.argv[4]))
