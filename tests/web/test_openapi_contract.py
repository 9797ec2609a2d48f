"""The OpenAPI document is the truth: schemathesis generates requests for every documented operation,
valid ones and broken ones, against a running instance with real objects behind the paths; no answer
is a 5xx and none contradicts the document (status, content type, body schema, declared headers).

``DISPATCHD_CONTRACT_EXAMPLES`` sets the examples per operation and mode (default 8: the whole run
stays within a couple of minutes on two cores); a thorough run takes 100.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from typing import Any

import requests
import schemathesis
from aiohttp.test_utils import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dispatchd.clock import FakeClock
from dispatchd.domain.orgs import OrgTree
from dispatchd.web.appkeys import CTX
from tests.channels.hotline.test_api import KEY, ring
from tests.channels.reports.helpers import form, png, report_body
from tests.conftest import COUNTY, AppFactory, UserFactory
from tests.live.helpers import GRID, TOWN, make_case, make_squad, order
from tests.units.helpers import add_device
from tests.video.conftest import create_meeting

EXAMPLES = int(os.environ.get("DISPATCHD_CONTRACT_EXAMPLES", "8"))
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


def _import_schemathesis_fully() -> None:
    """Make schemathesis import, now, the modules it would import lazily during the run.

    pytest rewrites the modules of every installed pytest plugin (schemathesis is one) on first
    import, which parses their source with ``ast``. CPython 3.11 keeps one AST recursion counter per
    interpreter: a parse in the event-loop thread (a traceback's caret line when something is
    logged) while the run's thread rewrites a module fails the latter with "AST constructor
    recursion depth mismatch". Importing everything at collection, with one thread, avoids it."""
    doc = {
        "openapi": "3.0.3",
        "info": {"title": "warm-up", "version": "1"},
        "paths": {
            "/w/{id}": {
                "post": {
                    "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}],
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {"type": "object", "properties": {"t": {"type": "string", "pattern": "^a"}}}
                            }
                        }
                    },
                    "responses": {"200": {"description": "ok"}},
                }
            }
        },
    }
    for result in schemathesis.openapi.from_dict(doc).get_all_operations():
        op = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @settings(max_examples=1, database=None, phases=[Phase.generate], suppress_health_check=list(HealthCheck))
            @given(op.as_strategy(generation_mode=mode))
            def draw(case: Any) -> None:
                case.as_transport_kwargs(base_url="http://127.0.0.1:9")

            draw()


_import_schemathesis_fully()


async def _objects(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree, clock: FakeClock
) -> dict[str, Any]:
    """Real objects for the paths to reach: a case, a squad with a member and a device, an order,
    a report with a photo, a patrol, a hotline call (from the CTI webhook) and a meeting. Returns
    path-parameter values by path prefix."""
    officer = await make_user("duty_officer", COUNTY)
    call = await ring(client, clock, "contract-call", "13900001111", "967999")
    meeting = await create_meeting(client, officer.headers, invite=[TOWN])
    case = await make_case(client, officer, org_tree)
    unit, members = await make_squad(client, officer, make_user, org=TOWN)
    device = await add_device(client, officer.headers, unit["id"], "osmand", "contract-1")
    placed = await order(client, officer, case["id"], unit["id"])
    worker = await make_user("grid_worker", GRID)
    r = await client.post(
        "/api/v1/reports",
        data=form(report_body(org_tree), [("a.png", png(), "image/png")]),
        headers={**worker.headers, "Idempotency-Key": uuid.uuid4().hex},
    )
    report = await r.json()
    assert r.status == 201, report
    r = await client.post("/api/v1/patrols", json={"notes": "巡查"}, headers=worker.headers)
    patrol = await r.json()
    return {
        "/api/v1/incidents/": {"id": case["id"]},
        "/api/v1/orders/": {"id": placed["id"]},
        "/api/v1/units/": {"id": unit["id"], "username": members[0].user.username, "device_id": device["id"]},
        "/api/v1/reports/tasks/": {"id": report["incident_id"]},
        "/api/v1/patrols/": {"id": patrol.get("id", 1)},
        "/api/v1/media/": {"sha": report["photos"][0]["sha256"]},
        "/api/v1/orgs/": {"code": TOWN},
        "/api/v1/hotline/calls/": {"id": call["id"]},
        "/api/v1/meetings/": {"id": meeting["id"]},
    }


