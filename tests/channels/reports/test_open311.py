"""Open311 GeoReport v2 at /open311/v2/: services, requests, statuses and the spec's error format."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import asyncpg
from aiohttp.test_utils import TestClient

from dispatchd.domain.orgs import OrgTree
from dispatchd.store.apikeys import create_api_key
from tests.channels.reports.helpers import GRID, OTHER_GRID, TOWN, point_in, report_body, submit
from tests.conftest import StoreUrls, UserFactory

BASE = "/open311/v2"
ROOT = Path(__file__).resolve().parents[3]


async def api_key(urls: StoreUrls, org: str = "330381") -> str:
    conn = await asyncpg.connect(urls.database)
    try:
        key, _ = await create_api_key(conn, "citizen app", org)
    finally:
        await conn.close()
    return key


async def post_request(
    client: TestClient[Any, Any],
    fields: dict[str, str],
    *,
    fmt: str = "json",
    expect: int = 201,
    **headers: str,
) -> Any:
    resp = await client.post(f"{BASE}/requests.{fmt}", data=fields, headers=headers)
    text = await resp.text()
    assert resp.status == expect, text
    if fmt == "xml":
        assert resp.content_type == "text/xml" and text.startswith('<?xml version="1.0" encoding="utf-8"?>')
        return ET.fromstring(text.encode())
    assert resp.content_type == "application/json"
    return json.loads(text)


def fields_at(tree: OrgTree, key: str, grid: str = GRID, **extra: str) -> dict[str, str]:
    lat, lon = point_in(tree, grid)
    return {
        "api_key": key,
        "service_code": "hazard.environment",
        "lat": str(lat),
        "long": str(lon),
        "description": "河边垃圾堆积，气味很大",
        "email": "citizen@example.com",
        "phone": "13812345678",
        "first_name": "明",
        "last_name": "王",
        **extra,
    }


async def test_services_parse_as_json_and_xml(client: TestClient[Any, Any]) -> None:
    """services.json is a JSON list and services.xml a <services> document, both from the taxonomy's two wings."""
    resp = await client.get(f"{BASE}/services.json")
    services = await resp.json()
    assert resp.status == 200 and isinstance(services, list)
    codes = {s["service_code"] for s in services}
    assert {"incident.dispute", "hazard.fire", "hazard.fire.ebike_charging"} <= codes
    assert not any(c.startswith("population") for c in codes)  # population information is not public
    first = services[0]
    assert set(first) == {
        "service_code",
        "service_name",
        "description",
        "metadata",
        "type",
        "keywords",
        "group",
    }
    assert first["type"] == "realtime" and isinstance(first["metadata"], bool)

    resp = await client.get(f"{BASE}/services.xml", headers={"Accept-Language": "en"})
    assert resp.status == 200 and resp.content_type == "text/xml"
    root = ET.fromstring(await resp.read())
    assert root.tag == "services"
    xml_codes = [s.findtext("service_code") for s in root.findall("service")]
    assert set(xml_codes) == codes
    fire = next(s for s in root.findall("service") if s.findtext("service_code") == "hazard.fire")
    name = fire.findtext("service_name") or ""
    assert fire.findtext("metadata") == "true" and name.isascii() and name  # English on request


async def test_service_definition_lists_subcategories(client: TestClient[Any, Any]) -> None:
    """services/{code} gives the subcategory attribute; an unknown code is 404 in the spec's format."""
    definition = await (await client.get(f"{BASE}/services/hazard.fire.json")).json()
    assert definition["service_code"] == "hazard.fire"
    (attribute,) = definition["attributes"]
    assert attribute["code"] == "subcategory" and attribute["datatype"] == "singlevaluelist"
    assert "hazard.fire.ebike_charging" in [v["key"] for v in attribute["values"]]
    root = ET.fromstring(await (await client.get(f"{BASE}/services/hazard.fire.xml")).read())
    assert root.tag == "service_definition"
    assert [v.findtext("key") for v in root.iter("value")] == [v["key"] for v in attribute["values"]]

    resp = await client.get(f"{BASE}/services/population.key_person.json")
    assert resp.status == 404
    errors = await resp.json()
    assert errors[0]["code"] == 404 and "service_code" in errors[0]["description"]


