"""Forwarding benchmark: K publishers and S subscribers of synthetic VP8 through an SFU on this machine.

    .venv/bin/python bench/video/run.py --publishers 4 --subscribers 50 --seconds 20 [--janus]

The SFU under test runs in its own process so that its CPU time is measured alone:

* ``dispatchd`` — the forwarding path of dispatchd.video (aiortc peers, the receiver tap, sources
  and forwarding tracks), without the database and HTTP API around it;
* ``janus`` — Debian's Janus with its VideoRoom plugin, driven over its HTTP API (with ``--janus``).

The load generator (this process) plays a pre-encoded 640×480 VP8 clip at 30 fps from each publisher
and counts the frames each subscriber receives without decoding them. Printed: CPU of the SFU
process per forwarded stream (percent of one core), frames forwarded, and for dispatchd the latency
the server adds (marker packet in → packet handed to the sender), median and 95th percentile.
Every address is loopback; the run stops by itself after ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aioice.ice
import av
import numpy as np
from aiohttp import ClientSession, web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dispatchd.video import seam  # noqa: E402
from dispatchd.video.forward import ForwardedTrack, Source  # noqa: E402
from dispatchd.video.framing import EncodedFrame  # noqa: E402

FPS = 30


def loopback_only() -> None:
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]  # keep ICE on this machine


def encoded_clip(frames: int = 60, width: int = 640, height: int = 480) -> list[bytes]:
    """A moving 640×480 pattern encoded once to VP8 at about 500 kbit/s (keyframe every second)."""
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = width, height, "yuv420p"
    enc.time_base = fractions.Fraction(1, FPS)
    enc.bit_rate = 500_000
    enc.gop_size = FPS
    enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    out: list[bytes] = []
    yy, xx = np.mgrid[0:height, 0:width]
    for i in range(frames):
        img = np.stack([(xx + i * 8) % 256, (yy + i * 4) % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in enc.encode(frame)]
    return out


class ClipTrack(MediaStreamTrack):
    kind = "video"

    def __init__(self, clip: list[bytes]) -> None:
        super().__init__()
        self.clip, self.n = clip, 0
        self.start = time.monotonic()

    async def recv(self) -> av.Packet:
        self.n += 1
        await asyncio.sleep(max(0.0, self.start + self.n / FPS - time.monotonic()))
        packet = av.Packet(self.clip[self.n % len(self.clip)])
        packet.pts = self.n * (90000 // FPS)
        packet.time_base = fractions.Fraction(1, 90000)
        return packet


# -- the dispatchd SFU process ----------------------------------------------------------------------
class TimedTrack(ForwardedTrack):
    """A forwarding track that notes how long each frame waited inside the server."""

    delays: list[float] = []  # noqa: RUF012  # shared by every track of the process

    def __init__(self) -> None:
        super().__init__("video", queue_frames=60)
        self._arrived: dict[int, float] = {}

    def offer(self, source: Source, frame: EncodedFrame) -> bool:
        arrived = time.perf_counter()
        queued = super().offer(source, frame)
        if queued and self._last_out is not None:
            self._arrived[self._last_out] = arrived
        return queued

    async def recv(self) -> av.Packet:
        packet = await super().recv()
        arrived = self._arrived.pop(packet.pts or 0, None)
        if arrived is not None:
            TimedTrack.delays.append(time.perf_counter() - arrived)
        return packet


async def sfu_server(port: int) -> None:
    loopback_only()
    seam.check_version()
    sources: list[Source] = []
    pcs: list[RTCPeerConnection] = []

    async def publish(request: web.Request) -> web.Response:
        offer = await request.json()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pcs.append(pc)
        await pc.setRemoteDescription(RTCSessionDescription(**offer))
        t = pc.getTransceivers()[0]
        seam.restrict_codecs(t, "VP8")
        source = Source(f"pub{len(sources)}", "video", "VP8")
        tap = seam.tap_receiver(t.receiver, "video", "VP8", source.deliver)
        source._request_keyframe = tap.request_keyframe
        sources.append(source)
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp, "type": "answer"})

    async def subscribe(request: web.Request) -> web.Response:
        body = await request.json()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pcs.append(pc)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type="offer"))
        t = pc.getTransceivers()[0]
        seam.restrict_codecs(t, "VP8")
        track = TimedTrack()
        t.sender.replaceTrack(track)
        t.direction = "sendonly"
        seam.on_keyframe_request(t.sender, track.request_keyframe)
        track.show(sources[int(body["source"]) % len(sources)])
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp, "type": "answer"})

    async def stats(request: web.Request) -> web.Response:
        usage = os.times()
        delays = TimedTrack.delays[-20000:]
        TimedTrack.delays.clear()
        return web.json_response(
            {
                "cpu": usage.user + usage.system,
                "frames_out": sum(s.frames_out for s in sources),
                "delays": delays,
            }
        )

    app = web.Application()
    app.router.add_post("/publish", publish)
    app.router.add_post("/subscribe", subscribe)
    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


# -- the load generator -----------------------------------------------------------------------------
class Counter:
    def __init__(self) -> None:
        self.frames = 0


async def counting_peer(counter: Counter) -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    t = pc.addTransceiver("video", direction="recvonly")

    def count(frame: EncodedFrame) -> None:
        counter.frames += 1

    seam.tap_receiver(t.receiver, "video", "VP8", count)
    return pc


async def load_dispatchd(args: argparse.Namespace, clip: list[bytes]) -> dict[str, Any]:
    port = 18_000 + os.getpid() % 1000
    proc = await asyncio.to_thread(
        subprocess.Popen, [sys.executable, __file__, "--serve", str(port)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        await asyncio.to_thread(proc.stdout.readline)
        base = f"http://127.0.0.1:{port}"
        return await drive(
            args,
            clip,
            pid=proc.pid,
            publish=lambda s, offer: s.post(base + "/publish", json=offer),
            subscribe=lambda s, offer, k: s.post(base + "/subscribe", json={"sdp": offer, "source": k}),
            stats=lambda s: s.get(base + "/stats"),
        )
    finally:
        proc.terminate()
        proc.wait(10)


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process, from /proc (proc(5))."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


async def drive(
    args: argparse.Namespace, clip: list[bytes], *, pid: int, publish: Any, subscribe: Any, stats: Any
) -> dict[str, Any]:
    pcs: list[RTCPeerConnection] = []
    counters = [Counter() for _ in range(args.subscribers)]
    async with ClientSession() as session:
        for _ in range(args.publishers):
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pc.addTransceiver(ClipTrack(clip), direction="sendonly")
            await pc.setLocalDescription(await pc.createOffer())
            async with publish(session, {"sdp": pc.localDescription.sdp, "type": "offer"}) as resp:
                await pc.setRemoteDescription(RTCSessionDescription(**await resp.json()))
            pcs.append(pc)
        await asyncio.sleep(1)
        for k, counter in enumerate(counters):
            pc = await counting_peer(counter)
            await pc.setLocalDescription(await pc.createOffer())
            async with subscribe(session, pc.localDescription.sdp, k % args.publishers) as resp:
                await pc.setRemoteDescription(RTCSessionDescription(**await resp.json()))
            pcs.append(pc)
        await asyncio.sleep(args.warmup)
        if stats is not None:
            async with stats(session):
                pass
        cpu0, frames0, t0 = process_cpu(pid), sum(c.frames for c in counters), time.monotonic()
        await asyncio.sleep(args.seconds)
        cpu1, frames1, t1 = process_cpu(pid), sum(c.frames for c in counters), time.monotonic()
        delays: list[float] = []
        if stats is not None:
            async with stats(session) as resp:
                delays = (await resp.json())["delays"]
    for pc in pcs:
        with contextlib.suppress(Exception):
            await pc.close()
    wall = t1 - t0
    streams = args.subscribers
    cpu_share = (cpu1 - cpu0) / wall
    result: dict[str, Any] = {
        "publishers": args.publishers,
        "subscribers": streams,
        "cpu_percent_of_core": round(100 * cpu_share, 1),
        "cpu_percent_per_stream": round(100 * cpu_share / streams, 3),
        "frames_received_per_second": round((frames1 - frames0) / wall, 1),
        "expected_frames_per_second": streams * FPS,
    }
    if delays:
        result["added_latency_ms_median"] = round(1000 * statistics.median(delays), 3)
        result["added_latency_ms_p95"] = round(1000 * sorted(delays)[int(0.95 * (len(delays) - 1))], 3)
    return result


# -- Janus VideoRoom ---------------------------------------------------------------------------------
JANUS_CONF = """general: {{ configs_folder = "{d}" plugins_folder = "/usr/lib/x86_64-linux-gnu/janus/plugins"
 transports_folder = "/usr/lib/x86_64-linux-gnu/janus/transports" events_folder = "/usr/lib/x86_64-linux-gnu/janus/events"
 loggers_folder = "/usr/lib/x86_64-linux-gnu/janus/loggers" debug_level = 2 admin_secret = "bench" }}
