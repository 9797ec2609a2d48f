"""HTTP digest authentication on the server side, as SIP uses it (RFC 3261 §22.4, RFC 2617, RFC 7616).

GB/T 28181-2016 §9.1.2.1: a device's first REGISTER is answered ``401 Unauthorized`` with a
``WWW-Authenticate: Digest realm=…, nonce=…, algorithm=MD5`` challenge; the device registers again
with ``Authorization: Digest username, realm, nonce, uri, response``. Devices use MD5 without
``qop`` (RFC 2617 §3.2.2.1, the RFC 2069-compatible form):

    response = H( H(username ":" realm ":" password) ":" nonce ":" H(method ":" uri) )

With ``qop=auth`` the nonce count and client nonce join in. RFC 7616 adds SHA-256 and the ``-sess``
variants; all are checked here. The server need not hold the password: ``H(username:realm:password)``
(*HA1*) is enough, which is what a device's own password is stored as.

Nonces are stateless (:class:`Nonces`): the issue time and an HMAC of it under a secret of the
instance, so any nonce we made can be checked, and one too old is answered ``stale=true``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

__all__ = [
    "ALGORITHMS",
    "Credentials",
    "DigestError",
    "Nonces",
    "challenge",
    "ha1",
    "parse_authorization",
    "response_for",
    "verify",
]

#: Algorithm name (upper case) → hash (RFC 7616 §6.1; ``-sess`` variants share their hash).
ALGORITHMS: Final = {"MD5": "md5", "MD5-SESS": "md5", "SHA-256": "sha256", "SHA-256-SESS": "sha256"}


class DigestError(ValueError):
    """An Authorization header that cannot be read."""


def _hash(name: str, text: str) -> str:
    return hashlib.new(name, text.encode("utf-8")).hexdigest()


def ha1(username: str, realm: str, password: str, algorithm: str = "MD5") -> str:
    """``H(username ":" realm ":" password)`` in lower-case hex."""
    return _hash(ALGORITHMS[algorithm.upper()], f"{username}:{realm}:{password}")


def parse_authorization(value: str) -> dict[str, str]:
    """The parameters of ``Digest k=v, k="v", …`` (names lower case, quotes and escapes removed)."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"not a Digest credential: {scheme[:20]!r}")
    params: dict[str, str] = {}
    i, n = 0, len(rest)
    while i < n:
        while i < n and rest[i] in " \t,":
            i += 1
        if i >= n:
            break
        eq = rest.find("=", i)
        if eq < 0:
            raise DigestError(f"parameter without a value near {rest[i : i + 20]!r}")
        name = rest[i:eq].strip().lower()
        i = eq + 1
        while i < n and rest[i] in " \t":
            i += 1
        if i < n and rest[i] == '"':
            i += 1
            chars: list[str] = []
            while i < n and rest[i] != '"':
                if rest[i] == "\\" and i + 1 < n:
                    i += 1
                chars.append(rest[i])
                i += 1
            if i >= n:
                raise DigestError("unclosed quoted string")
            i += 1
            params[name] = "".join(chars)
        else:
            end = rest.find(",", i)
            end = n if end < 0 else end
            params[name] = rest[i:end].strip()
            i = end
        if not name:
            raise DigestError("empty parameter name")
    return params


def challenge(realm: str, nonce: str, algorithm: str = "MD5", *, stale: bool = False) -> str:
    """A ``WWW-Authenticate`` value as GB/T 28181 devices expect it (no qop offered)."""
    text = f'Digest realm="{realm}", nonce="{nonce}", algorithm={algorithm}'
    return text + (", stale=TRUE" if stale else "")


def response_for(params: Mapping[str, str], method: str, ha1_hex: str) -> str:
    """The ``response`` a client knowing ``ha1_hex`` computes for these parameters (RFC 7616 §3.4.1)."""
    algorithm = (params.get("algorithm") or "MD5").upper()
    name = ALGORITHMS[algorithm]
    nonce = params.get("nonce", "")
    key = ha1_hex
    if algorithm.endswith("-SESS"):
        key = _hash(name, f"{ha1_hex}:{nonce}:{params.get('cnonce', '')}")
    ha2 = _hash(name, f"{method}:{params.get('uri', '')}")
    qop = params.get("qop", "")
    if qop:
        return _hash(name, f"{key}:{nonce}:{params.get('nc', '')}:{params.get('cnonce', '')}:{qop}:{ha2}")
    return _hash(name, f"{key}:{nonce}:{ha2}")


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the server holds for a user: HA1 for each algorithm it can check (MD5, SHA-256)."""

    md5: str = ""
    sha256: str = ""

    @classmethod
    def from_password(cls, username: str, realm: str, password: str) -> Credentials:
        return cls(ha1(username, realm, password, "MD5"), ha1(username, realm, password, "SHA-256"))

    def for_algorithm(self, algorithm: str) -> str:
        return self.sha256 if ALGORITHMS.get(algorithm.upper()) == "sha256" else self.md5


def verify(params: Mapping[str, str], method: str, credentials: Credentials) -> bool:
    """True when ``response`` is right for ``credentials`` (constant-time comparison)."""
    algorithm = (params.get("algorithm") or "MD5").upper()
    if algorithm not in ALGORITHMS:
        return False
    if params.get("qop") not in (None, "", "auth"):
        return False  # auth-int is not offered
    key = credentials.for_algorithm(algorithm)
    if not key:
        return False
    expected = response_for(params, method, key)
    return hmac.compare_digest(expected, params.get("response", "").lower())


class Nonces:
    """Stateless nonces: 8 hex digits of issue time and 24 of an HMAC over them (32 in all)."""

    def __init__(self, secret: bytes | None = None, lifetime: float = 3600.0) -> None:
        self._secret = secret or secrets.token_bytes(32)
        self.lifetime = lifetime

    def _mac(self, stamp: str) -> str:
        return hmac.new(self._secret, stamp.encode("ascii"), hashlib.sha256).hexdigest()[:24]

    def make(self, now: float) -> str:
        stamp = f"{int(now) & 0xFFFFFFFF:08x}"
        return stamp + self._mac(stamp)

    def check(self, nonce: str, now: float) -> str:
        """``ok``, ``stale`` (ours, but older than the lifetime) or ``bad`` (not ours)."""
        if len(nonce) != 32:
            return "bad"
        stamp, mac = nonce[:8], nonce[8:]
        if not hmac.compare_digest(self._mac(stamp), mac):
            return "bad"
        try:
            issued = int(stamp, 16)
        except ValueError:
            return "bad"
        age = (int(now) & 0xFFFFFFFF) - issued
        return "ok" if 0 <= age <= self.lifetime else "stale"
