"""Health, readiness, metrics, the OpenAPI document and a readable API page."""

from __future__ import annotations

import asyncio
import html
import json

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from dispatchd import __version__
from dispatchd.web.appkeys import API_ROUTES, CTX
from dispatchd.web.routing import ApiRoute, openapi_document


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "version": __version__})


async def readyz(request: web.Request) -> web.Response:
    async def pg() -> str:
        async with request.app[CTX].pool.acquire(timeout=2) as conn:
            await conn.fetchval("SELECT 1")
        return "ok"

    async def rd() -> str:
        await request.app[CTX].redis.ping()
        return "ok"

    result: dict[str, str] = {}
    for name, probe in (("postgres", pg), ("redis", rd)):
        try:
            result[name] = await asyncio.wait_for(probe(), 3)
        except Exception as exc:  # any failure means "not ready"; say which store and why
            result[name] = f"down: {type(exc).__name__}"
    ok = all(v == "ok" for v in result.values())
    return web.json_response(result, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[CTX].metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    routes: list[ApiRoute] = request.app[API_ROUTES]
    doc = openapi_document(routes, __version__)
    return web.json_response(doc, dumps=lambda o: json.dumps(o, ensure_ascii=False))


async def api_docs(request: web.Request) -> web.Response:
    """A self-contained page listing every route from the OpenAPI document (no external assets)."""
    routes: list[ApiRoute] = request.app[API_ROUTES]
    doc = openapi_document(routes, __version__)
    rows = []
    for path, ops in sorted(doc["paths"].items()):
        for method, op in ops.items():
            params = ", ".join(p["name"] for p in op.get("parameters", []))
            body = op.get("requestBody", {}).get("content", {})
            fields = ""
            for ctype, spec in body.items():
                props = spec["schema"].get("properties", {})
                req = set(spec["schema"].get("required", []))
                fields = f"<small>{html.escape(ctype)}</small><br>" + "<br>".join(
                    f"<code>{html.escape(k)}</code>{'*' if k in req else ''}: {html.escape(v.get('type', ''))}"
                    f"{' ' + html.escape(v.get('description', '')) if v.get('description') else ''}"
                    for k, v in props.items()
                )
            auth = "🔒" if op.get("security") else ""
            rows.append(
                f"<tr><td class=m>{method.upper()}</td><td><code>{html.escape(path)}</code> {auth}</td>"
                f"<td>{html.escape(op['summary'])}</td><td>{html.escape(params)}</td><td>{fields}</td></tr>"
            )
    page = f"""<!doctype html><html lang="zh-CN"><meta charset="utf-8">
<title>dispatchd API 接口文档</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;width:100%}}
td,th{{border-bottom:1px solid #ddd;padding:6px;vertical-align:top;text-align:left}}.m{{font-weight:bold}}
code{{background:#f4f4f4;padding:1px 3px}}</style>
<h1>dispatchd API 接口文档 <small>v{__version__}</small></h1>
<p>机器可读：<a href="/api/openapi.json">/api/openapi.json</a>（OpenAPI 3.1）。
🔒 需要 <code>Authorization: Bearer &lt;token&gt;</code>，令牌由 <code>POST /api/v1/auth/login</code> 获得。
错误格式 <code>{{"error": {{"code", "message"}}}}</code>，默认中文，<code>Accept-Language: en</code> 返回英文。</p>
<table><tr><th>方法</th><th>路径</th><th>说明 Summary</th><th>参数</th><th>请求体</th></tr>
{"".join(rows)}</table></html>"""
    return web.Response(text=page, content_type="text/html")


ROUTES = [
    ApiRoute("GET", "/healthz", healthz, "Process alive", "ops", public=True),
    ApiRoute(
        "GET",
        "/readyz",
        readyz,
        "PostgreSQL and Redis reachable",
        "ops",
        public=True,
        responses={200: "ready", 503: "a store is down"},
    ),
    ApiRoute("GET", "/metrics", metrics, "Prometheus metrics", "ops", public=True),
    ApiRoute("GET", "/api/openapi.json", openapi, "This document", "ops", public=True),
    ApiRoute(
        "GET", "/api/docs", api_docs, "Readable API documentation", "ops", public=True, documented=False
    ),
]
