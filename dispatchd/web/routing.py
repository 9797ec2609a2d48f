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


_PARAM = re.compile(r"\{(\w+)(?::[^}]+)?\}")


def openapi_document(routes: Sequence[ApiRoute], version: str) -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        if not r.documented:
            continue
        path = _PARAM.sub(lambda m: "{" + m.group(1) + "}", r.path)
        op: dict[str, Any] = {"summary": r.summary, "tags": [r.tag], "operationId": r.handler.__name__}
        params: list[dict[str, Any]] = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAM.findall(r.path)
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
        if r.body:
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
