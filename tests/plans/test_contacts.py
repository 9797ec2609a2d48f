"""Contacts of the people a plan may notify, as an admin keeps them: the jurisdiction's people listed
with the mobile masked and the deputy by name, searched and paged; a change names only what it
changes (setting a deputy keeps the mobile; null clears it); only admins, only their jurisdiction;
the number is never logged."""

from __future__ import annotations

from typing import Any

from structlog.testing import capture_logs

from tests.conftest import AppFactory, UserFactory
from tests.plans.helpers import COUNTY, TOWN

OTHER_TOWN = "330381002"


async def test_admin_lists_searches_and_pages_the_people_of_the_jurisdiction(
    make_client: AppFactory, make_user: UserFactory
) -> None:
    """A township admin sees the township's people (not the county's or another township's), each
    with role, unit by name, masked mobile and deputy by name; q narrows by name; pages follow next_after."""
    client = await make_client()
    admin = await make_user("admin", TOWN, username="town-admin")
    leader = await make_user("leader", TOWN, username="王镇长")
    officer = await make_user("duty_officer", TOWN, username="李值班")
    await make_user("leader", COUNTY, username="county-leader")
    await make_user("leader", OTHER_TOWN, username="other-leader")
    r = await client.put(
        f"/api/v1/plan-contacts/{leader.user.id}",
        json={"mobile": "13800138000", "deputy_user_id": officer.user.id},
        headers=admin.headers,
    )
    assert r.status == 200, await r.text()

    r = await client.get("/api/v1/plan-contacts", headers=admin.headers)
    assert r.status == 200
    body = await r.json()
    names = [c["username"] for c in body["contacts"]]
    assert names == ["town-admin", "王镇长", "李值班"] and body["next_after"] is None
    mine = next(c for c in body["contacts"] if c["user_id"] == leader.user.id)
    assert mine["mobile"] == "138****8000" and mine["deputy_name"] == "李值班" and mine["role"] == "leader"
    assert mine["org"] == TOWN and mine["org_name"] and mine["org_name"] != TOWN
    assert "13800138000" not in await r.text()

    r = await client.get("/api/v1/plan-contacts", params={"q": "镇长"}, headers=admin.headers)
    assert [c["username"] for c in (await r.json())["contacts"]] == ["王镇长"]
    r = await client.get("/api/v1/plan-contacts", params={"q": "%"}, headers=admin.headers)
    assert (await r.json())["contacts"] == []  # a wildcard is taken literally

    first = await (await client.get("/api/v1/plan-contacts", params={"limit": "2"}, headers=admin.headers)).json()
    assert len(first["contacts"]) == 2 and first["next_after"] == first["contacts"][-1]["user_id"]
    rest = await (
        await client.get("/api/v1/plan-contacts", params={"limit": "2", "after": str(first["next_after"])}, headers=admin.headers)
    ).json()
    assert [c["username"] for c in rest["contacts"]] == ["李值班"] and rest["next_after"] is None


async def test_a_change_names_only_what_it_changes(make_client: AppFactory, make_user: UserFactory) -> None:
    """Setting the deputy keeps the mobile on record; an explicit null clears the mobile and keeps the
    deputy; the number is in no log line."""
    client = await make_client()
    admin = await make_user("admin", TOWN)
    leader = await make_user("leader", TOWN)
    deputy = await make_user("duty_officer", TOWN)
    path = f"/api/v1/plan-contacts/{leader.user.id}"
    with capture_logs() as logs:
        assert (await client.put(path, json={"mobile": "13800138000"}, headers=admin.headers)).status == 200
        r = await client.put(path, json={"deputy_user_id": deputy.user.id}, headers=admin.headers)
    assert (await r.json()) == {"user_id": leader.user.id, "mobile": "138****8000", "deputy_user_id": deputy.user.id}
    assert "13800138000" not in repr(logs)
    assert [e["changed"] for e in logs if e["event"] == "contact_set"] == [["mobile"], ["deputy_user_id"]]
    r = await client.put(path, json={"mobile": None}, headers=admin.headers)
    assert (await r.json()) == {"user_id": leader.user.id, "mobile": None, "deputy_user_id": deputy.user.id}
    r = await client.put(path, json={"mobile": "call me"}, headers=admin.headers)
    assert r.status == 422 and "mobile" in (await r.json())["error"]["fields"]


async def test_only_admins_and_only_their_jurisdiction(make_client: AppFactory, make_user: UserFactory) -> None:
    """A duty officer may neither list nor set contacts (403); an admin cannot set the contact of a
    person outside their unit (404, as if unknown)."""
    client = await make_client()
    admin = await make_user("admin", TOWN)
    officer = await make_user("duty_officer", COUNTY)
    stranger = await make_user("leader", OTHER_TOWN)
    r = await client.get("/api/v1/plan-contacts", headers=officer.headers)
    assert r.status == 403
    r = await client.put(f"/api/v1/plan-contacts/{stranger.user.id}", json={"mobile": "13800138000"}, headers=officer.headers)
    assert r.status == 403
    r = await client.put(f"/api/v1/plan-contacts/{stranger.user.id}", json={"mobile": "13800138000"}, headers=admin.headers)
    assert r.status == 404
    body: Any = await r.json()
    assert body["error"]["code"] == "not_found"
