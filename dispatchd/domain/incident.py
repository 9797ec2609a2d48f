"""The closed loop of a case (事件流转) as a pure state machine.

``decide`` takes the case as it stands, one command, the acting user, the current time and a
read-only view of the organisation tree, and returns the new case together with the effects
the caller must carry out (an audit event, deadline clocks to start or cancel, a change of the
owning unit).  It never awaits, never reads the clock and does no I/O, so every rule here is
tested without an event loop.

The loop, after the steps named in the domain notes:

    reported ─accept(立案)─> accepted ─dispatch(派遣)─> dispatched ─start─> in_progress
    in_progress ─feedback(反馈, once per handling department)─> fed_back
    fed_back ─verify(核查)─> verified ─close(结案)─> closed ─evaluate(评价)─> evaluated
    fed_back ─reopen(退回重办)─> dispatched            reported ─reject(不予受理)─> rejected
    reported|accepted ─merge(合并)─> merged
    any open case: escalate(上报, one level up) and assign(指派, down to a descendant unit)

and the controls that make a county's chain work (as a 12345 hotline runs them):

    dispatched ─sign(签收, a handling department; starts its handling clock)─> dispatched
    dispatched|in_progress ─return(退单, the lead department, with a reason)─> accepted
        (the dispatching unit dispatches again; after [incidents] max_returns returns its
        dispatch stands: 审定)
    dispatched|in_progress ─extend_request(延期, a handling department)─> (a pending request)
        ─extend_decide(the dispatching unit grants or refuses)─> the deadline moves, or not
    dispatched|in_progress ─urge(催办, an officer)─>   any open case ─supervise(督办, a leader)─>
    closed ─callback(回访: reached? satisfied?)─> evaluated, or dispatched again (发回重办)

Checks run in a fixed order, so the answer to a request never depends on more than it must:
1. the actor's role may take the action at all (403 ``forbidden``);
2. the actor may act on this case — jurisdiction, handling department, grid (403 ``forbidden``);
3. the command was built against the current version of the case (409 ``stale_version``);
4. the action is legal in the current state (409 ``illegal_transition``);
5. the command's own input is valid (422 ``invalid``).
Authorisation comes first so that a user without rights learns nothing about the case.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from types import MappingProxyType
from typing import Final, Literal, NamedTuple, Protocol


class State(StrEnum):
    """Where a case stands in the closed loop."""

    reported = "reported"
    accepted = "accepted"
    rejected = "rejected"
    merged = "merged"
    dispatched = "dispatched"
    in_progress = "in_progress"
    fed_back = "fed_back"
    verified = "verified"
    closed = "closed"
    evaluated = "evaluated"


class Action(StrEnum):
    """What a user asks of a case: ``POST /api/v1/incidents/{id}/actions/{action}``."""

    accept = "accept"
    reject = "reject"
    merge = "merge"
    dispatch = "dispatch"
    start = "start"
    feedback = "feedback"
    verify = "verify"
    reopen = "reopen"
    close = "close"
    evaluate = "evaluate"
    escalate = "escalate"
    assign = "assign"
    sign = "sign"
    return_ = "return"
    extend_request = "extend_request"
    extend_decide = "extend_decide"
    urge = "urge"
    supervise = "supervise"
    callback = "callback"


class Role(StrEnum):
    """What a user is in the command chain."""

    duty_officer = "duty_officer"
    leader = "leader"
    squad_member = "squad_member"
    grid_worker = "grid_worker"
    department_handler = "department_handler"
    admin = "admin"
    ops = "ops"


class LocalName(NamedTuple):
    """A name shown to people, in Chinese and in English."""

    zh: str
    en: str


STATE_NAMES: Final[Mapping[State, LocalName]] = MappingProxyType(
    {
        State.reported: LocalName("待受理", "reported"),
        State.accepted: LocalName("已立案", "accepted"),
        State.rejected: LocalName("不予受理", "rejected"),
        State.merged: LocalName("已合并", "merged"),
        State.dispatched: LocalName("已派遣", "dispatched"),
        State.in_progress: LocalName("处置中", "in progress"),
        State.fed_back: LocalName("已反馈", "fed back"),
        State.verified: LocalName("已核查", "verified"),
        State.closed: LocalName("已办结", "closed"),
        State.evaluated: LocalName("已评价", "evaluated"),
    }
)

ACTION_NAMES: Final[Mapping[Action, LocalName]] = MappingProxyType(
    {
        Action.accept: LocalName("立案", "accept"),
        Action.reject: LocalName("不予受理", "reject"),
        Action.merge: LocalName("合并", "merge"),
        Action.dispatch: LocalName("派遣", "dispatch"),
        Action.start: LocalName("开始处置", "start"),
        Action.feedback: LocalName("反馈", "feedback"),
        Action.verify: LocalName("核查", "verify"),
        Action.reopen: LocalName("退回重办", "reopen"),
        Action.close: LocalName("结案", "close"),
        Action.evaluate: LocalName("评价", "evaluate"),
        Action.escalate: LocalName("上报", "escalate"),
        Action.assign: LocalName("指派", "assign"),
        Action.sign: LocalName("签收", "sign"),
        Action.return_: LocalName("退单", "return"),
        Action.extend_request: LocalName("申请延期", "ask for more time"),
        Action.extend_decide: LocalName("审批延期", "decide on more time"),
        Action.urge: LocalName("催办", "urge"),
        Action.supervise: LocalName("督办", "supervise"),
        Action.callback: LocalName("回访", "call back"),
    }
)

ROLE_NAMES: Final[Mapping[Role, LocalName]] = MappingProxyType(
    {
        Role.duty_officer: LocalName("值班员", "duty officer"),
        Role.leader: LocalName("领导", "leader"),
        Role.squad_member: LocalName("应急队员", "squad member"),
        Role.grid_worker: LocalName("网格员", "grid worker"),
        Role.department_handler: LocalName("部门承办人", "department handler"),
        Role.admin: LocalName("管理员", "administrator"),
        Role.ops: LocalName("运维", "operations"),
    }
)

_COMMAND: Final = frozenset({Role.duty_officer, Role.leader, Role.admin})
_HANDLING: Final = frozenset({Role.department_handler, Role.squad_member, Role.duty_officer})
_CHECKING: Final = frozenset({Role.grid_worker, Role.duty_officer, Role.leader})

# Who may take which action.  ``ops`` runs the system and takes no case actions.
ALLOWED_ROLES: Final[Mapping[Action, frozenset[Role]]] = MappingProxyType(
    {
        Action.accept: _COMMAND,
        Action.reject: _COMMAND,
        Action.merge: _COMMAND,
        Action.dispatch: _COMMAND,
        Action.close: _COMMAND,
        Action.assign: _COMMAND,
        Action.escalate: _COMMAND | {Role.department_handler},
        Action.start: _HANDLING,
        Action.feedback: _HANDLING,
        Action.verify: _CHECKING,
        Action.reopen: _CHECKING,
        Action.evaluate: frozenset({Role.duty_officer, Role.admin}),
        Action.sign: frozenset({Role.department_handler}),
        Action.return_: frozenset({Role.department_handler}),
        Action.extend_request: frozenset({Role.department_handler}),
        Action.extend_decide: _COMMAND,
        Action.urge: _COMMAND,
        Action.supervise: frozenset({Role.leader, Role.admin}),
        Action.callback: frozenset({Role.duty_officer, Role.admin}),
    }
)

TERMINAL_STATES: Final = frozenset({State.rejected, State.merged, State.evaluated})
# A case is open until it is rejected, merged or closed: only open cases move up or down the tree.
OPEN_STATES: Final = frozenset(State) - TERMINAL_STATES - {State.closed}

# From which states each action may be taken.
_LEGAL_FROM: Final[Mapping[Action, frozenset[State]]] = MappingProxyType(
    {
        Action.accept: frozenset({State.reported}),
        Action.reject: frozenset({State.reported}),
        Action.merge: frozenset({State.reported, State.accepted}),
        Action.dispatch: frozenset({State.accepted}),
        Action.start: frozenset({State.dispatched}),
        Action.feedback: frozenset({State.in_progress}),
        Action.verify: frozenset({State.fed_back}),
        Action.reopen: frozenset({State.fed_back}),
        Action.close: frozenset({State.verified}),
        Action.evaluate: frozenset({State.closed}),
        Action.escalate: OPEN_STATES,
        Action.assign: OPEN_STATES,
        Action.sign: frozenset({State.dispatched, State.in_progress}),
        Action.return_: frozenset({State.dispatched, State.in_progress}),
        Action.extend_request: frozenset({State.dispatched, State.in_progress}),
        Action.extend_decide: frozenset({State.dispatched, State.in_progress}),
        Action.urge: frozenset({State.dispatched, State.in_progress}),
        Action.supervise: OPEN_STATES,
        Action.callback: frozenset({State.closed}),
    }
)

SATISFACTION_MIN: Final = 1
SATISFACTION_MAX: Final = 5
SATISFIED_FROM: Final = 4  # a callback scored this or better counts as satisfied (群众满意)


@dataclass(frozen=True)
class Rules:
    """The county's settings the machine needs (``[incidents]``)."""

    max_returns: int = 2  # a department may return a case this often; then the dispatch stands (审定)
    max_extension_hours: int = 720  # the most time one extension may add


