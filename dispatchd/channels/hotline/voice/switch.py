"""The media of every call this instance holds, keyed like the SIP agent's calls.

The SIP edge asks the switch for a call's :class:`~dispatchd.channels.hotline.voice.media.CallMedia`
when it answers (the port goes in the SDP answer), hands it the caller's SDP answer when it comes in
an ACK, and closes it when the call ends. An officer's WebRTC leg is *staged* by the service before
the SIP answer and attached by the edge once the caller is answered, so the caller never hears a
200 OK without someone on the other side.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import structlog

from dispatchd.channels.hotline.sdp import SdpOffer
from dispatchd.channels.hotline.voice import g711
from dispatchd.channels.hotline.voice.media import CallMedia, FarLeg, MediaClock

log = structlog.get_logger("dispatchd.voice")

__all__ = ["VoiceSwitch", "recording_paths"]


def recording_paths(
    data_dir: Path, day: datetime, call_id: int, *, legs: bool, prefix: str = "call"
) -> tuple[Path, dict[str, Path]]:
    """``recordings/<yyyymmdd>/call-<id>.wav`` (both sides mixed) and, with ``legs``, one per side."""
    folder = data_dir / "recordings" / day.strftime("%Y%m%d")
    mix = folder / f"{prefix}-{call_id}.wav"
    sides = (
        {side: folder / f"{prefix}-{call_id}-{side}.wav" for side in ("caller", "officer")} if legs else {}
    )
    return mix, sides


class VoiceSwitch:
    def __init__(self, monotonic: Callable[[], float]) -> None:
        self.monotonic = monotonic
        self.clock = MediaClock(monotonic)
        self.media: dict[str, CallMedia] = {}
        self._staged: dict[str, FarLeg] = {}

    def get(self, call: str) -> CallMedia | None:
        return self.media.get(call)

    async def open(self, call: str, offer: SdpOffer | None, bind: str) -> CallMedia:
        """The call's media, made and bound on first use (codec, packet time and DTMF from the offer)."""
        existing = self.media.get(call)
        if existing is not None:
            return existing
        codec, remote, ptime = g711.PCMU, None, 20
        dtmf_pt: int | None = 101  # ours, when the INVITE had no offer (sdp.build_offer)
        if offer is not None:
            chosen = offer.audio_codec()
            codec = chosen[0] if chosen is not None else g711.PCMU
            dtmf_pt = offer.telephone_event()
            remote = offer.remote_rtp()
            ptime = offer.packet_time()
        media = CallMedia(
            call,
            codec=codec,
            ptime_samples=ptime * 8,
            dtmf_payload_type=dtmf_pt,
            remote=remote,
            clock=self.monotonic,
        )
        await media.open(bind)
        self.media[call] = media
        self.clock.add(media)
        return media

    def adopt(self, call: str, media: CallMedia) -> None:
        """Media opened before its call had a key (a call out: the port goes in the offer)."""
        self.media[call] = media
        self.clock.add(media)

    def stage(self, call: str, leg: FarLeg) -> None:
        self._staged[call] = leg

    def take_staged(self, call: str) -> FarLeg | None:
        return self._staged.pop(call, None)

    async def unstage(self, call: str, leg: FarLeg) -> None:
        if self._staged.get(call) is leg:
            del self._staged[call]
        await leg.close()

    async def close(self, call: str) -> None:
        media = self.media.pop(call, None)
        staged = self._staged.pop(call, None)
        if staged is not None:
            await staged.close()
        if media is not None:
            self.clock.discard(media)
            await media.close()
            log.info(
                "voice_call_closed",
                call_key=call,
                from_caller=media.stats.from_caller,
                to_caller=media.stats.to_caller,
                from_far=media.stats.from_far,
                to_far=media.stats.to_far,
            )

    async def close_all(self) -> None:
        for call in list(self.media) + list(self._staged):
            await self.close(call)
        await self.clock.stop()
