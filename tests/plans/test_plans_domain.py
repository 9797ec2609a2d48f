"""Plans as data: the shipped plans load, a bad plan is refused naming its file and key, triggers
match cases and warnings, warning areas find their grids, CAP documents of real feeds parse."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import shapely

from dispatchd.domain.orgs import OrgTree
from dispatchd.domain.plans import (
    CaseFacts,
    Circle,
    PlanError,
    covered_grids,
    load_plans,
    matches,
    matches_warning,
    parse_plan,
    reason_zh,
)
from dispatchd.domain.taxonomy import Taxonomy
from dispatchd.plans.cap import CapError, parse
from tests.conftest import ROOT, SHARED
from tests.plans.helpers import GRID, TOWN, cap_document, plan_body

PLANS = ROOT / "config" / "plans"


def test_shipped_plans_load_and_round_trip(org_tree: OrgTree, taxonomy: Taxonomy) -> None:
    """Both shipped plans load; written back as JSON they parse to the same plan."""
    plans = {p.code: p for p in load_plans(PLANS, org_tree, taxonomy)}
    assert {"mass-incident-wage", "typhoon-flood"} <= set(plans)
    wage = plans["mass-incident-wage"]
    assert [g.name for g in wage.levels["IV"].groups] == ["谈判组", "安抚组", "现场对接组"]
    assert {s.type for s in wage.levels["IV"].steps} == {"report", "initial", "response", "end", "aftermath"}
    for plan in plans.values():
        assert parse_plan(plan.as_json(), tree=org_tree, taxonomy=taxonomy) == plan


@pytest.mark.parametrize(
    ("change", "key"),
    [
        (lambda b: b["levels"]["IV"]["forces"][0].update(count=0), "levels.IV.forces[0].count"),
        (lambda b: b["levels"]["IV"]["forces"][0].update(kind="tank"), "levels.IV.forces[0].kind"),
        (lambda b: b["trigger"].update(categories=["incident.nothing"]), "trigger.categories[0]"),
        (lambda b: b["levels"]["IV"]["steps"][0].update(within="soon"), "levels.IV.steps[0].within"),
        (lambda b: b["levels"]["IV"]["notices"][0].update(via=["pigeon"]), "levels.IV.notices[0].via[0]"),
        (lambda b: b.update(org="999999"), "org"),
        (lambda b: b["levels"].update(V={}), "levels.V"),
        (lambda b: b["levels"]["IV"]["groups"][0]["members"][1].update(department="astrology"), "levels.IV.groups[0].members[1].department"),
    ],
)
def test_a_bad_plan_names_the_key(org_tree: OrgTree, taxonomy: Taxonomy, change: object, key: str) -> None:
    """Each kind of mistake is refused with the key that holds it."""
    body = plan_body()
    change(body)  # type: ignore[operator]
    with pytest.raises(PlanError) as err:
        parse_plan(body, file="x.toml", tree=org_tree, taxonomy=taxonomy)
    assert err.value.key == key
    assert str(err.value).startswith(f"x.toml: {key}: ")


def test_a_bad_plan_file_stops_start_up_with_one_line(tmp_path: Path) -> None:
    """`dispatchd check-config` with a broken plan file exits 2 with one line naming the file and key."""
    plans = tmp_path / "plans"
    plans.mkdir()
    text = (PLANS / "10-mass-incident-wage.toml").read_text(encoding="utf-8")
    (plans / "broken.toml").write_text(text.replace("count = 1", "count = 0", 1), encoding="utf-8")
    env = {"DISPATCHD_PATHS_PLANS": str(plans), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "dispatchd.cli", "check-config"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    assert "broken.toml" in lines[0] and "levels.IV.forces[0].count" in lines[0]


def test_triggers_match_cases_and_warnings(org_tree: OrgTree, taxonomy: Taxonomy) -> None:
    """Category (with sub-categories), priority, reports and place decide; warnings match by event type or code."""
    plan = parse_plan(plan_body(), tree=org_tree, taxonomy=taxonomy)
    places = (*reversed(org_tree.ancestors(GRID)), GRID)
    facts = CaseFacts("incident.stability.wage_claim", "P1", 1, places)
    assert matches(plan, facts)
    assert not matches(plan, CaseFacts("incident.stability.wage_claim", "P3", 1, places))
    assert not matches(plan, CaseFacts("hazard.fire", "P1", 1, places))
    other = (*reversed(org_tree.ancestors("330381002001G001")), "330381002001G001")
    assert not matches(plan, CaseFacts("incident.stability.wage_claim", "P1", 1, other))  # trigger.units: TOWN only
    typhoon = {p.code: p for p in load_plans(PLANS, org_tree, taxonomy)}["typhoon-flood"]
    assert matches_warning(typhoon, "台风", None) and matches_warning(typhoon, "Gale", "11B01")
    assert not matches_warning(typhoon, "大雾", "11B14")


def test_warning_areas_find_their_grids(org_tree: OrgTree) -> None:
    """A polygon inside one grid covers it; a circle around a grid's centre covers it and no far grid."""
    boundary = shapely.Polygon(org_tree.get(GRID).boundary)
    inner = boundary.buffer(-0.0005)
    ring = [(float(x), float(y)) for x, y in inner.exterior.coords]
    assert covered_grids(org_tree, [ring], []) == [GRID]
    c = boundary.centroid
    near = covered_grids(org_tree, [], [Circle(float(c.y), float(c.x), 0.05)])
    assert near == [GRID]
    assert all(g.startswith(TOWN) for g in covered_grids(org_tree, [], [Circle(float(c.y), float(c.x), 0.5)]))


