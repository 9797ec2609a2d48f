"""Real WebRTC peers for the video tests: aiortc clients that join a meeting over its websocket.

Each peer publishes a small synthetic camera (a solid colour of its own, so a subscriber can tell
whose video it decodes) and optionally a tone, and receives on recvonly slots like the meeting page.
"""

from __future__ import annotations

import asyncio
import fractions
import json
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import av
import numpy as np
from aiohttp import ClientSession, ClientWebSocketResponse, WSMsgType
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
)
from aiortc.mediastreams import AudioStreamTrack, VideoStreamTrack

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "white": (230, 230, 230)}


class ColourTrack(VideoStreamTrack):
    """A 160×120 camera showing one colour with a moving bar (so frames differ)."""

    def __init__(self, colour: str, fps: int = 10) -> None:
        super().__init__()
        self.rgb = COLOURS[colour]
        self.fps = fps
        self.n = 0

    async def recv(self) -> av.VideoFrame:
        await asyncio.sleep(1 / self.fps)
        img = np.empty((120, 160, 3), np.uint8)
        img[:] = self.rgb
        img[:, (self.n * 8) % 160 : (self.n * 8) % 160 + 4] = 0
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = self.n * (90000 // self.fps)
        frame.time_base = fractions.Fraction(1, 90000)
        self.n += 1
        return frame


def dominant_colour(frame: av.VideoFrame) -> str:
    rgb = frame.to_ndarray(format="rgb24").reshape(-1, 3).mean(axis=0)
    return min(COLOURS, key=lambda c: sum((a - b) ** 2 for a, b in zip(COLOURS[c], rgb, strict=True)))


class MeetingPeer:
    """One participant: websocket signalling plus an aiortc peer connection."""

    def __init__(
        self,
        ws_url: str,
        *,
        colour: str | None = "red",
        audio: bool = False,
        slots: int = 2,
        track: MediaStreamTrack | None = None,
        decode: bool = True,
    ) -> None:
        self.ws_url = ws_url
        self.colour = colour
        self.audio = audio
        self.slots = slots
        self.track = track
        self.decode = decode
        # max-bundle like the server and the page: with aiortc's default "balanced" policy the audio
        # m-lines get a transport of their own, which the server's all-in-one BUNDLE answer leaves unused.
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE))
        self.session: ClientSession | None = None
        self.ws: ClientWebSocketResponse | None = None
        self.messages: list[dict[str, Any]] = []
        self.screen: dict[str, Any] = {}
        self.roster: list[dict[str, Any]] = []
        self.me: dict[str, Any] = {}
        self.received: dict[str, list[str]] = defaultdict(list)  # mid -> colours decoded, in order
        self.frames_by_mid: dict[str, int] = defaultdict(int)
        self.sizes: dict[str, list[tuple[int, int]]] = defaultdict(list)  # mid -> decoded (width, height)
        self.audio_frames = 0
        self._answer: asyncio.Future[str] | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self.on_track: Callable[[str, MediaStreamTrack], None] | None = None
        self.asked: list[dict[str, Any]] = []  # the server's renegotiate messages

    @property
    def id(self) -> str:
        return str(self.me.get("id"))

    async def join(self) -> None:
        self.session = ClientSession()
        self.ws = await self.session.ws_connect(self.ws_url)
        self._tasks.append(asyncio.ensure_future(self._read()))
        await self.wait_for(lambda: bool(self.me))
        source = self.track or (ColourTrack(self.colour) if self.colour else None)
        if source is not None:
            self.pc.addTransceiver(source, direction="sendonly")
        if self.audio:
            self.pc.addTransceiver(AudioStreamTrack(), direction="sendonly")
        for _ in range(self.slots):
            self.pc.addTransceiver("video", direction="recvonly")
        if self.audio:
            for _ in range(self.slots):
                self.pc.addTransceiver("audio", direction="recvonly")

        @self.pc.on("track")
        def track(track: MediaStreamTrack) -> None:
            mid = next(t.mid for t in self.pc.getTransceivers() if t.receiver.track is track)
            if self.on_track is not None:
                self.on_track(mid, track)
            elif self.decode:
                self._tasks.append(asyncio.ensure_future(self._consume(mid, track)))

        await self.negotiate()

    async def negotiate(self) -> None:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        self._answer = asyncio.get_running_loop().create_future()
        await self.send("offer", sdp=self.pc.localDescription.sdp)
        sdp = await asyncio.wait_for(self._answer, 20)
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))

    async def add_slots(self, video: int, audio: int) -> None:
        """Receive on ``video``/``audio`` m-lines of each kind (adding recvonly ones) and offer again."""
        have = {"video": 0, "audio": 0}
        for t in self.pc.getTransceivers():
            if t.direction == "recvonly":
                have[t.kind] += 1
        for kind, want in (("video", video), ("audio", audio)):
            for _ in range(want - have[kind]):
                self.pc.addTransceiver(kind, direction="recvonly")
        await self.negotiate()

    async def send(self, kind: str, **fields: Any) -> None:
        assert self.ws is not None
        await self.ws.send_str(json.dumps({"type": kind, **fields}))

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            self.messages.append(data)
            kind = data["type"]
            if kind == "welcome":
                self.me = data["you"]
            elif kind == "answer" and self._answer is not None and not self._answer.done():
                self._answer.set_result(data["sdp"])
            elif kind == "screen":
                self.screen = data
            elif kind == "roster":
                self.roster = data["participants"]
            elif kind == "renegotiate":
                self.asked.append(data)

    async def _consume(self, mid: str, track: MediaStreamTrack) -> None:
        try:
            while True:
                frame = await track.recv()
                self.frames_by_mid[mid] += 1
                if isinstance(frame, av.VideoFrame):
                    self.sizes[mid].append((frame.width, frame.height))
                    if self.frames_by_mid[mid] % 3 == 0:  # sample: colour conversion costs CPU
                        self.received[mid].append(dominant_colour(frame))
                else:
                    self.audio_frames += 1
        except Exception:
            return

    def layer_of(self, participant: str) -> str | None:
        """The simulcast rid the server says it forwards of ``participant`` (None: one encoding)."""
        for slot in self.screen.get("slots", []):
            if slot["kind"] == "video" and slot["participant"] == participant:
                return slot.get("layer")
        return None

    def slot_of(self, participant: str, kind: str = "video") -> str | None:
        """The mid on which this peer is being sent ``participant``'s video (or audio), per the last screen."""
        for slot in self.screen.get("slots", []):
            if slot["kind"] == kind and slot["participant"] == participant:
                return str(slot["mid"])
        return None

    def colours_seen(self) -> set[str]:
        return {c for seq in self.received.values() for c in seq}

    async def wait_for(self, predicate: Callable[[], bool], limit: float = 30.0) -> None:
        """Poll ``predicate`` until true; fail after ``limit`` seconds (I/O, not timing, is awaited)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while not predicate():
            if loop.time() > deadline:
                raise AssertionError(
                    f"condition not met within {limit} s; last messages {self.messages[-3:]}"
                )
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()
        if self.ws is not None:
            await self.ws.close()
        if self.session is not None:
            await self.session.close()
