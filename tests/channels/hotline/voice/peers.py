"""Real peers for the voice tests: a SIP caller that speaks a tone, an aiortc officer that speaks another.

:class:`ToneCaller` is a small user agent client over UDP on loopback (RFC 3261 §13.2): INVITE with a
G.711 offer, ACK of the 2xx, RTP (RFC 3550) carrying a sine at its packet time, RFC 4733 keys on
demand, BYE either way. It keeps every payload it receives, so a test can ask what it heard.
:class:`OfficerPeer` is an aiortc peer connection with a sine as its microphone and a data channel,
the way the console connects; it keeps what it decodes.
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import secrets
import struct
from typing import Any

import av
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from dispatchd.channels.hotline.sdp import parse_sdp
from dispatchd.channels.hotline.sip import (
    Headers,
    Request,
    Response,
    parse_message,
    parse_name_addr,
    response_to,
)
from dispatchd.channels.hotline.voice import dtmf, g711, tones
from dispatchd.channels.hotline.voice.rtp import build_rtp, parse_rtp


class _Socket(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.queue.put_nowait((data, (str(addr[0]), int(addr[1]))))


class ToneCaller:
    """One call to ``dialled`` at ``host:port``, speaking ``frequency`` Hz in ``codec``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        dialled: str = "967999",
        caller: str = "13800001111",
        frequency: float = 440.0,
        codec: int = g711.PCMU,
        ptime: int = 20,
        offer: bool = True,
    ) -> None:
        self.target = (host, port)
        self.dialled = dialled
        self.caller = caller
        self.frequency = frequency
        self.codec = codec
        self.ptime = ptime
        self.send_offer = offer
        self.call_id = secrets.token_hex(10) + "@tone-caller"
        self.tag = secrets.token_hex(5)
        self.cseq = 1
        self.to_tag = ""
        self.remote_uri = ""
        self.remote_rtp: tuple[str, int] | None = None
        self.received: list[tuple[int, int, bytes]] = []  # (payload type, sequence, payload)
        self.answered = asyncio.Event()
        self.final_status = 0
        self.final: Response | None = None
        self.bye_received = asyncio.Event()
        self.bye_answered = asyncio.Event()
        self.sending = True
        self._tasks: list[asyncio.Task[None]] = []
        self._sip: asyncio.DatagramTransport | None = None
        self._rtp: asyncio.DatagramTransport | None = None
        self._sip_inbox = _Socket()
        self._rtp_inbox = _Socket()
        self._seq = secrets.randbelow(60000)
        self._ts = secrets.randbits(31)
        self._ssrc = secrets.randbits(32)

    @property
    def local(self) -> tuple[str, int]:
        assert self._sip is not None
        host, port = self._sip.get_extra_info("sockname")[:2]
        return str(host), int(port)

    @property
    def rtp_port(self) -> int:
        assert self._rtp is not None
        return int(self._rtp.get_extra_info("sockname")[1])

    def _request(self, method: str, uri: str, cseq: int, branch: str, body: bytes = b"") -> Request:
        host, port = self.local
        fields = [
            ("Via", f"SIP/2.0/UDP {host}:{port};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{self.caller}@{host}>;tag={self.tag}"),
            ("To", f"<sip:{self.dialled}@{self.target[0]}>" + (f";tag={self.to_tag}" if self.to_tag else "")),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", f"<sip:{self.caller}@{host}:{port}>"),
        ]
        if body:
            fields.append(("Content-Type", "application/sdp"))
        return Request(method, uri, Headers(fields), body)

    def _sdp(self) -> bytes:
        name = "PCMU" if self.codec == g711.PCMU else "PCMA"
        return (
            f"v=0\r\no=tone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {self.rtp_port} RTP/AVP {self.codec} 101\r\na=rtpmap:{self.codec} {name}/8000\r\n"
            f"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:{self.ptime}\r\na=sendrecv\r\n"
        ).encode()

    async def call(self) -> None:
        """Send the INVITE and start listening; :attr:`answered` is set at the 2xx."""
        loop = asyncio.get_running_loop()
        self._sip, _ = await loop.create_datagram_endpoint(
            lambda: self._sip_inbox, local_addr=("127.0.0.1", 0)
        )
        self._rtp, _ = await loop.create_datagram_endpoint(
            lambda: self._rtp_inbox, local_addr=("127.0.0.1", 0)
        )
        uri = f"sip:{self.dialled}@{self.target[0]}:{self.target[1]}"
        self._invite_branch = "z9hG4bK" + secrets.token_hex(6)
        self._invite = self._request(
            "INVITE", uri, 1, self._invite_branch, self._sdp() if self.send_offer else b""
        )
        self._sip.sendto(self._invite.encode(), self.target)
        self._tasks = [
            asyncio.create_task(self._signalling()),
            asyncio.create_task(self._listen()),
        ]

    async def _signalling(self) -> None:
        assert self._sip is not None
        while True:
            data, source = await self._sip_inbox.queue.get()
            message = parse_message(data)
            if isinstance(message, Response) and message.cseq.method == "INVITE":
                if message.status >= 200 and not self.answered.is_set():
                    self.final_status = message.status
                    self.final = message
                    self.to_tag = message.to.tag or ""
                    if message.status < 300:
                        contact = message.headers.get("Contact")
                        self.remote_uri = parse_name_addr(contact).uri if contact else self._invite.uri
                        sdp = parse_sdp(message.body.decode())
                        self.remote_rtp = sdp.remote_rtp()
                        body = b""
                        if not self.send_offer:  # the offer came in the 200: our answer goes in the ACK
                            body = self._sdp()
                        ack = self._request("ACK", self.remote_uri, 1, "z9hG4bK" + secrets.token_hex(6), body)
                        self._sip.sendto(ack.encode(), self.target)
                        self._tasks.append(asyncio.create_task(self._speak()))
                    else:
                        ack = self._request("ACK", self._invite.uri, 1, self._invite_branch)
                        self._sip.sendto(ack.encode(), self.target)
                    self.answered.set()
            elif isinstance(message, Response) and message.cseq.method == "BYE":
                self.bye_answered.set()
            elif isinstance(message, Request) and message.method == "BYE":
                self._sip.sendto(response_to(message, 200).encode(), source)
                self.sending = False
                self.bye_received.set()

    async def _listen(self) -> None:
        while True:
            data, _ = await self._rtp_inbox.queue.get()
            with contextlib.suppress(ValueError):
                packet = parse_rtp(data)
                self.received.append((packet.payload_type, packet.sequence, packet.payload))

    async def _speak(self) -> None:
        """The tone, one packet per packet time, paced by the loop's clock (not by sleeps adding up)."""
        assert self._rtp is not None and self.remote_rtp is not None
        loop = asyncio.get_running_loop()
        samples = self.ptime * 8
        start, n = loop.time(), 0
        while self.sending:
            wave = tones.tone(self.frequency, samples / 8000, start=n * samples)
            packet = build_rtp(
                self.codec, self._seq, self._ts, self._ssrc, g711.encode(wave, self.codec), n == 0
            )
            self._rtp.sendto(packet, self.remote_rtp)
            self._seq = (self._seq + 1) & 0xFFFF
            self._ts = (self._ts + samples) & 0xFFFFFFFF
            n += 1
            await asyncio.sleep(max(start + n * self.ptime / 1000 - loop.time(), 0))

    async def press(self, key: str) -> None:
        """One key as an RFC 4733 train (updates every 50 ms, three ends)."""
        assert self._rtp is not None and self.remote_rtp is not None
        start = self._ts
        train = dtmf.event_packets(key)
        for i, (marker, payload) in enumerate(train):
            self._rtp.sendto(build_rtp(101, self._seq, start, self._ssrc, payload, marker), self.remote_rtp)
            self._seq = (self._seq + 1) & 0xFFFF
            if i < len(train) - dtmf.END_COPIES:
                await asyncio.sleep(0.05)

    async def cancel(self) -> None:
        """CANCEL the unanswered INVITE (RFC 3261 §9.1: its Request-URI, Call-ID, From, To, branch and
        CSeq number); wait for the INVITE's final answer (487)."""
        assert self._sip is not None and self._invite is not None
        cancel = self._request("CANCEL", self._invite.uri, 1, self._invite_branch)
        for _ in range(6):
            self._sip.sendto(cancel.encode(), self.target)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self.answered.wait()
                    return
        raise AssertionError("no final answer to the cancelled INVITE")

    async def hangup(self) -> None:
        """BYE (retransmitted until its 200)."""
        assert self._sip is not None
        self.sending = False
        self.cseq += 1
        bye = self._request("BYE", self.remote_uri, self.cseq, "z9hG4bK" + secrets.token_hex(6))
        for _ in range(6):
            self._sip.sendto(bye.encode(), self.target)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await self.bye_answered.wait()
                    return
        raise AssertionError("no answer to the BYE")

    def heard(self, payload_type: int | None = None) -> np.ndarray:
        """What arrived, decoded, in sequence order (telephone-events left out)."""
        law = self.codec if payload_type is None else payload_type
        audio = sorted((seq, p) for pt, seq, p in self.received if pt in (g711.PCMU, g711.PCMA) and pt == law)
        if not audio:
            return np.zeros(0, dtype=np.int16)
        return g711.decode(b"".join(p for _, p in audio), law)

    def events(self) -> list[bytes]:
        return [p for pt, _, p in self.received if pt == 101]

    async def close(self) -> None:
        self.sending = False
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for transport in (self._sip, self._rtp):
            if transport is not None:
                transport.close()


