"""The grid worker's side of the loop: verification tasks (核查) answered with notes and photos."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from dispatchd.domain.orgs import OrgTree
from tests.channels.reports.helpers import GRID, OTHER_GRID, TOWN, form, gps_bytes, jpeg, report_body, submit
from tests.conftest import Account, UserFactory
from tests.incidents.helpers import JUSTICE, act

GRID_2 = "330381001001G002"  # another grid of the same community


async def handled_case(
    client: TestClient[Any, Any], make_user: UserFactory, tree: OrgTree, reporter: Account
) -> dict[str, Any]:
    """A dispute reported by ``reporter`` in GRID, dispatched to the township's justice office and fed back."""
    officer = await make_user("duty_officer", TOWN)
    handler = await make_user("department_handler", TOWN, department=JUSTICE)
    _, answer = await submit(
        client, reporter, report_body(tree, category="incident.dispute.neighbour", description="邻里纠纷")
    )
    case = await (
        await client.get(f"/api/v1/incidents/{answer['incident_id']}", headers=officer.headers)
    ).json()
    case = await act(client, officer, case, "accept")
    case = await act(client, officer, case, "dispatch", department=JUSTICE)
    case = await act(client, handler, case, "start")
    case = await act(
        client, handler, case, "feedback", note="已调解，双方和解", photos=["/api/v1/media/" + "0" * 64]
    )
    assert case["state"] == "fed_back"
    return case


async def test_grid_worker_sees_and_verifies_a_case_handled_in_the_grid(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """The grid's worker finds the fed-back case among their tasks with the feedback, and verifies it with a photo."""
    reporter = await make_user("grid_worker", GRID)
    case = await handled_case(client, make_user, org_tree, reporter)
    checker = await make_user("grid_worker", GRID)  # the grid's other worker, not the reporter
    tasks = await (await client.get("/api/v1/reports/tasks", headers=checker.headers)).json()
    (task,) = tasks["items"]
    assert task["id"] == case["id"] and task["step"]["code"] == "verify"
    assert task["feedback"][0]["note"] == "已调解，双方和解" and task["feedback"][0]["department"] == JUSTICE

    photo = jpeg()
    resp = await client.post(
        f"/api/v1/reports/tasks/{case['id']}/verify",
        data=form(
            {"version": case["version"], "note": "现场核实，已和解"},
            [("v.jpg", photo, "image/jpeg")],
            part="answer",
        ),
        headers=checker.headers,
    )
    after = await resp.json()
    assert resp.status == 200, after
    assert after["state"] == "verified" and after["answer"]["action"] == "verify"
    event = after["timeline"][-1]
    assert (event["action"], event["actor"], event["note"]) == (
        "verify",
        checker.user.username,
        "现场核实，已和解",
    )
    (url,) = event["data"]["photos"]
    assert (await (await client.get(url, headers=checker.headers)).read()) == photo
    officer = await make_user("duty_officer", TOWN)
    seen = await (await client.get(url, headers=officer.headers)).read()
    assert gps_bytes() not in seen
    assert (await (await client.get("/api/v1/reports/tasks", headers=checker.headers)).json())["items"] == []


async def test_reopen_needs_a_reason_and_sends_the_case_back(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Reopening without a reason is refused; with one the case goes back to dispatched."""
    reporter = await make_user("grid_worker", GRID)
    case = await handled_case(client, make_user, org_tree, reporter)
    url = f"/api/v1/reports/tasks/{case['id']}/reopen"
    resp = await client.post(
        url, json={"version": case["version"]}, headers={**reporter.headers, "Accept-Language": "en"}
    )
    assert resp.status == 422 and "reason" in (await resp.json())["error"]["message"]
    resp = await client.post(
        url, json={"version": case["version"], "reason": "双方仍在争吵"}, headers=reporter.headers
    )
    after = await resp.json()
    assert resp.status == 200 and after["state"] == "dispatched"
    # A retry of the same answer finds the case moved on: 409 with the current case.
    resp = await client.post(
        url, json={"version": case["version"], "reason": "双方仍在争吵"}, headers=reporter.headers
    )
    assert resp.status == 409 and (await resp.json())["error"]["incident"]["state"] == "dispatched"


async def test_workers_elsewhere_cannot_verify(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """A worker of another grid neither sees the task nor may answer it; a bad photo leaves the case as it was."""
    reporter = await make_user("grid_worker", GRID)
    case = await handled_case(client, make_user, org_tree, reporter)
    elsewhere = await make_user("grid_worker", OTHER_GRID)
    assert (await (await client.get("/api/v1/reports/tasks", headers=elsewhere.headers)).json())[
        "items"
    ] == []
    resp = await client.post(
        f"/api/v1/reports/tasks/{case['id']}/verify",
        json={"version": case["version"]},
        headers=elsewhere.headers,
    )
    assert resp.status == 404
    neighbour = await make_user(
        "grid_worker", GRID_2
    )  # same township, other grid: sees nothing to check either
    resp = await client.post(
        f"/api/v1/reports/tasks/{case['id']}/verify",
        json={"version": case["version"]},
        headers=neighbour.headers,
    )
    assert resp.status in (403, 404)
    resp = await client.post(
        f"/api/v1/reports/tasks/{case['id']}/verify",
        data=form(
            {"version": case["version"]},
            [("v.jpg", b"not a picture at all, just text", "image/jpeg")],
            part="answer",
        ),
        headers=reporter.headers,
    )
    assert resp.status == 415
    officer = await make_user("duty_officer", TOWN)
    still = await (await client.get(f"/api/v1/incidents/{case['id']}", headers=officer.headers)).json()
    assert still["state"] == "fed_back" and still["version"] == case["version"]
