"""Camera benchmark: ``python -m bench.cameras [--cameras N] [--viewers M] [--seconds S]``.

N simulated cameras send the same H.264 clip (640×480, 25 fps, a key frame a second, made by
ffmpeg at the start of the run) to M viewers through a server process of its own
(:mod:`bench.cameras.sfu`), twice in one run:

* **gb28181** — each camera is a GB/T 28181 device: it registers over SIP, is sent an INVITE, and
  streams MPEG-PS over RTP/UDP; dispatchd demultiplexes the PS and forwards the H.264 over WebRTC;
* **rtsp** — the baseline: each camera is an RTSP source (RTP/H.264 interleaved over TCP) pulled by
  dispatchd's RTSP puller (PyAV in a thread), forwarded the same way to the same kind of viewers.

Viewer k watches camera k mod N. Viewers are aiortc peers that count frames without decoding them
(dispatchd's receiver tap). Every access unit carries an SEI (H.264 user data, type 5) with its
camera and sequence number, written by the load generator when it sends it, so a viewer knows
which frame it got and the delay is measured end to end on one clock: last packet sent by the
camera → frame complete at the viewer (the same load-generator overhead on both paths).

Printed, as JSON per path: the server's CPU in percent of one core over ``--seconds`` after
``--warmup`` (all threads, from /proc), per camera stream and per viewer stream; frames received
per second against the expected M × fps; the delay median and 95th percentile; and the ratios
gb28181 : rtsp of CPU per camera stream and of the median delay. A path that delivers less than
95 % of the expected frames gets an ``error`` instead of ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import hashlib
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import av
from aiohttp import ClientSession
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.codecs.h264 import H264Encoder

from dispatchd.channels.gb28181 import ps
from dispatchd.channels.gb28181.rtp import packetize
from dispatchd.channels.gb28181.sdp import parse_sdp
from dispatchd.channels.hotline.sip import Headers, Request, Response, parse_message, response_to
from dispatchd.video import seam
from dispatchd.video.framing import EncodedFrame

ROOT = Path(__file__).resolve().parents[2]
PLATFORM_ID = "33038100002000000001"
DOMAIN = "3303810000"
PASSWORD = "bench-password"
MIN_DELIVERED = 0.95
#: The SEI user-data UUID of the bench's stamps (no zero byte: no emulation prevention needed).
STAMP_UUID = bytes.fromhex("d15a7c4ed15a7c4ed15a7c4ed15a7c4e")


# ---- the clip and its stamps --------------------------------------------------------------------------


def encode_clip(width: int, height: int, fps: int, seconds: float = 2.0) -> list[tuple[bytes, bool]]:
    """ffmpeg's testsrc2 in H.264 baseline (SPS/PPS before every key frame), as access units."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "clip.h264"
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
             "-i", f"testsrc2=size={width}x{height}:rate={fps}:duration={seconds}", "-pix_fmt", "yuv420p",
             "-c:v", "libx264", "-profile:v", "baseline", "-b:v", "800k", "-g", str(fps), "-bf", "0",
             "-x264-params", "repeat-headers=1", "-f", "h264", str(path)],
            check=True,
        )  # fmt: skip
        with av.open(str(path)) as container:
            return [
                (bytes(p), bool(p.is_keyframe)) for p in container.demux(container.streams.video[0]) if p.size
            ]


def stamp(frame: bytes, camera: int, seq: int) -> bytes:
    """The frame with an SEI (user data unregistered, H.264 D.1.6) naming camera and sequence,
    before its first slice. The numbers are written as hex text: no zero bytes in the payload."""
    payload = STAMP_UUID + f"{camera:04x}{seq:012x}".encode()
    sei = b"\x00\x00\x00\x01\x06\x05" + bytes([len(payload)]) + payload + b"\x80"
    at = 0
    pos = frame.find(b"\x00\x00\x01")
    while pos != -1:
        if frame[pos + 3] & 0x1F in (1, 5):
            at = pos - 1 if pos > 0 and frame[pos - 1] == 0 else pos
            break
        pos = frame.find(b"\x00\x00\x01", pos + 3)
    return frame[:at] + sei + frame[at:]


