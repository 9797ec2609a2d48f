"""POST /api/v1/reports on a real port with the real PostgreSQL: exactly once, photos, routing, bad input."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from dispatchd.channels.reports.slots import MEDIA
from dispatchd.context import Context
from dispatchd.domain.orgs import OrgTree
from tests.channels.reports.helpers import (
    GRID,
    OTHER_TOWN,
    TOWN,
    form,
    gps_bytes,
    jpeg,
    png,
    report_body,
    submit,
    webp,
)
from tests.conftest import AppFactory, StoreUrls, UserFactory


def media_files(ctx: Context) -> list[Path]:
    root = ctx[MEDIA].root
    return sorted(p for p in root.rglob("*") if p.is_file())


async def count(ctx: Context, sql: str) -> int:
    async with ctx.pool.acquire() as conn:
        value: int = await conn.fetchval(sql)
    return value


async def test_ten_concurrent_submissions_with_one_key_give_one_case(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree, app_of: Any
) -> None:
    """Ten submissions with the same Idempotency-Key at once: one case, one 201, nine 200 with the same body."""
    worker = await make_user("grid_worker", GRID)
    body = report_body(org_tree)
    key = uuid.uuid4().hex
    photo = jpeg()

    async def once() -> tuple[int, str]:
        resp = await client.post(
            "/api/v1/reports",
            data=form(body, [("p.jpg", photo, "image/jpeg")]),
            headers={**worker.headers, "Idempotency-Key": key},
        )
        return resp.status, await resp.text()

    results = await asyncio.gather(*(once() for _ in range(10)))
    statuses = sorted(status for status, _ in results)
    assert statuses == [200] * 9 + [201]
    assert len({text for _, text in results}) == 1
    answer = json.loads(results[0][1])
    assert {"incident_id", "number", "routed"} <= set(answer)
    ctx = app_of(client)
    assert await count(ctx, "SELECT count(*) FROM incidents") == 1
    assert await count(ctx, "SELECT count(*) FROM report_requests") == 1
    assert await count(ctx, "SELECT count(*) FROM photo_links") == 1
    # A later retry gets the same answer too, marked as replayed.
    resp = await client.post(
        "/api/v1/reports",
        data=form(body, [("p.jpg", photo, "image/jpeg")]),
        headers={**worker.headers, "Idempotency-Key": key},
    )
    assert resp.status == 200 and resp.headers["Idempotent-Replayed"] == "true"
    assert await resp.text() == results[0][1]


async def test_same_key_with_another_report_is_refused(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Reusing a key for a different report answers 422 idempotency_key_reused and opens nothing."""
    worker = await make_user("grid_worker", GRID)
    key = uuid.uuid4().hex
    await submit(client, worker, report_body(org_tree), key=key)
    _, data = await submit(
        client, worker, report_body(org_tree, description="另一件事"), key=key, expect=422, lang="en"
    )
    assert data["error"]["code"] == "idempotency_key_reused"
    assert "Idempotency-Key" in data["error"]["fields"]
    # Another worker's identical key is their own: keys are per client.
    other = await make_user("grid_worker", GRID)
    await submit(client, other, report_body(org_tree), key=key, expect=201)