class SineTrack(MediaStreamTrack):
    """A microphone that says ``frequency`` Hz: 20 ms frames of 8 kHz mono, paced by the clock."""

    kind = "audio"

    def __init__(self, frequency: float) -> None:
        super().__init__()
        self.frequency = frequency
        self.n = 0
        self._start: float | None = None

    async def recv(self) -> av.AudioFrame:
        loop = asyncio.get_running_loop()
        if self._start is None:
            self._start = loop.time()
        await asyncio.sleep(max(self._start + self.n * 0.02 - loop.time(), 0))
        samples = tones.tone(self.frequency, 0.02, start=self.n * 160)
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = 8000
        frame.pts = self.n * 160
        frame.time_base = fractions.Fraction(1, 8000)
        self.n += 1
        return frame


class OfficerPeer:
    """The console's side of the answer: a sine as microphone, a data channel, what it hears kept."""

    def __init__(self, frequency: float = 1000.0, *, codecs: tuple[str, ...] = ()) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.track = SineTrack(frequency)
        self.codecs = codecs
        self.heard_samples: list[np.ndarray] = []
        self.messages: list[dict[str, Any]] = []
        self.channel = self.pc.createDataChannel("hotline")
        self.channel.on("message", lambda data: self.messages.append(json.loads(data)))
        self._tasks: list[asyncio.Task[None]] = []
        self.pc.on("track", self._on_track)

    async def offer(self) -> dict[str, str]:
        transceiver = self.pc.addTransceiver(self.track, direction="sendrecv")
        if self.codecs:
            from aiortc.rtcrtpsender import RTCRtpSender

            available = RTCRtpSender.getCapabilities("audio").codecs
            transceiver.setCodecPreferences([c for c in available if c.mimeType.split("/")[1] in self.codecs])
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return {"type": "offer", "sdp": self.pc.localDescription.sdp}

    async def accept(self, answer: dict[str, str]) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))

    def answered_codec(self) -> str:
        from aiortc.sdp import SessionDescription

        remote = SessionDescription.parse(self.pc.remoteDescription.sdp)
        audio = next(m for m in remote.media if m.kind == "audio")
        return str(audio.rtp.codecs[0].mimeType.split("/")[1])

    def _on_track(self, track: MediaStreamTrack) -> None:
        self._tasks.append(asyncio.create_task(self._consume(track)))

    async def _consume(self, track: MediaStreamTrack) -> None:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=8000)
        with contextlib.suppress(MediaStreamError, asyncio.CancelledError):
            while True:
                frame = await track.recv()
                for out in resampler.resample(frame):
                    self.heard_samples.append(np.asarray(out.to_ndarray()).reshape(-1).astype(np.int16))

    def heard(self) -> np.ndarray:
        return np.concatenate(self.heard_samples) if self.heard_samples else np.zeros(0, dtype=np.int16)

    def send_key(self, key: str) -> None:
        self.channel.send(json.dumps({"type": "dtmf", "key": key}))

    @property
    def state(self) -> str:
        return str(self.pc.connectionState)

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await self.pc.close()


