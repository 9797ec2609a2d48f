"""HTTP Digest authentication for SIP requests to a trunk (RFC 3261 §22.4, RFC 7616, RFC 2617).

A trunk or PBX answers an INVITE with 401 (``WWW-Authenticate``) or 407 (``Proxy-Authenticate``);
the request is sent again with ``Authorization`` or ``Proxy-Authorization`` carrying the response
computed here. MD5 (what SIP equipment speaks, RFC 2617 §3.2.2) and SHA-256 (RFC 7616 §3.4.1),
each with ``-sess`` (§3.4.2), with ``qop=auth`` when offered or without qop (RFC 2069 style).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Final

__all__ = ["Challenge", "DigestError", "authorization", "parameters", "parse_challenge", "response"]

_ALGORITHMS: Final = {"MD5": hashlib.md5, "SHA-256": hashlib.sha256}


class DigestError(ValueError):
    """A challenge we cannot answer."""


@dataclass(frozen=True, slots=True)
class Challenge:
    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: tuple[str, ...] = ()
    opaque: str | None = None
    stale: bool = False


def parameters(text: str) -> dict[str, str]:
    """``name=value`` pairs, values quoted (with backslash escapes) or tokens, comma-separated."""
    out: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " ,\t":
            i += 1
        start = i
        while i < n and text[i] not in "=, \t":
            i += 1
        name = text[start:i].strip().lower()
        while i < n and text[i] in " \t":
            i += 1
        if i >= n or text[i] != "=":
            if name:
                out[name] = ""
            continue
        i += 1
        while i < n and text[i] in " \t":
            i += 1
        if i < n and text[i] == '"':
            i += 1
            value = []
            while i < n and text[i] != '"':
                if text[i] == "\\" and i + 1 < n:
                    i += 1
                value.append(text[i])
                i += 1
            i += 1
            out[name] = "".join(value)
        else:
            start = i
            while i < n and text[i] != ",":
                i += 1
            out[name] = text[start:i].strip()
    return out


def parse_challenge(header: str) -> Challenge:
    """A ``WWW-Authenticate`` / ``Proxy-Authenticate`` value: ``Digest realm="…", nonce="…", …``."""
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"authentication scheme {scheme!r} is not Digest")
    params = parameters(rest)
    if "realm" not in params or "nonce" not in params:
        raise DigestError("Digest challenge without realm or nonce")
    algorithm = params.get("algorithm", "MD5").upper()
    base = algorithm.removesuffix("-SESS")
    if base not in _ALGORITHMS:
        raise DigestError(f"unsupported digest algorithm {algorithm}")
    qop = tuple(q.strip().lower() for q in params.get("qop", "").split(",") if q.strip())
    if qop and "auth" not in qop:
        raise DigestError("only qop=auth is supported")
    return Challenge(
        realm=params["realm"],
        nonce=params["nonce"],
        algorithm=algorithm,
        qop=qop,
        opaque=params.get("opaque"),
        stale=params.get("stale", "").lower() == "true",
    )


def _h(algorithm: str, text: str) -> str:
    return _ALGORITHMS[algorithm.upper().removesuffix("-SESS")](text.encode("utf-8")).hexdigest()


def response(
    challenge: Challenge, *, username: str, password: str, method: str, uri: str, cnonce: str, nc: int
) -> str:
    """The ``response`` value (RFC 7616 §3.4.1; RFC 2617 §3.2.2.1 without qop)."""
    algorithm = challenge.algorithm
    ha1 = _h(algorithm, f"{username}:{challenge.realm}:{password}")
    if algorithm.upper().endswith("-SESS"):
        ha1 = _h(algorithm, f"{ha1}:{challenge.nonce}:{cnonce}")
    ha2 = _h(algorithm, f"{method}:{uri}")
    if "auth" in challenge.qop:
        return _h(algorithm, f"{ha1}:{challenge.nonce}:{nc:08x}:{cnonce}:auth:{ha2}")
    return _h(algorithm, f"{ha1}:{challenge.nonce}:{ha2}")


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def authorization(
    challenge: Challenge, *, username: str, password: str, method: str, uri: str, cnonce: str, nc: int = 1
) -> str:
    """The ``Authorization`` / ``Proxy-Authorization`` value answering ``challenge``."""
    digest = response(
        challenge, username=username, password=password, method=method, uri=uri, cnonce=cnonce, nc=nc
    )
    parts = [
        f"username={_quote(username)}",
        f"realm={_quote(challenge.realm)}",
        f"nonce={_quote(challenge.nonce)}",
        f"uri={_quote(uri)}",
        f"response={_quote(digest)}",
        f"algorithm={challenge.algorithm}",
    ]
    if "auth" in challenge.qop:
        parts += [f"cnonce={_quote(cnonce)}", "qop=auth", f"nc={nc:08x}"]
    if challenge.opaque is not None:
        parts.append(f"opaque={_quote(challenge.opaque)}")
    return "Digest " + ", ".join(parts)
