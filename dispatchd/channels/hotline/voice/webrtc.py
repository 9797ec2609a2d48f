"""The officer's leg: one aiortc peer answering the console's offer, audio and a data channel.

Where the browser offers the caller's G.711 law (every browser offers PCMU and PCMA), the
answer keeps only that codec and nothing is decoded: the receiver's RTP packets are tapped after
SRTP (:func:`dispatchd.channels.hotline.voice.seam.tap_audio_receiver`) and the caller's payloads go out through
aiortc's sender as encoded packets (its G.711 ``pack`` only stamps them). With the other law only,
a table converts (:func:`~dispatchd.channels.hotline.voice.g711.transcode`). Only a browser with no
G.711 at all gets Opus: then aiortc decodes and encodes, and this leg resamples to 8 kHz.

The console may open a data channel; the leg sends it JSON messages (``{"type": "dtmf", "key"}``,
``{"type": "hold", "on"}``, ``{"type": "ended"}``) and takes ``{"type": "dtmf", "key"}`` from it
(keys to the caller, RFC 4733).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
from collections.abc import Callable
from typing import Any, Final

import av
import numpy as np
import structlog
from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from dispatchd.channels.hotline.voice import g711, seam
from dispatchd.channels.hotline.voice.jitter import OutFrame
from dispatchd.rtc import close_peer

log = structlog.get_logger("dispatchd.voice")

__all__ = ["OfferError", "OfficerLeg"]

_TIME_BASE: Final = fractions.Fraction(1, 8000)
_QUEUE: Final = 10  # frames (200 ms) waiting for aiortc's sender before the oldest is dropped
_NAMES: Final = {g711.PCMU: "PCMU", g711.PCMA: "PCMA"}
_OTHER: Final = {g711.PCMU: g711.PCMA, g711.PCMA: g711.PCMU}


class OfferError(ValueError):
    """The console's offer cannot be answered; ``str()`` says why (in English, for the log)."""


class _OutgoingTrack(MediaStreamTrack):
    """What the officer hears: encoded G.711 packets (``av.Packet``) or, transcoding, PCM frames."""

    kind = "audio"

    def __init__(self, pcm: bool) -> None:
        super().__init__()
        self.pcm = pcm
        self._queue: asyncio.Queue[Any] = asyncio.Queue()  # av.Packet or av.AudioFrame; None ends

    def put(self, item: Any) -> None:
        if self._queue.qsize() >= _QUEUE:
            self._queue.get_nowait()  # the sender fell behind: drop the oldest rather than lag
        self._queue.put_nowait(item)

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        item = await self._queue.get()
        if item is None:
            raise MediaStreamError
        return item

    def stop(self) -> None:
        self._queue.put_nowait(None)
        super().stop()


