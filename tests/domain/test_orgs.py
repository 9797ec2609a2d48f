"""The organisation tree: the shipped demo county, its geometry, the queries and the loader's errors."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest
import shapely

from dispatchd.domain.orgs import (
    DEPARTMENT_KINDS,
    LEVELS,
    Department,
    GridLocator,
    OrgConfigError,
    OrgTree,
    OrgUnit,
    load_org_tree,
)

ORGS = Path(__file__).resolve().parents[2] / "config" / "orgs"
COUNTY = "330381"
MAYU = "330381116"
ANYANG = "330381001"


@pytest.fixture(scope="module")
def tree() -> OrgTree:
    return load_org_tree(ORGS)


@pytest.fixture(scope="module")
def locator(tree: OrgTree) -> GridLocator:
    return GridLocator(tree)


def polygon(unit: OrgUnit) -> shapely.Polygon:
    assert unit.boundary is not None
    return shapely.Polygon(unit.boundary)


# --- the shipped configuration ---------------------------------------------------------------


def test_shipped_config_loads_with_the_whole_chain(tree: OrgTree) -> None:
    """The shipped files load into one tree running province → city → county → township."""
    assert tree.get("330000").level == "province"
    assert tree.parent_of("330300") == "330000"
    assert tree.parent_of(COUNTY) == "330300"
    townships = tree.children(COUNTY)
    assert 6 <= len(townships) <= 8
    assert {u.name for u in townships} >= {"马屿镇", "安阳街道", "玉海街道", "塘下镇", "飞云街道", "陶山镇"}
    assert all(3 <= len(tree.children(t.code)) <= 6 for t in townships)


def test_demo_county_has_more_than_250_grids(tree: OrgTree) -> None:
    """The demo county carries a few hundred grids, Mayu the most."""
    grids = [u for u in tree.units_at("grid") if tree.is_within(u.code, COUNTY)]
    assert len(grids) > 250
    per_township = {
        t.code: sum(1 for g in grids if tree.ancestor_at(g.code, "township") == t.code)
        for t in tree.children(COUNTY)
    }
    assert max(per_township, key=per_township.__getitem__) == MAYU


def test_demo_county_is_marked_synthetic_and_the_province_is_not(tree: OrgTree) -> None:
    """Every unit of the demo file says synthetic; the real province and city do not."""
    assert all(tree.get(code).synthetic for code in tree.descendants(COUNTY))
    assert not tree.get("330000").synthetic
    assert not tree.get("330300").synthetic
    assert "SYNTHETIC" in (ORGS / "10-ruian-demo.toml").read_text(encoding="utf-8").splitlines()[0]


def test_codes_follow_the_division_code_pattern(tree: OrgTree) -> None:
    """Townships have 9 digits, communities 12, grids the community code + G + 3 digits."""
    for unit in tree.subtree(COUNTY):
        if unit.level == "township":
            assert re.fullmatch(r"330381\d{3}", unit.code)
        elif unit.level == "community":
            assert re.fullmatch(r"\d{12}", unit.code) and unit.code.startswith(unit.parent or "")
        elif unit.level == "grid":
            assert unit.code == f"{unit.parent}G{unit.code[-3:]}" and unit.code[-3:].isdigit()


def test_every_grid_ring_is_valid_closed_and_counter_clockwise(tree: OrgTree) -> None:
    """Each boundary is a valid simple polygon, closed, wound counter-clockwise."""
    for unit in tree.units.values():
        if unit.boundary is None:
            continue
        assert unit.boundary[0] == unit.boundary[-1]
        poly = polygon(unit)
        assert shapely.is_valid(poly), (unit.code, shapely.is_valid_reason(poly))
        assert poly.exterior.is_ccw, unit.code


def test_grids_tile_each_community(tree: OrgTree) -> None:
    """The grids of a community cover exactly its area, with no overlap between two grids."""
    for community in tree.units_at("community"):
        outer = polygon(community)
        grids = [polygon(g) for g in tree.children(community.code)]
        assert grids and all(g.level == "grid" for g in tree.children(community.code))
        total = sum(g.area for g in grids)
        assert total == pytest.approx(outer.area, rel=1e-9), community.code
        for a, b in itertools.combinations(grids, 2):
            assert a.intersection(b).area <= 1e-12, community.code
        assert shapely.union_all(grids).symmetric_difference(outer).area <= 1e-12, community.code


def test_communities_tile_each_township(tree: OrgTree) -> None:
    """The communities of a township cover exactly its area, with no overlap."""
    for township in tree.children(COUNTY):
        outer = polygon(township)
        parts = [polygon(c) for c in tree.children(township.code)]
        assert sum(p.area for p in parts) == pytest.approx(outer.area, rel=1e-9)
        for a, b in itertools.combinations(parts, 2):
            assert a.intersection(b).area <= 1e-12, township.code


def test_no_two_grids_of_the_county_overlap(tree: OrgTree) -> None:
    """Across community and township borders no two grids overlap either."""
    grids = tree.units_at("grid")
    polys = [polygon(g) for g in grids]
    index = shapely.STRtree(polys)
    left, right = index.query(polys, predicate="intersects")
    pairs = [(i, j) for i, j in zip(left.tolist(), right.tolist(), strict=True) if i < j]
    assert pairs  # neighbours touch
    worst = max(polys[i].intersection(polys[j]).area for i, j in pairs)
    assert worst <= 1e-12


def test_locator_finds_the_grid_of_each_representative_point(tree: OrgTree, locator: GridLocator) -> None:
    """Every grid's representative point is located in that very grid."""
    assert len(locator) == len(tree.units_at("grid"))
    for grid in tree.units_at("grid"):
        point = polygon(grid).representative_point()
        assert locator.locate(point.y, point.x) == grid.code


