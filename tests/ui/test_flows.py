"""What the duty officer, the squad member and the grid worker do, in a real browser."""

from __future__ import annotations

import asyncio
import base64
import csv
import hashlib
import hmac
import io
import json
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser

from dispatchd.clock import FakeClock
from dispatchd.domain.orgs import OrgTree
from tests.conftest import COUNTY, Account, AppFactory, UserFactory
from tests.ui.conftest import (
    DESK,
    PHONE,
    TOWNSHIP,
    WALL,
    Browsing,
    create_case,
    eventually,
    grid_point,
    screenshot,
    wait_js,
)

pytestmark = pytest.mark.browser


# A real 8×8 JPEG (baseline, YCbCr), as a phone camera would hand it over.
JPEG = base64.b64decode(
    "/9j/4AAQSkZJRgABAQAAAQABAAD/2wBDAAgGBgcGBQgHBwcJCQgKDBQNDAsLDBkSEw8UHRofHh0aHBwgJC4nICIsIxwcKDcpLDAx"
    "NDQ0Hyc5PTgyPC4zNDL/2wBDAQkJCQwLDBgNDRgyIRwhMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIyMjIy"
    "MjIyMjIyMjL/wAARCAAIAAgDASIAAhEBAxEB/8QAHwAAAQUBAQEBAQEAAAAAAAAAAAECAwQFBgcICQoL/8QAtRAAAgEDAwIEAwUF"
    "BAQAAAF9AQIDAAQRBRIhMUEGE1FhByJxFDKBkaEII0KxwRVS0fAkM2JyggkKFhcYGRolJicoKSo0NTY3ODk6Q0RFRkdISUpTVFVW"
    "V1hZWmNkZWZnaGlqc3R1dnd4eXqDhIWGh4iJipKTlJWWl5iZmqKjpKWmp6ipqrKztLW2t7i5usLDxMXGx8jJytLT1NXW19jZ2uHi"
    "4+Tl5ufo6erx8vP09fb3+Pn6/8QAHwEAAwEBAQEBAQEBAQAAAAAAAAECAwQFBgcICQoL/8QAtREAAgECBAQDBAcFBAQAAQJ3AAEC"
    "AxEEBSExBhJBUQdhcRMiMoEIFEKRobHBCSMzUvAVYnLRChYkNOEl8RcYGRomJygpKjU2Nzg5OkNERUZHSElKU1RVVldYWVpjZGVm"
    "Z2hpanN0dXZ3eHl6goOEhYaHiImKkpOUlZaXmJmaoqOkpaanqKmqsrO0tba3uLm6wsPExcbHyMnK0tPU1dbX2Nna4uPk5ebn6Onq"
    "8vP09fb3+Pn6/9oADAMBAAIRAxEAPwD3+iiigD//2Q=="
)


