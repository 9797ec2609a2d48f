"""The change feed and the board websocket on real sockets, PostgreSQL and Redis."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from dispatchd.clock import FakeClock
from dispatchd.domain.orgs import OrgTree
from dispatchd.embedded import EmbeddedRedis
from dispatchd.live.feed import RELAY_LOCK
from dispatchd.live.protocol import CLOSE_RESUME, feed_envelope
from dispatchd.live.slots import FEED
from dispatchd.store import keys
from dispatchd.store.db import init_connection
from tests.conftest import AppFactory, StoreUrls, UserFactory
from tests.live.helpers import (
    COUNTY,
    GRID,
    OTHER_TOWN,
    TOWN,
    RawWs,
    app_of,
    board_path,
    changes,
    emit_rows,
    eventually,
    make_case,
    path_of,
)


@pytest.fixture
async def db(clean_stores: StoreUrls) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(clean_stores.database)
    await init_connection(conn)
    yield conn
    await conn.close()


@pytest.fixture
async def db2(clean_stores: StoreUrls) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(clean_stores.database)
    await init_connection(conn)
    yield conn
    await conn.close()


async def test_first_message_is_a_snapshot_then_changes_of_the_jurisdiction(
    make_client: AppFactory, make_user: UserFactory, db: asyncpg.Connection, org_tree: OrgTree
) -> None:
    """First a snapshot current to the last seq, then only the jurisdiction's changes, in seq order."""
    c = await make_client()
    officer = await make_user("duty_officer", TOWN)
    before = await emit_rows(db, path_of(org_tree, TOWN), 3)
    ws = await RawWs.connect(c.port, board_path(officer))
    snap = await ws.receive()
    assert snap is not None and snap["type"] == "snapshot" and snap["seq"] == before[-1]
    assert {"incidents", "units", "orders", "alerts"} <= set(snap["sections"])
    inside = await emit_rows(db, path_of(org_tree, GRID), 2)
    await emit_rows(db, path_of(org_tree, OTHER_TOWN), 2)
    last = await emit_rows(db, path_of(org_tree, TOWN), 1)
    got = await ws.receive_until(lambda m: last[0] in changes(m))
    assert changes(got) == inside + last
    change = next(m for m in got if m["type"] == "change")
    assert change["topic"] == "test" and change["org"] == GRID and change["data"]["i"] == 0
    ws.cut()


async def test_resume_after_a_cut_in_a_burst_gives_every_seq_once(
    make_client: AppFactory,
    make_user: UserFactory,
    db: asyncpg.Connection,
    db2: asyncpg.Connection,
    org_tree: OrgTree,
) -> None:
    """A board cut mid-burst resumes with its last seq and ends with every seq exactly once, in order."""
    c = await make_client()
    officer = await make_user("duty_officer", COUNTY)
    ws = await RawWs.connect(c.port, board_path(officer))
    assert (await ws.receive() or {}).get("type") == "snapshot"
    burst = asyncio.create_task(emit_rows(db, path_of(org_tree, GRID), 400))
    first = await ws.receive_until(lambda m: len(changes(m)) >= 40)
    ws.cut()
    seen = changes(first)
    assert not burst.done(), "the cut should fall in the middle of the burst"
    again = await RawWs.connect(c.port, board_path(officer, since=seen[-1]))
    hello = await again.receive()
    assert hello == {"type": "resumed", "since": seen[-1]}
    emitted = await burst
    rest = await again.receive_until(lambda m: emitted[-1] in changes(m))
    assert seen + changes(rest) == emitted
    assert app_of(c).metrics.registry.get_sample_value("dispatchd_live_board_starts_total", {"mode": "resume"}) == 1
    again.cut()


async def test_resume_older_than_retention_gets_a_snapshot(
    make_client: AppFactory, make_user: UserFactory, db: asyncpg.Connection, org_tree: OrgTree, clock: FakeClock
) -> None:
    """A resume from before the retention mark gets a snapshot; from the mark on, exactly the rows after it."""
    c = await make_client()
    officer = await make_user("duty_officer", COUNTY)
    old = await emit_rows(db, path_of(org_tree, TOWN), 5)
    kept = await emit_rows(db, path_of(org_tree, TOWN), 3)
    await db.execute("UPDATE outbox SET created_at = $1 WHERE seq <= $2", clock.now() - timedelta(hours=25), old[-1])
    assert await app_of(c)[FEED].prune_once() == old[-1]
    stale = await RawWs.connect(c.port, board_path(officer, since=old[1]))
    snap = await stale.receive()
    assert snap is not None and snap["type"] == "snapshot" and snap["seq"] == kept[-1]
    fresh = await RawWs.connect(c.port, board_path(officer, since=old[-1]))
    got = await fresh.receive_until(lambda m: kept[-1] in changes(m))
    assert got[0]["type"] == "resumed" and changes(got) == kept
    future = await RawWs.connect(c.port, board_path(officer, since=kept[-1] + 1000))
    assert (await future.receive() or {}).get("type") == "snapshot"
    for w in (stale, fresh, future):
        w.cut()


