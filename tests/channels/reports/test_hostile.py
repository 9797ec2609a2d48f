"""Broken and hostile report submissions: every one is a 4xx naming the problem, never a 5xx."""

from __future__ import annotations

import json
import uuid
from typing import Any

from aiohttp.test_utils import TestClient

from dispatchd.domain.orgs import OrgTree
from tests.channels.reports.helpers import GRID, report_body
from tests.conftest import Account, UserFactory


def _headers(who: Account, content_type: str) -> dict[str, str]:
    return {**who.headers, "Idempotency-Key": uuid.uuid4().hex, "Content-Type": content_type}


async def _post(client: TestClient[Any, Any], who: Account, body: bytes, content_type: str) -> tuple[int, Any]:
    r = await client.post("/api/v1/reports", data=body, headers=_headers(who, content_type))
    text = await r.text()
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, text


async def test_multipart_without_boundary_is_400(client: TestClient[Any, Any], make_user: UserFactory) -> None:
    """A multipart type without a boundary parameter is refused with 400 invalid_multipart."""
    worker = await make_user("grid_worker", GRID)
    status, body = await _post(client, worker, b"--x\r\n\r\n", "multipart/form-data")
    assert status == 400 and body["error"]["code"] == "invalid_multipart"


async def test_multipart_with_a_huge_header_line_is_400(
    client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """A part whose header line is megabytes long is refused with a 4xx, not read into memory."""
    worker = await make_user("grid_worker", GRID)
    body = (
        b"--b\r\nContent-Disposition: form-data; name=\"report\"; x=\"" + b"a" * (1024 * 1024) + b"\"\r\n\r\n{}\r\n--b--\r\n"
    )
    status, reply = await _post(client, worker, body, "multipart/form-data; boundary=b")
    assert 400 <= status < 500 and reply["error"]["code"] in ("invalid_multipart", "payload_too_large")


async def test_multipart_cut_short_is_400(client: TestClient[Any, Any], make_user: UserFactory) -> None:
    """A multipart body that ends in the middle of its JSON part is refused with 400."""
    worker = await make_user("grid_worker", GRID)
    body = b"--b\r\nContent-Disposition: form-data; name=\"report\"\r\n\r\n{\"categ"
    status, reply = await _post(client, worker, body, "multipart/form-data; boundary=b")
    assert status == 400 and reply["error"]["code"] in ("invalid_multipart", "invalid_json")


async def test_nul_in_any_text_field_is_422(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """A NUL character in a text field (or in a nested object) is 422 naming the field, and a retry
    of the same bad report gets the same answer (a phone does not retry into a 500 forever)."""
    worker = await make_user("grid_worker", GRID)
    for body in (
        report_body(org_tree, description="楼道\u0000充电"),
        report_body(org_tree, address="\u0000"),
        {**report_body(org_tree), "location": {"lat": 27.8, "lon": 120.6, "note": "x\u0000"}},
    ):
        raw = json.dumps(body).encode()
        for _ in range(2):
            status, reply = await _post(client, worker, raw, "application/json")
            assert status == 422, reply
            assert reply["error"]["code"] == "invalid"


async def test_deeply_nested_and_huge_numbers_are_400_or_422(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: OrgTree
) -> None:
    """JSON nested thousands deep is 400 json_too_deep; numbers beyond any range are refused."""
    worker = await make_user("grid_worker", GRID)
    status, reply = await _post(client, worker, b"[" * 50000 + b"]" * 50000, "application/json")
    assert status == 400 and reply["error"]["code"] == "json_too_deep"
    deep = b'{"category": ' + b'{"a": ' * 100 + b"1" + b"}" * 100 + b"}"
    status, reply = await _post(client, worker, deep, "application/json")
    assert status == 400 and reply["error"]["code"] == "json_too_deep"
    status, reply = await _post(client, worker, b'{"location": {"lat": ' + b"9" * 5000 + b"}}", "application/json")
    assert status == 400 and reply["error"]["code"] == "invalid_json"
    huge = json.dumps({**report_body(org_tree), "location": {"lat": 10**30, "lon": 120.6}}).encode()
    status, reply = await _post(client, worker, huge, "application/json")
    assert status == 422


async def test_wrong_content_type_is_415(client: TestClient[Any, Any], make_user: UserFactory) -> None:
    """A report sent as a urlencoded form is refused with 415 naming the accepted types."""
    worker = await make_user("grid_worker", GRID)
    status, reply = await _post(client, worker, b"category=x", "application/x-www-form-urlencoded")
    assert status == 415 and reply["error"]["code"] == "unsupported_media_type"
