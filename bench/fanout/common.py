"""What the live benchmarks share: real stores, a ``dispatchd serve`` process, accounts, percentiles."""

from __future__ import annotations

import asyncio
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import asyncpg

from dispatchd.domain.orgs import load_org_tree
from dispatchd.embedded import EmbeddedStores
from dispatchd.store import users
from dispatchd.store.db import init_connection
from dispatchd.store.migrate import migrate
from dispatchd.store.orgs import sync_org_tree

ROOT = Path(__file__).resolve().parents[2]
COUNTY = "330381"
# Accounts are made directly in the database: hashing thousands of passwords would take minutes.
_UNUSABLE_HASH = "$argon2id$v=19$m=65536,t=3,p=4$YmVuY2hiZW5jaA$YmVuY2hiZW5jaGJlbmNoYmVuY2g"


def raise_fd_limit() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


@contextmanager
def stores() -> Iterator[tuple[str, str, Path]]:
    """A real PostgreSQL and Redis in a temporary directory: (database URL, Redis URL, directory)."""
    tmp = Path(tempfile.mkdtemp(prefix="dispatchd-bench-live-"))
    os.chmod(tmp, 0o755)
    embedded = EmbeddedStores.for_data_dir(tmp)
    embedded.start()
    try:
        yield embedded.postgres.url, embedded.redis.url, tmp
    finally:
        embedded.stop_started()


async def prepare_database(db: str) -> asyncpg.Connection:
    conn = await asyncpg.connect(db)
    await init_connection(conn)
    await migrate(conn)
    await sync_org_tree(conn, load_org_tree(ROOT / "config" / "orgs"))
    return conn


async def make_accounts(conn: asyncpg.Connection, prefix: str, role: str, org: str, n: int) -> list[tuple[int, str]]:
    """``n`` accounts with a bearer token each: [(user id, token)]."""
    out = []
    now = datetime.now(UTC)
    for i in range(n):
        uid = await conn.fetchval(
            "INSERT INTO users (username, password_hash, role, org_code, display_name) VALUES ($1, $2, $3, $4, $1)"
            " RETURNING id",
            f"{prefix}{i}",
            _UNUSABLE_HASH,
            role,
            org,
        )
        token, _ = await users.issue_token(conn, uid, now, timedelta(hours=12))
        out.append((uid, token))
    return out


def start_dispatchd(db: str, rd: str, data_dir: Path, port: int, **settings: str) -> subprocess.Popen[bytes]:
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("DISPATCHD_")},
        "DISPATCHD_DATABASE_URL": db,
        "DISPATCHD_REDIS_URL": rd,
        "DISPATCHD_HTTP_PORT": str(port),
        "DISPATCHD_OSMAND_PORT": "0",
        "DISPATCHD_JT808_PORT": "0",
        "DISPATCHD_SIP_PORT": "0",
        "DISPATCHD_LOG_LEVEL": "warning",
        "DISPATCHD_LOG_FORMAT": "json",
        "DISPATCHD_DATA_DIR": str(data_dir),
        # Every simulated client comes from 127.0.0.1: no per-address cap in a benchmark.
        "DISPATCHD_HTTP_MAX_CONNECTIONS_PER_ADDRESS": "0",
        **{f"DISPATCHD_{k.upper()}": v for k, v in settings.items()},
    }
    return subprocess.Popen(
        [sys.executable, "-c", "import resource as r; h = r.getrlimit(r.RLIMIT_NOFILE)[1];"
         " r.setrlimit(r.RLIMIT_NOFILE, (h, h)); from dispatchd.cli import main; raise SystemExit(main(['serve']))"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
    )


async def wait_ready(port: int, proc: subprocess.Popen[bytes], path: str = "/readyz") -> None:
    deadline = time.monotonic() + 120
    async with aiohttp.ClientSession() as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise SystemExit(f"server exited with {proc.returncode}")
            try:
                async with http.get(f"http://127.0.0.1:{port}{path}") as r:
                    if r.status < 500:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit("server did not become ready")


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
