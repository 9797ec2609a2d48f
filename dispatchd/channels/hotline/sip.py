"""SIP messages, sans I/O: bytes in, :class:`Request` / :class:`Response` out, and back (RFC 3261).

What this module implements, by section of RFC 3261:

* §7 message format: a start line (§7.1 Request-Line, §7.2 Status-Line), header fields (§7.3)
  with folded continuation lines (§7.3.1, "LWS"), the compact forms of §7.3.3 (``i`` Call-ID,
  ``f`` From, ``t`` To, ``v`` Via, ``m`` Contact, ``l`` Content-Length, ``c`` Content-Type,
  ``k`` Supported, ``s`` Subject, ``e`` Content-Encoding, plus those later RFCs added), several
  values of a list header on one line or on several lines (§7.3.1), and CRLFs before the start line
  ignored (§7.5).
* §7.4.1 / §18.3 framing: in a datagram a body runs to the end of the datagram or to
  Content-Length when that is shorter; a datagram shorter than its Content-Length is an error.
  Over TCP, :class:`StreamFramer` cuts the byte stream into messages by Content-Length and
  answers RFC 5626 keep-alive pings.
* §8.1.1 / §20 the mandatory header fields of a request (To, From, CSeq, Call-ID, Via) are
  checked and parsed: :class:`Via` (§20.42), :class:`NameAddr` for From/To/Contact (§20.10,
  §20.20, §20.39), :class:`CSeq` (§20.16), :class:`SipUri` (§19.1) and tel URIs (RFC 3966).

A message that cannot be used raises :class:`SipParseError` whose ``reason`` says what was wrong
(RFC 3261 §21.4.1: the reason phrase of a 400 "SHOULD identify the syntax problem in more
detail"). When the start line and header fields could be read, ``partial`` holds the message as
far as it went, so that a request can still be answered with 400; otherwise the datagram is
garbage and is dropped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

__all__ = [
    "CSeq",
    "Headers",
    "Message",
    "NameAddr",
    "Request",
    "Response",
    "SipParseError",
    "SipUri",
    "StreamFramer",
    "Via",
    "canonical_name",
    "parse_message",
    "parse_name_addr",
    "parse_uri",
    "parse_via",
    "reason_phrase",
    "split_list",
]

SIP_VERSION: Final = "SIP/2.0"
#: RFC 3261 §8.1.1.7: a branch that starts with this cookie is unique across space and time.
MAGIC_COOKIE: Final = "z9hG4bK"
#: Largest message taken (a UDP datagram cannot carry more; the same bound holds for TCP).
MAX_MESSAGE_BYTES: Final = 65535

# §7.3.3 compact forms, and those registered by later RFCs (3265, 3515, 3892, 3840/3841, 4028, 4474).
COMPACT_FORMS: Final = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "u": "Allow-Events",
    "r": "Refer-To",
    "b": "Referred-By",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "x": "Session-Expires",
    "y": "Identity",
    "n": "Identity-Info",
}

# Names whose usual spelling is not plain title case.
_SPECIAL_NAMES: Final = {
    n.lower(): n
    for n in (
        "Call-ID",
        "CSeq",
        "WWW-Authenticate",
        "MIME-Version",
        "RAck",
        "RSeq",
        "SIP-ETag",
        "SIP-If-Match",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "P-Charging-Vector",
        "P-Access-Network-Info",
        "P-Called-Party-ID",
        "Diversion",
        "X-Asterisk-HangupCause",
    )
}

# §7.3.1: header fields whose values are comma-separated lists, which may be written on one line
# or as several header lines. Others (Date, WWW-Authenticate, Authorization …) carry commas inside.
LIST_HEADERS: Final = frozenset(
    {
        "Via",
        "Contact",
        "Route",
        "Record-Route",
        "Path",
        "Service-Route",
        "Allow",
        "Allow-Events",
        "Supported",
        "Require",
        "Proxy-Require",
        "Unsupported",
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Content-Encoding",
        "Content-Language",
        "In-Reply-To",
        "Alert-Info",
        "Call-Info",
        "Error-Info",
        "Warning",
        "P-Asserted-Identity",
        "P-Preferred-Identity",
        "Reason",
        "Diversion",
        "History-Info",
    }
)

# RFC 3261 §25.1 token: the characters of a method name or header field name.
_TOKEN: Final = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_CONTROL: Final = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
_LINE_END: Final = re.compile(r"\r?\n")

REASONS: Final = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    505: "Version Not Supported",
    513: "Message Too Large",
    603: "Decline",
}


def reason_phrase(status: int) -> str:
    """The RFC 3261 §21 reason phrase of a status code (a class default for unknown codes)."""
    return REASONS.get(status) or REASONS.get(status // 100 * 100, "Unknown")


class SipParseError(ValueError):
    """A message that cannot be used; ``reason`` says why, ``partial`` is what could be read."""

    def __init__(self, reason: str, partial: Message | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.partial = partial


def canonical_name(name: str) -> str:
    """The full, conventionally spelled form of a header field name (compact forms expanded).

    Header field names are case-insensitive (§7.3.1): ``call-id``, ``CALL-ID`` and ``i`` are all
    ``Call-ID``.
    """
    lowered = name.strip().lower()
    if len(lowered) == 1 and lowered in COMPACT_FORMS:
        return COMPACT_FORMS[lowered]
    special = _SPECIAL_NAMES.get(lowered)
    if special is not None:
        return special
    return "-".join(part.capitalize() for part in lowered.split("-"))


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, keeping commas inside quotes and ``<…>`` (§7.3.1)."""
    items: list[str] = []
    start = 0
    quoted = escaped = False
    angle = 0
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif quoted:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch == "<":
            angle += 1
        elif ch == ">" and angle:
            angle -= 1
        elif ch == "," and not angle:
            items.append(value[start:i].strip())
            start = i + 1
    items.append(value[start:].strip())
    return [item for item in items if item]