async def test_slow_consumer_is_closed_with_the_resume_code_while_others_keep_receiving(
    make_client: AppFactory, make_user: UserFactory, db: asyncpg.Connection, org_tree: OrgTree
) -> None:
    """A board that stops reading is closed with 4001 and resumes without a gap; a reading one misses nothing."""
    c = await make_client(live_queue_frames=3)
    officer = await make_user("duty_officer", COUNTY)
    fast = await RawWs.connect(c.port, board_path(officer))
    slow = await RawWs.connect(c.port, board_path(officer), rcvbuf=4096)
    assert (await fast.receive() or {}).get("type") == "snapshot"
    assert (await slow.receive() or {}).get("type") == "snapshot"
    drops = app_of(c).metrics.live_queue_drops
    emitted: list[int] = []
    fast_seen: list[int] = []
    for _ in range(200):  # 256 KiB each: at most 50 MiB before the bound must have been passed
        emitted += await emit_rows(db, path_of(org_tree, TOWN), 1, size=256 * 1024)
        last = emitted[-1]
        fast_seen += changes(await fast.receive_until(lambda m, last=last: last in changes(m)))
        if drops._value.get() >= 1:
            break
    assert drops._value.get() == 1
    emitted += await emit_rows(db, path_of(org_tree, TOWN), 3)
    fast_seen += changes(await fast.receive_until(lambda m: emitted[-1] in changes(m)))
    assert fast_seen == emitted
    taken = await slow.receive_until(lambda m: False, within=30)
    assert slow.close_code == CLOSE_RESUME
    got = changes(taken)
    assert got == emitted[: len(got)] and len(got) < len(emitted)
    resumed = await RawWs.connect(c.port, board_path(officer, since=got[-1]))
    rest = await resumed.receive_until(lambda m: emitted[-1] in changes(m))
    assert got + changes(rest) == emitted
    for w in (fast, resumed):
        w.cut()


async def test_heartbeat_says_how_far_the_board_is(
    make_client: AppFactory, make_user: UserFactory, db: asyncpg.Connection, org_tree: OrgTree
) -> None:
    """Heartbeats arrive between changes and carry the head seq the board is current to."""
    c = await make_client(live_heartbeat_interval=1)
    officer = await make_user("duty_officer", COUNTY)
    ws = await RawWs.connect(c.port, board_path(officer))
    await ws.receive()
    seqs = await emit_rows(db, path_of(org_tree, TOWN), 2)
    got = await ws.receive_until(lambda m: any(x["type"] == "heartbeat" and x["head"] >= seqs[-1] for x in m))
    beat = got[-1]
    assert beat["type"] == "heartbeat" and "seq" not in beat and changes(got) == seqs
    ws.cut()


async def test_two_instances_a_board_on_one_sees_a_case_created_on_the_other(
    make_client: AppFactory, make_user: UserFactory, org_tree: OrgTree
) -> None:
    """A case created through one instance's API reaches a board connected to the other."""
    a = await make_client()
    b = await make_client()
    officer = await make_user("duty_officer", COUNTY)
    ws = await RawWs.connect(b.port, board_path(officer))
    await ws.receive()
    case = await make_case(a, officer, org_tree)
    got = await ws.receive_until(
        lambda m: any(x["type"] == "change" and x["topic"] == "incident" and x["id"] == str(case["id"]) for x in m)
    )
    change = got[-1]
    assert change["data"]["number"] == case["number"] and change["seq"] > 0
    ws.cut()


async def test_relay_is_taken_over_when_its_instance_stops(
    make_client: AppFactory, make_user: UserFactory, db: asyncpg.Connection, org_tree: OrgTree
) -> None:
    """One of two instances relays; when it stops the other takes over and boards keep getting changes."""
    a = await make_client(live_relay_election_interval=0.1)
    b = await make_client(live_relay_election_interval=0.1)
    await eventually(lambda: _async(app_of(a)[FEED].is_relay or app_of(b)[FEED].is_relay))
    leader, other = (a, b) if app_of(a)[FEED].is_relay else (b, a)
    assert not app_of(other)[FEED].is_relay
    officer = await make_user("duty_officer", COUNTY)
    ws = await RawWs.connect(other.port, board_path(officer))
    await ws.receive()
    await leader.close()
    await eventually(lambda: _async(app_of(other)[FEED].is_relay))
    seqs = await emit_rows(db, path_of(org_tree, TOWN), 3)
    got = await ws.receive_until(lambda m: seqs[-1] in changes(m))
    assert changes(got) == seqs
    ws.cut()