DEFAULT_RULES: Final = Rules()


def legal_actions(state: State) -> frozenset[Action]:
    """The actions the closed loop allows from ``state``, whoever asks."""
    return frozenset(action for action, states in _LEGAL_FROM.items() if state in states)


class OrgView(Protocol):
    """What the machine needs to know of the organisation tree (grid → … → province)."""

    def is_within(self, code: str, root: str) -> bool:
        """True when ``code`` is ``root`` itself or lies below it."""
        ...

    def parent_of(self, code: str) -> str | None:
        """The unit one level up, or None at the top."""
        ...

    def level_of(self, code: str) -> str:
        """The level name of a unit: province, city, county, township, community, grid."""
        ...


@dataclass(frozen=True)
class Actor:
    """The user taking an action, as the machine needs to see them."""

    user_id: int
    username: str
    role: Role
    unit: str  # home unit code in the org tree
    department: str | None = None  # the department code a department_handler works for


@dataclass(frozen=True)
class Incident:
    """The part of a case the machine needs."""

    id: int
    state: State
    version: int
    priority: str
    category: str
    owner_unit: str
    grid: str | None
    reporter_id: int | None
    lead_department: str | None = None
    co_departments: tuple[str, ...] = ()
    squad_unit: int | None = None
    feedback_from: tuple[str, ...] = ()  # departments that fed back in this round
    merged_into: int | None = None
    satisfaction: int | None = None
    escalations: int = 0
    signed: tuple[str, ...] = ()  # departments that signed for it (签收) in this round
    returns: int = 0  # times a department returned it (退单)
    extension_hours: int | None = None  # a pending request for more time (延期) …
    extension_department: str | None = None  # … and who asked
    extensions: int = 0  # extensions granted
    urged: int = 0  # times an officer urged its handler (催办)
    supervised: bool = False  # under a leader's supervision (督办)

    @property
    def handling_departments(self) -> tuple[str, ...]:
        """The lead department followed by the co-handlers (empty before dispatch)."""
        if self.lead_department is None:
            return self.co_departments
        return (self.lead_department, *self.co_departments)

    @property
    def pending_feedback(self) -> tuple[str, ...]:
        """Handling departments that have not fed back in this round."""
        return tuple(d for d in self.handling_departments if d not in self.feedback_from)


