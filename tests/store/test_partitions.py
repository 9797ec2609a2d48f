"""The track's monthly partitions, on a database of their own in the real PostgreSQL: migration 0016
turns a track with rows into a partitioned one without losing or copying a row; months are made
ahead (rows that came early move into their month); months past retention are dropped whole and
stray rows older than it deleted; a fix of any time finds a partition; two instances never do the
same round at once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from dispatchd.store import partitions
from dispatchd.store.db import init_connection
from dispatchd.store.migrate import available_migrations, migrate
from tests.conftest import StoreUrls

PARTITIONED_IN = 16
AUDIT_PARTITIONED_IN = 17


def _row(unit: int, at: datetime) -> tuple[object, ...]:
    return (unit, 1, at, 27.74, 120.48, None, None, None, None, None, "osmand", at)


COLUMNS = ("unit_id", "device_id", "at", "lat", "lon", "speed_kmh", "heading", "altitude_m", "accuracy_m", "battery", "source", "received_at")


@pytest.fixture
async def fresh_db(store_urls: StoreUrls) -> AsyncIterator[asyncpg.Connection]:
    """An empty database on the test server, migrated up to just before the track was partitioned."""
    name = f"dispatchd_parts_{uuid.uuid4().hex[:8]}"
    admin = await asyncpg.connect(store_urls.database)
    await admin.execute(f"CREATE DATABASE {name}")
    url = urlsplit(store_urls.database)
    conn = await asyncpg.connect(urlunsplit(url._replace(path=f"/{name}")))
    await init_connection(conn)
    try:
        async with conn.transaction():
            await conn.execute("CREATE TABLE schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
            for mig in available_migrations():
                if mig.version < PARTITIONED_IN:
                    await conn.execute(mig.sql)
                    await conn.execute("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", mig.version, mig.name)
        yield conn
    finally:
        await conn.close()
        await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        await admin.close()


async def _count(conn: asyncpg.Connection, table: str) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM {table}"))


async def test_the_migration_keeps_every_row_and_partitions_by_month(fresh_db: asyncpg.Connection) -> None:
    """Rows of a year ago, today and next week are all in the partitioned track afterwards (in the
    old table, now the partition of everything before the month after the newest); the next months
    and the default partition exist; a fix of the year 2100 is taken (default partition)."""
    conn = fresh_db
    now = await conn.fetchval("SELECT now()")
    old = [_row(1, now - timedelta(days=365)), _row(1, now), _row(2, now + timedelta(days=7))]
    await conn.copy_records_to_table("track_points", records=old, columns=COLUMNS)
    assert [m.version for m in await migrate(conn)] == [PARTITIONED_IN, AUDIT_PARTITIONED_IN]
    assert await conn.fetchval("SELECT relkind FROM pg_class WHERE relname = 'track_points'") == b"p"
    assert await _count(conn, "track_points") == 3 and await _count(conn, "track_points_before") == 3
    parts = {p.name: p for p in await partitions.partitions(conn, "track_points")}
    before = parts["track_points_before"]
    assert before.lo is None and before.hi == partitions.add_months(partitions.month_start(now + timedelta(days=7)), 1)
    months = sorted(p.lo for p in parts.values() if p.lo is not None)
    assert months == [partitions.add_months(before.hi, i) for i in range(3)]
    assert parts["track_points_other"].default
    far = datetime(2100, 1, 1, tzinfo=UTC)
    await conn.copy_records_to_table("track_points", records=[_row(3, far)], columns=COLUMNS)
    assert await _count(conn, "track_points_other") == 1
    plan = "\n".join(r[0] for r in await conn.fetch("EXPLAIN SELECT * FROM track_points WHERE unit_id = 1 AND at >= $1 AND at < $2", far, far + timedelta(days=1)))
    assert "track_points_before" not in plan  # a track query reads only the months it asks for


async def test_months_are_made_ahead_and_early_rows_move_into_theirs(fresh_db: asyncpg.Connection) -> None:
    """Half a year on, the round makes this month and two ahead; a row that reached the default
    partition before its month existed is moved into it; a second round makes nothing."""
    conn = fresh_db
    await migrate(conn)
    start = next(p.hi for p in await partitions.partitions(conn, "track_points") if p.name == "track_points_before")
    assert start is not None
    later = partitions.add_months(start, 6) + timedelta(days=3)
    early = later + timedelta(days=40)  # next month's fix, before the month exists
    await conn.copy_records_to_table("track_points", records=[_row(1, early)], columns=COLUMNS)
    assert await _count(conn, "track_points_other") == 1
    made = await partitions.ensure_months(conn, "track_points", later, 2)
    month = partitions.month_start(later)
    assert made == [partitions.month_name("track_points", partitions.add_months(month, i)) for i in range(3)]
    assert await _count(conn, "track_points_other") == 0
    assert await _count(conn, made[1]) == 1 and await _count(conn, "track_points") == 1
    assert await partitions.ensure_months(conn, "track_points", later, 2) == []


async def test_months_past_retention_are_dropped_and_old_strays_deleted(fresh_db: asyncpg.Connection) -> None:
    """A cutoff after the old table's range drops it and the months that ended before the cutoff,
    deletes older rows of the default partition, and keeps everything newer; a fix older than every
    month left still finds a partition."""
    conn = fresh_db
    now = await conn.fetchval("SELECT now()")
    await conn.copy_records_to_table("track_points", records=[_row(1, now)], columns=COLUMNS)
    await migrate(conn)
    parts = await partitions.partitions(conn, "track_points")
    first_month = min(p.lo for p in parts if p.lo is not None)
    kept = first_month + timedelta(days=35)  # in the second month
    await conn.copy_records_to_table(
        "track_points",
        records=[_row(1, first_month + timedelta(days=1)), _row(1, kept), _row(2, datetime(1999, 1, 1, tzinfo=UTC))],
        columns=COLUMNS,
    )
    cutoff = partitions.add_months(first_month, 1)
    dropped, deleted = await partitions.drop_before(conn, "track_points", cutoff)
    assert dropped == sorted(["track_points_before", partitions.month_name("track_points", first_month)])
    assert deleted == 0  # the 1999 fix was in the old table's range, dropped with it
    assert [r["at"] for r in await conn.fetch("SELECT at FROM track_points ORDER BY at")] == [kept]
    stray = datetime(2001, 1, 1, tzinfo=UTC)
    await conn.copy_records_to_table("track_points", records=[_row(3, stray)], columns=COLUMNS)
    assert await _count(conn, "track_points_other") == 1
    assert await partitions.drop_before(conn, "track_points", cutoff) == ([], 1)
    assert await _count(conn, "track_points") == 1


async def test_one_round_at_a_time(fresh_db: asyncpg.Connection, store_urls: StoreUrls) -> None:
    """While another connection holds the round's lock of the table, a round does nothing."""
    conn = fresh_db
    await migrate(conn)
    name = await conn.fetchval("SELECT current_database()")
    url = urlsplit(store_urls.database)
    holder = await asyncpg.connect(urlunsplit(url._replace(path=f"/{name}")))
    try:
        async with holder.transaction():
            await holder.execute("SELECT pg_advisory_xact_lock($1, hashtext('track_points'))", partitions.PARTITIONS_LOCK)
            far = datetime(2099, 6, 1, tzinfo=UTC)
            assert await partitions.ensure_months(conn, "track_points", far, 0) == []
            assert await partitions.drop_before(conn, "track_points", far) == ([], 0)
        assert await partitions.ensure_months(conn, "track_points", far, 0) == ["track_points_p209906"]
    finally:
        await holder.close()


