"""The media of every call this instance holds, keyed like the SIP agent's calls.

The SIP edge asks the switch for a call's :class:`~dispatchd.channels.hotline.voice.media.CallMedia`
when it answers (the port goes in the SDP answer), hands it the caller's SDP answer when it comes in
an ACK, and closes it when the call ends. An officer's WebRTC leg is *staged* by the service before
the SIP answer and attached by the edge once the caller is answered, so the caller never hears a
200 OK without someone on the other side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import structlog

from dispatchd.channels.hotline.voice import g711
from dispatchd.channels.hotline.voice.media import CallMedia, FarLeg, MediaClock

log = structlog.get_logger("dispatchd.voice")

__all__ = ["MediaOffer", "VoiceSwitch", "recording_paths"]


@dataclass(frozen=True, slots=True)
class MediaOffer:
    """What the caller's SDP says of its audio: G.711 law, telephone-event type, address, packet time.

    The defaults are ours when the INVITE came without an offer (the answer comes in the ACK)."""

    codec: int = g711.PCMU
    dtmf_payload_type: int | None = 101
    remote: tuple[str, int] | None = None
    ptime: int = 20


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

    async def open(self, call: str, bind: str, offer: MediaOffer | None = None) -> CallMedia:
        """The call's media, made and bound on first use (law, packet time and DTMF from the offer)."""
        existing = self.media.get(call)
        if existing is not None:
            return existing
        offer = offer or MediaOffer()
        codec, dtmf_pt, remote, ptime = offer.codec, offer.dtmf_payload_type, offer.remote, offer.ptime
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
