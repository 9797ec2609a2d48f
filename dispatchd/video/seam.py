"""The one module that reaches into aiortc's internals, for forwarding without transcoding.

Stock aiortc decodes every received track in a thread per receiver and encodes once per sender.
To forward encoded frames instead, this module changes three things on individual objects (never on
aiortc's classes or modules, so peers that do decode, such as test clients, are unaffected):

1. **The receiver's jitter buffer** is replaced by an adapter around
   :class:`dispatchd.video.framing.FrameAssembler`. aiortc's receiver still does everything before
   it — SRTP, RTX unwrapping, NACK generation (RFC 4585), REMB, statistics, depayloading — and calls
   ``add(packet)``; the adapter hands every completed frame to the forwarder at once (marker-bit
   release) and returns "no frame" so the receiver's decode step never sees one. The adapter's
   "keyframe needed" answer makes the receiver send the PLI itself.
2. **The receiver's decoder input queue** is replaced by one whose ``get`` answers "stop" at once,
   so the decoder thread aiortc starts in ``receive()`` ends before it creates a decoder.
3. **The sender's keyframe hook** (``_send_keyframe``, which aiortc calls on an RTCP PLI or FIR from
   the subscriber) is pointed at the forwarding track, which passes the request to the publisher
   (:func:`on_keyframe_request`, for senders fed by a track).
4. **Direct sending** (:class:`DirectSender`): a participant's receiving slot does not feed its
   sender a track. Its packets (:class:`dispatchd.video.forward.RtpStream`) are protected with the
   connection's outbound SRTP session and written on the ICE connection's selected pair as they
   are made — no sender task, no ``RtpPacket`` objects, no packetising per subscriber. The sender
   object stays for RTCP: its own task sends the sender reports (from counters this module keeps
   up to date), and its RTCP handler is replaced to route the subscriber's NACK to the slot's
   history, PLI/FIR to the publisher, and REMB and receiver-report loss to the link estimate.
5. **Simulcast** (:func:`tap_receiver` with ``layers``): the receiver of a simulcast m-line gets
   every layer's packets (the router matches them by payload type). A wrapper in front of its
   ``_handle_rtp_packet`` learns each SSRC's rid from the RFC 8852 header extensions, teaches the
   receiver the RTX SSRC of each layer (from ``repaired-rtp-stream-id``; the offer lists no SSRCs)
   and gives each layer its own NACK generator; the tap assembles each layer's frames apart.

The names used here are private to aiortc and may change in any release, hence the pinned version
(``pyproject.toml``) and :func:`check_version`; ``tests/video/test_seam.py`` exercises each of them.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable
from typing import Any

import aiortc
from aiortc import RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters
from aiortc.rtcrtpreceiver import NackGenerator
from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPsfbPacket,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    unpack_remb_fci,
)

from dispatchd.video.forward import RtpForwarder, RtpStream
from dispatchd.video.framing import EncodedFrame, FrameAssembler
from dispatchd.video.simulcast import REPAIRED_RID_URI, RID_URI

# The aiortc release whose internals this module was written against.
AIORTC_VERSION = "1.16.0"

_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"
_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
_NACK_GENERATOR = "_RTCRtpReceiver__nack_generator"
_RTX_SSRC = "_RTCRtpReceiver__rtx_ssrc"
_HANDLE_RTP = "_handle_rtp_packet"
_SEND_RTCP_PLI = "_send_rtcp_pli"
_SEND_KEYFRAME = "_send_keyframe"
_HANDLE_RTCP = "_handle_rtcp_packet"
_CODECS = "_codecs"
_HEADER_EXTENSIONS = "_headerExtensions"
# The sender's counters its RTCP task puts in sender reports (RFC 3550 section 6.4.1).
_SR_NTP = "_RTCRtpSender__ntp_timestamp"
_SR_RTP = "_RTCRtpSender__rtp_timestamp"
_SR_PACKETS = "_RTCRtpSender__packet_count"
_SR_OCTETS = "_RTCRtpSender__octet_count"
# Seconds from the NTP era (1900) to the Unix epoch (RFC 5905 section 6).
_NTP_EPOCH = 2208988800
# The outbound SRTP session of a DTLS transport, and the ICE connection of an ICE transport.
_TX_SRTP = "_tx_srtp"
_ICE_CONNECTION = "_connection"
_NOMINATED = "_nominated"


class SeamError(RuntimeError):
    """aiortc no longer looks the way this module expects."""


def check_version(version: str | None = None) -> None:
    """Refuse to run against an aiortc release the forwarding seam was not written for."""
    found = version if version is not None else aiortc.__version__
    if found != AIORTC_VERSION:
        raise SeamError(
            f"aiortc {found} is installed but video forwarding is written against aiortc {AIORTC_VERSION}"
            " (it replaces private parts of RTCRtpReceiver and RTCRtpSender); install the pinned version"
        )


class _NoDecoder:
    """Stands in for the receiver's decoder input queue: nothing is ever decoded."""

    def get(self, *args: Any, **kwargs: Any) -> None:
        return None  # the decoder thread reads "stop" first and exits without creating a decoder

    def put(self, item: Any, *args: Any, **kwargs: Any) -> None:
        return None


