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
   the subscriber) is pointed at the forwarding track, which passes the request to the publisher.

Senders need no change: given ``av.Packet`` s by their track, they packetise them (``encoder.pack``)
and keep their own RTP history for NACK retransmission.

The names used here are private to aiortc and may change in any release, hence the pinned version
(``pyproject.toml``) and :func:`check_version`; ``tests/video/test_seam.py`` exercises each of them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiortc
from aiortc import RTCRtpReceiver, RTCRtpSender, RTCRtpTransceiver

from dispatchd.video.framing import EncodedFrame, FrameAssembler

# The aiortc release whose internals this module was written against.
AIORTC_VERSION = "1.16.0"

_JITTER_BUFFER = "_RTCRtpReceiver__jitter_buffer"
_DECODER_QUEUE = "_RTCRtpReceiver__decoder_queue"
_SEND_RTCP_PLI = "_send_rtcp_pli"
_SEND_KEYFRAME = "_send_keyframe"
_CODECS = "_codecs"


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
    """Stands in for the receiver's jitter buffer: assembled frames go to ``on_frame``."""

    def __init__(
        self, receiver: RTCRtpReceiver, kind: str, codec: str, on_frame: Callable[[EncodedFrame], None]
    ):
        self.receiver = receiver
        self.kind = kind
        self.assembler = FrameAssembler(kind, codec)
        self.on_frame = on_frame
        self.ssrc: int | None = None
        self.packets = 0
        self._pli_waiting = False  # asked before the first packet told us the publisher's SSRC
        self._pending: set[asyncio.Future[None]] = set()

    @property
    def capacity(self) -> int:
        return self.assembler.capacity

    def add(self, packet: Any) -> tuple[bool, None]:
        """Called by the receiver for each depayloaded RTP packet (``packet._data``)."""
        self.packets += 1
        self.ssrc = packet.ssrc
        if self._pli_waiting:
            self._pli_waiting = False
            self.request_keyframe()
        frames, keyframe_needed = self.assembler.push(
            packet.sequence_number, packet.timestamp, bool(packet.marker), packet._data, packet.ssrc
        )
        for frame in frames:
            self.on_frame(frame)
        return keyframe_needed, None

    def request_keyframe(self) -> None:
        """Send an RTCP PLI to the publisher (RFC 4585 section 6.3.1)."""
        if self.ssrc is None:
            self._pli_waiting = True
            return
        send = getattr(self.receiver, _SEND_RTCP_PLI)
        future = asyncio.ensure_future(send(self.ssrc))
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
    receiver: RTCRtpReceiver, kind: str, codec: str, on_frame: Callable[[EncodedFrame], None]
) -> ReceiverTap:
    """Make ``receiver`` hand encoded frames to ``on_frame`` instead of decoding them.

    Call after ``setRemoteDescription`` and before the connection starts the receiver.
    """
    for name in (_JITTER_BUFFER, _DECODER_QUEUE, _SEND_RTCP_PLI):
        if not hasattr(receiver, name):
            raise SeamError(f"RTCRtpReceiver has no {name}: aiortc changed")
    existing = getattr(receiver, _JITTER_BUFFER)
    if isinstance(existing, ReceiverTap):
        existing.on_frame = on_frame
        return existing
    tap = ReceiverTap(receiver, kind, codec, on_frame)
    setattr(receiver, _JITTER_BUFFER, tap)
    setattr(receiver, _DECODER_QUEUE, _NoDecoder())
    return tap


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
