"""The outbox: every change writes one row in the same transaction as its new state.

``seq`` must increase in commit order so that a reader resuming "after seq N" never skips a row
that commits late. Writers therefore take one transaction-scoped advisory lock before inserting:
the lock is held until commit, so rows become visible in the order of their sequence numbers.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import asyncpg

OUTBOX_LOCK = 0x6F7574626F78  # "outbox"


async def emit(
    conn: asyncpg.Connection,
    topic: str,
    entity_id: str | int,
    org_path: Sequence[str],
    payload: dict[str, Any],
) -> int:
    """Append a change inside the caller's transaction; return its sequence number."""
    if not conn.is_in_transaction():
        raise RuntimeError("outbox.emit must run inside the transaction that makes the change")
    await conn.execute("SELECT pg_advisory_xact_lock($1)", OUTBOX_LOCK)
    seq: int = await conn.fetchval(
        "INSERT INTO outbox (topic, entity_id, org_path, payload) VALUES ($1, $2, $3, $4::text::jsonb)"
        " RETURNING seq",
        topic,
        str(entity_id),
        list(org_path),
        json.dumps(payload, ensure_ascii=False, default=str),
    )
    return seq
