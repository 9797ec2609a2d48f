"""Live streams of cameras: one device stream per channel, shared by every viewer and meeting.

:class:`StreamPlan` is the pure part, one per channel: it decides when to ask the device for the
stream (INVITE) and when to end it (BYE), from the number of consumers and the time —

* the first consumer starts the stream; a refused or unanswered INVITE is tried again after a pause
  that doubles (1 s, 2 s, 4 s … up to 30 s) until video flows;
* a stream that delivers no video for ``stall_timeout`` is ended and requested again at once
  (a re-INVITE), as is one the device ends with a BYE;
* when the last consumer leaves, the stream stays up for ``linger`` seconds (a viewer who reloads
  does not cost a new INVITE), then ends with a BYE.

:class:`StreamManager` is the asyncio side: it binds the media socket of each attempt (UDP, or TCP
listening for ``tcp-passive``, or TCP connecting for ``tcp-active``), writes the SDP offer (§9.2,
Annex F), has the SIP edge send the INVITE, and turns what arrives — PS over RTP, framed by RFC 4571
over TCP — into :class:`~dispatchd.video.framing.EncodedFrame` s for the
:class:`~dispatchd.video.forward.Source` s of its consumers, without decoding anything. A consumer
asking for a key frame (a viewer's PLI) becomes a ``DeviceControl`` ``IFameCmd`` (§A.2.3), at most
one every two seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, Final, Protocol, TypeAlias

import structlog

from dispatchd.channels.gb28181.ps import AccessUnit
from dispatchd.channels.gb28181.rtp import PsReceiver, Rfc4571Framer
from dispatchd.channels.gb28181.sdp import GbSdp, make_ssrc
from dispatchd.video.forward import ForwardingTotals, Source
from dispatchd.video.framing import EncodedFrame

log = structlog.get_logger("dispatchd.gb28181")

__all__ = ["StartStream", "StopStream", "StreamManager", "StreamPlan"]

MAX_BACKOFF: Final = 30.0
PLAYBACK_TRIES: Final = 3
KEYFRAME_REQUEST_INTERVAL: Final = 2.0
_PTS_WRAP: Final = 1 << 33


# ---- the pure part --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartStream:
    attempt: int


@dataclass(frozen=True, slots=True)
class StopStream:
    reason: str  # idle, stalled


Action: TypeAlias = StartStream | StopStream


class StreamPlan:
    """When one channel's stream should be requested and ended (see the module documentation)."""

    def __init__(
        self, *, stall_timeout: float, linger: float, max_backoff: float = MAX_BACKOFF, once: bool = False
    ) -> None:
        self.stall_timeout = stall_timeout
        self.linger = linger
        self.max_backoff = max_backoff
        # A playback runs once: a stall or the device's end finishes it, and it is tried at most
        # PLAYBACK_TRIES times before it plays.
        self.once = once
        self.state = "idle"  # idle, starting, playing, finished (a playback that ended)
        self.consumers = 0
        self.attempts = 0
        self.failures = 0  # in a row, since video last flowed
        self.restarts = 0
        self.retry_at = 0.0
        self.last_media: float | None = None
        self.idle_since: float | None = None

    def add_consumer(self, now: float) -> list[Action]:
        self.consumers += 1
        self.idle_since = None
        return self.tick(now)

    def remove_consumer(self, now: float) -> list[Action]:
        self.consumers = max(0, self.consumers - 1)
        if self.consumers == 0:
            self.idle_since = now
        return self.tick(now)

    def started(self, now: float) -> None:
        """The device answered the INVITE: video is expected within ``stall_timeout``."""
        if self.state == "starting":
            self.state = "playing"
            self.last_media = now

    def media(self, now: float) -> None:
        self.last_media = now
        self.failures = 0

    def failed(self, now: float) -> None:
        """The attempt failed (refused, not answered, the media connection never came)."""
        self.state = "idle"
        self.failures += 1
        self.retry_at = now + min(2.0 ** (self.failures - 1), self.max_backoff)

    def ended(self, now: float) -> None:
        """The device ended the stream (BYE) or its media connection closed: ask again at once (a
        playback is over)."""
        if self.once and self.state in ("playing", "starting"):
            self.state = "finished"
            return
        if self.state not in ("idle", "finished"):
            self.state = "idle"
            self.retry_at = now if self.failures == 0 else now + min(2.0**self.failures, self.max_backoff)
            self.failures += 1

    def next_deadline(self) -> float | None:
        if self.state == "finished":
            return None
        if self.consumers == 0:
            return (
                self.idle_since + self.linger
                if self.state != "idle" and self.idle_since is not None
                else None
            )
        if self.state == "idle":
            return self.retry_at
        if self.state == "playing" and self.last_media is not None:
            return self.last_media + self.stall_timeout
        return None

    def tick(self, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.consumers == 0:
            if self.state != "idle" and self.idle_since is not None and now >= self.idle_since + self.linger:
                self.state = "idle"
                actions.append(StopStream("idle"))
            return actions
        if self.state == "finished":
            return actions
        if (
            self.state == "playing"
            and self.last_media is not None
            and now - self.last_media >= self.stall_timeout
        ):
            if self.once:  # the recording ran out (or the device stopped sending): over
                self.state = "finished"
                return [StopStream("finished")]
            self.state = "idle"
            self.restarts += 1
            self.retry_at = now if self.failures == 0 else now + min(2.0**self.failures, self.max_backoff)
            self.failures += 1
            actions.append(StopStream("stalled"))
        if self.state == "idle" and now >= self.retry_at:
            if self.once and self.attempts >= PLAYBACK_TRIES:
                self.state = "finished"
                return actions
            self.state = "starting"
            self.attempts += 1
            actions.append(StartStream(self.attempts))
        return actions


# ---- the asyncio part -----------------------------------------------------------------------------


class Signalling(Protocol):
    """What the stream manager needs from the SIP edge."""

    def invite(self, device_id: str, channel_id: str, offer: GbSdp) -> str | None: ...

    def bye(self, call: str) -> None: ...

    def request_keyframe(self, device_id: str, channel_id: str) -> None: ...

    def media_host(self, device_id: str) -> str: ...


@dataclass
class StreamTotals:
    """Counters of this instance's camera streams, read when metrics are scraped."""

    invites: int = 0
    answered: int = 0
    failures: int = 0
    restarts: int = 0
    frames: int = 0
    bytes: int = 0
    discontinuities: int = 0
    keyframe_requests: int = 0
    h265_frames: int = 0


class _Media:
    """The media socket of one attempt: bytes in, access units to ``on_units``."""

    def __init__(
        self,
        mode: str,
        on_units: Callable[[list[AccessUnit]], None],
        on_closed: Callable[[], None],
        expected_ssrc: int | None,
    ) -> None:
        self.mode = mode
        self.receiver = PsReceiver(expected_ssrc=expected_ssrc)
        self.framer = Rfc4571Framer()
        self.on_units = on_units
        self.on_closed = on_closed
        self.port = 0
        self._udp: asyncio.DatagramTransport | None = None
        self._server: asyncio.base_events.Server | None = None
        self._connection: asyncio.Transport | None = None
        self.closed = False

    async def open(self, host: str) -> None:
        loop = asyncio.get_running_loop()
        if self.mode == "udp":
            media = self

            class Udp(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
                    media.datagram(data)

            transport, _ = await loop.create_datagram_endpoint(Udp, local_addr=(host, 0))
            self._udp = transport
            self.port = transport.get_extra_info("sockname")[1]
        elif self.mode == "tcp-passive":
            self._server = await loop.create_server(lambda: _TcpMedia(self), host, 0)
            self.port = self._server.sockets[0].getsockname()[1]
        else:
            self.port = 9  # RFC 4145 §4.1: the active side writes the discard port

    async def connect(self, host: str, port: int) -> None:
        """``tcp-active``: connect to the port of the device's answer."""
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: _TcpMedia(self), host, port)

    def datagram(self, data: bytes) -> None:
        if not self.closed:
            self.on_units(self.receiver.receive(data))

    def stream_data(self, data: bytes) -> None:
        if self.closed:
            return
        units: list[AccessUnit] = []
        for packet in self.framer.feed(data):
            units += self.receiver.receive(packet)
        self.on_units(units)

    def attach(self, transport: asyncio.Transport) -> bool:
        if self._connection is not None or self.closed:
            return False  # one connection per stream (a=connection:new)
        self._connection = transport
        return True

    def connection_lost(self, transport: asyncio.Transport) -> None:
        if transport is self._connection and not self.closed:
            self.on_closed()

    def close(self) -> None:
        self.closed = True
        if self._udp is not None:
            self._udp.close()
        if self._server is not None:
            self._server.close()
        if self._connection is not None:
            self._connection.close()


class _TcpMedia(asyncio.Protocol):
    def __init__(self, media: _Media) -> None:
        self.media = media
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        if not self.media.attach(transport):
            transport.close()

    def data_received(self, data: bytes) -> None:
        self.media.stream_data(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.media.connection_lost(self.transport)


@dataclass(eq=False)
class CameraStream:
    """One channel's stream on this instance and its consumers' sources."""

    channel_id: str
    device_id: str
    mode: str
    plan: StreamPlan
    viewer_source: Source
    sources: set[Source] = field(default_factory=set)
    call: str | None = None
    media: _Media | None = None
    codec: str | None = None
    frames: int = 0
    bytes: int = 0
    last_keyframe_request: float = -1e9
    _pts_origin: int | None = None
    _pts_last: int = 0
    starting: asyncio.Task[None] | None = None
    key: str = ""  # in StreamManager.streams: the channel id, or a playback's own key
    playback: tuple[int, int] | None = None  # a recording's (start, end), unix seconds

    @property
    def state(self) -> str:
        return self.plan.state

    def timestamp(self, pts: int | None) -> int:
        """The PTS unwrapped (33 bits) and counted from the stream's first frame, in 90 kHz."""
        if pts is None:
            return self._pts_last - (self._pts_origin or 0)
        if self._pts_origin is None:
            self._pts_origin = self._pts_last = pts
        diff = (pts - self._pts_last) % _PTS_WRAP
        self._pts_last += diff if diff < _PTS_WRAP // 2 else diff - _PTS_WRAP
        return self._pts_last - self._pts_origin


class StreamManager:
    """Every camera stream of this instance (see the module documentation)."""

    def __init__(
        self,
        signalling: Signalling,
        *,
        domain: str,
        platform_id: str,
        default_mode: str,
        stall_timeout: float,
        linger: float,
        monotonic: Callable[[], float],
        forwarding: ForwardingTotals | None = None,
    ) -> None:
        self.signalling = signalling
        self.domain = domain
        self.platform_id = platform_id
        self.default_mode = default_mode
        self.stall_timeout = stall_timeout
        self.linger = linger
        self.monotonic = monotonic
        self.forwarding = forwarding or ForwardingTotals()
        self.totals = StreamTotals()
        self.streams: dict[str, CameraStream] = {}
        self._calls: dict[str, CameraStream] = {}
        self._ssrc = itertools.count(1)
        self._wake = asyncio.Event()
        self._background: set[asyncio.Task[None]] = set()

    # -- consumers ------------------------------------------------------------------------------

    def acquire(
        self, channel_id: str, device_id: str, mode: str | None, *, participant: str | None = None
    ) -> tuple[CameraStream, Source]:
        """A consumer of ``channel_id``: the viewers' shared source, or a source of its own that it may
        end, named ``participant`` (a meeting's: the room knows its sources by participant)."""
        stream = self.streams.get(channel_id)
        if stream is None or stream.device_id != device_id:
            stream = CameraStream(
                channel_id,
                device_id,
                mode or self.default_mode,
                StreamPlan(stall_timeout=self.stall_timeout, linger=self.linger),
                Source(f"camera:{channel_id}", "video", "H264", totals=self.forwarding),
                key=channel_id,
            )
            stream.viewer_source._request_keyframe = lambda s=stream: self._keyframe(s)
            stream.sources.add(stream.viewer_source)
            self.streams[channel_id] = stream
        elif mode is not None:
            stream.mode = mode
        source = stream.viewer_source
        if participant is not None:
            source = Source(participant, "video", "H264", totals=self.forwarding)
            source._request_keyframe = lambda s=stream: self._keyframe(s)
            stream.sources.add(source)
        self._act(stream, stream.plan.add_consumer(self.monotonic()))
        return stream, source

    def acquire_playback(
        self, channel_id: str, device_id: str, mode: str | None, start: int, end: int
    ) -> tuple[CameraStream, Source]:
        """A recording of ``channel_id`` from ``start`` to ``end`` (unix seconds), for one viewer: a
        stream of its own (§9.8 ``s=Playback``), played once and ended when the viewer leaves."""
        key = f"{channel_id}/playback/{next(self._ssrc)}"
        stream = CameraStream(
            channel_id,
            device_id,
            mode or self.default_mode,
            StreamPlan(stall_timeout=self.stall_timeout, linger=0.0, once=True),
            Source(f"playback:{key}", "video", "H264", totals=self.forwarding),
            key=key,
            playback=(start, end),
        )
        stream.viewer_source._request_keyframe = lambda s=stream: self._keyframe(s)
        stream.sources.add(stream.viewer_source)
        self.streams[key] = stream
        self._act(stream, stream.plan.add_consumer(self.monotonic()))
        return stream, stream.viewer_source

    def release(self, channel_id: str, source: Source | None = None) -> None:
        """A consumer leaves the stream ``channel_id`` (a channel, or a playback's key)."""
        stream = self.streams.get(channel_id)
        if stream is None:
            return
        if source is not None and source is not stream.viewer_source:
            stream.sources.discard(source)
        self._act(stream, stream.plan.remove_consumer(self.monotonic()))

    # -- time -----------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        found = [d for s in self.streams.values() if (d := s.plan.next_deadline()) is not None]
        return min(found) if found else None

    def tick(self) -> None:
        now = self.monotonic()
        for stream in list(self.streams.values()):
            self._act(stream, stream.plan.tick(now))
            idle = stream.plan.state == "idle" or (stream.playback is not None and stream.plan.state == "finished")
            if stream.plan.consumers == 0 and idle and stream.call is None:
                del self.streams[stream.key]

    async def run(self) -> None:
        """Wake for the plans' deadlines (stall checks, retries, lingering streams)."""
        while True:
            deadline = self.next_deadline()
            self._wake.clear()
            timeout = 1.0 if deadline is None else min(max(deadline - self.monotonic(), 0.0), 1.0)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            try:
                self.tick()
            except Exception:
                log.exception("gb28181_stream_tick_failed")

    # -- actions --------------------------------------------------------------------------------

    def _act(self, stream: CameraStream, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, StopStream):
                self._stop(stream, action.reason)
            else:
                task = asyncio.ensure_future(self._start(stream))
                stream.starting = task
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        self._wake.set()

    def _stop(self, stream: CameraStream, reason: str) -> None:
        if stream.starting is not None and not stream.starting.done():
            stream.starting.cancel()
        if stream.call is not None:
            self._calls.pop(stream.call, None)
            self.signalling.bye(stream.call)
            stream.call = None
        if stream.media is not None:
            stream.media.close()
            stream.media = None
        if reason == "stalled":
            self.totals.restarts += 1
        log.info("gb28181_stream_stopped", channel=stream.channel_id, reason=reason)

    async def _start(self, stream: CameraStream) -> None:
        host = self.signalling.media_host(stream.device_id)
        ssrc = make_ssrc(self.domain, next(self._ssrc), live=stream.playback is None)
        media = _Media(
            stream.mode,
            lambda units: self._units(stream, units),
            lambda: self._media_closed(stream),
            int(ssrc),
        )
        try:
            await media.open(host)
        except OSError as exc:
            log.warning("gb28181_media_bind_failed", channel=stream.channel_id, error=str(exc))
            stream.plan.failed(self.monotonic())
            self._wake.set()
            return
        tcp = stream.mode != "udp"
        offer = GbSdp(
            self.platform_id,
            host,
            media.port,
            connection=host,
            proto="TCP/RTP/AVP" if tcp else "RTP/AVP",
            payloads=(96,),
            rtpmap=((96, "PS/90000"),),
            direction="recvonly",
            setup=("active" if stream.mode == "tcp-active" else "passive") if tcp else "",
            connection_attr="new" if tcp else "",
            ssrc=ssrc,
        )
        if stream.playback is not None:
            # §9.8: a recording is asked for by its channel (u=) and time range (t=, unix seconds).
            start, end = stream.playback
            offer = replace(offer, session_name="Playback", uri=f"{stream.channel_id}:0", time=f"{start} {end}")
        if stream.media is not None:
            stream.media.close()
        stream.media = media
        self.totals.invites += 1
        call = self.signalling.invite(stream.device_id, stream.channel_id, offer)
        if call is None:
            media.close()
            stream.media = None
            stream.plan.failed(self.monotonic())
            self.totals.failures += 1
            self._wake.set()
            return
        stream.call = call
        self._calls[call] = stream
        log.info("gb28181_stream_requested", channel=stream.channel_id, mode=stream.mode, call=call)

    # -- what the SIP edge reports --------------------------------------------------------------

    async def answered(self, call: str, answer: GbSdp) -> None:
        stream = self._calls.get(call)
        if stream is None or stream.media is None:
            return
        self.totals.answered += 1
        if stream.mode == "tcp-active":
            try:
                await stream.media.connect(answer.host, answer.port)
            except OSError as exc:
                log.warning("gb28181_media_connect_failed", channel=stream.channel_id, error=str(exc))
                self._stop(stream, "connect_failed")
                stream.plan.failed(self.monotonic())
                self.totals.failures += 1
                self._wake.set()
                return
        stream.plan.started(self.monotonic())
        self._wake.set()

    def failed(self, call: str, status: int, reason: str) -> None:
        stream = self._calls.pop(call, None)
        if stream is None:
            return
        log.warning("gb28181_stream_refused", channel=stream.channel_id, status=status, reason=reason)
        stream.call = None
        if stream.media is not None:
            stream.media.close()
            stream.media = None
        stream.plan.failed(self.monotonic())
        self.totals.failures += 1
        self._wake.set()

    def ended(self, call: str, reason: str) -> None:
        stream = self._calls.pop(call, None)
        if stream is None:
            return
        log.info("gb28181_stream_ended", channel=stream.channel_id, reason=reason)
        stream.call = None
        if stream.media is not None:
            stream.media.close()
            stream.media = None
        stream.plan.ended(self.monotonic())
        self._wake.set()

    def playback_finished(self, device_id: str, channel_id: str) -> None:
        """The device sent the end of its recording of ``channel_id`` (MediaStatus 121): each playback
        of that channel that plays is over — BYE, and never asked again."""
        for stream in list(self.streams.values()):
            if (
                stream.playback is not None
                and stream.device_id == device_id
                and stream.channel_id == channel_id
                and stream.call is not None
                and stream.plan.state == "playing"
            ):
                self._stop(stream, "finished")
                stream.plan.ended(self.monotonic())
        self._wake.set()

    def _media_closed(self, stream: CameraStream) -> None:
        """The device closed the TCP media connection: end the call and ask again."""
        if stream.call is not None:
            call = stream.call
            self._stop(stream, "media_closed")
            stream.plan.ended(self.monotonic())
            log.info("gb28181_media_closed", channel=stream.channel_id, call=call)
            self._wake.set()

    # -- media ----------------------------------------------------------------------------------

    def _units(self, stream: CameraStream, units: list[AccessUnit]) -> None:
        if not units:
            return
        now = self.monotonic()
        stream.plan.media(now)
        for unit in units:
            stream.codec = unit.codec
            stream.frames += 1
            stream.bytes += len(unit.data)
            self.totals.frames += 1
            self.totals.bytes += len(unit.data)
            if unit.discontinuity:
                self.totals.discontinuities += 1
            if unit.codec != "H264":
                self.totals.h265_frames += unit.codec == "H265"
                continue  # forwarding never transcodes: WebRTC here carries H.264 only
            frame = EncodedFrame(unit.data, stream.timestamp(unit.pts), unit.keyframe, unit.discontinuity)
            for source in list(stream.sources):
                source.deliver(frame)

    def _keyframe(self, stream: CameraStream) -> None:
        now = self.monotonic()
        if stream.call is None or now - stream.last_keyframe_request < KEYFRAME_REQUEST_INTERVAL:
            return
        stream.last_keyframe_request = now
        self.totals.keyframe_requests += 1
        self.signalling.request_keyframe(stream.device_id, stream.channel_id)

    # -- life -----------------------------------------------------------------------------------

    def device_gone(self, device_id: str) -> None:
        for stream in self.streams.values():
            if stream.device_id == device_id and stream.call is not None:
                self.ended(stream.call, "device_gone")

    def close(self) -> None:
        for stream in list(self.streams.values()):
            self._stop(stream, "shutdown")
            for source in list(stream.sources):
                source.end()
        self.streams.clear()
        for task in list(self._background):
            task.cancel()