@dataclass(frozen=True)
class Command:
    """One request to move a case; ``version`` is the case version the requester saw."""

    action: Action
    version: int
    reason: str | None = None
    note: str | None = None
    department: str | None = None  # dispatch: the lead department; feedback: on whose behalf
    co_departments: tuple[str, ...] = ()
    squad_unit: int | None = None
    target_unit: str | None = None
    merge_into: int | None = None
    satisfaction: int | None = None
    photos: tuple[str, ...] = ()
    hours: int | None = None  # extend_request: how much more time
    grant: bool | None = None  # extend_decide
    reached: bool | None = None  # callback: was the reporter reached?
    reopen: bool | None = None  # callback: not satisfied, handle it again (发回重办)


# -- effects: what the caller must do after persisting the new case ------------------------------


@dataclass(frozen=True)
class AuditEvent:
    """An append-only record of one action on a case."""

    action: Action
    actor_id: int
    actor_name: str
    at: datetime
    from_state: State
    to_state: State
    note: str | None
    data: Mapping[str, object]


@dataclass(frozen=True)
class DeadlineStart:
    """Start the clock of ``step``, the next step of the loop (限期反馈)."""

    step: str  # accept | dispatch | start | feedback | verify | close
    started_at: datetime


@dataclass(frozen=True)
class DeadlineCancel:
    """Stop the clock of ``step``; ``None`` stops every clock of the case."""

    step: str | None


@dataclass(frozen=True)
class DeadlineExtend:
    """The running step's deadline moves later by ``hours`` (an extension granted)."""

    hours: int


@dataclass(frozen=True)
class OwnerChanged:
    """The case moved to another owning unit (层层上报 up, 指派 down)."""

    from_unit: str
    to_unit: str


Effect = AuditEvent | DeadlineStart | DeadlineCancel | DeadlineExtend | OwnerChanged


@dataclass(frozen=True)
class Decision:
    """The case after the action, and the effects to carry out, in order."""

    incident: Incident
    effects: tuple[Effect, ...]


ErrorCode = Literal["illegal_transition", "forbidden", "stale_version", "invalid"]

_STATUS: Final[Mapping[str, int]] = MappingProxyType(
    {"illegal_transition": 409, "stale_version": 409, "forbidden": 403, "invalid": 422}
)


