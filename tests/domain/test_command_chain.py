"""The 12345-style controls of the closed loop, pure: sign, return, extension, urge, supervise and
the callback — each without an event loop."""

from __future__ import annotations

import dataclasses

import pytest

from dispatchd.domain.incident import (
    DEFAULT_RULES,
    Action,
    Actor,
    AuditEvent,
    Command,
    DeadlineCancel,
    DeadlineExtend,
    DeadlineStart,
    Decision,
    Rules,
    State,
    TransitionError,
    allowed_actions,
    decide,
)
from tests.domain.test_incident_machine import ORG, POLICE, T0, actor, case

D, L, H = "duty_officer", "leader", "department_handler"
JUSTICE = "330381101-SFS"


def _do(state: State, command: Command, who: Actor, rules: Rules = DEFAULT_RULES, **changes: object) -> Decision:
    return decide(case(state, **changes), command, who, T0, ORG, rules)


def _effects(decision: Decision) -> list[object]:
    return [e for e in decision.effects if not isinstance(e, AuditEvent)]


def test_signing_starts_the_handling_clock_once() -> None:
    """The first department to sign stops the start clock and starts the feedback clock; a second
    signature only records itself; signing twice is refused; a later start changes no clock."""
    handler = actor(H)
    first = _do(State.dispatched, Command(Action.sign, 3), handler, co_departments=(JUSTICE,))
    assert first.incident.signed == (POLICE,) and first.incident.state is State.dispatched
    assert _effects(first) == [DeadlineCancel("start"), DeadlineStart("feedback", T0)]
    other = dataclasses.replace(handler, department=JUSTICE)
    second = decide(first.incident, Command(Action.sign, 4), other, T0, ORG)
    assert second.incident.signed == (POLICE, JUSTICE) and _effects(second) == []
    with pytest.raises(TransitionError, match="signed already"):
        decide(second.incident, Command(Action.sign, 5), handler, T0, ORG)
    started = decide(second.incident, Command(Action.start, 5), handler, T0, ORG)
    assert started.incident.state is State.in_progress and _effects(started) == []


def test_the_lead_department_returns_a_case_until_the_dispatch_stands() -> None:
    """退单 takes the case back to accepted with every clock stopped and the dispatch clock started,
    counts the returns, and is refused once max_returns is reached (审定) or by a co-handler."""
    handler = actor(H)
    back = _do(State.in_progress, Command(Action.return_, 3, reason="不属本部门职责"), handler, signed=(POLICE,))
    new = back.incident
    assert (new.state, new.lead_department, new.returns, new.signed) == (State.accepted, None, 1, ())
    assert _effects(back) == [DeadlineCancel(None), DeadlineStart("dispatch", T0)]
    with pytest.raises(TransitionError) as stands:
        _do(State.dispatched, Command(Action.return_, 3, reason="again"), handler, Rules(max_returns=1), returns=1)
    assert stands.value.code == "illegal_transition"
    with pytest.raises(TransitionError) as no_reason:
        _do(State.dispatched, Command(Action.return_, 3), handler)
    assert no_reason.value.code == "invalid"
    co = dataclasses.replace(handler, department=JUSTICE)
    with pytest.raises(TransitionError) as not_lead:
        _do(State.dispatched, Command(Action.return_, 3, reason="x"), co, co_departments=(JUSTICE,))
    assert not_lead.value.code == "forbidden"