def read_stamp(frame: bytes) -> tuple[int, int] | None:
    pos = frame.find(STAMP_UUID)
    if pos < 0:
        return None
    text = frame[pos + 16 : pos + 32].decode("ascii", "replace")
    try:
        return int(text[:4], 16), int(text[4:], 16)
    except ValueError:
        return None


@dataclass
class Stats:
    sent: dict[tuple[int, int], float] = field(default_factory=dict)
    delays: list[float] = field(default_factory=list)
    frames: int = 0
    measuring: bool = False

    def received(self, frame: EncodedFrame) -> None:
        if not self.measuring:
            return
        self.frames += 1
        found = read_stamp(frame.data)
        if found is not None and found in self.sent:
            self.delays.append(time.perf_counter() - self.sent[found])


# ---- GB/T 28181 cameras ---------------------------------------------------------------------------------


class GbCamera(asyncio.DatagramProtocol):
    """One IPC: registers with digest, answers the INVITE, streams PS over RTP/UDP after the ACK."""

    def __init__(self, index: int, platform: tuple[str, int]) -> None:
        self.index = index
        self.device_id = f"3303810000132{index + 1:07d}"
        self.channel_id = f"3303810000131{index + 1:07d}"
        self.platform = platform
        self.transport: asyncio.DatagramTransport | None = None
        self.responses: asyncio.Queue[Response] = asyncio.Queue()
        self.media: tuple[str, int] | None = None
        self.ssrc = 0
        self.seq = random.randrange(65536)
        self.call = ""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (CPython's UDP transport is not an asyncio.DatagramTransport subclass.)
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        message = parse_message(data)
        if isinstance(message, Response):
            self.responses.put_nowait(message)
            return
        assert self.transport is not None
        if message.method == "INVITE":
            offer = parse_sdp(message.body)
            self.media = (offer.host, offer.port)
            self.ssrc = offer.ssrc_number or 1
            self.call = message.call_id
            answer = (
                f"v=0\r\no={self.channel_id} 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                f"m=video 15000 RTP/AVP 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\ny={offer.ssrc}\r\n"
            ).encode()
            extra = [
                ("Contact", f"<sip:{self.channel_id}@127.0.0.1:{self.local_port}>"),
                ("Content-Type", "application/sdp"),
            ]
            self.transport.sendto(
                response_to(message, 200, to_tag="cam", extra=extra, body=answer).encode(), addr
            )
        elif message.method == "ACK":
            return
        else:
            if message.method == "BYE":
                self.media = None
            self.transport.sendto(response_to(message, 200, to_tag="cam").encode(), addr)

    @property
    def local_port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def _register(self, cseq: int, auth: str = "") -> bytes:
        fields = [
            (
                "Via",
                f"SIP/2.0/UDP 127.0.0.1:{self.local_port};rport;branch=z9hG4bK{random.randrange(10**12)}",
            ),
            ("From", f"<sip:{self.device_id}@{DOMAIN}>;tag=b{self.index}"),
            ("To", f"<sip:{self.device_id}@{DOMAIN}>"),
            ("Call-ID", f"bench-reg-{self.index}"),
            ("CSeq", f"{cseq} REGISTER"),
            ("Contact", f"<sip:{self.device_id}@127.0.0.1:{self.local_port}>"),
            ("Expires", "3600"),
        ]
        if auth:
            fields.append(("Authorization", auth))
        return Request("REGISTER", f"sip:{PLATFORM_ID}@{DOMAIN}", Headers(fields)).encode()

    async def register(self) -> None:
        assert self.transport is not None
        self.transport.sendto(self._register(1), self.platform)
        challenge = await asyncio.wait_for(self.responses.get(), 10)
        params = dict(
            part.strip().split("=", 1)
            for part in (challenge.headers.get("WWW-Authenticate") or "")[7:].split(",")
        )
        realm, nonce = params["realm"].strip('"'), params["nonce"].strip('"')
        uri = f"sip:{PLATFORM_ID}@{DOMAIN}"

        def md5(text: str) -> str:
            return hashlib.md5(text.encode()).hexdigest()

        response = md5(f"{md5(f'{self.device_id}:{realm}:{PASSWORD}')}:{nonce}:{md5('REGISTER:' + uri)}")
        auth = f'Digest username="{self.device_id}", realm="{realm}", nonce="{nonce}", uri="{uri}", response="{response}"'
        self.transport.sendto(self._register(2, auth), self.platform)
        ok = await asyncio.wait_for(self.responses.get(), 10)
        if ok.status != 200:
            raise RuntimeError(f"registration refused: {ok.status}")

    def send(self, frame: bytes, key: bool, pts: int) -> bool:
        if self.media is None or self.transport is None:
            return False
        for packet in packetize(
            ps.mux(frame, pts, keyframe=key),
            payload_type=96,
            sequence=self.seq,
            timestamp=pts,
            ssrc=self.ssrc,
        ):
            self.transport.sendto(packet, self.media)
            self.seq = (self.seq + 1) & 0xFFFF
        return True


# ---- RTSP cameras -----------------------------------------------------------------------------------------


class RtspCameras:
    """An RTSP server with N camera paths (``/NNNN``): DESCRIBE/SETUP/PLAY, RTP/H.264 interleaved on TCP
    (RFC 2326 §10.12, RFC 6184 packetised by aiortc's H.264 packetiser)."""

    def __init__(self, sps_pps: tuple[bytes, bytes]) -> None:
        self.players: dict[int, list[asyncio.StreamWriter]] = {}
        self.sps, self.pps = sps_pps
        self.server: asyncio.base_events.Server | None = None
        self.port = 0
        self.seq: dict[int, int] = {}

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        import base64

        camera = -1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, url, _ = lines[0].split(" ", 2)
                headers = {
                    k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)
                }
                cseq = headers.get("cseq", "0")
                extra, body = [], b""
                path = url.split("/")[3] if url.count("/") >= 3 else ""
                if method == "DESCRIBE":
                    sprop = base64.b64encode(self.sps).decode() + "," + base64.b64encode(self.pps).decode()
                    body = (
                        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=bench\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
                        "m=video 0 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
                        f"a=fmtp:96 packetization-mode=1;sprop-parameter-sets={sprop}\r\na=control:trackID=0\r\n"
                    ).encode()
                    extra = ["Content-Type: application/sdp", f"Content-Base: {url.rstrip('/')}/"]
                elif method == "SETUP":
                    extra = ["Transport: RTP/AVP/TCP;unicast;interleaved=0-1", "Session: 4242"]
                elif method == "PLAY":
                    camera = int(path.split("?")[0])
                    extra = ["Session: 4242"]
                elif method == "OPTIONS":
                    extra = ["Public: OPTIONS, DESCRIBE, SETUP, PLAY, TEARDOWN, GET_PARAMETER"]
                text = f"RTSP/1.0 200 OK\r\nCSeq: {cseq}\r\n" + "".join(e + "\r\n" for e in extra)
                writer.write((text + f"Content-Length: {len(body)}\r\n\r\n").encode() + body)
                if method == "PLAY":
                    self.players.setdefault(camera, []).append(writer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, asyncio.LimitOverrunError):
            pass
        finally:
            if camera in self.players and writer in self.players[camera]:
                self.players[camera].remove(writer)

    def send(self, camera: int, frame: bytes, pts: int) -> bool:
        writers = self.players.get(camera)
        if not writers:
            return False
        packet = av.Packet(frame)
        packet.pts = pts
        packet.time_base = fractions.Fraction(1, 90000)
        payloads, timestamp = H264Encoder().pack(packet)
        seq = self.seq.get(camera, 0)
        data = bytearray()
        for i, payload in enumerate(payloads):
            rtp = bytes([0x80, (0x80 if i == len(payloads) - 1 else 0) | 96]) + seq.to_bytes(2, "big")
            rtp += (timestamp & 0xFFFFFFFF).to_bytes(4, "big") + (1000 + camera).to_bytes(4, "big") + payload
            data += b"$\x00" + len(rtp).to_bytes(2, "big") + rtp
            seq = (seq + 1) & 0xFFFF
        self.seq[camera] = seq
        for writer in writers:
            writer.write(bytes(data))
        return True


