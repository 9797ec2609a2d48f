"""The pure lifecycles of calls, units, meetings and patrols, and what a case offers its viewer —
all without an event loop."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from dispatchd.channels.reports.patrols import duty_days
from dispatchd.domain import calls, meetings
from dispatchd.domain.hotlines import CALLERS_OUT
from dispatchd.domain.incident import (
    CALL_OUT,
    CONVENE,
    Action,
    Actor,
    Command,
    Incident,
    Role,
    State,
    TransitionError,
    allowed_actions,
    case_operations,
    decide,
)
from dispatchd.domain.meetings import CONVENERS
from dispatchd.domain.orgs import OrgTree
from dispatchd.domain.patrols import CLOCK_SKEW, Patrol, PatrolStopped
from dispatchd.domain.units import UNIT_STATUSES, StatusConflict, next_status

NOW = datetime(2026, 5, 3, 8, 0, tzinfo=UTC)
COUNTY, TOWN, GRID = "330381", "330381116", "330381116001001"


# -- hotline calls ---------------------------------------------------------------------------------


def test_a_call_moves_through_the_queue_to_its_end() -> None:
    """Offered calls wait queued, ring, pass on, are answered and end; linking leaves the state alone."""
    state = calls.next_state("queued", "offered")
    assert state == "queued"
    state = calls.next_state(state, "ring")
    assert state == "ringing"
    assert calls.next_state(state, "ring") == "ringing"  # the ring passes to the next officer
    assert calls.next_state(state, "queue") == "queued"
    state = calls.next_state(state, "answer")
    assert state == "answered"
    assert calls.next_state(state, "incident") == "answered"
    assert calls.next_state(state, "end") == "ended"
    assert calls.next_state("queued", "answer") == "answered"  # an officer may take a waiting call unrung


def test_an_answered_call_is_held_transferred_and_rung_again() -> None:
    """Hold, resume and a transfer to a number keep a call answered; a transfer to an officer rings
    it again, and it is answered or ended from there; a menu choice leaves a waiting call waiting; a
    recording deleted by the retention leaves any call as it is."""
    assert calls.next_state("answered", "hold") == "answered"
    assert calls.next_state("answered", "resume") == "answered"
    assert calls.next_state("answered", "transfer_out") == "answered"
    state = calls.next_state("answered", "transfer")
    assert state == "ringing"
    assert calls.next_state(state, "answer") == "answered"
    assert calls.next_state(state, "end") == "ended"
    assert calls.next_state("queued", "menu") == "queued"
    assert calls.next_state("ringing", "menu") == "ringing"
    assert calls.next_state("ended", "recording_deleted") == "ended"  # the retention, at any time


@pytest.mark.parametrize(
    ("state", "event"),
    [
        ("answered", "abandon"),
        ("answered", "ring"),
        ("ended", "end"),
        ("abandoned", "answer"),
        ("queued", "queue"),
        ("queued", "hold"),
        ("ringing", "transfer"),
        ("ended", "resume"),
        ("answered", "menu"),
    ],
)
def test_a_call_refuses_what_cannot_happen_in_its_state(state: str, event: str) -> None:
    """An event that cannot happen now is refused with a reason in both languages."""
    with pytest.raises(calls.CallStateConflict) as refused:
        calls.next_state(state, event)
    assert refused.value.message_zh and event in refused.value.message_en
    assert not calls.may(state, event)


def test_an_unknown_call_event_is_a_programming_error() -> None:
    """A misspelt event is not a refusal a caller should see: it raises ValueError."""
    with pytest.raises(ValueError, match="unknown call event"):
        calls.next_state("queued", "rings")


# -- unit status -----------------------------------------------------------------------------------


def test_a_unit_off_duty_comes_back_available_before_anything_else() -> None:
    """Off duty goes only to available; from any other status every status may be set."""
    assert next_status("off_duty", "available") == "available"
    for target in UNIT_STATUSES:
        if target in ("off_duty", "available"):
            continue
        with pytest.raises(StatusConflict):
            next_status("off_duty", target)
    for current in UNIT_STATUSES:
        if current == "off_duty":
            continue
        for target in UNIT_STATUSES:
            assert next_status(current, target) == (None if target == current else target)


def test_an_unknown_unit_status_is_refused() -> None:
    """A status outside the list is a ValueError, not a move."""
    with pytest.raises(ValueError):
        next_status("available", "lunch")


# -- meetings --------------------------------------------------------------------------------------


def test_a_meeting_is_scheduled_started_and_ended_once() -> None:
    """A later meeting waits; starting twice or ending twice changes nothing; an ended one stays ended."""
    assert meetings.initial_status(NOW + timedelta(hours=1), NOW) == meetings.SCHEDULED
    assert meetings.initial_status(NOW - timedelta(minutes=1), NOW) == meetings.RUNNING
    assert meetings.initial_status(None, NOW) == meetings.RUNNING
    assert meetings.start(meetings.SCHEDULED) == meetings.RUNNING
    assert meetings.start(meetings.RUNNING) is None
    assert meetings.end(meetings.RUNNING) == meetings.ENDED
    assert meetings.end(meetings.SCHEDULED) == meetings.ENDED
    assert meetings.end(meetings.ENDED) is None
    with pytest.raises(meetings.MeetingEnded):
        meetings.start(meetings.ENDED)
    with pytest.raises(meetings.MeetingEnded):
        meetings.check_open(meetings.ENDED)


# -- patrols ---------------------------------------------------------------------------------------


def test_a_patrol_takes_points_while_it_runs_and_stops_once() -> None:
    """Points within the patrol (phone clocks a little off allowed) belong to it; a stopped patrol
    refuses more; stopping again changes nothing."""
    running = Patrol(NOW, None)
    assert running.state == "running"
    assert running.check_adding(NOW + timedelta(minutes=30), NOW + timedelta(hours=1))
    assert running.check_adding(NOW - CLOCK_SKEW, NOW)
    assert not running.check_adding(NOW - CLOCK_SKEW - timedelta(seconds=1), NOW)
    stopped = running.stop(NOW + timedelta(hours=2))
    assert stopped is not None and stopped.state == "stopped" and stopped.ended_at == NOW + timedelta(hours=2)
    assert stopped.stop(NOW + timedelta(hours=3)) is None
    with pytest.raises(PatrolStopped):
        stopped.check_adding(NOW + timedelta(minutes=30), NOW + timedelta(hours=3))


# -- what a case offers its viewer -------------------------------------------------------------------


def _case(state: State, **kw: object) -> Incident:
    values: dict[str, object] = {
        "id": 1,
        "state": state,
        "version": 3,
        "priority": "P3",
        "category": "incident.dispute",
        "owner_unit": TOWN,
        "grid": GRID,
        "reporter_id": 50,
    }
    values.update(kw)
    return Incident(**values)  # type: ignore[arg-type]


def _actor(role: Role, unit: str = COUNTY, department: str | None = None, user_id: int = 7) -> Actor:
    return Actor(user_id=user_id, username=f"{role}", role=role, unit=unit, department=department)


def test_the_actions_offered_are_those_decide_accepts(org_tree: OrgTree) -> None:
    """For every state and role, each action offered is one decide() does not refuse for role, scope
    or state, and each action left out is refused for one of them."""
    actors = [
        _actor(Role.duty_officer),
        _actor(Role.leader),
        _actor(Role.admin),
        _actor(Role.ops),
        _actor(Role.grid_worker, GRID, user_id=50),
        _actor(Role.squad_member, TOWN),
        _actor(Role.department_handler, TOWN, department="330381116-PCS"),
        _actor(Role.duty_officer, "330381001"),  # another township: outside the case's jurisdiction
    ]
    for state in State:
        case = _case(state, lead_department="330381116-PCS" if state not in (State.reported, State.accepted) else None)
        for actor in actors:
            offered = set(allowed_actions(case, actor, org_tree))
            for action in Action:
                command = Command(action, case.version)
                try:
                    decide(case, command, actor, NOW, org_tree)
                    refused_for = None
                except TransitionError as exc:
                    refused_for = exc.code
                if action in offered:
                    assert refused_for in (None, "invalid"), (state, actor.role, action, refused_for)
                else:
                    assert refused_for in ("forbidden", "illegal_transition"), (state, actor.role, action)


def test_an_admin_is_not_offered_the_handling_steps(org_tree: OrgTree) -> None:
    """The server's rules, not a screen's copy: an administrator does not feed back or verify."""
    offered = allowed_actions(_case(State.in_progress, lead_department="330381116-PCS"), _actor(Role.admin), org_tree)
    assert Action.feedback not in offered and Action.escalate in offered


def test_a_call_out_is_offered_to_those_who_may_place_one_in_the_jurisdiction(org_tree: OrgTree) -> None:
    """The console's 回访 button comes from the server: a duty officer of the case's jurisdiction may
    call out about it, open or closed; one of another township, or a leader, may not."""
    officer, elsewhere, leader = (
        _actor(Role.duty_officer),
        _actor(Role.duty_officer, "330381001"),
        _actor(Role.leader),
    )
    for state in (State.reported, State.closed):
        assert CALL_OUT in case_operations(_case(state), officer, org_tree, CONVENERS, CALLERS_OUT)
    assert CALL_OUT not in case_operations(_case(State.closed), elsewhere, org_tree, CONVENERS, CALLERS_OUT)
    assert CALL_OUT not in case_operations(_case(State.closed), leader, org_tree, CONVENERS, CALLERS_OUT)
    assert CONVENE not in case_operations(_case(State.closed), officer, org_tree, CONVENERS, CALLERS_OUT)


def test_compliance_counts_the_days_a_worker_was_on_duty() -> None:
    """A worker is measured from the day they joined; today counts only once its rule is met, so a
    worker who joined minutes ago is not 0 % compliant over a month they were not there."""
    first, last, today = date(2026, 5, 1), date(2026, 5, 30), date(2026, 5, 30)
    assert duty_days(first, last, today, joined=date(2026, 4, 1), met_today=False) == 29
    assert duty_days(first, last, today, joined=date(2026, 4, 1), met_today=True) == 30
    assert duty_days(first, last, today, joined=today, met_today=False) == 0
    assert duty_days(first, last, today, joined=date(2026, 5, 28), met_today=True) == 3
    assert duty_days(first, date(2026, 5, 10), today, joined=date(2026, 5, 12), met_today=True) == 0
