"""Debian's WebKitGTK driven over W3C WebDriver (classic, HTTP), for the browser tests.

Safari does not run on Linux; WebKitGTK is the same engine (WebCore, JavaScriptCore) with another
port around it. ``WebKitWebDriver`` (package webkit2gtk-driver) starts WebKitGTK's MiniBrowser in
automation mode; MiniBrowser is a GTK program, so it gets a display of its own from Xvfb. Pages may
only reach loopback: MiniBrowser's proxy is a port where nothing listens, for every other host.

Debian's build has no WebRTC (``RTCPeerConnection`` is undefined; getUserMedia with mock devices
works), so what this engine can show is the page itself: that its scripts parse and run, and what
it shows.
"""

from __future__ import annotations

import asyncio
import base64
import glob
import os
import socket
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

from aiohttp import ClientSession, ClientTimeout

# Where Debian's libwebkit2gtk-4.1-0 puts MiniBrowser (multiarch directory).
MINIBROWSER_GLOB = "/usr/lib/*/webkit2gtk-4.1/MiniBrowser"
BROWSER_ARGS = [
    "--automation",
    "--enable-media-stream=true",
    "--enable-mock-capture-devices=true",
    "--autoplay-policy=allow",
    "--proxy=http://127.0.0.1:9",
    "--ignore-host=127.0.0.1",
    "--ignore-host=localhost",
]
# The page's errors, collected in the page: classic WebDriver has no console log. Installed after
# the load, so an error before it shows as a page that did not get going (checked by the test).
WATCH_ERRORS = """
window.__errors = [];
const original = console.error.bind(console);
console.error = (...args) => { window.__errors.push(args.map(String).join(" ")); original(...args); };
window.addEventListener("error", (ev) => window.__errors.push(`uncaught: ${ev.message}`));
window.addEventListener("unhandledrejection", (ev) => window.__errors.push(`unhandled: ${ev.reason}`));
"""


def minibrowser() -> str | None:
    found = sorted(glob.glob(MINIBROWSER_GLOB))
    return found[0] if found else None


class WebDriverError(Exception):
    """The driver answered a command with an error."""


class Session:
    """One WebDriver session: navigation, scripts, clicks and screenshots."""

    def __init__(self, http: ClientSession, base: str, session_id: str) -> None:
        self.http = http
        self.base = f"{base}/session/{session_id}"

    async def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        async with self.http.request(method, self.base + path, json=body) as resp:
            data = await resp.json(content_type=None)
        value = data.get("value") if isinstance(data, dict) else None
        if resp.status != 200:
            message = value.get("message") if isinstance(value, dict) else value
            raise WebDriverError(f"{method} {path}: {resp.status} {message}")
        return value

    async def goto(self, url: str) -> None:
        await self._call("POST", "/url", {"url": url})
        await self.execute(WATCH_ERRORS)

    async def execute(self, script: str, *args: Any) -> Any:
        """Run a function body in the page; its ``return`` value comes back (a promise is awaited)."""
        return await self._call("POST", "/execute/sync", {"script": script, "args": list(args)})

    async def click(self, css: str) -> None:
        found = await self._call("POST", "/element", {"using": "css selector", "value": css})
        element = next(iter(found.values()))
        await self._call("POST", f"/element/{element}/click", {})

    async def screenshot(self, path: Path) -> None:
        """A PNG of the page as painted, once the last DOM change has been painted."""
        await self.execute(
            "return new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        png = base64.b64decode(await self._call("GET", "/screenshot"))
        await asyncio.to_thread(path.write_bytes, png)

    async def errors(self) -> list[str]:
        return list(await self.execute("return window.__errors || ['the error watch is gone']"))

    async def close(self) -> None:
        with suppress(Exception):
            await self._call("DELETE", "")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _display(xvfb: str, log: Any) -> tuple[asyncio.subprocess.Process, str]:
    """Start Xvfb on a free display (it names it on ``-displayfd``)."""
    proc = await asyncio.create_subprocess_exec(
        xvfb,
        "-displayfd",
        "1",
        "-screen",
        "0",
        "1600x900x24",
        "-nolisten",
        "tcp",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=log,
    )
    assert proc.stdout is not None
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
    except TimeoutError:
        line = b""
    if not line.strip().isdigit():
        await _stop(proc)
        raise RuntimeError("Xvfb did not start")
    return proc, f":{line.strip().decode()}"


@asynccontextmanager
async def launch(driver: str, xvfb: str, browser: str) -> AsyncIterator[Session]:
    """Xvfb, WebKitWebDriver on a free loopback port, and one MiniBrowser session; all stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="dispatchd-webkit-") as tmp:
        log_path = Path(tmp) / "webkit.log"
        with log_path.open("wb") as log:
            xserver, display = await _display(xvfb, log)
            port = _free_port()
            env = {**os.environ, "DISPLAY": display, "NO_AT_BRIDGE": "1", "HOME": tmp}
            proc = await asyncio.create_subprocess_exec(
                driver,
                f"--port={port}",
                "--host=local",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                env=env,
            )
        base = f"http://127.0.0.1:{port}"
        http = ClientSession(timeout=ClientTimeout(total=120))
        session: Session | None = None
        try:
            session = await _new_session(http, base, browser, proc, log_path)
            yield session
        finally:
            if session is not None:
                await session.close()
            await http.close()
            await _stop(proc)
            await _stop(xserver)


async def _new_session(
    http: ClientSession, base: str, browser: str, proc: asyncio.subprocess.Process, log: Path
) -> Session:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while True:  # the driver's port opens a moment after it starts
        with suppress(OSError):
            async with http.get(f"{base}/status") as resp:
                if resp.status == 200:
                    break
        if proc.returncode is not None or loop.time() > deadline:
            tail = (await asyncio.to_thread(log.read_text, errors="replace"))[-2000:]
            raise RuntimeError(f"WebKitWebDriver did not start (exit {proc.returncode}):\n{tail}")
        await asyncio.sleep(0.1)
    caps = {"webkitgtk:browserOptions": {"binary": browser, "args": BROWSER_ARGS}}
    async with http.post(f"{base}/session", json={"capabilities": {"alwaysMatch": caps}}) as resp:
        data = await resp.json(content_type=None)
    value = data.get("value", {})
    if resp.status != 200 or "sessionId" not in value:
        raise RuntimeError(f"WebKitWebDriver refused the session: {value}")
    return Session(http, base, value["sessionId"])