class OfficerLeg:
    """Implements :class:`~dispatchd.channels.hotline.voice.media.FarLeg` for a browser."""

    def __init__(self, pc: RTCPeerConnection, codec: int, wire_codec: int | None) -> None:
        self.pc = pc
        self.codec = codec  # the law the bridge hands us and takes from us: the caller's
        self.wire_codec = wire_codec  # the law on the wire to the browser; None: Opus (transcoding)
        self.on_packet: Callable[[int, int, int, int, bool, bytes], None] | None = None
        self.on_gone: Callable[[], None] | None = None
        self.on_message: Callable[[dict[str, Any]], None] | None = None
        self.track = _OutgoingTrack(pcm=wire_codec is None)
        self.channel: RTCDataChannel | None = None
        self.answer_sdp = ""
        self._early: list[str] = []  # messages before the data channel opened
        self._reader: asyncio.Task[None] | None = None
        self._pts_origin: int | None = None
        self.closed = False

    @classmethod
    async def answer(cls, offer_sdp: str, codec: int, configuration: RTCConfiguration) -> OfficerLeg:
        """Answer the console's offer for a caller speaking ``codec``; :class:`OfferError` if it cannot."""
        pc = RTCPeerConnection(configuration)
        try:
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            except Exception as exc:
                raise OfferError(f"the offer was refused: {exc}") from None
            audio = [t for t in pc.getTransceivers() if t.kind == "audio"]
            if not audio:
                raise OfferError("the offer has no audio")
            transceiver = audio[0]
            wire: int | None
            if seam.keep_codec(transceiver, _NAMES[codec]):
                wire = codec
            elif seam.keep_codec(transceiver, _NAMES[_OTHER[codec]]):
                wire = _OTHER[codec]
            elif seam.keep_codec(transceiver, "opus"):
                wire = None
            else:
                raise OfferError("the offer has neither G.711 nor Opus audio")
            leg = cls(pc, codec, wire)
            if wire is not None:
                seam.tap_audio_receiver(transceiver.receiver, leg._from_browser)
            else:
                leg._on_track(transceiver.receiver.track)  # its "track" event fired in setRemoteDescription
            transceiver.sender.replaceTrack(leg.track)
            transceiver.direction = "sendrecv"
            for other in audio[1:]:
                other.direction = "inactive"
            pc.on("datachannel", leg._on_channel)
            pc.on("connectionstatechange", leg._on_state)
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
            leg.answer_sdp = pc.localDescription.sdp
            return leg
        except BaseException:
            await close_peer(pc)
            raise

    # -- to the browser ---------------------------------------------------------------------

    def send(self, frame: OutFrame, now: float) -> None:
        if self.closed:
            return
        if self._pts_origin is None:
            self._pts_origin = frame.timestamp
        pts = (frame.timestamp - self._pts_origin) & 0xFFFFFFFF
        if self.wire_codec is None:
            samples = g711.decode(frame.payload, self.codec)
            audio = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
            audio.sample_rate = 8000
            audio.pts = pts
            audio.time_base = _TIME_BASE
            self.track.put(audio)
            return
        payload = (
            frame.payload
            if self.wire_codec == self.codec
            else g711.transcode(frame.payload, self.codec, self.wire_codec)
        )
        packet = av.Packet(payload)
        packet.pts = pts
        packet.time_base = _TIME_BASE
        self.track.put(packet)

    def notify(self, message: dict[str, Any]) -> None:
        text = json.dumps(message, ensure_ascii=False)
        channel = self.channel
        if channel is not None and channel.readyState == "open":
            channel.send(text)
        elif len(self._early) < 50:
            self._early.append(text)

    # -- from the browser -------------------------------------------------------------------

    def _from_browser(self, packet: Any) -> None:
        if self.on_packet is not None and self.wire_codec is not None:
            self.on_packet(
                packet.payload_type,
                packet.sequence_number,
                packet.timestamp,
                packet.ssrc,
                bool(packet.marker),
                packet.payload,
            )

    def _on_track(self, track: MediaStreamTrack) -> None:
        if track.kind == "audio" and self._reader is None:
            self._reader = asyncio.create_task(self._read_pcm(track), name="voice-officer-pcm")

    async def _read_pcm(self, track: MediaStreamTrack) -> None:
        """Opus from the browser, decoded by aiortc: resampled to 8 kHz and encoded in the caller's law."""
        resampler = av.AudioResampler(format="s16", layout="mono", rate=8000)
        sequence = timestamp = 0
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                assert isinstance(frame, av.AudioFrame)
                for out in resampler.resample(frame):
                    samples = np.asarray(out.to_ndarray()).reshape(-1).astype(np.int16)
                    if self.on_packet is not None:
                        self.on_packet(
                            self.codec, sequence, timestamp, 1, False, g711.encode(samples, self.codec)
                        )
                    sequence = (sequence + 1) & 0xFFFF
                    timestamp = (timestamp + len(samples)) & 0xFFFFFFFF

    def _on_channel(self, channel: RTCDataChannel) -> None:
        self.channel = channel

        def opened() -> None:
            for text in self._early:
                channel.send(text)
            self._early.clear()

        def message(data: object) -> None:
            if not isinstance(data, str) or len(data) > 2000:
                return
            with contextlib.suppress(ValueError):
                parsed = json.loads(data)
                if isinstance(parsed, dict) and self.on_message is not None:
                    self.on_message(parsed)

        if channel.readyState == "open":
            opened()
        channel.on("open", opened)
        channel.on("message", message)

    async def _on_state(self) -> None:
        state = self.pc.connectionState
        log.debug("voice_officer_peer", state=state)
        if state in ("failed", "closed") and not self.closed and self.on_gone is not None:
            self.on_gone()

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.channel is not None and self.channel.readyState == "open":
            with contextlib.suppress(Exception):
                for text in self._early:
                    self.channel.send(text)
        self.track.stop()
        if self._reader is not None:
            self._reader.cancel()
        await close_peer(self.pc)
