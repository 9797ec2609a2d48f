"""The thin asyncio edge of the hotline: UDP and TCP sockets, timers and recordings around the agent.

Everything SIP decides happens in :class:`~dispatchd.channels.hotline.agent.HotlineAgent`; this
module only moves bytes (a datagram, or a message cut from a TCP stream by
:class:`~dispatchd.channels.hotline.sip.StreamFramer`) into it, puts what it returns on the wire,
wakes it when its next timer is due (``ctx.clock.monotonic()``), and hands its call events, in
order, to the call queue (:mod:`dispatchd.channels.hotline.calls`).

A malformed message never reaches further than the agent: it is answered 400 or dropped, counted
in ``dispatchd_sip_malformed_total``, and the next message is taken as if nothing happened. Over
TCP a stream that cannot be framed any more is answered 400 when possible and closed.

Answered calls get a UDP port for the caller's audio, run by the voice switch
(:mod:`dispatchd.channels.hotline.voice.switch`): bridged to the officer's console when the answer
came with a WebRTC offer, and with ``[sip] record`` on recorded, both sides mixed, to
``<data dir>/recordings/<yyyymmdd>/call-<id>.wav``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
from collections import deque
from collections.abc import Awaitable, Iterable
from datetime import datetime
from typing import Any, Final

import structlog

from dispatchd.channels.hotline import announce, calls
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
from dispatchd.channels.hotline.dialer import Dialer
from dispatchd.channels.hotline.sdp import SdpOffer
from dispatchd.channels.hotline.sip import KeepAlive, Request, Response, SipParseError, StreamFramer
from dispatchd.channels.hotline.slots import HOTLINES
from dispatchd.channels.hotline.transaction import Peer, Send, Timers
from dispatchd.channels.hotline.voice.prompts import PromptLibrary
from dispatchd.channels.hotline.voice.switch import MediaOffer, VoiceSwitch, recording_paths
from dispatchd.clock import SystemClock
from dispatchd.context import Context
from dispatchd.store.outage import store_failure
from dispatchd.tasks import drain, every, stop_tasks

log = structlog.get_logger("dispatchd.sip")

_MAX_TCP_CONNECTIONS: Final = 1000
_TIMER_CAP: Final = 0.25  # seconds: the longest the timer loop sleeps while timers are armed
_HELD_ENDS_RETRY: Final = 5.0  # seconds between tries of hang-ups held through an outage
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
            local_port=lambda transport: settings.sip.advertise_port or self.ports.get(transport.lower(), 0),
            config=config,
        )
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: dict[int, asyncio.Transport] = {}
        self._connection_ids = itertools.count(1)
        self._events: asyncio.Queue[object] = asyncio.Queue()
        # Callers' hang-ups the database could not take (an outage): (dialog, reason, when), recorded
        # with their own time once it answers again, so that no call stays "answered" for ever.
        self._held_ends: deque[tuple[str, str, datetime]] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        # Media runs on real time whatever the application clock says: packets arrive in it, and
        # jitter, concealment, prompt pacing and the recording's timeline are measured in it.
        self.voice = VoiceSwitch(SystemClock().monotonic)
        self.prompts = PromptLibrary(directory.config_dir, settings.data.dir / "prompts")
        self.dialer = Dialer(
            self.agent,
            self.voice,
            settings,
            local_host=lambda: (
                settings.sip.advertise_host
                or (self.host if self.host not in ("0.0.0.0", "::") else "127.0.0.1")
            ),
            bind=self.host if self.host not in ("0.0.0.0", "::") else "0.0.0.0",
            monotonic=ctx.clock.monotonic,
            transmit=self.transmit,
            later=self.later,
        )

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
        directory = self.ctx[HOTLINES]
        escalating = self.ctx.settings.voice.escalate_after > 0 and self.dialer.trunk is not None
        if escalating or any(announce.wanted(directory, route) for route in directory.values()):
            loaded = await asyncio.to_thread(self.prompts.preload, directory)
            log.info("voice_prompts_loaded", prompts=loaded)
        self._tasks = [
            asyncio.create_task(self._timer_loop(), name="sip-timers"),
            asyncio.create_task(self._event_loop(), name="sip-events"),
            asyncio.create_task(
                every(self.ctx, _HELD_ENDS_RETRY, self.retry_held_ends, "call_end_retry_failed", logger=log),
                name="sip-held-ends",
            ),
        ]
        log.info("sip_listening", host=self.host, udp=self.ports["udp"], tcp=self.ports["tcp"])
        return dict(self.ports)

    async def close(self) -> None:
        for call in self.agent.calls():
            self.transmit(self.agent.hangup(call, self.ctx.clock.monotonic()))
        await stop_tasks(self._tasks)
        self.dialer.close_all()  # calls out end: whoever waits on them goes on
        await self.voice.close_all()
        await stop_tasks(list(self._background))
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

    def media_host(self, call_key: str) -> str:
        """The address the caller sends its audio to (our SDP's connection address)."""
        settings = self.ctx.settings
        return (
            settings.sip.advertise_host
            or (self.host if self.host not in ("0.0.0.0", "::") else self.agent.local_host(call_key))
            or "127.0.0.1"
        )

    async def answer(self, call_key: str, call_id: int) -> str | None:
        """200 OK to the caller (unless it was answered already, for its prompts), the officer's
        staged leg attached, the recording started; returns the recording's path under the data dir."""
        settings = self.ctx.settings
        if call_key not in self.agent:
            raise CallStateError("call is gone")
        created = self.voice.get(call_key) is None
        bind = self.host if self.host not in ("0.0.0.0", "::") else "0.0.0.0"
        media = await self.voice.open(call_key, bind, media_offer(self.agent.offer_of(call_key)))
        staged = self.voice.take_staged(call_key)
        if self.agent.call_state(call_key) == "ringing":
            direction = "sendrecv" if staged is not None or media.mode != "idle" else "recvonly"
            try:
                effects = self.agent.answer(
                    call_key, self.media_host(call_key), media.port, self.ctx.clock.monotonic(), direction
                )
            except BaseException:
                if staged is not None:
                    self.voice.stage(call_key, staged)  # the service closes it
                if created:
                    await self.voice.close(call_key)
                raise
            self.transmit(effects)
        if staged is not None:
            replaced = media.attach(staged)
            if replaced is not None:
                self.later(replaced.close())
        else:
            media.quiet()  # answered without a console: recorded only
        if not settings.sip.record:
            return None
        mix, legs = recording_paths(
            settings.data.dir, self.ctx.clock.now(), call_id, legs=settings.voice.record_legs
        )
        media.record(mix, legs)
        return str(mix.relative_to(settings.data.dir))

    def later(self, work: Awaitable[Any]) -> None:
        """Run ``work`` in the background (media closing, call-out followers, 叫应 runs); stopped
        with the edge, its failure logged."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("voice_task_failed", error=repr(task.exception()))

    def hangup(self, call_key: str) -> None:
        self.transmit(self.agent.hangup(call_key, self.ctx.clock.monotonic()))

    async def _announce(self, call_key: str, dialled: str, call: dict[str, Any]) -> None:
        """Answer at once and play the greeting, menu and queue announcements, where configured."""
        directory = self.ctx[HOTLINES]
        route = directory.route(dialled)
        offer = self.agent.offer_of(call_key)
        if not announce.wanted(directory, route) or offer is None or call["state"] not in calls.WAITING:
            return
        if self.agent.call_state(call_key) != "ringing":
            return
        bind = self.host if self.host not in ("0.0.0.0", "::") else "0.0.0.0"
        media = await self.voice.open(call_key, bind, media_offer(offer))
        if self.agent.call_state(call_key) != "ringing":  # gone while the port was bound
            await self.voice.close(call_key)
            return
        media.mode = "prompts"
        self.transmit(
            self.agent.answer(
                call_key, self.media_host(call_key), media.port, self.ctx.clock.monotonic(), "sendrecv"
            )
        )
        session = announce.Announcements(self.ctx, media, call, route, directory, self.prompts, self.later)
        session.start()
        log.info("call_announcements", call_id=call["id"], menu=route is not None and route.menu is not None)

    def caller_offer(self, call_key: str) -> SdpOffer | None:
        return self.agent.offer_of(call_key)

    def finished(self, call_key: str) -> None:
        """The call is over: its media (both legs, the recording) is closed."""
        self.later(self.voice.close(call_key))

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
            except Exception as exc:
                if store_failure(self.ctx, exc) is None:  # an outage is logged once, by its tracker
                    log.exception("sip_event_failed", event=type(event).__name__)
                elif isinstance(event, CallEnded | CallAbandoned):
                    self._held_ends.append((event.call, event.reason, self.ctx.clock.now()))
                    log.warning("call_end_held", held=len(self._held_ends))

    async def retry_held_ends(self) -> int:
        """Record the hang-ups held through an outage, oldest first, until the database fails
        again; how many were recorded."""

        async def record(end: tuple[str, str, datetime]) -> None:
            external_id, reason, at = end
            await calls.caller_gone(self.ctx, "sip", external_id, reason, at=at)

        done = await drain(self.ctx, self._held_ends, record, "call_end_failed", logger=log)
        if done:
            log.info("call_ends_recorded", calls=done, still_held=len(self._held_ends))
        return done

    async def _apply(self, event: object) -> None:
        ctx = self.ctx
        if self.dialer.event(event):
            return  # a call out's
        if isinstance(event, CallOffered):
            try:
                call = await calls.offer(
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
            except Exception as exc:
                # Not in the queue, so nobody could answer it: refuse it rather than ring forever.
                # A store outage is answered 503 with Retry-After and logged once, by the tracker.
                if store_failure(ctx, exc) is None:
                    self.hangup(event.call)
                    raise
                retry = max(1, round(ctx.settings.http.retry_after))
                self.transmit(self.agent.refuse_unavailable(event.call, retry, ctx.clock.monotonic()))
                return
            await self._announce(event.call, event.dialled, call)
        elif isinstance(event, CallAbandoned):
            await calls.caller_gone(ctx, "sip", event.call, event.reason)
        elif isinstance(event, CallEnded):
            self.finished(event.call)
            await calls.caller_gone(ctx, "sip", event.call, event.reason)
        elif isinstance(event, CallConfirmed):
            log.debug("call_confirmed")
            media = self.voice.get(event.call)
            if media is not None and event.answer is not None:
                codec = event.answer.audio_codec()
                media.set_remote(
                    event.answer.remote_rtp(), codec[0] if codec else None, event.answer.telephone_event()
                )


def media_offer(offer: SdpOffer | None) -> MediaOffer | None:
    """What the media needs of the caller's SDP offer (None: there was none)."""
    if offer is None:
        return None
    chosen = offer.audio_codec()
    return MediaOffer(
        codec=chosen[0] if chosen is not None else 0,
        dtmf_payload_type=offer.telephone_event(),
        remote=offer.remote_rtp(),
        ptime=offer.packet_time(),
    )


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
