"""A plan's notice by phone: through the hotline's trunk (a trunk with phones behind it on loopback,
the carrier being outside the system), the person hears the notice spoken and acknowledges it with
key 1; a person who does not answer is recorded as such; without a trunk the call is said to be
unavailable."""

from __future__ import annotations

from typing import Any

from aiohttp.test_utils import TestClient

from dispatchd.domain.orgs import OrgTree
from dispatchd.plans import service
from tests.channels.hotline.voice.conftest import until
from tests.channels.hotline.voice.peers import PhoneTrunk
from tests.conftest import Account, AppFactory, UserFactory
from tests.live.helpers import app_of, eventually
from tests.plans.test_activation import _case, _people, _post_plan

LEADER_MOBILE = "13800138001"


async def _contact(client: TestClient[Any, Any], people: dict[str, Account], mobile: str) -> None:
    r = await client.put(
        f"/api/v1/plan-contacts/{people['leader'].user.id}", json={"mobile": mobile}, headers=people["admin"].headers
    )
    assert r.status == 200, await r.text()


async def _leader_notice(client: TestClient[Any, Any], people: dict[str, Account], activation: int, state: str) -> Any:
    ctx = app_of(client)

    async def reached() -> Any:
        a = await service.get_activation(ctx, activation, people["officer"].user)
        n = next(n for n in a["notices"] if n["user_id"] == people["leader"].user.id)
        return n if n["deliveries"]["call"]["state"] == state else None

    return await eventually(reached)


async def test_the_leader_hears_the_notice_and_acknowledges_it_with_key_1(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Activating the plan rings the leader's mobile through the trunk; the notice is spoken, key 1
    acknowledges it (as the leader, 叫应), the hotline confirms and hangs up; the call out is a
    'notice' call among the case's calls, acknowledged, and the notice shows the call delivered."""
    trunk = PhoneTrunk({LEADER_MOBILE: "answer"})
    port = await trunk.start()
    try:
        client = await make_client(
            video_host_addresses="127.0.0.1",
            voice_trunk=f"127.0.0.1:{port}",
            plans_propose_interval=3600,
            plans_timer_interval=0.05,
        )
        people = await _people(make_user)
        await _contact(client, people, LEADER_MOBILE)
        plan = await _post_plan(client, people["admin"])
        case = await _case(client, people["officer"], org_tree)
        r = await client.post(
            f"/api/v1/incidents/{case['id']}/plan", json={"plan": plan["id"]}, headers=people["officer"].headers
        )
        act = await r.json()
        assert r.status == 201, act
        await until(lambda: trunk.rung == [LEADER_MOBILE], limit=20)
        phone = trunk.call_to(LEADER_MOBILE)
        assert phone is not None
        await until(phone.answered.is_set)
        await until(lambda: len(phone.heard()) > 8000)  # a second of the spoken notice
        await trunk.press(LEADER_MOBILE, "1")
        await until(phone.ended.is_set, limit=30)
        notice = await _leader_notice(client, people, act["id"], "delivered")
        assert notice["deliveries"]["call"]["result"] == "acknowledged"
        assert notice["state"] == "acknowledged" and notice["acknowledged_by"] == people["leader"].user.id
        calls = await (
            await client.get(f"/api/v1/hotline/callouts?incident_id={case['id']}", headers=people["officer"].headers)
        ).json()
        [made] = [c for c in calls["callouts"] if c["kind"] == "notice"]
        assert made["number"] == LEADER_MOBILE and made["result"] == "acknowledged"
        assert made["callee_id"] == people["leader"].user.id
    finally:
        await trunk.close()


async def test_a_leader_who_does_not_answer_is_recorded_and_nothing_is_acknowledged(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """A mobile that rings out: the call is recorded as not answered, the notice stays open for
    the console and for escalation to the deputy."""
    trunk = PhoneTrunk({LEADER_MOBILE: "ring"})
    port = await trunk.start()
    try:
        client = await make_client(
            video_host_addresses="127.0.0.1",
            voice_trunk=f"127.0.0.1:{port}",
            voice_ring_timeout=5,
            plans_propose_interval=3600,
            plans_timer_interval=0.05,
        )
        people = await _people(make_user)
        await _contact(client, people, LEADER_MOBILE)
        plan = await _post_plan(client, people["admin"])
        case = await _case(client, people["officer"], org_tree)
        r = await client.post(
            f"/api/v1/incidents/{case['id']}/plan", json={"plan": plan["id"]}, headers=people["officer"].headers
        )
        act = await r.json()
        assert r.status == 201, act
        notice = await _leader_notice(client, people, act["id"], "failed")
        assert notice["deliveries"]["call"]["result"] == "no_answer"
        assert notice["state"] in ("sent", "delivered") and notice["acknowledged_at"] is None
    finally:
        await trunk.close()