def test_more_time_is_asked_then_granted_or_refused() -> None:
    """延期: a department asks (hours and a reason), a second request waits for the first; the
    dispatching unit grants (the deadline moves by the hours asked) or refuses (it does not)."""
    asked = _do(State.in_progress, Command(Action.extend_request, 3, reason="需等待鉴定结果", hours=48), actor(H))
    assert (asked.incident.extension_hours, asked.incident.extension_department) == (48, POLICE)
    with pytest.raises(TransitionError):
        decide(asked.incident, Command(Action.extend_request, 4, reason="x", hours=1), actor(H), T0, ORG)
    with pytest.raises(TransitionError) as too_long:
        _do(State.in_progress, Command(Action.extend_request, 3, reason="x", hours=10_000), actor(H))
    assert too_long.value.code == "invalid"
    granted = decide(asked.incident, Command(Action.extend_decide, 4, grant=True), actor(D), T0, ORG)
    assert _effects(granted) == [DeadlineExtend(48)]
    assert (granted.incident.extension_hours, granted.incident.extensions) == (None, 1)
    refused = decide(asked.incident, Command(Action.extend_decide, 4, grant=False), actor(D), T0, ORG)
    assert _effects(refused) == [] and refused.incident.extensions == 0
    with pytest.raises(TransitionError):
        _do(State.in_progress, Command(Action.extend_decide, 3, grant=True), actor(D))


def test_urging_counts_and_supervision_is_taken_once() -> None:
    """催办 counts each urging; 督办 is a leader's, once."""
    urged = _do(State.dispatched, Command(Action.urge, 3, note="请尽快处置"), actor(D), urged=1)
    assert urged.incident.urged == 2
    watched = _do(State.in_progress, Command(Action.supervise, 3), actor(L))
    assert watched.incident.supervised
    with pytest.raises(TransitionError):
        decide(watched.incident, Command(Action.supervise, 4), actor(L), T0, ORG)


def test_the_callback_evaluates_or_sends_the_case_back() -> None:
    """回访: not reached leaves the case closed; reached and satisfied evaluates it with the score;
    not satisfied with reopen hands it back to its departments (发回重办) with a new start clock."""
    officer = actor(D)
    missed = _do(State.closed, Command(Action.callback, 3, reached=False), officer)
    assert missed.incident.state is State.closed and missed.incident.version == 4
    happy = _do(State.closed, Command(Action.callback, 3, reached=True, satisfaction=5), officer)
    assert (happy.incident.state, happy.incident.satisfaction) == (State.evaluated, 5)
    unhappy = _do(State.closed, Command(Action.callback, 3, reached=True, satisfaction=2, reopen=True), officer)
    assert unhappy.incident.state is State.dispatched and _effects(unhappy) == [DeadlineStart("start", T0)]
    kept = _do(State.closed, Command(Action.callback, 3, reached=True, satisfaction=2), officer)
    assert (kept.incident.state, kept.incident.satisfaction) == (State.evaluated, 2)
    with pytest.raises(TransitionError) as no_score:
        _do(State.closed, Command(Action.callback, 3, reached=True), officer)
    assert no_score.value.code == "invalid"


def test_the_controls_are_offered_only_when_they_can_be_taken() -> None:
    """allowed_actions offers sign until signed, return while returns remain, one pending
    extension at a time, its decision to the dispatcher, supervision once, the callback when closed."""
    handler, officer, leader = actor(H), actor(D), actor(L)
    fresh = case(State.dispatched)
    assert {Action.sign, Action.return_, Action.extend_request, Action.start} <= set(
        allowed_actions(fresh, handler, ORG)
    )
    signed = dataclasses.replace(fresh, signed=(POLICE,), returns=2, extension_hours=8, extension_department=POLICE)
    offered = set(allowed_actions(signed, handler, ORG, Rules(max_returns=2)))
    assert not offered & {Action.sign, Action.return_, Action.extend_request}
    assert Action.extend_decide in allowed_actions(signed, officer, ORG)
    assert Action.extend_decide not in allowed_actions(fresh, officer, ORG)
    assert Action.urge in allowed_actions(fresh, officer, ORG)
    assert Action.supervise in allowed_actions(fresh, leader, ORG)
    assert Action.supervise not in allowed_actions(dataclasses.replace(fresh, supervised=True), leader, ORG)
    assert Action.callback in allowed_actions(case(State.closed), officer, ORG)
