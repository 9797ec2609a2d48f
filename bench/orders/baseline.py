"""The baseline of the order benchmark: a bare ``websockets`` server that only forwards.

``python -m bench.orders.baseline PORT``: devices connect to ``/squad/<unit>``; the benchmark
connects to ``/control`` and sends ``{"unit": U, "order": {...}}``; the server sends
``{"type": "order", "order": {...}}`` to the unit's connections and answers a device's ``ack`` with
``ok``. No store, no audit, no resend: the least any server must do to push an order and take a
receipt.
"""

from __future__ import annotations

import asyncio
import json
import sys

from websockets.asyncio.server import ServerConnection, serve

from bench.fanout.common import raise_fd_limit
from dispatchd.live.protocol import dumps, order_message


async def main(port: int) -> None:
    raise_fd_limit()
    squads: dict[int, set[ServerConnection]] = {}

    async def handler(ws: ServerConnection) -> None:
        path = ws.request.path if ws.request is not None else ""
        if path == "/control":
            async for text in ws:
                msg = json.loads(text)
                data = dumps(order_message(msg["order"]))
                for conn in list(squads.get(int(msg["unit"]), ())):
                    await conn.send(data)
            return
        unit = int(path.rsplit("/", 1)[1])
        squads.setdefault(unit, set()).add(ws)
        try:
            async for text in ws:
                msg = json.loads(text)
                if msg.get("type") == "ack":
                    await ws.send(dumps({"type": "ok", "for": "ack", "order_id": msg["order_id"], "state": "delivered"}))
        finally:
            squads[unit].discard(ws)

    async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None):
        await asyncio.Future()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
