"""The JT/T 808 TCP server (``[jt808] port``, 5015): a thin asyncio edge over the pure codec.

Per connection (JT/T 808-2019 §8):

* 0x0100 terminal register → 0x8100 with a new auth code when the terminal number is a registered
  device, result 4 (no such terminal) otherwise;
* 0x0102 terminal auth → 0x8001, result 0 when the code matches the device's, 1 otherwise; the
  connection is then bound to that device;
* 0x0002 heartbeat → 0x8001 result 0; 0x0003 logout → 0x8001 result 0, then unbound;
* 0x0200 location and 0x0704 batch → 0x8001 result 0 once the fixes are stored, 1 before auth
  or past the device's rate limit; the emergency bit (紧急报警) opens a P1 case;
* a body that does not decode → 0x8001 result 2 (bad message); a message this platform does not
  take (other ids, encrypted bodies, split packets) → 0x8001 result 3 (unsupported);
* bytes that are not frames are skipped by the splitter; the first of each kind of trouble is
  logged once per connection, and a connection that sends only junk is closed.
"""

from __future__ import annotations

import asyncio
import itertools
import struct
from collections import deque
from collections.abc import AsyncGenerator, Callable
from typing import Any

import structlog

from dispatchd.channels.gps.jt808 import (
    FrameSplitter,
    Header,
    Heartbeat,
    Jt808Error,
    Location,
    LocationBatch,
    Message,
    MsgId,
    RegisterReply,
    RegisterResult,
    ReplyResult,
    TerminalAuth,
    TerminalRegister,
    checksum,
    decode_body,
    decode_frame,
    encode_reply,
    escape,
    unescape,
)
from dispatchd.clock import Clock
from dispatchd.domain.units import LIVE, Position
from dispatchd.metrics import Metrics
from dispatchd.store.outage import store_failure
from dispatchd.tasks import stop_tasks
from dispatchd.units.devices import Device, new_secret

from .intake import GpsIntake

log = structlog.get_logger("dispatchd.gps.jt808")

TERMINAL_LOGOUT = 0x0003  # 终端注销
# Junk bytes tolerated on a connection that has never sent a good frame.
JUNK_LIMIT = 64 * 1024
# Frames waiting behind a database step (register, auth) before the connection is closed.
QUEUE_LIMIT = 1000
# Failed auth attempts before the connection is closed.
AUTH_ATTEMPTS = 5
# Bytes waiting in the socket's write buffer beyond which a terminal that does not read is dropped.
WRITE_LIMIT = 1024 * 1024

_ids = itertools.count(1)
_GENERAL_BODY = struct.Struct(">HHB")


class _Splitter(FrameSplitter):
    """The codec's splitter, keeping the messages it decodes to validate frames (no second decode)."""

    def __init__(self) -> None:
        super().__init__()
        self.messages: list[Message] = []

    def _accept(self, run: bytes) -> bytes | None:
        try:
            payload = unescape(run)
            message = decode_frame(payload)
        except Jt808Error as error:
            self._reject(len(run), str(error))
            return None
        self.messages.append(message)
        return payload


