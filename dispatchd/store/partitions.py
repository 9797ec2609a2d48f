"""Monthly range partitions of a table partitioned by a time column (``track_points`` by ``at``).

A month's partition is ``<table>_pYYYYMM`` and holds ``[first of the month, first of the next)`` in
UTC. :func:`ensure_months` makes the months from ``now`` to ``ahead`` months later, so that rows of
the coming weeks find theirs; :func:`drop_before` drops the months that ended before a cutoff (a
month is dropped whole, in an instant, instead of deleted row by row). Every partitioned table here
has a ``<table>_other`` DEFAULT partition that takes any row no month holds (a fix far in the past or
the future): nothing is refused for its time. When a month is made whose rows already went to the
default partition, they are moved into it in the same transaction (the default partition detached
meanwhile, so that a row rule of the table, such as the audit log's append-only trigger, does not
stop the move).

Both run in one transaction under a transaction advisory lock per table, so that instances doing
the same round do not race; the second finds the work done.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import asyncpg

# pg_try_advisory_xact_lock(int4, int4) namespace of partition maintenance: "part" in ASCII.
PARTITIONS_LOCK: Final = 0x70617274
_BOUND = re.compile(r"FOR VALUES FROM \((.+?)\) TO \((.+?)\)")
_IDENT = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Partition:
    name: str
    lo: datetime | None  # None: MINVALUE (or the default partition)
    hi: datetime | None  # None: MAXVALUE (or the default partition)
    default: bool = False


def month_start(t: datetime) -> datetime:
    """The first instant of ``t``'s month, in UTC."""
    u = t.astimezone(UTC)
    return datetime(u.year, u.month, 1, tzinfo=UTC)


def add_months(month: datetime, n: int) -> datetime:
    index = month.year * 12 + month.month - 1 + n
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


def month_name(table: str, month: datetime) -> str:
    return f"{table}_p{month.year:04d}{month.month:02d}"


def default_name(table: str) -> str:
    return f"{table}_other"


def _bound(text: str) -> datetime | None:
    text = text.strip()
    if text in ("MINVALUE", "MAXVALUE"):
        return None
    return datetime.fromisoformat(text.strip("'")).astimezone(UTC)


def _check(table: str) -> str:
    if not _IDENT.match(table):
        raise ValueError(f"not a plain table name: {table!r}")
    return table


async def partitions(conn: asyncpg.Connection, table: str) -> list[Partition]:
    """The partitions of ``table`` with their bounds, the default one included."""
    rows = await conn.fetch(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass ORDER BY c.relname",
        _check(table),
    )
    out: list[Partition] = []
    for r in rows:
        if r["bound"] == "DEFAULT":
            out.append(Partition(r["relname"], None, None, default=True))
            continue
        m = _BOUND.search(r["bound"])
        if m is None:
            raise ValueError(f"unexpected bound of {r['relname']}: {r['bound']}")
        out.append(Partition(r["relname"], _bound(m.group(1)), _bound(m.group(2))))
    return out


def _overlaps(p: Partition, lo: datetime, hi: datetime) -> bool:
    if p.default:
        return False
    return (p.lo is None or p.lo < hi) and (p.hi is None or p.hi > lo)


async def _locked(conn: asyncpg.Connection, table: str) -> bool:
    return bool(await conn.fetchval("SELECT pg_try_advisory_xact_lock($1, hashtext($2))", PARTITIONS_LOCK, table))


async def ensure_months(conn: asyncpg.Connection, table: str, now: datetime, ahead: int) -> list[str]:
    """Make the month partitions from ``now``'s month to ``ahead`` months later that no partition
    covers yet; return their names (empty when another instance holds the round)."""
    table = _check(table)
    made: list[str] = []
    async with conn.transaction():
        if not await _locked(conn, table):
            return made
        existing = await partitions(conn, table)
        default = next((p.name for p in existing if p.default), None)
        first = month_start(now)
        for n in range(ahead + 1):
            lo, hi = add_months(first, n), add_months(first, n + 1)
            if any(_overlaps(p, lo, hi) for p in existing):
                continue
            name = month_name(table, lo)
            bounds = f"FOR VALUES FROM ('{lo.isoformat()}') TO ('{hi.isoformat()}')"
            early = default is not None and await conn.fetchval(
                f"SELECT EXISTS (SELECT 1 FROM {default} WHERE at >= $1 AND at < $2)", lo, hi
            )
            if not early:
                await conn.execute(f"CREATE TABLE {name} PARTITION OF {table} {bounds}")
            else:
                # Rows of this month came before it existed: the default partition is taken out (so
                # that no row-level rule of the table, such as the audit log's append-only trigger,
                # applies to the move), the month made, its rows moved into it, the default put back.
                assert default is not None
                await conn.execute(f"ALTER TABLE {table} DETACH PARTITION {default}")
                await conn.execute(f"CREATE TABLE {name} PARTITION OF {table} {bounds}")
                await conn.execute(
                    f"WITH moved AS (DELETE FROM {default} WHERE at >= $1 AND at < $2 RETURNING *)"
                    f" INSERT INTO {table} SELECT * FROM moved",
                    lo,
                    hi,
                )
                await conn.execute(f"ALTER TABLE {table} ATTACH PARTITION {default} DEFAULT")
            made.append(name)
            existing.append(Partition(name, lo, hi))
    return made


async def drop_before(conn: asyncpg.Connection, table: str, cutoff: datetime) -> tuple[list[str], int]:
    """Drop the partitions that end at or before ``cutoff`` and delete the default partition's rows
    older than it; return (the partitions dropped, the rows deleted)."""
    table = _check(table)
    dropped: list[str] = []
    async with conn.transaction():
        if not await _locked(conn, table):
            return dropped, 0
        deleted = 0
        for p in await partitions(conn, table):
            if p.default:
                status = await conn.execute(f"DELETE FROM {p.name} WHERE at < $1", cutoff)
                deleted = int(status.split()[-1])
            elif p.hi is not None and p.hi <= cutoff:
                await conn.execute(f"DROP TABLE {p.name}")
                dropped.append(p.name)
    return dropped, deleted
