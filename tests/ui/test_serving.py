"""How dispatchd serves the web UI: public pages with a strict policy, assets, settings, dictionaries."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from dispatchd.config import MapSettings
from dispatchd.web.ui import PAGES, content_security_policy, resolve_asset
from tests.conftest import COUNTY, ROOT, AppFactory, UserFactory

WEBUI = ROOT / "webui"


@pytest.mark.parametrize("path", sorted(PAGES))
async def test_pages_are_public_html_with_a_policy(client: TestClient[Any, Any], path: str) -> None:
    """Every page answers without a token, as HTML that may load scripts only from this server."""
    r = await client.get(path)
    assert r.status == 200
    assert r.headers["Content-Type"].startswith("text/html")
    csp = r.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    text = await r.text()
    assert '<script type="module" src="/ui/js/pages/' in text
    # Nothing on a page points off this server.
    assert not re.search(r"""(src|href)=["']https?://""", text)


async def test_assets_are_served_and_confined(client: TestClient[Any, Any]) -> None:
    """Scripts, styles and the squad app's service worker are served; nothing outside webui's asset folders is."""
    r = await client.get("/ui/js/map.js")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/javascript")
    r = await client.get("/ui/css/common.css")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/css")
    r = await client.get("/ui/squad/sw.js")
    assert r.status == 200 and r.headers["Service-Worker-Allowed"] == "/squad"
    r = await client.get("/ui/squad/manifest.webmanifest")
    manifest = json.loads(await r.text())
    assert manifest["start_url"] == "/squad" and manifest["display"] == "standalone"
    for bad in (
        "/ui/../pyproject.toml",
        "/ui/%2e%2e/pyproject.toml",
        "/ui/pages/board.html",
        "/ui/package.json",
        "/ui/js/.hidden",
    ):
        assert (await client.get(bad)).status == 404, bad
    r = await client.get("/ui/fonts.css")
    assert r.status == 200 and r.headers["Content-Type"].startswith("text/css")


def test_resolve_asset_refuses_escapes(tmp_path: Path) -> None:
    """Relative paths that climb out, absolute paths and hidden files resolve to nothing."""
    (tmp_path / "js").mkdir()
    (tmp_path / "js" / "a.js").write_text("x")
    (tmp_path / "secret").write_text("x")
    assert resolve_asset(tmp_path, "js/a.js") == (tmp_path / "js" / "a.js").resolve()
    for bad in ("../secret", "js/../../secret", "/etc/passwd", "js/.a.js", "", "js//a.js", "js\\a.js"):
        assert resolve_asset(tmp_path, bad) is None, bad


async def test_ui_config_needs_a_token_and_lists_capabilities(
    client: TestClient[Any, Any], make_user: UserFactory
) -> None:
    """The pages' settings are private; they carry the map settings (no tiles by default) and the capabilities."""
    assert (await client.get("/api/v1/ui/config")).status == 401
    acct = await make_user("duty_officer", COUNTY)
    r = await client.get("/api/v1/ui/config", headers=acct.headers)
    body = await r.json()
    assert body["map"]["tiles"] is None
    assert body["languages"] == ["zh-CN", "en"]
    assert body["features"]["incidents"] is True
    assert set(body["features"]) >= {"board_ws", "squad_ws", "hotline", "reports", "meetings", "stats", "cameras"}


async def test_tile_source_reaches_pages_and_policy(make_client: AppFactory, make_user: UserFactory) -> None:
    """A configured GCJ-02 tile source is handed to the pages, and its host (only) is allowed for images."""
    client = await make_client(
        map_tile_url="https://webrd0{s}.is.autonavi.com/appmaptile?style=8&x={x}&y={y}&z={z}",
        map_tile_crs="gcj02",
        map_tile_subdomains="1234",
        map_attribution="© 高德地图",
    )
    acct = await make_user("duty_officer", COUNTY)
    body = await (await client.get("/api/v1/ui/config", headers=acct.headers)).json()
    tiles = body["map"]["tiles"]
    assert tiles["crs"] == "gcj02" and tiles["subdomains"] == ["1", "2", "3", "4"]
    csp = (await client.get("/board")).headers["Content-Security-Policy"]
    assert "img-src 'self' data: blob: https://*.is.autonavi.com" in csp
    assert "connect-src 'self';" in csp


def test_policy_without_tiles_allows_no_other_host() -> None:
    """With no tile source the policy names no host at all."""
    csp = content_security_policy(MapSettings())
    assert "http" not in csp


def _keys_used() -> set[str]:
    used: set[str] = set()
    for path in WEBUI.glob("pages/*.html"):
        used |= set(re.findall(r'data-i18n(?:-[a-z-]+)?="([\w.]+)"', path.read_text(encoding="utf-8")))
    for path in WEBUI.glob("js/**/*.js"):
        # Code only: comments may show the syntax with a placeholder key.
        text = re.sub(r"^\s*//.*$", "", path.read_text(encoding="utf-8"), flags=re.M)
        used |= set(re.findall(r"""\bt\(\s*["']([\w.]+)["']""", text))
        used |= set(re.findall(r"""\bi18n:\s*["']([\w.]+)["']""", text))
    return used


def test_dictionaries_hold_the_same_keys_and_every_key_used() -> None:
    """zh-CN and en have exactly the same keys, no empty text, and every literal key the pages use."""
    zh = json.loads((WEBUI / "i18n" / "zh-CN.json").read_text(encoding="utf-8"))
    en = json.loads((WEBUI / "i18n" / "en.json").read_text(encoding="utf-8"))
    assert set(zh) == set(en)
    assert all(v.strip() for v in zh.values()) and all(v.strip() for v in en.values())
    missing = _keys_used() - set(zh)
    assert not missing, f"keys used but not in the dictionaries: {sorted(missing)}"
    # Placeholders match between the two languages.
    for key in zh:
        assert set(re.findall(r"\{(\w+)\}", zh[key])) == set(re.findall(r"\{(\w+)\}", en[key])), key


def test_no_external_reference_in_the_web_ui() -> None:
    """No script, style or page of webui/ loads anything from another host (links for the user aside)."""
    offenders = []
    for path in [*WEBUI.glob("pages/*.html"), *WEBUI.glob("css/*.css"), *WEBUI.glob("js/**/*.js")]:
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"""(?:url\(|import\s[^;]*from\s|src=|fetch\()\s*["']?(https?:)?//""", text):
            offenders.append(f"{path.name}: {m.group(0)}")
    assert not offenders, offenders