class TransitionError(Exception):
    """A refused command, with its HTTP status and an explanation in Chinese and English."""

    code: ErrorCode
    status: int
    message_zh: str
    message_en: str

    def __init__(self, code: ErrorCode, message_zh: str, message_en: str) -> None:
        super().__init__(message_en)
        self.code = code
        self.status = _STATUS[code]
        self.message_zh = message_zh
        self.message_en = message_en

    def __repr__(self) -> str:
        return f"TransitionError({self.code!r}, {self.message_zh!r}, {self.message_en!r})"


# What else a viewer may do with a case, beside the steps of the loop (named in allowed_actions too).
CONVENE: Final = "convene"  # convene a consultation about the case (视频会商)
CALL_OUT: Final = "call_out"  # phone about the case from the console: the reporter back (回访), a department


def case_operations(
    incident: Incident,
    actor: Actor,
    org: OrgView,
    conveners: frozenset[str],
    callers_out: frozenset[str] = frozenset(),
) -> tuple[str, ...]:
    """Operations on a case that are not steps of the loop: a consultation about an open case in
    the actor's jurisdiction, for those who may convene one; a call out about a case (open or
    closed: the satisfaction callback comes after closing) in the actor's jurisdiction, for those
    who may place calls out."""
    found: list[str] = []
    within = _within_jurisdiction(incident, actor, org)
    if incident.state in OPEN_STATES and str(actor.role) in conveners and within:
        found.append(CONVENE)
    if str(actor.role) in callers_out and within:
        found.append(CALL_OUT)
    return tuple(found)


def allowed_actions(
    incident: Incident, actor: Actor, org: OrgView, rules: Rules = DEFAULT_RULES
) -> tuple[Action, ...]:
    """The actions ``actor`` may take on ``incident`` now, in the order of :class:`Action`: the
    checks of :func:`decide` that need no input (role, scope, state), plus what the case alone
    decides (a department that has fed back this round has nothing more to feed back; a case at the
    top cannot go up). Screens draw their buttons from this, never from a copy of the rules."""
    found: list[Action] = []
    for action in Action:
        if actor.role not in ALLOWED_ROLES[action] or incident.state not in _LEGAL_FROM[action]:
            continue
        try:
            _check_scope(incident, Command(action, incident.version), actor, org)
        except TransitionError:
            continue
        if action is Action.escalate and org.parent_of(incident.owner_unit) is None:
            continue
        if (
            action is Action.feedback
            and actor.role is Role.department_handler
            and actor.department not in incident.pending_feedback
        ):
            continue
        if not _possible_now(action, incident, actor, rules):
            continue
        found.append(action)
    return tuple(found)


def _possible_now(action: Action, case: Incident, actor: Actor, rules: Rules) -> bool:
    """What the case itself decides, beyond role, scope and state (no input needed)."""
    if action is Action.sign:
        return actor.department not in case.signed
    if action is Action.return_:
        return actor.department == case.lead_department and case.returns < rules.max_returns
    if action is Action.extend_request:
        return case.extension_hours is None
    if action is Action.extend_decide:
        return case.extension_hours is not None
    if action is Action.supervise:
        return not case.supervised
    return True


def on_created(now: datetime) -> tuple[Effect, ...]:
    """Effects of a new report: the clock for accepting it (受理) starts."""
    _require_aware(now)
    return (DeadlineStart("accept", now),)


def decide(
    incident: Incident,
    command: Command,
    actor: Actor,
    now: datetime,
    org: OrgView,
    rules: Rules = DEFAULT_RULES,
) -> Decision:
    """Apply ``command`` by ``actor`` to ``incident`` at ``now``, or raise TransitionError."""
    _require_aware(now)
    action = command.action
    _check_role(action, actor)
    _check_scope(incident, command, actor, org)
    if command.version != incident.version:
        raise TransitionError(
            "stale_version",
            f"案件版本已变化（当前版本 {incident.version}，请求基于版本 {command.version}），请刷新后重试",
            f"case is at version {incident.version} but the request was made against version "
            f"{command.version}; reload and retry",
        )
    _check_legal(incident.state, action)
    step = _STEPS[action](incident, command, actor, org, rules)
    new = dataclasses.replace(step.incident, version=incident.version + 1)
    audit = AuditEvent(
        action=action,
        actor_id=actor.user_id,
        actor_name=actor.username,
        at=now,
        from_state=incident.state,
        to_state=new.state,
        note=command.note,
        data=MappingProxyType(dict(step.data)),
    )
    stops = tuple(DeadlineCancel(name) for name in step.stops)
    starts = tuple(DeadlineStart(name, now) for name in step.starts)
    return Decision(new, (audit, *step.moves, *stops, *starts, *step.extends))