def test_cap_documents_of_real_feeds_parse() -> None:
    """Every real CAP document kept in the shared test data parses: events, polygons, circles, references."""
    found = sorted((SHARED / "testdata" / "cap").glob("*.xml"))
    if not found:
        pytest.skip("shared CAP test data not present")
    parsed = {p.name: parse(p.read_bytes()) for p in found}
    assert parsed["cwa-tw-heavy-rain-4-cancel.xml"].msg_type == "Cancel"
    assert parsed["cwa-tw-heavy-rain-2-update.xml"].references[0][1].endswith("221405001")
    assert len(parsed["cwb-tw-typhoon-bailu-sea-warning.xml"].polygons) == 2
    assert "typhoon" in parsed["cwb-tw-typhoon-bailu-sea-warning.xml"].description.lower() or parsed["cwb-tw-typhoon-bailu-sea-warning.xml"].description
    assert parsed["oasis-example-3-earthquake-update.xml"].circles


def test_our_cap_file_and_hostile_xml(org_tree: OrgTree) -> None:
    """Our CAP 1.2 test document parses with its GB/T 35965.1 code and colour; DTDs and entities are refused."""
    alert = parse(cap_document(org_tree))
    assert alert.event == "台风" and alert.event_codes == ("11B01",) and alert.severity == "Severe"
    assert alert.colour == "Severe" and len(alert.polygons) == 1
    bomb = b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x "xx">]><alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">&x;</alert>'
    with pytest.raises(CapError) as err:
        parse(bomb)
    assert err.value.field == "document"
    with pytest.raises(CapError):
        parse(b"<rss/>")


def test_reasons_read_in_chinese_first(org_tree: OrgTree, taxonomy: Taxonomy) -> None:
    """The reasons a plan is refused for have Chinese wording (the API answers zh-CN first)."""
    body = plan_body()
    body["levels"]["IV"]["forces"][0]["count"] = 0
    with pytest.raises(PlanError) as err:
        parse_plan(body, tree=org_tree, taxonomy=taxonomy)
    assert reason_zh(err.value.reason) == "应为整数，范围 1–50"
    assert reason_zh("unknown key; allowed: a, b") == "未知的键，可用：a, b"
