"""Emergency plans (应急预案) as data: parsing, validation and the pure rules of a plan.

A plan is a TOML file under ``config/plans/`` or the same document as JSON through the API. It has a
trigger (what cases or warnings start it), and levels of response from Ⅳ (the lowest) to Ⅰ; each
level adds groups with their members, forces to dispatch by unit kind and count, the units invited
to the video consultation, the people to notify and how, and a checklist of timed steps of the five
procedure types. Activating a plan at level L applies every level from Ⅳ up to L.

Pure: no I/O, no clock. A bad plan raises :class:`PlanError` naming the file and the key, so a bad
file stops start-up with one line.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

import shapely

from dispatchd.domain.orgs import DEPARTMENT_KINDS, LEVELS, OrgTree
from dispatchd.domain.taxonomy import PRIORITIES, Taxonomy, format_duration, parse_duration

# Levels of response, lowest first (Ⅳ级 general … Ⅰ级 especially serious).
RESPONSE_LEVELS: Final = ("IV", "III", "II", "I")
LEVEL_NAMES: Final[Mapping[str, tuple[str, str]]] = {
    "IV": ("Ⅳ级（一般）", "level IV (general)"),
    "III": ("Ⅲ级（较大）", "level III (major)"),
    "II": ("Ⅱ级（重大）", "level II (serious)"),
    "I": ("Ⅰ级（特别重大）", "level I (especially serious)"),
}
# The five procedure types of a plan's checklist (一三五: one plan, three mechanisms, five procedures).
STEP_TYPES: Final[Mapping[str, tuple[str, str]]] = {
    "report": ("信息报告", "report"),
    "initial": ("先期处置", "initial response"),
    "response": ("应急处置", "emergency response"),
    "end": ("应急结束", "stand-down"),
    "aftermath": ("善后处置", "aftermath"),
}
# How a person is told.
VIAS: Final = ("console", "sms", "call")
# Kinds of squad unit (domain.units).
UNIT_KINDS: Final = ("team", "vehicle", "person", "motorbike", "ebike")
# Roles a selector may name (store.users.ROLES, without the technical ones).
PERSON_ROLES: Final = ("duty_officer", "leader", "squad_member", "grid_worker", "department_handler")

_CODE: Final = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
# What no text of a plan may hold: C0 controls but tab and line ends, DEL, lone surrogates.
_CONTROL: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
_TOP_KEYS: Final = frozenset({"code", "name", "name_en", "org", "description", "trigger", "levels"})
_TRIGGER_KEYS: Final = frozenset({"categories", "priorities", "min_reports", "units", "warning_events", "level"})
_LEVEL_KEYS: Final = frozenset({"description", "groups", "forces", "consult", "notices", "steps"})
_SELECTOR_KEYS: Final = frozenset({"user", "role", "department", "at"})
_MAX_ITEMS: Final = 100


class PlanError(ValueError):
    """A plan is wrong; ``key`` names the offending entry, e.g. ``levels.IV.forces[0].count``."""

    def __init__(self, message: str, *, key: str | None = None, file: str | None = None) -> None:
        self.key = key
        self.file = file
        self.reason = message
        where = ": ".join(part for part in (file, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


# The reasons of PlanError in Chinese (the API answers zh-CN first): English prefix -> Chinese.
_REASONS_ZH: Final = (
    ("unknown key; allowed: ", "未知的键，可用："),
    ("must be one of ", "取值应为以下之一："),
    ("a level is one of ", "响应级别应为以下之一："),
    ("must be a table", "应为表（对象）"),
    ("must be a non-empty string", "应为非空字符串"),
    ("must be a string", "应为字符串"),
    ("holds control characters", "含有控制字符"),
    ("must be a list of non-empty strings", "应为非空字符串的列表"),
    ("must be a list", "应为列表"),
    ("must be an integer between ", "应为整数，范围 "),
    ("must be more than 0 and at most 30 days", "应大于 0 且不超过 30 天"),
    ("name exactly one of user, role, department", "user、role、department 须且只能指定一项"),
    ("name at least one level to invite", "至少邀请一个层级"),
    ("name at least one way: ", "至少指定一种通知方式："),
    ("name categories or warning_events (or both)", "须指定 categories 或 warning_events（或两者）"),
    ("unknown department kind; known: ", "未知的部门类型，可用："),
    ("a group needs at least one member", "工作组至少需要一名成员"),
    ("unknown category ", "未知的事件类别 "),
    ("unknown unit ", "未知的单位 "),
    ("longer than ", "过长"),
    ("more than ", "条目过多"),
    ("must be a lower-case name", "应为小写名称（a–z、0–9、_ 和 -，最长 64）"),
    ("must be a table of levels", "应为各响应级别（IV、III、II、I）的表，至少一个"),
    ("level ", "触发级别未在 levels 中定义"),
    ("bad duration", "时长格式错误，应如 5m、2h、1d、1h30m"),
)
# Reasons whose rest (the values they name) follows the Chinese as it is.
_KEEP_REST: Final = ("：", " ")


def reason_zh(reason: str) -> str:
    """A PlanError's reason in Chinese (the English kept after it where it names values)."""
    for prefix, zh in _REASONS_ZH:
        if reason.startswith(prefix):
            rest = reason[len(prefix) :].replace(" and ", "–")
            return zh + rest if zh.endswith(_KEEP_REST) else zh
    return reason