async def test_key_is_required(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Without an Idempotency-Key header the report is refused with 400 before anything is read."""
    worker = await make_user("grid_worker", GRID)
    resp = await client.post("/api/v1/reports", json=report_body(org_tree), headers=worker.headers)
    data = await resp.json()
    assert resp.status == 400 and data["error"]["code"] == "idempotency_key_required"
    assert "Idempotency-Key" in data["error"]["message"]


async def test_report_becomes_a_case_in_its_grids_township(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """A report is a grid_report case owned by its grid's township, and the answer says where it went."""
    worker = await make_user("grid_worker", GRID)
    officer = await make_user("duty_officer", TOWN)
    _, answer = await submit(client, worker, report_body(org_tree))
    routed = answer["routed"]
    assert routed["grid"]["code"] == GRID and routed["township"]["code"] == TOWN
    assert routed["owner"]["code"] == TOWN and routed["county"]["code"] == "330381"
    assert routed["department"]["kind"] == "fire"
    resp = await client.get(f"/api/v1/incidents/{answer['incident_id']}", headers=officer.headers)
    case = await resp.json()
    assert resp.status == 200, case
    assert case["number"] == answer["number"] and case["channel"] == "grid_report"
    assert case["owner_unit"] == TOWN and case["grid"]["code"] == GRID
    assert case["reporter_id"] == worker.user.id and case["observed_at"].startswith("2026-05-03T07:30")
    listed = await (await client.get("/api/v1/incidents?unit=" + TOWN, headers=officer.headers)).json()
    assert [c["id"] for c in listed["items"]] == [answer["incident_id"]]


async def test_address_only_report_goes_to_the_workers_township(
    client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """A report with an address and no point is owned by the grid worker's township (a blank priority is no priority)."""
    worker = await make_user("grid_worker", GRID)
    _, answer = await submit(
        client,
        worker,
        {
            "category": "hazard.environment.refuse",
            "description": "垃圾堆积",
            "address": "万松路 12 号",
            "priority": "",
        },
    )
    assert answer["routed"]["grid"] is None and answer["routed"]["owner"]["code"] == TOWN


async def test_photo_of_20_mb_is_413_and_leaves_nothing(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree, app_of: Any
) -> None:
    """A 20 MB photo is refused with 413 while it streams; no case, no row, no file remain; the key is free."""
    worker = await make_user("grid_worker", GRID)
    ctx = app_of(client)
    key = uuid.uuid4().hex
    big = jpeg() + bytes(20 * 1024 * 1024)
    _, data = await submit(
        client, worker, form(report_body(org_tree), [("ok.jpg", png(), "image/png"), ("big.jpg", big, "image/jpeg")]),
        key=key, expect=413, lang="en",
    )  # fmt: skip
    assert data["error"]["code"] == "photo_too_large" and "photo 2" in data["error"]["message"]
    assert await count(ctx, "SELECT count(*) FROM incidents") == 0
    assert await count(ctx, "SELECT count(*) FROM report_requests") == 0
    assert await count(ctx, "SELECT count(*) FROM photos") == 0
    assert media_files(ctx) == []
    # The same key works once the photo is fixed.
    await submit(
        client, worker, form(report_body(org_tree), [("ok.jpg", png(), "image/png")]), key=key, expect=201
    )


async def test_text_renamed_jpg_is_415(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree, app_of: Any
) -> None:
    """A text file named .jpg and sent as image/jpeg is refused with 415, in Chinese by default."""
    worker = await make_user("grid_worker", GRID)
    text = "这不是照片，只是改了扩展名的文本文件。\n".encode() * 50
    _, data = await submit(
        client, worker, form(report_body(org_tree), [("photo.jpg", text, "image/jpeg")]), expect=415
    )
    assert data["error"]["code"] == "unsupported_photo_type" and "JPEG" in data["error"]["message"]
    assert "photo" in data["error"]["fields"]
    assert media_files(app_of(client)) == []


async def test_bad_fields_are_named_in_both_languages(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Every bad field gets its own message, in Chinese by default and in English on request."""
    worker = await make_user("grid_worker", GRID)
    bad = {
        "category": "no.such",
        "description": "",
        "location": {"lat": 200, "lon": 1},
        "observed_at": "yesterday",
    }
    _, zh = await submit(client, worker, bad, expect=422)
    assert set(zh["error"]["fields"]) == {"category", "description", "location", "observed_at"}
    assert zh["error"]["fields"]["category"] == "未知的事件类别"
    _, en = await submit(client, worker, bad, expect=422, lang="en")
    assert en["error"]["fields"]["category"] == "unknown category"
    _, nowhere = await submit(
        client, worker, {"category": "hazard.fire", "description": "x"}, expect=422, lang="en"
    )
    assert nowhere["error"]["fields"] == {"location": "location or address is required"}
    # Malformed bodies are 400; too many photos 413; an unknown part 400; no JSON part 400.
    resp = await client.post(
        "/api/v1/reports",
        data=b"{not json",
        headers={**worker.headers, "Idempotency-Key": "k1", "Content-Type": "application/json"},
    )
    assert resp.status == 400
    ten = [(f"{i}.png", png(), "image/png") for i in range(10)]
    _, data = await submit(client, worker, form(report_body(org_tree), ten), expect=413, lang="en")
    assert data["error"]["fields"] == {"photo": "at most 9 photos"}
    _, data = await submit(client, worker, form(None, [("a.png", png(), "image/png")]), expect=400)
    assert data["error"]["code"] == "missing_part"


async def test_only_grid_workers_report(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """The 平安通 route is for grid workers; a duty officer gets 403 (they use POST /api/v1/incidents)."""
    officer = await make_user("duty_officer", TOWN)
    _, data = await submit(client, officer, report_body(org_tree), expect=403)
    assert data["error"]["code"] == "forbidden"


async def test_photos_are_content_addressed_and_gps_stripped_for_others(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree, app_of: Any
) -> None:
    """The uploader gets the original photo; an officer of the township gets the copy without GPS;
    a user of another township gets 404; ?token= works for <img>."""
    worker = await make_user("grid_worker", GRID)
    officer = await make_user("duty_officer", TOWN)
    stranger = await make_user("duty_officer", OTHER_TOWN)
    original = jpeg()
    _, answer = await submit(
        client,
        worker,
        form(report_body(org_tree), [("a.jpg", original, "image/jpeg"), ("b.webp", webp(), "image/webp")]),
    )
    assert [p["type"] for p in answer["photos"]] == ["image/jpeg", "image/webp"]
    url = answer["photos"][0]["url"]
    sha = answer["photos"][0]["sha256"]
    ctx = app_of(client)
    assert ctx[MEDIA].path(sha).read_bytes() == original  # stored under its own digest
    assert not list((ctx[MEDIA].root / "tmp").iterdir())

    mine = await client.get(url, headers=worker.headers)
    assert mine.status == 200 and await mine.read() == original
    assert mine.headers["Content-Type"] == "image/jpeg"

    theirs = await client.get(url, headers=officer.headers)
    body = await theirs.read()
    assert theirs.status == 200 and theirs.headers["X-Photo-Variant"] == "public"
    assert gps_bytes() in original and gps_bytes() not in body and body[:2] == b"\xff\xd8"

    assert (await client.get(url, headers=stranger.headers)).status == 404
    assert (await client.get(url)).status == 401
    by_token = await client.get(f"{url}?token={officer.token}")
    assert by_token.status == 200 and await by_token.read() == body

    case = await (
        await client.get(f"/api/v1/incidents/{answer['incident_id']}", headers=officer.headers)
    ).json()
    assert case["attachments"] == [p["url"] for p in answer["photos"]]


async def test_my_reports_show_their_step(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """A grid worker lists their own reports, newest first, each with its current step."""
    worker = await make_user("grid_worker", GRID)
    other = await make_user("grid_worker", GRID)
    first = (await submit(client, worker, report_body(org_tree)))[1]
    second = (await submit(client, worker, report_body(org_tree, description="第二件事")))[1]
    await submit(client, other, report_body(org_tree))
    data = await (await client.get("/api/v1/reports?limit=1", headers=worker.headers)).json()
    assert [c["id"] for c in data["items"]] == [second["incident_id"]]
    assert (
        data["items"][0]["step"]["code"] == "accept" and data["items"][0]["step"]["name"]["zh-CN"] == "待受理"
    )
    more = await (
        await client.get(f"/api/v1/reports?cursor={data['next_cursor']}", headers=worker.headers)
    ).json()
    assert [c["id"] for c in more["items"]] == [first["incident_id"]] and more["next_cursor"] is None


async def test_failed_transaction_leaves_no_files(
    client: TestClient[Any, Any],
    make_user: UserFactory,
    org_tree: OrgTree,
    app_of: Any,
    clean_stores: StoreUrls,
) -> None:
    """When the database refuses the report midway, the transaction rolls back and no photo file stays."""
    worker = await make_user("grid_worker", GRID)
    ctx = app_of(client)
    conn = await asyncpg.connect(clean_stores.database)
    try:
        # Break the photo table for a moment: the insert fails after the case row was written.
        await conn.execute("ALTER TABLE photos ADD CONSTRAINT refuse_all CHECK (size < 0) NOT VALID")
        resp = await client.post(
            "/api/v1/reports",
            data=form(report_body(org_tree), [("a.png", png(), "image/png")]),
            headers={**worker.headers, "Idempotency-Key": "k-fail"},
        )
        assert resp.status == 500
    finally:
        await conn.execute("ALTER TABLE photos DROP CONSTRAINT refuse_all")
        await conn.close()
    assert await count(ctx, "SELECT count(*) FROM incidents") == 0
    assert await count(ctx, "SELECT count(*) FROM report_requests") == 0
    assert media_files(ctx) == []


async def test_two_instances_share_the_key(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """Retries spread over two instances still give one case."""
    one, two = await make_client(), await make_client()
    worker = await make_user("grid_worker", GRID)
    body = report_body(org_tree)
    key = uuid.uuid4().hex
    results = await asyncio.gather(
        *(submit(c, worker, body, key=key, expect=None) for c in (one, two, one, two))
    )
    assert sorted(s for s, _ in results) == [200, 200, 200, 201]
    assert len({d["incident_id"] for _, d in results}) == 1
