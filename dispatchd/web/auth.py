"""Bearer-token authentication and jurisdiction.

Every route is private unless declared public. The token comes from ``Authorization: Bearer …``
or, for websockets and links to photos, from ``?token=…``. A user sees only the subtree of the
organisation rooted at their home unit.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import structlog
from aiohttp import web

from dispatchd.context import Context
from dispatchd.errors import forbidden
from dispatchd.store import users as user_store
from dispatchd.store.keys import ratelimit
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


_LOGIN_FAILURES_ALLOWED = 10
_LOGIN_WINDOW = 300


async def login(request: web.Request) -> web.Response:
    body = await json_body(request, LOGIN_FIELDS)
    username, password = body["username"], body["password"]
    redis = request.app[CTX].redis
    key = ratelimit("login", username)
    failures = int(await redis.get(key) or 0)
    if failures >= _LOGIN_FAILURES_ALLOWED:
        raise ApiError(
            429,
            "too_many_attempts",
            "登录失败次数过多，请 5 分钟后再试",
            "too many failed logins; try again in 5 minutes",
        )
    async with request.app[CTX].pool.acquire() as conn:
        found = await user_store.find_for_login(conn, username)
        ok = False
        if found is not None:
            ok = await asyncio.to_thread(user_store.verify_password, found[1], password)
        if not ok or found is None:
            async with redis.pipeline() as pipe:
                pipe.incr(key)
                pipe.expire(key, _LOGIN_WINDOW)
                await pipe.execute()
            request.app[CTX].metrics.login_failures.inc()
            log.info("login_failed", username=username)
            raise ApiError(401, "bad_credentials", "用户名或密码错误", "wrong username or password")
        user = found[0]
        ttl = timedelta(seconds=request.app[CTX].settings.auth.token_ttl)
        token, expires = await user_store.issue_token(conn, user.id, request.app[CTX].clock.now(), ttl)
    await redis.delete(key)
    log.info("login", username=user.username, role=user.role)
    return web.json_response(
        {"token": token, "token_type": "Bearer", "expires_at": expires.isoformat(), "user": user.as_json()}
    )


async def logout(request: web.Request) -> web.Response:
    token = bearer_token(request)
    if token:
        async with request.app[CTX].pool.acquire() as conn:
            await user_store.revoke_token(conn, token)
    return web.json_response({"ok": True})


async def me(request: web.Request) -> web.Response:
    user = current_user(request)
    unit = request.app[CTX].orgs.get(user.org)
    return web.json_response(
        {**user.as_json(), "org_name": unit.name, "org_name_en": unit.name_en, "org_level": unit.level}
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
        responses={200: "token", 401: "wrong credentials", 429: "locked"},
    ),
    ApiRoute("POST", "/api/v1/auth/logout", logout, "Revoke the current token", "auth"),
    ApiRoute("GET", "/api/v1/auth/me", me, "The current user", "auth"),
]
