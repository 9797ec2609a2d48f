"""Debian's Firefox ESR driven over WebDriver BiDi, for the browser tests.

Playwright drives only its own Firefox builds; stock Firefox speaks the W3C WebDriver BiDi protocol
itself when started with ``--remote-debugging-port``. This module starts ``firefox-esr`` headless in
a fresh profile (fake camera and microphone, no permission prompts, no background traffic) and
talks BiDi over one websocket: commands and their results, and events (console and JavaScript
errors, the page's requests) collected for the test to check.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import ClientSession, ClientWebSocketResponse, WSMsgType

LOOPBACK = {"127.0.0.1", "localhost", "::1"}
COMMAND_LIMIT = 60.0  # seconds for one BiDi command (a navigation waits for the page's load)

# Written to the profile's user.js before the first start.
PREFS: dict[str, bool | int | str] = {
    # A fake camera and microphone, granted without a prompt (like Chromium's --use-fake-*-for-media-stream).
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    # ... and the site holds the camera permission, as after a user's "allow": Firefox gathers ICE
    # candidates on every interface only for a page that captures or has that permission (a fake
    # device does not count), and on the default route's address alone otherwise.
    "permissions.default.camera": 1,
    "permissions.default.microphone": 1,
    # ICE on this machine: the tests' server offers 127.0.0.1 only, so loopback candidates are
    # wanted, by address (not by mDNS name).
    "media.peerconnection.ice.loopback": True,
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    # Nothing leaves the machine: every request not to loopback goes to a proxy that is not there.
    "network.proxy.type": 1,
    "network.proxy.http": "127.0.0.1",
    "network.proxy.http_port": 9,
    "network.proxy.ssl": "127.0.0.1",
    "network.proxy.ssl_port": 9,
    "network.proxy.no_proxies_on": "",
    "network.proxy.allow_hijacking_localhost": False,
    # ... and the browser does not try: no updates, telemetry, experiments, remote settings, safe
    # browsing lists, captive-portal or connectivity checks, DNS over HTTPS, prefetching, plugin downloads.
    "app.update.auto": False,
    "app.update.checkInstallTime": False,
    "app.normandy.enabled": False,
    "app.shield.optoutstudies.enabled": False,
    "browser.aboutwelcome.enabled": False,
    "browser.newtabpage.enabled": False,
    "browser.ping-centre.telemetry": False,
    "browser.region.network.url": "",
    "browser.region.update.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.update.enabled": False,
    "browser.search.update": False,
    "browser.shell.checkDefaultBrowser": False,
    "browser.startup.homepage": "about:blank",
    "browser.startup.homepage_override.mstone": "ignore",
    "browser.startup.page": 0,
    "browser.topsites.contile.enabled": False,
    "captivedetect.canonicalURL": "",
    "datareporting.healthreport.uploadEnabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "extensions.blocklist.enabled": False,
    "extensions.getAddons.cache.enabled": False,
    "extensions.update.enabled": False,
    "geo.provider.network.url": "",
    "media.gmp-manager.updateEnabled": False,
    "media.gmp-gmpopenh264.autoupdate": False,
    "messaging-system.rsexperimentloader.enabled": False,
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.prefetch-next": False,
    "network.trr.mode": 5,
    "services.settings.server": "http://127.0.0.1:9/",
    "toolkit.telemetry.enabled": False,
    "toolkit.telemetry.server": "",
    "toolkit.telemetry.unified": False,
    # Quiet, quick shutdown.
    "browser.sessionstore.resume_from_crash": False,
    "toolkit.startup.max_resumed_crashes": -1,
}


class BiDiError(Exception):
    """A command answered with an error, or a script threw."""


def deserialize(value: dict[str, Any]) -> Any:
    """A BiDi ``RemoteValue`` as Python: primitives, lists, dicts; other objects as ``{"type": …}``."""
    kind = value["type"]
    if kind in ("undefined", "null"):
        return None
    if kind in ("string", "boolean"):
        return value["value"]
    if kind == "number":
        special = {"NaN": math.nan, "-0": -0.0, "Infinity": math.inf, "-Infinity": -math.inf}
        v = value["value"]
        return special[v] if isinstance(v, str) else v
    if kind == "bigint":
        return int(value["value"])
    if kind in ("array", "set") and "value" in value:
        return [deserialize(v) for v in value["value"]]
    if kind in ("object", "map") and "value" in value:
        return {k if isinstance(k, str) else deserialize(k): deserialize(v) for k, v in value["value"]}
    return {"type": kind}


class BiDi:
    """One WebDriver BiDi connection: ``command()`` awaits a result; ``on()`` registers for events."""

    def __init__(self, session: ClientSession, ws: ClientWebSocketResponse) -> None:
        self._session = session
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._handlers: dict[str, list[Callable[[dict[str, Any]], None]]] = {}
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def connect(cls, url: str) -> BiDi:
        session = ClientSession()
        try:
            ws = await session.ws_connect(url, max_msg_size=0)
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    def on(self, event: str, handler: Callable[[dict[str, Any]], None]) -> None:
        self._handlers.setdefault(event, []).append(handler)

    async def command(self, method: str, **params: Any) -> dict[str, Any]:
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[ident] = future
        await self._ws.send_str(json.dumps({"id": ident, "method": method, "params": params}))
        try:
            return await asyncio.wait_for(future, COMMAND_LIMIT)
        finally:
            self._pending.pop(ident, None)

    async def _read(self) -> None:
        try:
            async for msg in self._ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                if data.get("type") == "event":
                    for handler in self._handlers.get(data["method"], []):
                        handler(data["params"])
                    continue
                future = self._pending.get(data.get("id"))  # type: ignore[arg-type]
                if future is None or future.done():
                    continue
                if data.get("type") == "error":
                    future.set_exception(BiDiError(f"{data.get('error')}: {data.get('message')}"))
                else:
                    future.set_result(data.get("result", {}))
        finally:
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(BiDiError("the browser closed the connection"))

    async def close(self) -> None:
        self._reader.cancel()
        with suppress(asyncio.CancelledError):
            await self._reader
        await self._ws.close()
        await self._session.close()


@dataclass
class Tab:
    """A top-level browsing context and what it did that a test must not accept."""

    bidi: BiDi
    context: str
    errors: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)

    async def goto(self, url: str) -> None:
        await self.bidi.command("browsingContext.navigate", context=self.context, url=url, wait="complete")

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise is awaited).

        Runs as the browser's own script, so the page's Content-Security-Policy does not apply."""
        result = await self.bidi.command(
            "script.evaluate",
            expression=expression,
            target={"context": self.context},
            awaitPromise=True,
            resultOwnership="none",
        )
        if result.get("type") == "exception":
            details = result.get("exceptionDetails", {})
            raise BiDiError(f"{expression!r} threw: {details.get('text')}")
        return deserialize(result["result"])

    def check(self) -> None:
        assert not self.foreign, f"requests to other hosts: {self.foreign}"
        assert not self.errors, f"console errors: {self.errors}"


