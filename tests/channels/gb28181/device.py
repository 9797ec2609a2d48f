"""A GB/T 28181 device simulated for the tests, written from the standard's text.

It shares no code with dispatchd's GB/T 28181 stack: its SIP messages are written as text the way
RFC 3261 §7 and GB/T 28181-2016 §9 show them, its digest is RFC 2617 §3.2.2 computed with hashlib,
its MANSCDP bodies follow Annex A, its program stream follows ISO/IEC 13818-1 §2.5 as Annex C
describes it (one pack per frame; system header and PSM before key frames), its RTP is RFC 3550's
fixed header, and over TCP each packet carries RFC 4571's 2-byte length.

What it does, as an IPC or a small NVR would:

* registers (REGISTER, 401, REGISTER with Authorization), keeps alive every ``keepalive_interval``
  (``Notify/Keepalive``), unregisters (Expires: 0);
* answers Catalog queries with its channels (names and positions) in as many parts as
  ``items_per_message`` says, each with the total ``SumNum`` (§9.5.3); answers DeviceInfo;
* accepts catalogue and alarm subscriptions (SUBSCRIBE, 200 with Expires);
* answers RecordInfo queries with the recordings it was given that overlap the period (§9.7), in parts;
  ends a playback after ``playback_frames`` frames with MediaStatus 121 (§9.8);
* records DeviceControl commands (the PTZCmd hex, IFameCmd);
* answers live-view INVITEs with ``sendonly`` PS, and after the ACK streams an H.264 clip as PS over
  RTP: over UDP to the offer's address, or over TCP — connecting when the platform offered
  ``setup:passive``, listening when it offered ``setup:active`` (RFC 4145); stops at BYE.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import struct
import zlib
from dataclasses import dataclass, field
from typing import Any

CRLF = "\r\n"


# ---- SIP text ---------------------------------------------------------------------------------------


@dataclass
class Msg:
    start: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def is_request(self) -> bool:
        return not self.start.startswith("SIP/2.0")

    @property
    def method(self) -> str:
        return self.start.split(" ", 1)[0] if self.is_request else self.header("CSeq").split()[1]

    @property
    def uri(self) -> str:
        return self.start.split(" ")[1]

    @property
    def status(self) -> int:
        return int(self.start.split(" ")[1]) if not self.is_request else 0

    def header(self, name: str) -> str:
        for key, value in self.headers:
            if key.lower() == name.lower():
                return value
        return ""

    def tag(self, name: str) -> str:
        value = self.header(name)
        return value.split(";tag=", 1)[1].split(";")[0] if ";tag=" in value else ""


def parse(data: bytes) -> Msg:
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("utf-8").split("\r\n")
    headers = []
    for line in lines[1:]:
        key, _, value = line.partition(":")
        headers.append((key.strip(), value.strip()))
    length = next((int(v) for k, v in headers if k.lower() in ("content-length", "l")), 0)
    return Msg(lines[0], headers, rest[:length])


def build(start: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    text = start + CRLF + "".join(f"{k}: {v}{CRLF}" for k, v in headers)
    return (text + f"Content-Length: {len(body)}{CRLF}{CRLF}").encode("utf-8") + body


def reply(
    request: Msg,
    status: int,
    reason: str,
    extra: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    to_tag: str = "",
) -> bytes:
    """A response by RFC 3261 §8.2.6: Via, From, To (tagged), Call-ID and CSeq copied."""
    to = request.header("To")
    if to_tag and ";tag=" not in to:
        to += f";tag={to_tag}"
    headers = [(k, v) for k, v in request.headers if k.lower() == "via"]
    headers += [("From", request.header("From")), ("To", to), ("Call-ID", request.header("Call-ID"))]
    headers += [("CSeq", request.header("CSeq")), ("User-Agent", "SimIPC/1.0"), *(extra or [])]
    return build(f"SIP/2.0 {status} {reason}", headers, body)


def digest_response(user: str, realm: str, password: str, nonce: str, method: str, uri: str) -> str:
    """RFC 2617 §3.2.2.1 without qop: MD5(MD5(user:realm:password):nonce:MD5(method:uri))."""

    def md5(text: str) -> str:
        return hashlib.md5(text.encode()).hexdigest()

    return md5(f"{md5(f'{user}:{realm}:{password}')}:{nonce}:{md5(f'{method}:{uri}')}")


def challenge_params(value: str) -> dict[str, str]:
    params = {}
    for part in value.split(" ", 1)[1].split(","):
        key, _, val = part.strip().partition("=")
        params[key.strip().lower()] = val.strip().strip('"')
    return params


def manscdp(
    root: str, cmd_type: str, sn: int | str, device_id: str, inner: str, encoding: str = "GB2312"
) -> bytes:
    """A MANSCDP body (Annex A.2): declaration, root, CmdType, SN, DeviceID, then ``inner``."""
    text = (
        f'<?xml version="1.0" encoding="{encoding}"?>\n<{root}>\n<CmdType>{cmd_type}</CmdType>\n<SN>{sn}</SN>\n'
        f"<DeviceID>{device_id}</DeviceID>\n{inner}</{root}>\n"
    )
    return text.encode("gb18030" if encoding.upper().startswith("GB") else "utf-8")


def xml_text(body: bytes, tag: str) -> str:
    text = body.decode("gb18030", "replace")
    start = text.find(f"<{tag}>")
    end = text.find(f"</{tag}>")
    return text[start + len(tag) + 2 : end].strip() if start >= 0 and end > start else ""


# ---- MPEG-PS and RTP ----------------------------------------------------------------------------------


def _ts(prefix: int, value: int) -> bytes:
    """A 33-bit PTS in the 5-byte PES layout (ISO/IEC 13818-1 §2.4.3.7)."""
    return bytes(
        [
            prefix << 4 | (value >> 29) & 0x0E | 1,
            (value >> 22) & 0xFF,
            (value >> 14) & 0xFE | 1,
            (value >> 7) & 0xFF,
            (value << 1) & 0xFE | 1,
        ]
    )


def ps_pack(frame: bytes, pts: int, key: bool) -> bytes:
    """One frame as one pack (GB/T 28181-2016 Annex C): pack header, system header and PSM before a
    key frame, then PES packets of at most 60 000 bytes, the first with the PTS."""
    scr = pts
    pack = bytes(
        [
            0x44 | (scr >> 27) & 0x38 | (scr >> 28) & 0x03,
            (scr >> 20) & 0xFF,
            (scr >> 12) & 0xF8 | 0x04 | (scr >> 13) & 0x03,
            (scr >> 5) & 0xFF,
            (scr << 3) & 0xF8 | 0x04,
            0x01,
            0x01,
            0x89,
            0xC3,
            0xF8,
        ]
    )
    out = b"\x00\x00\x01\xba" + pack
    if key:
        system = bytes([0x80, 0x04, 0xE1, 0x04, 0xE1, 0x7F, 0xE0, 0xE0, 0x80])
        out += b"\x00\x00\x01\xbb" + struct.pack(">H", len(system)) + system
        entries = bytes([0x1B, 0xE0, 0x00, 0x00])
        body = bytes([0xE0, 0xFF, 0x00, 0x00]) + struct.pack(">H", len(entries)) + entries
        head = b"\x00\x00\x01\xbc" + struct.pack(">H", len(body) + 4)
        crc = zlib.crc32(b"")  # a CRC of 0: devices write all sorts here; readers do not check it
        out += head + body + struct.pack(">I", crc)
    for i in range(0, max(len(frame), 1), 60000):
        chunk = frame[i : i + 60000]
        header = bytes([0x80, 0x80, 5]) + _ts(0b0010, pts) if i == 0 else bytes([0x80, 0x00, 0])
        out += b"\x00\x00\x01\xe0" + struct.pack(">H", len(header) + len(chunk)) + header + chunk
    return out


def rtp(payload: bytes, seq: int, ts: int, ssrc: int, marker: bool) -> bytes:
    return (
        struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | 96, seq & 0xFFFF, ts & 0xFFFFFFFF, ssrc)
        + payload
    )


# ---- the device -------------------------------------------------------------------------------------


@dataclass
class Channel:
    id: str
    name: str
    lat: float | None = None
    lon: float | None = None
    ptz_type: int = 1
    status: str = "ON"


@dataclass
class Stream:
    call_id: str
    ssrc: int
    transport: str  # UDP, TCP-passive (platform listens), TCP-active (platform connects)
    channel: str
    task: asyncio.Task[None] | None = None
    packets: int = 0
    stopped: bool = False
    server: asyncio.base_events.Server | None = None
    offer: str = ""  # the INVITE's SDP (s=Play or Playback, u=, t=, y=)


@dataclass
class SimulatedDevice:
    device_id: str
    channels: list[Channel]
    platform: tuple[str, int]
    password: str
    platform_id: str
    domain: str
    transport: str = "UDP"
    keepalive_interval: float = 1.0
    items_per_message: int = 2
    frames: list[tuple[bytes, bool]] = field(default_factory=list)  # (access unit, key frame)
    fps: float = 10.0
    answer_invites: bool = True
    auth_user: str = ""
    messages: list[Msg] = field(default_factory=list)
    ptz_commands: list[str] = field(default_factory=list)
    controls: list[Msg] = field(default_factory=list)
    subscriptions: list[Msg] = field(default_factory=list)
    streams: dict[str, Stream] = field(default_factory=dict)
    byes: list[str] = field(default_factory=list)
    # Recordings per channel: (start, end) in Beijing time as Annex A writes them ("2026-05-03T08:00:00").
    recordings: dict[str, list[tuple[str, str]]] = field(default_factory=dict)
    record_queries: list[Msg] = field(default_factory=list)
    # A playback (s=Playback) ends after this many frames with MediaStatus 121 (§9.8); None: never.
    playback_frames: int | None = None

    def __post_init__(self) -> None:
        self._udp: asyncio.DatagramTransport | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._responses: asyncio.Queue[Msg] = asyncio.Queue()
        self._tasks: list[asyncio.Task[Any]] = []
        self._keepalive: asyncio.Task[None] | None = None
        self._sn = 100
        self._cseq = 1
        self.local: tuple[str, int] = ("127.0.0.1", 0)
        self.call_id = f"reg-{random.randrange(10**9)}"
        self.tag = f"{random.randrange(10**9)}"

    # -- transport ----------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.transport == "UDP":
            device = self

            class Protocol(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
                    device._incoming(data)

            transport, _ = await loop.create_datagram_endpoint(Protocol, local_addr=("127.0.0.1", 0))
            self._udp = transport
            self.local = transport.get_extra_info("sockname")[:2]
        else:
            self._reader, self._writer = await asyncio.open_connection(*self.platform)
            self.local = self._writer.get_extra_info("sockname")[:2]
            self._tasks.append(asyncio.create_task(self._read_tcp()))

    async def _read_tcp(self) -> None:
        assert self._reader is not None
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while True:
                head = await self._reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode().split("\r\n"):
                    if line.lower().startswith("content-length"):
                        length = int(line.split(":")[1])
                body = await self._reader.readexactly(length)
                self._incoming(head + body)

    def send(self, data: bytes) -> None:
        if self._udp is not None:
            self._udp.sendto(data, self.platform)
        elif self._writer is not None:
            self._writer.write(data)

    async def close(self) -> None:
        self.stop_keepalives()
        for stream in list(self.streams.values()):
            await self._stop_stream(stream)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._udp is not None:
            self._udp.close()
        if self._writer is not None:
            self._writer.close()

    # -- requests we send -----------------------------------------------------------------------
    @property
    def via(self) -> str:
        return f"SIP/2.0/{self.transport} {self.local[0]}:{self.local[1]};rport;branch=z9hG4bK{random.randrange(10**12)}"

    def _headers(self, method: str, to_user: str, call_id: str, from_tag: str) -> list[tuple[str, str]]:
        self._cseq += 1
        return [
            ("Via", self.via),
            ("From", f"<sip:{self.device_id}@{self.domain}>;tag={from_tag}"),
            ("To", f"<sip:{to_user}@{self.domain}>"),
            ("Call-ID", call_id),
            ("CSeq", f"{self._cseq} {method}"),
            ("Max-Forwards", "70"),
            ("User-Agent", "SimIPC/1.0"),
        ]

    async def _transaction(self, data: bytes, call_id: str, patience: float = 5.0) -> Msg:
        """Send a request and wait for its final response (retransmitting over UDP, §17.1.2.2)."""
        self.send(data)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + patience
        interval = 0.5
        while True:
            try:
                async with asyncio.timeout(min(interval, max(deadline - loop.time(), 0.01))):
                    while True:
                        msg = await self._responses.get()
                        if msg.header("Call-ID") == call_id and msg.status >= 200:
                            return msg
            except TimeoutError:
                if loop.time() >= deadline:
                    raise
                if self._udp is not None:
                    self.send(data)
                interval = min(interval * 2, 4.0)

    async def register(self, expires: int = 3600, password: str | None = None) -> int:
        """REGISTER, answer the 401's challenge (§9.1.2.1), return the final status."""
        uri = f"sip:{self.platform_id}@{self.domain}"
        headers = self._headers("REGISTER", self.device_id, self.call_id, self.tag)
        headers[2] = ("To", f"<sip:{self.device_id}@{self.domain}>")
        headers += [
            ("Contact", f"<sip:{self.device_id}@{self.local[0]}:{self.local[1]}>"),
            ("Expires", str(expires)),
        ]
        first = await self._transaction(build(f"REGISTER {uri} SIP/2.0", headers), self.call_id)
        if first.status != 401:
            return first.status
        params = challenge_params(first.header("WWW-Authenticate"))
        user = self.auth_user or self.device_id
        response = digest_response(
            user,
            params["realm"],
            self.password if password is None else password,
            params["nonce"],
            "REGISTER",
            uri,
        )
        headers = self._headers("REGISTER", self.device_id, self.call_id, self.tag)
        headers[2] = ("To", f"<sip:{self.device_id}@{self.domain}>")
        headers += [
            ("Contact", f"<sip:{self.device_id}@{self.local[0]}:{self.local[1]}>"),
            (
                "Authorization",
                f'Digest username="{user}", realm="{params["realm"]}", nonce="{params["nonce"]}", '
                f'uri="{uri}", response="{response}", algorithm=MD5',
            ),
            ("Expires", str(expires)),
        ]
        second = await self._transaction(build(f"REGISTER {uri} SIP/2.0", headers), self.call_id)
        return second.status

    async def message(self, body: bytes) -> int:
        call_id = f"msg-{random.randrange(10**12)}"
        headers = self._headers("MESSAGE", self.platform_id, call_id, f"{random.randrange(10**9)}")
        headers.append(("Content-Type", "Application/MANSCDP+xml"))
        uri = f"sip:{self.platform_id}@{self.domain}"
        return (await self._transaction(build(f"MESSAGE {uri} SIP/2.0", headers, body), call_id)).status

    def flood(self, count: int, body: bytes) -> None:
        """Send ``count`` MESSAGEs at once without waiting for their answers (a misbehaving device)."""
        for n in range(count):
            headers = self._headers("MESSAGE", self.platform_id, f"flood-{n}", "f")
            headers.append(("Content-Type", "Application/MANSCDP+xml"))
            self.send(build(f"MESSAGE sip:{self.platform_id}@{self.domain} SIP/2.0", headers, body))

    async def keepalive(self) -> int:
        self._sn += 1
        return await self.message(
            manscdp("Notify", "Keepalive", self._sn, self.device_id, "<Status>OK</Status>\n")
        )

    def start_keepalives(self) -> None:
        async def loop() -> None:
            while True:
                with contextlib.suppress(TimeoutError):
                    await self.keepalive()
                await asyncio.sleep(self.keepalive_interval)

        self._keepalive = asyncio.create_task(loop())

    def stop_keepalives(self) -> None:
        if self._keepalive is not None:
            self._keepalive.cancel()
            self._keepalive = None

    # -- requests we receive --------------------------------------------------------------------
    def _incoming(self, data: bytes) -> None:
        msg = parse(data)
        if not msg.is_request:
            self._responses.put_nowait(msg)
            return
        self.messages.append(msg)
        method = msg.method
        if method == "MESSAGE":
            self.send(reply(msg, 200, "OK", to_tag="d1"))
            self._tasks.append(asyncio.create_task(self._query(msg)))
        elif method == "SUBSCRIBE":
            self.subscriptions.append(msg)
            expires = msg.header("Expires") or "3600"
            self.send(reply(msg, 200, "OK", [("Expires", expires)], to_tag="sub1"))
        elif method == "INVITE":
            self._invite(msg)
        elif method == "ACK":
            stream = self.streams.get(msg.header("Call-ID"))
            if stream is not None and stream.task is None:
                stream.task = asyncio.create_task(self._stream(stream))
        elif method == "BYE":
            self.byes.append(msg.header("Call-ID"))
            self.send(reply(msg, 200, "OK"))
            stream = self.streams.pop(msg.header("Call-ID"), None)
            if stream is not None:
                self._tasks.append(asyncio.create_task(self._stop_stream(stream)))
        else:
            self.send(reply(msg, 405, "Method Not Allowed"))

    async def _query(self, msg: Msg) -> None:
        cmd = xml_text(msg.body, "CmdType")
        sn = xml_text(msg.body, "SN")
        if cmd == "Catalog":
            parts = [
                self.channels[i : i + self.items_per_message]
                for i in range(0, len(self.channels), self.items_per_message)
            ]
            for part in parts or [[]]:
                items = "".join(
                    "<Item>\n"
                    f"<DeviceID>{c.id}</DeviceID>\n<Name>{c.name}</Name>\n<Manufacturer>Sim</Manufacturer>\n"
                    f"<Model>SIM-1</Model>\n<Owner>0</Owner>\n<CivilCode>330381</CivilCode>\n<Address>路口</Address>\n"
                    f"<Parental>0</Parental>\n<ParentID>{self.device_id}</ParentID>\n<RegisterWay>1</RegisterWay>\n"
                    f"<Secrecy>0</Secrecy>\n<Status>{c.status}</Status>\n"
                    + (
                        f"<Longitude>{c.lon}</Longitude>\n<Latitude>{c.lat}</Latitude>\n"
                        if c.lat is not None
                        else ""
                    )
                    + f"<Info>\n<PTZType>{c.ptz_type}</PTZType>\n</Info>\n</Item>\n"
                    for c in part
                )
                inner = f'<SumNum>{len(self.channels)}</SumNum>\n<DeviceList Num="{len(part)}">\n{items}</DeviceList>\n'
                await self.message(manscdp("Response", "Catalog", sn, self.device_id, inner))
        elif cmd == "RecordInfo":
            # §9.7: the recordings of the queried channel that overlap [StartTime, EndTime], in parts.
            self.record_queries.append(msg)
            channel = xml_text(msg.body, "DeviceID")
            start, end = xml_text(msg.body, "StartTime"), xml_text(msg.body, "EndTime")
            found = [(s, e) for s, e in self.recordings.get(channel, []) if s < end and e > start]
            parts = [found[i : i + self.items_per_message] for i in range(0, len(found), self.items_per_message)]
            for part in parts or [[]]:
                items = "".join(
                    f"<Item>\n<DeviceID>{channel}</DeviceID>\n<Name>通道</Name>\n<FilePath>{s}_{e}</FilePath>\n"
                    f"<Address>路口</Address>\n<StartTime>{s}</StartTime>\n<EndTime>{e}</EndTime>\n"
                    "<Secrecy>0</Secrecy>\n<Type>time</Type>\n</Item>\n"
                    for s, e in part
                )
                inner = (
                    f"<Name>通道</Name>\n<SumNum>{len(found)}</SumNum>\n"
                    f'<RecordList Num="{len(part)}">\n{items}</RecordList>\n'
                )
                await self.message(manscdp("Response", "RecordInfo", sn, channel, inner))
        elif cmd == "DeviceInfo":
            inner = (
                "<Result>OK</Result>\n<DeviceName>模拟摄像机</DeviceName>\n<Manufacturer>Sim</Manufacturer>\n"
                f"<Model>SIM-1</Model>\n<Firmware>V1.0</Firmware>\n<Channel>{len(self.channels)}</Channel>\n"
            )
            await self.message(manscdp("Response", "DeviceInfo", sn, self.device_id, inner))
        elif cmd == "DeviceControl":
            self.controls.append(msg)
            ptz = xml_text(msg.body, "PTZCmd")
            if ptz:
                self.ptz_commands.append(ptz)

    def _invite(self, msg: Msg) -> None:
        if not self.answer_invites:
            self.send(reply(msg, 100, "Trying"))
            return
        offer = msg.body.decode()
        lines = dict((line[:1], line[2:]) for line in offer.split("\r\n") if len(line) > 2 and line[1] == "=")
        media = next(line[2:].split() for line in offer.split("\r\n") if line.startswith("m="))
        host = lines["c"].split()[-1]
        port = int(media[1])
        tcp = media[2].upper().startswith("TCP")
        setup = next((line.split(":")[1] for line in offer.split("\r\n") if line.startswith("a=setup:")), "")
        ssrc = int(lines.get("y", "0") or "0")
        channel = msg.uri.split(":")[1].split("@")[0]
        call_id = msg.header("Call-ID")
        kind = "UDP" if not tcp else ("TCP-passive" if setup == "passive" else "TCP-active")
        stream = Stream(call_id, ssrc, kind, channel, offer=offer)
        stream.remote = (host, port)  # type: ignore[attr-defined]
        self.streams[call_id] = stream
        self._tasks.append(asyncio.create_task(self._answer(msg, stream, tcp)))

    async def _answer(self, msg: Msg, stream: Stream, tcp: bool) -> None:
        local_port = 0
        if stream.transport == "TCP-active":
            ready = asyncio.Event()
            stream.connected = asyncio.get_running_loop().create_future()  # type: ignore[attr-defined]

            async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                if not stream.connected.done():  # type: ignore[attr-defined]
                    stream.connected.set_result(writer)  # type: ignore[attr-defined]
                ready.set()

            stream.server = await asyncio.start_server(accepted, "127.0.0.1", 0)
            local_port = stream.server.sockets[0].getsockname()[1]
        proto = "TCP/RTP/AVP" if tcp else "RTP/AVP"
        sdp = (
            f"v=0\r\no={stream.channel} 0 0 IN IP4 127.0.0.1\r\ns=Play\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=video {local_port or 15999} {proto} 96\r\na=sendonly\r\na=rtpmap:96 PS/90000\r\n"
            + (
                "a=setup:"
                + ("passive" if stream.transport == "TCP-active" else "active")
                + "\r\na=connection:new\r\n"
                if tcp
                else ""
            )
            + f"y={stream.ssrc:010d}\r\nf=\r\n"
        ).encode()
        extra = [
            ("Contact", f"<sip:{stream.channel}@{self.local[0]}:{self.local[1]}>"),
            ("Content-Type", "application/sdp"),
        ]
        self.send(reply(msg, 200, "OK", extra, sdp, to_tag=f"inv{random.randrange(10**6)}"))

    async def _stream(self, stream: Stream) -> None:
        """PS over RTP at ``fps`` until BYE or :meth:`stop_media`, looping the clip."""
        remote = stream.remote  # type: ignore[attr-defined]
        loop = asyncio.get_running_loop()
        udp: asyncio.DatagramTransport | None = None
        writer: asyncio.StreamWriter | None = None
        if stream.transport == "UDP":
            udp, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, remote_addr=remote)
        elif stream.transport == "TCP-passive":
            _, writer = await asyncio.open_connection(*remote)
        else:
            writer = await asyncio.wait_for(stream.connected, 10)  # type: ignore[attr-defined]
        seq = random.randrange(65536)
        pts = 0
        try:
            n = 0
            while not stream.stopped:
                frame, key = self.frames[n % len(self.frames)]
                pack = ps_pack(frame, pts, key)
                chunks = [pack[i : i + 1400] for i in range(0, len(pack), 1400)]
                for i, chunk in enumerate(chunks):
                    packet = rtp(chunk, seq, pts, stream.ssrc, i == len(chunks) - 1)
                    seq += 1
                    stream.packets += 1
                    if udp is not None:
                        udp.sendto(packet)
                    elif writer is not None:
                        writer.write(struct.pack("!H", len(packet)) + packet)
                if writer is not None:
                    await writer.drain()
                n += 1
                pts += int(90000 / self.fps)
                if self.playback_frames is not None and "s=Playback" in stream.offer and n >= self.playback_frames:
                    # The end of the recording: say so (§9.8 MediaStatus, NotifyType 121) and stop.
                    stream.stopped = True
                    body = manscdp("Notify", "MediaStatus", n, stream.channel, "<NotifyType>121</NotifyType>\n")
                    await self.message(body)
                    break
                await asyncio.sleep(1 / self.fps)
        except (ConnectionError, OSError):
            pass
        finally:
            if udp is not None:
                udp.close()
            if writer is not None:
                writer.close()

    def stop_media(self) -> None:
        """Stop sending video on every stream without a BYE (a stalled camera)."""
        for stream in self.streams.values():
            stream.stopped = True

    async def _stop_stream(self, stream: Stream) -> None:
        stream.stopped = True
        if stream.task is not None:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(stream.task, 2)
        if stream.server is not None:
            stream.server.close()
