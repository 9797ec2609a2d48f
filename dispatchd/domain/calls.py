"""A hotline call's lifecycle, pure: which event may happen in which state, and the state after it.

    (offered) ──> queued ──ring──> ringing ──answer──> answered ──end──> ended
                    ^  └──answer──────────────────┘      (an officer may take a waiting call unrung)
                    └──queue── ringing (the ring timed out and nobody else is free)
    ringing ──ring──> ringing        (the ring passes to the next officer)
    queued | ringing ──abandon──> abandoned   (the caller hung up first)
    queued | ringing ──end──> ended           (the officer refused it, the instance holding it stopped)
    any ──link──> the same state     (the call became a case, or was attached to one)
    answered ──transfer──> ringing   (given to another officer: their console rings)
    answered ──hold | resume | transfer_out──> answered   (on hold; bridged to a department's number)
    queued | ringing ──menu──> the same state   (the caller chose a department in the line's menu)
    any ──recording_deleted──> the same state    (the retention deleted its recording)

A call is *offered* when it reaches the hotline; it is stored as ``queued`` and rung or left to
wait in the same transaction. Nothing here reads the clock or does I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

STATES: Final = ("ringing", "queued", "answered", "abandoned", "ended")
WAITING: Final = frozenset({"ringing", "queued"})
LIVE: Final = WAITING | {"answered"}
FINAL: Final = frozenset({"abandoned", "ended"})

STATE_NAMES: Final[Mapping[str, tuple[str, str]]] = MappingProxyType(
    {
        "ringing": ("振铃中", "ringing"),
        "queued": ("排队中", "queued"),
        "answered": ("通话中", "answered"),
        "abandoned": ("未接放弃", "abandoned"),
        "ended": ("已结束", "ended"),
    }
)

# event -> (states it may happen in, the state after it; None: unchanged)
_MOVES: Final[Mapping[str, tuple[frozenset[str], str | None]]] = MappingProxyType(
    {
        "offered": (frozenset({"queued"}), None),
        "ring": (WAITING, "ringing"),
        "queue": (frozenset({"ringing"}), "queued"),
        "answer": (WAITING, "answered"),
        "abandon": (WAITING, "abandoned"),
        "end": (LIVE, "ended"),
        "incident": (frozenset(STATES), None),
        "attach": (frozenset(STATES), None),
        "transfer": (frozenset({"answered"}), "ringing"),
        "transfer_out": (frozenset({"answered"}), None),
        "hold": (frozenset({"answered"}), None),
        "resume": (frozenset({"answered"}), None),
        "menu": (WAITING, None),
        "recording_deleted": (frozenset(STATES), None),
    }
)
EVENTS: Final = tuple(_MOVES)


class CallStateConflict(Exception):
    """The event cannot happen to a call in its state; says so in both languages."""

    def __init__(self, event: str, state: str) -> None:
        self.event = event
        self.state = state
        zh, en = STATE_NAMES.get(state, (state, state))
        self.message_zh = f"来电{zh}，不能执行此操作"
        self.message_en = f"the call is {en}; {event} cannot be done now"
        super().__init__(self.message_en)


def next_state(state: str, event: str) -> str:
    """The state after ``event``, or :class:`CallStateConflict` when it cannot happen now."""
    try:
        allowed, after = _MOVES[event]
    except KeyError:
        raise ValueError(f"unknown call event {event!r}") from None
    if state not in allowed:
        raise CallStateConflict(event, state)
    return after or state


def may(state: str, event: str) -> bool:
    """Whether ``event`` can happen to a call in ``state``."""
    move = _MOVES.get(event)
    return move is not None and state in move[0]
