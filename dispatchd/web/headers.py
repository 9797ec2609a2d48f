"""Headers every HTTP answer carries, and what the server says about requests it cannot parse.

* ``X-Frame-Options: DENY`` and ``frame-ancestors 'none'`` in every HTML page's Content Security
  Policy (no page can be framed by another site: clickjacking); a page without a policy of its own
  gets :data:`DEFAULT_CSP`;
* ``Permissions-Policy``: camera, microphone and position only for this origin's own pages (the
  grid and squad apps, meetings), every other powerful feature off;
* ``X-Content-Type-Options: nosniff``, ``Referrer-Policy: no-referrer``;
* ``Cache-Control: no-store`` on every API answer that does not say otherwise (tokens, cases and
  people must not stay in a shared or browser cache);
* ``Server: dispatchd`` without versions.

A request aiohttp cannot parse (a bad request line, a header line too long, non-HTTP bytes) is
answered 400 by aiohttp; its log line is rewritten here to one INFO line naming the problem, without
the raw bytes (they may hold anything) and without a traceback.
"""

from __future__ import annotations

import logging
from typing import Final

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

SERVER: Final = "dispatchd"
PERMISSIONS_POLICY: Final = ", ".join(
    [
        "camera=(self)",
        "microphone=(self)",
        "geolocation=(self)",
        "display-capture=(self)",
        "fullscreen=(self)",
        "screen-wake-lock=(self)",
        "accelerometer=()",
        "gyroscope=()",
        "magnetometer=()",
        "payment=()",
        "usb=()",
        "serial=()",
        "bluetooth=()",
        "midi=()",
    ]
)
# HTML without a policy of its own (the API documentation page): nothing but itself, inline styles.
DEFAULT_CSP: Final = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
# Answers under these paths are data, never to be cached unless they say so (photos do).
_API_PREFIXES: Final = ("/api/", "/open311/", "/ws/")


def with_frame_ancestors(policy: str) -> str:
    """``policy`` with ``frame-ancestors 'none'`` unless it already names the frame ancestors."""
    if "frame-ancestors" in policy:
        return policy
    return policy.rstrip("; ") + "; frame-ancestors 'none'"


def apply(path: str, response: web.StreamResponse) -> None:
    """Set the headers every answer carries (see the module's docstring)."""
    h = response.headers
    h["Server"] = SERVER
    h.setdefault("X-Content-Type-Options", "nosniff")
    h.setdefault("X-Frame-Options", "DENY")
    h.setdefault("Referrer-Policy", "no-referrer")
    h.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
    content_type = h.get("Content-Type", "")
    if content_type.startswith("text/html"):
        policy = h.get("Content-Security-Policy")
        h["Content-Security-Policy"] = with_frame_ancestors(policy) if policy else DEFAULT_CSP
    if path.startswith(_API_PREFIXES) and "Cache-Control" not in h:
        h["Cache-Control"] = "no-store"


async def _on_prepare(request: web.Request, response: web.StreamResponse) -> None:
    apply(request.path, response)


class MalformedRequests(logging.Filter):
    """Turns aiohttp's ERROR with traceback and raw bytes for an unparsable request into one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = "malformed_http_request: %s %s"
            record.args = (exc.code, type(exc).__name__)
            record.exc_info = None
            record.exc_text = None
        return True


_FILTER: Final = MalformedRequests()


def quiet_malformed(logger: logging.Logger) -> None:
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)


def setup(app: web.Application) -> None:
    app.on_response_prepare.append(_on_prepare)
    quiet_malformed(logging.getLogger("aiohttp.server"))
