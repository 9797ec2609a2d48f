"""The closed loop (事件流转) as a pure state machine: every rule, without an event loop."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta, timezone

import pytest

from dispatchd.domain.incident import (
    ACTION_NAMES,
    ALLOWED_ROLES,
    STATE_NAMES,
    Action,
    Actor,
    AuditEvent,
    Command,
    DeadlineCancel,
    DeadlineStart,
    Decision,
    Incident,
    OwnerChanged,
    Role,
    State,
    TransitionError,
    decide,
    legal_actions,
    on_created,
)

# -- a tiny organisation tree --------------------------------------------------------------------

PROVINCE = "330000"
CITY = "330300"
COUNTY = "330381"
TOWN = "330381101"
SIBLING_TOWN = "330381102"
COMMUNITY = "330381101001"
GRID = "330381101001001"
OTHER_GRID = "330381101001002"
SIBLING_COMMUNITY = "330381102001"

_PARENT: dict[str, str | None] = {
    PROVINCE: None,
    CITY: PROVINCE,
    COUNTY: CITY,
    TOWN: COUNTY,
    SIBLING_TOWN: COUNTY,
    COMMUNITY: TOWN,
    GRID: COMMUNITY,
    OTHER_GRID: COMMUNITY,
    SIBLING_COMMUNITY: SIBLING_TOWN,
}
_LEVEL = {
    PROVINCE: "province",
    CITY: "city",
    COUNTY: "county",
    TOWN: "township",
    SIBLING_TOWN: "township",
    COMMUNITY: "community",
    GRID: "grid",
    OTHER_GRID: "grid",
    SIBLING_COMMUNITY: "community",
}


class TinyOrg:
    """Province 330000 > city 330300 > county 330381 > two townships > community > grids."""

    def is_within(self, code: str, root: str) -> bool:
        node: str | None = code
        while node is not None:
            if node == root:
                return True
            node = _PARENT.get(node)
        return False

    def parent_of(self, code: str) -> str | None:
        return _PARENT[code]

    def level_of(self, code: str) -> str:
        return _LEVEL[code]


ORG = TinyOrg()
T0 = datetime(2016, 9, 4, 8, 0, tzinfo=timezone(timedelta(hours=8)))

POLICE = "330381101-PCS"  # 派出所
SAFETY = "330381101-AJ"  # 安监
JUSTICE = "330381101-SFS"  # 司法所
REPORTER_ID = 7

# -- the expectations, written out independently of the module's own tables ----------------------

OPEN = {
    State.reported,
    State.accepted,
    State.dispatched,
    State.in_progress,
    State.fed_back,
    State.verified,
}

# (action, from state) -> to state, for a case handled by one department.
EXPECTED_MOVES: dict[tuple[Action, State], State] = {
    (Action.accept, State.reported): State.accepted,
    (Action.reject, State.reported): State.rejected,
    (Action.merge, State.reported): State.merged,
    (Action.merge, State.accepted): State.merged,
    (Action.dispatch, State.accepted): State.dispatched,
    (Action.start, State.dispatched): State.in_progress,
    (Action.feedback, State.in_progress): State.fed_back,
    (Action.verify, State.fed_back): State.verified,
    (Action.reopen, State.fed_back): State.dispatched,
    (Action.close, State.verified): State.closed,
    (Action.evaluate, State.closed): State.evaluated,
    **{(Action.escalate, s): s for s in OPEN},
    **{(Action.assign, s): s for s in OPEN},
    **{(Action.sign, s): s for s in (State.dispatched, State.in_progress)},
    **{(Action.return_, s): State.accepted for s in (State.dispatched, State.in_progress)},
    **{(Action.extend_request, s): s for s in (State.dispatched, State.in_progress)},
    **{(Action.extend_decide, s): s for s in (State.dispatched, State.in_progress)},
    **{(Action.urge, s): s for s in (State.dispatched, State.in_progress)},
    **{(Action.supervise, s): s for s in OPEN},
    (Action.callback, State.closed): State.evaluated,
}
# What a case must hold for an action to be possible at all (a request waiting to be decided).
PRECONDITIONS: dict[Action, dict[str, object]] = {
    Action.extend_decide: {"extension_hours": 24, "extension_department": POLICE},
}

D, L, A = Role.duty_officer, Role.leader, Role.admin
EXPECTED_ROLES: dict[Action, set[Role]] = {
    Action.accept: {D, L, A},
    Action.reject: {D, L, A},
    Action.merge: {D, L, A},
    Action.dispatch: {D, L, A},
    Action.close: {D, L, A},
    Action.assign: {D, L, A},
    Action.escalate: {D, L, A, Role.department_handler},
    Action.start: {Role.department_handler, Role.squad_member, D},
    Action.feedback: {Role.department_handler, Role.squad_member, D},
    Action.verify: {Role.grid_worker, D, L},
    Action.reopen: {Role.grid_worker, D, L},
    Action.evaluate: {D, A},
    Action.sign: {Role.department_handler},
    Action.return_: {Role.department_handler},
    Action.extend_request: {Role.department_handler},
    Action.extend_decide: {D, L, A},
    Action.urge: {D, L, A},
    Action.supervise: {L, A},
    Action.callback: {D, A},
}

# -- builders ------------------------------------------------------------------------------------


def case(state: State = State.reported, **changes: object) -> Incident:
    """A case in TOWN, reported by the grid worker of GRID, handled by the police station."""
    base = Incident(
        id=42,
        state=state,
        version=3,
        priority="normal",
        category="dispute",
        owner_unit=TOWN,
        grid=GRID,
        reporter_id=REPORTER_ID,
        lead_department=POLICE,
        squad_unit=5,
    )
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def actor(role: Role, **changes: object) -> Actor:
    """A user of ``role`` who is in the right place to act on ``case()``."""
    base = {
        Role.grid_worker: Actor(REPORTER_ID, "wang.wgy", role, GRID),
        Role.department_handler: Actor(11, "li.pcs", role, TOWN, department=POLICE),
        Role.squad_member: Actor(12, "zhao.yjzd", role, TOWN),
    }.get(role, Actor(10, f"{role}.county", role, COUNTY))
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def valid_command(action: Action, version: int = 3) -> Command:
    """A command for ``action`` whose own input is valid."""
    return Command(
        action=action,
        version=version,
        reason="重复上报"
        if action in {Action.reject, Action.reopen, Action.escalate, Action.return_, Action.extend_request}
        else None,
        note="已到场调解" if action is Action.feedback else None,
        department=POLICE if action is Action.dispatch else None,
        target_unit=COMMUNITY if action is Action.assign else None,
        merge_into=41 if action is Action.merge else None,
        satisfaction=4 if action in (Action.evaluate, Action.callback) else None,
        hours=24 if action is Action.extend_request else None,
        grant=True if action is Action.extend_decide else None,
        reached=True if action is Action.callback else None,
    )


def refused(incident: Incident, command: Command, who: Actor, now: datetime = T0) -> TransitionError:
    with pytest.raises(TransitionError) as caught:
        decide(incident, command, who, now, ORG)
    return caught.value


def audit_of(decision: Decision) -> AuditEvent:
    events = [e for e in decision.effects if isinstance(e, AuditEvent)]
    assert len(events) == 1
    return events[0]


def others(decision: Decision) -> tuple[object, ...]:
    return tuple(e for e in decision.effects if not isinstance(e, AuditEvent))


# -- the exhaustive table ------------------------------------------------------------------------


@pytest.mark.parametrize("role", list(Role))
@pytest.mark.parametrize("action", list(Action))
@pytest.mark.parametrize("state", list(State))
def test_every_state_action_role(state: State, action: Action, role: Role) -> None:
    """Each (state, action, role) gives exactly the outcome the independent tables predict."""
    incident = case(state, **PRECONDITIONS.get(action, {}))
    command = valid_command(action)
    who = actor(role)
    if role not in EXPECTED_ROLES[action]:
        assert refused(incident, command, who).code == "forbidden"
    elif (action, state) not in EXPECTED_MOVES:
        error = refused(incident, command, who)
        assert (error.code, error.status) == ("illegal_transition", 409)
    else:
        decision = decide(incident, command, who, T0, ORG)
        assert decision.incident.state is EXPECTED_MOVES[action, state]
        assert decision.incident.version == incident.version + 1
        event = audit_of(decision)
        assert (event.action, event.from_state, event.to_state) == (
            action,
            state,
            EXPECTED_MOVES[action, state],
        )
        assert (event.actor_id, event.actor_name, event.at) == (who.user_id, who.username, T0)


def test_legal_actions_per_state() -> None:
    """legal_actions lists, for every state, exactly the actions the loop allows from it."""
    for state in State:
        assert legal_actions(state) == {a for (a, s) in EXPECTED_MOVES if s is state}, state
    for state in (State.rejected, State.merged, State.evaluated):
        assert legal_actions(state) == frozenset()


def test_allowed_roles_table() -> None:
    """The published role table matches the rules and gives ops no case action."""
    assert {a: set(r) for a, r in ALLOWED_ROLES.items()} == EXPECTED_ROLES
    assert all(Role.ops not in roles for roles in ALLOWED_ROLES.values())


def test_names_in_both_languages() -> None:
    """Every state and action has a Chinese and an English name."""
    assert set(STATE_NAMES) == set(State) and set(ACTION_NAMES) == set(Action)
    assert STATE_NAMES[State.closed].zh == "已办结" and ACTION_NAMES[Action.dispatch].zh == "派遣"
    assert all(n.zh and n.en for n in [*STATE_NAMES.values(), *ACTION_NAMES.values()])


# -- the full loop -------------------------------------------------------------------------------


def test_on_created_starts_accept_clock() -> None:
    """A new report starts the clock for accepting it."""
    assert on_created(T0) == (DeadlineStart("accept", T0),)


def test_happy_path_to_evaluated() -> None:
    """reported → … → evaluated, with the clocks started and stopped at each step."""
    officer = actor(Role.duty_officer)
    handler = actor(Role.department_handler)
    worker = actor(Role.grid_worker)
    incident = case(State.reported, lead_department=None, squad_unit=None, version=1)

    def at(minutes: int) -> datetime:
        return T0 + timedelta(minutes=minutes)

    plan = [
        (Command(Action.accept, 0), officer, State.accepted, ("accept", "dispatch")),
        (
            Command(Action.dispatch, 0, department=POLICE, squad_unit=5),
            officer,
            State.dispatched,
            ("dispatch", "start"),
        ),
        (Command(Action.start, 0), handler, State.in_progress, ("start", "feedback")),
        (
            Command(Action.feedback, 0, note="双方已和解", photos=("p1", "p2")),
            handler,
            State.fed_back,
            ("feedback", "verify"),
        ),
        (Command(Action.verify, 0), worker, State.verified, ("verify", "close")),
        (Command(Action.close, 0), officer, State.closed, ("close", None)),
        (Command(Action.evaluate, 0, satisfaction=5, note="满意"), officer, State.evaluated, None),
    ]
    for minute, (template, who, expected_state, clocks) in enumerate(plan, start=1):
        command = dataclasses.replace(template, version=incident.version)
        decision = decide(incident, command, who, at(minute), ORG)
        before, incident = incident, decision.incident
        assert incident.state is expected_state
        assert incident.version == before.version + 1
        event = audit_of(decision)
        assert decision.effects[0] == event
        assert (event.from_state, event.to_state, event.at) == (before.state, expected_state, at(minute))
        expected: tuple[object, ...] = ()
        if clocks is not None:
            stopped, started = clocks
            expected = (DeadlineCancel(stopped),)
            if started is not None:
                expected += (DeadlineStart(started, at(minute)),)
        assert others(decision) == expected, template.action

    assert incident.version == 1 + len(plan)
    assert incident.lead_department == POLICE and incident.squad_unit == 5
    assert incident.feedback_from == (POLICE,)
    assert incident.satisfaction == 5
    assert incident.owner_unit == TOWN and incident.escalations == 0


def test_audit_records_the_details() -> None:
    """The audit event carries the note, the reason and what the action decided."""
    decision = decide(
        case(State.in_progress),
        Command(Action.feedback, 3, note="已拆除违建", photos=("ph-1",)),
        actor(Role.department_handler),
        T0,
        ORG,
    )
    event = audit_of(decision)
    assert event.note == "已拆除违建"
    assert dict(event.data) == {"department": POLICE, "photos": ["ph-1"], "pending": []}
    rejected = decide(case(), Command(Action.reject, 3, reason="重复上报"), actor(D), T0, ORG)
    assert audit_of(rejected).data["reason"] == "重复上报"
    assert others(rejected) == (DeadlineCancel(None),)


def test_joint_handling_waits_for_every_department() -> None:
    """With co-handlers the case stays in progress until the lead and each co-handler fed back."""
    officer = actor(Role.duty_officer)
    dispatched = decide(
        case(State.accepted),
        Command(Action.dispatch, 3, department=POLICE, co_departments=(SAFETY, JUSTICE)),
        officer,
        T0,
        ORG,
    ).incident
    assert (dispatched.lead_department, dispatched.co_departments) == (POLICE, (SAFETY, JUSTICE))
    started = decide(dispatched, Command(Action.start, 4), actor(D), T0, ORG).incident
    incident = started
    for i, department in enumerate((SAFETY, POLICE)):
        handler = actor(Role.department_handler, department=department)
        decision = decide(
            incident, Command(Action.feedback, incident.version, note="已处置"), handler, T0, ORG
        )
        incident = decision.incident
        assert incident.state is State.in_progress
        assert others(decision) == ()  # the feedback clock keeps running
        assert len(incident.feedback_from) == i + 1
    assert incident.feedback_from == (SAFETY, POLICE)
    assert audit_of(decision).data["pending"] == [JUSTICE]

    # The duty officer records the last department's feedback on its behalf.
    last = decide(
        incident,
        Command(Action.feedback, incident.version, note="已调解", department=JUSTICE),
        officer,
        T0,
        ORG,
    )
    assert last.incident.state is State.fed_back
    assert last.incident.feedback_from == (SAFETY, POLICE, JUSTICE)
    assert others(last) == (DeadlineCancel("feedback"), DeadlineStart("verify", T0))


def test_repeated_feedback_does_not_count_twice() -> None:
    """A department feeding back again in the same round does not stand in for another one."""
    incident = case(State.in_progress, co_departments=(SAFETY,))
    handler = actor(Role.department_handler)
    once = decide(incident, Command(Action.feedback, 3, note="第一次"), handler, T0, ORG).incident
    twice = decide(once, Command(Action.feedback, 4, note="补充照片"), handler, T0, ORG).incident
    assert twice.state is State.in_progress and twice.feedback_from == (POLICE,)
    assert twice.version == 5


def test_feedback_input_rules() -> None:
    """Feedback needs a note and a handling department; a handler speaks only for its own."""
    incident = case(State.in_progress, co_departments=(SAFETY,))
    officer = actor(Role.duty_officer)
    assert refused(incident, Command(Action.feedback, 3, note="  "), officer).code == "invalid"
    outsider = Command(Action.feedback, 3, note="已处置", department=JUSTICE)
    assert refused(incident, outsider, officer).code == "invalid"
    for_other = Command(Action.feedback, 3, note="已处置", department=SAFETY)
    assert refused(incident, for_other, actor(Role.department_handler)).code == "forbidden"
    # Without a department named, the duty officer's feedback is the lead department's.
    decision = decide(incident, Command(Action.feedback, 3, note="已处置"), officer, T0, ORG)
    assert decision.incident.feedback_from == (POLICE,)


def test_reopen_clears_feedback_and_restarts_the_clock() -> None:
    """Reopening sends the case back to dispatched with no feedback and a new start clock."""
    incident = case(State.fed_back, co_departments=(SAFETY,), feedback_from=(POLICE, SAFETY))
    later = T0 + timedelta(days=2)
    decision = decide(
        incident, Command(Action.reopen, 3, reason="现场仍有积水"), actor(Role.grid_worker), later, ORG
    )
    assert decision.incident.state is State.dispatched
    assert decision.incident.feedback_from == ()
    assert (decision.incident.lead_department, decision.incident.co_departments) == (POLICE, (SAFETY,))
    assert others(decision) == (DeadlineCancel("verify"), DeadlineStart("start", later))
    assert audit_of(decision).data["reason"] == "现场仍有积水"
    assert refused(incident, Command(Action.reopen, 3), actor(D)).code == "invalid"


# -- 层层上报 and 任务指派 ---------------------------------------------------------------------------


def test_escalate_up_to_province_then_refused() -> None:
    """Each escalation moves ownership one level up; at the province it is refused."""
    incident = case(State.dispatched, owner_unit=GRID)
    admin = actor(Role.admin, unit=PROVINCE)
    chain = []
    while True:
        command = Command(Action.escalate, incident.version, reason="本级无法解决")
        if incident.owner_unit == PROVINCE:
            error = refused(incident, command, admin)
            break
        decision = decide(incident, command, admin, T0, ORG)
        assert decision.incident.state is State.dispatched
        assert others(decision) == (OwnerChanged(incident.owner_unit, decision.incident.owner_unit),)
        incident = decision.incident
        chain.append(incident.owner_unit)
    assert chain == [COMMUNITY, TOWN, COUNTY, CITY, PROVINCE]
    assert incident.escalations == 5
    assert (error.code, error.status) == ("illegal_transition", 409)
    assert "省" in error.message_zh and "province" in error.message_en


def test_escalate_needs_a_reason_and_leaves_jurisdiction() -> None:
    """Escalation needs a reason; afterwards the township officer no longer owns the case."""
    officer = actor(Role.duty_officer, unit=TOWN)
    incident = case(State.accepted)
    assert refused(incident, Command(Action.escalate, 3), officer).code == "invalid"
    up = decide(incident, Command(Action.escalate, 3, reason="涉及跨镇"), officer, T0, ORG).incident
    assert up.owner_unit == COUNTY
    assert refused(up, Command(Action.escalate, 4, reason="再上报"), officer).code == "forbidden"


def test_assign_down_only_to_a_descendant() -> None:
    """A case is assigned only to a unit strictly below its owning unit."""
    officer = actor(Role.duty_officer)  # county
    incident = case(State.accepted, owner_unit=COUNTY)
    decision = decide(incident, Command(Action.assign, 3, target_unit=COMMUNITY), officer, T0, ORG)
    assert decision.incident.owner_unit == COMMUNITY
    assert decision.incident.state is State.accepted and decision.incident.escalations == 0
    assert others(decision) == (OwnerChanged(COUNTY, COMMUNITY),)
    for target in (COUNTY, CITY, PROVINCE, None, ""):
        error = refused(incident, Command(Action.assign, 3, target_unit=target), officer)
        assert (error.code, error.status) == ("invalid", 422), target
    # Below TOWN, the sibling township's community is not a descendant.
    in_town = case(State.accepted, owner_unit=TOWN)
    assert (
        refused(in_town, Command(Action.assign, 3, target_unit=SIBLING_COMMUNITY), officer).code == "invalid"
    )
    # The township officer cannot assign a case the county owns.
    town_officer = actor(Role.duty_officer, unit=TOWN)
    assert (
        refused(incident, Command(Action.assign, 3, target_unit=COMMUNITY), town_officer).code == "forbidden"
    )


# -- merge, reject, dispatch, evaluate input -----------------------------------------------------


def test_merge_into_another_case() -> None:
    """A duplicate merges into another case, never into itself, and all its clocks stop."""
    officer = actor(Role.leader)
    for state in (State.reported, State.accepted):
        decision = decide(case(state), Command(Action.merge, 3, merge_into=17), officer, T0, ORG)
        assert decision.incident.state is State.merged and decision.incident.merged_into == 17
        assert others(decision) == (DeadlineCancel(None),)
    for target in (42, None, 0, -3):
        assert refused(case(), Command(Action.merge, 3, merge_into=target), officer).code == "invalid"


def test_reject_requires_a_reason() -> None:
    """Rejecting without a reason (or with a blank one) is invalid input."""
    for reason in (None, "", "   "):
        error = refused(case(), Command(Action.reject, 3, reason=reason), actor(D))
        assert (error.code, error.status) == ("invalid", 422)


def test_dispatch_input_rules() -> None:
    """Dispatch needs a lead department, distinct from distinct co-handlers."""
    incident = case(State.accepted, lead_department=None, squad_unit=None)
    officer = actor(D)
    for command in (
        Command(Action.dispatch, 3),
        Command(Action.dispatch, 3, department=" "),
        Command(Action.dispatch, 3, department=POLICE, co_departments=(POLICE,)),
        Command(Action.dispatch, 3, department=POLICE, co_departments=(SAFETY, SAFETY)),
        Command(Action.dispatch, 3, department=POLICE, co_departments=("",)),
        Command(Action.dispatch, 3, department=POLICE, squad_unit=0),
    ):
        assert refused(incident, command, officer).code == "invalid", command
    decision = decide(incident, Command(Action.dispatch, 3, department=POLICE), officer, T0, ORG)
    assert (decision.incident.co_departments, decision.incident.squad_unit) == ((), None)


@pytest.mark.parametrize("score", [None, 0, 6, -1, True])
def test_evaluate_rejects_scores_outside_one_to_five(score: int | None) -> None:
    """Satisfaction must be an integer from 1 to 5."""
    error = refused(case(State.closed), Command(Action.evaluate, 3, satisfaction=score), actor(A))
    assert (error.code, error.status) == ("invalid", 422)


@pytest.mark.parametrize("score", [1, 5])
def test_evaluate_accepts_the_bounds(score: int) -> None:
    """Satisfaction 1 and 5 are both accepted and stored; no clock is touched."""
    decision = decide(case(State.closed), Command(Action.evaluate, 3, satisfaction=score), actor(A), T0, ORG)
    assert decision.incident.satisfaction == score
    assert others(decision) == ()


# -- version, order of checks, messages ----------------------------------------------------------


def test_stale_version_is_refused() -> None:
    """A command built against an older or newer version is refused with 409 and changes nothing."""
    incident = case(State.reported)
    for version in (2, 4):
        error = refused(incident, Command(Action.accept, version), actor(D))
        assert (error.code, error.status) == ("stale_version", 409)
    assert incident.state is State.reported and incident.version == 3


def test_checks_run_in_order() -> None:
    """Authorisation comes before the version, the version before the state, the state before input."""
    closed = case(State.closed)
    stale_illegal_invalid = Command(Action.reject, 1)
    assert refused(closed, stale_illegal_invalid, actor(Role.grid_worker)).code == "forbidden"
    assert refused(closed, stale_illegal_invalid, actor(D, unit=SIBLING_TOWN)).code == "forbidden"
    assert refused(closed, stale_illegal_invalid, actor(D)).code == "stale_version"
    assert refused(closed, Command(Action.reject, 3), actor(D)).code == "illegal_transition"
    assert refused(case(), Command(Action.reject, 3), actor(D)).code == "invalid"


def test_illegal_transition_explains_which_states_allow_it() -> None:
    """The refusal names the current state and the states the action is allowed from."""
    error = refused(case(State.closed), valid_command(Action.dispatch), actor(D))
    assert error.message_zh.startswith("案件当前状态为“已办结”，不能执行“派遣”")
    assert "已立案" in error.message_zh
    assert error.message_en == "case is closed; dispatch is allowed only from accepted"
    merge = refused(case(State.verified), valid_command(Action.merge), actor(D))
    assert merge.message_en == "case is verified; merge is allowed only from reported or accepted"
    assert str(merge) == merge.message_en


def test_forbidden_role_is_explained() -> None:
    """A role that may never take the action gets 403 naming the roles that may."""
    error = refused(case(State.accepted), valid_command(Action.dispatch), actor(Role.ops))
    assert (error.code, error.status) == ("forbidden", 403)
    assert "duty_officer" in error.message_en and "运维" in error.message_zh


def test_input_is_not_mutated() -> None:
    """decide returns a new case and leaves the old one as it was."""
    incident = case(State.reported)
    decision = decide(incident, valid_command(Action.accept), actor(D), T0, ORG)
    assert incident == case(State.reported)
    assert decision.incident == dataclasses.replace(incident, state=State.accepted, version=4)


def test_naive_time_is_a_programming_error() -> None:
    """The machine refuses a time without a zone instead of guessing one."""
    with pytest.raises(ValueError):
        decide(case(), valid_command(Action.accept), actor(D), datetime(2016, 9, 4, 8, 0), ORG)
    with pytest.raises(ValueError):
        on_created(datetime(2016, 9, 4, 8, 0))
    assert on_created(datetime(2016, 9, 4, tzinfo=UTC))[0] == DeadlineStart(
        "accept", datetime(2016, 9, 4, tzinfo=UTC)
    )


# -- who may act on which case -------------------------------------------------------------------


def test_grid_worker_checks_only_own_grid_or_own_report() -> None:
    """A grid worker verifies/reopens only cases of their grid or that they reported."""
    incident = case(State.fed_back)
    stranger = actor(Role.grid_worker, user_id=99, unit=OTHER_GRID)
    for action in (Action.verify, Action.reopen):
        assert refused(incident, valid_command(action), stranger).code == "forbidden"
    neighbour = actor(Role.grid_worker, user_id=99, unit=GRID)  # same grid, not the reporter
    assert decide(incident, valid_command(Action.verify), neighbour, T0, ORG).incident.state is State.verified
    reporter_elsewhere = actor(Role.grid_worker, unit=OTHER_GRID)  # reported it, now on another grid
    assert decide(incident, valid_command(Action.reopen), reporter_elsewhere, T0, ORG).incident.state is (
        State.dispatched
    )
    anonymous = case(State.fed_back, grid=None, reporter_id=None)
    assert refused(anonymous, valid_command(Action.verify), actor(Role.grid_worker)).code == "forbidden"


def test_department_handler_works_only_its_own_cases() -> None:
    """A handler starts and feeds back only cases its department handles."""
    incident = case(State.dispatched, co_departments=(SAFETY,))
    co_handler = actor(Role.department_handler, department=SAFETY)
    assert (
        decide(incident, valid_command(Action.start), co_handler, T0, ORG).incident.state is State.in_progress
    )
    for department in (JUSTICE, None):
        outsider = actor(Role.department_handler, department=department)
        assert refused(incident, valid_command(Action.start), outsider).code == "forbidden"
        in_progress = case(State.in_progress)
        assert refused(in_progress, valid_command(Action.feedback), outsider).code == "forbidden"


def test_department_handler_may_escalate_its_cases_or_within_its_unit() -> None:
    """A handler escalates a case its department handles, or one owned within its unit."""
    county_case = case(State.dispatched, owner_unit=COUNTY)
    handling = actor(Role.department_handler)  # TOWN unit, handles the case
    assert decide(county_case, valid_command(Action.escalate), handling, T0, ORG).incident.owner_unit == CITY
    accepted = case(State.accepted, lead_department=None)
    local = actor(Role.department_handler, department=JUSTICE)  # TOWN unit, case owned by TOWN
    assert decide(accepted, valid_command(Action.escalate), local, T0, ORG).incident.owner_unit == COUNTY
    far = actor(Role.department_handler, department=JUSTICE, unit=SIBLING_TOWN)
    assert refused(accepted, valid_command(Action.escalate), far).code == "forbidden"


def test_squad_member_needs_a_dispatched_squad() -> None:
    """A squad member acts only on a case with a squad dispatched, within its unit."""
    member = actor(Role.squad_member)
    without = case(State.dispatched, squad_unit=None)
    assert refused(without, valid_command(Action.start), member).code == "forbidden"
    with_squad = case(State.dispatched, squad_unit=5)
    assert (
        decide(with_squad, valid_command(Action.start), member, T0, ORG).incident.state is State.in_progress
    )
    elsewhere = actor(Role.squad_member, unit=SIBLING_TOWN)
    assert refused(with_squad, valid_command(Action.start), elsewhere).code == "forbidden"


STATE_FOR_ACTION: Mapping[Action, State] = {
    Action.accept: State.reported,
    Action.reject: State.reported,
    Action.merge: State.accepted,
    Action.dispatch: State.accepted,
    Action.start: State.dispatched,
    Action.feedback: State.in_progress,
    Action.verify: State.fed_back,
    Action.reopen: State.fed_back,
    Action.close: State.verified,
    Action.evaluate: State.closed,
    Action.escalate: State.in_progress,
    Action.assign: State.accepted,
    Action.sign: State.dispatched,
    Action.return_: State.dispatched,
    Action.extend_request: State.in_progress,
    Action.extend_decide: State.in_progress,
    Action.urge: State.dispatched,
    Action.supervise: State.in_progress,
    Action.callback: State.closed,
}


@pytest.mark.parametrize("action", list(Action))
def test_sibling_township_is_out_of_jurisdiction(action: Action) -> None:
    """An actor of the sibling township is forbidden every action on this township's case."""
    incident = case(STATE_FOR_ACTION[action], **PRECONDITIONS.get(action, {}))
    for role in (D, L, A, Role.squad_member):
        if role in EXPECTED_ROLES[action]:
            error = refused(incident, valid_command(action), actor(role, unit=SIBLING_TOWN))
            assert (error.code, error.status) == ("forbidden", 403), role
        # The same role one level up, in the county, may.
        if role in EXPECTED_ROLES[action] and role is not Role.squad_member:
            assert decide(incident, valid_command(action), actor(role, unit=COUNTY), T0, ORG)


def test_owning_unit_itself_is_in_jurisdiction() -> None:
    """An officer of the owning unit itself may act, not only its ancestors."""
    decision = decide(case(), valid_command(Action.accept), actor(D, unit=TOWN), T0, ORG)
    assert decision.incident.state is State.accepted
    below = actor(D, unit=COMMUNITY)  # a community officer cannot act on the township's case
    assert refused(case(), valid_command(Action.accept), below).code == "forbidden"