class ReceiverTap:
    """Stands in for the receiver's jitter buffer: assembled frames go to ``on_frame``.

    With ``layers`` (simulcast) each rid's frames go to ``layers[rid]`` instead, every SSRC being
    assembled on its own.
    """

    def __init__(
        self,
        receiver: RTCRtpReceiver,
        kind: str,
        codec: str,
        on_frame: Callable[[EncodedFrame], None],
        layers: dict[str, Callable[[EncodedFrame], None]] | None = None,
    ):
        self.receiver = receiver
        self.kind = kind
        self.codec = codec
        self.assembler = FrameAssembler(kind, codec)
        self.on_frame = on_frame
        self.layers = layers
        self.assemblers: dict[int, FrameAssembler] = {}
        self.rids: dict[int, str] = {}  # media SSRC -> rid
        self.ssrcs: dict[str, int] = {}  # rid -> media SSRC
        self.ssrc: int | None = None
        self.packets = 0
        self._waiting: set[str | None] = set()  # asked before that stream's SSRC was known
        self._pending: set[asyncio.Future[None]] = set()
        self._time = asyncio.get_event_loop().time

    @property
    def capacity(self) -> int:
        return self.assembler.capacity

    def add(self, packet: Any) -> tuple[bool, None]:
        """Called by the receiver for each depayloaded RTP packet (``packet._data``)."""
        self.packets += 1
        ssrc = packet.ssrc
        if self.layers is None:
            self.ssrc = ssrc
            assembler, deliver = self.assembler, self.on_frame
            if None in self._waiting:
                self._waiting.discard(None)
                self.request_keyframe()
        else:
            rid = self.rids.get(ssrc)
            found = self.layers.get(rid) if rid is not None else None
            if found is None:
                return False, None  # a layer not announced, or its rid not seen yet
            deliver = found
            assembler = self.assemblers.get(ssrc) or self.assemblers.setdefault(
                ssrc, FrameAssembler(self.kind, self.codec)
            )
            if rid in self._waiting:
                self._waiting.discard(rid)
                self.request_keyframe(rid)
        frames, keyframe_needed = assembler.push(
            packet.sequence_number, packet.timestamp, bool(packet.marker), packet._data, ssrc, packet.payload
        )
        if frames:
            now = self._time()
            for frame in frames:
                frame.arrival = now
                deliver(frame)
        return keyframe_needed, None

    def learn(self, packet: Any) -> None:
        """Note which layer an SSRC carries (RFC 8852 rid extensions) before the receiver handles it."""
        ext = packet.extensions
        if ext.rtp_stream_id is not None and self.rids.get(packet.ssrc) != ext.rtp_stream_id:
            self.rids[packet.ssrc] = ext.rtp_stream_id
            self.ssrcs[ext.rtp_stream_id] = packet.ssrc
        elif ext.repaired_rtp_stream_id is not None:
            rtx: dict[int, int] = getattr(self.receiver, _RTX_SSRC)
            media = self.ssrcs.get(ext.repaired_rtp_stream_id)
            if media is not None and rtx.get(packet.ssrc) != media:
                rtx[packet.ssrc] = media  # RFC 4588 section 8.3: RTX stream paired by its rid

    def request_keyframe(self, rid: str | None = None) -> None:
        """Send an RTCP PLI to the publisher of one stream (RFC 4585 section 6.3.1)."""
        ssrc = self.ssrc if self.layers is None else self.ssrcs.get(rid or "")
        if ssrc is None:
            self._waiting.add(rid)
            return
        send = getattr(self.receiver, _SEND_RTCP_PLI)
        future = asyncio.ensure_future(send(ssrc))
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)


