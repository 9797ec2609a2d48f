"""Orders to squad units, pure: the lifecycle of one order and its two timers.

An order (go to case X, with place, priority, instructions) is stored, then pushed to every device
of the unit's members. It moves::

    pending ──ack──> delivered ──accept──> accepted ──complete──> completed
       │                 │  └──decline──> declined
       └──accept/decline─┘        (an accept or decline implies the receipt)
    pending | delivered | accepted ──cancel──> cancelled   (by the officer, or the case ended)
    pending | delivered ──reassign──> reassigned   (the case goes to another unit)
    accepted ──handled (the squad is done on site, with notes and photos)──> completed

While an order is accepted the squad reports its progress on site (``en_route`` → ``on_scene``);
``handled`` ends it. Progress only moves forward.

Two timers run on an order, both set at creation:

- ``resend_at``: no receipt from any device within ``resend_after`` → push again (and again every
  ``resend_after``) until someone acknowledges; cleared by the first receipt;
- ``accept_by``: not accepted within ``accept_timeout`` → the duty officer is alerted once (and
  offered the next nearest available unit, or the order is reassigned if so configured).

Nothing here reads the clock or does I/O: the caller passes ``now`` and stores the result.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

ORDER_STATES = ("pending", "delivered", "accepted", "declined", "cancelled", "reassigned", "completed")
OPEN_STATES = frozenset({"pending", "delivered", "accepted"})
AWAITING_ACCEPT = frozenset({"pending", "delivered"})
FINAL_STATES = frozenset({"declined", "cancelled", "reassigned", "completed"})

_ZH = {
    "pending": "待签收",
    "delivered": "已送达",
    "accepted": "已接受",
    "declined": "已拒绝",
    "cancelled": "已撤销",
    "reassigned": "已改派",
    "completed": "已完成",
}


class OrderConflict(Exception):
    """The move is not legal in the order's state; says why in both languages."""

    def __init__(self, action: str, state: str) -> None:
        self.action = action
        self.state = state
        self.message_en = f"cannot {action} an order that is {state}"
        self.message_zh = f"指令{_ZH.get(state, state)}，不能执行此操作（{action}）"
        super().__init__(self.message_en)


@dataclass(frozen=True, slots=True)
class OrderClock:
    """The two timer lengths (``[live] resend_after`` and ``accept_timeout``)."""

    resend_after: timedelta
    accept_timeout: timedelta


@dataclass(frozen=True, slots=True)
class Order:
    """The lifecycle part of an order (what the machine decides on)."""

    state: str
    sends: int
    last_sent_at: datetime
    resend_at: datetime | None
    accept_by: datetime | None
    delivered_at: datetime | None = None
    accepted_at: datetime | None = None
    declined_at: datetime | None = None
    alerted_at: datetime | None = None
    closed_at: datetime | None = None
    progress: str | None = None  # en_route, on_scene, handled

    @property
    def open(self) -> bool:
        return self.state in OPEN_STATES

    @property
    def overdue(self) -> bool:
        """Alerted for not being accepted in time and still not accepted."""
        return self.alerted_at is not None and self.state in AWAITING_ACCEPT


@dataclass(frozen=True, slots=True)
class Step:
    """The result of a move: the new order and the event to record, or None when nothing changed."""

    order: Order
    event: str | None

    @property
    def changed(self) -> bool:
        return self.event is not None


def new_order(now: datetime, clock: OrderClock) -> Order:
    """A stored order, about to be pushed for the first time."""
    return Order(
        state="pending",
        sends=1,
        last_sent_at=now,
        resend_at=now + clock.resend_after,
        accept_by=now + clock.accept_timeout,
    )


def acknowledge(o: Order, now: datetime) -> Step:
    """A device confirmed receipt. The first receipt delivers the order and stops the resends.

    A receipt of an order already past ``pending`` changes nothing (another member's device or a
    repeat): it is not an error, the device still records it.
    """
    if o.state != "pending":
        return Step(o, None)
    return Step(replace(o, state="delivered", delivered_at=now, resend_at=None), "delivered")


def accept(o: Order, now: datetime) -> Step:
    if o.state == "accepted":
        return Step(o, None)
    if o.state not in AWAITING_ACCEPT:
        raise OrderConflict("accept", o.state)
    return Step(
        replace(
            o,
            state="accepted",
            accepted_at=now,
            delivered_at=o.delivered_at or now,
            resend_at=None,
            accept_by=None,
        ),
        "accepted",
    )


def decline(o: Order, now: datetime) -> Step:
    if o.state == "declined":
        return Step(o, None)
    if o.state not in AWAITING_ACCEPT:
        raise OrderConflict("decline", o.state)
    return Step(
        replace(
            o,
            state="declined",
            declined_at=now,
            delivered_at=o.delivered_at or now,
            closed_at=now,
            resend_at=None,
            accept_by=None,
        ),
        "declined",
    )


def cancel(o: Order, now: datetime) -> Step:
    if o.state == "cancelled":
        return Step(o, None)
    if o.state not in OPEN_STATES:
        raise OrderConflict("cancel", o.state)
    return Step(replace(o, state="cancelled", closed_at=now, resend_at=None, accept_by=None), "cancelled")


def reassign(o: Order, now: datetime) -> Step:
    """The case goes to another unit; this order ends."""
    if o.state not in AWAITING_ACCEPT:
        raise OrderConflict("reassign", o.state)
    return Step(replace(o, state="reassigned", closed_at=now, resend_at=None, accept_by=None), "reassigned")


def complete(o: Order, now: datetime) -> Step:
    """The unit is done with the accepted order (it reported returning or available)."""
    if o.state == "completed":
        return Step(o, None)
    if o.state != "accepted":
        raise OrderConflict("complete", o.state)
    return Step(replace(o, state="completed", closed_at=now), "completed")


PROGRESS = ("en_route", "on_scene", "handled")


def progress(o: Order, kind: str) -> Step:
    """The squad of an accepted order reports where it is (en_route, on_scene); only forward, and a
    report of where it already is changes nothing."""
    if kind not in PROGRESS[:2]:
        raise ValueError(f"unknown progress {kind!r}")
    if o.state != "accepted":
        return Step(o, None)
    if o.progress is not None and PROGRESS.index(o.progress) >= PROGRESS.index(kind):
        return Step(o, None)
    return Step(replace(o, progress=kind), kind)


def handled(o: Order, now: datetime) -> Step:
    """The squad is done on site: the order is completed, its progress ``handled``."""
    if o.state == "completed" and o.progress == "handled":
        return Step(o, None)
    if o.state != "accepted":
        raise OrderConflict("handled", o.state)
    return Step(replace(o, state="completed", progress="handled", closed_at=now), "handled")


def resend_due(o: Order, now: datetime) -> bool:
    return o.state == "pending" and o.resend_at is not None and o.resend_at <= now


def accept_overdue(o: Order, now: datetime) -> bool:
    return o.state in AWAITING_ACCEPT and o.accept_by is not None and o.accept_by <= now


def resend(o: Order, now: datetime, clock: OrderClock) -> Step:
    """No receipt yet: push again and wait ``resend_after`` once more."""
    if not resend_due(o, now):
        return Step(o, None)
    return Step(replace(o, sends=o.sends + 1, last_sent_at=now, resend_at=now + clock.resend_after), "resent")


def expire_accept(o: Order, now: datetime) -> Step:
    """Not accepted in time: alert once (the order stays open; the squad may still accept)."""
    if not accept_overdue(o, now):
        return Step(o, None)
    return Step(replace(o, accept_by=None, alerted_at=now), "overdue")
