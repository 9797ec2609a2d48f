"""The voice's seam into aiortc: the receiver's audio packets before any decoding.

The same replacements :mod:`dispatchd.video.seam` makes on a video receiver (read it first), made
on an audio receiver: its jitter buffer becomes :class:`AudioReceiverTap`, which hands every RTP
packet on as it comes — sequence number, timestamp, payload type, payload — after aiortc removed
SRTP, and its decoder queue answers "stop" at once, so the decoder thread ends before it creates a
decoder. G.711 from the browser thus reaches the caller's leg without being decoded. The sender needs
no change: given ``av.Packet`` s, aiortc's G.711 encoder only stamps them (``pack``). The answer
keeps one codec (:func:`keep_codec`), the caller's law where the browser has it.

The names are private to aiortc and written against the release pinned in ``pyproject.toml`` (the
video seam refuses any other); ``tests/channels/hotline/voice/test_seam.py`` exercises them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from aiortc import RTCConfiguration, RTCIceServer, RTCRtpReceiver, RTCRtpTransceiver

from dispatchd.config import VideoSettings

__all__ = ["AudioReceiverTap", "SeamError", "configuration", "keep_codec", "tap_audio_receiver"]

JITTER_BUFFER: Final = "_RTCRtpReceiver__jitter_buffer"
DECODER_QUEUE: Final = "_RTCRtpReceiver__decoder_queue"
CODECS: Final = "_codecs"


class SeamError(RuntimeError):
    """aiortc no longer looks the way this module expects."""


class _NoDecoder:
    """Stands in for the receiver's decoder input queue: nothing is ever decoded."""

    def get(self, *args: Any, **kwargs: Any) -> None:
        return None

    def put(self, item: Any, *args: Any, **kwargs: Any) -> None:
        return None


class AudioReceiverTap:
    """Stands in for an audio receiver's jitter buffer: each RTP packet goes to ``on_packet``."""

    capacity = 16

    def __init__(self, on_packet: Callable[[Any], None]) -> None:
        self.on_packet = on_packet
        self.packets = 0

    def add(self, packet: Any) -> tuple[bool, None]:
        """Called by the receiver for each packet (``payload_type``, ``sequence_number``,
        ``timestamp``, ``ssrc``, ``marker``, ``payload``), SRTP already removed; "no frame" back."""
        self.packets += 1
        self.on_packet(packet)
        return False, None


def tap_audio_receiver(receiver: RTCRtpReceiver, on_packet: Callable[[Any], None]) -> AudioReceiverTap:
    """Make an audio ``receiver`` hand its RTP packets to ``on_packet`` instead of decoding them.

    Call after ``setRemoteDescription`` and before the connection starts the receiver.
    """
    for name in (JITTER_BUFFER, DECODER_QUEUE):
        if not hasattr(receiver, name):
            raise SeamError(f"RTCRtpReceiver has no {name}: aiortc changed")
    existing = getattr(receiver, JITTER_BUFFER)
    if isinstance(existing, AudioReceiverTap):
        existing.on_packet = on_packet
        return existing
    tap = AudioReceiverTap(on_packet)
    setattr(receiver, JITTER_BUFFER, tap)
    setattr(receiver, DECODER_QUEUE, _NoDecoder())
    return tap


def keep_codec(transceiver: RTCRtpTransceiver, name: str) -> bool:
    """Answer with ``name`` only (PCMU, PCMA, opus), out of what the remote offer and aiortc share;
    False when the offer lacks it. (Preferences set after ``setRemoteDescription`` would not count:
    the negotiated list is the transceiver's private ``_codecs``.)"""
    codecs = getattr(transceiver, CODECS, None)
    if codecs is None:
        raise SeamError("RTCRtpTransceiver has no _codecs: aiortc changed")
    chosen = next((c for c in codecs if c.mimeType.split("/")[1].upper() == name.upper()), None)
    if chosen is None:
        return False
    setattr(transceiver, CODECS, [chosen])
    return True


def configuration(settings: VideoSettings) -> RTCConfiguration:
    """ICE servers of ``[video]`` (the console's sessions go where the meetings' go); none by
    default, so no public STUN server is tried."""
    servers = [
        RTCIceServer(
            urls=url, username=settings.ice_username or None, credential=settings.ice_credential or None
        )
        for url in settings.ice_servers.split()
    ]
    return RTCConfiguration(iceServers=servers)
