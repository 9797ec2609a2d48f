"""Deadline feedback (限期反馈): which clock runs in which state, and when its timers fire.

Pure arithmetic.  The incident machine says when a step's clock starts or stops
(``DeadlineStart`` / ``DeadlineCancel``); the caller looks up the limit for the step (by
priority and category, as CJ/T 315 sets time limits per case type), plans the timers here and
fires them from the one place that reads the clock.  When the ``escalate`` timer fires, the
caller applies ``Action.escalate`` to the case as ``system_actor()`` — the same rule path as a
person passing the case up (层层上报).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Final, Literal

from dispatchd.domain.incident import Actor, Role, State

TimerKind = Literal["warning", "overdue", "escalate"]

# The timed steps of the closed loop, in order.
STEPS: Final[tuple[str, ...]] = ("accept", "dispatch", "start", "feedback", "verify", "close")

# The step whose clock runs while a case is in a state; the other states have no clock.
_STEP_IN_STATE: Final[Mapping[State, str]] = MappingProxyType(
    {
        State.reported: "accept",
        State.accepted: "dispatch",
        State.dispatched: "start",
        State.in_progress: "feedback",
        State.fed_back: "verify",
        State.verified: "close",
    }
)

SYSTEM_USER_ID: Final = 0
SYSTEM_USERNAME: Final = "system"


@dataclass(frozen=True)
class TimerSpec:
    """One timer of a step: ``warning`` (临期), ``overdue`` (超期) or ``escalate`` (超期上报)."""

    step: str
    kind: TimerKind
    fire_at: datetime


def plan_timers(
    step: str, started_at: datetime, limit: timedelta, warn_share: float, grace: timedelta
) -> tuple[TimerSpec, ...]:
    """The timers of ``step`` whose clock started at ``started_at``, in firing order.

    warning at ``started_at + warn_share * limit``, overdue at ``started_at + limit``, escalate
    at ``started_at + limit + grace``.
    """
    if step not in STEPS:
        raise ValueError(f"unknown step {step!r}; expected one of {', '.join(STEPS)}")
    if started_at.tzinfo is None or started_at.utcoffset() is None:
        raise ValueError("started_at must be timezone-aware")
    if limit <= timedelta(0):
        raise ValueError("limit must be positive")
    if not 0.0 < warn_share < 1.0:
        raise ValueError("warn_share must lie strictly between 0 and 1")
    if grace < timedelta(0):
        raise ValueError("grace must not be negative")
    due = started_at + limit
    return (
        TimerSpec(step, "warning", started_at + limit * warn_share),
        TimerSpec(step, "overdue", due),
        TimerSpec(step, "escalate", due + grace),
    )


def step_for_state(state: State) -> str | None:
    """Which step's clock runs while a case is in ``state`` (None: no clock runs)."""
    return _STEP_IN_STATE.get(state)


def is_overdue(due: datetime | None, now: datetime) -> bool:
    """True once ``now`` has reached ``due``; a case without a deadline is never overdue."""
    return due is not None and now >= due


def system_actor(unit: str) -> Actor:
    """The actor in whose name timers act (the escalate timer): an administrator of ``unit``."""
    return Actor(user_id=SYSTEM_USER_ID, username=SYSTEM_USERNAME, role=Role.admin, unit=unit)
