"""Versioned SQL migrations, applied in one transaction under a PostgreSQL advisory lock.

Two instances starting together cannot race: the second waits on the lock, then finds every
version already recorded in ``schema_migrations`` and applies nothing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

# pg_advisory_xact_lock key: "dispatchd" in ASCII, fits a bigint.
MIGRATION_LOCK = 0x6469737061746368
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str


def available_migrations() -> list[Migration]:
    found: list[Migration] = []
    for entry in resources.files("dispatchd.store.migrations").iterdir():
        m = _NAME.match(entry.name)
        if m:
            found.append(Migration(int(m.group(1)), m.group(2), entry.read_text(encoding="utf-8")))
    found.sort(key=lambda mig: mig.version)
    versions = [mig.version for mig in found]
    if len(set(versions)) != len(versions):
        raise RuntimeError(f"duplicate migration versions: {versions}")
    return found


async def migrate(conn: asyncpg.Connection, *, statement_timeout: float | None = None) -> list[Migration]:
    """Apply every pending migration; return the ones applied. ``statement_timeout`` bounds each statement
    on the client side (None: the connection's command timeout); the caller lifts the session's
    ``statement_timeout`` when migrations may run long."""
    applied: list[Migration] = []
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK, timeout=statement_timeout)
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())",
            timeout=statement_timeout,
        )
        done = {r["version"] for r in await conn.fetch("SELECT version FROM schema_migrations")}
        for mig in available_migrations():
            if mig.version in done:
                continue
            await conn.execute(mig.sql, timeout=statement_timeout)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", mig.version, mig.name
            )
            applied.append(mig)
    return applied
