"""一心两翼 categories, inheritance, step time limits, the client JSON and the loader's errors."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest

from dispatchd.domain.orgs import DEPARTMENT_KINDS, load_org_tree
from dispatchd.domain.taxonomy import (
    PRIORITIES,
    STEPS,
    WINGS,
    Taxonomy,
    TaxonomyError,
    format_duration,
    load_taxonomy,
    parse_duration,
)

CONFIG = Path(__file__).resolve().parents[2] / "config"


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return load_taxonomy(CONFIG / "taxonomy.toml")


def test_shipped_taxonomy_has_one_heart_and_two_wings(taxonomy: Taxonomy) -> None:
    """The top level is 4 population, 4 incident and 5 hazard categories, in that order."""
    top = taxonomy.top_level()
    assert [c.name for c in top if c.wing == "heart"] == ["常住人口", "外来人员", "重点人员", "特殊人员"]
    assert [c.name for c in top if c.wing == "incident"] == [
        "矛盾纠纷",
        "涉稳事件",
        "安全生产事故",
        "刑事案件",
    ]
    assert [c.name for c in top if c.wing == "hazard"] == [
        "消防隐患",
        "安全生产隐患",
        "治安隐患",
        "环境隐患",
        "食品安全隐患",
    ]
    assert [c.wing for c in top] == sorted((c.wing for c in top), key=WINGS.index)


def test_dispute_subcategories_are_present(taxonomy: Taxonomy) -> None:
    """矛盾纠纷 has the usual kinds of dispute, each pointing back at its parent."""
    dispute = taxonomy.get("incident.dispute")
    names = {taxonomy.get(code).name for code in dispute.children}
    assert names >= {"婚姻家庭纠纷", "邻里纠纷", "劳资纠纷", "土地山林纠纷", "征地拆迁纠纷"}
    assert all(taxonomy.get(code).parent == "incident.dispute" for code in dispute.children)


def test_subcategories_inherit_unless_set(taxonomy: Taxonomy) -> None:
    """A sub-category takes wing, priority and department from its parent unless it sets them."""
    family = taxonomy.get("incident.dispute.marriage_family")
    assert (family.wing, family.default_priority, family.default_department) == ("incident", "P3", "justice")
    labour = taxonomy.get("incident.dispute.labour")
    assert (labour.wing, labour.default_priority, labour.default_department) == (
        "incident",
        "P2",
        "social_security",
    )
    with pytest.raises(KeyError):
        taxonomy.get("incident.nothing")


def test_every_category_department_is_reachable_from_every_township(taxonomy: Taxonomy) -> None:
    """Each category's department kind is known and found from a grid of every demo township."""
    tree = load_org_tree(CONFIG / "orgs")
    grids = [tree.children(tree.children(t.code)[0].code)[0].code for t in tree.children("330381")]
    assert len(grids) == len(tree.children("330381"))
    for category in taxonomy.categories.values():
        assert category.default_department in DEPARTMENT_KINDS
        for grid in grids:
            found = tree.find_department(grid, category.default_department)
            assert found is not None, (category.code, grid)


def test_default_limits_per_priority(taxonomy: Taxonomy) -> None:
    """The default table: P1 answers in minutes, P4 in hours and days, every step tighter at P1."""
    p1 = taxonomy.step_limits("incident.dispute.neighbour", "P1")
    assert dict(p1) == {
        "accept": timedelta(minutes=5),
        "dispatch": timedelta(minutes=10),
        "start": timedelta(minutes=30),
        "feedback": timedelta(hours=2),
        "verify": timedelta(hours=2),
        "close": timedelta(hours=4),
    }
    assert taxonomy.limit("incident.dispute.neighbour", "P4", "accept") == timedelta(hours=4)
    assert taxonomy.limit("incident.dispute.neighbour", "P4", "dispatch") == timedelta(days=1)
    for step in STEPS:
        limits = [taxonomy.default_limits[p][step] for p in PRIORITIES]
        assert limits == sorted(limits), step


def test_category_overrides_are_inherited_and_narrow(taxonomy: Taxonomy) -> None:
    """An override applies to its category and sub-categories, only for its priority and step."""
    assert taxonomy.limit("incident.work_safety_accident", "P1", "start") == timedelta(minutes=15)
    assert taxonomy.limit("incident.work_safety_accident.industrial", "P1", "start") == timedelta(minutes=15)
    assert taxonomy.limit("incident.work_safety_accident.fire", "P1", "start") == timedelta(minutes=10)
    assert taxonomy.limit("incident.work_safety_accident.fire", "P1", "accept") == timedelta(minutes=2)
    assert taxonomy.limit("incident.work_safety_accident.fire", "P1", "feedback") == timedelta(hours=2)
    assert taxonomy.limit("incident.work_safety_accident.fire", "P2", "start") == timedelta(hours=2)


