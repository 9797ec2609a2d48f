"""The server side of ``bench.cameras``, in a process of its own so that its CPU is measured alone.

    python -m bench.cameras.sfu --mode gb28181 --sip-port 0 --http-port 0
    python -m bench.cameras.sfu --mode rtsp --rtsp-base rtsp://127.0.0.1:PORT/ --http-port 0

``gb28181``: dispatchd's GB/T 28181 edge (:class:`~dispatchd.channels.gb28181.edge.GbEdge`: the SIP
agent, the stream manager demultiplexing PS over RTP) and its WebRTC viewers
(:class:`~dispatchd.channels.gb28181.view.Viewers`), without PostgreSQL: the devices' events that
would be written there are left out (the load generator knows its channel ids).

``rtsp``: the same viewers fed by dispatchd's RTSP puller (:class:`~dispatchd.video.sources.RtspPuller`,
PyAV demuxing in a thread) — the baseline, how dispatchd already forwards a camera's H.264.

Both answer ``POST /view/{camera}`` with ``{"sdp"}`` → ``{"sdp"}`` and print one JSON line
``{"ready": true, "http": port, "sip": port}`` on stdout when they listen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dispatchd.channels.gb28181.edge import GbEdge  # noqa: E402
from dispatchd.channels.gb28181.view import Viewers  # noqa: E402
from dispatchd.clock import SystemClock  # noqa: E402
from dispatchd.config import load_settings  # noqa: E402
from dispatchd.context import Context  # noqa: E402
from dispatchd.domain.orgs import GridLocator, load_org_tree  # noqa: E402
from dispatchd.domain.taxonomy import load_taxonomy  # noqa: E402
from dispatchd.metrics import Metrics  # noqa: E402
from dispatchd.video import seam  # noqa: E402
from dispatchd.video.forward import ForwardingTotals, Source  # noqa: E402
from dispatchd.video.sources import RtspPuller  # noqa: E402


class BenchEdge(GbEdge):
    """The GB/T 28181 edge with the PostgreSQL side left out (nothing else changes)."""

    async def _apply(self, event: object) -> None:
        return None

    async def _housekeeping(self) -> None:
        await asyncio.Event().wait()


class _RtspStream:
    def __init__(self, puller: RtspPuller) -> None:
        self.puller = puller
        self.codec = "H264"
        self.consumers = 0


class RtspStreams:
    """What :class:`Viewers` needs of a stream manager, over RTSP pullers (one per camera, shared)."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.forwarding = ForwardingTotals()
        self.streams: dict[str, _RtspStream] = {}

    def acquire(
        self, camera: str, device: str, mode: str | None, *, participant: str | None = None
    ) -> tuple[Any, Source]:
        stream = self.streams.get(camera)
        if stream is None:
            puller = RtspPuller(self.base + camera, "H264", f"camera:{camera}", totals=self.forwarding)
            stream = self.streams[camera] = _RtspStream(puller)
            puller.start(lambda _kind, _source: None)
        stream.consumers += 1
        return stream, stream.puller.source

    def release(self, camera: str, source: Source | None = None) -> None:
        stream = self.streams.get(camera)
        if stream is not None:
            stream.consumers -= 1

    async def close(self) -> None:
        for stream in self.streams.values():
            await stream.puller.stop()


async def serve(args: argparse.Namespace) -> None:
    settings = load_settings(
        ROOT / "config" / "dispatchd.toml",
        env={},
        gb28181_host="127.0.0.1",
        gb28181_password=args.password,
        gb28181_linger=0,
        video_host_addresses="127.0.0.1",
        log_level="warning",
    )
    seam.limit_host_addresses(["127.0.0.1"])
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    tree = load_org_tree(settings.paths.orgs)
    ctx = Context(
        settings=settings,
        clock=SystemClock(),
        orgs=tree,
        locator=GridLocator(tree),
        taxonomy=load_taxonomy(settings.paths.taxonomy),
        metrics=Metrics(),
        instance_id=uuid.uuid4().hex[:8],
    )
    edge: BenchEdge | None = None
    rtsp: RtspStreams | None = None
    sip_port = 0
    if args.mode == "gb28181":
        edge = BenchEdge(ctx)
        sip_port = (await edge.start(args.sip_port))["udp"]
        viewers = Viewers(edge.streams, settings.video)
    else:
        rtsp = RtspStreams(args.rtsp_base)
        viewers = Viewers(rtsp, settings.video)  # type: ignore[arg-type]  # duck-typed stream manager

    async def view(request: web.Request) -> web.Response:
        body = await request.json()
        camera = request.match_info["camera"]
        device = camera[:10] + "1320000001" if edge is None else body["device"]
        _, answer = await viewers.open(camera, device, None, body["sdp"], "bench")
        return web.json_response({"sdp": answer})

    app = web.Application()
    app.router.add_post("/view/{camera}", view)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", args.http_port)
    await site.start()
    http_port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    print(json.dumps({"ready": True, "http": http_port, "sip": sip_port}), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await viewers.close_all()
    if edge is not None:
        await edge.close()
    if rtsp is not None:
        await rtsp.close()
    await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--mode", choices=("gb28181", "rtsp"), required=True)
    parser.add_argument("--http-port", type=int, default=0)
    parser.add_argument("--sip-port", type=int, default=0)
    parser.add_argument("--rtsp-base", default="")
    parser.add_argument("--password", default="bench-password")
    asyncio.run(serve(parser.parse_args()))


if __name__ == "__main__":
    main()
