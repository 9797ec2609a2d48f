"""The GB/T 28181 messages captured from real devices (``../shared/testdata/gb28181``, sources and
line-ending notes in its README).

The captures were published as text with LF line ends. :func:`wire` rebuilds the bytes that were on
the wire, as the README says: header lines end in CRLF, and the body is terminated as its
Content-Length shows (LF, CRLF, or LF text encoded in GB2312).
"""

from __future__ import annotations

import re
from pathlib import Path

from dispatchd.channels.hotline.sip import Request, Response, parse_message

CAPTURES = Path(__file__).resolve().parents[3].parent / "shared" / "testdata" / "gb28181"
NAMES = sorted(p.name for p in CAPTURES.glob("*.sip"))


def wire(name: str) -> bytes:
    text = (CAPTURES / name).read_text(encoding="utf-8")
    head, _, body = text.partition("\n\n")
    match = re.search(r"^Content-Length:\s*(\d+)\s*$", head, re.MULTILINE | re.IGNORECASE)
    length = int(match.group(1)) if match else 0
    chosen = body.encode("utf-8")
    for candidate in (
        body.encode("utf-8"),
        body.replace("\n", "\r\n").encode("utf-8"),
        body.encode("gb2312"),
    ):
        if len(candidate) >= length and not candidate[length:].strip():
            chosen = candidate[:length]
            break
    else:
        # One capture lost a byte in publication (README: "off by one"): keep the body as it is
        # and let Content-Length say so.
        head = re.sub(r"(?im)^(Content-Length:\s*)\d+", rf"\g<1>{len(chosen)}", head)
    return head.replace("\n", "\r\n").encode("utf-8") + b"\r\n\r\n" + chosen


def message(name: str) -> Request | Response:
    return parse_message(wire(name))


def body(name: str) -> bytes:
    return message(name).body