@dataclass(frozen=True, slots=True)
class Selector:
    """Who: a named person (``user``), or the people of a role or of a department kind at a level
    of the place (``at``: grid … province; absent = the unit the plan is started for)."""

    user: str | None = None
    role: str | None = None
    department: str | None = None
    at: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {k: v for k, v in (("user", self.user), ("role", self.role), ("department", self.department), ("at", self.at)) if v}


@dataclass(frozen=True, slots=True)
class Member:
    label: str
    label_en: str
    who: Selector


@dataclass(frozen=True, slots=True)
class Group:
    name: str
    name_en: str
    members: tuple[Member, ...]


@dataclass(frozen=True, slots=True)
class Force:
    kind: str
    count: int
    instructions: str


@dataclass(frozen=True, slots=True)
class Consult:
    """The video consultation: the chair's level and the levels invited (relative to the place)."""

    title: str
    chair: str | None
    invite: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Notice:
    who: Selector
    via: tuple[str, ...]
    text: str
    deputy: Selector | None


@dataclass(frozen=True, slots=True)
class Step:
    type: str
    title: str
    title_en: str
    within: timedelta


@dataclass(frozen=True, slots=True)
class Level:
    code: str
    description: str = ""
    groups: tuple[Group, ...] = ()
    forces: tuple[Force, ...] = ()
    consult: Consult | None = None
    notices: tuple[Notice, ...] = ()
    steps: tuple[Step, ...] = ()


@dataclass(frozen=True, slots=True)
class Trigger:
    categories: tuple[str, ...] = ()
    priorities: tuple[str, ...] = ()
    min_reports: int = 1
    units: tuple[str, ...] = ()
    warning_events: tuple[str, ...] = ()
    level: str = "IV"


@dataclass(frozen=True, slots=True)
class Plan:
    code: str
    name: str
    name_en: str
    org: str
    description: str
    trigger: Trigger
    levels: Mapping[str, Level] = field(default_factory=dict)

    def levels_up_to(self, level: str) -> list[Level]:
        """The levels applied when the plan runs at ``level``: Ⅳ up to it, lowest first."""
        top = RESPONSE_LEVELS.index(level)
        return [self.levels[c] for c in RESPONSE_LEVELS[: top + 1] if c in self.levels]

    def levels_between(self, low: str, high: str) -> list[Level]:
        """What raising from ``low`` to ``high`` adds: the levels above ``low`` up to ``high``."""
        lo, hi = RESPONSE_LEVELS.index(low), RESPONSE_LEVELS.index(high)
        return [self.levels[c] for c in RESPONSE_LEVELS[lo + 1 : hi + 1] if c in self.levels]

    def as_json(self) -> dict[str, Any]:
        """The plan in the shape it is written (TOML or JSON): parse_plan(as_json()) gives it back."""
        t = self.trigger
        return {
            "code": self.code,
            "name": self.name,
            "name_en": self.name_en,
            "org": self.org,
            "description": self.description,
            "trigger": {
                "categories": list(t.categories),
                "priorities": list(t.priorities),
                "min_reports": t.min_reports,
                "units": list(t.units),
                "warning_events": list(t.warning_events),
                "level": t.level,
            },
            "levels": {code: _level_json(lv) for code, lv in self.levels.items()},
        }