def limit_host_addresses(addresses: list[str]) -> None:
    """Offer only ``addresses`` as ICE host candidates, for every peer connection of the process.

    aioice otherwise offers every interface address except loopback; a command centre wants its
    media on one network (and the test suite on loopback). This one is a process-wide setting of
    aioice, not of one object.
    """
    import aioice.ice  # the module whose function is replaced, named where it is replaced

    chosen = list(addresses)

    def host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        return [a for a in chosen if (":" in a and use_ipv6) or (":" not in a and use_ipv4)]

    aioice.ice.get_host_addresses = host_addresses


def tap_receiver(
    receiver: RTCRtpReceiver,
    kind: str,
    codec: str,
    on_frame: Callable[[EncodedFrame], None],
    layers: dict[str, Callable[[EncodedFrame], None]] | None = None,
) -> ReceiverTap:
    """Make ``receiver`` hand encoded frames to ``on_frame`` (or per rid to ``layers``) instead of
    decoding them.

    Call after ``setRemoteDescription`` and before the connection starts the receiver.
    """
    for name in (_JITTER_BUFFER, _DECODER_QUEUE, _SEND_RTCP_PLI, _NACK_GENERATOR, _RTX_SSRC):
        if not hasattr(receiver, name):
            raise SeamError(f"RTCRtpReceiver has no {name}: aiortc changed")
    existing = getattr(receiver, _JITTER_BUFFER)
    if isinstance(existing, ReceiverTap):
        existing.on_frame = on_frame
        if layers is not None:
            existing.layers = layers
        return existing
    tap = ReceiverTap(receiver, kind, codec, on_frame, layers)
    setattr(receiver, _JITTER_BUFFER, tap)
    setattr(receiver, _DECODER_QUEUE, _NoDecoder())
    if layers is not None:
        _per_layer_rtp(receiver, tap)
    return tap


def _per_layer_rtp(receiver: RTCRtpReceiver, tap: ReceiverTap) -> None:
    """Put the rid bookkeeping and a NACK generator per layer in front of the receiver's RTP handler."""
    handle = getattr(receiver, _HANDLE_RTP)
    rtx: dict[int, int] = getattr(receiver, _RTX_SSRC)
    generators: dict[int, NackGenerator] = {}

    async def handle_rtp_packet(packet: Any, arrival_time_ms: int) -> None:
        tap.learn(packet)
        media = rtx.get(packet.ssrc, packet.ssrc)
        generator = generators.get(media)
        if generator is None:
            generator = generators[media] = NackGenerator()
        setattr(receiver, _NACK_GENERATOR, generator)  # RFC 4585: sequence numbers are per SSRC
        await handle(packet, arrival_time_ms)

    setattr(receiver, _HANDLE_RTP, handle_rtp_packet)


