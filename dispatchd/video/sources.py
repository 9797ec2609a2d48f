"""Pulled sources: a surveillance camera by RTSP URL joins a meeting as a participant.

PyAV demuxes the camera's stream in a thread (``decode`` is never called): each packet is an encoded
frame and goes to a :class:`~dispatchd.video.forward.Source` like a participant's camera. The
camera's codec must be the meeting's (forwarding never transcodes). A camera cannot be asked for a
keyframe, so a new viewer waits for the camera's next one (its GOP, typically 1–2 s). A dropped
connection is retried with a growing pause.
"""

from __future__ import annotations

import asyncio
import fractions
import threading
from collections.abc import Callable
from typing import Any

import av
import structlog

from dispatchd.video.forward import ForwardingTotals, Source
from dispatchd.video.framing import VIDEO_CLOCK, EncodedFrame, h264_nal_types, is_keyframe

log = structlog.get_logger("dispatchd.video")

_CODEC_NAMES = {"VP8": "vp8", "H264": "h264"}


class RtspPuller:
    def __init__(
        self,
        url: str,
        codec: str,
        participant: str,
        *,
        transport: str = "tcp",
        totals: ForwardingTotals | None = None,
    ) -> None:
        self.url = url
        self.codec = codec.upper()
        self.participant = participant
        self.transport = transport
        self.source = Source(participant, "video", self.codec, totals=totals)
        self.error: str | None = None
        self.frames = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._container: Any = None

    def start(self, published: Callable[[str, Source], None]) -> None:
        loop = asyncio.get_running_loop()
        published("video", self.source)
        self._thread = threading.Thread(
            target=self._run, args=(loop,), name=f"rtsp-{self.participant}", daemon=True
        )
        self._thread.start()

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        pause = 1.0
        while not self._stop.is_set():
            try:
                self._pull(loop)
                pause = 1.0
            except Exception as exc:  # av.FFmpegError, OSError: the camera is away
                self.error = str(exc)
                log.warning("rtsp_pull_failed", participant=self.participant, error=str(exc))
            if self._stop.wait(pause):
                break
            pause = min(pause * 2, 30.0)

    def _pull(self, loop: asyncio.AbstractEventLoop) -> None:
        options = {"rtsp_transport": self.transport, "timeout": "5000000"}
        container = av.open(self.url, options=options, timeout=(10.0, 5.0))
        self._container = container
        try:
            stream = container.streams.video[0]
            found = (stream.codec_context.name or "").lower()
            if found != _CODEC_NAMES[self.codec]:
                self.error = f"camera sends {found}, the meeting uses {self.codec}"
                log.warning("rtsp_codec_mismatch", participant=self.participant, codec=found)
                self._stop.wait(30)
                return
            extradata = bytes(stream.codec_context.extradata or b"")
            time_base = stream.time_base or fractions.Fraction(1, VIDEO_CLOCK)
            first: int | None = None
            self.error = None
            for packet in container.demux(stream):
                if self._stop.is_set():
                    break
                if packet.size == 0 or packet.pts is None:
                    continue
                data = bytes(packet)
                if self.codec == "H264" and extradata and 7 not in h264_nal_types(data):
                    if 5 in h264_nal_types(data):
                        data = extradata + data  # SPS/PPS came out of band (SDP): send them in band
                ts = int(packet.pts * time_base * VIDEO_CLOCK)
                if first is None:
                    first = ts
                frame = EncodedFrame(data, ts - first, is_keyframe(self.codec, data))
                self.frames += 1
                loop.call_soon_threadsafe(self.source.deliver, frame)
        finally:
            self._container = None
            container.close()

    async def stop(self) -> None:
        self._stop.set()
        self.source.end()
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 10)
