"""Recording a meeting by muxing the forwarded packets into Matroska (WebM's container) with PyAV.

The recorder is one more subscriber: it receives what is on screen (the chair and the speaker,
video and the audio of those not muted) through the same forwarding tracks a participant gets, and
writes each encoded packet as it comes. Nothing is decoded or encoded again.
"""

from __future__ import annotations

import asyncio
import fractions
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import structlog

from dispatchd.tasks import stop_tasks
from dispatchd.video.forward import ForwardedTrack, Source
from dispatchd.video.framing import AUDIO_CLOCK, VIDEO_CLOCK, is_keyframe, vp8_size

log = structlog.get_logger("dispatchd.video")

# RFC 7845 section 5.1 identification header: version 1, 2 channels, 312 samples pre-skip, 48 kHz.
_OPUS_HEAD = b"OpusHead" + struct.pack("<BBHIhB", 1, 2, 312, AUDIO_CLOCK, 0, 0)


class Recorder:
    def __init__(
        self, path: Path, codec: str, *, slots: int = 2, monotonic: Callable[[], float] | None = None
    ) -> None:
        self.path = path
        self.codec = codec.upper()
        self.record_id = 0
        self.video = [ForwardedTrack("video", queue_frames=120, label=f"rec-v{i}") for i in range(slots)]
        self.audio = [ForwardedTrack("audio", queue_frames=250, label=f"rec-a{i}") for i in range(slots)]
        self._container: av.container.OutputContainer | None = None
        self._streams: dict[ForwardedTrack, Any] = {}  # PyAV video and audio streams
        self._tasks: list[asyncio.Task[None]] = []
        self._monotonic = monotonic or asyncio.get_event_loop().time
        self._started = 0.0
        self._base: dict[ForwardedTrack, int] = {}
        self.packets = 0

    def start(self) -> None:
        self._container = av.open(str(self.path), "w", format="matroska")
        self._started = self._monotonic()
        for track in self.video:
            stream = self._container.add_stream("vp8" if self.codec == "VP8" else "h264")
            stream.time_base = fractions.Fraction(1, VIDEO_CLOCK)
            stream.width, stream.height = 640, 480  # corrected from the first keyframe below
            self._streams[track] = stream
        for track in self.audio:
            audio = self._container.add_stream("opus", rate=AUDIO_CLOCK)
            audio.time_base = fractions.Fraction(1, AUDIO_CLOCK)
            audio.codec_context.extradata = _OPUS_HEAD
            self._streams[track] = audio
        self._tasks = [asyncio.ensure_future(self._pump(t)) for t in self.video + self.audio]
        log.info("recording_started", path=str(self.path))

    def show(self, video: list[Source | None], audio: list[Source | None]) -> None:
        """What to record: the sources on screen, slot by slot."""
        for tracks, sources in ((self.video, video), (self.audio, audio)):
            for i, track in enumerate(tracks):
                track.show(sources[i] if i < len(sources) else None)

    async def _pump(self, track: ForwardedTrack) -> None:
        stream = self._streams[track]
        clock = VIDEO_CLOCK if track.kind == "video" else AUDIO_CLOCK
        try:
            while True:
                packet = await track.recv()
                if self._container is None:
                    return
                data = bytes(packet)
                if track not in self._base:
                    # Place the stream's first packet at the moment it arrived since recording began.
                    self._base[track] = int((self._monotonic() - self._started) * clock)
                    if track.kind == "video" and self.codec == "VP8":
                        size = vp8_size(data)
                        if size is not None and self.packets == 0:
                            stream.width, stream.height = size
                out = av.Packet(data)
                out.pts = out.dts = self._base[track] + (packet.pts or 0)
                out.time_base = fractions.Fraction(1, clock)  # the muxer rescales to the stream's
                out.stream = stream
                if track.kind == "audio" or is_keyframe(self.codec, data):
                    out.is_keyframe = True
                self._container.mux(out)
                self.packets += 1
        except asyncio.CancelledError:
            pass
        except Exception:
            log.exception("recording_failed", path=str(self.path))

    async def stop(self) -> int:
        """Stop, close the file and return its size in bytes."""
        for track in self.video + self.audio:
            track.show(None)
        await stop_tasks(self._tasks)
        container, self._container = self._container, None
        if container is not None:
            await asyncio.to_thread(container.close)
        size = self.path.stat().st_size if self.path.exists() else 0
        log.info("recording_stopped", path=str(self.path), bytes=size, packets=self.packets)
        return size
