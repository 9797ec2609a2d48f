"""Tracking devices: secrets, and the in-process directory the protocol servers look devices up in.

Fixes arrive by the thousand a second; looking each device up in PostgreSQL would cost a round
trip per fix. The directory keeps what it found for ``ttl`` seconds (unknown identifiers for
``negative_ttl``, so a flood of made-up ids cannot hammer the database) and is invalidated on this
instance when a device is registered or changed. While PostgreSQL is unreachable, a device found
before is still known (its entry is used past its time), so fixes keep coming in.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from dispatchd.clock import Clock
from dispatchd.store.outage import classify

_JT808_ID = re.compile(r"^[0-9a-f]{1,20}$")
_OSMAND_ID = re.compile(r"^[\x21-\x7e]{1,64}$")


@dataclass(frozen=True, slots=True)
class Device:
    id: int
    unit_id: int
    protocol: str
    identifier: str
    secret_hash: bytes | None
    disabled: bool

    def secret_matches(self, secret: str | None) -> bool:
        if self.secret_hash is None or not secret or len(secret) > 200:
            return False
        return hmac.compare_digest(self.secret_hash, digest(secret))


def digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode()).digest()


def new_secret(protocol: str) -> str:
    """A device key (OsmAnd: URL-safe) or a JT/T 808 auth code (ASCII digits and letters)."""
    return secrets.token_urlsafe(18) if protocol == "osmand" else secrets.token_hex(8)


def normalise_identifier(protocol: str, identifier: str) -> str | None:
    """The canonical identifier, or None when it cannot be one.

    JT/T 808: the terminal phone number as the header carries it, BCD digits without the leading
    zeros of the padding (``013800138000`` → ``13800138000``). OsmAnd: printable ASCII, no spaces.
    """
    ident = identifier.strip()
    if protocol == "jt808":
        ident = ident.lower().lstrip("0") or "0"
        return ident if _JT808_ID.match(ident) else None
    return ident if _OSMAND_ID.match(ident) else None


def _device(row: asyncpg.Record) -> Device:
    return Device(
        row["id"], row["unit_id"], row["protocol"], row["identifier"], row["secret_hash"], row["disabled"]
    )


class DeviceDirectory:
    """Devices by (protocol, identifier), cached for a while."""

    def __init__(
        self, pool: asyncpg.Pool, clock: Clock, ttl: float = 60.0, negative_ttl: float = 5.0
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self._cache: dict[tuple[str, str], tuple[float, Device | None]] = {}

    def cached(self, protocol: str, identifier: str) -> Device | None:
        """The device if it is cached and fresh (no database access); None otherwise."""
        hit = self._cache.get((protocol, identifier))
        if hit is not None and hit[0] > self.clock.monotonic():
            return hit[1]
        return None

    async def find(self, protocol: str, identifier: str) -> Device | None:
        key = (protocol, identifier)
        hit = self._cache.get(key)
        now = self.clock.monotonic()
        if hit is not None and hit[0] > now:
            return hit[1]
        try:
            async with self.pool.acquire() as conn:
                row = await conn.fetchrow(
                    "SELECT * FROM devices WHERE protocol = $1 AND identifier = $2", protocol, identifier
                )
        except Exception as exc:
            if hit is not None and hit[1] is not None and classify(exc) is not None:
                return hit[1]  # PostgreSQL is away: what we knew of the device still holds
            raise
        device = _device(row) if row else None
        if len(self._cache) > 200_000:
            self._cache.clear()
        self._cache[key] = (now + (self.ttl if device else self.negative_ttl), device)
        return device

    def forget(self, protocol: str, identifier: str) -> None:
        self._cache.pop((protocol, identifier), None)

    async def set_secret(
        self, device: Device, secret: str, *, registered_at: datetime | None = None
    ) -> Device:
        """Store a new secret (a JT/T 808 auth code issued at registration)."""
        async with self.pool.acquire() as conn:
            await conn.execute(
                "UPDATE devices SET secret_hash = $2, registered_at = COALESCE($3, registered_at)"
                " WHERE id = $1",
                device.id,
                digest(secret),
                registered_at,
            )
        updated = Device(
            device.id, device.unit_id, device.protocol, device.identifier, digest(secret), device.disabled
        )
        self._cache[(device.protocol, device.identifier)] = (self.clock.monotonic() + self.ttl, updated)
        return updated
