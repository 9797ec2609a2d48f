"""Typed slots of the hotline capability on the service context."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from dispatchd.channels.hotline.dialer import Dialer
from dispatchd.channels.hotline.presence import Presence
from dispatchd.channels.hotline.sdp import SdpOffer
from dispatchd.channels.hotline.voice.prompts import PromptLibrary
from dispatchd.channels.hotline.voice.switch import VoiceSwitch
from dispatchd.context import Slot
from dispatchd.domain.hotlines import HotlineDirectory
from dispatchd.store.users import User


class SipControl(Protocol):
    """What the call queue asks of this instance's SIP edge (see :mod:`dispatchd.channels.hotline.edge`)."""

    async def answer(self, call_key: str, call_id: int) -> str | None:
        """Send 200 OK for the call; return the recording's path under the data dir, if any.

        Raises :class:`~dispatchd.channels.hotline.agent.CallStateError` when the call is gone.
        """

    def hangup(self, call_key: str) -> None:
        """End the call from our side (480 while it rings, BYE once answered)."""

    def finished(self, call_key: str) -> None:
        """The call is over: close its media (both legs, the recording)."""

    @property
    def voice(self) -> VoiceSwitch:
        """The media of the calls held here."""

    @property
    def dialer(self) -> Dialer:
        """Calls out through the trunk."""

    @property
    def prompts(self) -> PromptLibrary:
        """The prompts, read once."""

    def caller_offer(self, call_key: str) -> SdpOffer | None:
        """The caller's SDP offer, while the call lasts."""

    def later(self, work: Awaitable[Any]) -> None:
        """Run ``work`` in the background, awaited when the edge closes."""


@dataclass(slots=True)
class SipRuntime:
    """Filled in when the SIP edge starts (the application is frozen by then, its keys are not)."""

    edge: SipControl | None = None
    ports: dict[str, int] = field(default_factory=dict)


# The routing of dialled numbers (config/hotlines.toml).
HOTLINES = Slot[HotlineDirectory]("hotline_directory")
# Duty officers present and available, longest idle first.
PRESENCE = Slot[Presence]("hotline_presence")
# This instance's SIP edge (``edge`` is None when the SIP port could not be bound here).
SIP = Slot[SipRuntime]("sip")
# The ports the SIP edge really bound: {"udp": 5060, "tcp": 5060} (tests bind port 0); empty
# until it started, or when this instance runs without SIP intake. The same dict as SIP's ports.
SIP_PORTS = Slot[dict[str, int]]("sip_ports")

# 叫应: how a squad member's acceptance of an order is recorded — the squad app's own accept
# (dispatchd.live.orders.accept), registered by the live capability, so the hotline does not import it.
OrderAcceptance = Callable[[int, User], Awaitable[dict[str, Any]]]
ORDER_ACCEPTANCE: Final = Slot[OrderAcceptance]("order_acceptance")


@dataclass(frozen=True, slots=True)
class PersonCall:
    """A call that speaks ``text`` to a person and takes key 1 as their acknowledgement: whom to ring
    (``number``, ``callee_id``, their unit ``org``), what pressing 1 does (``acknowledge``: True
    when it took) and the case it is about, if any (listed with the case's calls). Placed by
    :class:`dispatchd.channels.hotline.notify.PersonCalls`."""

    number: str
    text: str
    org: str
    callee_id: int | None
    acknowledge: Callable[[], Awaitable[bool]]
    incident_id: int | None = None


class PersonCaller(Protocol):
    def ready(self) -> bool:
        """This instance can place the call now (it holds the SIP port, a trunk is configured)."""

    async def call(self, call: PersonCall) -> str:
        """Ring once; ``acknowledged``, ``not_acknowledged``, ``busy``, ``no_answer`` or ``failed``."""


# Set when a trunk for calls out is configured ([voice] trunk); plans' notices ring through it.
PERSON_CALLS: Final = Slot[PersonCaller]("hotline_person_calls")