media: {{ rtp_port_range = "40000-40999" }}
nat: {{ nice_debug = false ignore_mdns = true }}
plugins: {{ disable = "libjanus_audiobridge.so,libjanus_echotest.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_nosip.so,libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_voicemail.so,libjanus_lua.so,libjanus_duktape.so" }}
transports: {{ disable = "libjanus_websockets.so,libjanus_pfunix.so,libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_rabbitmq.so" }}
events: {{ broadcast = false }}
loggers: {{ disable = "libjanus_jsonlog.so" }}
"""
JANUS_HTTP = 'general: {{ json = "indented" base_path = "/janus" http = true port = {port} ip = "127.0.0.1" }}\nadmin: {{ admin_http = false }}\n'
JANUS_ROOM = 'general: { }\nroom-1234: { description = "bench" publishers = 64 bitrate = 0 fir_freq = 10 videocodec = "vp8" audiocodec = "opus" }\n'


class Janus:
    def __init__(self, session: ClientSession, base: str) -> None:
        self.http, self.base = session, base

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {"transaction": os.urandom(6).hex(), **body}
        async with self.http.post(self.base + path, json=body) as resp:
            data: dict[str, Any] = await resp.json(content_type=None)
        if data.get("janus") == "ack":  # asynchronous: the answer comes through long polling
            return await self.event(path.split("/")[2], body["transaction"])
        return data

    async def event(self, session_id: str, transaction: str) -> dict[str, Any]:
        while True:
            async with self.http.get(f"{self.base}/janus/{session_id}?maxev=1") as resp:
                data = await resp.json(content_type=None)
            for ev in data if isinstance(data, list) else [data]:
                if ev.get("transaction") == transaction:
                    return dict(ev)

    async def handle(self) -> tuple[str, str]:
        session = (await self.call("/janus", {"janus": "create"}))["data"]["id"]
        handle = (
            await self.call(f"/janus/{session}", {"janus": "attach", "plugin": "janus.plugin.videoroom"})
        )["data"]["id"]
        return str(session), str(handle)


async def load_janus(args: argparse.Namespace, clip: list[bytes]) -> dict[str, Any]:
    binary = shutil.which("janus")
    if binary is None:
        return {"error": "janus not installed (apt-get install janus)"}
    conf = Path(tempfile.mkdtemp(prefix="bench-janus-"))
    port = 18_800 + os.getpid() % 100
    (conf / "janus.jcfg").write_text(JANUS_CONF.format(d=conf))
    (conf / "janus.transport.http.jcfg").write_text(JANUS_HTTP.format(port=port))
    (conf / "janus.plugin.videoroom.jcfg").write_text(JANUS_ROOM)
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [binary, "-F", str(conf), "-C", str(conf / "janus.jcfg")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    feeds: list[int] = []
    try:
        async with ClientSession() as http:
            for _ in range(100):
                with contextlib.suppress(Exception):
                    async with http.get(base + "/janus/info") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.1)
            return await drive_janus(args, clip, Janus(http, base), proc.pid, feeds)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(conf, ignore_errors=True)


async def drive_janus(
    args: argparse.Namespace, clip: list[bytes], janus: Janus, pid: int, feeds: list[int]
) -> dict[str, Any]:
    pcs: list[RTCPeerConnection] = []
    counters = [Counter() for _ in range(args.subscribers)]
    for _ in range(args.publishers):
        session, handle = await janus.handle()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver(ClipTrack(clip), direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        ev = await janus.call(
            f"/janus/{session}/{handle}",
            {
                "janus": "message",
                "body": {
                    "request": "joinandconfigure",
                    "room": 1234,
                    "ptype": "publisher",
                    "audio": False,
                    "video": True,
                },
                "jsep": {"type": "offer", "sdp": pc.localDescription.sdp},
            },
        )
        if "jsep" not in ev:
            raise RuntimeError(f"Janus refused the publisher: {json.dumps(ev)[:400]}")
        feeds.append(ev["plugindata"]["data"]["id"])
        await pc.setRemoteDescription(RTCSessionDescription(**ev["jsep"]))
        pcs.append(pc)
    await asyncio.sleep(1)
    for k, counter in enumerate(counters):
        session, handle = await janus.handle()
        body = {"request": "join", "room": 1234, "ptype": "subscriber", "feed": feeds[k % len(feeds)]}
        for _ in range(100):  # a feed exists once its publisher's connection is up
            ev = await janus.call(f"/janus/{session}/{handle}", {"janus": "message", "body": body})
            if "jsep" in ev:
                break
            await asyncio.sleep(0.1)
        if "jsep" not in ev:
            raise RuntimeError(f"Janus refused the subscription: {json.dumps(ev)[:400]}")
        pc = await counting_peer(counter)
        await pc.setRemoteDescription(RTCSessionDescription(**ev["jsep"]))
        # aiortc answers the subscriber's offer; the recvonly transceiver made above is reused.
        await pc.setLocalDescription(await pc.createAnswer())
        await janus.call(
            f"/janus/{session}/{handle}",
            {
                "janus": "message",
                "body": {"request": "start", "room": 1234},
                "jsep": {"type": "answer", "sdp": pc.localDescription.sdp},
            },
        )
        pcs.append(pc)
    await asyncio.sleep(args.warmup)
    cpu0, frames0, t0 = process_cpu(pid), sum(c.frames for c in counters), time.monotonic()
    await asyncio.sleep(args.seconds)
    cpu1, frames1, t1 = process_cpu(pid), sum(c.frames for c in counters), time.monotonic()
    for pc in pcs:
        with contextlib.suppress(Exception):
            await pc.close()
    wall = t1 - t0
    cpu_share = (cpu1 - cpu0) / wall
    return {
        "publishers": args.publishers,
        "subscribers": args.subscribers,
        "cpu_percent_of_core": round(100 * cpu_share, 1),
        "cpu_percent_per_stream": round(100 * cpu_share / args.subscribers, 3),
        "frames_received_per_second": round((frames1 - frames0) / wall, 1),
        "expected_frames_per_second": args.subscribers * FPS,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument("--subscribers", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument("--janus", action="store_true", help="also measure Janus VideoRoom on the same load")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        await sfu_server(args.serve)
        return
    loopback_only()
    clip = await asyncio.to_thread(encoded_clip)
    results = {"dispatchd": await load_dispatchd(args, clip)}
    if args.janus:
        results["janus"] = await load_janus(args, clip)
        d, j = results["dispatchd"], results["janus"]
        if j.get("cpu_percent_per_stream"):
            results["cpu_per_stream_ratio_dispatchd_to_janus"] = round(
                d["cpu_percent_per_stream"] / j["cpu_percent_per_stream"], 2
            )
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
