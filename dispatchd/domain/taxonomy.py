"""What a report is about — 一心两翼, one heart and two wings — and how long each step may take.

The heart is population information (常住人口, 外来人员, 重点人员, 特殊人员); wing one the
incidents (矛盾纠纷, 涉稳事件, 安全生产事故, 刑事案件); wing two the hazards (消防, 安全生产,
治安, 环境, 食品安全).  Each category carries a default priority and the kind of department that
handles it; a sub-category inherits both unless it sets its own.

Time limits follow the idea of CJ/T 315 (digital urban management: time limits per case type
and step): a table per priority for the six timed steps of the closed loop, which a category
(and its sub-categories) may override step by step.

``config/taxonomy.toml``:

    [limits.P1]
    accept = "5m"      # reported -> accepted
    dispatch = "10m"   # accepted -> dispatched
    start = "30m"      # dispatched -> in_progress
    feedback = "2h"    # in_progress -> fed_back
    verify = "2h"      # fed_back -> verified
    close = "4h"       # verified -> closed

    [[category]]
    code = "incident.dispute"
    name = "矛盾纠纷"
    name_en = "Disputes"
    wing = "incident"
    default_priority = "P3"
    default_department = "justice"
    limits = { P2 = { start = "1h" } }   # optional

      [[category.sub]]
      code = "incident.dispute.labour"   # extends the parent's code
      name = "劳资纠纷"
      name_en = "Labour disputes"
      default_department = "social_security"
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

from dispatchd.domain.orgs import DEPARTMENT_KINDS

PRIORITIES: Final[tuple[str, ...]] = ("P1", "P2", "P3", "P4")
STEPS: Final[tuple[str, ...]] = ("accept", "dispatch", "start", "feedback", "verify", "close")
WINGS: Final[tuple[str, ...]] = ("heart", "incident", "hazard")
WING_NAMES: Final[Mapping[str, Mapping[str, str]]] = MappingProxyType(
    {
        "heart": MappingProxyType({"zh-CN": "一心：人口信息", "en": "Heart: population information"}),
        "incident": MappingProxyType({"zh-CN": "一翼：案事件", "en": "Wing 1: incidents"}),
        "hazard": MappingProxyType({"zh-CN": "一翼：隐患点", "en": "Wing 2: hazards"}),
    }
)

_DURATION: Final = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_CATEGORY_KEYS: Final = frozenset(
    {"code", "name", "name_en", "wing", "default_priority", "default_department", "limits", "sub"}
)
_CODE: Final = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z][a-z0-9_]*)*")

Limits = Mapping[str, Mapping[str, timedelta]]  # priority -> step -> limit


class TaxonomyError(ValueError):
    """The taxonomy file is wrong; ``key`` names the offending entry, e.g. ``limits.P1.accept``."""

    def __init__(self, message: str, *, key: str | None = None, file: str | None = None) -> None:
        self.key = key
        self.file = file
        self.reason = message
        where = ": ".join(part for part in (file, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(frozen=True, slots=True)
class Category:
    """A category with its inherited defaults already resolved."""

    code: str
    name: str
    name_en: str
    wing: str
    default_priority: str
    default_department: str
    parent: str | None
    children: tuple[str, ...]


def parse_duration(text: str) -> timedelta:
    """``"5m"``, ``"2h"``, ``"1d"``, ``"1h30m"`` → timedelta.

    Units d, h, m, s, each at most once and in that order, whole numbers only.
    """
    if not isinstance(text, str):
        raise ValueError(f"a duration must be a string such as '2h', got {text!r}")
    match = _DURATION.fullmatch(text)
    if not text or match is None:
        raise ValueError(f"bad duration {text!r}; write e.g. '5m', '2h', '1d' or '1h30m'")
    days, hours, minutes, seconds = (int(group) if group else 0 for group in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def format_duration(value: timedelta) -> str:
    """The shortest string :func:`parse_duration` reads back as ``value`` (whole seconds only)."""
    if value < timedelta(0) or value.microseconds:
        raise ValueError(f"cannot write {value!r} as a duration: negative or not whole seconds")
    days, rest = value.days, value.seconds
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    parts = [f"{n}{unit}" for n, unit in ((days, "d"), (hours, "h"), (minutes, "m"), (seconds, "s")) if n]
    return "".join(parts) or "0s"


class Taxonomy:
    """The categories, in file order, and the time limit of every step for every category."""

    __slots__ = ("_limits", "_top", "categories", "default_limits")

    categories: Mapping[str, Category]
    default_limits: Limits

    def __init__(
        self,
        categories: Iterable[Category],
        default_limits: Limits,
        overrides: Mapping[str, Limits] | None = None,
    ) -> None:
        by_code: dict[str, Category] = {}
        for category in categories:
            if category.code in by_code:
                raise TaxonomyError("duplicate category code", key=category.code)
            by_code[category.code] = category
        for category in by_code.values():
            if category.parent is not None and category.parent not in by_code:
                raise TaxonomyError(f"unknown parent {category.parent!r}", key=category.code)
            for child in category.children:
                if child not in by_code or by_code[child].parent != category.code:
                    raise TaxonomyError(
                        f"child {child!r} does not name this category as parent", key=category.code
                    )
        for priority in PRIORITIES:
            for step in STEPS:
                limit = default_limits.get(priority, {}).get(step)
                if limit is None or limit <= timedelta(0):
                    raise TaxonomyError("missing or not positive", key=f"limits.{priority}.{step}")
        own = overrides or {}
        effective: dict[tuple[str, str, str], timedelta] = {}
        for code, category in by_code.items():
            chain = [code]
            while (above := by_code[chain[-1]].parent) is not None:
                chain.append(above)
            for priority in PRIORITIES:
                for step in STEPS:
                    limit = default_limits[priority][step]
                    for link in reversed(chain):  # root first, so the nearest override wins
                        limit = own.get(link, {}).get(priority, {}).get(step, limit)
                    effective[(category.code, priority, step)] = limit
        self.categories = MappingProxyType(by_code)
        self.default_limits = MappingProxyType(
            {p: MappingProxyType({s: default_limits[p][s] for s in STEPS}) for p in PRIORITIES}
        )
        self._limits: Mapping[tuple[str, str, str], timedelta] = MappingProxyType(effective)
        self._top: tuple[Category, ...] = tuple(c for c in by_code.values() if c.parent is None)

    def __contains__(self, code: object) -> bool:
        return code in self.categories

    def get(self, code: str) -> Category:
        """The category with this code; KeyError when there is none."""
        return self.categories[code]

    def display_name(self, code: str) -> dict[str, str]:
        """``{"zh-CN", "en"}`` names of a category; a code no longer configured shows as itself."""
        category = self.categories.get(code)
        if category is None:
            return {"zh-CN": code, "en": code}
        return {"zh-CN": category.name, "en": category.name_en}

    def top_level(self) -> tuple[Category, ...]:
        """The categories without a parent, in file order (heart, incidents, hazards)."""
        return self._top

    def limit(self, code: str, priority: str, step: str) -> timedelta:
        """How long ``step`` may take for a case of category ``code`` at ``priority``."""
        if priority not in PRIORITIES:
            raise ValueError(f"unknown priority {priority!r}; expected one of {', '.join(PRIORITIES)}")
        if step not in STEPS:
            raise ValueError(f"unknown step {step!r}; expected one of {', '.join(STEPS)}")
        if code not in self.categories:
            raise KeyError(code)
        return self._limits[(code, priority, step)]

    def step_limits(self, code: str, priority: str) -> Mapping[str, timedelta]:
        """Every step's limit for category ``code`` at ``priority``, in step order."""
        return MappingProxyType({step: self.limit(code, priority, step) for step in STEPS})

    def as_json(self, lang: str | None = None) -> list[dict[str, Any]]:
        """The tree for clients: nested ``code, name, wing, default_priority, default_department,
        children``.

        ``name`` is ``{"zh-CN": …, "en": …}`` without ``lang``; with ``lang`` (``zh…`` or
        ``en…``) it is the one string in that language.
        """
        if lang is None:
            pick = None
        elif lang.lower().startswith("zh"):
            pick = "zh-CN"
        elif lang.lower().startswith("en"):
            pick = "en"
        else:
            raise ValueError(f"unsupported language {lang!r}; use zh-CN or en")

        def node(category: Category) -> dict[str, Any]:
            names = {"zh-CN": category.name, "en": category.name_en}
            return {
                "code": category.code,
                "name": names if pick is None else names[pick],
                "wing": category.wing,
                "default_priority": category.default_priority,
                "default_department": category.default_department,
                "children": [node(self.categories[child]) for child in category.children],
            }

        return [node(category) for category in self._top]


