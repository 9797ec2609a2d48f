"""Shared fixtures: one real PostgreSQL and one real Redis per test session, wiped between tests.

The stores come from the embedded wheels in a temporary directory, or from
``DISPATCHD_TEST_DATABASE_URL`` / ``DISPATCHD_TEST_REDIS_URL`` when both are given (their
contents are wiped: point them at a database used for nothing else).

Set ``DISPATCHD_REQUIRE_ALL=1`` (CI does) to turn a skip for a missing tool into a failure.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient, TestServer

from dispatchd.clock import FakeClock
from dispatchd.config import Settings, load_settings
from dispatchd.context import Context
from dispatchd.domain.orgs import GridLocator, OrgTree, load_org_tree
from dispatchd.domain.taxonomy import Taxonomy, load_taxonomy
from dispatchd.embedded import EmbeddedStores
from dispatchd.http_server import build_app
from dispatchd.store import users
from dispatchd.store.db import init_connection
from dispatchd.store.migrate import migrate
from dispatchd.store.orgs import sync_org_tree
from dispatchd.web.app import app_runner
from dispatchd.web.appkeys import CTX

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CONFIG = ROOT / "config" / "dispatchd.toml"

# Units of the demo county used across tests.
COUNTY = "330381"
PASSWORD = "correct horse battery staple"


def require_tool(name: str) -> str:
    """Path of an external program, or skip (fail under DISPATCHD_REQUIRE_ALL=1)."""
    path = shutil.which(name)
    if path is None:
        if os.environ.get("DISPATCHD_REQUIRE_ALL") == "1":
            pytest.fail(f"{name} is required (DISPATCHD_REQUIRE_ALL=1) but not installed")
        pytest.skip(f"{name} not installed")
    return path


@dataclass(frozen=True)
class StoreUrls:
    database: str
    redis: str


@pytest.fixture(scope="session")
def store_urls() -> Iterator[StoreUrls]:
    db, rd = os.environ.get("DISPATCHD_TEST_DATABASE_URL"), os.environ.get("DISPATCHD_TEST_REDIS_URL")
    stores: EmbeddedStores | None = None
    tmp: str | None = None
    if not (db and rd):
        tmp = tempfile.mkdtemp(prefix="dispatchd-test-")
        os.chmod(tmp, 0o755)
        stores = EmbeddedStores.for_data_dir(Path(tmp))
        stores.start()
        db, rd = stores.postgres.url, stores.redis.url

    async def prepare() -> None:
        conn = await asyncpg.connect(db)
        try:
            await init_connection(conn)
            await migrate(conn)
            await sync_org_tree(conn, load_org_tree(ROOT / "config" / "orgs"))
        finally:
            await conn.close()

    asyncio.run(prepare())
    try:
        yield StoreUrls(db, rd)
    finally:
        if stores is not None:
            stores.stop_started()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def org_tree() -> OrgTree:
    return load_org_tree(ROOT / "config" / "orgs")


@pytest.fixture(scope="session")
def grid_locator(org_tree: OrgTree) -> GridLocator:
    return GridLocator(org_tree)


@pytest.fixture(scope="session")
def taxonomy() -> Taxonomy:
    return load_taxonomy(ROOT / "config" / "taxonomy.toml")


# Tables that come from configuration and survive the wipe between tests.
_KEEP = {"schema_migrations", "org_units", "departments"}


async def wipe(urls: StoreUrls) -> None:
    conn = await asyncpg.connect(urls.database)
    try:
        tables = [
            r["tablename"]
            for r in await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            if r["tablename"] not in _KEEP
        ]
        if tables:
            await conn.execute(
                "TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " RESTART IDENTITY CASCADE"
            )
    finally:
        await conn.close()
    r = aioredis.from_url(urls.redis)
    try:
        await r.flushdb()
    finally:
        await r.aclose()


@pytest.fixture
async def clean_stores(store_urls: StoreUrls) -> StoreUrls:
    await wipe(store_urls)
    return store_urls


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_settings(urls: StoreUrls, data_dir: Path, **overrides: object) -> Settings:
    values: dict[str, object] = {
        "database_url": urls.database,
        "redis_url": urls.redis,
        "http_port": 0,
        # The position servers bind their own ports: free ones, so that instances and runs never collide.
        "osmand_port": 0,
        "jt808_port": 0,
        "sip_port": 0,  # the hotline's SIP edge (UDP and TCP) likewise
        "gb28181_port": 0,  # and the GB/T 28181 edge for cameras
        "data_dir": str(data_dir),
    }
    values.update(overrides)
    return load_settings(CONFIG, env={}, **values)


@pytest.fixture
def settings(clean_stores: StoreUrls, tmp_path: Path) -> Settings:
    return make_settings(clean_stores, tmp_path / "data")


AppFactory = Callable[..., Awaitable[TestClient[Any, Any]]]


class DispatchdServer(TestServer):
    """The test server with the daemon's own runner (guarded connections, keep-alive window)."""

    async def _make_runner(self, **kwargs: Any) -> Any:
        return app_runner(self.app, **kwargs)


@pytest.fixture
async def make_client(
    clean_stores: StoreUrls,
    tmp_path: Path,
    clock: FakeClock,
    org_tree: OrgTree,
    grid_locator: GridLocator,
    taxonomy: Taxonomy,
) -> AsyncIterator[AppFactory]:
    """Start an application on a real loopback port; several may run at once (several instances)."""
    clients: list[TestClient[Any, Any]] = []
    counter = itertools.count()

    async def factory(**overrides: object) -> TestClient[Any, Any]:
        data_dir = tmp_path / f"data{next(counter)}"
        s = make_settings(clean_stores, data_dir, **overrides)
        app = build_app(s, clock, tree=org_tree, locator=grid_locator, taxonomy=taxonomy)
        client: TestClient[Any, Any] = TestClient(DispatchdServer(app, host="127.0.0.1", port=0))
        await client.start_server()
        clients.append(client)
        return client

    yield factory
    for c in reversed(clients):
        await c.close()


@pytest.fixture
async def client(make_client: AppFactory) -> TestClient[Any, Any]:
    return await make_client()


_HASH_CACHE: dict[str, str] = {}


def password_hash(password: str = PASSWORD) -> str:
    if password not in _HASH_CACHE:
        _HASH_CACHE[password] = users.hash_password(password)
    return _HASH_CACHE[password]


@dataclass(frozen=True)
class Account:
    user: users.User
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


UserFactory = Callable[..., Awaitable[Account]]


@pytest.fixture
async def make_user(clean_stores: StoreUrls, clock: FakeClock) -> AsyncIterator[UserFactory]:
    """Create an account directly in the database and give it a token."""
    conn = await asyncpg.connect(clean_stores.database)
    seq = itertools.count(1)

    async def factory(
        role: str = "duty_officer",
        org: str = COUNTY,
        *,
        username: str | None = None,
        department: str | None = None,
        password: str = PASSWORD,
    ) -> Account:
        name = username or f"{role}-{org}-{next(seq)}"
        user = await users.create_user(
            conn, name, password_hash(password), role, org, department, name, created_at=clock.now()
        )
        token, _ = await users.issue_token(conn, user.id, clock.now(), timedelta(hours=12))
        return Account(user, token)

    yield factory
    await conn.close()


@pytest.fixture
def app_of() -> Callable[[TestClient[Any, Any]], Context]:
    """The service context of a running application (its stores, clock, slots)."""

    def get(c: TestClient[Any, Any]) -> Context:
        return c.server.app[CTX]

    return get