# -- checks --------------------------------------------------------------------------------------


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("time must be timezone-aware")


def _forbidden(zh: str, en: str) -> TransitionError:
    return TransitionError("forbidden", zh, en)


def _invalid(zh: str, en: str) -> TransitionError:
    return TransitionError("invalid", zh, en)


def _check_role(action: Action, actor: Actor) -> None:
    allowed = ALLOWED_ROLES[action]
    if actor.role in allowed:
        return
    ordered = [role for role in Role if role in allowed]
    raise _forbidden(
        f"角色“{ROLE_NAMES[actor.role].zh}”不能执行“{ACTION_NAMES[action].zh}”"
        f"（可执行角色：{'、'.join(ROLE_NAMES[r].zh for r in ordered)}）",
        f"role {actor.role} may not {action}; allowed roles: {', '.join(ordered)}",
    )


def _within_jurisdiction(incident: Incident, actor: Actor, org: OrgView) -> bool:
    """The actor's home unit is the owning unit or one of its ancestors (属地管辖)."""
    return org.is_within(incident.owner_unit, actor.unit)


def _check_scope(incident: Incident, command: Command, actor: Actor, org: OrgView) -> None:
    """May this actor act on this particular case?"""
    action, role = command.action, actor.role
    if role is Role.department_handler:
        # A department works the cases it was dispatched to (一扇门进入、一条龙服务); it may also
        # pass up (上报) a case within its unit's jurisdiction.
        handles = actor.department is not None and actor.department in incident.handling_departments
        if handles or (action is Action.escalate and _within_jurisdiction(incident, actor, org)):
            return
        raise _forbidden(
            f"部门“{actor.department or '未指定'}”不是本案件的承办部门",
            f"department {actor.department or '(none)'} is not handling this case",
        )
    if role is Role.grid_worker:
        # Verification is done by the grid worker of the case's grid or the one who reported it.
        if incident.grid == actor.unit or (
            incident.reporter_id is not None and incident.reporter_id == actor.user_id
        ):
            return
        raise _forbidden(
            "只有案件所在网格的网格员或报告人可以核查本案件",
            "only the grid worker of the case's grid or its reporter may check this case",
        )
    if role is Role.squad_member and incident.squad_unit is None:
        raise _forbidden("本案件未派遣应急中队", "no emergency squad was dispatched to this case")
    if not _within_jurisdiction(incident, actor, org):
        raise _forbidden(
            f"案件归属单位 {incident.owner_unit} 不在您所在单位 {actor.unit} 的管辖范围内",
            f"case is owned by {incident.owner_unit}, outside the jurisdiction of {actor.unit}",
        )


def _check_legal(state: State, action: Action) -> None:
    allowed = _LEGAL_FROM[action]
    if state in allowed:
        return
    ordered = [s for s in State if s in allowed]
    raise TransitionError(
        "illegal_transition",
        f"案件当前状态为“{STATE_NAMES[state].zh}”，不能执行“{ACTION_NAMES[action].zh}”"
        f"（仅“{'”“'.join(STATE_NAMES[s].zh for s in ordered)}”状态可以）",
        f"case is {STATE_NAMES[state].en}; {action} is allowed only from "
        f"{_or_list([STATE_NAMES[s].en for s in ordered])}",
    )


