"""Voice bridge benchmark: ``python -m bench.voice [--calls 100] [--seconds 10] [--webrtc-calls N]``.

N concurrent calls, each a stream of 20 ms G.711 packets both ways (50 packets a second each way,
as a phone sends), relayed on loopback by each system in turn, in the same run:

- **direct**: the two ends send to each other (the floor of the load generator and loopback);
- **bare relay**: a Python asyncio process with two UDP sockets per call that sends every packet on
  (:mod:`bench.voice.servers`), the least a relay in dispatchd's language can do;
- **rtpengine** (Debian's ``rtpengine-daemon``, userspace forwarding, ``--table=-1``), when installed,
  driven over its ng control protocol;
- **dispatchd, SIP ⇄ SIP**: two :class:`~dispatchd.channels.hotline.voice.media.CallMedia` linked
  (a caller transferred to a department): RTP parsed, jitter buffer, passed on without decoding;
- **dispatchd, SIP ⇄ console**: the caller's RTP bridged to an officer's WebRTC leg (aiortc, DTLS-SRTP)
  answering an offer of an aiortc peer in the load generator — the path of every answered call.

Each system runs pinned to CPU 0 (one core), the load generator to CPU 1. Every packet carries the
time it was sent (CLOCK_MONOTONIC, the first 8 bytes of its payload, which every system passes on
unchanged), so each arrival gives the delay end to end. Reported per system: its CPU time over the
measured seconds (share of one core, and per call), delay p50/p99, loss, and ratios to the bare relay.
Loopback only; nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import struct
import sys
import time
from array import array
from pathlib import Path
from typing import Any

from bench.voice import ng

HOST = "127.0.0.1"
PTIME = 0.02
MAGIC = b"DPTD"
ROOT = Path(__file__).resolve().parents[2]
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def pin(pid: int, cpu: int) -> None:
    with contextlib.suppress(OSError):
        os.sched_setaffinity(pid, {cpu % (os.cpu_count() or 1)})


class Endpoint(asyncio.DatagramProtocol):
    """One end of one call: sends a packet per 20 ms to ``target``, times what it receives."""

    def __init__(self, delays: array[float]) -> None:
        self.delays = delays
        self.transport: asyncio.DatagramTransport | None = None
        self.target: tuple[str, int] | None = None
        self.sequence = secrets.randbits(16)
        self.timestamp = secrets.randbits(31)
        self.ssrc = secrets.randbits(32)
        self.sent = 0
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    @property
    def port(self) -> int:
        assert self.transport is not None
        return int(self.transport.get_extra_info("sockname")[1])

    def send(self) -> None:
        if self.transport is None or self.target is None:
            return
        payload = struct.pack("!Q", time.monotonic_ns()) + MAGIC + b"\xff" * 148
        header = struct.pack("!BBHII", 0x80, 0, self.sequence, self.timestamp, self.ssrc)
        self.transport.sendto(header + payload, self.target)
        self.sequence = (self.sequence + 1) & 0xFFFF
        self.timestamp = (self.timestamp + 160) & 0xFFFFFFFF
        self.sent += 1

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(data) < 24:
            return
        offset = 12 + 4 * (data[0] & 0x0F)
        if data[0] & 0x10:
            offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
        arrived(data[offset:], self)


def arrived(payload: bytes, end: Any) -> None:
    if payload[8:12] != MAGIC:
        return
    end.received += 1
    end.delays.append((time.monotonic_ns() - struct.unpack("!Q", payload[:8])[0]) / 1000.0)


class PeerEnd:
    """The console's end of a call: an aiortc peer sending and receiving G.711 as packets."""

    def __init__(self, delays: array[float]) -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection

        from dispatchd.channels.hotline.voice.webrtc import _OutgoingTrack

        self.delays = delays
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.track = _OutgoingTrack(pcm=False)
        self.sent = 0
        self.received = 0
        self.pts = 0

    async def offer(self) -> str:
        from aiortc.rtcrtpsender import RTCRtpSender

        transceiver = self.pc.addTransceiver(self.track, direction="sendrecv")
        transceiver.setCodecPreferences(
            [c for c in RTCRtpSender.getCapabilities("audio").codecs if c.mimeType == "audio/PCMU"]
        )
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, sdp: str) -> None:
        from aiortc import RTCSessionDescription

        from dispatchd.channels.hotline.voice import seam

        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
        transceiver = self.pc.getTransceivers()[0]
        seam.tap_audio_receiver(transceiver.receiver, lambda packet: arrived(packet.payload, self))

    def send(self) -> None:
        import fractions

        import av

        packet = av.Packet(struct.pack("!Q", time.monotonic_ns()) + MAGIC + b"\xff" * 148)
        packet.pts = self.pts
        packet.time_base = fractions.Fraction(1, 8000)
        self.pts += 160
        self.track.put(packet)
        self.sent += 1

    async def close(self) -> None:
        await self.pc.close()