class Headers:
    """Header fields in order, names in canonical spelling; immutable, edits return a copy."""

    __slots__ = ("_fields",)

    def __init__(self, fields: Iterable[tuple[str, str]] = ()) -> None:
        self._fields: tuple[tuple[str, str], ...] = tuple((canonical_name(n), v) for n, v in fields)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._fields)

    def __len__(self) -> int:
        return len(self._fields)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._fields == other._fields

    def __hash__(self) -> int:
        return hash(self._fields)

    def __repr__(self) -> str:
        return f"Headers({list(self._fields)!r})"

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        wanted = canonical_name(name)
        return any(n == wanted for n, _ in self._fields)

    def get(self, name: str) -> str | None:
        """The first value of ``name`` (the first list element for a list header), or None."""
        values = self.get_all(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        """Every value of ``name`` in order; list headers are split at their commas."""
        wanted = canonical_name(name)
        out: list[str] = []
        for n, v in self._fields:
            if n != wanted:
                continue
            if wanted in LIST_HEADERS and not (wanted == "Contact" and v.strip() == "*"):
                out.extend(split_list(v))
            else:
                out.append(v.strip())
        return out

    def with_(self, name: str, *values: str) -> Headers:
        """A copy with every ``name`` field replaced by ``values`` (at the first one's place)."""
        wanted = canonical_name(name)
        out: list[tuple[str, str]] = []
        placed = False
        for n, v in self._fields:
            if n == wanted:
                if not placed:
                    out.extend((wanted, value) for value in values)
                    placed = True
                continue
            out.append((n, v))
        if not placed:
            out.extend((wanted, value) for value in values)
        return Headers(out)

    def without(self, name: str) -> Headers:
        wanted = canonical_name(name)
        return Headers((n, v) for n, v in self._fields if n != wanted)

    def plus(self, name: str, value: str) -> Headers:
        return Headers((*self._fields, (name, value)))


@dataclass(frozen=True, slots=True)
class SipUri:
    """A ``sip:``/``sips:`` URI (§19.1) or a ``tel:`` URI (RFC 3966, ``user`` is the number)."""

    scheme: str
    user: str | None
    host: str
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    password: str | None = None
    headers: str = ""

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name.lower():
                return value if value is not None else ""
        return None

    def __str__(self) -> str:
        if self.scheme == "tel":
            text = f"tel:{self.user or ''}"
        else:
            userinfo = ""
            if self.user is not None:
                userinfo = self.user + (f":{self.password}" if self.password is not None else "") + "@"
            hostport = self.host + (f":{self.port}" if self.port is not None else "")
            text = f"{self.scheme}:{userinfo}{hostport}"
        for key, value in self.params:
            text += f";{key}" + (f"={value}" if value is not None else "")
        if self.headers:
            text += "?" + self.headers
        return text


def _parse_params(text: str) -> tuple[tuple[str, str | None], ...]:
    params: list[tuple[str, str | None]] = []
    for part in _split_outside_quotes(text, ";"):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not key or not _TOKEN.match(key):
            raise SipParseError(f"bad parameter {part!r}")
        params.append((key, value.strip() if sep else None))
    return tuple(params)


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    start = 0
    quoted = escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\" and quoted:
            escaped = True
        elif ch == '"':
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def _parse_hostport(text: str, what: str) -> tuple[str, int | None]:
    text = text.strip()
    if text.startswith("["):  # IPv6 reference
        end = text.find("]")
        if end < 0:
            raise SipParseError(f"{what}: unclosed IPv6 reference")
        host, rest = text[: end + 1], text[end + 1 :]
    else:
        host, colon, port_text = text.partition(":")
        rest = ":" + port_text if colon else ""
    if not host or any(ch in host for ch in ' \t<>"@;,'):
        raise SipParseError(f"{what}: bad host {host!r}")
    port: int | None = None
    if rest:
        if not rest.startswith(":") or not rest[1:].isdigit() or not 0 < int(rest[1:]) < 65536:
            raise SipParseError(f"{what}: bad port in {text!r}")
        port = int(rest[1:])
    return host.lower(), port


def parse_uri(text: str) -> SipUri:
    """Parse a ``sip:``, ``sips:`` or ``tel:`` URI; another scheme raises with ``unsupported``."""
    text = text.strip()
    scheme, colon, rest = text.partition(":")
    scheme = scheme.lower()
    if not colon or not scheme.isalpha():
        raise SipParseError(f"bad URI {text!r}")
    if scheme == "tel":
        number, _, params = rest.partition(";")
        if not number:
            raise SipParseError(f"tel URI without a number: {text!r}")
        return SipUri("tel", number, "", None, _parse_params(params))
    if scheme not in ("sip", "sips"):
        raise SipParseError(f"unsupported URI scheme {scheme!r}")
    rest, _, headers = rest.partition("?")
    user: str | None = None
    password: str | None = None
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        user, sep, pw = userinfo.partition(":")
        password = pw if sep else None
        if not user:
            raise SipParseError(f"empty user part in {text!r}")
    hostport, _, params = rest.partition(";")
    host, port = _parse_hostport(hostport, "URI")
    return SipUri(scheme, user, host, port, _parse_params(params), password, headers)


@dataclass(frozen=True, slots=True)
class NameAddr:
    """From, To, Contact, Route …: an optional display name, a URI and header parameters."""

    uri: str
    display: str = ""
    params: tuple[tuple[str, str | None], ...] = ()

    @property
    def tag(self) -> str | None:
        return self.param("tag")

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value if value is not None else ""
        return None

    def with_tag(self, tag: str) -> NameAddr:
        params = (*tuple(p for p in self.params if p[0] != "tag"), ("tag", tag))
        return NameAddr(self.uri, self.display, params)

    def parsed_uri(self) -> SipUri:
        return parse_uri(self.uri)

    def __str__(self) -> str:
        display = ""
        if self.display:
            escaped = self.display.replace("\\", "\\\\").replace('"', '\\"')
            display = f'"{escaped}" '
        text = f"{display}<{self.uri}>"
        for key, value in self.params:
            text += f";{key}" + (f"={value}" if value is not None else "")
        return text


def parse_name_addr(text: str) -> NameAddr:
    """``"Zhang San" <sip:13800000000@trunk>;tag=1``, ``Bob <sip:b@h>`` or ``sip:b@h;tag=1`` (§20.10)."""
    text = text.strip()
    if not text:
        raise SipParseError("empty address")
    display = ""
    if text.startswith('"'):
        i, chars = 1, []
        while i < len(text) and text[i] != '"':
            if text[i] == "\\" and i + 1 < len(text):
                i += 1
            chars.append(text[i])
            i += 1
        if i >= len(text):
            raise SipParseError(f"unclosed quote in {text!r}")
        display = "".join(chars)
        text = text[i + 1 :].lstrip()
        if not text.startswith("<"):
            raise SipParseError("a quoted display name must be followed by <URI>")
    if "<" in text:
        before, _, rest = text.partition("<")
        uri, close, after = rest.partition(">")
        if not close:
            raise SipParseError(f"unclosed < in {text!r}")
        display = display or before.strip()
        params = after.strip()
        if params and not params.startswith(";"):
            raise SipParseError(f"junk after URI: {params!r}")
        uri = uri.strip()
    else:
        # §20: without angle brackets, every ;parameter belongs to the header, not the URI.
        uri, _, params = text.partition(";")
        params = ";" + params if params else ""
        uri = uri.strip()
        if " " in uri:
            raise SipParseError(f"bad address {text!r}")
    if ":" not in uri:
        raise SipParseError(f"address without a URI scheme: {uri!r}")
    return NameAddr(uri, display, _parse_params(params[1:] if params.startswith(";") else params))


@dataclass(frozen=True, slots=True)
class Via:
    """One Via value (§20.42): ``SIP/2.0/UDP host:port;branch=z9hG4bK…;received=…;rport=…``."""

    transport: str
    host: str
    port: int | None
    params: tuple[tuple[str, str | None], ...] = ()

    @property
    def branch(self) -> str | None:
        return self.param("branch")

    @property
    def sent_by(self) -> str:
        return self.host + (f":{self.port}" if self.port is not None else "")

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value if value is not None else ""
        return None

    def has_param(self, name: str) -> bool:
        return any(key == name for key, _ in self.params)

    def with_params(self, **values: str | None) -> Via:
        """A copy with parameters set (kept in place when present, appended otherwise)."""
        params = list(self.params)
        for key, value in values.items():
            for i, (existing, _) in enumerate(params):
                if existing == key:
                    params[i] = (key, value)
                    break
            else:
                params.append((key, value))
        return Via(self.transport, self.host, self.port, tuple(params))

    def __str__(self) -> str:
        text = f"SIP/2.0/{self.transport} {self.sent_by}"
        for key, value in self.params:
            text += f";{key}" + (f"={value}" if value is not None else "")
        return text


_VIA: Final = re.compile(r"^SIP\s*/\s*2\.0\s*/\s*([A-Za-z0-9\-]+)\s+(\S[^;]*?)\s*(;.*)?$", re.IGNORECASE)


def parse_via(text: str) -> Via:
    match = _VIA.match(text.strip())
    if match is None:
        raise SipParseError(f"bad Via {text.strip()[:60]!r}")
    host, port = _parse_hostport(match.group(2), "Via")
    params = _parse_params((match.group(3) or "")[1:])
    return Via(match.group(1).upper(), host, port, params)


@dataclass(frozen=True, slots=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


def parse_cseq(text: str) -> CSeq:
    parts = text.split()
    if len(parts) != 2 or not parts[0].isdigit() or not _TOKEN.match(parts[1]):
        raise SipParseError(f"bad CSeq {text.strip()[:40]!r}")
    number = int(parts[0])
    if number >= 2**31:  # §8.1.1.5: "MUST be expressible as a 32-bit unsigned integer" and below 2**31
        raise SipParseError("CSeq number too large")
    return CSeq(number, parts[1])


# ---- messages -------------------------------------------------------------------------------------


class _MessageMixin:
    headers: Headers
    body: bytes

    @property
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @property
    def cseq(self) -> CSeq:
        return parse_cseq(self.headers.get("CSeq") or "")

    @property
    def vias(self) -> list[Via]:
        return [parse_via(v) for v in self.headers.get_all("Via")]

    @property
    def from_(self) -> NameAddr:
        return parse_name_addr(self.headers.get("From") or "")

    @property
    def to(self) -> NameAddr:
        return parse_name_addr(self.headers.get("To") or "")

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def _encode(self, start_line: str) -> bytes:
        lines = [start_line]
        for name, value in self.headers:
            if name != "Content-Length":
                lines.append(f"{name}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + self.body


@dataclass(frozen=True, slots=True)
class Request(_MessageMixin):
    method: str
    uri: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    def encode(self) -> bytes:
        """The wire form; Content-Length is always written and always right (§18.3 for TCP)."""
        return self._encode(f"{self.method} {self.uri} {self.version}")


@dataclass(frozen=True, slots=True)
class Response(_MessageMixin):
    status: int
    reason: str
    headers: Headers = field(default_factory=Headers)
    body: bytes = b""
    version: str = SIP_VERSION

    def encode(self) -> bytes:
        return self._encode(f"{self.version} {self.status} {self.reason}")


Message: TypeAlias = Request | Response


def _head_end(data: bytes | bytearray) -> tuple[int, int] | None:
    """Where the header section ends and the body starts: the first empty line (CRLF CRLF or LF LF)."""
    crlf = data.find(b"\r\n\r\n")
    lf = data.find(b"\n\n")
    if crlf < 0 and lf < 0:
        return None
    if crlf >= 0 and (lf < 0 or crlf <= lf + 1):
        return crlf, crlf + 4
    return lf, lf + 2


def _start_line(line: str) -> tuple[str, str, str]:
    if line.startswith("SIP/"):
        parts = line.split(" ", 2)
        if len(parts) < 2 or not parts[1].isdigit() or len(parts[1]) != 3:
            raise SipParseError(f"not a SIP message: bad Status-Line {line[:60]!r}")
        if not 100 <= int(parts[1]) <= 699:
            raise SipParseError(f"status code {parts[1]} out of range")
        return "response", parts[1], parts[2] if len(parts) > 2 else ""
    parts = line.split(" ")
    if len(parts) != 3:
        raise SipParseError(f"not a SIP message: bad Request-Line {line[:60]!r}")
    method, uri, version = parts
    if not _TOKEN.match(method):
        raise SipParseError(f"bad method {method[:20]!r}")
    if ":" not in uri:
        raise SipParseError(f"Request-URI without a scheme: {uri[:60]!r}")
    if not version.upper().startswith("SIP/"):
        raise SipParseError(f"not a SIP version: {version[:20]!r}")
    return "request", method, uri + " " + version


def parse_message(data: bytes, *, datagram: bool = True) -> Message:
    """Parse one message. ``datagram``: the bytes are a whole UDP datagram (§18.3 framing rules).

    Raises :class:`SipParseError`; its ``partial`` is set when the start line and the header
    fields could be read (a request then deserves a 400 naming ``reason``).
    """
    if len(data) > MAX_MESSAGE_BYTES:
        raise SipParseError("message too large")
    data = data.lstrip(b"\r\n")  # §7.5: CRLFs before the start line are ignored
    if not data:
        raise SipParseError("empty message")
    ends = _head_end(data)
    if ends is None and not datagram:
        raise SipParseError("no end of header section (CRLF CRLF)")
    unterminated = ends is None
    head_end, body_start = ends or (len(data), len(data))
    body = data[body_start:]
    try:
        text = data[:head_end].decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("not a SIP message: header section is not UTF-8") from None
    lines = _LINE_END.split(text)
    first = lines[0]
    if _CONTROL.search(first.replace("\t", " ")):
        raise SipParseError("not a SIP message: control character in start line")
    kind, a, b = _start_line(first)

    # §7.3.1: a line that starts with whitespace continues the previous header field.
    fields: list[tuple[str, str]] = []
    problem: str | None = None
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):
            if not fields:
                problem = problem or "continuation line before any header field"
                continue
            name, value = fields[-1]
            fields[-1] = (name, value + " " + line.strip())
            continue
        name, colon, value = line.partition(":")
        name = name.strip()
        if not colon or not name or not _TOKEN.match(name):
            problem = problem or f"malformed header line {line[:40]!r}"
            continue
        if _CONTROL.search(value):
            problem = problem or f"control character in {canonical_name(name)}"
            continue
        fields.append((name, value.strip()))
    headers = Headers(fields)

    message: Message
    if kind == "response":
        message = Response(int(a), b, headers, b"")
    else:
        uri, version = b.rsplit(" ", 1)
        message = Request(a.upper() if a.upper() in _KNOWN_METHODS else a, uri, headers, b"", version.upper())
    if problem:
        raise SipParseError(problem, message)
    if unterminated:
        raise SipParseError("no empty line after the header fields", message)

    # §7.4.1, §18.3: Content-Length frames the body; a datagram too short for it is an error.
    lengths = headers.get_all("Content-Length")
    if len(set(lengths)) > 1:
        raise SipParseError("conflicting Content-Length values", message)
    if lengths:
        if not lengths[0].isdigit():
            raise SipParseError(f"bad Content-Length {lengths[0][:20]!r}", message)
        length = int(lengths[0])
        if length > len(body):
            raise SipParseError("body shorter than Content-Length", message)
        body = body[:length]
    elif not datagram:
        body = b""
    if isinstance(message, Response):
        message = Response(message.status, message.reason, headers, body, message.version)
    else:
        message = Request(message.method, message.uri, headers, body, message.version)
    _check_mandatory(message)
    return message


_KNOWN_METHODS: Final = frozenset(
    {
        "INVITE",
        "ACK",
        "BYE",
        "CANCEL",
        "OPTIONS",
        "REGISTER",
        "PRACK",
        "SUBSCRIBE",
        "NOTIFY",
        "PUBLISH",
        "INFO",
        "REFER",
        "MESSAGE",
        "UPDATE",
    }
)


def _check_mandatory(message: Message) -> None:
    """§8.1.1: To, From, CSeq, Call-ID and Via must be present and readable.

    Max-Forwards is mandatory too, but many PBXs leave it out of ACK and CANCEL: it is not required
    here (a value that is present must still be a number).
    """
    headers = message.headers
    for name in ("Via", "Call-ID", "CSeq", "From", "To"):
        if name not in headers:
            raise SipParseError(f"missing {name} header field", message)
    if len(headers.get_all("Call-ID")) > 1 or len(headers.get_all("CSeq")) > 1:
        raise SipParseError("Call-ID or CSeq given twice", message)
    if not message.call_id or any(ch.isspace() for ch in message.call_id):
        raise SipParseError("bad Call-ID", message)
    try:
        vias = message.vias
        cseq = message.cseq
        message.from_  # noqa: B018  (parsed for its errors)
        message.to  # noqa: B018
    except SipParseError as exc:
        raise SipParseError(exc.reason, message) from None
    if not vias:
        raise SipParseError("missing Via header field", message)
    if isinstance(message, Request):
        if cseq.method != message.method:
            raise SipParseError("CSeq method does not match the request method", message)
        max_forwards = headers.get("Max-Forwards")
        if max_forwards is not None and (not max_forwards.isdigit() or int(max_forwards) > 255):
            raise SipParseError("bad Max-Forwards", message)


# ---- TCP framing ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeepAlive:
    """An RFC 5626 §3.5.1 keep-alive ping (CRLF CRLF); the answer is one CRLF ("pong")."""


_CONTENT_LENGTH_LINE: Final = re.compile(rb"^(?:content-length|l)[ \t]*:[ \t]*(\S*)[ \t]*$", re.IGNORECASE)


class StreamFramer:
    """Cut a TCP byte stream into messages by Content-Length (RFC 3261 §18.3), sans I/O.

    :meth:`feed` returns what became complete: message bytes (for :func:`parse_message` with
    ``datagram=False``) and :class:`KeepAlive` pings. A stream that cannot be framed (a header
    section that never ends, a bad Content-Length, a message over the size limit) raises
    :class:`SipParseError` with the header section read so far as ``partial`` when it parses; the
    connection should then be closed, as nothing after it can be trusted.
    """

    def __init__(self, max_message: int = MAX_MESSAGE_BYTES) -> None:
        self._buffer = bytearray()
        self._blank = b""
        self._max = max_message

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes | KeepAlive]:
        self._buffer += data
        out: list[bytes | KeepAlive] = []
        while True:
            buf = self._buffer
            stripped = 0
            while stripped < len(buf) and buf[stripped] in (13, 10):
                stripped += 1
            if stripped:
                # CRLFs between messages; a run of CRLF CRLF is a keep-alive ping (RFC 5626 §3.5.1).
                self._blank += bytes(buf[:stripped])
                del buf[:stripped]
                if b"\r\n\r\n" in self._blank or b"\n\n" in self._blank:
                    out.append(KeepAlive())
                    self._blank = b""
            if not buf:
                return out
            self._blank = b""
            ends = _head_end(buf)
            if ends is None or ends[1] > self._max:
                if len(buf) > self._max:
                    raise SipParseError("header section too long")
                return out
            head = bytes(buf[: ends[0]])
            head_len = ends[1]
            length = 0
            for line in re.split(rb"\r?\n", head)[1:]:
                match = _CONTENT_LENGTH_LINE.match(line)
                if match is not None:
                    value = match.group(1)
                    if not value.isdigit():
                        raise SipParseError(f"bad Content-Length {value[:20]!r}", _partial(head))
                    length = int(value)
            total = head_len + length
            if total > self._max:
                raise SipParseError("message too large", _partial(head))
            if len(buf) < total:
                return out
            out.append(bytes(buf[:total]))
            del buf[:total]


def _partial(head: bytes) -> Message | None:
    """The message a header section describes, if it parses, to answer a framing error."""
    try:
        return parse_message(head + b"\r\n\r\n", datagram=False)
    except SipParseError as exc:
        return exc.partial


# ---- building ----------------------------------------------------------------------------------


def response_to(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    server: str = "",
) -> Response:
    """A response built by RFC 3261 §8.2.6.2: Via, From, Call-ID and CSeq copied, To tagged.

    The To tag is added unless the request's To already has one or the response is 100 Trying
    (§8.2.6.2); 100 also copies a Timestamp (§8.2.6.1).
    """
    fields: list[tuple[str, str]] = [("Via", v) for v in request.headers.get_all("Via")]
    for name in ("From", "To", "Call-ID", "CSeq"):
        value = request.headers.get(name)
        if value is None:
            continue
        if name == "To" and to_tag and status != 100:
            try:
                address = parse_name_addr(value)
            except SipParseError:
                address = None
            if address is not None and address.tag is None:
                value = str(address.with_tag(to_tag))
        fields.append((name, value))
    if status == 100 and request.headers.get("Timestamp"):
        fields.append(("Timestamp", request.headers.get("Timestamp") or ""))
    if server:
        fields.append(("Server", server))
    fields.extend(extra)
    return Response(status, reason or reason_phrase(status), Headers(fields), body)
