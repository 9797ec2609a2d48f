"""The thin asyncio edge of the hotline: UDP and TCP sockets, timers and recordings around the agent.

Everything SIP decides happens in :class:`~dispatchd.channels.hotline.agent.HotlineAgent`; this
module only moves bytes (a datagram, or a message cut from a TCP stream by
:class:`~dispatchd.channels.hotline.sip.StreamFramer`) into it, puts what it returns on the wire,
wakes it when its next timer is due (``ctx.clock.monotonic()``), and hands its call events, in
order, to the call queue (:mod:`dispatchd.channels.hotline.calls`).

A malformed message never reaches further than the agent: it is answered 400 or dropped, counted
in ``dispatchd_sip_malformed_total``, and the next message is taken as if nothing happened. Over
TCP a stream that cannot be framed any more is answered 400 when possible and closed.

Answered calls get a UDP port for the caller's audio; with ``[sip] record`` on, the G.711 payload
is written as it comes to ``<data dir>/recordings/<yyyymmdd>/call-<id>.wav`` (μ-law or A-law WAV,
readable by any player) — until the voice path to the officer exists, that is where the audio goes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import structlog

from dispatchd.channels.hotline import calls
from dispatchd.channels.hotline.agent import (
    AgentConfig,
    CallAbandoned,
    CallConfirmed,
    CallEnded,
    CallOffered,
    CallStateError,
    Dropped,
    HotlineAgent,
    Rejected,
)
from dispatchd.channels.hotline.sip import KeepAlive, Request, Response, SipParseError, StreamFramer
from dispatchd.channels.hotline.slots import HOTLINES
from dispatchd.channels.hotline.transaction import Peer, Send, Timers
from dispatchd.context import Context
from dispatchd.tasks import stop_tasks

log = structlog.get_logger("dispatchd.sip")

_MAX_TCP_CONNECTIONS: Final = 1000
_TIMER_CAP: Final = 0.25  # seconds: the longest the timer loop sleeps while timers are armed
_KNOWN_KINDS: Final = frozenset({"INVITE", "ACK", "CANCEL", "BYE", "OPTIONS", "REGISTER", "response"})


class SipEdge:
    """One per instance: binds ``[sip] port`` on UDP and TCP and runs the agent. Implements
    :class:`~dispatchd.channels.hotline.slots.SipControl` for the call queue."""

    def __init__(self, ctx: Context) -> None:
        settings = ctx.settings
        self.ctx = ctx
        self.host = settings.sip.host or settings.http.host
        self.ports: dict[str, int] = {}
        directory = ctx[HOTLINES]
        config = AgentConfig(
            user_agent=settings.sip.user_agent,
            advertise_host=settings.sip.advertise_host
            or ("" if self.host in ("0.0.0.0", "::") else self.host),
            max_calls=settings.sip.max_calls,
            timers=Timers(settings.sip.t1, settings.sip.t2, settings.sip.t4),
        )
        self.agent = HotlineAgent(
            accepts=lambda dialled: directory.route(dialled) is not None,
            local_port=lambda transport: self.ports.get(transport.lower(), 0),
            config=config,
        )
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: dict[int, asyncio.Transport] = {}
        self._connection_ids = itertools.count(1)
        self._events: asyncio.Queue[object] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._recorders: dict[str, RtpRecorder] = {}

    # -- life -------------------------------------------------------------------------------

    async def start(self, port: int) -> dict[str, int]:
        """Bind UDP and TCP on ``port`` (the same number for both; with 0, a free one for both)."""
        loop = asyncio.get_running_loop()
        for attempt in range(20):
            udp, _ = await loop.create_datagram_endpoint(
                lambda: _UdpProtocol(self), local_addr=(self.host, port)
            )
            bound = udp.get_extra_info("sockname")[1]
            try:
                self._tcp = await loop.create_server(
                    lambda: _TcpProtocol(self), self.host, bound, reuse_address=True
                )
            except OSError as exc:
                udp.close()
                if port == 0 and exc.errno == errno.EADDRINUSE and attempt < 19:
                    continue
                raise
            self._udp = udp
            self.ports = {"udp": bound, "tcp": bound}
            break
        self._tasks = [
            asyncio.create_task(self._timer_loop(), name="sip-timers"),
            asyncio.create_task(self._event_loop(), name="sip-events"),
        ]
        log.info("sip_listening", host=self.host, udp=self.ports["udp"], tcp=self.ports["tcp"])
        return dict(self.ports)

    async def close(self) -> None:
        for call in self.agent.calls():
            self.transmit(self.agent.hangup(call, self.ctx.clock.monotonic()))
        await stop_tasks(self._tasks)
        for recorder in list(self._recorders.values()):
            recorder.close()
        self._recorders.clear()
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            for transport in list(self._connections.values()):
                transport.close()
            await self._tcp.wait_closed()
        log.info("sip_stopped")

    # -- input --------------------------------------------------------------------------------

    def receive(self, data: bytes, peer: Peer) -> None:
        """One datagram or one framed TCP message: into the agent, its effects out."""
        metrics = self.ctx.metrics
        kind = "response" if data[:4] == b"SIP/" else data.split(b" ", 1)[0].decode("ascii", "replace")
        metrics.sip_messages.labels(peer.transport, kind if kind in _KNOWN_KINDS else "other").inc()
        try:
            effects = self.agent.receive(data, peer, self.ctx.clock.monotonic())
        except Exception:  # the stack never goes down for one message
            log.exception("sip_message_failed", transport=peer.transport)
            metrics.sip_malformed.labels(peer.transport, "dropped").inc()
            return
        self.transmit(effects)

    def malformed_stream(self, error: SipParseError, peer: Peer) -> None:
        self.transmit(self.agent.malformed(error, peer))

    def transmit(self, effects: Iterable[object]) -> None:
        metrics = self.ctx.metrics
        for effect in effects:
            if isinstance(effect, Send):
                self._send(effect.message, effect.peer)
            elif isinstance(effect, Dropped | Rejected):
                outcome = "dropped" if isinstance(effect, Dropped) else "answered_400"
                metrics.sip_malformed.labels(effect.transport, outcome).inc()
                metrics.rejected_input.labels("sip").inc()
                log.debug("sip_malformed", transport=effect.transport, outcome=outcome, reason=effect.reason)
            else:
                self._events.put_nowait(effect)
        self._wake.set()

    def _send(self, message: Request | Response, peer: Peer) -> None:
        data = message.encode()
        if peer.reliable:
            transport = self._connections.get(peer.connection)
            if transport is None or transport.is_closing():
                log.debug("sip_connection_gone", connection=peer.connection)
                return
            transport.write(data)
        elif self._udp is not None:
            self._udp.sendto(data, (peer.host, peer.port))

    # -- TCP connections ------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> int | None:
        if len(self._connections) >= _MAX_TCP_CONNECTIONS or not self._address_admitted(transport):
            transport.close()
            return None
        connection = next(self._connection_ids)
        self._connections[connection] = transport
        return connection

    def _address_admitted(self, transport: asyncio.Transport) -> bool:
        """Fewer than ``[sip] max_connections_per_address`` open from this peer's address (0: no cap)."""
        cap = self.ctx.settings.sip.max_connections_per_address
        if not cap:
            return True
        address = transport.get_extra_info("peername")[0]
        open_here = sum(1 for t in self._connections.values() if t.get_extra_info("peername")[0] == address)
        if open_here < cap:
            return True
        self.ctx.metrics.http_cut.labels("sip", "per_address_cap").inc()
        return False

    def connection_lost(self, connection: int) -> None:
        self._connections.pop(connection, None)

    # -- commands from the call queue (SipControl) ----------------------------------------------

    async def answer(self, call_key: str, call_id: int) -> str | None:
        settings = self.ctx.settings
        media_host = (
            settings.sip.advertise_host
            or (self.host if self.host not in ("0.0.0.0", "::") else self.agent.local_host(call_key))
            or "127.0.0.1"
        )
        if call_key not in self.agent:
            raise CallStateError("call is gone")
        path: Path | None = None
        if settings.sip.record:
            day = self.ctx.clock.now().strftime("%Y%m%d")
            path = settings.data.dir / "recordings" / day / f"call-{call_id}.wav"
        recorder = RtpRecorder(path)
        loop = asyncio.get_running_loop()
        bind = self.host if self.host not in ("0.0.0.0", "::") else "0.0.0.0"
        transport, _ = await loop.create_datagram_endpoint(lambda: recorder, local_addr=(bind, 0))
        try:
            effects = self.agent.answer(
                call_key, media_host, transport.get_extra_info("sockname")[1], self.ctx.clock.monotonic()
            )
        except BaseException:
            recorder.close()
            raise
        self._recorders[call_key] = recorder
        self.transmit(effects)
        if path is None:
            return None
        return str(path.relative_to(settings.data.dir))

    def hangup(self, call_key: str) -> None:
        self.transmit(self.agent.hangup(call_key, self.ctx.clock.monotonic()))

    def finished(self, call_key: str) -> None:
        recorder = self._recorders.pop(call_key, None)
        if recorder is not None:
            recorder.close()

    # -- loops --------------------------------------------------------------------------------

    async def _timer_loop(self) -> None:
        clock = self.ctx.clock
        while True:
            deadline = self.agent.next_deadline()
            self._wake.clear()
            timeout = None if deadline is None else min(max(deadline - clock.monotonic(), 0.0), _TIMER_CAP)
            # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancellation that
            # arrives together with the wake-up, and this loop would then wait forever.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            try:
                self.transmit(self.agent.tick(clock.monotonic()))
            except Exception:
                log.exception("sip_timer_failed")

    async def _event_loop(self) -> None:
        """Call events in the order the agent produced them, each one database transaction."""
        while True:
            event = await self._events.get()
            try:
                await self._apply(event)
            except Exception:
                log.exception("sip_event_failed", event=type(event).__name__)

    async def _apply(self, event: object) -> None:
        ctx = self.ctx
        if isinstance(event, CallOffered):
            try:
                await calls.offer(
                    ctx,
                    calls.NewCall(
                        source="sip",
                        external_id=event.call,
                        caller=event.caller,
                        caller_name=event.caller_name,
                        dialled=event.dialled,
                        instance_id=ctx.instance_id,
                    ),
                )
            except Exception:
                # Not in the queue, so nobody could answer it: refuse it rather than ring forever.
                self.hangup(event.call)
                raise
        elif isinstance(event, CallAbandoned):
            await calls.caller_gone(ctx, "sip", event.call, event.reason)
        elif isinstance(event, CallEnded):
            self.finished(event.call)
            await calls.caller_gone(ctx, "sip", event.call, event.reason)
        elif isinstance(event, CallConfirmed):
            log.debug("call_confirmed")


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, edge: SipEdge) -> None:
        self.edge = edge

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.edge.receive(data, Peer("UDP", str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("sip_udp_error", error=str(exc))  # ICMP port unreachable for a gone caller


class _TcpProtocol(asyncio.Protocol):
    """One TCP connection: RFC 3261 §18.3 framing by Content-Length."""

    def __init__(self, edge: SipEdge) -> None:
        self.edge = edge
        self.framer = StreamFramer()
        self.transport: asyncio.Transport | None = None
        self.peer: Peer | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        connection = self.edge.connection_made(transport)
        if connection is None:
            return
        host, port = transport.get_extra_info("peername")[:2]
        self.peer = Peer("TCP", str(host), int(port), connection)

    def data_received(self, data: bytes) -> None:
        if self.peer is None or self.transport is None:
            return
        try:
            frames = self.framer.feed(data)
        except SipParseError as exc:
            self.edge.malformed_stream(exc, self.peer)
            self.transport.close()
            return
        for frame in frames:
            if isinstance(frame, KeepAlive):
                self.transport.write(b"\r\n")  # RFC 5626 §3.5.1 pong
            else:
                self.edge.receive(frame, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.edge.connection_lost(self.peer.connection)


# ---- recording ----------------------------------------------------------------------------------

_WAV_FORMAT: Final = {0: 7, 8: 6}  # RTP payload type → WAVE format tag: PCMU → μ-law (7), PCMA → A-law (6)
_MAX_RECORDING_BYTES: Final = 8000 * 3600 * 4  # four hours of G.711


class RtpRecorder(asyncio.DatagramProtocol):
    """Receives the caller's RTP (RFC 3550) and writes its G.711 payload into a WAV file.

    The first PCMU or PCMA packet fixes the format; telephone-events and other payload types are
    skipped; a repeated sequence number is written once. No decoding: WAV carries G.711 as is.
    """

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._file: Any = None
        self._format: int | None = None
        self._payload_type: int | None = None
        self._written = 0
        self._recent: list[int] = []
        self.transport: asyncio.BaseTransport | None = None
        self.packets = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (CPython's UDP transport is not an asyncio.DatagramTransport subclass: keep it as it is.)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        if len(data) < 12 or data[0] >> 6 != 2:
            return
        payload_type = data[1] & 0x7F
        if payload_type not in _WAV_FORMAT or (self._payload_type not in (None, payload_type)):
            return
        sequence = struct.unpack("!H", data[2:4])[0]
        if sequence in self._recent:
            return
        self._recent = [*self._recent[-63:], sequence]
        offset = 12 + 4 * (data[0] & 0x0F)
        if data[0] & 0x10 and len(data) >= offset + 4:  # header extension
            offset += 4 + 4 * struct.unpack("!H", data[offset + 2 : offset + 4])[0]
        end = len(data) - (data[-1] if data[0] & 0x20 else 0)  # padding
        payload = data[offset:end]
        self.packets += 1
        if self.path is None or not payload or self._written + len(payload) > _MAX_RECORDING_BYTES:
            return
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self.path.open("wb")
            self._file.write(b"\0" * 58)
            self._payload_type = payload_type
            self._format = _WAV_FORMAT[payload_type]
        self._file.write(payload)
        self._written += len(payload)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        if self._file is not None:
            self._file.seek(0)
            self._file.write(wav_header(self._format or 7, self._written))
            self._file.close()
            self._file = None


def wav_header(format_tag: int, data_bytes: int) -> bytes:
    """A 58-byte WAVE header for 8 kHz mono 8-bit G.711 (a non-PCM format: fmt of 18 bytes and fact)."""
    fmt = struct.pack("<HHIIHHH", format_tag, 1, 8000, 8000, 1, 8, 0)
    return (
        b"RIFF"
        + struct.pack("<I", 4 + (8 + len(fmt)) + 12 + 8 + data_bytes)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<I", len(fmt))
        + fmt
        + b"fact"
        + struct.pack("<II", 4, data_bytes)
        + b"data"
        + struct.pack("<I", data_bytes)
    )
