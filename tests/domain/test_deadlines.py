"""Deadline feedback (限期反馈): timer arithmetic and which clock runs in which state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from dispatchd.domain.deadlines import TimerSpec, is_overdue, plan_timers, step_for_state, system_actor
from dispatchd.domain.incident import (
    Action,
    Actor,
    Command,
    DeadlineStart,
    Incident,
    Role,
    State,
    decide,
    on_created,
)

CST = timezone(timedelta(hours=8))
T0 = datetime(2016, 9, 4, 8, 0, tzinfo=CST)

PROVINCE, CITY, COUNTY, TOWN = "330000", "330300", "330381", "330381101"
_PARENT: dict[str, str | None] = {PROVINCE: None, CITY: PROVINCE, COUNTY: CITY, TOWN: COUNTY}
_LEVEL = {PROVINCE: "province", CITY: "city", COUNTY: "county", TOWN: "township"}


class ChainOrg:
    """Province 330000 > city 330300 > county 330381 > township 330381101."""

    def is_within(self, code: str, root: str) -> bool:
        node: str | None = code
        while node is not None:
            if node == root:
                return True
            node = _PARENT[node]
        return False

    def parent_of(self, code: str) -> str | None:
        return _PARENT[code]

    def level_of(self, code: str) -> str:
        return _LEVEL[code]


ORG = ChainOrg()


def test_plan_timers_arithmetic() -> None:
    """Warning at the share of the limit, overdue at the limit, escalate after the grace."""
    timers = plan_timers("feedback", T0, timedelta(hours=4), 0.75, timedelta(hours=1))
    assert timers == (
        TimerSpec("feedback", "warning", datetime(2016, 9, 4, 11, 0, tzinfo=CST)),
        TimerSpec("feedback", "overdue", datetime(2016, 9, 4, 12, 0, tzinfo=CST)),
        TimerSpec("feedback", "escalate", datetime(2016, 9, 4, 13, 0, tzinfo=CST)),
    )


def test_plan_timers_fractions_and_zero_grace() -> None:
    """Odd shares land on the microsecond; with no grace, escalation fires with the overdue timer."""
    warning, overdue, escalate = plan_timers("accept", T0, timedelta(minutes=10), 1 / 3, timedelta(0))
    assert warning.fire_at == T0 + timedelta(minutes=3, seconds=20)
    assert overdue.fire_at == escalate.fire_at == T0 + timedelta(minutes=10)
    assert warning.fire_at.tzinfo is CST
    assert [t.kind for t in (warning, overdue, escalate)] == ["warning", "overdue", "escalate"]


@pytest.mark.parametrize(
    ("step", "started_at", "limit", "warn_share", "grace"),
    [
        ("lunch", T0, timedelta(hours=1), 0.5, timedelta(0)),
        ("start", datetime(2016, 9, 4), timedelta(hours=1), 0.5, timedelta(0)),
        ("start", T0, timedelta(0), 0.5, timedelta(0)),
        ("start", T0, timedelta(hours=-1), 0.5, timedelta(0)),
        ("start", T0, timedelta(hours=1), 0.0, timedelta(0)),
        ("start", T0, timedelta(hours=1), 1.0, timedelta(0)),
        ("start", T0, timedelta(hours=1), 0.5, timedelta(seconds=-1)),
    ],
)
def test_plan_timers_refuses_nonsense(
    step: str, started_at: datetime, limit: timedelta, warn_share: float, grace: timedelta
) -> None:
    """Unknown steps, naive times, non-positive limits, shares outside (0, 1), negative grace."""
    with pytest.raises(ValueError):
        plan_timers(step, started_at, limit, warn_share, grace)


EXPECTED_STEP = {
    State.reported: "accept",
    State.accepted: "dispatch",
    State.dispatched: "start",
    State.in_progress: "feedback",
    State.fed_back: "verify",
    State.verified: "close",
    State.rejected: None,
    State.merged: None,
    State.closed: None,
    State.evaluated: None,
}


@pytest.mark.parametrize("state", list(State))
def test_step_for_state(state: State) -> None:
    """Each state runs the clock of its next step, and the finished states run none."""
    assert step_for_state(state) == EXPECTED_STEP[state]


def test_machine_starts_the_clock_of_the_state_it_enters() -> None:
    """Along the loop, every DeadlineStart names the step the new state's clock belongs to."""
    officer = Actor(1, "duty", Role.duty_officer, COUNTY)
    started = on_created(T0)
    assert started == (DeadlineStart(str(step_for_state(State.reported)), T0),)
    incident = Incident(42, State.reported, 1, "urgent", "fire", TOWN, None, None)
    commands = [
        Command(Action.accept, 0),
        Command(Action.dispatch, 0, department="AJ"),
        Command(Action.start, 0),
        Command(Action.feedback, 0, note="已整改"),
        Command(Action.verify, 0),
        Command(Action.close, 0),
    ]
    for command in commands:
        command = Command(command.action, incident.version, department=command.department, note=command.note)
        decision = decide(incident, command, officer, T0, ORG)
        incident = decision.incident
        starts = [e.step for e in decision.effects if isinstance(e, DeadlineStart)]
        expected = step_for_state(incident.state)
        assert starts == ([] if expected is None else [expected]), command.action


@pytest.mark.parametrize(
    ("due", "now", "overdue"),
    [
        (None, T0, False),
        (T0, T0 - timedelta(microseconds=1), False),
        (T0, T0, True),
        (T0, T0 + timedelta(days=1), True),
        (T0, T0.astimezone(UTC), True),
    ],
)
def test_is_overdue(due: datetime | None, now: datetime, overdue: bool) -> None:
    """A deadline is overdue from its due instant on; no deadline is never overdue."""
    assert is_overdue(due, now) is overdue


def test_system_actor() -> None:
    """The system actor is administrator user 0 named system, in the unit given."""
    assert system_actor(COUNTY) == Actor(0, "system", Role.admin, COUNTY)


def test_escalate_timer_escalates_as_the_system() -> None:
    """When the escalate timer fires, the system actor moves the overdue case one level up."""
    incident = Incident(42, State.in_progress, 6, "urgent", "fire", TOWN, None, None, lead_department="AJ")
    _, _, escalate = plan_timers("feedback", T0, timedelta(hours=2), 0.5, timedelta(minutes=30))
    assert is_overdue(T0 + timedelta(hours=2), escalate.fire_at)
    command = Command(Action.escalate, incident.version, reason="反馈超期")
    decision = decide(incident, command, system_actor(PROVINCE), escalate.fire_at, ORG)
    assert decision.incident.owner_unit == COUNTY
    assert decision.incident.state is State.in_progress
