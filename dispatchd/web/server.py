"""The HTTP server's guard against slow and greedy clients, for the HTTP port and the OsmAnd port.

aiohttp waits as long as a client likes for a request's headers and body; a few hundred connections
trickling bytes would hold the server's sockets for ever. :class:`ConnectionGuard` cuts:

* a request whose headers have not all arrived ``header_timeout`` seconds after its first byte
  (or after the connection opened), answered ``408`` and closed;
* a request body that goes ``body_timeout`` seconds without a byte while the handler waits for it;
* connections beyond ``max_connections_per_address`` from one client address: answered ``429`` with
  ``Retry-After`` and closed at once (0 = no cap).

Idle keep-alive connections are closed by aiohttp after ``[http] keepalive_timeout``; websockets
after their heartbeat goes unanswered. The guard watches each connection with timers of its own,
and learns where a request stands from :func:`request_started` / :func:`request_finished`, which the
request middleware calls.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

import structlog
from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from dispatchd.metrics import Metrics
from dispatchd.web.headers import apply as apply_headers

log = structlog.get_logger("dispatchd.http")

_TIMEOUT_ANSWER: Final = (
    b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: 37\r\n\r\nthe request did not arrive in time\r\n\r\n"
)
_TOO_MANY_ANSWER: Final = (
    b"HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nRetry-After: 10\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 42\r\n\r\n"
    b"too many connections from your address\r\n\r\n"
)


class ConnectionGuard:
    """Limits of one port: timeouts, and open connections counted per client address."""

    def __init__(
        self,
        port: str,
        metrics: Metrics,
        *,
        header_timeout: float,
        body_timeout: float,
        max_per_address: int,
    ) -> None:
        self.port = port
        self.metrics = metrics
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self.max_per_address = max_per_address
        self.open: dict[str, int] = {}

    def admit(self, address: str) -> bool:
        count = self.open.get(address, 0)
        if self.max_per_address and count >= self.max_per_address:
            self.cut("per_address_cap")
            return False
        self.open[address] = count + 1
        return True

    def release(self, address: str) -> None:
        count = self.open.get(address, 0) - 1
        if count > 0:
            self.open[address] = count
        else:
            self.open.pop(address, None)

    def cut(self, reason: str) -> None:
        self.metrics.http_cut.labels(self.port, reason).inc()


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection handler, watched by a :class:`ConnectionGuard`."""

    __slots__ = ("_address", "_body_timer", "_guard", "_head_timer", "_last_byte", "_phase", "_request")

    def __init__(self, manager: web.Server, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._guard = guard
        self._address: str | None = None
        self._head_timer: asyncio.TimerHandle | None = None
        self._body_timer: asyncio.TimerHandle | None = None
        self._last_byte = 0.0
        self._phase = "head"  # head (waiting for headers), request (a handler runs), idle (kept alive)
        self._request: web.BaseRequest | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        address = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        if not self._guard.admit(address):
            assert isinstance(transport, asyncio.Transport)
            transport.write(_TOO_MANY_ANSWER)
            transport.close()
            return
        self._address = address
        self._last_byte = self._loop.time()
        self._arm_head()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_timers()
        self._request = None
        if self._address is not None:
            self._guard.release(self._address)
            self._address = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self._last_byte = self._loop.time()
        if self._phase == "idle":
            self._phase = "head"
            self._arm_head()
        super().data_received(data)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """aiohttp's answer to a request it could not parse, without echoing the request's bytes back
        and with the server's own headers (no versions)."""
        text = "the request could not be parsed" if status < 500 else None
        response = super().handle_error(request, status, exc, text)
        apply_headers("", response)
        return response

    # -- where the request stands (called by the request middleware) ----------------------------

    def started(self, request: web.BaseRequest) -> None:
        self._phase = "request"
        self._request = request
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        if self._address is not None and not request.content.is_eof():
            self._body_timer = self._loop.call_later(self._guard.body_timeout, self._check_body)

    def finished(self) -> None:
        self._phase = "idle"
        self._request = None
        self._cancel_timers()

    # -- timers -------------------------------------------------------------------------------

    def _arm_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self._loop.call_later(self._guard.header_timeout, self._head_expired)

    def _cancel_timers(self) -> None:
        for timer in (self._head_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._body_timer = None

    def _head_expired(self) -> None:
        self._head_timer = None
        if self._phase != "head" or self.transport is None or self.transport.is_closing():
            return
        self._guard.cut("header_timeout")
        self.transport.write(_TIMEOUT_ANSWER)
        self.transport.close()

    def _check_body(self) -> None:
        self._body_timer = None
        request = self._request
        if self._phase != "request" or request is None or request.content.is_eof():
            return
        if self.transport is None or self.transport.is_closing():
            return
        quiet = self._loop.time() - self._last_byte
        if quiet >= self._guard.body_timeout:
            self._guard.cut("body_timeout")
            log.info("http_body_timeout", remote=self._address, quiet_s=round(quiet, 1))
            self.transport.close()
            return
        self._body_timer = self._loop.call_later(self._guard.body_timeout - quiet, self._check_body)


class GuardedServer(web.Server):
    """aiohttp's server making :class:`GuardedRequestHandler` connections."""

    guard: ConnectionGuard

    def __call__(self) -> RequestHandler:
        return GuardedRequestHandler(self, loop=self._loop, guard=self.guard, **self._kwargs)


class GuardedRunner(web.AppRunner):
    """An application runner whose connections are guarded by ``guard``."""

    def __init__(self, app: web.Application, *, guard: ConnectionGuard, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.guard = guard

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        server.__class__ = GuardedServer  # the same object, handing out guarded connections
        assert isinstance(server, GuardedServer)
        server.guard = self.guard
        return server


def request_started(request: web.BaseRequest) -> None:
    handler = request.protocol
    if isinstance(handler, GuardedRequestHandler):
        handler.started(request)


def request_finished(request: web.BaseRequest) -> None:
    handler = request.protocol
    if isinstance(handler, GuardedRequestHandler):
        handler.finished()


def http_runner(
    app: web.Application,
    guard: ConnectionGuard,
    *,
    keepalive_timeout: float,
    **kwargs: Any,
) -> GuardedRunner:
    """The runner of a dispatchd HTTP port: guarded connections, aiohttp's keep-alive window."""
    return GuardedRunner(app, guard=guard, keepalive_timeout=keepalive_timeout, **kwargs)
