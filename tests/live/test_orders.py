"""Orders pushed to squads: the contract, several instances, receipts, resends, alerts, reassignment."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from aiohttp import WSMsgType
from aiohttp.test_utils import TestClient

from dispatchd.channels.gps.slots import SINK
from dispatchd.clock import FakeClock
from dispatchd.domain.orgs import OrgTree
from dispatchd.live.protocol import CLOSE_NO_UNIT
from dispatchd.live.slots import ORDER_TIMERS
from tests.conftest import Account, AppFactory, UserFactory
from tests.live.helpers import (
    COUNTY,
    OTHER_TOWN,
    TOWN,
    RawWs,
    app_of,
    board_path,
    get_order,
    make_case,
    make_squad,
    order,
    place_unit,
)


class Squad:
    """A squad device on /ws/squad (aiohttp's client), keeping every message it got."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.seen: list[dict[str, Any]] = []
        self.hello: dict[str, Any] = {}

    @classmethod
    async def connect(cls, client: TestClient[Any, Any], member: Account) -> Squad:
        ws = await client.ws_connect(f"/ws/squad?token={member.token}")
        squad = cls(ws)
        squad.hello = await squad.next("hello")
        return squad

    async def next(
        self, kind: str, match: Callable[[dict[str, Any]], bool] = lambda m: True, within: float = 10.0
    ) -> dict[str, Any]:
        while True:
            msg = await self.ws.receive(timeout=within)
            if msg.type != WSMsgType.TEXT:
                raise AssertionError(f"connection ended ({msg.type}) waiting for {kind}")
            data: dict[str, Any] = json.loads(msg.data)
            self.seen.append(data)
            if data["type"] == kind and match(data):
                return data

    async def send(self, **fields: Any) -> None:
        await self.ws.send_json(fields)

    async def answer(self, kind: str, order_id: int, **fields: Any) -> dict[str, Any]:
        await self.send(type=kind, order_id=order_id, **fields)
        return await self.next("ok", lambda m: m["for"] == kind)

    async def sync(self) -> list[dict[str, Any]]:
        """Everything the server queued before our ping (it answers messages in order)."""
        start = len(self.seen)
        await self.send(type="ping")
        await self.next("pong")
        return self.seen[start:-1]

    def cut(self) -> None:
        self.ws._writer.transport.abort()


def orders_in(messages: list[dict[str, Any]]) -> list[int]:
    return [m["order"]["id"] for m in messages if m["type"] == "order"]


async def setup_case(
    client: TestClient[Any, Any], make_user: UserFactory, tree: OrgTree, *, members: int = 1
) -> tuple[Account, dict[str, Any], list[Account], dict[str, Any]]:
    officer = await make_user("duty_officer", COUNTY)
    unit, crew = await make_squad(client, officer, make_user, members=members)
    case = await make_case(client, officer, tree)
    return officer, unit, crew, case


async def test_order_reaches_a_squad_on_the_other_instance_and_is_not_sent_again_after_ack(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """An order made on one instance reaches a squad on another, is acked, and is not sent again after a reconnect."""
    a = await make_client()
    b = await make_client()
    officer, unit, (member,), case = await setup_case(a, make_user, org_tree)
    squad = await Squad.connect(b, member)
    assert [u["id"] for u in squad.hello["units"]] == [unit["id"]]
    created = await order(a, officer, case["id"], unit["id"])
    assert created["state"] == "pending" and created["delivered_at"] is None and created["id"] > 0
    pushed = await squad.next("order")
    assert pushed["order"]["id"] == created["id"]
    assert pushed["order"]["incident"]["number"] == case["number"]
    assert pushed["order"]["place"]["location"] == case["location"]
    ok = await squad.answer("ack", created["id"])
    assert ok["state"] == "delivered"
    seen = await get_order(a, officer, created["id"])
    assert seen["state"] == "delivered" and seen["delivered_at"] is not None
    assert [r["username"] for r in seen["receipts"]] == [member.user.username]
    assert seen["receipts"][0]["instance"] == app_of(b).instance_id != app_of(a).instance_id
    squad.cut()
    for instance in (b, a):
        again = await Squad.connect(instance, member)
        assert orders_in(await again.sync()) == []
        again.cut()
    final = await Squad.connect(b, member)
    ok = await final.answer("accept", created["id"])
    assert ok["state"] == "accepted"
    assert (await get_order(a, officer, created["id"]))["state"] == "accepted"
    unit_now = await (await a.get(f"/api/v1/units/{unit['id']}", headers=officer.headers)).json()
    assert unit_now["status"] == "dispatched"


async def test_an_order_without_receipt_is_sent_again_until_acknowledged(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree, clock: FakeClock
) -> None:
    """Without a receipt the order is pushed again after resend_after; after the ack, never again."""
    c = await make_client(live_timer_interval=0.05)
    officer, unit, (member,), case = await setup_case(c, make_user, org_tree)
    squad = await Squad.connect(c, member)
    created = await order(c, officer, case["id"], unit["id"])
    first = await squad.next("order")
    assert first["order"]["sends"] == 1
    clock.advance(16)
    again = await squad.next("order", lambda m: m["order"]["sends"] == 2)
    assert again["order"]["id"] == created["id"]
    await squad.answer("ack", created["id"])
    clock.advance(16)
    await app_of(c)[ORDER_TIMERS].fire_due()
    seen = await get_order(c, officer, created["id"])
    assert seen["sends"] == 2 and seen["resend_at"] is None
    assert [e["action"] for e in seen["timeline"]] == ["created", "resent", "delivered"]
    squad.cut()


async def test_unacknowledged_orders_are_sent_again_on_reconnect(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Each reconnect re-sends the open orders this member has not acknowledged, and only those."""
    c = await make_client()
    officer, unit, (first, second), case = await setup_case(c, make_user, org_tree, members=2)
    created = await order(c, officer, case["id"], unit["id"])
    squad = await Squad.connect(c, first)
    assert orders_in(await squad.sync()) == [created["id"]]
    squad.cut()
    squad = await Squad.connect(c, first)
    assert orders_in(await squad.sync()) == [created["id"]]
    await squad.answer("ack", created["id"])
    squad.cut()
    squad = await Squad.connect(c, first)
    assert orders_in(await squad.sync()) == []
    other = await Squad.connect(c, second)
    assert orders_in(await other.sync()) == [created["id"]]
    for s in (squad, other):
        s.cut()


async def test_not_accepted_in_time_alerts_the_board_with_the_next_nearest_unit(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree, clock: FakeClock
) -> None:
    """Not accepted in 60 s: the board gets an alert offering the nearest available untried unit."""
    c = await make_client(live_timer_interval=0.05)
    officer, unit, _crew, case = await setup_case(c, make_user, org_tree)
    near, _ = await make_squad(c, officer, make_user, name="二组", members=0)
    far, _ = await make_squad(c, officer, make_user, name="三组", members=0)
    lat, lon = case["location"]["lat"], case["location"]["lon"]
    for u, d in ((unit, 0.001), (near, 0.01), (far, 0.05)):
        await place_unit(c, u["id"], lat + d, lon, clock.now())
    board = await RawWs.connect(c.port, board_path(officer))
    await board.receive()
    created = await order(c, officer, case["id"], unit["id"])
    clock.advance(61)
    got = await board.receive_until(lambda m: any(x.get("topic") == "alert" for x in m))
    alert = got[-1]["data"]
    assert alert["kind"] == "order_not_accepted" and alert["order_id"] == created["id"]
    assert alert["suggestion"]["unit_id"] == near["id"] and alert["reassigned_to"] is None
    seen = await get_order(c, officer, created["id"])
    assert seen["state"] == "pending" and seen["overdue"] is True
    listed = await (await c.get("/api/v1/alerts", headers=officer.headers)).json()
    assert [a["id"] for a in listed["alerts"]] == [alert["id"]]
    board.cut()


async def test_automatic_reassignment_gives_the_case_to_the_next_nearest_unit(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree, clock: FakeClock
) -> None:
    """With auto_reassign an unaccepted order goes to the nearest available unit, whose device gets it."""
    c = await make_client(live_timer_interval=0.05, live_auto_reassign=True)
    officer, unit, _crew, case = await setup_case(c, make_user, org_tree)
    near, (near_member,) = await make_squad(c, officer, make_user, name="二组")
    lat, lon = case["location"]["lat"], case["location"]["lon"]
    await place_unit(c, unit["id"], lat, lon + 0.001, clock.now())
    await place_unit(c, near["id"], lat, lon + 0.01, clock.now())
    squad = await Squad.connect(c, near_member)
    created = await order(c, officer, case["id"], unit["id"])
    clock.advance(61)
    pushed = await squad.next("order")
    new_id = pushed["order"]["id"]
    assert pushed["order"]["incident_id"] == case["id"] and pushed["order"]["replaces"] == created["id"]
    old = await get_order(c, officer, created["id"])
    assert old["state"] == "reassigned" and old["replaced_by"] == new_id
    first_unit = await (await c.get(f"/api/v1/units/{unit['id']}", headers=officer.headers)).json()
    assert first_unit["status"] == "available"
    squad.cut()


async def test_decline_frees_the_unit_and_alerts_the_officer(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree, clock: FakeClock
) -> None:
    """A decline is final, frees the unit and raises an alert with the next nearest unit."""
    c = await make_client()
    officer, unit, (member,), case = await setup_case(c, make_user, org_tree)
    near, _ = await make_squad(c, officer, make_user, name="二组", members=0)
    lat, lon = case["location"]["lat"], case["location"]["lon"]
    await place_unit(c, near["id"], lat + 0.01, lon, clock.now())
    created = await order(c, officer, case["id"], unit["id"])
    squad = await Squad.connect(c, member)
    ok = await squad.answer("decline", created["id"], reason="车辆故障")
    assert ok["state"] == "declined" and ok["order"]["decline_reason"] == "车辆故障"
    await squad.send(type="accept", order_id=created["id"])
    refused = await squad.next("error")
    assert refused["code"] == "illegal_order_move" and refused["status"] == 409 and refused["for"] == "accept"
    alerts = (await (await c.get("/api/v1/alerts", headers=officer.headers)).json())["alerts"]
    assert alerts[0]["kind"] == "order_declined" and alerts[0]["suggestion"]["unit_id"] == near["id"]
    unit_now = await (await c.get(f"/api/v1/units/{unit['id']}", headers=officer.headers)).json()
    assert unit_now["status"] == "available"
    r = await c.post(f"/api/v1/orders/{created['id']}/reassign", json={}, headers=officer.headers)
    assert r.status == 409  # a declined order is not reassigned: order the next unit instead
    second = await order(c, officer, case["id"], near["id"])
    assert second["unit_id"] == near["id"]
    r = await c.post(f"/api/v1/alerts/{alerts[0]['id']}/resolve", json={"note": "已改派二组"}, headers=officer.headers)
    assert r.status == 200 and (await r.json())["resolved_at"] is not None
    squad.cut()


async def test_reassign_by_hand_and_cancel(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree, clock: FakeClock
) -> None:
    """The officer reassigns and cancels; each unit's device is told with order and order_update."""
    c = await make_client()
    officer, unit, (member,), case = await setup_case(c, make_user, org_tree)
    near, (near_member,) = await make_squad(c, officer, make_user, name="二组")
    lat, lon = case["location"]["lat"], case["location"]["lon"]
    await place_unit(c, near["id"], lat + 0.01, lon, clock.now())
    first = await Squad.connect(c, member)
    second = await Squad.connect(c, near_member)
    created = await order(c, officer, case["id"], unit["id"])
    await first.next("order")
    r = await c.post(f"/api/v1/orders/{created['id']}/reassign", json={}, headers=officer.headers)
    assert r.status == 201
    new = await r.json()
    assert new["unit_id"] == near["id"] and new["replaces"] == created["id"]
    update = await first.next("order_update", lambda m: m["order"]["id"] == created["id"])
    assert update["order"]["state"] == "reassigned"
    assert (await second.next("order"))["order"]["id"] == new["id"]
    r = await c.post(f"/api/v1/orders/{new['id']}/cancel", headers=officer.headers)
    assert r.status == 200 and (await r.json())["state"] == "cancelled"
    cancelled = await second.next("order_update", lambda m: m["order"]["id"] == new["id"])
    assert cancelled["order"]["state"] == "cancelled"
    r = await c.post(f"/api/v1/orders/{new['id']}/accept", headers=near_member.headers)
    assert r.status == 409 and (await r.json())["error"]["code"] == "illegal_order_move"
    for s in (first, second):
        s.cut()


async def test_status_and_position_from_the_device(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Device status and geolocation move the unit; returning completes the order; officer status reaches the device."""
    c = await make_client()
    officer, unit, (member,), case = await setup_case(c, make_user, org_tree)
    created = await order(c, officer, case["id"], unit["id"])
    squad = await Squad.connect(c, member)
    await squad.answer("accept", created["id"])
    for status in ("en_route", "on_scene"):
        await squad.send(type="status", status=status)
        ok = await squad.next("ok", lambda m: m["for"] == "status")
        assert ok["status"] == status
    lat, lon = case["location"]["lat"], case["location"]["lon"]
    await squad.send(type="position", lat=lat, lon=lon, accuracy=8.5, speed=12)
    ok = await squad.next("ok", lambda m: m["for"] == "position")
    assert ok["verdicts"] == {str(unit["id"]): "live"}
    await app_of(c)[SINK].flush_pending()
    seen = await (await c.get(f"/api/v1/units/{unit['id']}", headers=officer.headers)).json()
    assert seen["status"] == "on_scene" and seen["position"]["lat"] == lat and seen["position"]["source"] == "squad"
    await squad.send(type="status", status="returning")
    await squad.next("ok", lambda m: m["for"] == "status")
    assert (await get_order(c, officer, created["id"]))["state"] == "completed"
    r = await c.post(f"/api/v1/units/{unit['id']}/status", json={"status": "available"}, headers=officer.headers)
    assert r.status == 200, await r.text()
    told = await squad.next("unit_status", lambda m: m["status"] == "available")
    assert told["unit_id"] == unit["id"]
    squad.cut()


async def test_bad_device_messages_and_strangers(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Garbage gets an error and the socket stays; others' orders are not found; a non-member gets 4403."""
    c = await make_client()
    officer, _unit, (member,), case = await setup_case(c, make_user, org_tree)
    other_unit, _ = await make_squad(c, officer, make_user, name="二组")
    created = await order(c, officer, case["id"], other_unit["id"])
    squad = await Squad.connect(c, member)
    await squad.ws.send_str("not json")
    assert (await squad.next("error"))["code"] == "invalid_json"
    await squad.send(type="teleport")
    assert (await squad.next("error"))["code"] == "unknown_type"
    await squad.send(type="ack")
    assert (await squad.next("error"))["code"] == "missing"
    await squad.send(type="ack", order_id=created["id"])
    refused = await squad.next("error")
    assert refused["code"] == "not_found" and refused["order_id"] == created["id"]
    await squad.send(type="status", status="teleporting")
    assert (await squad.next("error"))["code"] == "invalid"
    await squad.send(type="position", lat=123, lon=0)
    assert (await squad.next("error"))["code"] == "invalid"
    assert orders_in(await squad.sync()) == []
    nobody = await make_user("squad_member", TOWN)
    ws = await c.ws_connect(f"/ws/squad?token={nobody.token}")
    first = await ws.receive_json()
    assert first["type"] == "error" and first["code"] == "no_unit"
    closing = await ws.receive()
    assert closing.type == WSMsgType.CLOSE and closing.data == CLOSE_NO_UNIT
    squad.cut()


async def test_orders_api_refusals_and_jurisdiction(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Only officers order, only within their jurisdiction; bad bodies get 422, an off-duty unit 409."""
    c = await make_client()
    officer, unit, (member,), case = await setup_case(c, make_user, org_tree)
    stranger = await make_user("duty_officer", OTHER_TOWN)
    r = await c.post(
        "/api/v1/orders", json={"incident_id": case["id"], "unit_id": unit["id"]}, headers=member.headers
    )
    assert r.status == 403
    r = await c.post("/api/v1/orders", json={"incident_id": "x"}, headers=officer.headers)
    assert r.status == 422 and set((await r.json())["error"]["fields"]) == {"incident_id", "unit_id"}
    await order(c, stranger, case["id"], unit["id"], expect=404)
    created = await order(c, officer, case["id"], unit["id"])
    assert (await c.get(f"/api/v1/orders/{created['id']}", headers=stranger.headers)).status == 404
    mine = await (await c.get("/api/v1/orders?open=true", headers=member.headers)).json()
    assert [o["id"] for o in mine["orders"]] == [created["id"]]
    assert (await c.get(f"/api/v1/orders/{created['id']}", headers=member.headers)).status == 200
    r = await c.post(f"/api/v1/units/{unit['id']}/status", json={"status": "off_duty"}, headers=officer.headers)
    assert r.status == 200
    other_case = await make_case(c, officer, org_tree)
    refused = await order(c, officer, other_case["id"], unit["id"], expect=409)
    assert refused["error"]["code"] == "unit_off_duty"


async def test_board_snapshot_lists_open_orders_and_alerts(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """The snapshot's orders and alerts sections show the jurisdiction's open orders, not others'."""
    c = await make_client()
    officer, unit, _crew, case = await setup_case(c, make_user, org_tree)
    created = await order(c, officer, case["id"], unit["id"])
    stranger = await make_user("duty_officer", OTHER_TOWN)
    mine = await RawWs.connect(c.port, board_path(officer))
    theirs = await RawWs.connect(c.port, board_path(stranger))
    snap = await mine.receive()
    assert snap is not None and [o["id"] for o in snap["sections"]["orders"]] == [created["id"]]
    assert snap["sections"]["alerts"] == []
    other = await theirs.receive()
    assert other is not None and other["sections"]["orders"] == []
    for w in (mine, theirs):
        w.cut()


async def test_a_member_added_while_connected_gets_the_units_open_orders(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Joining a unit while connected brings a new hello and its open orders; leaving stops them."""
    c = await make_client()
    officer, unit, (member,), case = await setup_case(c, make_user, org_tree)
    second, _ = await make_squad(c, officer, make_user, name="二组", members=0)
    created = await order(c, officer, case["id"], second["id"])
    squad = await Squad.connect(c, member)
    assert orders_in(await squad.sync()) == []
    r = await c.post(f"/api/v1/units/{second['id']}/members", json={"username": member.user.username},
                     headers=officer.headers)
    assert r.status in (200, 201)
    hello = await squad.next("hello", lambda m: len(m["units"]) == 2)
    assert {u["id"] for u in hello["units"]} == {unit["id"], second["id"]}
    assert (await squad.next("order"))["order"]["id"] == created["id"]
    r = await c.delete(f"/api/v1/units/{second['id']}/members/{member.user.username}", headers=officer.headers)
    assert r.status in (200, 204), await r.text()
    hello = await squad.next("hello", lambda m: len(m["units"]) == 1)
    again = await order(c, officer, case["id"], second["id"])
    assert again["id"] not in orders_in(await squad.sync())
    squad.cut()


async def test_the_websockets_and_orders_are_documented(make_client: AppFactory) -> None:
    """AsyncAPI (public) and OpenAPI describe both websockets and the order routes."""
    c = await make_client()
    r = await c.get("/api/asyncapi.json")
    assert r.status == 200
    doc = await r.json()
    assert {"board", "squad"} == set(doc["channels"])
    assert {"order", "ack", "accept", "decline"} <= set(doc["channels"]["squad"]["messages"])
    paths = (await (await c.get("/api/openapi.json")).json())["paths"]
    assert {"/api/v1/orders", "/api/v1/orders/{id}", "/ws/board", "/ws/squad", "/api/v1/alerts"} <= set(paths)
    assert {"incident_id", "unit_id", "instructions"} <= set(
        paths["/api/v1/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    )


async def test_officer_setting_returning_completes_accepted_orders(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """An officer who sets the unit to returning (for a squad without signal) completes its accepted order."""
    c = await make_client()
    officer, unit, (member,), case = await setup_case(c, make_user, org_tree)
    created = await order(c, officer, case["id"], unit["id"])
    squad = await Squad.connect(c, member)
    await squad.answer("accept", created["id"])
    assert (await get_order(c, officer, created["id"]))["state"] == "accepted"
    r = await c.post(f"/api/v1/units/{unit['id']}/status", json={"status": "returning"}, headers=officer.headers)
    assert r.status == 200, await r.text()
    assert (await get_order(c, officer, created["id"]))["state"] == "completed"
    squad.cut()