def test_limit_rejects_unknown_arguments(taxonomy: Taxonomy) -> None:
    """An unknown priority or step is a ValueError, an unknown category a KeyError."""
    with pytest.raises(ValueError, match="priority"):
        taxonomy.limit("incident.dispute", "P0", "accept")
    with pytest.raises(ValueError, match="step"):
        taxonomy.limit("incident.dispute", "P1", "evaluate")
    with pytest.raises(KeyError):
        taxonomy.limit("incident.nothing", "P1", "accept")


def test_as_json_is_nested_with_both_names(taxonomy: Taxonomy) -> None:
    """as_json() nests children and carries the name in zh-CN and en."""
    tree = taxonomy.as_json()
    assert [node["code"] for node in tree] == [c.code for c in taxonomy.top_level()]
    dispute = next(node for node in tree if node["code"] == "incident.dispute")
    assert dispute["name"] == {"zh-CN": "矛盾纠纷", "en": "Disputes"}
    labour = next(node for node in dispute["children"] if node["code"] == "incident.dispute.labour")
    assert labour == {
        "code": "incident.dispute.labour",
        "name": {"zh-CN": "劳资纠纷", "en": "Labour and wage disputes"},
        "wing": "incident",
        "default_priority": "P2",
        "default_department": "social_security",
        "children": [],
    }
    count = 0
    stack = list(tree)
    while stack:
        node = stack.pop()
        count += 1
        stack.extend(node["children"])
    assert count == len(taxonomy.categories)


def test_as_json_in_one_language(taxonomy: Taxonomy) -> None:
    """With a language the name is a single string; an unsupported language is refused."""
    assert taxonomy.as_json("en")[0]["name"] == "Resident population"
    assert taxonomy.as_json("zh-CN")[0]["name"] == "常住人口"
    assert (
        taxonomy.as_json("en-GB")[0]["children"][0]["name"]
        == taxonomy.get(taxonomy.top_level()[0].children[0]).name_en
    )
    with pytest.raises(ValueError, match="unsupported language"):
        taxonomy.as_json("fr")


# --- durations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5m", timedelta(minutes=5)),
        ("2h", timedelta(hours=2)),
        ("1d", timedelta(days=1)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1d12h", timedelta(days=1, hours=12)),
        ("45s", timedelta(seconds=45)),
        ("0m", timedelta(0)),
    ],
)
def test_parse_duration_reads_the_written_forms(text: str, expected: timedelta) -> None:
    """Units d, h, m, s combine in descending order."""
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "5", "m", "5 m", " 5m", "1.5h", "-5m", "30m1h", "2hh", "5min", "1w"])
def test_parse_duration_rejects_anything_else(text: str) -> None:
    """Malformed durations raise ValueError quoting the text."""
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


@pytest.mark.parametrize("value", [timedelta(minutes=5), timedelta(days=2, hours=3, seconds=7), timedelta(0)])
def test_format_duration_round_trips(value: timedelta) -> None:
    """format_duration writes what parse_duration reads back unchanged."""
    assert parse_duration(format_duration(value)) == value
    assert format_duration(timedelta(hours=1, minutes=30)) == "1h30m"


def test_format_duration_refuses_negative_and_fractional() -> None:
    """Negative or sub-second durations have no written form."""
    for value in (timedelta(seconds=-1), timedelta(milliseconds=5)):
        with pytest.raises(ValueError):
            format_duration(value)


# --- loader errors ---------------------------------------------------------------------------

LIMITS = "\n".join(
    f"[limits.{p}]\n" + "\n".join(f'{s} = "{i + 1}h"' for s in STEPS) for i, p in enumerate(PRIORITIES)
)

CATEGORY = """
[[category]]
code = "incident.dispute"
name = "矛盾纠纷"
name_en = "Disputes"
wing = "incident"
default_priority = "P3"
default_department = "justice"

  [[category.sub]]
  code = "incident.dispute.labour"
  name = "劳资纠纷"
  name_en = "Labour disputes"
"""


def load_text(tmp_path: Path, text: str) -> Taxonomy:
    path = tmp_path / "taxonomy.toml"
    path.write_text(text, encoding="utf-8")
    return load_taxonomy(path)