def _level_json(lv: Level) -> dict[str, Any]:
    out: dict[str, Any] = {"description": lv.description}
    out["groups"] = [
        {
            "name": g.name,
            "name_en": g.name_en,
            "members": [{"label": m.label, "label_en": m.label_en, **m.who.as_json()} for m in g.members],
        }
        for g in lv.groups
    ]
    out["forces"] = [{"kind": f.kind, "count": f.count, "instructions": f.instructions} for f in lv.forces]
    if lv.consult is not None:
        c = lv.consult
        out["consult"] = {"title": c.title, "invite": list(c.invite), **({"chair": c.chair} if c.chair else {})}
    out["notices"] = [
        {
            **n.who.as_json(),
            "via": list(n.via),
            "text": n.text,
            **({"deputy": n.deputy.as_json()} if n.deputy else {}),
        }
        for n in lv.notices
    ]
    out["steps"] = [
        {"type": s.type, "title": s.title, "title_en": s.title_en, "within": format_duration(s.within)}
        for s in lv.steps
    ]
    return out


# -- parsing -----------------------------------------------------------------------------------------


class _Reader:
    """Reads one plan document, naming the key of whatever is wrong."""

    def __init__(self, file: str | None, tree: OrgTree | None, taxonomy: Taxonomy | None) -> None:
        self.file = file
        self.tree = tree
        self.taxonomy = taxonomy

    def fail(self, key: str, message: str) -> PlanError:
        return PlanError(message, key=key, file=self.file)

    def table(self, value: object, key: str, allowed: frozenset[str]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(key, "must be a table")
        unknown = sorted(set(value) - allowed)
        if unknown:
            raise self.fail(f"{key}.{unknown[0]}" if key else unknown[0], "unknown key; allowed: " + ", ".join(sorted(allowed)))
        return value

    def text(self, value: object, key: str, *, required: bool = True, max_length: int = 200) -> str:
        if value is None and not required:
            return ""
        if not isinstance(value, str) or (required and not value.strip()):
            raise self.fail(key, "must be a non-empty string" if required else "must be a string")
        if _CONTROL.search(value):
            raise self.fail(key, "holds control characters")
        if len(value) > max_length:
            raise self.fail(key, f"longer than {max_length} characters")
        return value.strip()

    def strings(self, value: object, key: str) -> tuple[str, ...]:
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() and not _CONTROL.search(v) for v in value):
            raise self.fail(key, "must be a list of non-empty strings")
        if len(value) > _MAX_ITEMS:
            raise self.fail(key, f"more than {_MAX_ITEMS} entries")
        return tuple(dict.fromkeys(v.strip() for v in value))

    def items(self, value: object, key: str) -> list[Any]:
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.fail(key, "must be a list (an array of tables)")
        if len(value) > _MAX_ITEMS:
            raise self.fail(key, f"more than {_MAX_ITEMS} entries")
        return value

    def level_name(self, value: object, key: str) -> str:
        if value not in LEVELS:
            raise self.fail(key, "must be one of " + ", ".join(LEVELS))
        assert isinstance(value, str)
        return value

    def unit(self, value: object, key: str) -> str:
        code = self.text(value, key, max_length=64)
        if self.tree is not None and code not in self.tree:
            raise self.fail(key, f"unknown unit {code!r}")
        return code

    def selector(self, raw: Mapping[str, Any], key: str) -> Selector:
        chosen = [k for k in ("user", "role", "department") if raw.get(k) is not None]
        if len(chosen) != 1:
            raise self.fail(key, "name exactly one of user, role, department")
        sel = Selector(
            user=self.text(raw["user"], f"{key}.user", max_length=64) if raw.get("user") is not None else None,
            role=raw.get("role"),
            department=self.text(raw["department"], f"{key}.department", max_length=64)
            if raw.get("department") is not None
            else None,
            at=self.level_name(raw["at"], f"{key}.at") if raw.get("at") is not None else None,
        )
        if sel.role is not None and sel.role not in PERSON_ROLES:
            raise self.fail(f"{key}.role", "must be one of " + ", ".join(PERSON_ROLES))
        if sel.department is not None and sel.department not in DEPARTMENT_KINDS:
            raise self.fail(f"{key}.department", "unknown department kind; known: " + ", ".join(sorted(DEPARTMENT_KINDS)))
        return sel

    def trigger(self, raw: object) -> Trigger:
        t = self.table(raw if raw is not None else {}, "trigger", _TRIGGER_KEYS)
        categories = self.strings(t.get("categories"), "trigger.categories")
        if self.taxonomy is not None:
            for i, code in enumerate(categories):
                if code not in self.taxonomy.categories:
                    raise self.fail(f"trigger.categories[{i}]", f"unknown category {code!r}")
        priorities = self.strings(t.get("priorities"), "trigger.priorities")
        for i, p in enumerate(priorities):
            if p not in PRIORITIES:
                raise self.fail(f"trigger.priorities[{i}]", "must be one of " + ", ".join(PRIORITIES))
        min_reports = t.get("min_reports", 1)
        if not isinstance(min_reports, int) or isinstance(min_reports, bool) or not 1 <= min_reports <= 1000:
            raise self.fail("trigger.min_reports", "must be an integer between 1 and 1000")
        units = tuple(self.unit(u, f"trigger.units[{i}]") for i, u in enumerate(self.strings(t.get("units"), "trigger.units")))
        events = self.strings(t.get("warning_events"), "trigger.warning_events")
        level = t.get("level", "IV")
        if level not in RESPONSE_LEVELS:
            raise self.fail("trigger.level", "must be one of " + ", ".join(RESPONSE_LEVELS))
        if not categories and not events:
            raise self.fail("trigger", "name categories or warning_events (or both)")
        return Trigger(categories, priorities, min_reports, units, events, level)

    def level(self, code: str, raw: object) -> Level:
        key = f"levels.{code}"
        lv = self.table(raw, key, _LEVEL_KEYS)
        groups = []
        for i, g in enumerate(self.items(lv.get("groups"), f"{key}.groups")):
            gk = f"{key}.groups[{i}]"
            gt = self.table(g, gk, frozenset({"name", "name_en", "members"}))
            members = []
            for j, m in enumerate(self.items(gt.get("members"), f"{gk}.members")):
                mk = f"{gk}.members[{j}]"
                mt = self.table(m, mk, _SELECTOR_KEYS | {"label", "label_en"})
                members.append(
                    Member(
                        self.text(mt.get("label"), f"{mk}.label", max_length=50),
                        self.text(mt.get("label_en", mt.get("label")), f"{mk}.label_en", max_length=50),
                        self.selector(mt, mk),
                    )
                )
            if not members:
                raise self.fail(f"{gk}.members", "a group needs at least one member")
            name = self.text(gt.get("name"), f"{gk}.name", max_length=50)
            groups.append(Group(name, self.text(gt.get("name_en", name), f"{gk}.name_en", max_length=80), tuple(members)))
        forces = []
        for i, f in enumerate(self.items(lv.get("forces"), f"{key}.forces")):
            fk = f"{key}.forces[{i}]"
            ft = self.table(f, fk, frozenset({"kind", "count", "instructions"}))
            if ft.get("kind") not in UNIT_KINDS:
                raise self.fail(f"{fk}.kind", "must be one of " + ", ".join(UNIT_KINDS))
            count = ft.get("count", 1)
            if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 50:
                raise self.fail(f"{fk}.count", "must be an integer between 1 and 50")
            instructions = self.text(ft.get("instructions"), f"{fk}.instructions", required=False, max_length=1000)
            forces.append(Force(str(ft["kind"]), count, instructions))
        consult = None
        if lv.get("consult") is not None:
            ck = f"{key}.consult"
            ct = self.table(lv["consult"], ck, frozenset({"title", "chair", "invite"}))
            invite = tuple(self.level_name(v, f"{ck}.invite[{i}]") for i, v in enumerate(self.strings(ct.get("invite"), f"{ck}.invite")))
            if not invite:
                raise self.fail(f"{ck}.invite", "name at least one level to invite")
            chair = self.level_name(ct["chair"], f"{ck}.chair") if ct.get("chair") is not None else None
            consult = Consult(self.text(ct.get("title"), f"{ck}.title", max_length=200), chair, invite)
        notices = []
        for i, n in enumerate(self.items(lv.get("notices"), f"{key}.notices")):
            nk = f"{key}.notices[{i}]"
            nt = self.table(n, nk, _SELECTOR_KEYS | {"via", "text", "deputy"})
            via = self.strings(nt.get("via", ["console"]), f"{nk}.via")
            for j, v in enumerate(via):
                if v not in VIAS:
                    raise self.fail(f"{nk}.via[{j}]", "must be one of " + ", ".join(VIAS))
            if not via:
                raise self.fail(f"{nk}.via", "name at least one way: " + ", ".join(VIAS))
            deputy = None
            if nt.get("deputy") is not None:
                dt = self.table(nt["deputy"], f"{nk}.deputy", _SELECTOR_KEYS)
                deputy = self.selector(dt, f"{nk}.deputy")
            notices.append(Notice(self.selector(nt, nk), via, self.text(nt.get("text"), f"{nk}.text", max_length=500), deputy))
        steps = []
        for i, s in enumerate(self.items(lv.get("steps"), f"{key}.steps")):
            sk = f"{key}.steps[{i}]"
            st = self.table(s, sk, frozenset({"type", "title", "title_en", "within"}))
            if not isinstance(st.get("type"), str) or st["type"] not in STEP_TYPES:
                raise self.fail(f"{sk}.type", "must be one of " + ", ".join(STEP_TYPES))
            try:
                within = parse_duration(st.get("within"))  # type: ignore[arg-type]  # checked by parse_duration
            except ValueError as exc:
                raise self.fail(f"{sk}.within", str(exc)) from None
            if within <= timedelta(0) or within > timedelta(days=30):
                raise self.fail(f"{sk}.within", "must be more than 0 and at most 30 days")
            title = self.text(st.get("title"), f"{sk}.title", max_length=200)
            steps.append(Step(str(st["type"]), title, self.text(st.get("title_en", title), f"{sk}.title_en", max_length=200), within))
        return Level(
            code,
            self.text(lv.get("description"), f"{key}.description", required=False, max_length=1000),
            tuple(groups),
            tuple(forces),
            consult,
            tuple(notices),
            tuple(steps),
        )

    def plan(self, raw: object) -> Plan:
        doc = self.table(raw, "", _TOP_KEYS)
        code = doc.get("code")
        if not isinstance(code, str) or not _CODE.match(code):
            raise self.fail("code", "must be a lower-case name (a–z, 0–9, _ and -, at most 64)")
        name = self.text(doc.get("name"), "name", max_length=200)
        org = self.unit(doc.get("org"), "org")
        trigger = self.trigger(doc.get("trigger"))
        levels_raw = doc.get("levels")
        if not isinstance(levels_raw, Mapping) or not levels_raw:
            raise self.fail("levels", "must be a table of levels IV, III, II, I (at least one)")
        for code_ in levels_raw:
            if code_ not in RESPONSE_LEVELS:
                raise self.fail(f"levels.{code_}", "a level is one of " + ", ".join(RESPONSE_LEVELS))
        levels = {c: self.level(c, levels_raw[c]) for c in RESPONSE_LEVELS if c in levels_raw}
        if trigger.level not in levels:
            raise self.fail("trigger.level", f"level {trigger.level} is not defined under levels")
        return Plan(
            code=code,
            name=name,
            name_en=self.text(doc.get("name_en", name), "name_en", max_length=200),
            org=org,
            description=self.text(doc.get("description"), "description", required=False, max_length=4000),
            trigger=trigger,
            levels=levels,
        )


