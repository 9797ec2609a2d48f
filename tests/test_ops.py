"""Operations: the version, the start-up summary, and a backup restored into an empty database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from aiohttp.test_utils import TestClient

from dispatchd import __version__
from dispatchd.cli import main
from dispatchd.config import load_settings, summary
from dispatchd.store.backup import libpq_target, read_manifest
from dispatchd.web.appkeys import CTX
from tests.conftest import CONFIG, COUNTY, ROOT, AppFactory, StoreUrls, UserFactory
from tests.incidents.helpers import point_in

GRID = "330381001001G001"


def test_version_flag_prints_the_version(capsys: pytest.CaptureFixture[str]) -> None:
    """`dispatchd --version` prints the package version and exits 0."""
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"dispatchd {__version__}"


def test_start_up_summary_masks_secrets_and_lists_what_changed() -> None:
    """The start-up line's summary names stores and changed settings, never a password or key."""
    settings = load_settings(
        CONFIG,
        env={
            "DISPATCHD_DATABASE_URL": "postgresql://dispatchd:hunter2@db:5432/dispatchd",
            "DISPATCHD_REDIS_URL": "redis://:s3cret@redis:6379/0",
            "DISPATCHD_HOTLINE_CTI_HMAC_KEY": "topsecret",
            "DISPATCHD_HTTP_PORT": "8081",
        },
    )
    line = summary(settings)
    text = repr(line)
    assert "hunter2" not in text and "s3cret" not in text and "topsecret" not in text
    assert line["database"] == "postgresql://dispatchd:***@db:5432/dispatchd"
    changed = line["changed"]
    assert isinstance(changed, dict)
    assert changed["http.port"] == 8081 and changed["hotline.cti_hmac_key"] == "***"
    assert "http.host" not in changed  # unchanged settings stay out of the line


