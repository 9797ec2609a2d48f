"""API keys for Open311 clients: random, shown once, stored as a SHA-256 digest."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    name: str
    org: str


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


async def create_api_key(conn: asyncpg.Connection, name: str, org: str) -> tuple[str, int]:
    if not name.strip():
        raise ValueError("name must not be empty")
    if not await conn.fetchval("SELECT 1 FROM org_units WHERE code = $1", org):
        raise ValueError(f"unknown organisation unit {org!r}")
    key = "dk_" + secrets.token_urlsafe(24)
    key_id: int = await conn.fetchval(
        "INSERT INTO api_keys (name, org_code, key_hash) VALUES ($1, $2, $3) RETURNING id",
        name.strip(),
        org,
        _digest(key),
    )
    return key, key_id


async def find_api_key(conn: asyncpg.Connection, key: str) -> ApiKey | None:
    if not key or len(key) > 200:
        return None
    row = await conn.fetchrow(
        "SELECT id, name, org_code FROM api_keys WHERE key_hash = $1 AND NOT revoked", _digest(key)
    )
    return ApiKey(row["id"], row["name"], row["org_code"]) if row else None