def parse_plan(
    raw: object, *, file: str | None = None, tree: OrgTree | None = None, taxonomy: Taxonomy | None = None
) -> Plan:
    """A plan from its document (a TOML file's table or the API's JSON); PlanError names the key."""
    return _Reader(file, tree, taxonomy).plan(raw)


def load_plans(directory: Path, tree: OrgTree | None = None, taxonomy: Taxonomy | None = None) -> list[Plan]:
    """Every ``*.toml`` plan of ``directory`` (none when it does not exist), sorted by file name."""
    if not directory.exists():
        return []
    plans: list[Plan] = []
    seen: dict[str, str] = {}
    for path in sorted(directory.glob("*.toml")):
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise PlanError(f"is not valid TOML: {exc}", file=str(path)) from None
        plan = parse_plan(doc, file=str(path), tree=tree, taxonomy=taxonomy)
        if plan.code in seen:
            raise PlanError(f"code {plan.code!r} is also used by {seen[plan.code]}", key="code", file=str(path))
        seen[plan.code] = str(path)
        plans.append(plan)
    return plans


# -- matching ----------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CaseFacts:
    """What a trigger looks at in a case."""

    category: str
    priority: str
    reports: int  # the case's own report plus every report attached or merged into it
    places: tuple[str, ...]  # the case's grid path and owning unit's path