async def test_a_lost_feed_message_is_read_from_postgresql(
    make_client: AppFactory, make_user: UserFactory, db: asyncpg.Connection, org_tree: OrgTree
) -> None:
    """A feed message whose prev is ahead makes the instance read the missing rows from PostgreSQL, once."""
    await db.execute("SELECT pg_advisory_lock($1)", RELAY_LOCK)  # no instance can become the relay
    c = await make_client(live_relay_election_interval=0.1)
    officer = await make_user("duty_officer", COUNTY)
    ws = await RawWs.connect(c.port, board_path(officer))
    await ws.receive()
    seqs = await emit_rows(db, path_of(org_tree, TOWN), 4)
    await app_of(c).redis.publish(keys.CHANGES_CHANNEL, feed_envelope(seqs[-1], []))
    got = await ws.receive_until(lambda m: seqs[-1] in changes(m))
    assert changes(got) == seqs
    backfills = app_of(c).metrics.registry.get_sample_value("dispatchd_live_feed_backfills_total", {"reason": "gap"})
    assert backfills == 1
    await db.execute("SELECT pg_advisory_unlock($1)", RELAY_LOCK)
    await eventually(lambda: _async(app_of(c)[FEED].is_relay))
    more = await emit_rows(db, path_of(org_tree, TOWN), 2)
    got = await ws.receive_until(lambda m: more[-1] in changes(m))
    assert changes(got) == more
    ws.cut()


async def test_boards_stay_current_from_postgresql_while_redis_is_down(
    make_client: AppFactory, make_user: UserFactory, db: asyncpg.Connection, org_tree: OrgTree, tmp_path: Path
) -> None:
    """With Redis stopped, boards get changes from PostgreSQL; after it is back, no gap and no repeat."""
    own = EmbeddedRedis(tmp_path / "own-redis")
    own.start()
    try:
        c = await make_client(redis_url=own.url, live_relay_poll_interval=0.05)
        officer = await make_user("duty_officer", COUNTY)
        ws = await RawWs.connect(c.port, board_path(officer))
        await ws.receive()
        own.stop()
        during = await emit_rows(db, path_of(org_tree, TOWN), 3)
        got = await ws.receive_until(lambda m: during[-1] in changes(m), within=30)
        own.start()
        after = await emit_rows(db, path_of(org_tree, TOWN), 3)
        got += await ws.receive_until(lambda m: after[-1] in changes(m), within=30)
        assert changes(got) == during + after
        ws.cut()
    finally:
        own.stop()


async def test_bad_since_is_refused_before_the_upgrade(make_client: AppFactory, make_user: UserFactory) -> None:
    """since= that is not a non-negative integer answers 422; no token answers 401."""
    c = await make_client()
    officer = await make_user("duty_officer", COUNTY)
    r = await c.get(f"/ws/board?token={officer.token}&since=abc")
    assert r.status == 422 and "since" in (await r.json())["error"]["fields"]
    r = await c.get("/ws/board")
    assert r.status == 401


async def _async(value: Any) -> Any:
    return value


async def test_a_stopping_instance_sends_its_boards_to_resume_elsewhere(
    make_client: AppFactory, make_user: UserFactory, db: asyncpg.Connection, org_tree: OrgTree
) -> None:
    """A stopping instance closes boards with 1001; they resume on another without a gap or a repeat."""
    a = await make_client(live_relay_election_interval=0.1)
    b = await make_client(live_relay_election_interval=0.1)
    officer = await make_user("duty_officer", COUNTY)
    ws = await RawWs.connect(a.port, board_path(officer))
    await ws.receive()
    first = await emit_rows(db, path_of(org_tree, TOWN), 3)
    got = await ws.receive_until(lambda m: first[-1] in changes(m))
    await a.close()
    got += await ws.receive_until(lambda m: False)
    assert ws.close_code == 1001
    second = await emit_rows(db, path_of(org_tree, TOWN), 3)
    again = await RawWs.connect(b.port, board_path(officer, since=changes(got)[-1]))
    rest = await again.receive_until(lambda m: second[-1] in changes(m))
    assert changes(got) + changes(rest) == first + second
    again.cut()


async def test_a_resume_longer_than_the_limit_gets_a_snapshot(
    make_client: AppFactory, make_user: UserFactory, db: asyncpg.Connection, org_tree: OrgTree
) -> None:
    """A resume that would send more rows than resume_max_rows gets a snapshot instead."""
    c = await make_client(live_resume_max_rows=100)
    officer = await make_user("duty_officer", COUNTY)
    start = (await emit_rows(db, path_of(org_tree, TOWN), 1))[0]
    seqs = await emit_rows(db, path_of(org_tree, TOWN), 101)
    # The instance has every row (a busy machine delays the feed): the resume is then 101 rows long.
    await eventually(lambda: _async(app_of(c)[FEED].cursor >= seqs[-1]))
    long = await RawWs.connect(c.port, board_path(officer, since=start))
    snap = await long.receive()
    assert snap is not None and snap["type"] == "snapshot" and snap["seq"] == seqs[-1]
    short = await RawWs.connect(c.port, board_path(officer, since=seqs[0]))
    got = await short.receive_until(lambda m: seqs[-1] in changes(m))
    assert got[0]["type"] == "resumed" and changes(got) == seqs[1:]
    for w in (long, short):
        w.cut()