def share_at(samples: np.ndarray, frequency: float, *, skip: float = 0.3, seconds: float = 1.0) -> float:
    """The share of ``frequency`` in a second of audio after the first ``skip`` seconds (start-up)."""
    start = int(skip * 8000)
    block = samples[start : start + int(seconds * 8000)]
    return tones.tone_share(block, frequency) if len(block) >= 800 else 0.0


def unpack_event(payload: bytes) -> tuple[int, bool, int]:
    event, flags, duration = struct.unpack("!BBH", payload[:4])
    return event, bool(flags & 0x80), duration


class _PhoneCall:
    def __init__(self, number: str, invite: Request, source: tuple[str, int]) -> None:
        self.number = number
        self.invite = invite
        self.source = source
        self.tag = secrets.token_hex(4)
        self.remote_rtp: tuple[str, int] | None = None
        self.answered = asyncio.Event()
        self.ended = asyncio.Event()
        self.cancelled = False
        self.received: list[tuple[int, int, bytes]] = []
        self.rtp: asyncio.DatagramTransport | None = None
        self.speaking: asyncio.Task[None] | None = None
        self.seq = secrets.randbelow(60000)
        self.ts = secrets.randbits(31)
        self.ssrc = secrets.randbits(32)

    def heard(self) -> np.ndarray:
        audio = sorted((seq, p) for pt, seq, p in self.received if pt in (g711.PCMU, g711.PCMA))
        law = next((pt for pt, _, _ in self.received if pt in (g711.PCMU, g711.PCMA)), g711.PCMU)
        return g711.decode(b"".join(p for _, p in audio), law) if audio else np.zeros(0, dtype=np.int16)


