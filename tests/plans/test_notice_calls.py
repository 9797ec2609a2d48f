"""A plan's notice by phone: through the hotline's trunk (a trunk with phones behind it on loopback,
the carrier being outside the system), the person hears the notice spoken and acknowledges it with
key 1; a person who does not answer is recorded as such; without a trunk the call is said to be
unavailable."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp.test_utils import TestClient

from dispatchd.clock import FakeClock
from dispatchd.domain.orgs import OrgTree
from dispatchd.plans import notices, service
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


async def _activate(
    make_client: AppFactory,
    make_user: UserFactory,
    org_tree: OrgTree,
    trunk_port: int,
    mobile: str | None,
    **settings: Any,
) -> tuple[TestClient[Any, Any], dict[str, Account], dict[str, Any]]:
    """An instance whose calls out go to the trunk on ``trunk_port``; the leader's mobile on record
    (if given); the test plan started by hand on a matching case. (client, people, activation)."""
    client = await make_client(
        **{
            "video_host_addresses": "127.0.0.1",
            "voice_trunk": f"127.0.0.1:{trunk_port}",
            "plans_propose_interval": 3600,
            "plans_timer_interval": 0.05,
            **settings,
        }
    )
    people = await _people(make_user)
    if mobile is not None:
        await _contact(client, people, mobile)
    plan = await _post_plan(client, people["admin"])
    case = await _case(client, people["officer"], org_tree)
    r = await client.post(
        f"/api/v1/incidents/{case['id']}/plan", json={"plan": plan["id"]}, headers=people["officer"].headers
    )
    act: dict[str, Any] = await r.json()
    assert r.status == 201, act
    return client, people, act


async def test_the_leader_hears_the_notice_and_acknowledges_it_with_key_1(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Activating the plan rings the leader's mobile through the trunk; the notice is spoken, key 1
    acknowledges it (as the leader, 叫应), the hotline confirms and hangs up; the call out is a
    'notice' call among the case's calls, acknowledged, and the notice shows the call delivered."""
    trunk = PhoneTrunk({LEADER_MOBILE: "answer"})
    port = await trunk.start()
    try:
        client, people, act = await _activate(make_client, make_user, org_tree, port, LEADER_MOBILE)
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
            await client.get(f"/api/v1/hotline/callouts?incident_id={act['incident_id']}", headers=people["officer"].headers)
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
        client, people, act = await _activate(make_client, make_user, org_tree, port, LEADER_MOBILE, voice_ring_timeout=5)
        notice = await _leader_notice(client, people, act["id"], "failed")
        assert notice["deliveries"]["call"]["result"] == "no_answer"
        assert notice["state"] in ("sent", "delivered") and notice["acknowledged_at"] is None
    finally:
        await trunk.close()


async def test_a_person_without_a_mobile_is_not_rung_and_the_notice_says_why(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """No mobile on record for the leader: nothing is dialled, the notice's call is failed with
    "no mobile number on record", and the notice stays open for the console."""
    trunk = PhoneTrunk({})
    port = await trunk.start()
    try:
        client, people, act = await _activate(make_client, make_user, org_tree, port, None)
        notice = await _leader_notice(client, people, act["id"], "failed")
        assert "no mobile number" in notice["deliveries"]["call"]["detail"]
        assert trunk.rung == [] and notice["acknowledged_at"] is None
    finally:
        await trunk.close()


async def test_a_call_cut_off_by_a_stopped_instance_is_rung_again(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree, clock: FakeClock
) -> None:
    """A notice left ``calling`` by an instance that stopped mid-call (no call of this instance
    rings it) is put back to pending once a call could not still be going on, and rung again; one
    that is younger than that is left alone."""
    trunk = PhoneTrunk({LEADER_MOBILE: "ring"})
    port = await trunk.start()
    try:
        client, people, act = await _activate(
            make_client, make_user, org_tree, port, None, plans_timer_interval=3600
        )
        ctx = app_of(client)
        notice = await _leader_notice(client, people, act["id"], "failed")  # no mobile yet
        await _contact(client, people, LEADER_MOBILE)
        cut_at = clock.now()
        async with ctx.pool.acquire() as conn:
            await conn.execute(
                "UPDATE plan_notices SET deliveries = jsonb_set(deliveries, '{call}', $2::jsonb) WHERE id = $1",
                notice["id"],
                {"state": "calling", "at": cut_at.isoformat()},  # the pool's codec writes it as JSON
            )
        calling: dict[int, Any] = {}
        clock.advance(notices.CALL_AT_MOST - timedelta(seconds=1))
        assert await notices.call_pending(ctx, calling) == 0  # it could still be ringing elsewhere
        clock.advance(timedelta(seconds=2))
        assert await notices.call_pending(ctx, calling) == 1
        await until(lambda: trunk.rung == [LEADER_MOBILE], limit=20)
        async with ctx.pool.acquire() as conn:
            actions = [
                r["action"]
                for r in await conn.fetch(
                    "SELECT action FROM audit_log WHERE entity = 'plan_notice' AND entity_id = $1 ORDER BY id",
                    str(notice["id"]),
                )
            ]
        assert actions[-2:] == ["call_interrupted", "calling"]
        for task in list(calling.values()):
            task.cancel()
    finally:
        await trunk.close()