def test_locator_returns_none_far_away(locator: GridLocator) -> None:
    """Beijing, a point between townships, and a NaN are in no grid."""
    assert locator.locate(39.9042, 116.4074) is None
    assert locator.locate(27.80, 120.60) is None  # between 仙降, 安阳 and 陶山
    assert locator.locate(float("nan"), 120.5) is None


def test_locator_on_a_shared_vertex_picks_the_smallest_code(tree: OrgTree, locator: GridLocator) -> None:
    """A point shared by several grids goes to the smallest code; a boundary point counts as inside."""
    grids = tree.children(MAYU + "001")
    first = grids[0]
    assert first.boundary is not None
    touching: dict[tuple[float, float], set[str]] = {}
    for grid in grids:
        assert grid.boundary is not None
        for point in grid.boundary:
            touching.setdefault(point, set()).add(grid.code)
    shared = [(p, codes) for p, codes in touching.items() if len(codes) >= 3]
    assert shared
    for (lon, lat), codes in shared:
        assert locator.locate(lat, lon) == min(codes)
    corner_lon, corner_lat = first.boundary[0]
    assert locator.locate(corner_lat, corner_lon) is not None


# --- queries ---------------------------------------------------------------------------------


def test_ancestors_nearest_first_and_ancestor_at(tree: OrgTree) -> None:
    """A grid's ancestors run community, township, county, city, province; ancestor_at picks one."""
    grid = f"{MAYU}201G005"
    assert tree.ancestors(grid) == (f"{MAYU}201", MAYU, COUNTY, "330300", "330000")
    assert tree.ancestors("330000") == ()
    assert tree.ancestor_at(grid, "township") == MAYU
    assert tree.ancestor_at(grid, "grid") == grid
    assert tree.ancestor_at(MAYU, "grid") is None
    assert tree.level_of(grid) == "grid"
    with pytest.raises(ValueError, match="unknown level"):
        tree.ancestor_at(grid, "village")


def test_descendants_and_is_within(tree: OrgTree) -> None:
    """descendants holds the unit itself and everything below; is_within agrees with it."""
    below = tree.descendants(MAYU)
    assert MAYU in below
    assert f"{MAYU}201G005" in below
    assert f"{ANYANG}001G001" not in below
    assert tree.is_within(f"{MAYU}201G005", MAYU)
    assert tree.is_within(MAYU, MAYU)
    assert not tree.is_within(MAYU, f"{MAYU}201G005")
    assert not tree.is_within(f"{ANYANG}001G001", MAYU)
    assert not tree.is_within("nowhere", MAYU) and not tree.is_within(MAYU, "nowhere")
    assert tree.descendants("330000") == frozenset(tree.units)


def test_children_and_subtree_preorder(tree: OrgTree) -> None:
    """children are sorted by code; subtree lists a unit before its children, depth first."""
    kids = [u.code for u in tree.children(MAYU)]
    assert kids == sorted(kids)
    order = [u.code for u in tree.subtree(MAYU)]
    assert order[0] == MAYU
    assert set(order) == tree.descendants(MAYU)
    position = {code: i for i, code in enumerate(order)}
    for code in order[1:]:
        parent = tree.parent_of(code)
        assert parent is not None and position[parent] < position[code]
    first_community = kids[0]
    block = order[1 : 2 + len(tree.children(first_community))]
    assert block[0] == first_community and all(c.startswith(first_community) for c in block)


