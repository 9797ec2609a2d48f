"""The HTTP foundation on a real port with real PostgreSQL and Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient

from dispatchd.embedded import EmbeddedRedis
from dispatchd.web.appkeys import CTX
from tests.conftest import COUNTY, PASSWORD, AppFactory, UserFactory


async def test_healthz_and_readyz(client: TestClient[Any, Any]) -> None:
    """/healthz answers; /readyz reports both stores ok."""
    r = await client.get("/healthz")
    assert r.status == 200 and (await r.json())["status"] == "ok"
    r = await client.get("/readyz")
    assert r.status == 200
    assert await r.json() == {"postgres": "ok", "redis": "ok"}


async def test_readyz_names_the_store_that_is_down(make_client: AppFactory, tmp_path: Path) -> None:
    """With its Redis server stopped, /readyz answers 503 naming redis as down and postgres ok."""
    own = EmbeddedRedis(tmp_path / "own-redis")
    own.start()
    try:
        c = await make_client(redis_url=own.url)
        assert (await c.get("/readyz")).status == 200
        own.stop()
        r = await c.get("/readyz")
        assert r.status == 503
        body = await r.json()
        assert body["postgres"] == "ok" and body["redis"].startswith("down")
    finally:
        own.stop()


async def test_api_requires_token(client: TestClient[Any, Any]) -> None:
    """An API route without a token answers 401 JSON, in zh-CN by default and English on request."""
    r = await client.get("/api/v1/orgs")
    assert r.status == 401
    body = await r.json()
    assert body["error"]["code"] == "unauthorized" and "登录" in body["error"]["message"]
    r = await client.get("/api/v1/orgs", headers={"Accept-Language": "en-US,en;q=0.9"})
    assert "authentication required" in (await r.json())["error"]["message"]
    r = await client.get("/api/v1/orgs", headers={"Authorization": "Bearer nonsense"})
    assert r.status == 401


async def test_login_and_token(client: TestClient[Any, Any], make_user: UserFactory) -> None:
    """Login with the right password gives a token that works; a wrong one gives 401."""
    acct = await make_user("duty_officer", COUNTY, username="zhang")
    r = await client.post("/api/v1/auth/login", json={"username": "zhang", "password": "wrong"})
    assert r.status == 401 and (await r.json())["error"]["code"] == "bad_credentials"
    r = await client.post("/api/v1/auth/login", json={"username": "zhang", "password": PASSWORD})
    assert r.status == 200
    body = await r.json()
    assert body["user"]["role"] == "duty_officer"
    r = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert r.status == 200 and (await r.json())["username"] == acct.user.username


async def test_login_bad_input(client: TestClient[Any, Any]) -> None:
    """Malformed login bodies get 400 or 422 with a message per field."""
    r = await client.post(
        "/api/v1/auth/login", data=b"{not json", headers={"Content-Type": "application/json"}
    )
    assert r.status == 400 and (await r.json())["error"]["code"] == "invalid_json"
    r = await client.post("/api/v1/auth/login", json={"username": 5})
    assert r.status == 422
    fields = (await r.json())["error"]["fields"]
    assert set(fields) == {"username", "password"}


async def test_wrong_passwords_never_lock_out_the_right_one(
    make_client: AppFactory, make_user: UserFactory
) -> None:
    """Ten wrong passwords for an account do not stop its owner's right password (no lock-out)."""
    client = await make_client(auth_account_max_delay=0.05)
    await make_user("duty_officer", COUNTY, username="li")
    for _ in range(10):
        r = await client.post("/api/v1/auth/login", json={"username": "li", "password": "x"})
        assert r.status == 401
    r = await client.post("/api/v1/auth/login", json={"username": "li", "password": PASSWORD})
    assert r.status == 200


async def test_orgs_limited_to_subtree(client: TestClient[Any, Any], make_user: UserFactory) -> None:
    """A township officer sees only their township's subtree; the county officer sees all townships."""
    tree = client.server.app[CTX].orgs
    townships = [u.code for u in tree.children(COUNTY)]
    assert len(townships) >= 2
    mine, other = townships[0], townships[1]
    officer = await make_user("duty_officer", mine)
    r = await client.get("/api/v1/orgs", headers=officer.headers)
    codes = {u["code"] for u in (await r.json())["units"]}
    assert mine in codes and other not in codes and COUNTY not in codes
    assert all(tree.is_within(c, mine) for c in codes)
    r = await client.get(f"/api/v1/orgs/{other}", headers=officer.headers)
    assert r.status == 404
    county = await make_user("duty_officer", COUNTY)
    r = await client.get("/api/v1/orgs?depth=1", headers=county.headers)
    codes = {u["code"] for u in (await r.json())["units"]}
    assert {mine, other, COUNTY} <= codes


async def test_openapi_and_docs(client: TestClient[Any, Any]) -> None:
    """The OpenAPI document lists the JSON routes with their security; the docs page renders."""
    r = await client.get("/api/openapi.json")
    doc = await r.json()
    assert doc["openapi"].startswith("3.")
    assert "post" in doc["paths"]["/api/v1/auth/login"]
    assert "security" in doc["paths"]["/api/v1/orgs"]["get"]
    assert "security" not in doc["paths"]["/api/v1/auth/login"]["post"]
    r = await client.get("/api/docs")
    assert r.status == 200 and "/api/v1/orgs" in await r.text()


async def test_metrics_count_requests(client: TestClient[Any, Any]) -> None:
    """/metrics is Prometheus text and counts requests per route and status."""
    await client.get("/healthz")
    r = await client.get("/metrics")
    text = await r.text()
    assert r.status == 200
    assert 'dispatchd_http_requests_total{method="GET",route="/healthz",status="200"}' in text
    assert "dispatchd_http_request_seconds_bucket" in text


async def test_unknown_route_is_json_404(client: TestClient[Any, Any]) -> None:
    """Unknown paths and wrong methods answer JSON errors, with a request id header."""
    r = await client.get("/nope")
    assert r.status == 404 and (await r.json())["error"]["code"] == "not_found"
    assert r.headers["X-Request-ID"]
    r = await client.delete("/healthz")
    assert r.status == 405