async def test_board_shows_a_new_case_without_reload(
    browsing: Browsing, client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """A case created through the API appears on the live board — in its list and on the map — with no reload."""
    officer = await make_user("duty_officer", COUNTY)
    page, watch = await browsing.open_page("/board", token=officer.token, viewport=WALL)
    await page.wait_for_selector(".live[data-status='live']")
    await page.evaluate("window.__loaded_once = true")
    _, lat, lon = grid_point(org_tree)
    case = await create_case(client, officer, lat, lon)
    number = case["number"]
    await page.wait_for_selector(f"#list-to_accept li[data-id='{case['id']}']")
    assert number in await page.inner_text("#list-to_accept")
    await page.wait_for_selector(f".map-layer-cases [data-key='{case['id']}']")
    assert await page.evaluate("window.__loaded_once") is True  # the same page: no reload
    assert await page.inner_text("#c-to-accept") == "1"
    # Accepting it moves it off the list of cases to accept, still without a reload.
    r = await client.post(
        f"/api/v1/incidents/{case['id']}/actions/accept",
        json={"version": case["version"]},
        headers=officer.headers,
    )
    assert r.status == 200
    await wait_js(page, f"!document.querySelector(\"#list-to_accept li[data-id='{case['id']}']\")")
    await wait_js(page, "document.querySelector('#c-to-accept').textContent === '0'")
    await screenshot(page, "board-live-case")
    watch.check()


async def test_board_recovers_after_the_connection_drops(
    browsing: Browsing, client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """When its websocket is cut, the board says so, reconnects by itself and shows what happened meanwhile."""
    officer = await make_user("duty_officer", COUNTY)
    page, watch = await browsing.open_page("/board", token=officer.token, viewport=WALL)
    await page.wait_for_selector(".live[data-status='live']")
    # The network goes away: the connection drops and cannot come back until the network does.
    await page.context.set_offline(True)
    await page.evaluate("window.dispatchdBoard.socket.ws.close(4000, 'cut')")
    await page.wait_for_selector(".live[data-status='reconnecting'], .live[data-status='offline']")
    _, lat, lon = grid_point(org_tree)
    case = await create_case(client, officer, lat, lon, description="断线期间的新事件")
    await screenshot(page, "board-reconnecting")
    await page.context.set_offline(False)
    await page.wait_for_selector(".live[data-status='live']", timeout=30000)
    await page.wait_for_selector(f"#list-to_accept li[data-id='{case['id']}']")
    watch.expect("ERR_INTERNET_DISCONNECTED")  # the browser's own report of the failed reconnects
    watch.check()


async def _squad_setup(client: TestClient[Any, Any], make_user: UserFactory) -> tuple[Account, Account, int]:
    officer = await make_user("duty_officer", COUNTY)
    member = await make_user("squad_member", TOWNSHIP, username="wanglei")
    r = await client.post(
        "/api/v1/units",
        json={"name": "安阳应急中队一组", "kind": "team", "org": TOWNSHIP},
        headers=officer.headers,
    )
    assert r.status == 201, await r.text()
    unit_id = int((await r.json())["id"])
    r = await client.post(
        f"/api/v1/units/{unit_id}/members", json={"username": "wanglei"}, headers=officer.headers
    )
    assert r.status in (200, 201), await r.text()
    return officer, member, unit_id


async def test_squad_receives_an_order_and_acknowledges_it(
    browsing: Browsing, client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """An order pushed to the unit shows on the member's phone, its receipt reaches the server, and the member accepts it."""
    officer, member, unit_id = await _squad_setup(client, make_user)
    page, watch = await browsing.open_page("/squad", token=member.token, viewport=PHONE, mobile=True, scale=2)
    await page.wait_for_selector(".live[data-status='live']")
    await wait_js(page, "document.querySelector('#unit-name')?.textContent === '安阳应急中队一组'")
    # Installable: the manifest is linked and the service worker controls /squad.
    assert await page.get_attribute("link[rel='manifest']", "href") == "/ui/squad/manifest.webmanifest"
    await wait_js(
        page, "navigator.serviceWorker.getRegistration('/squad').then((r) => Boolean(r && r.active))"
    )
    _, lat, lon = grid_point(org_tree)
    case = await create_case(client, officer, lat, lon)
    r = await client.post(
        "/api/v1/orders",
        json={"incident_id": case["id"], "unit_id": unit_id, "instructions": "立即赶赴现场，组织疏散"},
        headers=officer.headers,
    )
    assert r.status == 201, await r.text()
    order_id = (await r.json())["id"]
    await page.wait_for_selector(f"#order[data-id='{order_id}']")
    assert "立即赶赴现场" in await page.inner_text("#order")
    assert (
        await page.get_attribute(".order-nav a", "href") == f"geo:{lat},{lon}?q={lat},{lon}({case['number']})"
    )

    async def receipt() -> bool:
        r = await client.get(f"/api/v1/orders/{order_id}", headers=officer.headers)
        return bool((await r.json())["delivered_at"])

    await eventually(receipt, what="the order's receipt reached the server")
    await screenshot(page, "squad-order")
    await page.click("#accept")

    async def accepted() -> bool:
        r = await client.get(f"/api/v1/orders/{order_id}", headers=officer.headers)
        return (await r.json())["state"] == "accepted"

    await eventually(accepted, what="the order accepted")
    await wait_js(page, "document.querySelector('#order-state')?.textContent.startsWith('已接受')")
    watch.check()


async def test_squad_shows_an_order_once_across_a_reconnect(
    browsing: Browsing, client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """After its connection is cut and restored, the squad page still shows its order once, in its state."""
    officer, member, unit_id = await _squad_setup(client, make_user)
    page, watch = await browsing.open_page("/squad", token=member.token, viewport=PHONE, mobile=True)
    await page.wait_for_selector(".live[data-status='live']")
    _, lat, lon = grid_point(org_tree)
    case = await create_case(client, officer, lat, lon)
    r = await client.post(
        "/api/v1/orders",
        json={"incident_id": case["id"], "unit_id": unit_id, "instructions": "核实"},
        headers=officer.headers,
    )
    order_id = (await r.json())["id"]
    await page.wait_for_selector(f"#order[data-id='{order_id}']")
    await page.evaluate("window.dispatchdSquad.S.socket.ws.close(4000, 'cut')")
    await page.wait_for_selector(".live[data-status='live']")
    await page.click("#accept")
    await wait_js(page, "document.querySelector('#order-state')?.textContent.startsWith('已接受')")
    await page.reload()
    await page.wait_for_selector(f"#order[data-id='{order_id}']")
    assert await page.evaluate("document.querySelectorAll('#recent li').length") == 1
    assert (await page.inner_text("#order-state")).startswith("已接受")
    watch.check()


async def test_grid_worker_files_a_report_with_a_photo(
    browsing: Browsing, client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """A grid worker fills in a report with a camera photo and a point on the map; it becomes a case with the photo."""
    grid_code, lat, lon = grid_point(org_tree)
    worker = await make_user("grid_worker", grid_code)
    page, watch = await browsing.open_page(
        "/grid",
        token=worker.token,
        viewport=PHONE,
        mobile=True,
        permissions=("geolocation",),
        geolocation={"latitude": lat, "longitude": lon},
    )
    await page.wait_for_selector("#category option[value='hazard.fire']", state="attached")
    await page.select_option("#category", "hazard.fire")
    await page.fill("#description", "楼道堆放大量纸箱，堵塞消防通道")
    await page.set_input_files(
        "#photo-input", files=[{"name": "scene.jpg", "mimeType": "image/jpeg", "buffer": JPEG}]
    )
    await page.wait_for_selector(".photo-thumb img")
    await page.click("#locate")
    await wait_js(page, "window.dispatchdGrid.S.point !== null")
    await page.fill("#address", "安阳新城 3 幢楼道")
    await screenshot(page, "grid-report-form")
    await page.click("#submit-report")
    await page.wait_for_selector("#tab-mine:not([hidden]) #mine li[data-number]")
    number = await page.get_attribute("#mine li[data-number]", "data-number")
    r = await client.get("/api/v1/reports", headers=worker.headers)
    items = (await r.json())["items"]
    assert [c["number"] for c in items] == [number]
    assert items[0]["channel"] == "grid_report" and len(items[0]["attachments"]) == 1
    assert items[0]["location"]["lat"] == pytest.approx(lat, abs=1e-6)
    photo = await client.get(items[0]["attachments"][0], headers=worker.headers)
    assert photo.status == 200 and (await photo.read())[:2] == b"\xff\xd8"
    await screenshot(page, "grid-my-reports")
    watch.check()
    # The duty officer sees the case with its photo in the console.
    officer = await make_user("duty_officer", COUNTY)
    console, watch2 = await browsing.open_page(
        f"/console?case={items[0]['id']}", token=officer.token, viewport=DESK
    )
    await console.wait_for_selector(".photos img")
    await wait_js(
        console,
        "document.querySelector('.photos img').complete && document.querySelector('.photos img').naturalWidth > 0",
    )
    watch2.check()


async def test_grid_worker_starts_and_stops_a_patrol(
    browsing: Browsing, client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """The patrol tab starts a patrol on the server and stops it again."""
    grid_code, _, _ = grid_point(org_tree)
    worker = await make_user("grid_worker", grid_code)
    page, watch = await browsing.open_page("/grid", token=worker.token, viewport=PHONE, mobile=True)
    await page.click(".tabsbar [data-tab='patrol']")
    await page.click("#patrol-start")
    await page.wait_for_selector("#patrol-stop")
    r = await client.get("/api/v1/patrols", headers=worker.headers)
    assert [p["running"] for p in (await r.json())["items"]] == [True]
    await screenshot(page, "grid-patrol")
    page.once("dialog", lambda d: d.accept("楼道消防通道已清理"))
    await page.click("#patrol-stop")
    await page.wait_for_selector("#patrol-start")
    r = await client.get("/api/v1/patrols", headers=worker.headers)
    assert [p["running"] for p in (await r.json())["items"]] == [False]
    watch.check()


async def test_console_accepts_and_dispatches_from_the_keyboard(
    browsing: Browsing, client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """The officer accepts a case with A and dispatches it with D to the suggested nearest squad, which gets an order."""
    officer, member, unit_id = await _squad_setup(client, make_user)
    _, lat, lon = grid_point(org_tree)
    # The squad reports its position from the phone, over its own websocket.
    async with client.ws_connect(f"/ws/squad?token={member.token}") as ws:
        await ws.send_json({"type": "position", "lat": lat + 0.001, "lon": lon})

        async def placed() -> bool:
            msg = await ws.receive_json(timeout=5)
            return msg.get("type") == "ok" and msg.get("for") == "position"

        await eventually(placed, what="the position taken")

    async def nearest() -> bool:
        r = await client.get(f"/api/v1/units/nearest?lat={lat}&lon={lon}", headers=officer.headers)
        body = await r.json()
        units = body if isinstance(body, list) else body.get("units") or body.get("items") or []
        return any(u["id"] == unit_id for u in units)

    await eventually(nearest, what="the squad among the nearest")
    case = await create_case(client, officer, lat, lon, priority="P2")
    page, watch = await browsing.open_page("/console", token=officer.token, viewport=DESK)
    await page.wait_for_selector(f".case-item.selected[data-id='{case['id']}']")
    await page.wait_for_selector(".d-actions [data-action='accept']")
    await page.keyboard.press("a")
    await wait_js(page, "document.querySelector('.d-head .state')?.textContent === '已立案'")
    await page.keyboard.press("d")
    await page.wait_for_selector(f".dialog input[name='squad'][value='{unit_id}']:checked")
    await screenshot(page, "console-dispatch")
    await page.click(".dialog button[type='submit']")
    await wait_js(page, "document.querySelector('.d-head .state')?.textContent === '已派遣'")

    async def ordered() -> bool:
        r = await client.get(f"/api/v1/orders?incident_id={case['id']}", headers=officer.headers)
        return [o["unit_id"] for o in (await r.json())["orders"]] == [unit_id]

    await eventually(ordered, what="an order for the squad")
    await page.wait_for_selector(".timeline li")
    watch.check()


async def test_stats_charts_and_csv_export(
    browsing: Browsing, client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """The statistics page charts the cases per township and exports the same figures as CSV."""
    officer = await make_user("duty_officer", COUNTY)
    _, lat, lon = grid_point(org_tree)
    for _ in range(3):
        await create_case(client, officer, lat, lon)
    page, watch = await browsing.open_page("/stats", token=officer.token, viewport=DESK)
    await page.wait_for_selector("#chart-units svg rect.bar-received")
    assert await page.inner_text("#kpis .kpi-value >> nth=0") == "3"
    await page.click("[aria-pressed] >> text=近7天")
    async with page.expect_download() as info:
        await page.click("#export")
    download = await info.value
    path = await download.path()
    text = (await asyncio.to_thread(path.read_bytes)).decode("utf-8-sig")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert rows and rows[0]["received"] == "3"
    assert download.suggested_filename.endswith(".csv")
    await screenshot(page, "stats")
    watch.check()


def _signed(body: dict[str, Any], key: str, stamp: int) -> tuple[bytes, dict[str, str]]:
    raw = json.dumps(body).encode()
    mac = hmac.new(key.encode(), str(stamp).encode() + b"." + raw, hashlib.sha256).hexdigest()
    headers = {
        "Content-Type": "application/json",
        "X-Dispatchd-Timestamp": str(stamp),
        "X-Dispatchd-Signature": f"sha256={mac}",
    }
    return raw, headers


async def test_console_turns_a_waiting_call_into_a_case(
    browser: Browser, make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree, clock: FakeClock
) -> None:
    """A call in the queue shows its caller's earlier case; "create case" makes a case linked to the call."""
    client = await make_client(hotline_cti_hmac_key="cti-test-key")
    browsing = Browsing(client, browser)
    try:
        officer = await make_user("duty_officer", COUNTY)
        _, lat, lon = grid_point(org_tree)
        earlier = await create_case(
            client, officer, lat, lon, caller="13805771234", priority="P3", channel="hotline"
        )
        raw, headers = _signed(
            {"event": "ringing", "call_id": "pbx-0001", "caller": "13805771234", "callee": "967999"},
            "cti-test-key",
            int(clock.now().timestamp()),
        )
        r = await client.post("/api/v1/hotline/events", data=raw, headers=headers)
        assert r.status in (200, 201), await r.text()
        page, watch = await browsing.open_page("/console", token=officer.token, viewport=WALL)
        await page.wait_for_selector(".call[data-id]")
        call_id = await page.get_attribute(".call[data-id]", "data-id")
        assert earlier["number"] in await page.inner_text(".call .call-history")
        await page.click(".call .btn-primary")  # create case
        await page.wait_for_selector(".dialog[open] select[name='category']")
        await page.select_option(".dialog select[name='category']", "incident.dispute")
        await page.fill(".dialog textarea[name='description']", "来电反映邻居装修噪音纠纷，双方争吵")
        await page.fill(".dialog input[name='address']", "安阳街道测试路 8 号")
        await screenshot(page, "console-call-to-case")
        await page.click(".dialog button[type='submit']")

        async def linked() -> bool:
            r = await client.get(f"/api/v1/hotline/calls/{call_id}", headers=officer.headers)
            return bool((await r.json())["incident_id"])

        await eventually(linked, what="the call linked to a new case")
        await page.wait_for_selector(".d-head .d-number")
        watch.check()
    finally:
        await browsing.close()


async def test_board_shows_squads_with_heading_and_running_meetings(
    browsing: Browsing, client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """A squad's new position moves its arrow on the board, turned to its heading; a meeting about a case shows in the list and at the case."""
    officer, member, unit_id = await _squad_setup(client, make_user)
    page, watch = await browsing.open_page("/board", token=officer.token, viewport=WALL)
    await page.wait_for_selector(".live[data-status='live']")
    _, lat, lon = grid_point(org_tree)
    async with client.ws_connect(f"/ws/squad?token={member.token}") as ws:
        await ws.send_json({"type": "position", "lat": lat, "lon": lon, "heading": 90, "speed": 30})
        await page.wait_for_selector(f".map-layer-units [data-key='{unit_id}'] path.mk-body")
    transform = await page.get_attribute(f".map-layer-units [data-key='{unit_id}'] path.mk-body", "transform")
    assert transform == "rotate(90)"
    case = await create_case(client, officer, lat, lon)
    r = await client.post(
        "/api/v1/meetings",
        json={"title": "仓库火情视频会商", "invite": [TOWNSHIP], "incident_id": str(case["id"])},
        headers=officer.headers,
    )
    assert r.status == 201, await r.text()
    meeting_id = (await r.json())["id"]
    await page.wait_for_selector(f"#meeting-list li[data-id='{meeting_id}']")
    assert "仓库火情视频会商" in await page.inner_text("#meeting-list")
    await page.wait_for_selector(f".map-layer-meetings [data-key='{meeting_id}']")
    await screenshot(page, "board-squads-meetings")
    watch.check()


async def test_map_draws_tiles_of_a_gcj02_source_shifted(
    browser: Browser, make_client: AppFactory, make_user: UserFactory
) -> None:
    """With a GCJ-02 tile source the board loads its tiles and draws WGS-84 points shifted for display only."""
    # A tile "server" on this very host (the relative template points at one of our images).
    client = await make_client(map_tile_url="/ui/img/icon-192.png?z={z}&x={x}&y={y}", map_tile_crs="gcj02")
    browsing = Browsing(client, browser)
    try:
        officer = await make_user("duty_officer", COUNTY)
        page, watch = await browsing.open_page("/board", token=officer.token, viewport=WALL)
        await wait_js(page, "document.querySelectorAll('.map-tiles img[src*=\"z=\"]').length > 4")
        shift = await page.evaluate(
            """async () => {
                const c = await import('/ui/js/coords.js');
                const m = window.dispatchdBoard.map;
                const [glon, glat] = c.wgs84ToGcj02(120.65, 27.78);
                const [wlon, wlat] = c.gcj02ToWgs84(glon, glat);
                const [x0, y0] = c.lonLatToWorld(120.65, 27.78);
                const [x1, y1] = m.world(120.65, 27.78);
                return {
                  metres: c.distanceM(27.78, 120.65, glat, glon),
                  back: Math.max(Math.abs(wlon - 120.65), Math.abs(wlat - 27.78)),
                  drawnShifted: Math.hypot(x1 - x0, y1 - y0) > 0,
                  picked: m.unproject(...m.project(120.65, 27.78)),
                };
            }"""
        )
        assert 100 < shift["metres"] < 1000  # GCJ-02 moves points a few hundred metres in Zhejiang
        assert shift["back"] < 1e-6 and shift["drawnShifted"]
        assert shift["picked"][0] == pytest.approx(120.65, abs=1e-6) and shift["picked"][1] == pytest.approx(
            27.78, abs=1e-6
        )
        await screenshot(page, "board-with-tiles")
        watch.check()
    finally:
        await browsing.close()


async def test_grid_worker_verifies_a_fed_back_case(
    browsing: Browsing, client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """A case handled and fed back in the worker's grid shows as a task; "verify" moves it to verified."""
    grid_code, lat, lon = grid_point(org_tree)
    worker = await make_user("grid_worker", grid_code)
    officer = await make_user("duty_officer", COUNTY)
    case = await create_case(client, officer, lat, lon, priority="P3")
    for action, body in (
        ("accept", {}),
        ("dispatch", {}),
        ("start", {}),
        ("feedback", {"note": "已清理楼道杂物"}),
    ):
        r = await client.post(
            f"/api/v1/incidents/{case['id']}/actions/{action}",
            json={"version": case["version"], **body},
            headers=officer.headers,
        )
        assert r.status == 200, (action, await r.text())
        case = await r.json()
    assert case["state"] == "fed_back"
    page, watch = await browsing.open_page("/grid", token=worker.token, viewport=PHONE, mobile=True)
    await page.click(".tabsbar [data-tab='tasks']")
    await page.wait_for_selector(f".task-card[data-id='{case['id']}']")
    assert "已清理楼道杂物" in await page.inner_text(f".task-card[data-id='{case['id']}']")
    await page.fill(f".task-card[data-id='{case['id']}'] textarea", "现场核实，已清理完毕")
    await screenshot(page, "grid-verify")
    await page.click(f".task-card[data-id='{case['id']}'] .btn-ok")
    await page.wait_for_selector(f".task-card[data-id='{case['id']}']", state="detached")
    r = await client.get(f"/api/v1/incidents/{case['id']}", headers=officer.headers)
    assert (await r.json())["state"] == "verified"
    watch.check()
