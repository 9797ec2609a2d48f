"""Phoning a person about something they must acknowledge (a plan's notice): the text is spoken
(espeak-ng), key 1 acknowledges, through the same trunk, recording and records as 叫应
(:func:`dispatchd.channels.hotline.escalation.ring_for_key`).

The capability that owns what is acknowledged (plans) calls it through the ``PERSON_CALLS`` slot, so
the hotline imports nothing of it. Only the instance that holds the SIP port can place the call:
:meth:`PersonCalls.ready` says whether this one can, now.
"""

from __future__ import annotations

import structlog

from dispatchd.channels.hotline.escalation import ring_for_key
from dispatchd.channels.hotline.slots import HOTLINES, SIP, PersonCall
from dispatchd.channels.hotline.voice import callouts
from dispatchd.context import Context
from dispatchd.domain.hotlines import Prompt
from dispatchd.errors import Unavailable

log = structlog.get_logger("dispatchd.voice")

ACKNOWLEDGE: str = "确认收到请按1。"
ACKNOWLEDGED = Prompt(text="已确认，谢谢。")


class PersonCalls:
    """Calls that speak a text and take key 1 as the acknowledgement."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def ready(self) -> bool:
        """This instance holds the SIP port and has a trunk for calls out."""
        edge = self.ctx[SIP].edge
        return edge is not None and edge.dialer.trunk is not None

    async def call(self, call: PersonCall) -> str:
        """Ring the person once; how it ended: ``acknowledged``, ``not_acknowledged`` (answered, no
        key 1), ``busy``, ``no_answer`` or ``failed``."""
        edge = self.ctx[SIP].edge
        if edge is None or edge.dialer.trunk is None:
            raise Unavailable("外呼不可用（本实例未持有SIP端口或未配置中继）", "calls out are not available on this instance")
        directory = self.ctx[HOTLINES]
        callout = await callouts.create(
            self.ctx,
            kind="notice",
            org=call.org,
            area_code=directory.area_code,
            number=call.number,
            incident_id=call.incident_id,
            callee_id=call.callee_id,
        )
        result = await ring_for_key(
            self.ctx,
            edge,
            callout,
            Prompt(text=f"{call.text}。{ACKNOWLEDGE}"),
            ACKNOWLEDGED,
            call.acknowledge,
            ("acknowledged", "not_acknowledged"),
        )
        log.info("notice_call", callout_id=callout["id"], callee_id=call.callee_id, result=result)
        return result


__all__ = ["ACKNOWLEDGE", "PersonCalls"]