def accept_rid_extensions(transceiver: RTCRtpTransceiver, ids: dict[str, int]) -> None:
    """Negotiate the rid header extensions (RFC 8852) the offer named, with its ids.

    aiortc keeps only the extensions it knows how to send; its RTP parser reads these two as well.
    Call after ``setRemoteDescription`` (which resets the list) and before ``createAnswer``.
    """
    current = getattr(transceiver, _HEADER_EXTENSIONS, None)
    if current is None:
        raise SeamError("RTCRtpTransceiver has no _headerExtensions: aiortc changed")
    have = {ext.uri for ext in current}
    for uri in (RID_URI, REPAIRED_RID_URI):
        if uri in ids and uri not in have:
            current.append(RTCRtpHeaderExtensionParameters(id=ids[uri], uri=uri))


class HeldTrack(MediaStreamTrack):
    """The track of a directly sending slot's sender: it never yields, so the sender's own RTP task
    waits idle (and ends when the track stops) while the slot writes the packets itself."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self._stopped = asyncio.Event()

    async def recv(self) -> Any:
        await self._stopped.wait()
        raise MediaStreamError

    def stop(self) -> None:
        self._stopped.set()
        super().stop()


class DirectSender:
    """Writes a slot's RTP packets on the subscriber's connection, and routes the subscriber's RTCP.

    ``feedback`` receives what the slot cannot handle itself: ``("remb", bits per second)`` and
    ``("loss", fraction)`` for the link estimate.
    """

    def __init__(
        self,
        transceiver: RTCRtpTransceiver,
        forwarder: RtpForwarder,
        feedback: Callable[[str, float], None] | None = None,
    ) -> None:
        for name in (_SR_NTP, _SR_RTP, _SR_PACKETS, _SR_OCTETS):
            if not hasattr(transceiver.sender, name):
                raise SeamError(f"RTCRtpSender has no {name}: aiortc changed")
        if not callable(getattr(transceiver.sender, _HANDLE_RTCP, None)):
            raise SeamError(f"RTCRtpSender has no {_HANDLE_RTCP}: aiortc changed")
        self.transceiver = transceiver
        self.sender = transceiver.sender
        self.forwarder = forwarder
        self.feedback = feedback
        self.track = HeldTrack(forwarder.kind)
        self.sender.replaceTrack(self.track)
        self._rtcp = getattr(self.sender, _HANDLE_RTCP)
        setattr(self.sender, _HANDLE_RTCP, self._handle_rtcp_packet)
        self._pending: set[asyncio.Future[None]] = set()
        self._socket: socket.socket | None = None
        self.dropped = 0

    def stream(self) -> RtpStream:
        """The slot's outgoing stream as negotiated: SSRC, payload type, RTX, mid and extension ids."""
        t = self.transceiver
        codecs = getattr(t, _CODECS)
        main = next(c for c in codecs if not c.mimeType.lower().endswith("/rtx"))
        rtx = next(
            (
                c
                for c in codecs
                if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") == main.payloadType
            ),
            None,
        )
        ids = {ext.uri: ext.id for ext in getattr(t, _HEADER_EXTENSIONS)}
        return RtpStream(
            self.sender._ssrc,
            main.payloadType,
            codec=main.mimeType.split("/")[1],
            mid=t.mid,
            mid_id=ids.get("urn:ietf:params:rtp-hdrext:sdes:mid"),
            abs_send_time_id=ids.get("http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time")
            if self.forwarder.kind == "video"
            else None,
            rtx_ssrc=self.sender._rtx_ssrc if rtx is not None else None,
            rtx_payload_type=rtx.payloadType if rtx is not None else None,
        )

    def start(self) -> bool:
        """Begin sending once the connection is up; False while it is not."""
        dtls = self.sender.transport
        if dtls.state != "connected" or getattr(dtls, _TX_SRTP, None) is None:
            return False
        connection = getattr(dtls.transport, _ICE_CONNECTION)
        nominated: dict[int, Any] = getattr(connection, _NOMINATED)
        pair = nominated.get(1)
        if pair is None:
            return False
        stream = self.stream()
        protect = getattr(dtls, _TX_SRTP).protect
        sender = self.sender
        address = pair.remote_addr
        self._close_socket()
        transport = getattr(pair.protocol, "transport", None)
        if transport is not None and type(pair.protocol).__name__ == "StunProtocol":
            # The pair's own UDP socket, duplicated: a datagram per packet with no asyncio layer in
            # between (the descriptor is shared, so it stays non-blocking; a full buffer drops).
            self._socket = socket.socket(fileno=os.dup(transport.get_extra_info("socket").fileno()))
        raw = self._socket
        frames = [0]

        def sink(packets: list[bytes]) -> None:
            if nominated.get(1) is not pair:
                self.forwarder.detach()  # ICE moved to another pair, or closed: start again
                self.start()
                return
            if raw is None:  # relayed (TURN): through aioice's own send path
                for packet in packets:
                    self._later(dtls._send_rtp(packet))
            else:
                try:
                    for packet in packets:
                        raw.sendto(protect(packet), address)
                except OSError:
                    self.dropped += 1  # the socket's buffer is full (or it closed): as a lossy link
            frames[0] += 1
            if frames[0] & 3 == 1:
                # The sender's RTCP task reports these (RFC 3550 section 6.4.1: the NTP time of the
                # last packet's RTP timestamp), every fourth frame: a report goes out once a second.
                setattr(sender, _SR_NTP, int((time.time() + _NTP_EPOCH) * 4294967296.0))
                setattr(sender, _SR_RTP, stream.last_timestamp)
                setattr(sender, _SR_PACKETS, stream.packets_sent)
                setattr(sender, _SR_OCTETS, stream.octets_sent)

        self.forwarder.attach(stream, sink)
        return True

    def _close_socket(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _later(self, coro: Any) -> None:
        future = asyncio.ensure_future(coro)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def _handle_rtcp_packet(self, packet: Any) -> None:
        if isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
            self.forwarder.retransmit(packet.lost)  # RFC 4585 section 6.2.1
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
            self.forwarder.request_keyframe()  # RFC 4585 section 6.3.1, RFC 5104 section 4.3.1
        elif isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
            try:
                bitrate, ssrcs = unpack_remb_fci(packet.fci)
            except ValueError:
                return
            if self.feedback is not None and self.sender._ssrc in ssrcs:
                self.feedback("remb", float(bitrate))
        else:
            if isinstance(packet, RtcpRrPacket | RtcpSrPacket) and self.feedback is not None:
                for report in packet.reports:
                    if report.ssrc == self.sender._ssrc:
                        self.feedback("loss", report.fraction_lost / 256)
            await self._rtcp(packet)  # round-trip time and statistics, as aiortc keeps them

    def stop(self) -> None:
        self.forwarder.detach()
        self.track.stop()
        self._close_socket()


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Route the subscriber's PLI/FIR, received by ``sender``, to ``callback``."""
    if not callable(getattr(sender, _SEND_KEYFRAME, None)):
        raise SeamError(f"RTCRtpSender has no {_SEND_KEYFRAME}: aiortc changed")
    setattr(sender, _SEND_KEYFRAME, callback)


def negotiated_codec(transceiver: RTCRtpTransceiver) -> str | None:
    """The codec the transceiver will use (first of the negotiated list), e.g. ``VP8``."""
    codecs = getattr(transceiver, _CODECS, None) or []
    for codec in codecs:
        name = codec.mimeType.split("/")[1].upper()
        if name != "RTX":
            return str(name)
    return None


def restrict_codecs(transceiver: RTCRtpTransceiver, codec: str) -> bool:
    """Keep only ``codec`` (and its RTX) in what was negotiated from the remote offer.

    Forwarding never transcodes, so every participant of a meeting must send and receive the
    same codec. Returns False when the remote did not offer it.
    """
    codecs = getattr(transceiver, _CODECS, None)
    if codecs is None:
        raise SeamError("RTCRtpTransceiver has no _codecs: aiortc changed")
    wanted = codec.upper()
    chosen = next((c for c in codecs if c.mimeType.split("/")[1].upper() == wanted), None)
    if chosen is None:
        return False
    kept = [chosen] + [
        c
        for c in codecs
        if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") == chosen.payloadType
    ]
    setattr(transceiver, _CODECS, kept)
    return True