# --- loading -------------------------------------------------------------------------------


def _limits_table(value: object, key: str, *, complete: bool) -> dict[str, dict[str, timedelta]]:
    if not isinstance(value, dict):
        raise TaxonomyError("must be a table of priorities", key=key)
    table: dict[str, dict[str, timedelta]] = {}
    for priority, steps in value.items():
        if priority not in PRIORITIES:
            raise TaxonomyError(
                f"unknown priority {priority!r}; expected one of {', '.join(PRIORITIES)}",
                key=f"{key}.{priority}",
            )
        if not isinstance(steps, dict):
            raise TaxonomyError("must be a table of steps", key=f"{key}.{priority}")
        table[priority] = {}
        for step, text in steps.items():
            where = f"{key}.{priority}.{step}"
            if step not in STEPS:
                raise TaxonomyError(f"unknown step {step!r}; expected one of {', '.join(STEPS)}", key=where)
            try:
                limit = parse_duration(text)
            except ValueError as exc:
                raise TaxonomyError(str(exc), key=where) from None
            if limit <= timedelta(0):
                raise TaxonomyError("a time limit must be positive", key=where)
            table[priority][step] = limit
    if complete:
        for priority in PRIORITIES:
            for step in STEPS:
                if step not in table.get(priority, {}):
                    raise TaxonomyError("missing", key=f"{key}.{priority}.{step}")
    return table