async def _audit(conn: asyncpg.Connection, at: datetime, entity_id: str = "1") -> int:
    return int(
        await conn.fetchval(
            "INSERT INTO audit_log (entity, entity_id, version, action, actor_name, at, data)"
            " VALUES ('incident', $1, 1, 'report', 'test', $2, '{}') RETURNING id",
            entity_id,
            at,
        )
    )


async def test_the_audit_log_keeps_its_rows_its_ids_and_stays_append_only(fresh_db: asyncpg.Connection) -> None:
    """Audit rows written before migration 0017 are all there afterwards with their ids; new rows
    take the next ids of the same sequence; updating or deleting a row of any month is refused; a
    row that reached the default partition early moves into its month when it is made (the
    append-only rule does not stop the move), and nothing else of the log changes."""
    conn = fresh_db
    now = await conn.fetchval("SELECT now()")
    before = [await _audit(conn, now - timedelta(days=400)), await _audit(conn, now)]
    await migrate(conn)
    assert await conn.fetchval("SELECT relkind FROM pg_class WHERE relname = 'audit_log'") == b"p"
    assert [r["id"] for r in await conn.fetch("SELECT id FROM audit_log ORDER BY id")] == before
    after = await _audit(conn, now)
    assert after == before[-1] + 1
    for statement in ("UPDATE audit_log SET note = 'x' WHERE id = $1", "DELETE FROM audit_log WHERE id = $1"):
        for row_id in (before[0], after):
            with pytest.raises(asyncpg.RaiseError, match="append-only"):
                await conn.execute(statement, row_id)
    boundary = next(p.hi for p in await partitions.partitions(conn, "audit_log") if p.name == "audit_log_before")
    assert boundary is not None
    later = partitions.add_months(boundary, 6)
    early = await _audit(conn, later + timedelta(days=3))  # before its month exists: the default partition
    assert await _count(conn, "audit_log_other") == 1
    made = await partitions.ensure_months(conn, "audit_log", later, 0)
    assert made == [partitions.month_name("audit_log", later)]
    assert await _count(conn, made[0]) == 1 and await _count(conn, "audit_log_other") == 0
    assert [r["id"] for r in await conn.fetch("SELECT id FROM audit_log ORDER BY id")] == [*before, after, early]
    with pytest.raises(asyncpg.RaiseError, match="append-only"):
        await conn.execute("DELETE FROM audit_log WHERE id = $1", early)  # the rule holds for the default again