def matches(plan: Plan, case: CaseFacts, taxonomy: Taxonomy | None = None) -> bool:
    """Whether a case meets the plan's trigger (a category includes its sub-categories)."""
    t = plan.trigger
    if not t.categories:
        return False
    if not any(case.category == c or case.category.startswith(c + ".") for c in t.categories):
        return False
    if t.priorities and case.priority not in t.priorities:
        return False
    if case.reports < t.min_reports:
        return False
    if t.units and not set(t.units) & set(case.places):
        return False
    return plan.org in case.places


def matches_warning(plan: Plan, event: str, event_code: str | None) -> bool:
    """Whether a warning's event type (CAP ``event`` or ``eventCode`` value) is named by the trigger."""
    names = {e.casefold() for e in plan.trigger.warning_events}
    return bool(names) and (event.casefold() in names or (event_code or "").casefold() in names)


def place_unit_at(tree: OrgTree, place: str, level: str | None) -> str | None:
    """The unit at ``level`` on the path of ``place`` (itself when ``level`` is None); a level below
    the place answers the place itself."""
    if level is None:
        return place
    if place not in tree:
        return None
    own = tree.level_of(place)
    if LEVELS.index(level) >= LEVELS.index(own):
        return place
    return tree.ancestor_at(place, level)


def higher(level: str, than: str) -> bool:
    return RESPONSE_LEVELS.index(level) > RESPONSE_LEVELS.index(than)


