"""Browser fixtures: Debian's Chromium driven by Playwright against the app on a real loopback port.

Every page opened through :func:`open_page` is watched: a console error, an uncaught exception or
a request to any host but the loopback one fails the test (the request is refused before it
leaves). Screenshots go to ``artifacts/screenshots/`` (ignored by git).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from aiohttp.test_utils import TestClient
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, Route, async_playwright

from dispatchd.domain.orgs import OrgTree
from tests.conftest import ROOT, Account, require_tool

SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}

TOWNSHIP = "330381001"

# Target sizes of the screens.
WALL = {"width": 1920, "height": 1080}
WALL_4K = {"width": 3840, "height": 2160}
DESK = {"width": 1600, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    path = require_tool("chromium")
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=path, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@dataclass
class Watch:
    """What a page did that a test must not accept: console errors and requests off this machine."""

    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    expected: list[str] = field(default_factory=list)

    def expect(self, fragment: str) -> None:
        """A console error the test provokes on purpose (a wrong password's 401)."""
        self.expected.append(fragment)

    def check(self) -> None:
        assert not self.foreign, f"requests to other hosts: {self.foreign}"
        unexpected = [e for e in self.errors if not any(f in e for f in self.expected)]
        assert not unexpected, f"console errors: {unexpected}"


@dataclass
class Browsing:
    client: TestClient[Any, Any]
    browser: Browser
    contexts: list[BrowserContext] = field(default_factory=list)
    watches: list[Watch] = field(default_factory=list)

    def url(self, path: str) -> str:
        return str(self.client.make_url(path))

    async def open_page(
        self,
        path: str,
        *,
        token: str | None = None,
        user: dict[str, Any] | None = None,
        viewport: dict[str, int] | None = None,
        lang: str | None = None,
        scale: float = 1,
        mobile: bool = False,
        permissions: tuple[str, ...] = (),
        geolocation: dict[str, float] | None = None,
    ) -> tuple[Page, Watch]:
        """A new browser context (own storage) on ``path``, logged in with ``token`` if given."""
        context = await self.browser.new_context(
            viewport=viewport or DESK,
            device_scale_factor=scale,
            is_mobile=mobile,
            has_touch=mobile,
            locale="zh-CN",
            timezone_id="Asia/Shanghai",
            permissions=list(permissions),
            geolocation=geolocation,
        )
        self.contexts.append(context)
        watch = Watch()
        self.watches.append(watch)

        async def guard(route: Route) -> None:
            host = urlsplit(route.request.url).hostname or ""
            if route.request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
                await route.continue_()
            else:
                watch.foreign.append(route.request.url)
                await route.abort("blockedbyclient")

        await context.route("**/*", guard)
        init = []
        if token:
            init.append(f"localStorage.setItem('dispatchd.token', {json.dumps(token)});")
            init.append(f"localStorage.setItem('dispatchd.user', {json.dumps(json.dumps(user or {}))});")
        if lang:
            init.append(f"localStorage.setItem('dispatchd.lang', {json.dumps(lang)});")
        if init:
            # Only before the first page of the context: later navigations keep what the page stored.
            script = (
                "if (!sessionStorage.getItem('seeded')) {"
                + "".join(init)
                + "sessionStorage.setItem('seeded','1');}"
            )
            await context.add_init_script(script)
        page = await context.new_page()

        def on_console(msg: ConsoleMessage) -> None:
            if msg.type == "error":
                watch.errors.append(msg.text)

        page.on("console", on_console)
        page.on("pageerror", lambda exc: watch.errors.append(f"uncaught: {exc}"))
        page.on(
            "websocket",
            lambda ws: (
                None if (urlsplit(ws.url).hostname or "") in LOOPBACK else watch.foreign.append(ws.url)
            ),
        )
        await page.goto(self.url(path))
        return page, watch

    async def close(self) -> None:
        for c in self.contexts:
            await c.close()


@pytest.fixture
async def browsing(client: TestClient[Any, Any], browser: Browser) -> AsyncIterator[Browsing]:
    b = Browsing(client, browser)
    yield b
    await b.close()


async def screenshot(page: Page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    await page.screenshot(path=str(path))
    return path


async def eventually(check: Callable[[], Awaitable[bool]], within: float = 10.0, what: str = "") -> None:
    """Poll ``check`` until it holds, for at most ``within`` seconds (I/O, not time, is awaited)."""
    loop = asyncio.get_running_loop()
    end = loop.time() + within
    while True:
        if await check():
            return
        if loop.time() > end:
            raise AssertionError(f"not reached within {within} s: {what}")
        await asyncio.sleep(0.05)


async def wait_js(page: Page, expression: str, within: float = 10.0) -> Any:
    """Poll a JavaScript expression until it is truthy (the pages' CSP forbids Playwright's eval-based
    wait_for_function; page.evaluate goes through the debugging protocol and is not affected)."""
    result: Any = None

    async def check() -> bool:
        nonlocal result
        result = await page.evaluate(expression)
        return bool(result)

    await eventually(check, within, what=expression)
    return result


def grid_point(tree: OrgTree, township: str = TOWNSHIP) -> tuple[str, float, float]:
    """A grid of the township and a point inside it (the mean of its ring)."""
    grid = next(u for u in tree.subtree(township) if u.level == "grid" and u.boundary)
    assert grid.boundary is not None
    ring = grid.boundary[:-1]
    lon = sum(p[0] for p in ring) / len(ring)
    lat = sum(p[1] for p in ring) / len(ring)
    return grid.code, lat, lon


async def create_case(
    client: TestClient[Any, Any], acct: Account, lat: float, lon: float, **fields: Any
) -> dict[str, Any]:
    body = {
        "category": "hazard.fire",
        "priority": "P1",
        "description": "仓库冒烟，有人员被困",
        "location": {"lat": lat, "lon": lon},
        "address": "安阳街道测试路 8 号",
        **fields,
    }
    r = await client.post("/api/v1/incidents", json=body, headers=acct.headers)
    assert r.status == 201, await r.text()
    case: dict[str, Any] = await r.json()
    return case


async def seed_cases(client: TestClient[Any, Any], acct: Account, tree: OrgTree) -> None:
    """A handful of cases in several townships and steps, so that screenshots show a working day."""
    towns = [u.code for u in tree.children("330381")][:5]
    samples = [
        ("hazard.fire", "P1", "仓库冒烟，有人员被困", None),
        ("incident.dispute", "P3", "邻里宅基地边界纠纷，情绪激动", "accept"),
        ("hazard.public_order", "P2", "夜间聚集喧哗，多次投诉", "dispatch"),
        ("hazard.environment", "P3", "河道有不明污水排放", None),
        ("incident.work_safety_accident", "P2", "工地脚手架松动", "dispatch"),
        ("hazard.food_safety", "P4", "小餐馆后厨卫生差", None),
    ]
    for i, (category, priority, text, step) in enumerate(samples):
        _, lat, lon = grid_point(tree, towns[i % len(towns)])
        case = await create_case(
            client,
            acct,
            lat,
            lon,
            category=category,
            priority=priority,
            description=text,
            address=f"测试路 {i + 1} 号",
        )
        for action in ("accept", "dispatch")[: (0 if step is None else 1 if step == "accept" else 2)]:
            r = await client.post(
                f"/api/v1/incidents/{case['id']}/actions/{action}",
                json={"version": case["version"]},
                headers=acct.headers,
            )
            case = await r.json()


__all__ = [
    "DESK",
    "PHONE",
    "TOWNSHIP",
    "WALL",
    "WALL_4K",
    "Browsing",
    "Watch",
    "create_case",
    "eventually",
    "grid_point",
    "screenshot",
    "seed_cases",
    "wait_js",
]
