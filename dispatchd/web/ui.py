"""The web UI: the pages, their static assets, the squad app's PWA files and the map settings.

Pages are plain HTML under ``webui/pages/`` that load ES modules from ``/ui/js/`` (no build step,
no external host: every script, style and icon ships in ``webui/``). Page routes are public (the
login happens in the page); the API behind them is not. Every page is sent with a Content Security
Policy that lets it talk only to this server, plus the configured tile host, so a stray reference
to a CDN fails loudly in the browser instead of leaking requests off a closed network.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from dispatchd import __version__
from dispatchd.config import MapSettings
from dispatchd.domain.incident import SATISFIED_FROM
from dispatchd.errors import not_found
from dispatchd.web.appkeys import CTX
from dispatchd.web.routing import ApiRoute, add_routes

# Page path -> file under webui/pages/.
PAGES: dict[str, str] = {
    "/": "index.html",
    "/login": "login.html",
    "/board": "board.html",
    "/console": "console.html",
    "/squad": "squad.html",
    "/grid": "grid.html",
    "/stats": "stats.html",
    "/admin": "admin.html",
}

# What each optional capability needs from the API; the pages hide what this instance lacks.
FEATURES: dict[str, str] = {
    "incidents": "/api/v1/incidents",
    "taxonomy": "/api/v1/taxonomy",
    "stats": "/api/v1/stats",
    "units": "/api/v1/units",
    "nearest": "/api/v1/units/nearest",
    "orders": "/api/v1/orders",
    "board_ws": "/ws/board",
    "squad_ws": "/ws/squad",
    "hotline": "/api/v1/hotline/calls",
    "reports": "/api/v1/reports",
    "patrols": "/api/v1/patrols",
    "meetings": "/api/v1/meetings",
    "cameras": "/api/v1/cameras",
}

# Directories of webui/ served under /ui/ (pages are served only at their routes, with their headers).
ASSET_DIRS = frozenset({"css", "js", "i18n", "img", "squad"})

_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".json": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".html": "text/html",
}


def _tile_origins(settings: MapSettings) -> list[str]:
    """Origins the pages may load map images from: those of the configured tile templates."""
    origins: list[str] = []
    for template in (settings.tile_url, settings.label_url):
        if not template:
            continue
        parts = urlsplit(template)
        if parts.scheme in ("http", "https") and parts.netloc:
            host = parts.netloc
            if "{s}" in host:  # t{s}.tianditu.gov.cn: allow every sub-domain of the service
                host = "*." + host.split(".", 1)[1] if "." in host else host
            origins.append(f"{parts.scheme}://{host}")
    return origins


def content_security_policy(settings: MapSettings) -> str:
    img = " ".join(["'self'", "data:", "blob:", *_tile_origins(settings)])
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            # Styles set from script (element.style) and style attributes on drawn SVG.
            "style-src 'self' 'unsafe-inline'",
            f"img-src {img}",
            "media-src 'self' blob: data:",
            "connect-src 'self'",
            "font-src 'self'",
            "worker-src 'self'",
            "manifest-src 'self'",
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def _webui(request: web.Request) -> Path:
    root: Path = request.app[CTX].settings.paths.webui
    return root


def _file_response(path: Path, content_type: str, extra: dict[str, str] | None = None) -> web.FileResponse:
    headers = {
        "Content-Type": content_type,
        # Revalidate every time (ETag / Last-Modified answer 304): a wall display must never run
        # yesterday's script after an upgrade.
        "Cache-Control": "no-cache",
        "X-Content-Type-Options": "nosniff",
        **(extra or {}),
    }
    return web.FileResponse(path, headers=headers)


async def page(request: web.Request) -> web.StreamResponse:
    resource = request.match_info.route.resource
    name = PAGES[resource.canonical if resource is not None else request.path]
    path = _webui(request) / "pages" / name
    if not path.is_file():
        raise not_found("页面", "page")
    csp = content_security_policy(request.app[CTX].settings.map)
    return _file_response(
        path,
        "text/html; charset=utf-8",
        {"Content-Security-Policy": csp, "Referrer-Policy": "no-referrer"},
    )


def resolve_asset(root: Path, rel: str) -> Path | None:
    """The file ``rel`` names under ``root``, or None: no escape upwards, no hidden files."""
    if not rel or rel.startswith("/") or "\\" in rel or "\x00" in rel:
        return None
    parts = rel.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    base = root.resolve()
    path = (base / rel).resolve()
    if not path.is_relative_to(base) or not path.is_file():
        return None
    return path


async def asset(request: web.Request) -> web.StreamResponse:
    rel = request.match_info["path"]
    path = resolve_asset(_webui(request), rel)
    if path is None or rel.split("/", 1)[0] not in ASSET_DIRS:
        raise not_found("文件", "file")
    suffix = path.suffix.lower()
    content_type = _TYPES.get(suffix) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type.endswith(("json", "javascript")):
        content_type += "; charset=utf-8"
    extra: dict[str, str] = {}
    if rel == "squad/sw.js":
        # The squad app's service worker lives with the other assets but controls /squad.
        extra["Service-Worker-Allowed"] = "/squad"
    return _file_response(path, content_type, extra)


# The Chinese web font, vendored from the npm registry by `make` (webui/package.json): a wall display
# or a phone without CJK fonts still shows every character. Absent, the pages use system fonts.
FONT_PACKAGE = Path("node_modules/@fontsource-variable/noto-sans-sc")


async def fonts_css(request: web.Request) -> web.StreamResponse:
    package = _webui(request) / FONT_PACKAGE
    css_path = package / "index.css"
    if css_path.is_file():
        css = css_path.read_text(encoding="utf-8").replace("url(./files/", "url(/ui/fonts/")
    else:
        css = "/* no vendored web font (run make): system fonts are used */\n"
    return web.Response(
        text=css, content_type="text/css", charset="utf-8", headers={"Cache-Control": "no-cache"}
    )


async def font_file(request: web.Request) -> web.StreamResponse:
    path = resolve_asset(_webui(request) / FONT_PACKAGE / "files", request.match_info["name"])
    if path is None or path.suffix != ".woff2":
        raise not_found("文件", "file")
    # Font files never change under one name: cache them for a year.
    return web.FileResponse(
        path, headers={"Content-Type": "font/woff2", "Cache-Control": "public, max-age=31536000, immutable"}
    )


def _stale_after(app: web.Application) -> int:
    """Seconds without a fix before a squad is marked stale ([units] stale_after)."""
    return app[CTX].settings.units.stale_after


def _has_route(app: web.Application, path: str) -> bool:
    for resource in app.router.resources():
        if resource.canonical == path:
            return True
    return False


def features(app: web.Application) -> dict[str, bool]:
    return {name: _has_route(app, path) for name, path in FEATURES.items()}


async def ui_config(request: web.Request) -> web.Response:
    m = request.app[CTX].settings.map
    tiles: dict[str, Any] | None = None
    if m.tile_url:
        tiles = {
            "url": m.tile_url,
            "labels": m.label_url or None,
            "crs": "gcj02" if m.tile_crs == "gcj02" else "wgs84",
            "subdomains": list(m.tile_subdomains),
            "attribution": m.attribution,
        }
    return web.json_response(
        {
            "version": __version__,
            "languages": ["zh-CN", "en"],
            "map": {"tiles": tiles, "min_zoom": m.min_zoom, "max_zoom": m.max_zoom},
            "units_stale_after": _stale_after(request.app),
            # The case rules a form needs to say up front (the server decides all the same).
            "incidents": {
                "max_extension_hours": request.app[CTX].settings.incidents.max_extension_hours,
                "max_returns": request.app[CTX].settings.incidents.max_returns,
                "satisfied_from": SATISFIED_FROM,
            },
            "features": features(request.app),
        }
    )


ROUTES = [
    ApiRoute(
        "GET",
        "/api/v1/ui/config",
        ui_config,
        "Settings the web pages need: the map's tile source and which capabilities this instance has",
        "ui",
        responses={200: "map settings and features"},
    ),
    *[
        ApiRoute(method, path, page, f"Web page {path}", "ui", public=True, documented=False)
        for path in PAGES
        for method in ("GET", "HEAD")
    ],
    ApiRoute("GET", "/ui/fonts.css", fonts_css, "Web font faces", "ui", public=True, documented=False),
    ApiRoute("GET", "/ui/fonts/{name}", font_file, "Web font file", "ui", public=True, documented=False),
    ApiRoute("GET", "/ui/{path:.+}", asset, "Web UI asset", "ui", public=True, documented=False),
]


def setup(app: web.Application) -> None:
    add_routes(app, ROUTES)
