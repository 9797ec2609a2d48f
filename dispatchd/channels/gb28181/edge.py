"""The thin asyncio edge of the GB/T 28181 platform: the SIP sockets, timers and events around the agent.

Everything SIP decides happens in :class:`~dispatchd.channels.gb28181.agent.Gb28181Agent`; this
module binds ``[gb28181] port`` on UDP and TCP, moves datagrams and framed TCP messages into the
agent, puts what it returns on the wire, wakes it when its next timer is due (the context's clock),
and applies its device events, in order, to PostgreSQL (:mod:`.service`) and its stream events to
the :class:`~dispatchd.channels.gb28181.streams.StreamManager`.

A device that misbehaves — a wrong password, a flood, malformed SIP or XML, text in an unexpected
encoding, media that stops — is answered or dropped by the agent and counted here; nothing it sends
reaches further, and every other device is served as before.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Final

import structlog

from dispatchd.channels.gb28181 import alarms, manscdp, service
from dispatchd.channels.gb28181.agent import (
    AgentConfig,
    AlarmReceived,
    AuthFailed,
    CatalogChanged,
    CatalogReceived,
    DeviceInfoReceived,
    DeviceOffline,
    DeviceOnline,
    DeviceRegistered,
    DeviceUnregistered,
    Dropped,
    Gb28181Agent,
    PlaybackFinished,
    PositionReceived,
    RecordsReceived,
    RequestFailed,
    StreamAnswered,
    StreamEnded,
    StreamFailed,
    SubscriptionState,
)
from dispatchd.channels.gb28181.digest import Credentials
from dispatchd.channels.gb28181.registry import Registry
from dispatchd.channels.gb28181.sdp import GbSdp
from dispatchd.channels.gb28181.streams import StreamManager
from dispatchd.channels.hotline.sip import KeepAlive, Request, Response, SipParseError, StreamFramer
from dispatchd.channels.hotline.transaction import Peer, Send, Timers
from dispatchd.context import Context
from dispatchd.store.outage import store_failure
from dispatchd.tasks import drain, every, stop_tasks

log = structlog.get_logger("dispatchd.gb28181")

_MAX_TCP_CONNECTIONS: Final = 10_000
_TIMER_CAP: Final = 0.25
_CREDENTIALS_REFRESH: Final = 10.0
# Alarms kept while PostgreSQL is away (the oldest goes past this), and seconds between tries.
ALARMS_HELD: Final = 1000
_HELD_ALARMS_RETRY: Final = 5.0
# Seconds a device has to answer a recordings query in full, and the most recordings kept of one.
RECORDS_TIMEOUT: Final = 10.0
MAX_RECORDS: Final = 10_000
_SEEN_FLUSH: Final = 30.0
#: GB/T 28181 devices keep Beijing time (§9.1.2.1 Date, §9.10 time synchronisation).
BEIJING: Final = timezone(timedelta(hours=8))


class EdgeTotals:
    """Counters of the edge, plain ints read when metrics are scraped."""

    def __init__(self) -> None:
        self.messages: Counter[tuple[str, str]] = Counter()  # (transport, method or "response")
        self.dropped: Counter[str] = Counter()  # reason
        self.auth_failures = 0
        self.alarms = 0
        self.alarm_kinds: Counter[str] = Counter()  # case, fault, note
        self.catalogs = 0
        self.subscriptions: Counter[tuple[str, str]] = Counter()  # (event, accepted/refused)


@dataclass
class RecordSearch:
    """A recordings query's answer as its parts arrive (a device may split it, each part naming the
    total ``SumNum``)."""

    done: asyncio.Future[None]
    total: int | None = None
    records: list[manscdp.RecordItem] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.total is not None and len(self.records) >= self.total

    def add(self, part: manscdp.RecordInfo) -> None:
        self.total = part.sum_num
        self.records.extend(part.items[: max(0, MAX_RECORDS - len(self.records))])
        # Whole, or as many as are kept (a device's SumNum is not taken for a size to fill).
        if (self.complete or len(self.records) >= MAX_RECORDS) and not self.done.done():
            self.done.set_result(None)


class GbEdge:
    """One per instance: the SIP side of the platform (see the module documentation)."""

    def __init__(self, ctx: Context) -> None:
        settings = ctx.settings.gb28181
        self.ctx = ctx
        self.settings = settings
        self.host = settings.host or ctx.settings.http.host
        self.ports: dict[str, int] = {}
        self.credentials: dict[str, Credentials] = {}
        self.totals = EdgeTotals()
        self.registry = Registry(
            settings.domain,
            shared_password=settings.password,
            credentials_of=self.credentials.get,
            keepalive_interval=settings.keepalive_interval,
            missed_keepalives=settings.missed_keepalives,
            max_expires=settings.register_expires,
            max_devices=settings.max_devices,
        )
        advertise = settings.advertise_host or (
            self.host if self.host not in ("0.0.0.0", "::") else "127.0.0.1"
        )
        self.agent = Gb28181Agent(
            self.registry,
            AgentConfig(
                settings.platform_id,
                settings.domain,
                host=advertise,
                user_agent=settings.user_agent,
                timers=Timers(settings.t1, max(4.0, settings.t1 * 8), 5.0),
                invite_timeout=settings.invite_timeout,
                rate=settings.device_rate,
                burst=settings.device_burst,
            ),
            local_port=lambda transport: self.ports.get(transport.lower(), 0),
        )
        self.streams = StreamManager(
            self,
            domain=settings.domain,
            platform_id=settings.platform_id,
            default_mode=settings.media_transport,
            stall_timeout=settings.stall_timeout,
            linger=settings.linger,
            monotonic=ctx.clock.monotonic,
        )
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self._connections: dict[int, asyncio.Transport] = {}
        self._connection_ids = itertools.count(1)
        self._events: asyncio.Queue[object] = asyncio.Queue()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._seen: set[str] = set()
        self._subscribable: dict[tuple[str, str], bool] = {}
        # Recordings queries waiting for their answers, by (device, SN).
        self._searches: dict[tuple[str, int], RecordSearch] = {}
        # Alarms that came while PostgreSQL was away: their cases are opened when it answers again.
        self._held_alarms: deque[AlarmReceived] = deque()

    # -- life -------------------------------------------------------------------------------

    async def start(self, port: int) -> dict[str, int]:
        """Bind UDP and TCP on ``port`` (with 0, one free number for both)."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            self.credentials.update(await service.own_credentials(self.ctx))
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
            asyncio.create_task(self._timer_loop(), name="gb28181-timers"),
            asyncio.create_task(self._event_loop(), name="gb28181-events"),
            asyncio.create_task(self.streams.run(), name="gb28181-streams"),
            asyncio.create_task(self._housekeeping(), name="gb28181-housekeeping"),
            asyncio.create_task(
                every(self.ctx, _HELD_ALARMS_RETRY, self.retry_held_alarms, "gb28181_held_alarms_failed", wait_first=True, logger=log),
                name="gb28181-held-alarms",
            ),
        ]
        log.info("gb28181_listening", host=self.host, udp=self.ports["udp"], tcp=self.ports["tcp"])
        return dict(self.ports)

    async def close(self) -> None:
        self.streams.close()
        now = self.ctx.clock.monotonic()
        for call in self.agent.calls():
            self.transmit(self.agent.bye(call, now))
        await stop_tasks(self._tasks)
        if self._udp is not None:
            self._udp.close()
        if self._tcp is not None:
            self._tcp.close()
            for transport in list(self._connections.values()):
                transport.close()
            await self._tcp.wait_closed()
        with contextlib.suppress(Exception):
            await service.offline_everywhere(self.ctx, self.ctx.instance_id)
        log.info("gb28181_stopped")

    # -- input --------------------------------------------------------------------------------

    def receive(self, data: bytes, peer: Peer) -> None:
        kind = "response" if data[:4] == b"SIP/" else data.split(b" ", 1)[0].decode("ascii", "replace")[:12]
        self.totals.messages[(peer.transport, kind if kind.isalpha() else "other")] += 1
        clock = self.ctx.clock
        try:
            effects = self.agent.receive(data, peer, clock.monotonic(), clock.now().astimezone(BEIJING))
        except Exception:  # the stack never goes down for one message
            log.exception("gb28181_message_failed", transport=peer.transport)
            self.totals.dropped["internal"] += 1
            return
        self.transmit(effects)

    def malformed_stream(self, error: SipParseError, peer: Peer) -> None:
        self.transmit(self.agent.malformed(error, peer))

    def transmit(self, effects: Iterable[object]) -> None:
        for effect in effects:
            if isinstance(effect, Send):
                self._send(effect.message, effect.peer)
            elif isinstance(effect, Dropped):
                self.totals.dropped[effect.reason] += 1
                log.debug(
                    "gb28181_dropped",
                    transport=effect.transport,
                    reason=effect.reason,
                    detail=effect.detail[:120],
                )
            elif isinstance(effect, StreamAnswered):
                task = asyncio.ensure_future(self.streams.answered(effect.call, effect.sdp))
                task.add_done_callback(_log_failure)
            elif isinstance(effect, StreamFailed):
                self.streams.failed(effect.call, effect.status, effect.reason)
            elif isinstance(effect, StreamEnded):
                self.streams.ended(effect.call, effect.reason)
            else:
                self._events.put_nowait(effect)
        self._wake.set()

    def _send(self, message: Request | Response, peer: Peer) -> None:
        data = message.encode()
        if peer.reliable:
            transport = self._connections.get(peer.connection)
            if transport is None or transport.is_closing():
                return
            transport.write(data)
        elif self._udp is not None:
            self._udp.sendto(data, (peer.host, peer.port))

    def connection_made(self, transport: asyncio.Transport) -> int | None:
        if len(self._connections) >= _MAX_TCP_CONNECTIONS:
            transport.close()
            return None
        connection = next(self._connection_ids)
        self._connections[connection] = transport
        return connection

    def connection_lost(self, connection: int) -> None:
        self._connections.pop(connection, None)

    # -- what the streams and the API ask of the devices (Signalling) ---------------------------

    def invite(self, device_id: str, channel_id: str, offer: GbSdp) -> str | None:
        call, effects = self.agent.invite(device_id, channel_id, offer, self.ctx.clock.monotonic())
        self.transmit(effects)
        return call

    def bye(self, call: str) -> None:
        self.transmit(self.agent.bye(call, self.ctx.clock.monotonic()))

    def request_keyframe(self, device_id: str, channel_id: str) -> None:
        # GB/T 28181-2016 A.2.3: DeviceControl IFameCmd "Send" asks for a key frame.
        self.control(device_id, channel_id, fields=(("IFameCmd", "Send"),))

    def control(
        self, device_id: str, channel_id: str, *, ptz_cmd: str = "", fields: tuple[tuple[str, str], ...] = ()
    ) -> bool:
        """Send DeviceControl to a channel; False when the device is not registered here."""
        if self.registry.get(device_id) is None:
            return False
        self.transmit(
            self.agent.control(
                device_id, channel_id, self.ctx.clock.monotonic(), ptz_cmd=ptz_cmd, fields=fields
            )
        )
        return True

    def query(self, device_id: str, cmd_type: str) -> bool:
        if self.registry.get(device_id) is None:
            return False
        _, effects = self.agent.query(device_id, cmd_type, self.ctx.clock.monotonic())
        self.transmit(effects)
        return True

    async def search_records(
        self, device_id: str, channel_id: str, start: datetime, end: datetime, patience: float = RECORDS_TIMEOUT
    ) -> RecordSearch:
        """Ask the device which recordings of ``channel_id`` it holds between ``start`` and ``end``
        (§9.7 ``Query/RecordInfo``) and gather its answer over all its parts; after ``patience``
        seconds, what came so far (``complete`` False)."""
        fields = (
            ("StartTime", manscdp.gb_time_text(start)),
            ("EndTime", manscdp.gb_time_text(end)),
            ("Secrecy", "0"),
            ("Type", "all"),
        )
        sn, effects = self.agent.query(
            device_id, "RecordInfo", self.ctx.clock.monotonic(), target=channel_id, fields=fields
        )
        search = RecordSearch(asyncio.get_running_loop().create_future())
        self._searches[(device_id, sn)] = search
        try:
            self.transmit(effects)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(patience):
                    await search.done
        finally:
            self._searches.pop((device_id, sn), None)
        return search

    def media_host(self, device_id: str) -> str:
        settings = self.settings
        return settings.media_host or settings.advertise_host or self.agent.local_host(device_id)

    def registered(self, device_id: str) -> bool:
        return self.registry.get(device_id) is not None

    # -- loops --------------------------------------------------------------------------------

    async def _timer_loop(self) -> None:
        clock = self.ctx.clock
        while True:
            deadline = self.agent.next_deadline()
            self._wake.clear()
            timeout = None if deadline is None else min(max(deadline - clock.monotonic(), 0.0), _TIMER_CAP)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout if timeout is not None else _TIMER_CAP * 4):
                    await self._wake.wait()
            try:
                self.transmit(self.agent.tick(clock.monotonic()))
            except Exception:
                log.exception("gb28181_timer_failed")

    async def _housekeeping(self) -> None:
        """Reload devices' own passwords (set through any instance's API); note who was heard from."""
        since_seen = 0.0
        while True:
            await asyncio.sleep(_CREDENTIALS_REFRESH)
            try:
                await self.refresh_credentials()
                since_seen += _CREDENTIALS_REFRESH
                if since_seen >= _SEEN_FLUSH:
                    since_seen = 0.0
                    online = [d.device_id for d in self.registry.devices.values() if d.online]
                    await service.device_seen(self.ctx, online)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if store_failure(self.ctx, exc) is None:  # an outage is logged once, by its tracker
                    log.exception("gb28181_housekeeping_failed")

    async def refresh_credentials(self) -> None:
        fresh = await service.own_credentials(self.ctx)
        self.credentials.clear()
        self.credentials.update(fresh)

    async def _event_loop(self) -> None:
        """Device events in the order the agent produced them, each one database transaction."""
        while True:
            event = await self._events.get()
            try:
                await self._apply(event)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if store_failure(self.ctx, exc) is None:  # an outage is logged once, by its tracker
                    log.exception("gb28181_event_failed", event=type(event).__name__)
                elif isinstance(event, AlarmReceived):
                    self._hold_alarm(event)

    def _hold_alarm(self, event: AlarmReceived) -> None:
        """Keep an alarm whose case the database could not take, to open it when it answers again."""
        if len(self._held_alarms) >= ALARMS_HELD:
            lost = self._held_alarms.popleft()
            log.error("gb28181_alarm_lost", device=lost.device_id, channel=lost.alarm.device_id, reason="too many held")
        self._held_alarms.append(event)
        log.warning("gb28181_alarm_held", device=event.device_id, channel=event.alarm.device_id, held=len(self._held_alarms))

    async def retry_held_alarms(self) -> int:
        """Open the cases of held alarms, oldest first, until the database fails again; how many."""

        async def open_case(event: AlarmReceived) -> None:
            verdict, _case = await alarms.camera_alarm(self.ctx, event.device_id, event.alarm)
            self.totals.alarm_kinds[verdict.kind] += 1

        done = await drain(
            self.ctx,
            self._held_alarms,
            open_case,
            "gb28181_alarm_failed",
            fields=lambda e: {"device": e.device_id, "channel": e.alarm.device_id},
            logger=log,
        )
        if done:
            log.info("gb28181_held_alarms_handled", alarms=done, still_held=len(self._held_alarms))
        return done

    async def _apply(self, event: object) -> None:
        ctx = self.ctx
        if isinstance(event, DeviceRegistered):
            log.info(
                "gb28181_registered",
                device=event.device_id,
                transport=event.peer.transport,
                fresh=event.fresh,
            )
            await service.device_registered(
                ctx,
                event.device_id,
                transport=event.peer.transport,
                remote=f"{event.peer.host}:{event.peer.port}",
                user_agent=event.user_agent,
                fresh=event.fresh,
            )
            if event.fresh:
                # §9.5: learn the device and its channels; §9.11: follow catalogue changes and alarms.
                self.query(event.device_id, "Catalog")
                self.query(event.device_id, "DeviceInfo")
                now = ctx.clock.monotonic()
                for kind in ("Catalog", "Alarm"):
                    if self._subscribable.get((event.device_id, kind), True):
                        self.transmit(
                            self.agent.subscribe(
                                event.device_id, kind, now, expires=self.settings.register_expires
                            )
                        )
        elif isinstance(event, DeviceUnregistered):
            log.info("gb28181_unregistered", device=event.device_id, reason=event.reason)
            self.streams.device_gone(event.device_id)
            await service.device_status(ctx, event.device_id, False, event.reason)
        elif isinstance(event, DeviceOffline):
            log.info("gb28181_offline", device=event.device_id, reason=event.reason)
            await service.device_status(ctx, event.device_id, False, event.reason)
        elif isinstance(event, DeviceOnline):
            log.info("gb28181_online_again", device=event.device_id)
            await service.device_status(ctx, event.device_id, True, "keepalive")
        elif isinstance(event, CatalogReceived):
            self.totals.catalogs += 1
            counts = await service.merge_catalog(ctx, event.device_id, event.items, complete=event.complete)
            log.info(
                "gb28181_catalog",
                device=event.device_id,
                items=len(event.items),
                complete=event.complete,
                **counts,
            )
        elif isinstance(event, CatalogChanged):
            await service.catalog_changed(ctx, event.device_id, event.items)
        elif isinstance(event, DeviceInfoReceived):
            await service.device_info(ctx, event.device_id, event.info)
        elif isinstance(event, AlarmReceived):
            self.totals.alarms += 1
            verdict, _case = await alarms.camera_alarm(ctx, event.device_id, event.alarm)
            self.totals.alarm_kinds[verdict.kind] += 1
        elif isinstance(event, PlaybackFinished):
            self.streams.playback_finished(event.device_id, event.channel_id)
        elif isinstance(event, RecordsReceived):
            search = self._searches.get((event.device_id, event.records.sn))
            if search is not None:
                search.add(event.records)
        elif isinstance(event, AuthFailed):
            self.totals.auth_failures += 1
            log.warning(
                "gb28181_auth_failed",
                device=event.device_id,
                remote=event.peer.host,
                status=event.status,
                reason=event.reason,
            )
        elif isinstance(event, SubscriptionState):
            accepted = 200 <= event.status < 300
            self.totals.subscriptions[(event.event, "accepted" if accepted else "refused")] += 1
            if not accepted:
                self._subscribable[(event.device_id, event.event)] = event.status == 408
                log.info(
                    "gb28181_subscription_refused",
                    device=event.device_id,
                    event_kind=event.event,
                    status=event.status,
                )
        elif isinstance(event, RequestFailed):
            log.info(
                "gb28181_request_failed", device=event.device_id, cmd=event.cmd_type, status=event.status
            )
        elif isinstance(event, PositionReceived):
            log.debug("gb28181_position", device=event.device_id)

    def snapshot(self) -> dict[str, Any]:
        devices = self.registry.devices.values()
        return {
            "online": sum(1 for d in devices if d.online),
            "offline": sum(1 for d in devices if not d.online),
        }


def _log_failure(task: asyncio.Future[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("gb28181_stream_answer_failed", error=str(task.exception()))


class _UdpProtocol(asyncio.DatagramProtocol):
    def __init__(self, edge: GbEdge) -> None:
        self.edge = edge

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.edge.receive(data, Peer("UDP", str(addr[0]), int(addr[1])))

    def error_received(self, exc: Exception) -> None:
        log.debug("gb28181_udp_error", error=str(exc))


class _TcpProtocol(asyncio.Protocol):
    """One TCP connection from a device: RFC 3261 §18.3 framing by Content-Length."""

    def __init__(self, edge: GbEdge) -> None:
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
                self.transport.write(b"\r\n")
            else:
                self.edge.receive(frame, self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.peer is not None:
            self.edge.connection_lost(self.peer.connection)