class Jt808Connection(asyncio.Protocol):
    def __init__(self, server: Jt808Server) -> None:
        self.server = server
        self.intake = server.intake
        self.splitter = _Splitter()
        self._prefixes: dict[tuple[str, int | None], bytes] = {}
        self.conn_id = f"jt808-{next(_ids)}"
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.address = ""
        self.device: Device | None = None
        self.serial = 0
        self.good_frames = 0
        self.auth_failures = 0
        self.last_seen = server.clock.monotonic()
        self._queue: deque[Message] = deque()
        self._busy = False
        self._logged: set[str] = set()

    # -- asyncio.Protocol -----------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.address = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        if not self.server.admit(self.address):
            transport.close()  # past [jt808] max_connections_per_address: the terminal tries later
            return
        self.transport = transport
        self.server.connections.add(self)
        self.server.metrics.connections.labels("jt808").inc()
        log.debug("jt808_connected", conn_id=self.conn_id, peer=self.peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is None:
            return  # refused at connection_made
        self.server.release(self.address)
        self.server.connections.discard(self)
        self.server.metrics.connections.labels("jt808").dec()
        log.debug("jt808_disconnected", conn_id=self.conn_id, peer=self.peer, frames=self.good_frames)

    def data_received(self, data: bytes) -> None:
        self.last_seen = self.server.clock.monotonic()
        rejected = self.splitter.rejected
        self.splitter.feed(data)
        if self.splitter.rejected != rejected:
            self.server.metrics.rejected_input.labels("jt808").inc(self.splitter.rejected - rejected)
            self._once("jt808_bad_frame", reason=self.splitter.last_rejection)
        messages = self.splitter.messages
        if messages:
            self.splitter.messages = []
            self.good_frames += len(messages)
            self._queue.extend(messages)
            if len(self._queue) > QUEUE_LIMIT:  # frames pile up behind a slow auth: a flood
                self._once("jt808_flood_closed", queued=len(self._queue))
                self._queue.clear()
                self.close()
                return
            self._pump()
        elif self.good_frames == 0 and self.splitter.junk_bytes > JUNK_LIMIT:
            self._once("jt808_junk_connection_closed", junk_bytes=self.splitter.junk_bytes)
            self.close()

    # -- handling -------------------------------------------------------------------------------

    def _once(self, event: str, **fields: Any) -> None:
        """Log an event once per connection."""
        if event in self._logged:
            return
        self._logged.add(event)
        log.info(event, conn_id=self.conn_id, peer=self.peer, **fields)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def _write(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        transport.write(data)
        if transport.get_write_buffer_size() > WRITE_LIMIT:
            self._once("jt808_not_reading_closed")
            transport.abort()

    def _reply(self, request: Header, body: Any) -> bytes:
        self.serial = (self.serial + 1) & 0xFFFF
        return encode_reply(request, body, serial=self.serial)

    def _general(self, request: Header, result: int = ReplyResult.OK) -> bytes:
        """平台通用应答 0x8001 in the request's header edition (built directly: one per location report)."""
        self.serial = (self.serial + 1) & 0xFFFF
        key = (request.phone, request.protocol_version)
        prefix = self._prefixes.get(key)
        if prefix is None:
            # 消息头 without the serial (JT/T 808-2019 §4.4.3): id, properties (body length 5, bit 14 for
            # the 2019 edition), version byte, terminal number in BCD (6 or 10 bytes).
            if request.protocol_version is None:
                prefix = struct.pack(">HH", MsgId.PLATFORM_GENERAL_REPLY, 5) + bytes.fromhex(
                    request.phone.rjust(12, "0")
                )
            else:
                prefix = struct.pack(
                    ">HHB", MsgId.PLATFORM_GENERAL_REPLY, 5 | 0x4000, request.protocol_version
                ) + bytes.fromhex(request.phone.rjust(20, "0"))
            self._prefixes[key] = prefix
        content = (
            prefix
            + self.serial.to_bytes(2, "big")
            + _GENERAL_BODY.pack(request.serial, request.msg_id, result)
        )
        return b"\x7e" + escape(content + bytes([checksum(content)])) + b"\x7e"

    def _pump(self) -> None:
        out: list[bytes] = []
        while self._queue and not self._busy:
            reply = self._handle(self._queue.popleft())
            if reply:
                out.append(reply)
        if out:
            self._write(b"".join(out))

    def _handle(self, message: Message) -> bytes | None:
        header = message.header
        try:
            body = decode_body(message)
        except Jt808Error as error:
            self.server.metrics.rejected_input.labels("jt808").inc()
            self._once("jt808_bad_message", msg_id=f"0x{header.msg_id:04x}", error=str(error))
            return self._general(header, ReplyResult.BAD_MESSAGE)
        match body:
            case Location() | LocationBatch():
                return self._locations(header, body)
            case Heartbeat():
                return self._general(header)
            case TerminalRegister():
                self._run(self._register, header)
                return None
            case TerminalAuth():
                self._run(lambda h: self._auth(h, body), header)
                return None
            case None if header.msg_id == TERMINAL_LOGOUT and not header.subpackage:
                self.device = None
                return self._general(header)
            case _ if header.msg_id == MsgId.TERMINAL_GENERAL_REPLY:
                return None  # the terminal answers one of ours; nothing to say back
            case _:
                self._once("jt808_unsupported_message", msg_id=f"0x{header.msg_id:04x}")
                return self._general(header, ReplyResult.UNSUPPORTED)

    def _run(self, handler: Callable[[Header], Any], header: Header) -> None:
        """Run an async step (one that needs the database); later frames wait for it, in order."""
        self._busy = True

        async def step() -> None:
            try:
                reply = await handler(header)
            except Exception as exc:
                # Result 1: the terminal tries again. A store outage is logged once, by its tracker.
                if store_failure(self.intake.ctx, exc) is None:
                    log.exception("jt808_step_failed", conn_id=self.conn_id, msg_id=f"0x{header.msg_id:04x}")
                reply = self._general(header, ReplyResult.FAILURE)
            finally:
                self._busy = False
            if reply:
                self._write(reply)
            self._pump()

        task = asyncio.create_task(step())
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    async def _register(self, header: Header) -> bytes:
        """0x0100 → 0x8100 (JT/T 808-2019 §8.9): a new auth code for a registered terminal number."""
        device = await self.intake.devices.find("jt808", header.phone)
        if device is None or device.disabled:
            self.intake.refuse("jt808", "unknown_device")
            self._once("jt808_unknown_terminal", phone=header.phone)
            return self._reply(
                header, RegisterReply(reply_serial=header.serial, result=RegisterResult.NO_SUCH_TERMINAL)
            )
        code = new_secret("jt808")
        await self.intake.devices.set_secret(device, code, registered_at=self.server.clock.now())
        log.info("jt808_registered", conn_id=self.conn_id, device_id=device.id, unit_id=device.unit_id)
        return self._reply(
            header, RegisterReply(reply_serial=header.serial, result=RegisterResult.OK, auth_code=code)
        )

    async def _auth(self, header: Header, body: TerminalAuth) -> bytes:
        """0x0102 → 0x8001: the connection speaks for the device from now on."""
        device = await self.intake.devices.find("jt808", header.phone)
        if device is None or device.disabled or not device.secret_matches(body.auth_code):
            self.auth_failures += 1
            self.intake.refuse("jt808", "bad_key" if device else "unknown_device")
            self._once("jt808_auth_failed", phone=header.phone)
            if self.auth_failures >= AUTH_ATTEMPTS:
                asyncio.get_running_loop().call_soon(self.close)
            return self._general(header, ReplyResult.FAILURE)
        self.device = device
        log.info("jt808_authenticated", conn_id=self.conn_id, device_id=device.id, unit_id=device.unit_id)
        return self._general(header)

    def _locations(self, header: Header, body: Location | LocationBatch) -> bytes | None:
        device = self.device
        if device is None or header.phone != device.identifier:
            self.intake.refuse("jt808", "unauthenticated")
            self._once("jt808_location_before_auth", phone=header.phone)
            return self._general(header, ReplyResult.FAILURE)
        if not self.intake.allow(device, "jt808"):
            self._once("jt808_rate_limited")
            return self._general(header, ReplyResult.FAILURE)
        locations = body.locations if isinstance(body, LocationBatch) else (body,)
        if not self.intake.sink.room(len(locations), "jt808"):
            # PostgreSQL is away and the outage buffer is full: result 1, the terminal sends it again.
            self._once("jt808_outage_buffer_full")
            return self._general(header, ReplyResult.FAILURE)
        now = self.server.clock.now()
        alarm = False
        alarm_position: Position | None = None
        for loc in locations:
            position = Position(
                unit_id=device.unit_id,
                device_id=device.id,
                lat=loc.lat,
                lon=loc.lon,
                at=loc.at or now,
                source="jt808",
                speed_kmh=loc.speed_kmh,
                heading=float(loc.heading),
                altitude_m=float(loc.altitude_m),
            )
            verdict = self.intake.submit(position, now)
            if loc.is_emergency:
                alarm = True
                if verdict == LIVE:
                    alarm_position = position
        if isinstance(body, Location) or not (isinstance(body, LocationBatch) and body.kind == 1):
            # A blind-area re-upload (0x0704 type 1) tells nothing about the alarm now.
            self.intake.alarm_state(device, "jt808", alarm, alarm_position)
        self.server.answer_when_stored(self, header, self._general(header))
        return None


class Jt808Server:
    def __init__(
        self, intake: GpsIntake, clock: Clock, metrics: Metrics, idle_timeout: float, max_per_address: int = 0
    ) -> None:
        self.intake = intake
        self.clock = clock
        self.metrics = metrics
        self.idle_timeout = idle_timeout
        self.max_per_address = max_per_address
        self.per_address: dict[str, int] = {}
        self.connections: set[Jt808Connection] = set()
        self.tasks: set[asyncio.Task[Any]] = set()
        self._waiting: dict[asyncio.Future[bool], list[tuple[Jt808Connection, Header, bytes]]] = {}

    def admit(self, address: str) -> bool:
        count = self.per_address.get(address, 0)
        if self.max_per_address and count >= self.max_per_address:
            self.metrics.http_cut.labels("jt808", "per_address_cap").inc()
            return False
        self.per_address[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self.per_address.get(address, 0) - 1
        if count > 0:
            self.per_address[address] = count
        else:
            self.per_address.pop(address, None)

    def answer_when_stored(self, conn: Jt808Connection, header: Header, reply: bytes) -> None:
        """Send ``reply`` once the fixes of ``header``'s message are stored (result 1 if that failed).

        One callback per stored batch answers every connection that waits for it, one write each.
        """
        stored = self.intake.sink.written()
        waiting = self._waiting.get(stored)
        if waiting is None:
            waiting = self._waiting[stored] = []
            stored.add_done_callback(self._answer)
        waiting.append((conn, header, reply))

    def _answer(self, stored: asyncio.Future[bool]) -> None:
        waiting = self._waiting.pop(stored, [])
        ok = not stored.cancelled() and stored.exception() is None and stored.result()
        replies: dict[Jt808Connection, bytes] = {}
        for conn, header, reply in waiting:
            if not ok:
                reply = conn._general(header, ReplyResult.FAILURE)
            earlier = replies.get(conn)
            replies[conn] = reply if earlier is None else earlier + reply
        for conn, out in replies.items():
            conn._write(out)

    def sweep(self) -> int:
        """Close connections silent for longer than the idle timeout; return how many."""
        limit = self.clock.monotonic() - self.idle_timeout
        idle = [c for c in self.connections if c.last_seen < limit]
        for c in idle:
            c._once("jt808_idle_closed")
            c.close()
        return len(idle)

    async def run_sweeper(self) -> None:
        while True:
            await asyncio.sleep(min(30.0, self.idle_timeout / 4))
            self.sweep()


async def serve_jt808(
    intake: GpsIntake,
    clock: Clock,
    metrics: Metrics,
    host: str,
    port: int,
    idle_timeout: float,
    reuse_port: bool = False,
    *,
    max_per_address: int = 0,
) -> AsyncGenerator[tuple[Jt808Server, int], None]:
    """Run the JT/T 808 server while the generator is suspended; yields it and the bound port."""
    server = Jt808Server(intake, clock, metrics, idle_timeout, max_per_address)
    loop = asyncio.get_running_loop()
    tcp = await loop.create_server(
        lambda: Jt808Connection(server), host, port, reuse_address=True, reuse_port=reuse_port or None, backlog=4096
    )
    bound = int(tcp.sockets[0].getsockname()[1])
    log.info("jt808_listening", address=f"tcp://{host}:{bound}")
    sweeper = asyncio.create_task(server.run_sweeper())
    try:
        yield server, bound
    finally:
        tcp.close()
        for c in list(server.connections):
            c.close()
        await stop_tasks([sweeper, *server.tasks])
        await tcp.wait_closed()