def test_get_and_queries_raise_keyerror_for_unknown_codes(tree: OrgTree) -> None:
    """An unknown unit code is a KeyError, not a silent None."""
    with pytest.raises(KeyError):
        tree.get("999999")
    with pytest.raises(KeyError):
        tree.ancestors("999999")
    with pytest.raises(KeyError):
        tree.departments_of("999999")


def test_departments_of_mayu_are_the_25_linked_ones(tree: OrgTree) -> None:
    """Mayu links 25 departments including the stations of a township; kinds are all known."""
    mayu = tree.departments_of(MAYU)
    assert len(mayu) == 25
    kinds = {d.kind for d in mayu}
    assert kinds >= {
        "police",
        "justice",
        "work_safety",
        "social_security",
        "enforcement",
        "market",
        "emergency_squad",
    }
    assert all(d.kind in DEPARTMENT_KINDS and d.org == MAYU for d in mayu)
    assert tree.departments_of(f"{MAYU}001") == ()


def test_find_department_takes_the_nearest_up_the_chain(tree: OrgTree) -> None:
    """From a grid the township's station wins; a kind the township lacks comes from the county."""
    grid = f"{ANYANG}002G003"
    police = tree.find_department(grid, "police")
    assert police is not None and police.code == f"{ANYANG}-PCS"
    fire = tree.find_department(grid, "fire")
    assert fire is not None and fire.org == COUNTY
    mayu_fire = tree.find_department(f"{MAYU}202G001", "fire")
    assert mayu_fire is not None and mayu_fire.org == MAYU
    # two police departments at Mayu: the first declared (the station) wins over traffic police
    mayu_police = tree.find_department(MAYU, "police")
    assert mayu_police is not None and mayu_police.code == f"{MAYU}-PCS"
    squad = tree.find_department(grid, "emergency_squad")
    assert squad is not None and squad.org == ANYANG
    assert tree.find_department("330000", "police") is None
    with pytest.raises(ValueError):
        tree.find_department(grid, "army")


def test_tree_built_in_code_is_checked_too() -> None:
    """OrgTree's own constructor rejects a child at its parent's level, without any file."""
    units = [
        OrgUnit("1", "省", "P", "province", None, None, None, False),
        OrgUnit("2", "省二", "P2", "province", "1", None, None, False),
    ]
    with pytest.raises(OrgConfigError, match="not below its parent"):
        OrgTree(units)
    ok = OrgTree(units[:1], [Department("1-X", "部门", "Dept", "other", "1")])
    assert ok.find_department("1", "other") is not None
    assert LEVELS[0] == "province"


# --- loader errors ---------------------------------------------------------------------------

PROVINCE_UNIT = """
[[unit]]
code = "330000"
name = "浙江省"
name_en = "Zhejiang"
level = "province"
"""

COUNTY_UNIT = """
[[unit]]
code = "330381"
name = "瑞安市"
name_en = "Ruian"
level = "county"
parent = "330000"
"""

GOOD = PROVINCE_UNIT + COUNTY_UNIT

GRID = """
[[unit]]
code = "G1"
name = "网格"
name_en = "Grid"
level = "grid"
parent = "330381"
boundary = {ring}
"""

SQUARE = "[[120.0, 27.0], [120.1, 27.0], [120.1, 27.1], [120.0, 27.1], [120.0, 27.0]]"


def write(directory: Path, **files: str) -> Path:
    for name, text in files.items():
        (directory / f"{name}.toml").write_text(text, encoding="utf-8")
    return directory


def test_loader_accepts_a_minimal_good_tree(tmp_path: Path) -> None:
    """The base used by the error cases below is itself valid, grid and all."""
    tree = load_org_tree(write(tmp_path, a=GOOD + GRID.format(ring=SQUARE)))
    assert tree.parent_of("G1") == "330381"
    assert GridLocator(tree).locate(27.05, 120.05) == "G1"