def _known(path: str, objects: dict[str, Any]) -> dict[str, Any] | None:
    names = re.findall(r"\{(\w+)\}", path)
    for prefix, values in objects.items():
        if path.startswith(prefix) and all(n in values for n in names):
            return {n: values[n] for n in names}
    return None


def _runner(strategy: Any, base: str, session: requests.Session, auth: dict[str, str], checks: list[Any]) -> Any:
    @settings(
        max_examples=EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=strategy)
    def run(case: Any) -> None:
        response = case.call(base_url=base, session=session, headers=auth, timeout=20)
        case.validate_response(response, checks=checks, headers=auth)

    return run


def _exercise(doc: dict[str, Any], base: str, token: str, objects: dict[str, Any]) -> list[str]:
    """Run every operation in every mode; return one line per failure (empty when all hold)."""
    schema = schemathesis.openapi.from_dict(doc)
    failures: list[str] = []
    session = requests.Session()
    auth = {"Authorization": f"Bearer {token}"}
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path == "/api/v1/auth/logout":
            continue  # it would revoke the token the rest runs with (tests/web covers it)
        known = _known(op.path, objects)
        runs: list[tuple[str, Any]] = [("positive", op.as_strategy())]
        if known:
            runs.append(("positive, existing objects", op.as_strategy(path_parameters=known)))
        runs.append(("negative", op.as_strategy(generation_mode=GenerationMode.NEGATIVE)))
        for mode, strategy in runs:
            try:
                _runner(strategy, base, session, auth, CHECKS if mode != "negative" else [not_a_server_error])()
            except Unsatisfiable:
                pass  # no input to break: an operation without parameters or body has no negative case
            except Exception as exc:
                failures.append(f"{op.label} ({mode}): {type(exc).__name__}: {str(exc)[:600]}")
    return failures


async def test_every_operation_keeps_to_the_document(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree, clock: FakeClock
) -> None:
    """Generated requests to every documented operation (valid, invalid, and reaching existing
    objects) never get a 5xx nor an answer the document does not describe."""
    client = await make_client(
        reports_photos_per_hour=100000,
        auth_account_max_delay=0,
        hotline_cti_hmac_key=KEY,
        video_host_addresses="127.0.0.1",
    )
    objects = await _objects(client, make_user, org_tree, clock)
    admin = await make_user("admin", COUNTY)
    doc = await (await client.get("/api/openapi.json")).json()
    base = f"http://127.0.0.1:{client.port}"
    failures = await asyncio.to_thread(_exercise, doc, base, admin.token, objects)
    assert failures == [], "\n".join(failures)
    # The run reached the handlers: created things and answered from existing objects, not only 4xx.
    registry = client.server.app[CTX].metrics.registry
    answered = {
        (s.labels["route"], s.labels["status"])
        for metric in registry.collect()
        if metric.name == "dispatchd_http_requests"
        for s in metric.samples
        if s.name.endswith("_total") and s.value
    }
    assert ("/api/v1/reports", "201") in answered and ("/api/v1/incidents/{id}", "200") in answered
    assert ("/api/v1/hotline/calls/{id}", "200") in answered and ("/api/v1/meetings/{id}", "200") in answered


async def test_the_document_declares_what_the_server_reads(client: TestClient[Any, Any]) -> None:
    """Idempotency-Key, the report's multipart parts, id bounds and 503 with Retry-After are declared."""
    doc = await (await client.get("/api/openapi.json")).json()
    submit = doc["paths"]["/api/v1/reports"]["post"]
    header = next(p for p in submit["parameters"] if p["in"] == "header")
    assert header["name"] == "Idempotency-Key" and header["required"] is True
    multipart = submit["requestBody"]["content"]["multipart/form-data"]
    assert multipart["schema"]["required"] == ["report"]
    assert set(multipart["schema"]["properties"]) == {"report", "photo"}
    assert multipart["encoding"]["report"]["contentType"] == "application/json"
    assert "application/json" in submit["requestBody"]["content"]
    case_id = doc["paths"]["/api/v1/incidents/{id}"]["get"]["parameters"][0]
    assert case_id["schema"] == {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
    limit = next(p for p in doc["paths"]["/api/v1/orders"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"]["maximum"] == 500
    unit_id = next(p for p in doc["paths"]["/api/v1/orders"]["get"]["parameters"] if p["name"] == "unit_id")
    assert unit_id["schema"]["maximum"] == 2**63 - 1
    refused = doc["paths"]["/api/v1/units"]["get"]["responses"]["503"]
    assert "Retry-After" in refused["headers"]
