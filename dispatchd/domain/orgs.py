"""The organisation tree: province → city → county → township → community → grid.

Every place belongs to exactly one grid, and every grid to one community, township, county
(网格"无交叉、无重复、无缝对接").  What a level cannot solve goes one level up (层层上报), so the
questions asked of the tree are about ancestry: is this grid within that township, which
township owns this grid, which police station is nearest to this community.

The tree is read from ``config/orgs/*.toml`` (files in name order, so a province file sorts
before the counties below it):

    synthetic = true            # optional, default false; marks every unit of the file

    [[unit]]
    code = "330381116"
    name = "马屿镇"
    name_en = "Mayu Town"
    level = "township"          # province | city | county | township | community | grid
    parent = "330381"           # absent only at the top
    centre = [120.48, 27.74]    # lon, lat (optional)
    boundary = [[lon, lat], ...]  # closed WGS-84 ring; required for grids, optional above

    [[department]]
    code = "330381116-PCS"
    name = "马屿派出所"
    name_en = "Mayu Police Station"
    kind = "police"             # one of DEPARTMENT_KINDS
    org = "330381116"

Coordinates are WGS-84 as GPS gives them, always ``(lon, lat)`` inside rings (the GeoJSON
order); functions that take a single point name their arguments ``lat, lon``.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final

import shapely  # type: ignore[import-untyped, unused-ignore]  # shapely 2.x ships no type information

LEVELS: Final[tuple[str, ...]] = ("province", "city", "county", "township", "community", "grid")

# What a department does, so that a case can be routed to "the nearest police station" without
# naming it.  The township set follows the stations a 乡镇 command room links (派出所, 司法所,
# 安监站, 社保所, 综合执法中队, 市场监管所, 应急中队 …).
DEPARTMENT_KINDS: Final[tuple[str, ...]] = (
    "police",
    "justice",
    "work_safety",
    "fire",
    "environment",
    "market",
    "enforcement",
    "social_security",
    "petition",
    "emergency_squad",
    "civil_affairs",
    "health",
    "transport",
    "water",
    "housing",
    "education",
    "other",
)

_DEPTH: Final[Mapping[str, int]] = MappingProxyType({level: i for i, level in enumerate(LEVELS)})
_UNIT_KEYS: Final = frozenset(
    {"code", "name", "name_en", "level", "parent", "centre", "boundary", "synthetic"}
)
_DEPARTMENT_KEYS: Final = frozenset({"code", "name", "name_en", "kind", "org"})
_FILE_KEYS: Final = frozenset({"synthetic", "unit", "department"})

Point = tuple[float, float]
Ring = tuple[Point, ...]


class OrgConfigError(ValueError):
    """The organisation configuration is wrong; says which file and which unit or department."""

    def __init__(self, message: str, *, file: str | None = None, code: str | None = None) -> None:
        self.file = file
        self.code = code
        self.reason = message
        where = ": ".join(part for part in (file, code) if part)
        super().__init__(f"{where}: {message}" if where else message)


@dataclass(frozen=True, slots=True)
class OrgUnit:
    """One node of the tree; ``boundary`` is a closed ring of ``(lon, lat)`` points."""

    code: str
    name: str
    name_en: str
    level: str
    parent: str | None
    boundary: Ring | None
    centre: Point | None
    synthetic: bool


@dataclass(frozen=True, slots=True)
class Department:
    """A functional department (职能部门) attached to one unit, e.g. a township police station."""

    code: str
    name: str
    name_en: str
    kind: str
    org: str


def ring_problem(ring: Ring) -> str | None:
    """Why ``ring`` is not a usable WGS-84 boundary ring, or None when it is.

    A ring is closed (first point repeated last), has at least four points (a triangle plus
    the closing point) and stays within -180..180 longitude, -90..90 latitude.
    """
    if len(ring) < 4:
        return f"ring has {len(ring)} points; at least 4 are needed (closed triangle)"
    if ring[0] != ring[-1]:
        return "ring is not closed: the first point must be repeated as the last"
    for lon, lat in ring:
        if not (math.isfinite(lon) and math.isfinite(lat)):
            return f"point ({lon}, {lat}) is not finite"
        if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
            return f"point ({lon}, {lat}) lies outside WGS-84 (lon -180..180, lat -90..90)"
    return None


class OrgTree:
    """The whole tree with departments; immutable once built, every lookup precomputed.

    Construction checks the structure and raises :class:`OrgConfigError`; ``sources`` maps a
    unit or department code to the file it came from so that the message can name it.
    """

    __slots__ = (
        "_ancestors",
        "_by_org",
        "_children",
        "_descendants",
        "_preorder",
        "departments",
        "units",
    )

    units: Mapping[str, OrgUnit]
    departments: Mapping[str, Department]

    def __init__(
        self,
        units: Iterable[OrgUnit],
        departments: Iterable[Department] = (),
        *,
        sources: Mapping[str, str] | None = None,
    ) -> None:
        origin = sources or {}

        def fail(code: str, message: str) -> OrgConfigError:
            return OrgConfigError(message, file=origin.get(code), code=code)

        by_code: dict[str, OrgUnit] = {}
        for unit in units:
            if unit.code in by_code:
                raise fail(unit.code, "duplicate unit code")
            by_code[unit.code] = unit
        for unit in by_code.values():
            if unit.level not in _DEPTH:
                raise fail(unit.code, f"unknown level {unit.level!r}; expected one of {', '.join(LEVELS)}")
        for unit in by_code.values():
            if unit.parent is not None:
                parent = by_code.get(unit.parent)
                if parent is None:
                    raise fail(unit.code, f"unknown parent {unit.parent!r}")
                if _DEPTH[unit.level] <= _DEPTH[parent.level]:
                    levels = f"level {unit.level!r} is not below its parent's level {parent.level!r}"
                    raise fail(unit.code, f"{levels} ({parent.code})")
            if unit.level == "grid" and unit.boundary is None:
                raise fail(unit.code, "a grid must have a boundary")
            if unit.boundary is not None:
                problem = ring_problem(unit.boundary)
                if problem is not None:
                    raise fail(unit.code, f"boundary: {problem}")
            if unit.centre is not None:
                lon, lat = unit.centre
                if not (-180.0 <= lon <= 180.0 and -90.0 <= lat <= 90.0):
                    raise fail(unit.code, f"centre ({lon}, {lat}) lies outside WGS-84")

        depts: dict[str, Department] = {}
        by_org: dict[str, list[Department]] = {}
        for dept in departments:
            if dept.code in depts or dept.code in by_code:
                raise fail(dept.code, "duplicate department code")
            if dept.org not in by_code:
                raise fail(dept.code, f"department on unknown unit {dept.org!r}")
            if dept.kind not in DEPARTMENT_KINDS:
                raise fail(
                    dept.code,
                    f"unknown department kind {dept.kind!r}; expected one of {', '.join(DEPARTMENT_KINDS)}",
                )
            depts[dept.code] = dept
            by_org.setdefault(dept.org, []).append(dept)

        children: dict[str, list[str]] = {code: [] for code in by_code}
        for unit in by_code.values():
            if unit.parent is not None:
                children[unit.parent].append(unit.code)
        ancestors: dict[str, tuple[str, ...]] = {}
        for code in by_code:
            chain: list[str] = []
            parent_code = by_code[code].parent
            while parent_code is not None:  # terminates: every step goes up a level
                chain.append(parent_code)
                parent_code = by_code[parent_code].parent
            ancestors[code] = tuple(chain)
        descendants: dict[str, set[str]] = {code: {code} for code in by_code}
        for code, above_codes in ancestors.items():
            for above in above_codes:
                descendants[above].add(code)

        self.units = MappingProxyType(by_code)
        self.departments = MappingProxyType(depts)
        self._children: Mapping[str, tuple[OrgUnit, ...]] = MappingProxyType(
            {code: tuple(by_code[c] for c in sorted(kids)) for code, kids in children.items()}
        )
        self._ancestors: Mapping[str, tuple[str, ...]] = MappingProxyType(ancestors)
        self._descendants: Mapping[str, frozenset[str]] = MappingProxyType(
            {code: frozenset(found) for code, found in descendants.items()}
        )
        self._by_org: Mapping[str, tuple[Department, ...]] = MappingProxyType(
            {code: tuple(found) for code, found in by_org.items()}
        )
        roots = sorted(code for code, unit in by_code.items() if unit.parent is None)
        order: list[str] = []
        stack = list(reversed(roots))
        while stack:
            code = stack.pop()
            order.append(code)
            stack.extend(reversed([kid.code for kid in self._children[code]]))
        self._preorder: Mapping[str, int] = MappingProxyType({code: i for i, code in enumerate(order)})

    def __len__(self) -> int:
        return len(self.units)

    def __contains__(self, code: object) -> bool:
        return code in self.units

    def get(self, code: str) -> OrgUnit:
        """The unit with this code; KeyError when there is none."""
        return self.units[code]

    def children(self, code: str) -> tuple[OrgUnit, ...]:
        """The units directly below ``code``, ordered by code."""
        return self._children[code]

    def ancestors(self, code: str) -> tuple[str, ...]:
        """The codes above ``code``, nearest first, excluding ``code`` itself."""
        return self._ancestors[code]

    def descendants(self, code: str) -> frozenset[str]:
        """``code`` and every unit below it."""
        return self._descendants[code]

    def is_within(self, code: str, root: str) -> bool:
        """True when ``code`` is ``root`` itself or lies below it; False when either is unknown."""
        chain = self._ancestors.get(code)
        if chain is None or root not in self.units:
            return False
        return code == root or root in chain

    def parent_of(self, code: str) -> str | None:
        """The unit one level up, or None at the top."""
        return self.units[code].parent

    def level_of(self, code: str) -> str:
        """The level of the unit: province, city, county, township, community or grid."""
        return self.units[code].level

    def ancestor_at(self, code: str, level: str) -> str | None:
        """The unit at ``level`` on the way from ``code`` to the top, ``code`` itself included.

        ``ancestor_at(grid, "township")`` is the township of a grid.  None when the unit sits
        above ``level`` or its chain skips that level.
        """
        if level not in _DEPTH:
            raise ValueError(f"unknown level {level!r}; expected one of {', '.join(LEVELS)}")
        unit = self.units[code]
        if unit.level == level:
            return code
        for above in self._ancestors[code]:
            if self.units[above].level == level:
                return above
        return None

    def departments_of(self, code: str) -> tuple[Department, ...]:
        """The departments attached directly to ``code``, in the order they were declared."""
        if code not in self.units:
            raise KeyError(code)
        return self._by_org.get(code, ())

    def find_department(self, org_code: str, kind: str) -> Department | None:
        """The nearest department of ``kind``: at ``org_code`` itself, then up its ancestors.

        Where one unit has several departments of a kind, the first declared wins.
        """
        if kind not in DEPARTMENT_KINDS:
            raise ValueError(f"unknown department kind {kind!r}")
        for code in (org_code, *self.ancestors(org_code)):
            for dept in self._by_org.get(code, ()):
                if dept.kind == kind:
                    return dept
        return None

    def subtree(self, code: str) -> list[OrgUnit]:
        """``code`` and everything below it in pre-order (a unit before its children, by code)."""
        found = self._descendants[code]
        return sorted((self.units[c] for c in found), key=lambda unit: self._preorder[unit.code])

    def units_at(self, level: str) -> tuple[OrgUnit, ...]:
        """Every unit of ``level``, ordered by code."""
        if level not in _DEPTH:
            raise ValueError(f"unknown level {level!r}; expected one of {', '.join(LEVELS)}")
        return tuple(sorted((u for u in self.units.values() if u.level == level), key=lambda u: u.code))


# --- loading -------------------------------------------------------------------------------


def _required_str(table: Mapping[str, Any], key: str, file: str, code: str) -> str:
    value = table.get(key)
    if value is None:
        raise OrgConfigError(f"missing {key!r}", file=file, code=code)
    if not isinstance(value, str) or not value.strip():
        raise OrgConfigError(f"{key!r} must be a non-empty string", file=file, code=code)
    return value


def _optional_str(table: Mapping[str, Any], key: str, file: str, code: str) -> str | None:
    return None if table.get(key) is None else _required_str(table, key, file, code)


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _point(value: object, what: str, file: str, code: str) -> Point:
    if isinstance(value, list) and len(value) == 2:
        lon, lat = _number(value[0]), _number(value[1])
        if lon is not None and lat is not None:
            return (lon, lat)
    raise OrgConfigError(f"{what} must be a [lon, lat] pair of numbers, got {value!r}", file=file, code=code)


def _ring(value: object, file: str, code: str) -> Ring:
    if not isinstance(value, list):
        raise OrgConfigError("boundary must be an array of [lon, lat] points", file=file, code=code)
    ring = tuple(_point(item, "boundary point", file, code) for item in value)
    problem = ring_problem(ring)
    if problem is not None:
        raise OrgConfigError(f"boundary: {problem}", file=file, code=code)
    return ring


def _parse_unit(table: object, file: str, default_synthetic: bool, index: int) -> OrgUnit:
    if not isinstance(table, dict):
        raise OrgConfigError(f"unit #{index + 1} is not a table", file=file)
    raw_code = table.get("code")
    code = raw_code if isinstance(raw_code, str) and raw_code else None
    if code is None:
        raise OrgConfigError(f"unit #{index + 1} has no string 'code'", file=file)
    unknown = sorted(set(table) - _UNIT_KEYS)
    if unknown:
        raise OrgConfigError(f"unknown keys {', '.join(unknown)}", file=file, code=code)
    level = _required_str(table, "level", file, code)
    if level not in _DEPTH:
        raise OrgConfigError(
            f"unknown level {level!r}; expected one of {', '.join(LEVELS)}", file=file, code=code
        )
    synthetic = table.get("synthetic", default_synthetic)
    if not isinstance(synthetic, bool):
        raise OrgConfigError("'synthetic' must be true or false", file=file, code=code)
    boundary = table.get("boundary")
    centre = table.get("centre")
    return OrgUnit(
        code=code,
        name=_required_str(table, "name", file, code),
        name_en=_required_str(table, "name_en", file, code),
        level=level,
        parent=_optional_str(table, "parent", file, code),
        boundary=None if boundary is None else _ring(boundary, file, code),
        centre=None if centre is None else _point(centre, "centre", file, code),
        synthetic=synthetic,
    )


def _parse_department(table: object, file: str, index: int) -> Department:
    if not isinstance(table, dict):
        raise OrgConfigError(f"department #{index + 1} is not a table", file=file)
    raw_code = table.get("code")
    code = raw_code if isinstance(raw_code, str) and raw_code else None
    if code is None:
        raise OrgConfigError(f"department #{index + 1} has no string 'code'", file=file)
    unknown = sorted(set(table) - _DEPARTMENT_KEYS)
    if unknown:
        raise OrgConfigError(f"unknown keys {', '.join(unknown)}", file=file, code=code)
    return Department(
        code=code,
        name=_required_str(table, "name", file, code),
        name_en=_required_str(table, "name_en", file, code),
        kind=_required_str(table, "kind", file, code),
        org=_required_str(table, "org", file, code),
    )


def load_org_tree(directory: Path) -> OrgTree:
    """Read every ``*.toml`` in ``directory`` (in name order) into one checked tree.

    Raises :class:`OrgConfigError` naming the file and the unit or department on a duplicate
    code, an unknown parent, a child not below its parent's level, a grid without boundary, a
    bad ring, a department on an unknown unit or of an unknown kind, or a malformed entry.
    """
    files = sorted(directory.glob("*.toml"))
    if not files:
        raise OrgConfigError(f"no *.toml files in {directory}")
    units: list[OrgUnit] = []
    departments: list[Department] = []
    sources: dict[str, str] = {}

    def remember(code: str, file: str) -> None:
        if code in sources:
            raise OrgConfigError(f"duplicate code (first defined in {sources[code]})", file=file, code=code)
        sources[code] = file

    for path in files:
        file = path.name
        try:
            with path.open("rb") as handle:
                data = tomllib.load(handle)
        except tomllib.TOMLDecodeError as exc:
            raise OrgConfigError(f"not valid TOML: {exc}", file=file) from exc
        unknown = sorted(set(data) - _FILE_KEYS)
        if unknown:
            raise OrgConfigError(f"unknown top-level keys {', '.join(unknown)}", file=file)
        synthetic = data.get("synthetic", False)
        if not isinstance(synthetic, bool):
            raise OrgConfigError("'synthetic' must be true or false", file=file)
        raw_units = data.get("unit", [])
        raw_departments = data.get("department", [])
        if not isinstance(raw_units, list) or not isinstance(raw_departments, list):
            raise OrgConfigError("'unit' and 'department' must be arrays of tables", file=file)
        for index, table in enumerate(raw_units):
            unit = _parse_unit(table, file, synthetic, index)
            remember(unit.code, file)
            units.append(unit)
        for index, table in enumerate(raw_departments):
            dept = _parse_department(table, file, index)
            remember(dept.code, file)
            departments.append(dept)
    return OrgTree(units, departments, sources=sources)


# --- locating a point ----------------------------------------------------------------------


class GridLocator:
    """Which grid a WGS-84 point falls in, through an STRtree of the grid polygons.

    A point on a grid's boundary counts as inside.  A point on an edge or corner shared by
    several grids goes to the grid with the smallest code, so the answer never depends on
    the order of the index.
    """

    __slots__ = ("_codes", "_index")

    def __init__(self, tree: OrgTree) -> None:
        grids = tree.units_at("grid")
        self._codes: tuple[str, ...] = tuple(unit.code for unit in grids)  # sorted by code
        polygons = [shapely.Polygon(unit.boundary) for unit in grids]
        for unit, polygon in zip(grids, polygons, strict=True):
            if not bool(shapely.is_valid(polygon)):
                reason = str(shapely.is_valid_reason(polygon))
                raise OrgConfigError(f"boundary is not a valid polygon: {reason}", code=unit.code)
        self._index: Any = shapely.STRtree(polygons)

    def __len__(self) -> int:
        return len(self._codes)

    def locate(self, lat: float, lon: float) -> str | None:
        """The code of the grid containing the point, or None when no grid does."""
        if not (math.isfinite(lat) and math.isfinite(lon)) or not self._codes:
            return None
        hits = self._index.query(shapely.Point(lon, lat), predicate="intersects")
        if len(hits) == 0:
            return None
        return self._codes[int(min(hits))]
