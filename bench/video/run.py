"""Forwarding benchmark: K publishers and S subscribers of synthetic VP8 through an SFU on this machine.

    .venv/bin/python bench/video/run.py --publishers 4 --subscribers 50 --seconds 20 [--janus]
    .venv/bin/python bench/video/run.py --target --janus --janus-event-loops 1    # 400 streams, 20 × 20

The SFU under test runs in its own process so that its CPU time is measured alone:

* ``dispatchd`` — the forwarding path of dispatchd.video (aiortc peers, the receiver tap, sources,
  slots sending straight to each subscriber's SRTP session), without the database and HTTP API;
* ``janus`` — Debian's Janus with its VideoRoom plugin, driven over its HTTP API (with ``--janus``).

The load generator (this process) plays a pre-encoded 640×480 VP8 clip at 30 fps from each publisher
and counts the frames each subscriber receives without decoding them; with ``--light-receivers``
(implied by ``--target``) from the RTP headers on the socket, cheap enough for 200 streams on two
cores next to the SFU. Printed per SFU: its CPU (percent of one core, all threads), per forwarded
stream, frames received per second against the expected S × 30, and for dispatchd the latency the
server adds (marker packet in → the frame's packets handed to the subscriber's socket), median and
95th percentile. An SFU that delivers less than 95 % of the expected frames gets an ``error``
instead of a ratio: its CPU figure would describe a lighter load.

Traffic stays on this machine, never on its external interface: the SFUs run in a network namespace
the benchmark creates (``ip netns``) joined to this one by a veth pair of private addresses, and
removes at the end — Janus (libnice) never gathers candidates on a loopback interface, so it needs
such an address. Without root (``--loopback``), dispatchd alone is measured on 127.0.0.1. The run
stops by itself after ``--seconds`` and removes the namespace and Janus's temporary configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import fractions
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiohttp import ClientSession, web
from aiortc import MediaStreamTrack, RTCConfiguration, RTCPeerConnection, RTCSessionDescription

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from dispatchd.video import seam  # noqa: E402
from dispatchd.video.forward import RtpForwarder, Source  # noqa: E402
from dispatchd.video.framing import EncodedFrame, unwrap16  # noqa: E402

FPS = 30
# Below this share of the expected frames an SFU's CPU figure is not comparable.
MIN_DELIVERED = 0.95
# The target: 20 publishers, 20 subscribers each (400 forwarded streams).
TARGET_PUBLISHERS, TARGET_SUBSCRIBERS = 20, 400
# The namespace's veth pair: a private /30, the load generator on this side, the SFUs on the other.
HOST_ADDRESS, SFU_ADDRESS = "10.203.0.1", "10.203.0.2"
LOCK_FILE = Path(tempfile.gettempdir()) / "dispatchd-bench-video.lock"


class BenchError(RuntimeError):
    """The load did not come up as asked; the run has no figures for this SFU."""


class Namespace:
    """A network namespace for the SFUs, reached over a veth pair; removed again by :meth:`remove`.

    ``ip netns add benchvidN``; ``ip link add bvNh type veth peer name bvNn netns benchvidN``; a /30
    of 10.203.0.0 on the two ends; both ends and the namespace's loopback up.
    """

    PREFIX = "benchvid"

    def __init__(self) -> None:
        tag = os.getpid() % 100000
        self.name = f"{self.PREFIX}{tag}"
        self.host_link, self.ns_link = f"bv{tag}h", f"bv{tag}n"

    @staticmethod
    def ip(*args: str) -> None:
        subprocess.run(["ip", *args], check=True, capture_output=True, text=True)

    @classmethod
    def remove_stale(cls) -> None:
        """Namespaces left by a benchmark that was killed: their process is gone."""
        listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        for line in listing.splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith(cls.PREFIX) and name[len(cls.PREFIX) :].isdigit():
                tag = name[len(cls.PREFIX) :]
                if not any(Path(f"/proc/{pid}").exists() for pid in (int(tag),)):
                    subprocess.run(["ip", "link", "del", f"bv{tag}h"], capture_output=True)
                    subprocess.run(["ip", "netns", "del", name], capture_output=True)

    def create(self) -> None:
        self.remove_stale()
        self.ip("netns", "add", self.name)
        try:
            self.ip("link", "add", self.host_link, "type", "veth", "peer", "name", self.ns_link, "netns", self.name)
            self.ip("addr", "add", f"{HOST_ADDRESS}/30", "dev", self.host_link)
            self.ip("link", "set", self.host_link, "up")
            self.ip("-n", self.name, "addr", "add", f"{SFU_ADDRESS}/30", "dev", self.ns_link)
            self.ip("-n", self.name, "link", "set", self.ns_link, "up")
            self.ip("-n", self.name, "link", "set", "lo", "up")
        except subprocess.CalledProcessError:
            self.remove()
            raise

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_link], capture_output=True)  # both ends go
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace (``ip netns exec`` execs it: the pid is the SFU's)."""
        return ["ip", "netns", "exec", self.name, *argv]


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

    def __init__(self, clip: list[bytes], phase: float = 0.0) -> None:
        super().__init__()
        self.clip, self.n = clip, 0
        self.start = time.monotonic() + phase / FPS  # phase: where in a frame time this camera ticks

    async def recv(self) -> av.Packet:
        self.n += 1
        delay = self.start + self.n / FPS - time.monotonic()
        if delay < -2 / FPS:
            self.start -= delay  # this process was held up: go on from now, as a camera would, no burst
        await asyncio.sleep(max(0.0, delay))
        packet = av.Packet(self.clip[self.n % len(self.clip)])
        packet.pts = self.n * (90000 // FPS)
        packet.time_base = fractions.Fraction(1, 90000)
        return packet


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and all its threads, from /proc (proc(5))."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def udp_drops(pid: int) -> int:
    """Datagrams the kernel dropped on a process's UDP sockets (receive buffer full), from /proc."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            link = os.readlink(fd)
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    drops = 0
    for table in ("udp", "udp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                drops += int(fields[12])
    return drops


def stop(proc: subprocess.Popen[Any]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


# -- the dispatchd SFU process ----------------------------------------------------------------------
async def sfu_server(port: int, address: str) -> None:
    seam.limit_host_addresses([address])
    seam.check_version()
    sources: list[Source] = []
    pcs: list[RTCPeerConnection] = []
    senders: list[seam.DirectSender] = []
    delays: list[float] = []
    sent = [0]  # frames handed to subscribers' sockets

    def timed(frame: EncodedFrame) -> None:
        # Marker packet in (the frame's arrival) -> its packets handed to this subscriber's socket.
        delays.append(time.monotonic() - frame.arrival)
        sent[0] += 1

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
        slot = RtpForwarder("video")
        slot.on_sent = timed
        direct = seam.DirectSender(t, slot)
        senders.append(direct)
        t.direction = "sendonly"
        slot.show(sources[int(body["source"]) % len(sources)])

        @pc.on("connectionstatechange")
        def connected() -> None:
            if pc.connectionState == "connected":
                direct.start()

        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp, "type": "answer"})

    async def latencies(request: web.Request) -> web.Response:
        ordered = sorted(delays)
        delays.clear()
        counts = {
            "sfu_frames_in": sum(source.frames_in for source in sources),
            "sfu_frames_sent": sent[0],
            "sfu_socket_drops": sum(direct.dropped for direct in senders),
        }
        if not ordered:
            return web.json_response(counts)
        return web.json_response(
            {
                "added_latency_ms_median": round(1000 * statistics.median(ordered), 3),
                "added_latency_ms_p95": round(1000 * ordered[int(0.95 * (len(ordered) - 1))], 3),
                **counts,
            }
        )

    app = web.Application()
    app.router.add_post("/publish", publish)
    app.router.add_post("/subscribe", subscribe)
    app.router.add_get("/latencies", latencies)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, address, port).start()
    print("ready", flush=True)
    await asyncio.Event().wait()


# -- the load generator -----------------------------------------------------------------------------
@dataclass
class Sfu:
    """How the load generator signals to one SFU under test."""

    name: str
    pid: int
    # Negotiate a publisher's connection (its sendonly transceiver is already added).
    publish: Callable[[RTCPeerConnection], Awaitable[None]]
    # Negotiate a subscriber's connection to publisher number ``k``.
    subscribe: Callable[[RTCPeerConnection, int], Awaitable[None]]
    # Median and 95th percentile of the latency the server added since the last call, if it tells.
    latencies: Callable[[], Awaitable[dict[str, float]]] | None = None


class Counter:
    """Frames one subscriber received, counted in one of two ways (``--light-receivers``).

    By default aiortc receives them as any peer would (SRTP, RTP parsing, NACK and RTCP reports)
    and dispatchd's framing counts complete frames. Light: the packets are counted on the socket
    from the RTP header alone — which SRTP leaves in the clear (RFC 3711 section 3.1) — a frame per
    marker bit (RFC 3550 section 5.1), a packet lost per sequence number never seen; nothing is
    decrypted, and the subscriber sends no receiver reports.
    """

    def __init__(self) -> None:
        self.frames = 0
        self.packets = 0
        self._first: int | None = None
        self._highest = 0

    def count(self, frame: EncodedFrame) -> None:
        self.frames += 1

    @property
    def lost(self) -> int:
        return 0 if self._first is None else self._highest - self._first + 1 - self.packets

    def count_on_socket(self, pc: RTCPeerConnection) -> None:
        """Count the connection's media packets before aioice and aiortc see them (light mode)."""
        answer = pc.remoteDescription if pc.remoteDescription.type == "answer" else pc.localDescription
        payload_type = int(re.search(r"a=rtpmap:(\d+) VP8/90000", answer.sdp, re.IGNORECASE)[1])  # type: ignore[index]
        connection = pc.getTransceivers()[0].receiver.transport.transport._connection
        for protocol in connection._protocols:
            passed_on = protocol.datagram_received  # STUN, DTLS, RTCP and anything else

            def datagram_received(data: bytes, addr: Any, passed_on: Any = passed_on) -> None:
                if 127 < data[0] < 192 and data[1] & 0x7F == payload_type:
                    seq = int.from_bytes(data[2:4])
                    if self._first is None:
                        self._first = self._highest = seq
                    else:
                        seq = unwrap16(seq, self._highest)
                        self._highest = max(self._highest, seq)
                    self.packets += 1
                    self.frames += data[1] >> 7
                else:
                    passed_on(data, addr)

            protocol.datagram_received = datagram_received


def counting_peer(counter: Counter) -> RTCPeerConnection:
    """A receive-only peer that counts complete VP8 frames (dispatchd's framing, no decoder)."""
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    t = pc.addTransceiver("video", direction="recvonly")
    seam.tap_receiver(t.receiver, "video", "VP8", counter.count)
    return pc


async def connected(pcs: list[RTCPeerConnection], what: str, within: float) -> None:
    """Wait until every connection is up (ICE and DTLS), else say how many are not."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if all(pc.connectionState == "connected" for pc in pcs):
            return
        await asyncio.sleep(0.1)
    states: dict[str, int] = {}
    for pc in pcs:
        key = f"{pc.connectionState}/ICE {pc.iceConnectionState}"
        states[key] = states.get(key, 0) + 1
    raise BenchError(f"{what} connections not up after {within:.0f} s: {states}")


async def drive(args: argparse.Namespace, clip: list[bytes], sfu: Sfu) -> dict[str, Any]:
    pcs: list[RTCPeerConnection] = []
    counters = [Counter() for _ in range(args.subscribers)]
    # Independent cameras: their frame times are spread evenly rather than all at once.
    clips = [ClipTrack(clip, k / args.publishers) for k in range(args.publishers)]
    try:
        for track in clips:
            pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
            pcs.append(pc)
            pc.addTransceiver(track, direction="sendonly")
            await sfu.publish(pc)
        await connected(pcs, "publisher", 15)
        for k, counter in enumerate(counters):
            pc = counting_peer(counter)
            pcs.append(pc)
            await sfu.subscribe(pc, k % args.publishers)
            if args.light_receivers:
                counter.count_on_socket(pc)
        await connected(pcs[args.publishers :], "subscriber", 15 + 0.1 * len(counters))
        await asyncio.sleep(args.warmup)
        counts0: dict[str, float] = {}
        if sfu.latencies is not None:
            counts0 = await sfu.latencies()  # drop the warm-up's
        before, sent0 = [c.frames for c in counters], sum(t.n for t in clips)
        lost0 = sum(c.lost for c in counters)
        drops0 = udp_drops(sfu.pid), udp_drops(os.getpid())
        cpu0, own0, t0 = process_cpu(sfu.pid), process_cpu(os.getpid()), time.monotonic()
        await asyncio.sleep(args.seconds)
        cpu1, own1, t1 = process_cpu(sfu.pid), process_cpu(os.getpid()), time.monotonic()
        drops1 = udp_drops(sfu.pid), udp_drops(os.getpid())
        after, sent1 = [c.frames for c in counters], sum(t.n for t in clips)
        lost = sum(c.lost for c in counters) - lost0
        latency = await sfu.latencies() if sfu.latencies is not None else {}
        up = sum(pc.connectionState == "connected" for pc in pcs[: args.publishers])
    finally:
        for pc in pcs:
            with contextlib.suppress(Exception):
                await pc.close()
    wall = t1 - t0
    streams = args.subscribers
    cpu_share = (cpu1 - cpu0) / wall
    received = (sum(after) - sum(before)) / wall
    expected = streams * FPS
    result: dict[str, Any] = {
        "publishers": args.publishers,
        "subscribers": streams,
        "cpu_percent_of_core": round(100 * cpu_share, 1),
        "cpu_percent_per_stream": round(100 * cpu_share / streams, 3),
        "frames_received_per_second": round(received, 1),
        "expected_frames_per_second": expected,
        "frames_published_per_second": round((sent1 - sent0) / wall, 1),
        "subscribers_below_90_percent": sum(
            (a - b) / wall < 0.9 * FPS for a, b in zip(after, before, strict=True)
        ),
        "load_generator_cpu_percent_of_core": round(100 * (own1 - own0) / wall, 1),
        "udp_drops_sfu": drops1[0] - drops0[0],
        "udp_drops_load_generator": drops1[1] - drops0[1],
        "publishers_connected_at_end": up,
    }
    if args.light_receivers:
        result["rtp_packets_lost"] = lost
    for key in ("sfu_frames_in", "sfu_frames_sent"):
        if key in latency:
            # What the SFU itself received and handed out, per second: a shortfall in what the
            # receivers counted that the SFU does not show is the load generator's.
            result[key + "_per_second"] = round((latency.pop(key) - counts0.get(key, 0)) / wall, 1)
    if "sfu_socket_drops" in latency:
        latency["sfu_socket_drops"] -= counts0.get("sfu_socket_drops", 0)
    result.update(latency)
    if received < MIN_DELIVERED * expected:
        result["error"] = (
            f"delivered {received:.0f} of {expected} frames/s"
            f" ({result['subscribers_below_90_percent']} subscribers below 90 %):"
            " its CPU figure is for a lighter load and no ratio is computed"
        )
    return result


async def load_dispatchd(args: argparse.Namespace, clip: list[bytes]) -> dict[str, Any]:
    port = 18_000 + os.getpid() % 1000
    command = [sys.executable, __file__, "--serve", str(port), "--address", args.sfu_address]
    if args.netns is not None:
        command = args.netns.command(command)
    proc = await asyncio.to_thread(subprocess.Popen, command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        if (await asyncio.to_thread(proc.stdout.readline)).strip() != "ready":
            raise BenchError(f"the dispatchd SFU process did not start (exit {proc.poll()})")
        base = f"http://{args.sfu_address}:{port}"
        async with ClientSession() as http:

            async def exchange(pc: RTCPeerConnection, path: str, extra: dict[str, Any]) -> None:
                await pc.setLocalDescription(await pc.createOffer())
                offer = {"sdp": pc.localDescription.sdp, "type": "offer", **extra}
                async with http.post(base + path, json=offer) as resp:
                    await pc.setRemoteDescription(RTCSessionDescription(**await resp.json()))

            async def latencies() -> dict[str, float]:
                async with http.get(base + "/latencies") as resp:
                    return dict(await resp.json())

            sfu = Sfu(
                "dispatchd",
                proc.pid,
                publish=lambda pc: exchange(pc, "/publish", {}),
                subscribe=lambda pc, k: exchange(pc, "/subscribe", {"source": k}),
                latencies=latencies,
            )
            return await drive(args, clip, sfu)
    finally:
        stop(proc)


# -- Janus VideoRoom ---------------------------------------------------------------------------------
# A throw-away configuration: HTTP API and ICE on the namespace's address, VideoRoom only.
# session_timeout = 0: the load generator sends no keep-alives while it measures.
JANUS_CONF = """general: {{ configs_folder = "{d}" plugins_folder = "{lib}/plugins" transports_folder = "{lib}/transports"
 events_folder = "{lib}/events" loggers_folder = "{lib}/loggers"
 admin_secret = "bench" session_timeout = 0 {event_loops}}}
media: {{ rtp_port_range = "40000-40999" }}
nat: {{ nice_debug = false ignore_mdns = true ice_enforce_list = "{address}" }}
plugins: {{ disable = "libjanus_audiobridge.so,libjanus_echotest.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_nosip.so,libjanus_streaming.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_voicemail.so,libjanus_lua.so,libjanus_duktape.so" }}
transports: {{ disable = "libjanus_websockets.so,libjanus_pfunix.so,libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_rabbitmq.so" }}
events: {{ broadcast = false }}
loggers: {{ disable = "libjanus_jsonlog.so" }}
"""
JANUS_LIB = "/usr/lib/x86_64-linux-gnu/janus"
JANUS_HTTP = 'general: {{ json = "plain" base_path = "/janus" http = true port = {port} ip = "{address}" }}\nadmin: {{ admin_http = false }}\n'
JANUS_ROOM = 'general: { }\nroom-1234: { description = "bench" publishers = 100 bitrate = 0 fir_freq = 10 videocodec = "vp8" audiocodec = "opus" }\n'
ROOM = 1234


class Janus:
    """Janus's HTTP API: one session and VideoRoom handle per peer, as a browser would have."""

    def __init__(self, http: ClientSession, base: str) -> None:
        self.http, self.base = http, base
        self.feeds: list[int] = []

    async def call(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        body = {"transaction": os.urandom(6).hex(), **body}
        async with self.http.post(self.base + path, json=body) as resp:
            data: dict[str, Any] = await resp.json(content_type=None)
        if data.get("janus") == "ack":  # asynchronous: the answer comes through long polling
            return await self.event(path.split("/")[2], body["transaction"])
        if data.get("janus") == "error":
            raise BenchError(f"Janus: {data['error']}")
        return data

    async def event(self, session_id: str, transaction: str) -> dict[str, Any]:
        while True:
            async with self.http.get(f"{self.base}/janus/{session_id}?maxev=1") as resp:
                data = await resp.json(content_type=None)
            for ev in data if isinstance(data, list) else [data]:
                if ev.get("transaction") == transaction:
                    return dict(ev)

    async def message(self, body: dict[str, Any], jsep: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send ``body`` to the VideoRoom on a new session and handle; the plugin's reply."""
        session = (await self.call("/janus", {"janus": "create"}))["data"]["id"]
        attach = {"janus": "attach", "plugin": "janus.plugin.videoroom"}
        handle = (await self.call(f"/janus/{session}", attach))["data"]["id"]
        request = {"janus": "message", "body": body, **({"jsep": jsep} if jsep else {})}
        ev = await self.call(f"/janus/{session}/{handle}", request)
        ev["path"] = f"/janus/{session}/{handle}"
        error = ev.get("plugindata", {}).get("data", {}).get("error")
        if error:
            raise BenchError(f"Janus VideoRoom refused {body['request']}: {error}")
        return ev

    async def publish(self, pc: RTCPeerConnection) -> None:
        await pc.setLocalDescription(await pc.createOffer())
        ev = await self.message(
            {"request": "joinandconfigure", "room": ROOM, "ptype": "publisher"},
            {"type": "offer", "sdp": pc.localDescription.sdp},
        )
        self.feeds.append(ev["plugindata"]["data"]["id"])
        await pc.setRemoteDescription(RTCSessionDescription(**ev["jsep"]))

    async def subscribe(self, pc: RTCPeerConnection, k: int) -> None:
        join = {"request": "join", "room": ROOM, "ptype": "subscriber", "streams": [{"feed": self.feeds[k]}]}
        for _ in range(50):  # a feed exists once Janus has its publisher's media (webrtcup)
            try:
                ev = await self.message(join)
                break
            except BenchError as exc:
                if "No such feed" not in str(exc):
                    raise
                await asyncio.sleep(0.1)
        else:
            raise BenchError(f"Janus: feed {self.feeds[k]} never became available")
        # Janus offers; aiortc answers with the recvonly transceiver counting_peer added.
        await pc.setRemoteDescription(RTCSessionDescription(**ev["jsep"]))
        await pc.setLocalDescription(await pc.createAnswer())
        answer = {"type": "answer", "sdp": pc.localDescription.sdp}
        await self.call(ev["path"], {"janus": "message", "body": {"request": "start"}, "jsep": answer})


async def load_janus(args: argparse.Namespace, clip: list[bytes]) -> dict[str, Any]:
    binary = shutil.which("janus")
    if binary is None:
        raise BenchError("janus not installed (apt-get install janus)")
    conf = Path(tempfile.mkdtemp(prefix="bench-janus-"))
    port = 18_800 + os.getpid() % 100
    (conf / "janus.jcfg").write_text(
        JANUS_CONF.format(
            d=conf,
            lib=JANUS_LIB,
            address=args.sfu_address,
            event_loops=f"event_loops = {args.janus_event_loops} " if args.janus_event_loops else "",
        )
    )
    (conf / "janus.transport.http.jcfg").write_text(JANUS_HTTP.format(port=port, address=args.sfu_address))
    (conf / "janus.plugin.videoroom.jcfg").write_text(JANUS_ROOM)
    command = [binary, "-F", str(conf), "-C", str(conf / "janus.jcfg"), "-N", "-o"]
    command += ["-d", "4", "-D", "-L", args.janus_log] if args.janus_log else ["-d", "2"]
    if args.netns is not None:
        command = args.netns.command(command)
    try:
        proc = await asyncio.to_thread(
            subprocess.Popen, command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )
        try:
            base = f"http://{args.sfu_address}:{port}"
            async with ClientSession() as http:
                for _ in range(100):
                    with contextlib.suppress(OSError):
                        async with http.get(base + "/janus/info") as resp:
                            if resp.status == 200:
                                break
                    await asyncio.sleep(0.1)
                else:
                    raise BenchError(f"Janus did not answer on port {port} (exit {proc.poll()})")
                janus = Janus(http, base)
                return await drive(args, clip, Sfu("janus", proc.pid, janus.publish, janus.subscribe))
        finally:
            stop(proc)
    finally:
        shutil.rmtree(conf, ignore_errors=True)


async def measure(args: argparse.Namespace, clip: list[bytes], load: Any) -> dict[str, Any]:
    try:
        return dict(await load(args, clip))
    except BenchError as exc:
        return {"error": str(exc)}


async def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--publishers", type=int, default=4)
    parser.add_argument(
        "--subscribers", type=int, default=16, help="forwarded streams, spread over the publishers"
    )
    parser.add_argument(
        "--target",
        action="store_true",
        help=f"the 400-stream target: {TARGET_PUBLISHERS} publishers, {TARGET_SUBSCRIBERS} subscribers",
    )
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--warmup", type=float, default=3)
    parser.add_argument(
        "--light-receivers",
        action="store_true",
        help="count frames from RTP headers on the socket (no SRTP, no aiortc receive path): far cheaper",
    )
    parser.add_argument(
        "--loopback",
        action="store_true",
        help="no namespace (needs no root): dispatchd alone, on 127.0.0.1 (Janus does not gather on loopback)",
    )
    parser.add_argument("--janus", action="store_true", help="also measure Janus VideoRoom on the same load")
    parser.add_argument(
        "--janus-event-loops",
        type=int,
        default=0,
        metavar="N",
        help="Janus's event_loops: N media threads shared by all handles (default: a thread per handle)",
    )
    parser.add_argument("--janus-log", metavar="FILE", help="Janus's output at debug level 4, for debugging")
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--address", help=argparse.SUPPRESS)  # the SFU process's own address
    args = parser.parse_args()
    if args.serve:
        await sfu_server(args.serve, args.address)
        return 0
    # SIGTERM cancels the run like Ctrl-C, so the SFU processes and Janus's files are cleaned up.
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    if args.target:
        args.publishers, args.subscribers = TARGET_PUBLISHERS, TARGET_SUBSCRIBERS
        args.light_receivers = True
    # One run at a time: two would share the namespace's addresses and each other's CPU.
    lock = LOCK_FILE.open("w")  # held for the whole run, released when the process ends
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print("bench/video: waiting for another run to finish", file=sys.stderr)
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
    if args.loopback and args.janus:
        parser.error("Janus never gathers ICE candidates on a loopback interface: run without --loopback (as root)")
    if not args.loopback and os.geteuid() != 0:
        parser.error("the SFUs run in a network namespace, which needs root; --loopback measures dispatchd alone")
    args.netns = None
    if args.loopback:
        args.sfu_address = host = "127.0.0.1"
    else:
        args.netns = Namespace()
        args.netns.create()
        args.sfu_address, host = SFU_ADDRESS, HOST_ADDRESS
    try:
        seam.limit_host_addresses([host])
        clip = await asyncio.to_thread(encoded_clip)
        results: dict[str, Any] = {"load_average_before": os.getloadavg()[0]}
        results["dispatchd"] = await measure(args, clip, load_dispatchd)
        if args.janus:
            results["janus"] = await measure(args, clip, load_janus)
            d, j = results["dispatchd"], results["janus"]
            if "error" not in d and "error" not in j:
                results["cpu_per_stream_ratio_dispatchd_to_janus"] = round(
                    d["cpu_percent_per_stream"] / j["cpu_percent_per_stream"], 2
                )
        results["load_average_after"] = os.getloadavg()[0]
    finally:
        if args.netns is not None:
            args.netns.remove()
    print(json.dumps(results, indent=2))
    errors = [f"{name}: {r['error']}" for name, r in results.items() if isinstance(r, dict) and "error" in r]
    for line in errors:
        print(line, file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except (KeyboardInterrupt, asyncio.CancelledError):
        sys.exit(130)  # interrupted: the SFU processes are stopped and Janus's files removed
