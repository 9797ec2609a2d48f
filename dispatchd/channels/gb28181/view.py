"""Viewing a camera over WebRTC: a receive-only session carrying the channel's H.264 as the device sent
it, live or from a recording (a playback stream of the session's own).

One HTTP round trip: the viewer's offer (with its ICE candidates) in, our answer (with ours) out.
The session's video m-line is answered ``sendonly`` with H.264 only (forwarding never transcodes,
:func:`dispatchd.video.seam.restrict_codecs`); its track is a
:class:`~dispatchd.video.forward.ForwardedTrack` showing the camera stream's shared
:class:`~dispatchd.video.forward.Source` — one device stream for every viewer. A viewer's PLI
reaches the device as an ``IFameCmd``. The session ends when the viewer closes it (DELETE), when its
connection fails or closes, or when it has not connected within :data:`CONNECT_TIMEOUT`.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import Coroutine
from dataclasses import dataclass
from typing import Any, Final

import structlog
from aiortc import RTCPeerConnection, RTCSessionDescription

from dispatchd.channels.gb28181.streams import CameraStream, StreamManager
from dispatchd.config import VideoSettings
from dispatchd.errors import Conflict, Invalid
from dispatchd.rtc import close_peer
from dispatchd.video import seam
from dispatchd.video.forward import ForwardedTrack, ForwardingTotals, Source
from dispatchd.video.room import ice_configuration

log = structlog.get_logger("dispatchd.gb28181")

CONNECT_TIMEOUT: Final = 30.0
# Recordings one device plays back at once (an NVR's playback channels are few; each is a stream).
PLAYBACKS_PER_DEVICE: Final = 4


@dataclass(eq=False)
class ViewSession:
    id: str
    camera_id: str
    user: str
    pc: RTCPeerConnection
    track: ForwardedTrack
    stream: CameraStream
    source: Source
    closed: bool = False


class Viewers:
    """The WebRTC viewing sessions of this instance."""

    def __init__(
        self, streams: StreamManager, settings: VideoSettings, totals: ForwardingTotals | None = None
    ) -> None:
        self.streams = streams
        self.settings = settings
        self.totals = totals or streams.forwarding
        self.sessions: dict[str, ViewSession] = {}
        self._background: set[asyncio.Task[None]] = set()

    def of_camera(self, camera_id: str) -> int:
        return sum(1 for s in self.sessions.values() if s.camera_id == camera_id and not s.closed)

    async def open(
        self,
        camera_id: str,
        device_id: str,
        mode: str | None,
        offer: str,
        user: str,
        playback: tuple[int, int] | None = None,
    ) -> tuple[str, str]:
        """Answer ``offer`` with a session showing the camera live, or with ``playback`` (start, end
        in unix seconds) its recording of that time; returns (session id, answer SDP)."""
        if playback is not None:
            playing = sum(
                1
                for s in self.sessions.values()
                if not s.closed and s.stream.playback is not None and s.stream.device_id == device_id
            )
            if playing >= PLAYBACKS_PER_DEVICE:
                raise Conflict(
                    f"该设备已有 {playing} 路回放，请先关闭一路",
                    f"this device already plays back {playing} recordings; close one first",
                    code="playbacks_full",
                )
        existing = self.streams.streams.get(camera_id)
        if existing is not None and existing.codec not in (None, "H264"):
            raise Conflict(
                f"此摄像机发送 {existing.codec}，网页查看仅支持 H.264",
                f"this camera sends {existing.codec}; viewing here takes H.264",
                code="codec",
            )
        pc = RTCPeerConnection(ice_configuration(self.settings))
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
            except Exception as exc:
                raise Invalid(
                    f"无法接受此 SDP：{exc}", f"the offer was refused: {exc}", code="bad_sdp"
                ) from None
            videos = [t for t in pc.getTransceivers() if t.kind == "video"]
            if not videos:
                raise Invalid("offer 中没有视频", "the offer has no video", code="bad_sdp")
            transceiver = videos[0]
            if not seam.restrict_codecs(transceiver, "H264"):
                raise Invalid("浏览器未提供 H.264 编码", "the offer lacks H.264", code="codec")
            for other in pc.getTransceivers():
                if other is not transceiver:
                    other.direction = "inactive"
            session_id = secrets.token_urlsafe(12)
            track = ForwardedTrack(
                "video",
                queue_frames=self.settings.queue_frames,
                label=f"camera:{camera_id}:{session_id}",
                totals=self.totals,
            )
            transceiver.sender.replaceTrack(track)
            seam.on_keyframe_request(transceiver.sender, track.request_keyframe)
            transceiver.direction = "sendonly"
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
        except BaseException:
            await close_peer(pc)
            raise
        if playback is None:
            stream, source = self.streams.acquire(camera_id, device_id, mode)
        else:
            stream, source = self.streams.acquire_playback(camera_id, device_id, mode, *playback)
        session = ViewSession(session_id, camera_id, user, pc, track, stream, source)
        self.sessions[session_id] = session
        track.show(source)

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            if pc.connectionState in ("failed", "closed"):
                await self.close(session_id)

        self._later(self._watch(session))
        log.info("gb28181_view_opened", camera=camera_id, session=session_id, user=user, playback=playback)
        return session_id, pc.localDescription.sdp

    def _later(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _watch(self, session: ViewSession) -> None:
        await asyncio.sleep(CONNECT_TIMEOUT)
        if not session.closed and session.pc.connectionState != "connected":
            log.info("gb28181_view_never_connected", camera=session.camera_id, session=session.id)
            await self.close(session.id)

    async def close(self, session_id: str) -> bool:
        session = self.sessions.pop(session_id, None)
        if session is None or session.closed:
            return False
        session.closed = True
        session.track.stop()
        self.streams.release(session.stream.key, session.source)
        with contextlib.suppress(Exception):
            await close_peer(session.pc)
        log.info("gb28181_view_closed", camera=session.camera_id, session=session.id)
        return True

    async def close_all(self) -> None:
        for session_id in list(self.sessions):
            await self.close(session_id)
        for task in list(self._background):
            task.cancel()
