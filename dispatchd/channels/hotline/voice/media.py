"""One call's media on this instance: the caller's RTP, the far leg, prompts, the recording.

:class:`CallMedia` is the asyncio edge around the pure pieces. The caller's leg is a UDP socket
speaking plain RTP (RFC 3550) in the G.711 law of the caller's offer, sent where the SDP says
until the caller's own packets show where they really come from (symmetric RTP, RFC 4961 — a
caller behind NAT is reached at its public address). The far leg is the officer's browser
(:mod:`dispatchd.channels.hotline.voice.webrtc`) or another SIP leg; both directions go through
a :class:`~dispatchd.channels.hotline.voice.jitter.JitterBuffer` that passes in-order packets on
at once, and the payload is never decoded on the way (a law conversion is one table lookup).

While no officer speaks — before the answer, on hold, during a transfer — the caller hears the
:class:`~dispatchd.channels.hotline.voice.player.Player`. RFC 4733 keys from the caller go to
``on_key`` (the IVR menu, the console). The recording gets what each side said, as it is passed
on, mixed by :class:`~dispatchd.channels.hotline.voice.mixer.Mixer`.

One :class:`MediaClock` per instance ticks every call every 20 ms (concealment, prompts, the
recording's flush): one wake-up for all calls instead of one per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol

import structlog

from dispatchd.channels.hotline.voice import dtmf, g711
from dispatchd.channels.hotline.voice.jitter import JitterBuffer, OutFrame
from dispatchd.channels.hotline.voice.mixer import Mixer
from dispatchd.channels.hotline.voice.player import Player
from dispatchd.channels.hotline.voice.rtp import RtpStream, is_rtcp
from dispatchd.channels.hotline.voice.wav import WavWriter

log = structlog.get_logger("dispatchd.voice")

__all__ = ["CallMedia", "CallRecorder", "FarLeg", "MediaClock", "MediaLink", "MediaStats", "link"]

TICK: Final = 0.02
_HEADER: Final = struct.Struct("!BBHII")
_FLUSH_EVERY: Final = 1.0


class FarLeg(Protocol):
    """The other side of the bridge: the officer's browser, or a SIP leg to a department.

    ``codec``: the G.711 payload type it speaks. ``on_packet(payload_type, sequence, timestamp,
    ssrc, marker, payload)`` is set by the bridge; ``on_gone`` when the leg dropped by itself.
    """

    codec: int
    on_packet: Callable[[int, int, int, int, bool, bytes], None] | None
    on_gone: Callable[[], None] | None

    def send(self, frame: OutFrame, now: float) -> None: ...

    def notify(self, message: dict[str, Any]) -> None: ...

    async def close(self) -> None: ...


@dataclass(slots=True)
class MediaStats:
    from_caller: int = 0
    to_caller: int = 0
    from_far: int = 0
    to_far: int = 0
    keys: list[str] = field(default_factory=list)


class CallRecorder:
    """The mixed file of both sides (16-bit PCM WAV), and per side on request, written as it goes."""

    def __init__(self, mix: Path, legs: dict[str, Path] | None, codec: int, start: float) -> None:
        self.codec = codec
        self.mixer = Mixer(start)
        self.mix = WavWriter(mix)
        self.legs = {name: WavWriter(path) for name, path in (legs or {}).items()}
        self._flushed = start

    def add(self, leg: str, payload: bytes, now: float) -> None:
        self.mixer.add(leg, g711.decode(payload, self.codec), now)

    def tick(self, now: float) -> None:
        if now - self._flushed >= _FLUSH_EVERY:
            self._write(*self.mixer.flush(now))
            self._flushed = now

    def close(self) -> None:
        self._write(*self.mixer.flush())
        self.mix.close()
        for writer in self.legs.values():
            writer.close()

    def _write(self, mixed: Any, per_leg: dict[str, Any]) -> None:
        self.mix.write_samples(mixed)
        for name, writer in self.legs.items():
            writer.write_samples(per_leg[name])


class _CallerSocket(asyncio.DatagramProtocol):
    def __init__(self, media: CallMedia) -> None:
        self.media = media
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # CPython's UDP transport

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.media.from_caller(data, (str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        pass  # ICMP port unreachable from a caller gone: the SIP side notices


class CallMedia:
    """The media of one call (see the module documentation)."""

    def __init__(
        self,
        key: str,
        *,
        codec: int,
        ptime_samples: int = 160,
        dtmf_payload_type: int | None = None,
        remote: tuple[str, int] | None = None,
        clock: Callable[[], float],
    ) -> None:
        self.key = key
        self.codec = g711.payload_type(codec)
        self.ptime_samples = ptime_samples
        self.dtmf_payload_type = dtmf_payload_type
        self.remote = remote
        self.latched = False
        self.clock = clock
        self.mode = "idle"  # idle (recording only), prompts, bridged, hold
        self.far: FarLeg | None = None
        self.recorder: CallRecorder | None = None
        self.on_key: Callable[[str], None] | None = None  # RFC 4733 keys from the caller
        self.on_tick: Callable[[float], None] | None = None  # the announcements, while they play
        self.on_far_gone: Callable[[], None] | None = None
        self.player = Player(ptime_samples, silence=g711.silence(1, self.codec))
        self.far_player: Player | None = None  # ringback to the officer while a call out rings
        self.stats = MediaStats()
        self.from_caller_buffer = JitterBuffer(self.codec, 160)
        self.from_far_buffer = JitterBuffer(self.codec, ptime_samples)
        self.stream = RtpStream(self.codec, secrets.randbits(32), secrets.randbits(16), secrets.randbits(32))
        self._keys = dtmf.DtmfReceiver()
        self._socket: _CallerSocket | None = None
        self._outgoing_events: list[tuple[float, bytes]] = []  # (due, packet): DTMF to the caller
        self._keys_until = 0.0
        self.closed = False

    # -- life -------------------------------------------------------------------------------

    async def open(self, host: str) -> int:
        """Bind the caller's RTP port on ``host``; returns the port."""
        loop = asyncio.get_running_loop()
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: _CallerSocket(self), local_addr=(host, 0)
        )
        self._socket = protocol
        port: int = transport.get_extra_info("sockname")[1]
        return port

    @property
    def port(self) -> int:
        if self._socket is None or self._socket.transport is None:
            return 0
        port: int = self._socket.transport.get_extra_info("sockname")[1]
        return port

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        far, self.far = self.far, None
        if far is not None:
            far.notify({"type": "ended"})
            await far.close()
        if self.recorder is not None:
            self.recorder.close()
            self.recorder = None
        if self._socket is not None and self._socket.transport is not None:
            self._socket.transport.close()

    # -- commands ---------------------------------------------------------------------------

    def set_remote(
        self, remote: tuple[str, int] | None, codec: int | None = None, dtmf_pt: int | None = None
    ) -> None:
        """The caller's SDP said where its media goes (from an answer that came in the ACK)."""
        if remote is not None and not self.latched:
            self.remote = remote
        if dtmf_pt is not None:
            self.dtmf_payload_type = dtmf_pt
        if codec is not None and codec != self.codec:
            self.codec = g711.payload_type(codec)
            if self.far is not None:
                self.far.codec = self.codec  # the far leg converts to its own law
            self.from_caller_buffer = JitterBuffer(self.codec, 160)
            self.from_far_buffer = JitterBuffer(self.codec, self.ptime_samples)
            self.stream.payload_type = self.codec
            self.player = Player(self.ptime_samples, silence=g711.silence(1, self.codec))

    def record(self, mix: Path, legs: dict[str, Path] | None = None) -> None:
        if self.recorder is None:
            self.recorder = CallRecorder(mix, legs, self.codec, self.clock())

    def play(self, clips: list[tuple[str, bytes]], loop: bytes = b"", *, replace: bool = True) -> None:
        """Prompts for the caller (their G.711 in the caller's law), then ``loop`` (music, tone)."""
        self.player.play(clips, replace=replace)
        self.player.loop(loop)
        if self.mode in ("idle", "bridged") and self.far is None:
            self.mode = "prompts"
            self.player.restart(self.clock())

    def attach(self, far: FarLeg) -> FarLeg | None:
        """Bridge the caller to ``far``; returns the leg it replaces (to be closed by the caller)."""
        old = self.far
        if old is not None:
            old.on_packet = old.on_gone = None
        self.on_tick = self.on_key = None  # an officer took over: the announcements are over
        self.far = far
        far.on_packet = self.from_far
        far.on_gone = self._far_gone
        self.from_far_buffer = JitterBuffer(self.codec, self.ptime_samples)
        self.mode = "bridged"
        self.player.play([])
        return old

    def ringback(self, tone: bytes) -> None:
        """The officer hears ``tone`` (looped) until :meth:`stop_ringback` (a call out ringing)."""
        player = Player(160, silence=g711.silence(1, self.codec))
        player.loop(tone)
        player.restart(self.clock())
        self.far_player = player

    def stop_ringback(self) -> None:
        self.far_player = None

    def quiet(self) -> None:
        """Answered for the recording only (no console): the announcements stop, nothing is played."""
        self.on_tick = self.on_key = None
        if self.far is None:
            self.mode = "idle"
            self.player.play([])
            self.player.loop(b"")

    def detach(self, *, hold_music: bytes = b"") -> FarLeg | None:
        """The far leg leaves (a transfer): the caller hears ``hold_music`` until the next attach."""
        far, self.far = self.far, None
        if far is not None:
            far.on_packet = far.on_gone = None
        self.mode = "hold"
        self.player.play([])
        self.player.loop(hold_music)
        self.player.restart(self.clock())
        return far

    def hold(self, on: bool, music: bytes = b"") -> None:
        """Hold: the caller hears ``music``, the officer nothing; resume: bridged again."""
        if on and self.mode == "bridged":
            self.mode = "hold"
            self.player.play([])
            self.player.loop(music)
            self.player.restart(self.clock())
        elif not on and self.mode == "hold" and self.far is not None:
            self.mode = "bridged"
        if self.far is not None:
            self.far.notify({"type": "hold", "on": self.mode == "hold"})

    def send_key(self, key: str) -> None:
        """An RFC 4733 key train to the caller (the officer dialling into a department's menu)."""
        if self.dtmf_payload_type is None:
            return
        now = max(self.clock(), self._keys_until)
        start = self.stream.now_timestamp(now)
        train = dtmf.event_packets(key)
        updates = len(train) - dtmf.END_COPIES
        for i, (marker, payload) in enumerate(train):
            due = now + 0.05 * min(i, updates)  # an update every 50 ms, the three ends together
            packet = self.stream.event_packet(start, payload, marker, self.dtmf_payload_type)
            self._outgoing_events.append((due, packet))
        self._keys_until = now + 0.05 * updates + 0.1  # the next key after a pause (Q.24: ≥ 40 ms)

    # -- media in ---------------------------------------------------------------------------

    def from_caller(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.closed or len(data) < 12 or is_rtcp(data):
            return
        first, second, sequence, timestamp, ssrc = _HEADER.unpack_from(data)
        if first >> 6 != 2:
            return
        if not self.latched:
            self.remote, self.latched = addr, True  # RFC 4961: answer where the caller sends from
        payload_type = second & 0x7F
        offset = 12 + 4 * (first & 0x0F)
        if first & 0x10:
            if len(data) < offset + 4:
                return
            offset += 4 + 4 * int.from_bytes(data[offset + 2 : offset + 4], "big")
        end = len(data) - (data[-1] if first & 0x20 else 0)
        payload = data[offset:end]
        now = self.clock()
        if payload_type == self.dtmf_payload_type:
            press = self._keys.receive(ssrc, timestamp, payload)
            if press is not None:
                self.stats.keys.append(press.key)
                if self.far is not None:
                    self.far.notify({"type": "dtmf", "key": press.key})
                if self.on_key is not None:
                    self.on_key(press.key)
            return
        if payload_type != self.codec:
            return
        self.stats.from_caller += 1
        for frame in self.from_caller_buffer.push(
            ssrc, sequence, timestamp, payload, now, bool(second & 0x80)
        ):
            self._caller_frame(frame, now)

    def from_far(
        self, payload_type: int, sequence: int, timestamp: int, ssrc: int, marker: bool, payload: bytes
    ) -> None:
        if self.closed:
            return
        if payload_type != self.codec:
            try:
                payload = g711.transcode(payload, payload_type, self.codec)
            except ValueError:
                return
        self.stats.from_far += 1
        now = self.clock()
        for frame in self.from_far_buffer.push(ssrc, sequence, timestamp, payload, now, marker):
            self._far_frame(frame, now)

    def _caller_frame(self, frame: OutFrame, now: float) -> None:
        if self.recorder is not None:
            self.recorder.add("caller", frame.payload, now)
        if self.mode == "bridged" and self.far is not None:
            self.far.send(frame, now)
            self.stats.to_far += 1

    def _far_frame(self, frame: OutFrame, now: float) -> None:
        if self.mode != "bridged":
            return  # on hold the officer is not heard
        if self.recorder is not None:
            self.recorder.add("officer", frame.payload, now)
        self._send(self.from_far_buffer, frame.timestamp, frame.payload, now, frame.marker)

    def _send(self, source: object, timestamp: int, payload: bytes, now: float, marker: bool = False) -> None:
        socket = self._socket
        if socket is None or socket.transport is None or self.remote is None:
            return
        socket.transport.sendto(self.stream.packet(source, timestamp, payload, now, marker), self.remote)
        self.stats.to_caller += 1

    def _far_gone(self) -> None:
        log.info("voice_far_leg_gone", call=self.key)
        if self.on_far_gone is not None:
            self.on_far_gone()

    # -- time -------------------------------------------------------------------------------

    def tick(self, now: float) -> None:
        if self.closed:
            return
        for frame in self.from_caller_buffer.tick(now):
            self._caller_frame(frame, now)
        for frame in self.from_far_buffer.tick(now):
            self._far_frame(frame, now)
        if self.on_tick is not None and self.mode == "prompts":
            self.on_tick(now)
        if self.far_player is not None and self.far is not None:
            for timestamp, payload in self.far_player.due(now):
                self.far.send(OutFrame(timestamp, payload), now)
        if self.mode in ("prompts", "hold"):
            for timestamp, payload in self.player.due(now):
                self._send(self.player, timestamp, payload, now)  # prompts and music: not recorded
        if self._outgoing_events:
            due = [e for e in self._outgoing_events if e[0] <= now]
            self._outgoing_events = [e for e in self._outgoing_events if e[0] > now]
            socket = self._socket
            if socket is not None and socket.transport is not None and self.remote is not None:
                for _, packet in due:
                    socket.transport.sendto(packet, self.remote)
        if self.recorder is not None:
            self.recorder.tick(now)


class MediaClock:
    """Ticks every registered call every :data:`TICK` seconds (one task for the instance)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.calls: set[CallMedia] = set()
        self._task: asyncio.Task[None] | None = None

    def add(self, media: CallMedia) -> None:
        self.calls.add(media)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="voice-clock")

    def discard(self, media: CallMedia) -> None:
        self.calls.discard(media)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while self.calls:
            next_at += TICK
            await asyncio.sleep(max(next_at - loop.time(), 0.0))
            if loop.time() - next_at > 0.5:
                next_at = loop.time()  # the loop was stalled: do not try to catch up every tick
            now = self.clock()
            for media in list(self.calls):
                try:
                    media.tick(now)
                except Exception:
                    log.exception("voice_tick_failed", call=media.key)

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


class MediaLink:
    """A far leg that is another call's SIP side: two calls' media bridged to each other (a caller
    transferred to a department's number). What this call's caller says goes out on the other call
    as if from its officer; nothing is decoded (a law conversion is one table lookup there)."""

    def __init__(self, other: CallMedia, codec: int, on_close: Callable[[], None] | None = None) -> None:
        self.other = other
        self.codec = codec  # the law of the call it is attached to (what it is handed)
        self.on_packet: Callable[[int, int, int, int, bool, bytes], None] | None = None
        self.on_gone: Callable[[], None] | None = None
        self.on_close = on_close
        self._ssrc = secrets.randbits(32)
        self._sequence = secrets.randbits(16)
        self.closed = False

    def send(self, frame: OutFrame, now: float) -> None:
        if self.closed:
            return
        self._sequence = (self._sequence + 1) & 0xFFFF
        self.other.from_far(
            self.codec, self._sequence, frame.timestamp, self._ssrc, frame.marker, frame.payload
        )

    def notify(self, message: dict[str, Any]) -> None:
        pass

    async def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.on_close is not None:
            self.on_close()


def link(
    a: CallMedia, b: CallMedia, *, on_a_closed: Callable[[], None], on_b_closed: Callable[[], None]
) -> None:
    """Bridge two calls' media both ways; closing one side's link calls its ``on_…_closed``."""
    a.attach(MediaLink(b, a.codec, on_close=on_a_closed))
    b.attach(MediaLink(a, b.codec, on_close=on_b_closed))