def test_password_never_on_the_command_line() -> None:
    """pg_dump gets the URL without its password; the password travels in PGPASSWORD."""
    url, env = libpq_target("postgresql://dispatchd:p%40ss@db:5432/dispatchd?sslmode=require")
    assert url == "postgresql://dispatchd@db:5432/dispatchd?sslmode=require" and env == {"PGPASSWORD": "p@ss"}


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHD_")}
    return subprocess.run(
        [sys.executable, "-m", "dispatchd.cli", *args],
        cwd=ROOT,
        env={**base, "DISPATCHD_LOG_FORMAT": "json", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )


async def cases(url: str) -> list[tuple[Any, ...]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT id, number, state, description FROM incidents ORDER BY id")
        audit = await conn.fetchval("SELECT count(*) FROM audit_log")
    finally:
        await conn.close()
    return [tuple(r) for r in rows] + [("audit", audit)]


async def test_backup_restores_into_an_empty_database(
    make_client: AppFactory, make_user: UserFactory, clean_stores: StoreUrls, org_tree: Any, tmp_path: Path
) -> None:
    """A backup (pg_dump + media) loaded into an empty database has every case, its audit trail and the photos."""
    client: TestClient[Any, Any] = await make_client()
    officer = await make_user("duty_officer", COUNTY)
    lat, lon = point_in(org_tree, GRID)
    for text in ("井盖缺失", "占道经营", "噪声扰民"):
        r = await client.post(
            "/api/v1/incidents",
            json={"category": "incident.dispute", "description": text, "location": {"lat": lat, "lon": lon}},
            headers=officer.headers,
        )
        assert r.status == 201, await r.text()
    data_dir = client.server.app[CTX].settings.data.dir
    photo = data_dir / "media" / "ab" / ("ab" + "0" * 62)
    photo.parent.mkdir(parents=True, exist_ok=True)
    photo.write_bytes(b"\xff\xd8\xff\xe0 a photo")
    before = await cases(clean_stores.database)

    out = tmp_path / "backup.tar"
    env = {"DISPATCHD_DATABASE_URL": clean_stores.database, "DISPATCHD_DATA_DIR": str(data_dir)}
    made = await asyncio.to_thread(cli, "backup", "--output", str(out), env=env)
    assert made.returncode == 0, made.stderr + made.stdout
    manifest = read_manifest(out)
    assert manifest["files"] == {"media": 1, "recordings": 0}
    with tarfile.open(out) as tar:
        assert "database.dump" in tar.getnames()

    # An empty database on the same server, and an empty data directory.
    admin = await asyncpg.connect(clean_stores.database)
    try:
        await admin.execute("DROP DATABASE IF EXISTS dispatchd_restore_test")
        await admin.execute("CREATE DATABASE dispatchd_restore_test")
    finally:
        await admin.close()
    target = clean_stores.database.replace("/dispatchd?", "/dispatchd_restore_test?", 1)
    assert target != clean_stores.database
    fresh = tmp_path / "fresh-data"
    try:
        env = {"DISPATCHD_DATABASE_URL": target, "DISPATCHD_DATA_DIR": str(fresh)}
        restored = await asyncio.to_thread(cli, "restore", str(out), env=env)
        assert restored.returncode == 0, restored.stderr + restored.stdout
        assert await cases(target) == before
        assert (fresh / photo.relative_to(data_dir)).read_bytes() == photo.read_bytes()
        # A second restore into the now full database is refused.
        again = await asyncio.to_thread(cli, "restore", str(out), env=env)
        assert again.returncode == 1 and "empty database" in again.stderr
    finally:
        admin = await asyncpg.connect(clean_stores.database)
        try:
            await admin.execute("DROP DATABASE IF EXISTS dispatchd_restore_test")
        finally:
            await admin.close()


async def test_metrics_show_queues_stores_and_order_latencies(
    client: TestClient[Any, Any], make_user: UserFactory, org_tree: Any
) -> None:
    """/metrics has the instance, queue depths, pool, SIP, store probes and the latency of a received order."""
    from dispatchd import observe
    from tests.live.helpers import make_case, make_squad, order

    ctx = client.server.app[CTX]
    officer = await make_user("duty_officer", COUNTY)
    unit, _ = await make_squad(client, officer, make_user)
    case = await make_case(client, officer, org_tree)
    made = await order(client, officer, case["id"], unit["id"])
    async with ctx.pool.acquire() as conn:  # its first receipt 3 s after it was made
        await conn.execute(
            "UPDATE orders SET delivered_at = created_at + interval '3 seconds' WHERE id = $1", made["id"]
        )
    text = await (await client.get("/metrics")).text()
    for name in (
        'dispatchd_instance_info{instance="',
        'dispatchd_queue_depth{queue="board_frames"}',
        'dispatchd_queue_depth{queue="gps_track_rows"}',
        'dispatchd_db_pool_connections{state="busy"}',
        "dispatchd_sip_active 1.0",
    ):
        assert name in text, name
    probe = asyncio.create_task(observe.probe_stores(ctx, ctx[observe.OPS], interval=0.01))
    await asyncio.sleep(0.3)
    probe.cancel()
    await observe.measure_orders(ctx, ctx[observe.OPS])
    text = await (await client.get("/metrics")).text()
    assert (
        'dispatchd_store_up{store="postgres"} 1.0' in text and 'dispatchd_store_up{store="redis"} 1.0' in text
    )
    assert 'dispatchd_order_latency_seconds{stat="p50",step="delivered"} 3.0' in text
    assert "dispatchd_orders_recent 1.0" in text


async def test_grafana_dashboard_reads_only_metrics_the_daemon_exports(client: TestClient[Any, Any]) -> None:
    """Every metric the shipped Grafana dashboard queries is one /metrics describes."""
    import json
    import re

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "dispatchd.json").read_text())
    text = await (await client.get("/metrics")).text()
    exported = set(re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M))
    names = {n for n, _ in exported}
    names |= {f"{n}_total" for n, kind in exported if kind == "counter"}
    names |= {f"{n}_bucket" for n, kind in exported if kind == "histogram"}
    wanted = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(dispatchd_[a-z0-9_]+)", target["expr"])
    }
    assert len(dashboard["panels"]) >= 10 and wanted
    assert wanted <= names, sorted(wanted - names)