def test_minimal_taxonomy_loads(tmp_path: Path) -> None:
    """The base of the error cases is valid and the sub-category inherits everything."""
    taxonomy = load_text(tmp_path, LIMITS + CATEGORY)
    labour = taxonomy.get("incident.dispute.labour")
    assert (labour.wing, labour.default_priority, labour.default_department) == ("incident", "P3", "justice")
    assert taxonomy.limit("incident.dispute.labour", "P2", "start") == timedelta(hours=2)


@pytest.mark.parametrize(
    ("text", "key", "message"),
    [
        (LIMITS.replace('accept = "1h"', 'accept = "1hour"'), "limits.P1.accept", "bad duration"),
        (LIMITS.replace('accept = "1h"', 'accept = "0m"'), "limits.P1.accept", "must be positive"),
        (LIMITS.replace('accept = "1h"\n', ""), "limits.P1.accept", "missing"),
        (LIMITS.replace("[limits.P4]", "[limits.P5]"), "limits.P5", "unknown priority"),
        (
            LIMITS.replace('close = "1h"', 'close = "1h"\nevaluate = "1h"'),
            "limits.P1.evaluate",
            "unknown step",
        ),
        (
            LIMITS + CATEGORY.replace('"P3"', '"P7"'),
            "category.incident.dispute.default_priority",
            "unknown priority",
        ),
        (
            LIMITS + CATEGORY.replace('"justice"', '"courts"'),
            "category.incident.dispute.default_department",
            "unknown department kind",
        ),
        (
            LIMITS
            + CATEGORY.replace('name_en = "Labour disputes"', 'name_en = "L"\n  default_department = "x"'),
            "category.incident.dispute.labour.default_department",
            "unknown department kind",
        ),
        (
            LIMITS + CATEGORY + CATEGORY.split("  [[category.sub]]")[0],
            "category.incident.dispute",
            "duplicate",
        ),
        (
            LIMITS + CATEGORY.replace("incident.dispute.labour", "incident.dispute"),
            "category.incident.dispute",
            "duplicate",
        ),
        (
            LIMITS
            + CATEGORY.replace(
                'name_en = "Labour disputes"', 'name_en = "L"\n  limits = { P1 = { start = "soon" } }'
            ),
            "category.incident.dispute.labour.limits.P1.start",
            "bad duration",
        ),
        (
            LIMITS
            + CATEGORY.replace(
                'name_en = "Labour disputes"', 'name_en = "L"\n  limits = { P9 = { start = "1h" } }'
            ),
            "category.incident.dispute.labour.limits.P9",
            "unknown priority",
        ),
        (
            LIMITS + CATEGORY.replace("incident.dispute.labour", "incident.labour"),
            "category.incident.labour",
            "must extend its parent",
        ),
        (
            LIMITS + CATEGORY.replace('name_en = "Labour disputes"', 'name_en = "L"\n  wing = "hazard"'),
            "category.incident.dispute.labour.wing",
            "differs from the parent",
        ),
        (
            LIMITS + CATEGORY.replace('wing = "incident"', 'wing = "tail"'),
            "category.incident.dispute.wing",
            "unknown wing",
        ),
        (
            LIMITS + CATEGORY.replace('name_en = "Disputes"', 'name_en = "D"\nprio = "P1"'),
            "category.incident.dispute",
            "unknown keys prio",
        ),
    ],
)
def test_loader_errors_name_the_key(tmp_path: Path, text: str, key: str, message: str) -> None:
    """Each mistake raises TaxonomyError whose key points at the offending entry."""
    with pytest.raises(TaxonomyError, match=re.escape(message)) as caught:
        load_text(tmp_path, text)
    assert caught.value.key == key
    assert caught.value.file == "taxonomy.toml"
    assert key in str(caught.value)


def test_loader_rejects_invalid_toml_and_no_categories(tmp_path: Path) -> None:
    """Broken TOML and a file without categories are refused."""
    with pytest.raises(TaxonomyError, match="not valid TOML"):
        load_text(tmp_path, "[limits")
    with pytest.raises(TaxonomyError, match="at least one"):
        load_text(tmp_path, LIMITS)


def test_display_name_of_known_and_unknown_codes() -> None:
    """A category shows its two names; a code no longer in the taxonomy shows as itself in both."""
    taxonomy = load_taxonomy(Path(__file__).resolve().parents[2] / "config" / "taxonomy.toml")
    first = taxonomy.top_level()[0]
    assert taxonomy.display_name(first.code) == {"zh-CN": first.name, "en": first.name_en}
    assert taxonomy.display_name("retired.code") == {"zh-CN": "retired.code", "en": "retired.code"}