class Server:
    """A system under test in its own process, pinned to CPU 0, spoken to in JSON lines."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.process: asyncio.subprocess.Process | None = None
        self.pid = 0

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.voice.servers",
            *self.args,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        self.pid = int((await self.ask(None))["pid"])
        pin(self.pid, 0)

    async def ask(self, command: dict[str, Any] | None) -> dict[str, Any]:
        assert self.process is not None and self.process.stdin is not None and self.process.stdout is not None
        if command is not None:
            self.process.stdin.write((json.dumps(command) + "\n").encode())
            await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), 60)
        data: dict[str, Any] = json.loads(line)
        return data

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


async def pace(ends: list[Any], stop: asyncio.Event) -> None:
    """Every end sends each 20 ms, spread over the 20 ms (calls do not all speak on the same tick)."""
    loop = asyncio.get_running_loop()
    groups = 20
    start = loop.time()
    n = 0
    while not stop.is_set():
        for end in ends[n % groups :: groups]:
            end.send()
        n += 1
        await asyncio.sleep(max(start + n * PTIME / groups - loop.time(), 0))


async def measure(
    name: str, ends: list[Any], delays: array[float], pid: int | None, calls: int, args: argparse.Namespace
) -> dict[str, Any]:
    stop = asyncio.Event()
    pacing = asyncio.create_task(pace(ends, stop))
    await asyncio.sleep(args.warmup)
    del delays[:]
    for end in ends:
        end.sent = end.received = 0
    own0, wall0 = cpu_seconds(os.getpid()), time.monotonic()
    cpu0 = cpu_seconds(pid) if pid else 0.0
    await asyncio.sleep(args.seconds)
    cpu1 = cpu_seconds(pid) if pid else 0.0
    wall = time.monotonic() - wall0
    own = (cpu_seconds(os.getpid()) - own0) / wall
    stop.set()
    await pacing
    await asyncio.sleep(0.2)
    sent = sum(e.sent for e in ends)
    received = sum(e.received for e in ends)
    ordered = sorted(delays)
    p = lambda q: ordered[min(len(ordered) - 1, int(q * len(ordered)))] / 1000 if ordered else float("nan")  # noqa: E731
    core = (cpu1 - cpu0) / wall if pid else 0.0
    return {
        "system": name,
        "calls": calls,
        "core": core,
        "per_call": core / calls if calls else 0.0,
        "p50": p(0.5),
        "p99": p(0.99),
        "loss": max(sent - received, 0) / sent if sent else 0.0,
        "generator": own,
    }


async def pairs(n: int, delays: array[float]) -> list[tuple[Endpoint, Endpoint]]:
    loop = asyncio.get_running_loop()
    out = []
    for _ in range(n):
        _, a = await loop.create_datagram_endpoint(lambda: Endpoint(delays), local_addr=(HOST, 0))
        _, b = await loop.create_datagram_endpoint(lambda: Endpoint(delays), local_addr=(HOST, 0))
        out.append((a, b))
    return out


def close(ends: list[Any]) -> None:
    for end in ends:
        if isinstance(end, Endpoint) and end.transport is not None:
            end.transport.close()


async def run_direct(args: argparse.Namespace) -> dict[str, Any]:
    delays: array[float] = array("d")
    calls = await pairs(args.calls, delays)
    for a, b in calls:
        a.target, b.target = (HOST, b.port), (HOST, a.port)
    ends = [e for pair in calls for e in pair]
    try:
        return await measure("direct (no relay)", ends, delays, None, args.calls, args)
    finally:
        close(ends)


async def run_relay(args: argparse.Namespace, kind: str, name: str) -> dict[str, Any]:
    delays: array[float] = array("d")
    calls = await pairs(args.calls, delays)
    server = Server([kind])
    await server.start()
    try:
        for a, b in calls:
            got = await server.ask({"op": "sip", "caller": a.port, "far": b.port})
            a.target, b.target = (HOST, got["caller_port"]), (HOST, got["far_port"])
        ends = [e for pair in calls for e in pair]
        return await measure(name, ends, delays, server.pid, args.calls, args)
    finally:
        await server.stop()
        close([e for pair in calls for e in pair])


async def run_rtpengine(args: argparse.Namespace) -> dict[str, Any] | None:
    binary = shutil.which("rtpengine")
    if binary is None:
        return None
    delays: array[float] = array("d")
    calls = await pairs(args.calls, delays)
    control = ng.free_udp_port()
    process = await asyncio.create_subprocess_exec(
        binary,
        "--config-file=none",
        "--foreground",
        "--log-stderr",
        "--table=-1",
        f"--interface={HOST}",
        f"--listen-ng={HOST}:{control}",
        "--port-min=40000",
        "--port-max=49999",
        "--num-threads=1",
        "-L",
        "3",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    pin(process.pid, 0)
    try:
        client = ng.NgClient((HOST, control))
        await client.start()
        for i, (a, b) in enumerate(calls):
            call_id = f"bench-{i}-{secrets.token_hex(4)}"
            offered = await client.command("offer", call_id, "caller", ng.sdp(a.port))
            answered = await client.command("answer", call_id, "caller", ng.sdp(b.port), to_tag="far")
            b.target = (HOST, ng.audio_port(offered))  # the far end sends where the offer said
            a.target = (HOST, ng.audio_port(answered))
        client.close()
        ends = [e for pair in calls for e in pair]
        return await measure("rtpengine (userspace)", ends, delays, process.pid, args.calls, args)
    finally:
        process.kill()
        await process.wait()
        close([e for pair in calls for e in pair])


async def run_console(args: argparse.Namespace) -> dict[str, Any]:
    from dispatchd.video import seam

    seam.limit_host_addresses([HOST])
    delays: array[float] = array("d")
    loop = asyncio.get_running_loop()
    n = args.webrtc_calls or args.calls
    server = Server(["bridge"])
    await server.start()
    callers: list[Endpoint] = []
    peers: list[PeerEnd] = []
    try:
        for _ in range(n):
            _, caller = await loop.create_datagram_endpoint(lambda: Endpoint(delays), local_addr=(HOST, 0))
            peer = PeerEnd(delays)
            got = await server.ask({"op": "webrtc", "caller": caller.port, "offer": await peer.offer()})
            await peer.accept(got["answer"])
            caller.target = (HOST, got["caller_port"])
            callers.append(caller)
            peers.append(peer)
        await asyncio.sleep(1.0)  # ICE and DTLS of the last peers
        return await measure(
            "dispatchd SIP ⇄ console (WebRTC)", [*callers, *peers], delays, server.pid, n, args
        )
    finally:
        for peer in peers:
            await peer.close()
        close(callers)
        await server.stop()


def table(rows: list[dict[str, Any]]) -> str:
    base = next((r for r in rows if r["system"] == "bare relay"), None)
    lines = [
        f"{'system':38} {'calls':>5} {'CPU core':>9} {'per call':>9} {'p50 ms':>7} {'p99 ms':>7} {'loss':>6} {'CPU×relay':>9} {'p99×relay':>9} {'generator':>9}",
    ]
    for r in rows:
        cpu_ratio = (
            f"{r['per_call'] / base['per_call']:.1f}" if base and base["per_call"] and r["core"] else "—"
        )
        p99_ratio = f"{r['p99'] / base['p99']:.2f}" if base and base["p99"] else "—"
        lines.append(
            f"{r['system']:38} {r['calls']:>5} {r['core'] * 100:>8.1f}% {r['per_call'] * 100:>8.3f}% {r['p50']:>7.2f} {r['p99']:>7.2f}"
            f" {r['loss'] * 100:>5.2f}% {cpu_ratio:>9} {p99_ratio:>9} {r['generator'] * 100:>8.0f}%"
        )
    return "\n".join(lines)


async def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--calls", type=int, default=100)
    parser.add_argument(
        "--webrtc-calls", type=int, default=0, help="calls for the console path (default: --calls)"
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--only", default="", help="comma-separated: direct,relay,rtpengine,sip,console")
    args = parser.parse_args()
    pin(os.getpid(), 1)
    wanted = set(args.only.split(",")) if args.only else {"direct", "relay", "rtpengine", "sip", "console"}
    rows: list[dict[str, Any]] = []
    if "direct" in wanted:
        rows.append(await run_direct(args))
    if "relay" in wanted:
        rows.append(await run_relay(args, "relay", "bare relay"))
    if "rtpengine" in wanted:
        found = await run_rtpengine(args)
        if found is None:
            print("rtpengine: not installed (apt-get install rtpengine-daemon); skipped", file=sys.stderr)
        else:
            rows.append(found)
    if "sip" in wanted:
        rows.append(await run_relay(args, "bridge", "dispatchd SIP ⇄ SIP"))
    if "console" in wanted:
        rows.append(await run_console(args))
    print(
        f"{args.calls} calls × 2 directions × 50 packets/s, {args.seconds:.0f} s measured after {args.warmup:.0f} s;"
        f" systems on CPU 0, the load generator on CPU 1 (CPU: share of one core; generator: its own share)"
    )
    print(table(rows))


if __name__ == "__main__":
    asyncio.run(main())
