"""The fault suite: a real ``dispatchd serve`` process under a recorded load (grid reports, case
transitions, orders, OsmAnd fixes, a board) while PostgreSQL is frozen (SIGSTOP) and stopped, Redis is
frozen and stopped, and the daemon itself is killed with SIGKILL and started again, once with its
stores up and once while PostgreSQL is stopped (the fixes it held then are adopted at the next start).
Then:

* every acknowledged report, transition, order and fix exists exactly once;
* the board resumed after every cut and saw every change of its jurisdiction, in order, no gap;
* every request made while a store was away got an answer within the deadline (load.DEADLINE);
* the daemon logged each store outage once, and no unhandled error.

Outages last ``DISPATCHD_FAULT_SECONDS`` each (5 in ``make test``; ``make faults`` runs 30). The
figures are printed and written to ``<tmp>/faults-report.json``; docs/reliability.md quotes a run.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest

from dispatchd.domain.orgs import load_org_tree
from dispatchd.store import users
from dispatchd.store.db import init_connection
from tests.channels.reports.helpers import GRID, report_body
from tests.conftest import COUNTY, ROOT, StoreUrls, password_hash, wipe
from tests.faults.load import DEADLINE, Load, Record, Target
from tests.faults.stores import FaultStores

OUTAGE = float(os.environ.get("DISPATCHD_FAULT_SECONDS", "5"))
KILLED_IN_OUTAGE = "postgres stopped, daemon killed"
STEADY = 3.0  # seconds of load between faults
TOWN = "330381001"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Daemon:
    """``dispatchd serve`` on fixed ports (so clients find it again after a restart)."""

    def __init__(self, stores: FaultStores, data_dir: Path, log: Path) -> None:
        self.stores = stores
        self.data_dir = data_dir
        self.log = log
        self.http, self.osmand = _free_port(), _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("DISPATCHD_")},
            "DISPATCHD_DATABASE_URL": self.stores.database,
            "DISPATCHD_REDIS_URL": self.stores.redis,
            "DISPATCHD_HTTP_PORT": str(self.http),
            "DISPATCHD_OSMAND_PORT": str(self.osmand),
            "DISPATCHD_JT808_PORT": "0",
            "DISPATCHD_SIP_PORT": "0",
            "DISPATCHD_LOG_FORMAT": "json",
            "DISPATCHD_DATA_DIR": str(self.data_dir),
        }
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from dispatchd.cli import main; raise SystemExit(main(['serve']))"],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    async def ready(self) -> None:
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as http:
            while time.monotonic() < deadline:
                assert self.proc is not None and self.proc.poll() is None, self.log.read_text()[-3000:]
                try:
                    async with http.get(f"http://127.0.0.1:{self.http}/readyz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError("dispatchd did not become ready")

    def kill(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
        return out


async def _accounts(stores: FaultStores) -> tuple[str, str]:
    """A county duty officer and a grid worker, straight into the store, with tokens."""
    conn = await asyncpg.connect(stores.database)
    await init_connection(conn)
    try:
        officer = await users.create_user(conn, "faults-officer", password_hash(), "duty_officer", COUNTY)
        worker = await users.create_user(conn, "faults-worker", password_hash(), "grid_worker", GRID)
        now = await conn.fetchval("SELECT now()")
        officer_token, _ = await users.issue_token(conn, officer.id, now, timedelta(hours=2))
        worker_token, _ = await users.issue_token(conn, worker.id, now, timedelta(hours=2))
        return officer_token, worker_token
    finally:
        await conn.close()


async def _squad(base: str, officer: str) -> tuple[int, dict[str, str]]:
    """Two squad units with an OsmAnd device each, through the API; the first takes the orders."""
    headers = {"Authorization": f"Bearer {officer}"}
    devices: dict[str, str] = {}
    units: list[int] = []
    async with aiohttp.ClientSession(headers=headers) as http:
        for i in range(2):
            body = {"name": f"故障演练中队{i + 1}组", "kind": "team", "org": TOWN}
            async with http.post(f"{base}/api/v1/units", json=body) as r:
                assert r.status == 201, await r.text()
                units.append(int((await r.json())["id"]))
            device = {"protocol": "osmand", "identifier": f"faults-{i}", "key": f"faults-key-{i}"}
            async with http.post(f"{base}/api/v1/units/{units[-1]}/devices", json=device) as r:
                assert r.status == 201, await r.text()
            devices[device["identifier"]] = device["key"]
    return units[0], devices


async def _phase(record: Record, name: str, seconds: float) -> None:
    record.phase, record.phase_started = name, time.monotonic()
    await asyncio.sleep(seconds)


@pytest.mark.faults
async def test_nothing_acknowledged_is_lost_through_store_outages_and_a_crash(faulty: FaultStores) -> None:
    """Under load: PostgreSQL frozen then stopped, Redis frozen then stopped, the daemon killed (-9):
    every acknowledged write exists once, the board saw every change, every request during an outage
    was answered within the deadline, and each outage was logged once."""
    faulty.restore()
    await wipe(StoreUrls(faulty.database, faulty.redis))
    officer, worker = await _accounts(faulty)
    tmp = Path(tempfile.mkdtemp(prefix="dispatchd-faults-run-"))
    daemon = Daemon(faulty, tmp / "data", tmp / "dispatchd.log")
    daemon.start()
    record = Record()
    try:
        await daemon.ready()
        unit_id, devices = await _squad(f"http://127.0.0.1:{daemon.http}", officer)
        target = Target(
            base=f"http://127.0.0.1:{daemon.http}",
            osmand=f"http://127.0.0.1:{daemon.osmand}/",
            officer_token=officer,
            worker_token=worker,
            unit_id=unit_id,
            devices=devices,
            report=report_body(load_org_tree(ROOT / "config" / "orgs"), GRID),
        )
        load = Load(target, record)
        running = asyncio.create_task(load.run())
        await _phase(record, "steady", STEADY)
        for store in ("postgres", "redis"):
            record.phase, record.phase_started = f"{store} frozen", time.monotonic()
            faulty.freeze(store)
            await asyncio.sleep(OUTAGE)
            faulty.thaw()
            await _phase(record, f"after {store} frozen", STEADY)
            record.phase, record.phase_started = f"{store} stopped", time.monotonic()
            faulty.stop(store)
            await asyncio.sleep(OUTAGE)
            faulty.start(store)
            await _phase(record, f"after {store} stopped", STEADY * 2)
        record.phase, record.phase_started = "daemon killed", time.monotonic()
        daemon.kill()
        await asyncio.sleep(1)
        daemon.start()
        await daemon.ready()
        await _phase(record, "after restart", STEADY * 2)
        # Killed during an outage: the fixes it acknowledged were held, on disk; the next start adopts them.
        record.phase, record.phase_started = KILLED_IN_OUTAGE, time.monotonic()
        faulty.stop("postgres")
        await asyncio.sleep(OUTAGE)
        daemon.kill()
        faulty.start("postgres")
        daemon.start()
        await daemon.ready()
        await _phase(record, "after a kill during an outage", STEADY * 2)
        record.phase = "draining"
        load.stopping.set()
        await asyncio.wait_for(running, 120)
        report = await _verify(faulty, record, daemon)
    finally:
        daemon.stop()
        faulty.restore()
    out = tmp / "faults-report.json"
    out.write_text(json.dumps(report, ensure_ascii=False, indent=1))
    print(f"\nfault suite ({OUTAGE:g} s outages): {json.dumps(report, ensure_ascii=False)}\n-> {out}")


async def _verify(stores: FaultStores, record: Record, daemon: Daemon) -> dict[str, Any]:
    conn = await asyncpg.connect(stores.database)
    try:
        # Reports: each acknowledged key once, with the case it named.
        rows = await conn.fetch("SELECT idem_key, incident_id FROM report_requests WHERE incident_id IS NOT NULL")
        by_key = Counter(r["idem_key"] for r in rows)
        cases = {r["idem_key"]: r["incident_id"] for r in rows}
        for key, case_id in record.acked_reports.items():
            assert by_key[key] == 1 and cases[key] == case_id, key
        assert await conn.fetchval("SELECT count(*) FROM incidents") == len(rows)
        # Transitions: each acknowledged acceptance once in the audit log.
        accepts = Counter(
            int(r["entity_id"])
            for r in await conn.fetch("SELECT entity_id FROM audit_log WHERE entity = 'incident' AND action = 'accept'")
        )
        assert all(n == 1 for n in accepts.values()), "a case accepted twice"
        assert record.acked_transitions <= set(accepts), "an acknowledged acceptance is missing"
        # Orders: each acknowledged once.
        orders = {r["id"] for r in await conn.fetch("SELECT id FROM orders")}
        assert len(record.acked_orders) == len(set(record.acked_orders)) and set(record.acked_orders) <= orders
        # Fixes: each acknowledged fix once in the track.
        track = Counter(
            (r["identifier"], int(r["at"].timestamp()))
            for r in await conn.fetch(
                "SELECT d.identifier, t.at FROM track_points t JOIN devices d ON d.id = t.device_id"
            )
        )
        assert record.fixes_by_phase[KILLED_IN_OUTAGE] > 0, "no fix was held when the daemon was killed"
        missing = [f for f in record.acked_fixes if track[f] == 0]
        doubled = [f for f, n in track.items() if n > 1]
        assert missing == [] and doubled == [], (missing[:5], doubled[:5])
        # The board: from its first message on, every seq of the outbox, in order, once.
        head = await conn.fetchval("SELECT max(seq) FROM outbox")
        changes = [s for s in record.board_seqs if s > 0]
        start = abs(record.board_seqs[0])
        expected = [r["seq"] for r in await conn.fetch("SELECT seq FROM outbox WHERE seq > $1 AND seq <= $2 ORDER BY seq", start, max(changes))]
        assert changes == sorted(changes) and len(changes) == len(set(changes)), "the board saw a change twice or out of order"
        assert changes == expected, "the board missed changes"
        snapshots = sum(1 for s in record.board_seqs if s < 0)
    finally:
        await conn.close()
    # Every request during an outage was answered within the deadline.
    assert record.late == [], record.late[:10]
    logs = daemon.lines()
    outages = Counter(e.get("store") for e in logs if e.get("event") == "store_unavailable")
    errors = [e for e in logs if e.get("level") in ("error", "critical") and e.get("event") != "tasks_did_not_stop"]
    assert errors == [], errors[:3]
    # One line per outage: PostgreSQL went away three times, Redis twice (a freeze shorter than the
    # statement deadline is only a slow answer, not an outage), never one line per request.
    assert 1 <= outages["postgres"] <= 3 and 1 <= outages["redis"] <= 2, outages
    warnings = Counter(e.get("event") for e in logs if e.get("level") == "warning")
    phases: dict[str, dict[str, Any]] = {}
    for (phase, status), n in record.answers.items():
        phases.setdefault(phase, {"answers": {}, "slowest_s": round(record.slowest.get(phase, 0.0), 2)})
        phases[phase]["answers"][status] = n
    return {
        "outage_s": OUTAGE,
        "deadline_s": DEADLINE,
        "reports_acknowledged": len(record.acked_reports),
        "transitions_acknowledged": len(record.acked_transitions),
        "orders_acknowledged": len(record.acked_orders),
        "fixes_acknowledged": len(record.acked_fixes),
        "fixes_held_when_killed": record.fixes_by_phase[KILLED_IN_OUTAGE],
        "board_changes": len(changes),
        "board_connects": record.board_connects,
        "board_snapshots": snapshots,
        "outbox_head": head,
        "late_answers": len(record.late),
        "store_unavailable_lines": dict(outages),
        "warning_lines": dict(warnings),
        "phases": phases,
    }