class Firefox:
    """A BiDi session of a running Firefox: open tabs, each watched for errors and foreign requests."""

    def __init__(self, bidi: BiDi) -> None:
        self.bidi = bidi
        self.tabs: dict[str, Tab] = {}
        bidi.on("log.entryAdded", self._log)
        bidi.on("network.beforeRequestSent", self._request)

    async def start(self) -> None:
        await self.bidi.command("session.new", capabilities={})
        await self.bidi.command("session.subscribe", events=["log.entryAdded", "network.beforeRequestSent"])

    async def new_tab(self) -> Tab:
        created = await self.bidi.command("browsingContext.create", type="tab")
        tab = Tab(self.bidi, created["context"])
        self.tabs[tab.context] = tab
        return tab

    def _log(self, params: dict[str, Any]) -> None:
        tab = self.tabs.get(params.get("source", {}).get("context", ""))
        if tab is not None and params.get("level") == "error":
            tab.errors.append(f"{params.get('type')}: {params.get('text')}")

    def _request(self, params: dict[str, Any]) -> None:
        tab = self.tabs.get(params.get("context") or "")
        url = params.get("request", {}).get("url", "")
        if tab is None or url.startswith(("data:", "blob:", "about:")):
            return
        if (urlsplit(url).hostname or "") not in LOOPBACK:
            tab.foreign.append(url)


def write_profile(directory: Path, prefs: dict[str, bool | int | str]) -> None:
    lines = [f"user_pref({json.dumps(name)}, {json.dumps(value)});" for name, value in prefs.items()]
    (directory / "user.js").write_text("\n".join(lines) + "\n")


def _written_port(profile: Path) -> int | None:
    """The port Firefox chose for ``--remote-debugging-port=0``: it writes it into the profile."""
    try:
        return int(json.loads((profile / "WebDriverBiDiServer.json").read_text())["ws_port"])
    except (OSError, ValueError, KeyError):
        return None


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:]


async def _bidi_port(profile: Path, proc: asyncio.subprocess.Process, log: Path, limit: float) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while (port := _written_port(profile)) is None:
        if proc.returncode is not None or loop.time() > deadline:
            raise RuntimeError(f"firefox did not open WebDriver BiDi (exit {proc.returncode}):\n{_tail(log)}")
        await asyncio.sleep(0.1)
    return port


@asynccontextmanager
async def launch(
    executable: str, *, prefs: dict[str, bool | int | str] | None = None
) -> AsyncIterator[Firefox]:
    """Start headless Firefox in a fresh profile and open a BiDi session; close both on exit."""
    with tempfile.TemporaryDirectory(prefix="dispatchd-firefox-") as tmp:
        profile = Path(tmp) / "profile"
        profile.mkdir()
        write_profile(profile, {**PREFS, **(prefs or {})})
        log = Path(tmp) / "firefox.log"
        env = {**os.environ, "MOZ_CRASHREPORTER_DISABLE": "1", "MOZ_HEADLESS": "1"}
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(
                executable,
                "--headless",
                "--no-remote",
                "--profile",
                str(profile),
                "--remote-debugging-port=0",
                "about:blank",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                env=env,
            )
        bidi: BiDi | None = None
        try:
            port = await _bidi_port(profile, proc, log, limit=60)
            bidi = await BiDi.connect(f"ws://127.0.0.1:{port}/session")
            firefox = Firefox(bidi)
            await firefox.start()
            yield firefox
        finally:
            if bidi is not None:
                with suppress(Exception):
                    await asyncio.wait_for(bidi.command("browser.close"), 10)
                await bidi.close()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
