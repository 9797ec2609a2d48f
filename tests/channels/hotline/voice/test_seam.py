"""The voice's seam into aiortc: the private names it replaces exist in the pinned release."""

from __future__ import annotations

from typing import Any

from aiortc import RTCPeerConnection, RTCSessionDescription

from dispatchd.channels.hotline.voice import seam
from tests.channels.hotline.voice.peers import OfficerPeer


async def test_audio_tap_replaces_the_audio_receivers_buffer() -> None:
    """The tap takes the place of an audio receiver's jitter buffer and decoder queue, hands every
    packet on and tells the receiver no frame is complete (so nothing is decoded); tapped once."""
    pc = RTCPeerConnection()
    try:
        t = pc.addTransceiver("audio")
        seen: list[Any] = []
        tap = seam.tap_audio_receiver(t.receiver, seen.append)
        assert getattr(t.receiver, seam.JITTER_BUFFER) is tap
        assert getattr(t.receiver, seam.DECODER_QUEUE).get() is None
        assert tap.add("packet") == (False, None) and seen == ["packet"]
        assert seam.tap_audio_receiver(t.receiver, lambda p: None) is tap
    finally:
        await pc.close()


async def test_keep_codec_narrows_the_answer() -> None:
    """After the remote offer, keeping PCMA leaves only PCMA in the answer; a codec not offered is refused."""
    offerer = OfficerPeer(1000)
    answerer = RTCPeerConnection()
    try:
        offer = await offerer.offer()
        await answerer.setRemoteDescription(RTCSessionDescription(sdp=offer["sdp"], type="offer"))
        transceiver = answerer.getTransceivers()[0]
        assert not seam.keep_codec(transceiver, "G729")
        assert seam.keep_codec(transceiver, "PCMA")
        await answerer.setLocalDescription(await answerer.createAnswer())
        audio = next(
            line for line in answerer.localDescription.sdp.splitlines() if line.startswith("m=audio")
        )
        assert audio.split()[3:] == ["8"]
    finally:
        await offerer.close()
        await answerer.close()
