"""Hotline routing: the shipped table, number normalisation and the loader's errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from dispatchd.domain.hotlines import (
    HotlineDirectory,
    HotlineError,
    HotlineRoute,
    load_hotlines,
    normalise_number,
)
from dispatchd.domain.orgs import load_org_tree
from dispatchd.domain.taxonomy import Taxonomy, load_taxonomy

CONFIG = Path(__file__).resolve().parents[2] / "config"


@pytest.fixture(scope="module")
def taxonomy() -> Taxonomy:
    return load_taxonomy(CONFIG / "taxonomy.toml")


@pytest.fixture(scope="module")
def hotlines(taxonomy: Taxonomy) -> HotlineDirectory:
    return load_hotlines(CONFIG / "hotlines.toml", taxonomy)


def test_shipped_table_has_967999_and_about_twenty_old_lines(hotlines: HotlineDirectory) -> None:
    """967999 goes to the command centre with no category; ~20 old lines carry one each."""
    one = hotlines["967999"]
    assert one == HotlineRoute("967999", one.name, one.name_en, "other", None)
    old = [route for number, route in hotlines.items() if number.startswith("0577")]
    assert len(old) >= 18
    assert all(route.category is not None for route in old)
    assert len({route.department_kind for route in old}) >= 12


def test_every_line_reaches_a_department_of_the_demo_county(hotlines: HotlineDirectory) -> None:
    """Each line's department kind exists at or above the county (or, for squads, a township)."""
    tree = load_org_tree(CONFIG / "orgs")
    for route in hotlines.values():
        where = "330381116" if route.department_kind == "emergency_squad" else "330381"
        assert tree.find_department(where, route.department_kind) is not None, route.dialled
    centre = tree.find_department("330381", hotlines["967999"].department_kind)
    assert centre is not None and centre.code == "330381-ZHZX"


@pytest.mark.parametrize(
    "spelling",
    [
        "0577-65890115",
        "0577 6589 0115",
        "(0577) 6589-0115",
        "+86 577 6589 0115",
        "+86 (0)577 6589 0115",
        "0086-577-65890115",
        "8657765890115",
        "577 6589 0115",
        "00577 65890115",
        "65890115",
        "6589-0115",
    ],
)
def test_route_normalises_every_usual_spelling(hotlines: HotlineDirectory, spelling: str) -> None:
    """Dashes, spaces, brackets, +86/0086/86, a missing or doubled trunk 0 and no area code all route."""
    route = hotlines.route(spelling)
    assert route is not None
    assert route.dialled == "057765890115"
    assert route.department_kind == "social_security"
    assert route.category == "incident.dispute.labour"


def test_short_numbers_route_as_they_are(hotlines: HotlineDirectory) -> None:
    """967999 and 81890 route with or without separators; +86 before a short number is tolerated."""
    assert hotlines.route("967-999") == hotlines["967999"]
    assert hotlines.route("+86 967999") == hotlines["967999"]
    route = hotlines.route("81890")
    assert route is not None and route.department_kind == "emergency_squad"


@pytest.mark.parametrize(
    "dialled", ["12345", "110", "0571-65890115", "+1 212 555 0100", "abc", "", "+86", "0000"]
)
def test_unknown_or_foreign_numbers_do_not_route(hotlines: HotlineDirectory, dialled: str) -> None:
    """National lines we do not take, another city's number, foreign and garbage numbers give None."""
    assert hotlines.route(dialled) is None


@pytest.mark.parametrize(
    ("dialled", "expected"),
    [
        ("13812345678", "13812345678"),
        ("+86 138 1234 5678", "13812345678"),
        ("8613812345678", "13812345678"),
        ("110", "110"),
        ("0571-8765 4321", "057187654321"),
        ("+44 20 7946 0000", None),
        ("１２３", None),
    ],
)
def test_normalise_number_keeps_mobiles_short_numbers_and_other_cities(
    dialled: str, expected: str | None
) -> None:
    """Mobile and short numbers are kept, other area codes kept, non-Chinese numbers refused."""
    assert normalise_number(dialled) == expected


def test_normalise_number_uses_the_given_area_code() -> None:
    """A local 8-digit number takes the area code it is dialled in."""
    assert normalise_number("87654321", area_code="0571") == "057187654321"
    assert normalise_number("571 8765 4321", area_code="0571") == "057187654321"


# --- loader errors ---------------------------------------------------------------------------

LINE = """
[[line]]
dialled = "0577-6589 0101"
name = "公安局治安举报"
name_en = "Police"
department_kind = "police"
category = "hazard.public_order"
"""


def load_text(tmp_path: Path, text: str, taxonomy: Taxonomy) -> HotlineDirectory:
    path = tmp_path / "hotlines.toml"
    path.write_text(text, encoding="utf-8")
    return load_hotlines(path, taxonomy)


def test_minimal_table_loads_with_normalised_keys(tmp_path: Path, taxonomy: Taxonomy) -> None:
    """A written number is stored under its normalised spelling."""
    table = load_text(tmp_path, 'area_code = "0577"\n' + LINE, taxonomy)
    assert list(table) == ["057765890101"]
    assert len(table) == 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (LINE.replace('"police"', '"army"'), "unknown department kind"),
        (LINE.replace('"hazard.public_order"', '"hazard.nothing"'), "not in the taxonomy"),
        (LINE + LINE.replace('"0577-6589 0101"', '"+86 577 65890101"'), "listed twice"),
        (LINE.replace('"0577-6589 0101"', '"+1 555 0101"'), "not a dialable"),
        (LINE.replace('name_en = "Police"', 'name_en = "Police"\nowner = "x"'), "unknown keys owner"),
        (LINE.replace('name_en = "Police"\n', ""), "'name_en' must be"),
        ('area_code = "577"\n' + LINE, "area_code"),
        ("", "at least one"),
        ("[[line]\n", "not valid TOML"),
    ],
)
def test_loader_rejects_bad_lines(tmp_path: Path, taxonomy: Taxonomy, text: str, message: str) -> None:
    """Every mistake raises HotlineError naming the file and the problem."""
    with pytest.raises(HotlineError, match=message) as caught:
        load_text(tmp_path, text, taxonomy)
    assert "hotlines.toml" in str(caught.value)
