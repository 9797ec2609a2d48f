"""Bearer-token authentication and jurisdiction.

Every route is private unless declared public. The token comes from ``Authorization: Bearer …``
or, for websockets and links to photos, from ``?token=…``. A user sees only the subtree of the
organisation rooted at their home unit.
"""

from __future__ import annotations

import asyncio
import math
from datetime import timedelta
from typing import Any

import structlog
from aiohttp import web

from dispatchd.context import Context
from dispatchd.errors import Throttled, forbidden
from dispatchd.store import logins
from dispatchd.store import users as user_store
from dispatchd.store.users import User
from dispatchd.validate import Field
from dispatchd.web.appkeys import CTX, PUBLIC_RESOURCES
from dispatchd.web.errors import ApiError, unauthorized
from dispatchd.web.routing import ApiRoute
from dispatchd.web.validate import json_body

USER_KEY = web.RequestKey("user", User)
log = structlog.get_logger("dispatchd.auth")


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return request.query.get("token") or None


async def authenticate(ctx: Context, token: str | None) -> User | None:
    if not token or len(token) > 200:
        return None
    async with ctx.pool.acquire() as conn:
        return await user_store.user_for_token(conn, token, ctx.clock.now())


def is_public(request: web.Request) -> bool:
    resource = request.match_info.route.resource
    if resource is None:
        return True  # unmatched: the 404/405 answer needs no token
    return resource.canonical in request.app[PUBLIC_RESOURCES]


@web.middleware
async def auth_middleware(request: web.Request, handler: Any) -> web.StreamResponse:
    if not is_public(request):
        user = await authenticate(request.app[CTX], bearer_token(request))
        if user is None:
            raise unauthorized()
        request[USER_KEY] = user
        structlog.contextvars.bind_contextvars(user=user.username)
    response: web.StreamResponse = await handler(request)
    return response


def current_user(request: web.Request) -> User:
    user = request.get(USER_KEY)
    if user is None:
        raise unauthorized()
    assert isinstance(user, User)
    return user


def require_role(request: web.Request, *roles: str) -> User:
    user = current_user(request)
    if user.role not in roles and user.role != "admin":
        raise forbidden(
            f"此操作需要以下角色之一：{'、'.join(roles)}", f"this needs one of the roles: {', '.join(roles)}"
        )
    return user


def jurisdiction(request: web.Request) -> frozenset[str]:
    """Codes of every unit the caller may see (their home unit and everything below it)."""
    codes: frozenset[str] = request.app[CTX].orgs.descendants(current_user(request).org)
    return codes


def may_see(request: web.Request, unit_code: str) -> bool:
    inside: bool = request.app[CTX].orgs.is_within(unit_code, current_user(request).org)
    return inside


def account_delay(failures: int, free: int, max_delay: float) -> float:
    """Seconds to wait before checking a login of an account name that failed ``failures`` times:
    nothing for the first ``free``, then a quarter second doubling with each failure, at most
    ``max_delay``. It slows guessing against one account without ever refusing its owner."""
    over = failures - free
    if over <= 0 or max_delay <= 0:
        return 0.0
    return float(min(max_delay, 0.25 * 2 ** min(over - 1, 16)))


async def login(request: web.Request) -> web.Response:
    """Log in. Throttled per client address (429 past ``[auth] address_failures`` in the window) and
    slowed per account name (:func:`account_delay`); an unknown name costs the same as a known one
    (a dummy hash is verified); what was typed is never logged. PostgreSQL only: no Redis needed."""
    ctx = request.app[CTX]
    settings = ctx.settings.auth
    body = await json_body(request, LOGIN_FIELDS)
    username, password = body["username"], body["password"]
    address = request.remote or "unknown"
    now = ctx.clock.now()
    window = timedelta(seconds=settings.failure_window)
    async with ctx.pool.acquire() as conn:
        key = logins.account_key(await logins.hash_key(conn), username)
        seen = await logins.failures(conn, address, key, now, window)
    if seen.address >= settings.address_failures and seen.address_since is not None:
        wait = max(1.0, (seen.address_since + window - now).total_seconds())
        log.info("login_throttled", remote=address, failures=seen.address)
        raise Throttled(
            f"此地址登录失败次数过多，请 {math.ceil(wait / 60)} 分钟后再试（其他地址不受影响）",
            f"too many failed logins from this address; try again in {math.ceil(wait / 60)} min"
            " (other addresses are not affected)",
            retry_after=wait,
            code="too_many_attempts",
        )
    delay = account_delay(seen.account, settings.account_free_failures, settings.account_max_delay)
    if delay:
        await asyncio.sleep(delay)  # pacing in real time, as a peer sees it
    async with ctx.pool.acquire() as conn:
        found = await user_store.find_for_login(conn, username)
    stored = found[1] if found is not None else await asyncio.to_thread(user_store.dummy_hash)
    ok = await asyncio.to_thread(user_store.verify_password, stored, password)
    if not ok or found is None:
        async with ctx.pool.acquire() as conn:
            await logins.record_failure(conn, address, key, ctx.clock.now(), window)
        ctx.metrics.login_failures.inc()
        # Never what was typed: a password typed into the name field must not reach the log.
        log.info(
            "login_failed",
            account=found[0].username if found is not None else None,
            reason="wrong_password" if found is not None else "unknown_account",
            remote=address,
        )
        raise ApiError(401, "bad_credentials", "用户名或密码错误", "wrong username or password")
    user = found[0]
    ttl = timedelta(seconds=settings.token_ttl)
    async with ctx.pool.acquire() as conn:
        await logins.clear_account(conn, key)
        token, expires = await user_store.issue_token(conn, user.id, ctx.clock.now(), ttl)
    log.info("login", username=user.username, role=user.role, remote=address)
    return web.json_response(
        {"token": token, "token_type": "Bearer", "expires_at": expires.isoformat(), "user": user.as_json()},
        headers={"Cache-Control": "no-store"},
    )


async def warm_up(app: web.Application) -> None:
    """Make the dummy hash before the first login with an unknown name would have to."""
    await asyncio.to_thread(user_store.dummy_hash)


async def logout(request: web.Request) -> web.Response:
    token = bearer_token(request)
    if token:
        async with request.app[CTX].pool.acquire() as conn:
            await user_store.revoke_token(conn, token)
    return web.json_response({"ok": True})


async def me(request: web.Request) -> web.Response:
    user = current_user(request)
    unit = request.app[CTX].orgs.get(user.org)
    dept = request.app[CTX].orgs.departments.get(user.department) if user.department else None
    return web.json_response(
        {
            **user.as_json(),
            "org_name": unit.name,
            "org_name_en": unit.name_en,
            "org_level": unit.level,
            # A department handler works for the department: its name is what the screens show.
            "department_name": dept.name if dept is not None else None,
            "department_name_en": dept.name_en if dept is not None else None,
        }
    )


LOGIN_FIELDS = (
    Field("username", required=True, max_length=64),
    Field("password", required=True, max_length=256),
)

ROUTES = [
    ApiRoute(
        "POST",
        "/api/v1/auth/login",
        login,
        "Log in; returns an expiring bearer token",
        "auth",
        public=True,
        body=LOGIN_FIELDS,
        responses={
            200: "token",
            401: "wrong credentials",
            429: "too many failed logins from this client address (Retry-After)",
        },
    ),
    ApiRoute("POST", "/api/v1/auth/logout", logout, "Revoke the current token", "auth"),
    ApiRoute("GET", "/api/v1/auth/me", me, "The current user", "auth"),
]