# ---- viewers and the run ----------------------------------------------------------------------------------


async def open_viewer(
    session: ClientSession, http: int, camera: str, device: str, stats: Stats
) -> RTCPeerConnection:
    pc = RTCPeerConnection()
    transceiver = pc.addTransceiver("video", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    async with session.post(
        f"http://127.0.0.1:{http}/view/{camera}", json={"sdp": pc.localDescription.sdp, "device": device}
    ) as r:
        answer = (await r.json())["sdp"]
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
    seam.tap_receiver(transceiver.receiver, "video", "H264", stats.received)
    return pc


def process_cpu(pid: int) -> float:
    """User + system CPU seconds of a process and its threads, from /proc (proc(5))."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def start_server(*args: str) -> tuple[asyncio.subprocess.Process, dict[str, Any]]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bench.cameras.sfu", *args, stdout=asyncio.subprocess.PIPE, cwd=str(ROOT)
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), 60)
    return proc, json.loads(line)


async def pace(
    cameras: int,
    fps: int,
    clip: list[tuple[bytes, bool]],
    stats: Stats,
    send: Callable[[int, bytes, bool, int], bool],
    stop: asyncio.Event,
) -> None:
    """Every camera sends one frame per frame time, the cameras' times spread over it."""
    start = time.perf_counter()
    slot = 1.0 / (fps * cameras)
    n = 0
    while not stop.is_set():
        frame_no, camera = divmod(n, cameras)
        due = start + n * slot
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        elif delay < -0.5:
            start -= delay  # held up: go on from now, without a burst
        data, key = clip[frame_no % len(clip)]
        stamped = stamp(data, camera, frame_no)
        if send(camera, stamped, key, frame_no * (90000 // fps)) and stats.measuring:
            stats.sent[(camera, frame_no)] = time.perf_counter()
        n += 1


async def run_path(path: str, args: argparse.Namespace, clip: list[tuple[bytes, bool]]) -> dict[str, Any]:
    stats = Stats()
    stop = asyncio.Event()
    peers: list[RTCPeerConnection] = []
    rtsp: RtspCameras | None = None
    gb: list[GbCamera] = []
    loop = asyncio.get_running_loop()
    transports: list[asyncio.BaseTransport] = []
    proc: asyncio.subprocess.Process | None = None
    pacer: asyncio.Future[None] | None = None
    try:
        if path == "gb28181":
            proc, ready = await start_server("--mode", "gb28181", "--password", PASSWORD)
            for i in range(args.cameras):
                transport, camera = await loop.create_datagram_endpoint(
                    lambda i=i: GbCamera(i, ("127.0.0.1", ready["sip"])), local_addr=("127.0.0.1", 0)
                )
                transports.append(transport)
                gb.append(camera)
            await asyncio.gather(*(c.register() for c in gb))

            def send(camera: int, frame: bytes, key: bool, pts: int) -> bool:
                return gb[camera].send(frame, key, pts)

            ids = [(c.channel_id, c.device_id) for c in gb]
        else:
            nals = [n for n in (part.rstrip(b"\x00") for part in clip[0][0].split(b"\x00\x00\x01")) if n]
            sps = next(n for n in nals if n[0] & 0x1F == 7)
            pps = next(n for n in nals if n[0] & 0x1F == 8)
            rtsp = RtspCameras((sps, pps))
            await rtsp.start()
            proc, ready = await start_server(
                "--mode", "rtsp", "--rtsp-base", f"rtsp://127.0.0.1:{rtsp.port}/"
            )

            def send(camera: int, frame: bytes, key: bool, pts: int) -> bool:
                assert rtsp is not None
                return rtsp.send(camera, frame, pts)

            ids = [(f"{i:04d}", "") for i in range(args.cameras)]
        pacer = asyncio.ensure_future(pace(args.cameras, args.fps, clip, stats, send, stop))
        async with ClientSession() as session:
            for k in range(args.viewers):
                camera, device = ids[k % args.cameras]
                peers.append(await open_viewer(session, ready["http"], camera, device, stats))
        await asyncio.sleep(args.warmup)
        stats.measuring = True
        cpu0, t0 = process_cpu(proc.pid), time.perf_counter()
        await asyncio.sleep(args.seconds)
        cpu1, t1 = process_cpu(proc.pid), time.perf_counter()
        stats.measuring = False
    finally:
        stop.set()
        if pacer is not None:
            pacer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pacer
        for pc in peers:
            await pc.close()
        if proc is not None:
            proc.terminate()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(proc.wait(), 15)
            if proc.returncode is None:
                proc.kill()
        for transport in transports:
            transport.close()
        if rtsp is not None:
            await rtsp.close()
    elapsed = t1 - t0
    cpu = 100 * (cpu1 - cpu0) / elapsed
    expected = args.viewers * args.fps
    received = stats.frames / elapsed
    delays = sorted(stats.delays)
    result: dict[str, Any] = {
        "path": path,
        "cameras": args.cameras,
        "viewers": args.viewers,
        "cpu_percent_of_core": round(cpu, 2),
        "cpu_percent_per_camera_stream": round(cpu / args.cameras, 3),
        "cpu_percent_per_viewer_stream": round(cpu / args.viewers, 3),
        "frames_received_per_second": round(received, 1),
        "expected_frames_per_second": expected,
        "delay_ms_median": round(1000 * statistics.median(delays), 2) if delays else None,
        "delay_ms_p95": round(1000 * delays[int(0.95 * (len(delays) - 1))], 2) if delays else None,
    }
    if received < MIN_DELIVERED * expected:
        result["error"] = (
            f"delivered {received:.0f} of {expected} frames/s: the CPU figure is for a lighter load"
        )
    return result


async def main(args: argparse.Namespace) -> int:
    clip = encode_clip(args.width, args.height, args.fps)
    results = [await run_path("gb28181", args, clip), await run_path("rtsp", args, clip)]
    gb, baseline = results
    out: dict[str, Any] = {"load_average": os.getloadavg(), "results": results}
    if "error" not in gb and "error" not in baseline:
        out["cpu_per_camera_stream_ratio_gb28181_to_rtsp"] = round(
            gb["cpu_percent_per_camera_stream"] / baseline["cpu_percent_per_camera_stream"], 2
        )
        if gb["delay_ms_median"] and baseline["delay_ms_median"]:
            out["delay_median_ratio_gb28181_to_rtsp"] = round(
                gb["delay_ms_median"] / baseline["delay_ms_median"], 2
            )
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return 0 if all("error" not in r for r in results) else 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cameras", type=int, default=4, help="simulated cameras (N)")
    parser.add_argument("--viewers", type=int, default=8, help="WebRTC viewers (M), spread over the cameras")
    parser.add_argument("--seconds", type=float, default=15.0, help="measured time per path")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    parser.add_argument("--fps", type=int, default=25)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    args = parser.parse_args(argv)
    if args.viewers < args.cameras:
        parser.error("--viewers must be at least --cameras (every camera is watched)")
    return args


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse_args())))