# -- warning areas -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Circle:
    lat: float
    lon: float
    radius_km: float


def _circle_polygon(c: Circle) -> Any:
    """A circle on the ground as a WGS-84 polygon (64 points; metres per degree at its latitude)."""
    dlat = c.radius_km / 111.32
    dlon = c.radius_km / (111.32 * max(math.cos(math.radians(c.lat)), 1e-6))
    ring = [
        (c.lon + dlon * math.cos(2 * math.pi * i / 64), c.lat + dlat * math.sin(2 * math.pi * i / 64))
        for i in range(64)
    ]
    return shapely.Polygon(ring)


def covered_grids(
    tree: OrgTree, polygons: Iterable[Sequence[tuple[float, float]]], circles: Iterable[Circle]
) -> list[str]:
    """Codes of the grids a warning area touches: ``polygons`` are rings of (lon, lat) points."""
    shapes = [shapely.Polygon(list(ring)) for ring in polygons if len(ring) >= 3]
    shapes += [_circle_polygon(c) for c in circles if c.radius_km >= 0]
    shapes = [s if bool(shapely.is_valid(s)) else s.buffer(0) for s in shapes]
    if not shapes:
        return []
    area = shapely.union_all(shapes)
    found: list[str] = []
    for unit in tree.units_at("grid"):
        if unit.boundary is not None and bool(area.intersects(shapely.Polygon(unit.boundary))):
            found.append(unit.code)
    return found


def covered_units(tree: OrgTree, grids: Sequence[str], level: str = "township") -> list[str]:
    """The units at ``level`` holding the covered grids, in code order."""
    out = {tree.ancestor_at(g, level) for g in grids}
    return sorted(u for u in out if u is not None)
