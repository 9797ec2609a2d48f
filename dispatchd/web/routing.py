"""Routes with their documentation: every JSON route is declared once as an :class:`ApiRoute`,
which registers the handler and describes it in ``/api/openapi.json``."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from dispatchd.errors import not_found
from dispatchd.validate import INT64_MAX, Field, object_schema

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A path parameter of digits ({id:\d+}) is an id: a bigint in PostgreSQL.
_DIGITS = re.compile(r"\{(\w+):\\d\+\}")


@dataclass(frozen=True)
class ApiRoute:
    method: str
    path: str
    handler: Handler
    summary: str
    tag: str
    public: bool = False
    body: Sequence[Field] = ()
    query: Sequence[Field] = ()
    responses: dict[int, str] = field(default_factory=dict)
    content_type: str = "application/json"  # request body type when not JSON (multipart/form-data …)
    documented: bool = True
    headers: Sequence[Field] = ()  # request headers the route reads (Idempotency-Key …)
    # multipart/form-data with one JSON part of this name (the ``body`` fields) and ``photo`` parts;
    # the same fields are taken as a plain JSON body too.
    json_part: str = ""


def add_routes(app: web.Application, routes: Sequence[ApiRoute]) -> None:
    from dispatchd.web.appkeys import API_ROUTES, PUBLIC_RESOURCES  # appkeys imports this module

    for r in routes:
        ids = tuple(_DIGITS.findall(r.path))
        route = app.router.add_route(r.method, r.path, _ids_in_range(r.handler, ids) if ids else r.handler)
        app[API_ROUTES].append(r)
        if r.public:
            app[PUBLIC_RESOURCES].add(route.resource.canonical if route.resource else r.path)


def _ids_in_range(handler: Handler, names: tuple[str, ...]) -> Handler:
    """``handler`` behind a check that every id of the path fits a bigint: beyond it, nothing exists
    (404), rather than an error of the database."""

    async def checked(request: web.Request) -> web.StreamResponse:
        for name in names:
            digits = request.match_info.get(name, "")
            if len(digits.lstrip("0")) > 19 or int(digits or "0") > INT64_MAX:
                raise not_found()
        return await handler(request)

    checked.__name__ = getattr(handler, "__name__", "handler")
    return checked


# A path parameter, with aiohttp's optional pattern (which may hold a quantifier: ``\d{20}``).
_PARAM = re.compile(r"\{(\w+)(?::(?:[^{}]|\{[^{}]*\})+)?\}")


def openapi_document(routes: Sequence[ApiRoute], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        if not r.documented:
            continue
        path = _PARAM.sub(lambda m: "{" + m.group(1) + "}", r.path)
        op: dict[str, Any] = {"summary": r.summary, "tags": [r.tag], "operationId": r.handler.__name__}
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": _path_schema(pattern)}
            for name, pattern in _PARAM_PATTERN.findall(r.path)
        ]
        params += [
            {
                "name": f.name,
                "in": "header",
                "required": f.required,
                "schema": f.schema(),
                **({"description": f.description} if f.description else {}),
            }
            for f in r.headers
        ]
        params += [
            {
                "name": f.name,
                "in": "query",
                "required": f.required,
                "schema": f.schema(),
                **({"description": f.description} if f.description else {}),
            }
            for f in r.query
        ]
        if params:
            op["parameters"] = params
        if r.body and r.json_part:
            op["requestBody"] = {"required": True, "content": _multipart(r)}
        elif r.body:
            op["requestBody"] = {
                "required": True,
                "content": {r.content_type: {"schema": object_schema(r.body)}},
            }
        responses: dict[str, Any] = {
            str(k): {"description": v} for k, v in (r.responses or {200: "OK"}).items()
        }
        if not r.public:
            op["security"] = [{"bearer": []}]
            responses.setdefault("401", {"description": "no valid bearer token", "content": _ERR})
        responses.setdefault(
            "503",
            {
                "description": "a store (PostgreSQL or Redis) is unavailable or busy: retry after Retry-After",
                "headers": {"Retry-After": {"schema": {"type": "integer", "minimum": 1}}},
                "content": _ERR,
            },
        )
        responses.setdefault(
            "405", {"description": "method not allowed; Allow lists those the path takes", "content": _ERR}
        )
        responses.setdefault("default", {"description": "error", "content": _ERR})
        op["responses"] = responses
        paths.setdefault(path, {})[r.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "dispatchd API",
            "version": version,
            "description": "社会治理综合指挥 dispatchd — command-centre dispatch API. Errors are "
            '{"error": {"code", "message"}} in zh-CN, or English with Accept-Language: en.',
        },
        "servers": [{"url": "/"}],
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {"Error": _ERROR_SCHEMA},
        },
        "paths": paths,
    }


_PARAM_PATTERN = re.compile(r"\{(\w+)(?::((?:[^{}]|\{[^{}]*\})+))?\}")


def _path_schema(pattern: str) -> dict[str, Any]:
    """A path parameter's schema: digits are an id (a bigint), another pattern a string that matches it."""
    if pattern == r"\d+":
        return {"type": "integer", "minimum": 0, "maximum": INT64_MAX}
    if pattern:
        return {"type": "string", "pattern": f"^{pattern}$"}
    return {"type": "string", "pattern": "^[^/]+$"}


def _multipart(r: ApiRoute) -> dict[str, Any]:
    """The two bodies a route with photos takes: JSON, or multipart with the JSON part and photos."""
    fields = object_schema(r.body)
    return {
        "application/json": {"schema": fields},
        "multipart/form-data": {
            "schema": {
                "type": "object",
                "properties": {
                    r.json_part: {**fields, "description": "the fields, as one JSON object"},
                    "photo": {
                        "type": "array",
                        "items": {"type": "string", "format": "binary"},
                        "description": "photos (JPEG, PNG or WebP, judged by content), each its own part",
                    },
                },
                "required": [r.json_part],
            },
            "encoding": {
                r.json_part: {"contentType": "application/json"},
                "photo": {"contentType": "image/jpeg, image/png, image/webp"},
            },
        },
    }


_ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "fields": {"type": "object", "additionalProperties": {"type": "string"}},
            },
            "required": ["code", "message"],
        }
    },
}
_ERR = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
