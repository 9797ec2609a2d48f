"""Failed logins, counted per client address and per account name (as typed), in PostgreSQL.

The name typed is never stored: only an HMAC of it, keyed by a random key made once per database
(``login_hash_key``), so that a password typed into the name field cannot be read back. Counts run in
a window that starts at the first failure; rows older than the window are pruned as failures come.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

import asyncpg

ADDRESS = "address"
ACCOUNT = "account"


@dataclass(frozen=True, slots=True)
class Failures:
    """Failures within the window: from this address, and against this account name."""

    address: int = 0
    address_since: datetime | None = None
    account: int = 0


async def hash_key(conn: asyncpg.Connection) -> bytes:
    """The database's key for hashing account names (made on first use)."""
    await conn.execute(
        "INSERT INTO login_hash_key (key) VALUES ($1) ON CONFLICT (id) DO NOTHING", secrets.token_bytes(32)
    )
    key: bytes = await conn.fetchval("SELECT key FROM login_hash_key")
    return key


def account_key(key: bytes, username: str) -> str:
    return hmac.new(key, username.casefold().encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


async def failures(
    conn: asyncpg.Connection, address: str, account: str, now: datetime, window: timedelta
) -> Failures:
    rows = await conn.fetch(
        "SELECT scope, failures, first_at FROM login_failures"
        " WHERE ((scope = 'address' AND key = $1) OR (scope = 'account' AND key = $2)) AND first_at > $3",
        address,
        account,
        now - window,
    )
    found = {r["scope"]: r for r in rows}
    addr, acct = found.get(ADDRESS), found.get(ACCOUNT)
    return Failures(
        address=addr["failures"] if addr else 0,
        address_since=addr["first_at"] if addr else None,
        account=acct["failures"] if acct else 0,
    )


async def record_failure(
    conn: asyncpg.Connection, address: str, account: str, now: datetime, window: timedelta
) -> None:
    """One more failure for the address and for the account name (a new window if the old one ended)."""
    await conn.executemany(
        "INSERT INTO login_failures (scope, key, failures, first_at, last_at) VALUES ($1, $2, 1, $3, $3)"
        " ON CONFLICT (scope, key) DO UPDATE SET"
        "  failures = CASE WHEN login_failures.first_at <= $4 THEN 1 ELSE login_failures.failures + 1 END,"
        "  first_at = CASE WHEN login_failures.first_at <= $4 THEN $3 ELSE login_failures.first_at END,"
        "  last_at = $3",
        [(ADDRESS, address, now, now - window), (ACCOUNT, account, now, now - window)],
    )
    await conn.execute("DELETE FROM login_failures WHERE last_at <= $1", now - window)


async def clear_account(conn: asyncpg.Connection, account: str) -> None:
    """The owner logged in: their account's count starts again."""
    await conn.execute("DELETE FROM login_failures WHERE scope = 'account' AND key = $1", account)