async def test_request_posted_comes_back_open(
    client: TestClient[Any, Any], org_tree: OrgTree, clean_stores: StoreUrls, make_user: UserFactory
) -> None:
    """A request posted through Open311 is a case of its grid's township and comes back open, without personal data."""
    key = await api_key(clean_stores)
    answer = await post_request(
        client, fields_at(org_tree, key, **{"attribute[subcategory]": "hazard.environment.refuse"})
    )
    (created,) = answer
    request_id = created["service_request_id"]
    assert request_id.startswith("RA") and created["account_id"] is None
    assert "小时内受理" in created["service_notice"]

    resp = await client.get(f"{BASE}/requests/{request_id}.json")
    (request,) = await resp.json()
    assert resp.status == 200
    assert request["service_request_id"] == request_id and request["status"] == "open"
    assert request["service_code"] == "hazard.environment.refuse"
    assert request["description"] == "河边垃圾堆积，气味很大"
    assert request["requested_datetime"].endswith("+08:00") and request["expected_datetime"]
    text = json.dumps(request, ensure_ascii=False)
    assert "citizen@example.com" not in text and "13812345678" not in text and "王" not in text

    root = ET.fromstring(await (await client.get(f"{BASE}/requests/{request_id}.xml")).read())
    assert root.tag == "service_requests" and root.find("request/status").text == "open"  # type: ignore[union-attr]

    officer = await make_user("duty_officer", TOWN)
    cases = await (await client.get("/api/v1/incidents?channel=open311", headers=officer.headers)).json()
    (case,) = cases["items"]
    assert case["number"] == request_id and case["owner_unit"] == TOWN and case["grid"]["code"] == GRID
    assert case["caller"] == "13812345678" and case["extra"]["open311"]["email"] == "citizen@example.com"


async def test_status_follows_the_loop_and_filters_apply(
    client: TestClient[Any, Any], org_tree: OrgTree, clean_stores: StoreUrls, make_user: UserFactory
) -> None:
    """A rejected case reads closed with its reason; status, service_code and id filters select as the spec says."""
    key = await api_key(clean_stores)
    officer = await make_user("duty_officer", TOWN)
    kept = (await post_request(client, fields_at(org_tree, key)))[0]["service_request_id"]
    gone = (await post_request(client, fields_at(org_tree, key, service_code="incident.dispute")))[0][
        "service_request_id"
    ]
    listed = await (await client.get(f"/api/v1/incidents?q={gone}", headers=officer.headers)).json()
    case = listed["items"][0]
    resp = await client.post(
        f"/api/v1/incidents/{case['id']}/actions/reject",
        json={"version": case["version"], "reason": "重复上报"},
        headers=officer.headers,
    )
    assert resp.status == 200

    everything = await (await client.get(f"{BASE}/requests.json")).json()
    assert [r["service_request_id"] for r in everything] == [gone, kept]
    closed = await (await client.get(f"{BASE}/requests.json?status=closed")).json()
    assert [(r["service_request_id"], r["status"]) for r in closed] == [(gone, "closed")]
    assert "重复上报" in closed[0]["status_notes"]
    opened = await (await client.get(f"{BASE}/requests.json?status=open")).json()
    assert [r["service_request_id"] for r in opened] == [kept]
    by_code = await (await client.get(f"{BASE}/requests.json?service_code=incident")).json()
    assert [r["service_request_id"] for r in by_code] == [gone]
    by_id = await (
        await client.get(f"{BASE}/requests.json?service_request_id={kept},{gone}&status=open")
    ).json()
    assert {r["service_request_id"] for r in by_id} == {kept, gone}  # the id list overrides the rest
    later = await (await client.get(f"{BASE}/requests.json?start_date=2030-01-01T00:00:00Z")).json()
    assert later == []
    root = ET.fromstring(await (await client.get(f"{BASE}/requests.xml?status=closed")).read())
    assert [r.findtext("service_request_id") for r in root.findall("request")] == [gone]


async def test_grid_reports_are_not_public(
    client: TestClient[Any, Any], org_tree: OrgTree, make_user: UserFactory
) -> None:
    """Cases that came in from grid workers are not shown through Open311."""
    worker = await make_user("grid_worker", GRID)
    _, answer = await submit(client, worker, report_body(org_tree))
    assert await (await client.get(f"{BASE}/requests.json")).json() == []
    assert (await client.get(f"{BASE}/requests/{answer['number']}.json")).status == 404


async def test_errors_in_the_spec_format(
    client: TestClient[Any, Any], org_tree: OrgTree, clean_stores: StoreUrls
) -> None:
    """api_key missing or wrong is 403, unknown service 404, bad fields 400 with one entry each, JSON and XML."""
    key = await api_key(clean_stores)
    no_key = fields_at(org_tree, key)
    del no_key["api_key"]
    errors = await post_request(client, no_key, expect=403)
    assert errors[0]["code"] == 403 and "api_key" in errors[0]["description"]
    wrong = await post_request(client, {**no_key, "api_key": "dk_wrong"}, fmt="xml", expect=403)
    assert wrong.tag == "errors" and wrong.findtext("error/code") == "403"
    unknown = await post_request(client, fields_at(org_tree, key, service_code="no.such"), expect=404)
    assert unknown[0]["code"] == 404
    bad = fields_at(org_tree, key, lat="95", media_url="ftp://x")
    bad.pop("long")
    errors = await post_request(client, bad, expect=400, **{"Accept-Language": "en"})
    described = {e["description"].split(":")[0] for e in errors}
    assert {"lat", "media_url"} <= described and all(e["code"] == 400 for e in errors)
    nowhere = {"api_key": key, "service_code": "hazard.fire"}
    errors = await post_request(client, nowhere, expect=400, **{"Accept-Language": "en"})
    assert "location is required" in errors[0]["description"]
    assert (await client.get(f"{BASE}/requests/RA20000101-0001.json")).status == 404
    assert (await client.get(f"{BASE}/requests.json?status=pending")).status == 400