@pytest.mark.parametrize(
    ("extra", "code", "message"),
    [
        (
            GRID.format(ring="[[120.0, 27.0], [120.1, 27.0], [120.1, 27.1], [120.0, 27.1]]"),
            "G1",
            "not closed",
        ),
        (GRID.format(ring="[[120.0, 27.0], [120.1, 27.0], [120.0, 27.0]]"), "G1", "at least 4"),
        (GRID.format(ring=SQUARE.replace("27.1", "97.1")), "G1", "outside WGS-84"),
        (
            GRID.format(ring="[[120.0, 27.0, 5.0], [120.1, 27.0], [120.1, 27.1], [120.0, 27.0]]"),
            "G1",
            "pair of numbers",
        ),
        (GRID.replace("boundary = {ring}\n", ""), "G1", "must have a boundary"),
        (GRID.format(ring=SQUARE).replace('parent = "330381"', 'parent = "330399"'), "G1", "unknown parent"),
        (GRID.format(ring=SQUARE).replace('level = "grid"', 'level = "village"'), "G1", "unknown level"),
        (GRID.format(ring=SQUARE).replace('level = "grid"', 'level = "city"'), "G1", "not below its parent"),
        (
            GRID.format(ring=SQUARE).replace('level = "grid"', 'level = "county"'),
            "G1",
            "not below its parent",
        ),
        (
            GRID.format(ring=SQUARE).replace('name_en = "Grid"', 'name_en = "Grid"\nboundry = 1'),
            "G1",
            "unknown keys boundry",
        ),
        (GRID.format(ring=SQUARE).replace('name = "网格"\n', ""), "G1", "missing 'name'"),
        (
            '[[department]]\ncode = "D1"\nname = "所"\nname_en = "D"\nkind = "police"\norg = "999"\n',
            "D1",
            "unknown unit",
        ),
        (
            '[[department]]\ncode = "D1"\nname = "所"\nname_en = "D"\nkind = "army"\norg = "330381"\n',
            "D1",
            "unknown department kind",
        ),
    ],
)
def test_loader_rejects_bad_units_naming_file_and_code(
    tmp_path: Path, extra: str, code: str, message: str
) -> None:
    """Each structural mistake raises OrgConfigError naming the file, the code and the problem."""
    write(tmp_path, a=GOOD + extra)
    with pytest.raises(OrgConfigError, match=re.escape(message)) as caught:
        load_org_tree(tmp_path)
    assert caught.value.file == "a.toml"
    assert caught.value.code == code
    assert "a.toml" in str(caught.value) and code in str(caught.value)


def test_loader_rejects_a_duplicate_code_across_files(tmp_path: Path) -> None:
    """A code defined in two files is reported in the later file, naming the first."""
    write(tmp_path, a=GOOD, b=COUNTY_UNIT)
    with pytest.raises(OrgConfigError, match="duplicate code") as caught:
        load_org_tree(tmp_path)
    assert caught.value.file == "b.toml" and caught.value.code == "330381"
    assert "a.toml" in str(caught.value)


def test_loader_rejects_bad_toml_and_empty_directories(tmp_path: Path) -> None:
    """Broken TOML names its file; a directory without files is an error, not an empty tree."""
    with pytest.raises(OrgConfigError, match=re.escape("no *.toml files")):
        load_org_tree(tmp_path)
    write(tmp_path, a="[[unit]\ncode = 1")
    with pytest.raises(OrgConfigError, match="not valid TOML") as caught:
        load_org_tree(tmp_path)
    assert caught.value.file == "a.toml"


def test_synthetic_flag_applies_per_file_and_per_unit(tmp_path: Path) -> None:
    """A file-level synthetic flag marks its units; a unit may say otherwise."""
    write(
        tmp_path,
        a=GOOD,
        b="synthetic = true\n"
        + GRID.format(ring=SQUARE)
        + GRID.format(ring=SQUARE)
        .replace('"G1"', '"G2"')
        .replace('name_en = "Grid"', 'name_en = "Grid"\nsynthetic = false'),
    )
    tree = load_org_tree(tmp_path)
    assert tree.get("G1").synthetic and not tree.get("G2").synthetic and not tree.get("330381").synthetic


def test_locator_rejects_a_self_intersecting_grid(tmp_path: Path) -> None:
    """A bow-tie ring passes the loader's ring checks but the locator refuses it by code."""
    bowtie = "[[120.0, 27.0], [120.1, 27.1], [120.1, 27.0], [120.0, 27.1], [120.0, 27.0]]"
    tree = load_org_tree(write(tmp_path, a=GOOD + GRID.format(ring=bowtie)))
    with pytest.raises(OrgConfigError, match="not a valid polygon") as caught:
        GridLocator(tree)
    assert caught.value.code == "G1"
