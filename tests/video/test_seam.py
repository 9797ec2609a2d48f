"""The forwarding seam into aiortc's internals: pinned version, private names, no decoder, PLI routing."""

from __future__ import annotations

import asyncio
import fractions
import threading
from typing import Any

import aiortc
import av
import numpy as np
import pytest
from aiohttp.test_utils import TestClient
from aiortc import MediaStreamTrack, RTCPeerConnection

from dispatchd.video import seam
from dispatchd.video.framing import is_keyframe
from tests.conftest import COUNTY, UserFactory
from tests.video.conftest import create_meeting, ws_url
from tests.video.peers import MeetingPeer


def test_version_is_pinned() -> None:
    """The installed aiortc is the pinned one, and any other version is refused with a clear error."""
    seam.check_version()
    with pytest.raises(seam.SeamError, match=r"1\.16\.0"):
        seam.check_version("1.17.0")


async def test_private_names_exist() -> None:
    """Every private attribute the seam replaces or reads exists on real aiortc objects of the pinned
    release: the receiver's jitter buffer, decoder queue, NACK generator, RTX map and RTP handler,
    the sender's keyframe and RTCP handlers and sender-report counters, the negotiated codecs and
    header extensions, the outbound SRTP session and the ICE connection's selected pairs."""
    pc = RTCPeerConnection()
    try:
        t = pc.addTransceiver("video")
        for name in (
            seam._JITTER_BUFFER,
            seam._DECODER_QUEUE,
            seam._SEND_RTCP_PLI,
            seam._NACK_GENERATOR,
            seam._RTX_SSRC,
            seam._HANDLE_RTP,
        ):
            assert hasattr(t.receiver, name), name
        assert callable(getattr(t.sender, seam._SEND_KEYFRAME))
        assert callable(getattr(t.sender, seam._HANDLE_RTCP))
        for name in (seam._SR_NTP, seam._SR_RTP, seam._SR_PACKETS, seam._SR_OCTETS):
            assert isinstance(getattr(t.sender, name), int), name
        assert isinstance(getattr(t, seam._CODECS), list)
        assert isinstance(getattr(t, seam._HEADER_EXTENSIONS), list)
        dtls = t.sender.transport
        assert hasattr(dtls, seam._TX_SRTP)
        assert isinstance(getattr(getattr(dtls.transport, seam._ICE_CONNECTION), seam._NOMINATED), dict)
        tap = seam.tap_receiver(t.receiver, "video", "VP8", lambda frame: None)
        assert getattr(t.receiver, seam._JITTER_BUFFER) is tap
    finally:
        await pc.close()


def encoded_clip(frames: int = 30) -> list[bytes]:
    """A few VP8 frames of 160×120, encoded once up front (the test's publisher never encodes live)."""
    enc = av.CodecContext.create("libvpx", "w")
    enc.width, enc.height, enc.pix_fmt = 160, 120, "yuv420p"
    enc.time_base = fractions.Fraction(1, 15)
    enc.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    enc.gop_size = 15
    out: list[bytes] = []
    for i in range(frames):
        img = np.full((120, 160, 3), (i * 8) % 255, np.uint8)
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = i
        out += [bytes(p) for p in enc.encode(frame)]
    return out


class PacketTrack(MediaStreamTrack):
    """A camera that sends pre-encoded VP8 packets in a loop: no encoder runs while the test does."""

    kind = "video"

    def __init__(self, clip: list[bytes], fps: int = 15) -> None:
        super().__init__()
        self.clip, self.fps, self.n = clip, fps, 0

    async def recv(self) -> av.Packet:
        await asyncio.sleep(1 / self.fps)
        packet = av.Packet(self.clip[self.n % len(self.clip)])
        packet.pts = self.n * (90000 // self.fps)
        packet.time_base = fractions.Fraction(1, 90000)
        self.n += 1
        return packet


async def test_no_decoder_runs_in_the_forwarding_path(
    video_client: TestClient[Any, Any], make_user: UserFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Frames go publisher → server → subscriber while aiortc's get_decoder is never called and no decoder thread lives."""
    decoders: list[Any] = []
    real = aiortc.rtcrtpreceiver.get_decoder

    def counting_get_decoder(codec: Any) -> Any:
        decoders.append(codec)
        return real(codec)

    monkeypatch.setattr(aiortc.rtcrtpreceiver, "get_decoder", counting_get_decoder)
    officer = await make_user("duty_officer", COUNTY)
    data = await create_meeting(video_client, officer.headers, invite=["330381001"])
    clip = await asyncio.to_thread(encoded_clip)
    chair = MeetingPeer(
        ws_url(video_client, data["chair_link"]["url"]), track=PacketTrack(clip), decode=False, slots=0
    )
    viewer = MeetingPeer(ws_url(video_client, data["links"][0]["url"]), colour=None, decode=False)
    # The viewer counts encoded frames through the same seam instead of decoding them.
    received: list[bytes] = []
    plis: list[int] = []
    try:
        await chair.join()
        sender = next(t.sender for t in chair.pc.getTransceivers() if t.sender.track is not None)
        seam.on_keyframe_request(sender, lambda: plis.append(1))

        def tap_viewer(mid: str, track: MediaStreamTrack) -> None:
            t = next(t for t in viewer.pc.getTransceivers() if t.mid == mid)
            seam.tap_receiver(t.receiver, "video", "VP8", lambda frame: received.append(frame.data))

        viewer.on_track = tap_viewer
        await viewer.join()
        await viewer.wait_for(lambda: len(received) >= 20)
        assert any(is_keyframe("VP8", d) for d in received[:3])  # the subscriber starts at a keyframe
        assert set(received) <= set(clip)  # byte-identical frames: forwarded, not re-encoded
        assert plis, "the server asked the publisher for a keyframe (RTCP PLI) for the new subscriber"
        assert decoders == []
        assert not [t.name for t in threading.enumerate() if t.name.endswith("-decoder") and t.is_alive()]
    finally:
        await chair.close()
        await viewer.close()