@dataclass(slots=True)
class _Draft:
    code: str
    name: str
    name_en: str
    wing: str
    default_priority: str
    default_department: str
    parent: str | None
    children: list[str]


def _text(table: Mapping[str, Any], field: str, key: str) -> str:
    value = table.get(field)
    if not isinstance(value, str) or not value.strip():
        raise TaxonomyError(f"{field!r} must be a non-empty string", key=key)
    return value


def _parse_category(
    table: object,
    parent: _Draft | None,
    where: str,
    drafts: dict[str, _Draft],
    overrides: dict[str, Limits],
) -> None:
    if not isinstance(table, dict):
        raise TaxonomyError("must be a table", key=where)
    code = table.get("code")
    if not isinstance(code, str) or not _CODE.fullmatch(code):
        raise TaxonomyError(
            f"'code' must be lower-case dotted ascii like incident.dispute, got {code!r}", key=where
        )
    key = f"category.{code}"
    unknown = sorted(set(table) - _CATEGORY_KEYS)
    if unknown:
        raise TaxonomyError(f"unknown keys {', '.join(unknown)}", key=key)
    if code in drafts:
        raise TaxonomyError("duplicate category code", key=key)
    if parent is not None and not code.startswith(parent.code + "."):
        raise TaxonomyError(f"a sub-category's code must extend its parent's {parent.code!r}", key=key)

    wing = table.get("wing", parent.wing if parent else None)
    if wing not in WINGS:
        raise TaxonomyError(f"unknown wing {wing!r}; expected one of {', '.join(WINGS)}", key=f"{key}.wing")
    if parent is not None and wing != parent.wing:
        raise TaxonomyError(f"wing {wing!r} differs from the parent's {parent.wing!r}", key=f"{key}.wing")
    priority = table.get("default_priority", parent.default_priority if parent else None)
    if priority not in PRIORITIES:
        raise TaxonomyError(
            f"unknown priority {priority!r}; expected one of {', '.join(PRIORITIES)}",
            key=f"{key}.default_priority",
        )
    department = table.get("default_department", parent.default_department if parent else None)
    if department not in DEPARTMENT_KINDS:
        raise TaxonomyError(f"unknown department kind {department!r}", key=f"{key}.default_department")

    draft = _Draft(
        code=code,
        name=_text(table, "name", key),
        name_en=_text(table, "name_en", key),
        wing=wing,
        default_priority=priority,
        default_department=department,
        parent=parent.code if parent else None,
        children=[],
    )
    drafts[code] = draft
    if parent is not None:
        parent.children.append(code)
    if "limits" in table:
        overrides[code] = _limits_table(table["limits"], f"{key}.limits", complete=False)
    subs = table.get("sub", [])
    if not isinstance(subs, list):
        raise TaxonomyError("'sub' must be an array of tables", key=f"{key}.sub")
    for index, sub in enumerate(subs):
        _parse_category(sub, draft, f"{key}.sub[{index}]", drafts, overrides)


def load_taxonomy(path: Path) -> Taxonomy:
    """Read and check ``taxonomy.toml``.

    Raises :class:`TaxonomyError` naming the key on a bad duration, an unknown priority, step,
    wing or department kind, a duplicate code, or a missing default limit.
    """
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise TaxonomyError(f"not valid TOML: {exc}", file=path.name) from exc
    try:
        unknown = sorted(set(data) - {"limits", "category"})
        if unknown:
            raise TaxonomyError(f"unknown top-level keys {', '.join(unknown)}")
        default_limits = _limits_table(data.get("limits"), "limits", complete=True)
        raw = data.get("category")
        if not isinstance(raw, list) or not raw:
            raise TaxonomyError("at least one [[category]] is needed", key="category")
        drafts: dict[str, _Draft] = {}
        overrides: dict[str, Limits] = {}
        for index, table in enumerate(raw):
            _parse_category(table, None, f"category[{index}]", drafts, overrides)
        categories = [
            Category(
                code=d.code,
                name=d.name,
                name_en=d.name_en,
                wing=d.wing,
                default_priority=d.default_priority,
                default_department=d.default_department,
                parent=d.parent,
                children=tuple(d.children),
            )
            for d in drafts.values()
        ]
        return Taxonomy(categories, default_limits, overrides)
    except TaxonomyError as exc:
        if exc.file is None:
            raise TaxonomyError(exc.reason, key=exc.key, file=path.name) from None
        raise