class PhoneTrunk:
    """A trunk with phones behind it, on loopback: what each number does when rung.

    ``behaviour[number]`` is ``"answer"`` (after a ring), ``"busy"`` (486) or ``"ring"`` (rings until
    cancelled). With ``username``/``password`` every first INVITE is challenged (407, RFC 3261 §22.3)
    and the retry's credentials are checked. An answered phone speaks ``frequency`` Hz.
    """

    def __init__(
        self,
        behaviour: dict[str, str],
        *,
        frequency: float = 440.0,
        username: str = "",
        password: str = "",
        ring_for: float = 0.3,
    ) -> None:
        self.behaviour = behaviour
        self.frequency = frequency
        self.username = username
        self.password = password
        self.ring_for = ring_for
        self.calls: dict[str, _PhoneCall] = {}  # by Call-ID
        self.rung: list[str] = []
        self.challenged = 0
        self.authenticated = 0
        self._sip: asyncio.DatagramTransport | None = None
        self._inbox = _Socket()
        self._task: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self._sip, _ = await loop.create_datagram_endpoint(lambda: self._inbox, local_addr=("127.0.0.1", 0))
        self._task = asyncio.create_task(self._serve())
        return int(self._sip.get_extra_info("sockname")[1])

    def call_to(self, number: str) -> _PhoneCall | None:
        return next((c for c in self.calls.values() if c.number == number), None)

    def _send(self, message: Request | Response, to: tuple[str, int]) -> None:
        assert self._sip is not None
        self._sip.sendto(message.encode(), to)

    async def _serve(self) -> None:
        while True:
            data, source = await self._inbox.queue.get()
            message = parse_message(data)
            if isinstance(message, Request):
                self._request(message, source)

    def _request(self, request: Request, source: tuple[str, int]) -> None:
        call = self.calls.get(request.call_id)
        if request.method == "INVITE" and request.to.tag is None:
            number = request.uri.split(":", 1)[1].split("@", 1)[0]
            if self.username and "Proxy-Authorization" not in request.headers:
                self.challenged += 1
                challenge = (
                    'Digest realm="trunk.test", nonce="'
                    + secrets.token_hex(8)
                    + '", qop="auth", algorithm=MD5'
                )
                self._send(
                    response_to(
                        request, 407, to_tag=secrets.token_hex(4), extra=[("Proxy-Authenticate", challenge)]
                    ),
                    source,
                )
                return
            if self.username:
                from dispatchd.channels.hotline.voice.digest import parameters, parse_challenge, response

                given = parameters((request.headers.get("Proxy-Authorization") or "").partition(" ")[2])
                challenge = parse_challenge(
                    f'Digest realm="{given["realm"]}", nonce="{given["nonce"]}", qop="auth", algorithm=MD5'
                )
                expected = response(
                    challenge,
                    username=self.username,
                    password=self.password,
                    method="INVITE",
                    uri=given["uri"],
                    cnonce=given["cnonce"],
                    nc=int(given["nc"], 16),
                )
                if given.get("username") != self.username or given.get("response") != expected:
                    self._send(response_to(request, 403, to_tag="x"), source)
                    return
                self.authenticated += 1
            if call is not None:
                return  # a retransmission
            call = _PhoneCall(number, request, source)
            self.calls[request.call_id] = call
            self.rung.append(number)
            self._send(response_to(request, 100), source)
            what = self.behaviour.get(number, "ring")
            if what == "busy":
                self._send(response_to(request, 486, to_tag=call.tag), source)
                return
            self._send(response_to(request, 180, to_tag=call.tag), source)
            if what == "answer":
                self._tasks.append(asyncio.create_task(self._answer(call)))
        elif request.method == "ACK":
            if call is not None and call.remote_rtp is not None and call.speaking is None:
                call.speaking = asyncio.create_task(self._speak(call))
        elif request.method == "CANCEL" and call is not None:
            call.cancelled = True
            self._send(response_to(request, 200, to_tag=call.tag), source)
            self._send(response_to(call.invite, 487, to_tag=call.tag), source)
            call.ended.set()
        elif request.method == "BYE" and call is not None:
            self._send(response_to(request, 200), source)
            call.ended.set()
            if call.speaking is not None:
                call.speaking.cancel()

    async def _answer(self, call: _PhoneCall) -> None:
        await asyncio.sleep(self.ring_for)
        if call.cancelled:
            return
        loop = asyncio.get_running_loop()
        received = _Socket()
        call.rtp, _ = await loop.create_datagram_endpoint(lambda: received, local_addr=("127.0.0.1", 0))
        port = call.rtp.get_extra_info("sockname")[1]
        offer = parse_sdp(call.invite.body.decode())
        call.remote_rtp = offer.remote_rtp()
        body = (
            f"v=0\r\no=phone 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
            f"m=audio {port} RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:101 telephone-event/8000\r\na=sendrecv\r\n"
        ).encode()
        ok = response_to(
            call.invite,
            200,
            to_tag=call.tag,
            extra=[
                (
                    "Contact",
                    f"<sip:{call.number}@127.0.0.1:{self._sip.get_extra_info('sockname')[1] if self._sip else 0}>",
                ),
                ("Content-Type", "application/sdp"),
            ],
            body=body,
        )
        self._send(ok, call.source)
        call.answered.set()

        async def listen() -> None:
            while True:
                data, _ = await received.queue.get()
                with contextlib.suppress(ValueError):
                    packet = parse_rtp(data)
                    call.received.append((packet.payload_type, packet.sequence, packet.payload))

        self._tasks.append(asyncio.create_task(listen()))

    async def _speak(self, call: _PhoneCall) -> None:
        assert call.rtp is not None and call.remote_rtp is not None
        loop = asyncio.get_running_loop()
        start, n = loop.time(), 0
        while not call.ended.is_set():
            wave = tones.tone(self.frequency, 0.02, start=n * 160)
            call.rtp.sendto(
                build_rtp(0, call.seq, call.ts, call.ssrc, g711.encode(wave, 0), n == 0), call.remote_rtp
            )
            call.seq, call.ts, n = (call.seq + 1) & 0xFFFF, (call.ts + 160) & 0xFFFFFFFF, n + 1
            await asyncio.sleep(max(start + n * 0.02 - loop.time(), 0))

    async def press(self, number: str, key: str) -> None:
        call = self.call_to(number)
        assert call is not None and call.rtp is not None and call.remote_rtp is not None
        start = call.ts
        train = dtmf.event_packets(key)
        for i, (marker, payload) in enumerate(train):
            call.rtp.sendto(build_rtp(101, call.seq, start, call.ssrc, payload, marker), call.remote_rtp)
            call.seq = (call.seq + 1) & 0xFFFF
            if i < len(train) - dtmf.END_COPIES:
                await asyncio.sleep(0.05)

    def hangup(self, number: str) -> None:
        """The phone hangs up: BYE in the dialog (From the phone with its tag, to our Contact)."""
        call = self.call_to(number)
        assert call is not None and self._sip is not None
        host, port = self._sip.get_extra_info("sockname")[:2]
        invite = call.invite
        contact = parse_name_addr(invite.headers.get("Contact") or "").uri
        fields = [
            ("Via", f"SIP/2.0/UDP {host}:{port};branch=z9hG4bK{secrets.token_hex(6)}"),
            ("Max-Forwards", "70"),
            ("From", f"{invite.headers.get('To')};tag={call.tag}"),
            ("To", invite.headers.get("From") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", "1 BYE"),
        ]
        self._send(Request("BYE", contact, Headers(fields)), call.source)
        call.ended.set()

    async def close(self) -> None:
        for task in [*self._tasks, *(c.speaking for c in self.calls.values() if c.speaking), self._task]:
            if task is not None:
                task.cancel()
        for call in self.calls.values():
            if call.rtp is not None:
                call.rtp.close()
        if self._sip is not None:
            self._sip.close()
