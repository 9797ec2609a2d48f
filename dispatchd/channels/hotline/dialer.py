"""Calls out on this instance's SIP edge: the trunk, the call's media, and what became of it.

:meth:`Dialer.dial` binds the call's RTP port, offers G.711 (PCMU, PCMA) and telephone-events
``sendrecv`` to the number through the trunk of ``[voice]`` (digest credentials if it asks), and
returns an :class:`Outbound` whose events a caller awaits: ``ringing``, ``answered`` (the media now
knows the far end's address and law) and ``over`` (why it failed or ended). The edge hands the
agent's events for calls out to :meth:`Dialer.event`.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from dispatchd.channels.hotline.agent import (
    CallAnswered,
    CallEnded,
    CallFailed,
    CallRinging,
    HotlineAgent,
    Trunk,
)
from dispatchd.channels.hotline.sdp import build_offer
from dispatchd.channels.hotline.transaction import Peer
from dispatchd.channels.hotline.voice.media import CallMedia
from dispatchd.channels.hotline.voice.switch import VoiceSwitch
from dispatchd.config import Settings
from dispatchd.errors import Conflict

log = structlog.get_logger("dispatchd.voice")

__all__ = ["Dialer", "Outbound", "trunk_of"]


def trunk_of(settings: Settings) -> Trunk | None:
    """The trunk of ``[voice] trunk`` (``host[:port]``), or None when calls out are off."""
    voice = settings.voice
    if not voice.trunk:
        return None
    host, _, port = voice.trunk.rpartition(":") if voice.trunk.count(":") == 1 else (voice.trunk, "", "")
    host = host or voice.trunk
    return Trunk(
        peer=Peer(voice.trunk_transport.upper(), host.strip("[]"), int(port) if port.isdigit() else 5060),
        domain=voice.trunk_domain or host,
        caller_id=voice.caller_id,
        username=voice.trunk_username,
        password=voice.trunk_password,
    )


@dataclass(eq=False)
class Outbound:
    key: str
    number: str
    media: CallMedia
    ringing: asyncio.Event = field(default_factory=asyncio.Event)
    answered: asyncio.Event = field(default_factory=asyncio.Event)
    over: asyncio.Future[tuple[str, int]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )

    def finish(self, reason: str, status: int = 0) -> None:
        if not self.over.done():
            self.over.set_result((reason, status))


class Dialer:
    def __init__(
        self,
        agent: HotlineAgent,
        voice: VoiceSwitch,
        settings: Settings,
        *,
        local_host: Callable[[], str],
        bind: str,
        monotonic: Callable[[], float],
        transmit: Callable[[list[object]], None],
        later: Callable[[Awaitable[Any]], None],
    ) -> None:
        self.agent = agent
        self.voice = voice
        self.settings = settings
        self.trunk = trunk_of(settings)
        self.local_host = local_host
        self.bind = bind
        self.monotonic = monotonic
        self.transmit = transmit
        self.later = later
        self.calls: dict[str, Outbound] = {}

    async def dial(self, number: str) -> Outbound:
        """Start a call out to ``number`` (already normalised); Conflict when there is no trunk."""
        if self.trunk is None:
            raise Conflict("未配置外呼中继", "no SIP trunk is configured for calls out", code="no_trunk")
        dialled = self.settings.voice.dial_prefix + number
        media = CallMedia("dialling", codec=0, dtmf_payload_type=101, clock=self.voice.monotonic)
        host = self.local_host()
        port = await media.open(self.bind)
        offer = build_offer(host, port, secrets.randbits(31) or 1, direction="sendrecv")
        key, effects = self.agent.dial(dialled, offer, self.trunk, host, self.monotonic())
        media.key = key
        self.voice.adopt(key, media)
        outbound = Outbound(key, number, media)
        self.calls[key] = outbound
        self.transmit(list(effects))
        log.info("callout_dialled", phone=number)
        return outbound

    def hangup(self, outbound: Outbound) -> None:
        """CANCEL or BYE, whichever fits; the media closes when the agent says it is over."""
        answered = self.agent.call_state(outbound.key) == "confirmed"
        self.transmit(list(self.agent.hangup(outbound.key, self.monotonic())))
        if answered:
            self._over(outbound, "local_hangup", 0)  # our BYE goes on in its own transaction
        elif outbound.key not in self.agent:
            self._over(outbound, "cancelled", 0)

    def close_all(self) -> None:
        """This instance stops: every call out is over for whoever waits on it."""
        for outbound in list(self.calls.values()):
            self._over(outbound, "shutdown", 0)

    def event(self, event: object) -> bool:
        """An agent event for a call out (True when it was one of ours)."""
        call = getattr(event, "call", None)
        outbound = self.calls.get(call) if isinstance(call, str) else None
        if outbound is None:
            return False
        if isinstance(event, CallRinging):
            outbound.ringing.set()
        elif isinstance(event, CallAnswered):
            answer = event.answer
            if answer is not None:
                codec = answer.audio_codec()
                outbound.media.set_remote(
                    answer.remote_rtp(), codec[0] if codec else None, answer.telephone_event()
                )
            outbound.ringing.set()
            outbound.answered.set()
        elif isinstance(event, CallFailed):
            self._over(outbound, "busy" if event.status in (486, 600) else event.reason, event.status)
        elif isinstance(event, CallEnded):
            self._over(outbound, event.reason, 0)
        return True

    def _over(self, outbound: Outbound, reason: str, status: int) -> None:
        self.calls.pop(outbound.key, None)
        outbound.finish(reason, status)
        self.later(self.voice.close(outbound.key))