async def test_jurisdiction_is_the_keys_unit(
    client: TestClient[Any, Any], org_tree: OrgTree, clean_stores: StoreUrls
) -> None:
    """A township's key files only inside its township; reads with it are limited to it."""
    key = await api_key(clean_stores, TOWN)
    other_town = await api_key(clean_stores, "330381002")
    errors = await post_request(
        client, fields_at(org_tree, key, grid=OTHER_GRID), expect=400, **{"Accept-Language": "en"}
    )
    assert "outside jurisdiction" in errors[0]["description"]
    forbidden = await post_request(client, fields_at(org_tree, key, jurisdiction_id="330381"), expect=403)
    assert forbidden[0]["code"] == 403
    ours = (await post_request(client, fields_at(org_tree, key)))[0]["service_request_id"]
    theirs = (await post_request(client, fields_at(org_tree, other_town, grid=OTHER_GRID)))[0][
        "service_request_id"
    ]
    mine = await (await client.get(f"{BASE}/requests.json?api_key={key}")).json()
    assert [r["service_request_id"] for r in mine] == [ours]
    by_id = await (await client.get(f"{BASE}/requests.json?jurisdiction_id=330381002")).json()
    assert [r["service_request_id"] for r in by_id] == [theirs]
    assert (await client.get(f"{BASE}/requests.json?jurisdiction_id=999")).status == 404
    # Without a point the request belongs to the key's township.
    address_only = {"api_key": key, "service_code": "hazard.fire", "address_string": "万松路 12 号"}
    number = (await post_request(client, address_only))[0]["service_request_id"]
    (found,) = await (await client.get(f"{BASE}/requests/{number}.json")).json()
    assert found["address"] == "万松路 12 号" and found["lat"] is None


async def test_idempotent_retry_through_open311(
    client: TestClient[Any, Any], org_tree: OrgTree, clean_stores: StoreUrls
) -> None:
    """An Open311 client that sends an Idempotency-Key gets the same request back on a retry."""
    key = await api_key(clean_stores)
    idem = uuid.uuid4().hex
    first = await post_request(client, fields_at(org_tree, key), **{"Idempotency-Key": idem})
    again = await post_request(client, fields_at(org_tree, key), expect=200, **{"Idempotency-Key": idem})
    assert first == again
    assert len(await (await client.get(f"{BASE}/requests.json")).json()) == 1


async def test_reads_can_require_a_key(make_client: Any, org_tree: OrgTree, clean_stores: StoreUrls) -> None:
    """With open311_public off, reads without api_key are 403."""
    client = await make_client(reports_open311_public=False)
    key = await api_key(clean_stores)
    assert (await client.get(f"{BASE}/services.json")).status == 403
    assert (await client.get(f"{BASE}/services.json?api_key={key}")).status == 200


async def test_cli_key_is_accepted_on_writes(
    client: TestClient[Any, Any], org_tree: OrgTree, clean_stores: StoreUrls, tmp_path: Any
) -> None:
    """`dispatchd apikey add --name --org` prints a key that Open311 accepts as api_key; it is stored hashed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHD_")}
    env |= {
        "DISPATCHD_DATABASE_URL": clean_stores.database,
        "DISPATCHD_REDIS_URL": clean_stores.redis,
        "DISPATCHD_DATA_DIR": str(tmp_path),
    }
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "dispatchd.cli", "apikey", "add", "--name", "市民 App", "--org", TOWN],
        cwd=ROOT,
        env=env,
        text=True,
        capture_output=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    key = done.stdout.strip().splitlines()[-1]
    assert key.startswith("dk_")
    conn = await asyncpg.connect(clean_stores.database)
    try:
        stored = await conn.fetchrow("SELECT name, org_code, key_hash FROM api_keys")
    finally:
        await conn.close()
    assert (stored["name"], stored["org_code"]) == ("市民 App", TOWN) and key.encode() not in stored[
        "key_hash"
    ]
    (created,) = await post_request(client, fields_at(org_tree, key))
    assert created["service_request_id"].startswith("RA")


async def test_service_discovery(client: TestClient[Any, Any]) -> None:
    """discovery.json and discovery.xml point at the GeoReport v2 endpoint with both formats."""
    found = await (await client.get("/open311/discovery.json")).json()
    (endpoint,) = found["endpoints"]
    assert endpoint["specification"] == "http://wiki.open311.org/GeoReport_v2"
    assert endpoint["url"].endswith(BASE) and set(endpoint["formats"]) == {"text/xml", "application/json"}
    root = ET.fromstring(await (await client.get("/open311/discovery.xml")).read())
    assert [f.text for f in root.iter("format")] == ["text/xml", "application/json"]
