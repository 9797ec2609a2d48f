"""A video meeting's lifecycle (视频会商), pure: scheduled, running, ended.

    scheduled ──start (the first participant joins, or the chair starts it)──> running
    scheduled | running ──end (the chair ends it)──> ended

A meeting convened without a time, or for a time already past, is created running. Starting a
running meeting or ending an ended one changes nothing (a second participant, a repeated click).
Nothing here reads the clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import MappingProxyType
from typing import Final

SCHEDULED: Final = "scheduled"
RUNNING: Final = "running"
ENDED: Final = "ended"
STATUSES: Final = (SCHEDULED, RUNNING, ENDED)

# Who may convene a consultation (视频会商), invite to it and end it.
CONVENERS: Final = frozenset({"duty_officer", "leader"})

STATUS_NAMES: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {SCHEDULED: ("待召开", "scheduled"), RUNNING: ("进行中", "running"), ENDED: ("已结束", "ended")}
)


class MeetingEnded(Exception):
    """The meeting is over: it takes no more participants, invitations or recordings."""

    message_zh = "会商已结束"
    message_en = "the meeting has ended"


def initial_status(scheduled_at: datetime | None, now: datetime) -> str:
    """A meeting for a later time waits; any other starts at once."""
    return SCHEDULED if scheduled_at is not None and scheduled_at > now else RUNNING


def start(status: str) -> str | None:
    """The status after a start, or None when it is already running; an ended meeting refuses."""
    if status == ENDED:
        raise MeetingEnded
    return RUNNING if status == SCHEDULED else None


def end(status: str) -> str | None:
    """The status after an end, or None when it has already ended."""
    return None if status == ENDED else ENDED


def check_open(status: str) -> None:
    """Raise :class:`MeetingEnded` unless the meeting can still change (invite, record, join)."""
    if status == ENDED:
        raise MeetingEnded