def _or_list(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


def _text(value: str | None) -> str | None:
    """A required free-text field, stripped; None when absent or blank."""
    if value is None or not value.strip():
        return None
    return value.strip()


def _require_reason(command: Command) -> str:
    reason = _text(command.reason)
    if reason is None:
        name = ACTION_NAMES[command.action]
        raise _invalid(f"“{name.zh}”必须说明理由", f"{command.action} requires a reason")
    return reason


# -- one function per action ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Step:
    incident: Incident
    data: Mapping[str, object] = dataclasses.field(default_factory=dict)
    stops: tuple[str | None, ...] = ()  # clocks to cancel (None: all of them) …
    starts: tuple[str, ...] = ()  # … then clocks to start, now
    moves: tuple[OwnerChanged, ...] = ()
    extends: tuple[DeadlineExtend, ...] = ()


def _accept(case: Incident, command: Command, actor: Actor, org: OrgView, rules: Rules) -> _Step:
    # 受理/立案: the accept clock stops, the dispatch clock starts.
    return _Step(
        dataclasses.replace(case, state=State.accepted),
        stops=("accept",),
        starts=("dispatch",),
    )


def _reject(case: Incident, command: Command, actor: Actor, org: OrgView, rules: Rules) -> _Step:
    # 不予受理 (invalid or duplicate report): the case ends, every clock stops.
    reason = _require_reason(command)
    return _Step(
        dataclasses.replace(case, state=State.rejected),
        data={"reason": reason},
        stops=(None,),
    )


def _merge(case: Incident, command: Command, actor: Actor, org: OrgView, rules: Rules) -> _Step:
    # 合并: a duplicate joins an existing case; whether that case exists is the caller's check.
    target = command.merge_into
    if target is None or target <= 0:
        raise _invalid("合并必须指定目标案件", "merge requires the id of the case to merge into")
    if target == case.id:
        raise _invalid("案件不能合并到自身", "a case cannot be merged into itself")
    return _Step(
        dataclasses.replace(case, state=State.merged, merged_into=target),
        data={"merged_into": target},
        stops=(None,),
    )


def _dispatch(case: Incident, command: Command, actor: Actor, org: OrgView, rules: Rules) -> _Step:
    # 派遣: a lead department, optional co-handlers (联合处置) and an optional squad.
    lead = _text(command.department)
    if lead is None:
        raise _invalid("派遣必须指定主办部门", "dispatch requires a lead department")
    co = tuple(d.strip() for d in command.co_departments)
    if any(not d for d in co):
        raise _invalid("协办部门代码不能为空", "co-handling department codes must not be blank")
    if lead in co:
        raise _invalid("主办部门不能同时为协办部门", "the lead department cannot also be a co-handler")
    if len(set(co)) != len(co):
        raise _invalid("协办部门重复", "co-handling departments are listed twice")
    if command.squad_unit is not None and command.squad_unit <= 0:
        raise _invalid("应急中队编号无效", "squad unit id must be positive")
    new = dataclasses.replace(
        case,
        state=State.dispatched,
        lead_department=lead,
        co_departments=co,
        squad_unit=command.squad_unit,
        feedback_from=(),
        signed=(),
    )
    return _Step(
        new,
        data={"lead_department": lead, "co_departments": list(co), "squad_unit": command.squad_unit},
        stops=("dispatch",),
        starts=("start",),
    )


def _start_handling(case: Incident, command: Command, actor: Actor, org: OrgView, rules: Rules) -> _Step:
    # 处置: someone is on it; the clock for feeding back starts (unless signing started it).
    return _Step(
        dataclasses.replace(case, state=State.in_progress),
        data={"department": actor.department} if actor.role is Role.department_handler else {},
        stops=() if case.signed else ("start",),
        starts=() if case.signed else ("feedback",),
    )


def _feedback(case: Incident, command: Command, actor: Actor, org: OrgView, rules: Rules) -> _Step:
    # 反馈: every handling department reports what it did; the case is fed back only when the lead
    # and all co-handlers have (联合处置 — one door in, one service through).
    if actor.role is Role.department_handler:
        department = actor.department
        if command.department is not None and command.department != department:
            raise _forbidden(
                f"不能代部门“{command.department}”反馈", f"may not feed back for {command.department}"
            )
    else:
        department = _text(command.department) or case.lead_department
    if department is None or department not in case.handling_departments:
        raise _invalid(
            f"部门“{department or '未指定'}”不是本案件的承办部门",
            f"department {department or '(none)'} is not handling this case",
        )
    note = _text(command.note)
    if note is None:
        raise _invalid("反馈必须说明处置情况", "feedback requires a note of what was done")
    fed = case.feedback_from if department in case.feedback_from else (*case.feedback_from, department)
    new = dataclasses.replace(case, feedback_from=fed)
    pending = new.pending_feedback
    data: dict[str, object] = {
        "department": department,
        "photos": list(command.photos),
        "pending": list(pending),
    }
    if pending:
        return _Step(new, data=data)
    return _Step(
        dataclasses.replace(new, state=State.fed_back),
        data=data,
        stops=("feedback",),
        starts=("verify",),
    )


def _verify(case: Incident, command: Command, actor: Actor, org: OrgView, rules: Rules) -> _Step:
    # 核查: the result on site matches the feedback (photos of the check go on record).
    return _Step(
        dataclasses.replace(case, state=State.verified),
        data={"photos": list(command.photos)} if command.photos else {},
        stops=("verify",),
        starts=("close",),
    )


def _reopen(case: Incident, command: Command, actor: Actor, org: OrgView, rules: Rules) -> _Step:
    # 退回重办: the handling departments go again; this round's feedback is void, a new clock runs.
    reason = _require_reason(command)
    return _Step(
        dataclasses.replace(case, state=State.dispatched, feedback_from=(), signed=()),
        data={"reason": reason, **({"photos": list(command.photos)} if command.photos else {})},
        stops=("verify",),
        starts=("start",),
    )


def _close(case: Incident, command: Command, actor: Actor, org: OrgView, rules: Rules) -> _Step:
    # 结案.
    return _Step(dataclasses.replace(case, state=State.closed), stops=("close",))


def _evaluate(case: Incident, command: Command, actor: Actor, org: OrgView, rules: Rules) -> _Step:
    # 评价: the satisfaction callback (群众满意率), 1 (unsatisfied) … 5 (very satisfied).
    score = command.satisfaction
    if (
        score is None
        or isinstance(score, bool)
        or not isinstance(score, int)
        or not SATISFACTION_MIN <= score <= SATISFACTION_MAX
    ):
        raise _invalid(
            f"满意度必须为 {SATISFACTION_MIN} 至 {SATISFACTION_MAX} 的整数",
            f"satisfaction must be an integer from {SATISFACTION_MIN} to {SATISFACTION_MAX}",
        )
    return _Step(
        dataclasses.replace(case, state=State.evaluated, satisfaction=score),
        data={"satisfaction": score},
    )


def _escalate(case: Incident, command: Command, actor: Actor, org: OrgView, rules: Rules) -> _Step:
    # 层层上报: what a level cannot solve goes one level up; the state and its clock stay.
    reason = _require_reason(command)
    parent = org.parent_of(case.owner_unit)
    if parent is None:
        level = org.level_of(case.owner_unit)
        raise TransitionError(
            "illegal_transition",
            f"案件已由最高一级（{_LEVEL_ZH.get(level, level)}）承办，不能再上报",
            f"case is owned at the top level ({level}) and cannot be escalated further",
        )
    return _Step(
        dataclasses.replace(case, owner_unit=parent, escalations=case.escalations + 1),
        data={
            "reason": reason,
            "from_unit": case.owner_unit,
            "to_unit": parent,
            "to_level": org.level_of(parent),
        },
        moves=(OwnerChanged(case.owner_unit, parent),),
    )


def _assign(case: Incident, command: Command, actor: Actor, org: OrgView, rules: Rules) -> _Step:
    # 任务指派: orders come down, to a unit strictly below the owning unit.
    target = _text(command.target_unit)
    if target is None:
        raise _invalid("指派必须指定目标单位", "assign requires a target unit")
    if target == case.owner_unit or not org.is_within(target, case.owner_unit):
        raise _invalid(
            f"只能指派给归属单位 {case.owner_unit} 的下级单位",
            f"a case owned by {case.owner_unit} can be assigned only to a unit below it",
        )
    return _Step(
        dataclasses.replace(case, owner_unit=target),
        data={"from_unit": case.owner_unit, "to_unit": target, "to_level": org.level_of(target)},
        moves=(OwnerChanged(case.owner_unit, target),),
    )


def _handling_department(case: Incident, actor: Actor) -> str:
    """The department a handler acts for (the scope check made sure it handles the case)."""
    assert actor.department is not None
    return actor.department


def _sign(case: Incident, command: Command, actor: Actor, org: OrgView, rules: Rules) -> _Step:
    # 签收: the department has the case; the first signature starts the handling clock.
    department = _handling_department(case, actor)
    if department in case.signed:
        raise TransitionError(
            "illegal_transition", f"部门“{department}”已签收本案件", f"department {department} has signed already"
        )
    first = not case.signed and case.state is State.dispatched
    return _Step(
        dataclasses.replace(case, signed=(*case.signed, department)),
        data={"department": department},
        stops=("start",) if first else (),
        starts=("feedback",) if first else (),
    )


def _return(case: Incident, command: Command, actor: Actor, org: OrgView, rules: Rules) -> _Step:
    # 退单: the lead department says the case is not its own; it goes back to whoever dispatched it.
    department = _handling_department(case, actor)
    if department != case.lead_department:
        raise _forbidden("只有主办部门可以退单", "only the lead department may return a case")
    if case.returns >= rules.max_returns:
        raise TransitionError(
            "illegal_transition",
            f"本案件已退单 {case.returns} 次，派遣单位的派遣为最终决定（审定），不能再退",
            f"the case was returned {case.returns} times; the dispatching unit's decision stands",
        )
    reason = _require_reason(command)
    return _Step(
        dataclasses.replace(
            case,
            state=State.accepted,
            lead_department=None,
            co_departments=(),
            squad_unit=None,
            feedback_from=(),
            signed=(),
            returns=case.returns + 1,
            extension_hours=None,
            extension_department=None,
        ),
        data={"reason": reason, "department": department, "returns": case.returns + 1},
        stops=(None,),
        starts=("dispatch",),
    )


def _extend_request(case: Incident, command: Command, actor: Actor, org: OrgView, rules: Rules) -> _Step:
    # 延期: a handling department asks for more time; the dispatching unit decides.
    department = _handling_department(case, actor)
    if case.extension_hours is not None:
        raise TransitionError(
            "illegal_transition", "已有一份延期申请待审批", "a request for more time is already waiting"
        )
    reason = _require_reason(command)
    hours = command.hours
    if hours is None or isinstance(hours, bool) or not 1 <= hours <= rules.max_extension_hours:
        raise _invalid(
            f"延期时长应为 1 至 {rules.max_extension_hours} 小时",
            f"hours must be from 1 to {rules.max_extension_hours}",
        )
    return _Step(
        dataclasses.replace(case, extension_hours=hours, extension_department=department),
        data={"reason": reason, "hours": hours, "department": department},
    )


def _extend_decide(case: Incident, command: Command, actor: Actor, org: OrgView, rules: Rules) -> _Step:
    # 审批延期: granted, the running step's deadline moves; refused, it stays.
    if case.extension_hours is None:
        raise TransitionError("illegal_transition", "没有待审批的延期申请", "no request for more time is waiting")
    if not isinstance(command.grant, bool):
        raise _invalid("须说明是否同意延期（grant）", "grant must be true or false")
    hours = case.extension_hours
    new = dataclasses.replace(
        case,
        extension_hours=None,
        extension_department=None,
        extensions=case.extensions + (1 if command.grant else 0),
    )
    return _Step(
        new,
        data={"granted": command.grant, "hours": hours, "department": case.extension_department},
        extends=(DeadlineExtend(hours),) if command.grant else (),
    )


def _urge(case: Incident, command: Command, actor: Actor, org: OrgView, rules: Rules) -> _Step:
    # 催办: the command centre presses the handler; it shows on the handler's console at once.
    return _Step(
        dataclasses.replace(case, urged=case.urged + 1),
        data={"departments": list(case.handling_departments), "urged": case.urged + 1},
    )


def _supervise(case: Incident, command: Command, actor: Actor, org: OrgView, rules: Rules) -> _Step:
    # 督办: a leader takes the case under supervision.
    if case.supervised:
        raise TransitionError("illegal_transition", "本案件已在督办中", "the case is already under supervision")
    return _Step(dataclasses.replace(case, supervised=True), data={"departments": list(case.handling_departments)})


def _callback(case: Incident, command: Command, actor: Actor, org: OrgView, rules: Rules) -> _Step:
    # 回访: the duty desk calls the reporter back. Not reached: tried again later. Reached: the
    # satisfaction is the evaluation (群众满意率); not satisfied, the case may be handled again.
    if not isinstance(command.reached, bool):
        raise _invalid("须说明是否联系上报告人（reached）", "reached must be true or false")
    if not command.reached:
        return _Step(case, data={"reached": False})
    score = command.satisfaction
    if score is None or isinstance(score, bool) or not SATISFACTION_MIN <= score <= SATISFACTION_MAX:
        raise _invalid(
            f"满意度必须为 {SATISFACTION_MIN} 至 {SATISFACTION_MAX} 的整数",
            f"satisfaction must be an integer from {SATISFACTION_MIN} to {SATISFACTION_MAX}",
        )
    satisfied = score >= SATISFIED_FROM
    data: dict[str, object] = {"reached": True, "satisfaction": score, "satisfied": satisfied}
    if command.reopen and not satisfied:
        # 发回重办: the handling departments go again.
        return _Step(
            dataclasses.replace(case, state=State.dispatched, feedback_from=(), signed=(), satisfaction=score),
            data={**data, "reopen": True},
            starts=("start",),
        )
    return _Step(dataclasses.replace(case, state=State.evaluated, satisfaction=score), data=data)


_LEVEL_ZH: Final[Mapping[str, str]] = MappingProxyType(
    {
        "province": "省",
        "city": "市",
        "county": "县（市、区）",
        "township": "乡镇（街道）",
        "community": "社区（村）",
        "grid": "网格",
    }
)


class _Handler(Protocol):
    def __call__(self, case: Incident, command: Command, actor: Actor, org: OrgView, rules: Rules) -> _Step: ...


_STEPS: Final[Mapping[Action, _Handler]] = MappingProxyType(
    {
        Action.accept: _accept,
        Action.reject: _reject,
        Action.merge: _merge,
        Action.dispatch: _dispatch,
        Action.start: _start_handling,
        Action.feedback: _feedback,
        Action.verify: _verify,
        Action.reopen: _reopen,
        Action.close: _close,
        Action.evaluate: _evaluate,
        Action.escalate: _escalate,
        Action.assign: _assign,
        Action.sign: _sign,
        Action.return_: _return,
        Action.extend_request: _extend_request,
        Action.extend_decide: _extend_decide,
        Action.urge: _urge,
        Action.supervise: _supervise,
        Action.callback: _callback,
    }
)
