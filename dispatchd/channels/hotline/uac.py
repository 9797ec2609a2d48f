"""A small SIP caller (user agent client) over UDP: the demo's simulated callers, and the tests'.

It places one call the way a phone behind a trunk does (RFC 3261 §13.2, §9.1, §15): INVITE with a
G.711 offer, retransmitted on T1 doubling until a provisional response; then it waits for the
answer as long as its patience lasts and CANCELs when it runs out (ACKing the 487); once
answered it ACKs, sends some audio (RTP, RFC 3550) to the address of the SDP answer, answers a
BYE from the officer or sends its own after the talk time.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import struct
from dataclasses import dataclass
from typing import Any, Final

from dispatchd.channels.hotline.sdp import parse_sdp
from dispatchd.channels.hotline.sip import (
    Headers,
    Request,
    Response,
    SipParseError,
    parse_message,
    parse_name_addr,
    response_to,
)

T1: Final = 0.5
_PTIME: Final = 0.02  # seconds of audio per RTP packet
_SAMPLES: Final = 160  # 20 ms at 8 kHz


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """How the call went: ``answered`` (then ``hung_up_by`` caller or officer), ``abandoned``, or
    ``refused`` with the final ``status``; ``audio_packets`` sent to the hotline."""

    outcome: str
    status: int
    hung_up_by: str | None = None
    audio_packets: int = 0


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[Request | Response, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        with contextlib.suppress(SipParseError):
            self.queue.put_nowait((parse_message(data), (str(addr[0]), int(addr[1]))))


def _offer(host: str, rtp_port: int) -> bytes:
    session = secrets.randbelow(2**31)
    return (
        f"v=0\r\no=caller {session} {session} IN IP4 {host}\r\ns=-\r\nc=IN IP4 {host}\r\nt=0 0\r\n"
        f"m=audio {rtp_port} RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n"
    ).encode()


class SipCaller:
    """One call from ``caller`` to ``dialled`` at ``host:port``; :meth:`place` runs it to the end."""

    def __init__(self, host: str, port: int, *, caller: str, dialled: str, display: str = "") -> None:
        self.host = host
        self.port = port
        self.caller = caller
        self.dialled = dialled
        self.display = display
        self.call_id = secrets.token_hex(12) + "@dispatchd.demo"
        self.tag = secrets.token_hex(6)
        self._cseq = itertools.count(1)

    async def place(self, *, patience: float, talk: float, audio_seconds: float = 2.0) -> CallOutcome:
        loop = asyncio.get_running_loop()
        signalling, inbox = await loop.create_datagram_endpoint(_Inbox, local_addr=("127.0.0.1", 0))
        media, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
        try:
            return await self._run(signalling, inbox, media, patience, talk, audio_seconds)
        finally:
            signalling.close()
            media.close()

    # -- messages ---------------------------------------------------------------------------

    def _base(
        self, method: str, uri: str, branch: str, cseq: int, local: tuple[str, int], to_tag: str = ""
    ) -> Request:
        here = f"{local[0]}:{local[1]}"
        name = f'"{self.display}" ' if self.display else ""
        fields = [
            ("Via", f"SIP/2.0/UDP {here};branch={branch};rport"),
            ("Max-Forwards", "70"),
            ("From", f"{name}<sip:{self.caller}@{local[0]}>;tag={self.tag}"),
            ("To", f"<sip:{self.dialled}@{self.host}>" + (f";tag={to_tag}" if to_tag else "")),
            ("Call-ID", self.call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Contact", f"<sip:{self.caller}@{here}>"),
            ("User-Agent", "dispatchd-demo-caller"),
        ]
        return Request(method, uri, Headers(fields))

    async def _run(
        self,
        signalling: asyncio.DatagramTransport,
        inbox: _Inbox,
        media: asyncio.DatagramTransport,
        patience: float,
        talk: float,
        audio_seconds: float,
    ) -> CallOutcome:
        loop = asyncio.get_running_loop()
        local = signalling.get_extra_info("sockname")[:2]
        target = (self.host, self.port)
        uri = f"sip:{self.dialled}@{self.host}:{self.port}"
        branch = "z9hG4bK" + secrets.token_hex(8)
        cseq = next(self._cseq)
        invite = self._base("INVITE", uri, branch, cseq, local)
        invite = Request(
            "INVITE",
            uri,
            invite.headers.plus("Content-Type", "application/sdp"),
            _offer(local[0], media.get_extra_info("sockname")[1]),
        )
        signalling.sendto(invite.encode(), target)
        give_up = loop.time() + patience
        retransmit, interval, provisional = loop.time() + T1, T1, False
        final: Response | None = None
        while final is None:
            now = loop.time()
            wait = min(give_up, retransmit if not provisional else give_up) - now
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    message, _ = await inbox.queue.get()
            except TimeoutError:
                if loop.time() >= give_up:
                    return await self._cancel(signalling, inbox, invite, branch, local, target)
                signalling.sendto(invite.encode(), target)  # §17.1.1.2 Timer A
                interval *= 2
                retransmit = loop.time() + interval
                continue
            if isinstance(message, Response) and message.call_id == self.call_id:
                if message.status < 200:
                    provisional = True
                else:
                    final = message
        if final.status >= 300:
            ack = self._base("ACK", uri, branch, cseq, local, final.to.tag or "")  # §17.1.1.3: same branch
            signalling.sendto(ack.encode(), target)
            return CallOutcome("refused", final.status)
        # §13.2.2.4: the ACK of a 2xx goes to the remote target, in a transaction of its own.
        to_tag = final.to.tag or ""
        contact = final.headers.get("Contact")
        remote_uri = parse_name_addr(contact).uri if contact else uri
        ack = self._base("ACK", remote_uri, "z9hG4bK" + secrets.token_hex(8), cseq, local, to_tag)
        signalling.sendto(ack.encode(), target)
        packets = await self._send_audio(media, final, audio_seconds)
        hung_up_by = await self._talk(signalling, inbox, remote_uri, to_tag, local, target, talk)
        return CallOutcome("answered", final.status, hung_up_by, packets)

    async def _cancel(
        self,
        signalling: asyncio.DatagramTransport,
        inbox: _Inbox,
        invite: Request,
        branch: str,
        local: tuple[str, int],
        target: tuple[str, int],
    ) -> CallOutcome:
        # §9.1: the CANCEL repeats the INVITE's Request-URI, Call-ID, From, To, CSeq number and branch.
        cancel = self._base("CANCEL", invite.uri, branch, invite.cseq.number, local)
        signalling.sendto(cancel.encode(), target)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(64 * T1):
                while True:
                    message, _ = await inbox.queue.get()
                    if (
                        isinstance(message, Response)
                        and message.cseq.method == "INVITE"
                        and message.status >= 200
                    ):
                        ack = self._base(
                            "ACK", invite.uri, branch, invite.cseq.number, local, message.to.tag or ""
                        )
                        signalling.sendto(ack.encode(), target)
                        if message.status < 300:  # answered just before the CANCEL arrived: hang up
                            return CallOutcome("answered", message.status, "caller")
                        return CallOutcome("abandoned", message.status)
        return CallOutcome("abandoned", 0)

    async def _send_audio(self, media: asyncio.DatagramTransport, answer: Response, seconds: float) -> int:
        """A few seconds of G.711 to the address of the SDP answer (noise: the demo has no voice)."""
        try:
            sdp = parse_sdp(answer.body.decode())
        except (UnicodeDecodeError, ValueError):
            return 0
        remote = sdp.remote_rtp()
        codec = sdp.audio_codec()
        if remote is None or codec is None:
            return 0
        payload_type = codec[0]
        ssrc = secrets.randbits(32)
        sent = 0
        for sequence in range(int(seconds / _PTIME)):
            header = struct.pack("!BBHII", 0x80, payload_type, sequence, sequence * _SAMPLES, ssrc)
            media.sendto(header + os.urandom(_SAMPLES), remote)
            sent += 1
            await asyncio.sleep(_PTIME)
        return sent

    async def _talk(
        self,
        signalling: asyncio.DatagramTransport,
        inbox: _Inbox,
        remote_uri: str,
        to_tag: str,
        local: tuple[str, int],
        target: tuple[str, int],
        talk: float,
    ) -> str:
        """Until the talk time is over (then our BYE) or the officer's BYE comes (answered 200)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(talk):
                while True:
                    message, source = await inbox.queue.get()
                    if isinstance(message, Request) and message.method == "BYE":
                        ok = response_to(message, 200)
                        signalling.sendto(ok.encode(), source)
                        return "officer"
        bye = self._base("BYE", remote_uri, "z9hG4bK" + secrets.token_hex(8), next(self._cseq), local, to_tag)
        for attempt in range(7):  # Timer E, roughly
            signalling.sendto(bye.encode(), target)
            try:
                async with asyncio.timeout(T1 * 2**attempt):
                    while True:
                        message, _ = await inbox.queue.get()
                        if isinstance(message, Response) and message.cseq.method == "BYE":
                            return "caller"
            except TimeoutError:
                continue
        return "caller"
