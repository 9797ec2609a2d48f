"""Login that cannot be turned against users, and the headers every answer carries."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp.test_utils import TestClient
from structlog.testing import capture_logs

from dispatchd.store.users import dummy_hash, hash_password
from dispatchd.web.auth import account_delay
from tests.conftest import COUNTY, PASSWORD, AppFactory, UserFactory


async def _login(
    client: TestClient[Any, Any], username: str, password: str, source: str = "127.0.0.1"
) -> aiohttp.ClientResponse:
    """Log in from the loopback address ``source`` (127.0.0.0/8: each is another client address)."""
    connector = aiohttp.TCPConnector(local_addr=(source, 0))
    async with aiohttp.ClientSession(connector=connector) as http:
        r = await http.post(
            f"http://127.0.0.1:{client.port}/api/v1/auth/login", json={"username": username, "password": password}
        )
        await r.read()
        return r


def test_account_delay_grows_and_is_bounded() -> None:
    """No delay for the first failures, then a quarter second doubling, never beyond the maximum."""
    delays = [account_delay(n, 3, 5.0) for n in range(12)]
    assert delays[:4] == [0.0, 0.0, 0.0, 0.0]
    assert delays[4:8] == [0.25, 0.5, 1.0, 2.0]
    assert max(delays) == 5.0 and delays == sorted(delays)
    assert account_delay(10**9, 3, 5.0) == 5.0 and account_delay(50, 3, 0) == 0.0


def test_dummy_hash_costs_what_a_real_one_costs() -> None:
    """The hash an unknown name is checked against has the parameters (memory, time, lanes) of real ones."""
    real, dummy = hash_password(PASSWORD), dummy_hash()
    assert real.rsplit("$", 2)[0] == dummy.rsplit("$", 2)[0]


async def test_an_address_that_fails_too_often_waits_but_the_owner_elsewhere_logs_in(
    make_client: AppFactory, make_user: UserFactory
) -> None:
    """Past address_failures from one address, that address gets 429 with Retry-After even with the right
    password; the account's owner logs in from another address at once."""
    client = await make_client(auth_address_failures=5, auth_account_max_delay=0.05)
    await make_user("duty_officer", COUNTY, username="wang")
    for _ in range(5):
        assert (await _login(client, "wang", "guess", "127.0.0.9")).status == 401
    r = await _login(client, "wang", PASSWORD, "127.0.0.9")
    assert r.status == 429 and int(r.headers["Retry-After"]) > 0
    r = await _login(client, "wang", PASSWORD, "127.0.0.2")
    assert r.status == 200
    assert r.headers["Cache-Control"] == "no-store"


async def test_other_accounts_from_the_same_address_are_throttled_too(
    make_client: AppFactory, make_user: UserFactory
) -> None:
    """Spraying many account names from one address meets the same per-address limit."""
    client = await make_client(auth_address_failures=3, auth_account_max_delay=0.05)
    for name in ("a1", "a2", "a3"):
        assert (await _login(client, name, "x", "127.0.0.7")).status == 401
    assert (await _login(client, "a4", "x", "127.0.0.7")).status == 429


async def test_nothing_typed_into_the_login_form_is_logged(
    make_client: AppFactory, make_user: UserFactory
) -> None:
    """A password typed into the name field, and the password itself, appear in no log line."""
    client = await make_client(auth_account_max_delay=0.05)
    officer = await make_user("duty_officer", COUNTY, username="zhao")
    with capture_logs() as logs:
        assert (await _login(client, "Tr0ub4dor&3-typed-as-name", "whatever")).status == 401
        assert (await _login(client, "zhao", "Tr0ub4dor&3-wrong")).status == 401
        assert (await _login(client, "zhao", PASSWORD)).status == 200
    text = json.dumps(logs, default=str)
    assert "Tr0ub4dor" not in text and PASSWORD not in text
    failed = [e for e in logs if e["event"] == "login_failed"]
    assert [e["account"] for e in failed] == [None, officer.user.username]
    assert [e["reason"] for e in failed] == ["unknown_account", "wrong_password"]


async def test_every_answer_carries_the_security_headers(client: TestClient[Any, Any]) -> None:
    """Pages, the API documentation, API answers and errors: no framing, a permissions policy, no
    version in Server; HTML has a CSP with frame-ancestors 'none'; API answers are not cached."""
    for path in ("/", "/login", "/board", "/api/docs", "/api/openapi.json", "/api/v1/units", "/no/such/page"):
        r = await client.get(path)
        h = r.headers
        assert h["X-Frame-Options"] == "DENY", path
        assert "camera=(self)" in h["Permissions-Policy"] and "payment=()" in h["Permissions-Policy"]
        assert h["X-Content-Type-Options"] == "nosniff"
        assert h["Server"] == "dispatchd"
        if h["Content-Type"].startswith("text/html"):
            assert "frame-ancestors 'none'" in h["Content-Security-Policy"], path
        if path.startswith("/api/v1"):
            assert h["Cache-Control"] == "no-store"
    r = await client.get("/api/docs")
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]


async def test_405_names_the_allowed_methods(client: TestClient[Any, Any]) -> None:
    """A method a route does not take is 405 with an Allow header listing those it does."""
    r = await client.patch("/api/v1/auth/login", json={})
    assert r.status == 405
    assert "POST" in r.headers["Allow"]
    assert (await r.json())["error"]["code"] == "method_not_allowed"
