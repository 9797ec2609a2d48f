"""PostgreSQL and Redis of their own for fault tests, and the faults: freeze (SIGSTOP every process
of the server), thaw (SIGCONT), stop and start. The session's shared stores are never touched."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import shutil
import signal
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg

from dispatchd.domain.orgs import load_org_tree
from dispatchd.embedded import EmbeddedStores
from dispatchd.store.db import init_connection
from dispatchd.store.migrate import migrate
from dispatchd.store.orgs import sync_org_tree

ROOT = Path(__file__).resolve().parents[2]


def children_of(pid: int) -> list[int]:
    """Processes whose parent is ``pid`` (PostgreSQL's backends and workers under the postmaster)."""
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


@dataclass
class FaultStores:
    """Embedded stores under a directory of their own, with the faults the tests inflict on them."""

    stores: EmbeddedStores
    frozen: list[int] = field(default_factory=list)

    @property
    def database(self) -> str:
        return self.stores.postgres.url

    @property
    def redis(self) -> str:
        return self.stores.redis.url

    def postgres_pids(self) -> list[int]:
        postmaster = self.stores.postgres._pid()
        assert postmaster is not None, "PostgreSQL is not running"
        return [postmaster, *children_of(postmaster)]

    def redis_pids(self) -> list[int]:
        pid = self.stores.redis._pid()
        assert pid is not None, "Redis is not running"
        return [pid]

    def freeze(self, store: str) -> None:
        """SIGSTOP every process of the store: it accepts connections and answers nothing (hung)."""
        pids = self.postgres_pids() if store == "postgres" else self.redis_pids()
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        self.frozen.extend(pids)

    def thaw(self) -> None:
        for pid in self.frozen:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.frozen.clear()

    def stop(self, store: str) -> None:
        """Stop the store's server (PostgreSQL: fast shutdown; Redis: SIGTERM)."""
        self.thaw()
        if store == "postgres":
            self.stores.postgres.stop()
        else:
            self.stores.redis.stop()

    def start(self, store: str) -> None:
        if store == "postgres":
            self.stores.postgres.start()
        else:
            self.stores.redis.start()

    def restore(self) -> None:
        """Whatever a test did: both servers running and answering again."""
        self.thaw()
        if not self.stores.postgres.is_running():
            self.stores.postgres.start()
        if not self.stores.redis.is_running():
            self.stores.redis.start()


async def _prepare(url: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await init_connection(conn)
        await migrate(conn)
        await sync_org_tree(conn, load_org_tree(ROOT / "config" / "orgs"))
    finally:
        await conn.close()


@contextlib.contextmanager
def fault_stores() -> Iterator[FaultStores]:
    tmp = tempfile.mkdtemp(prefix="dispatchd-faults-")
    os.chmod(tmp, 0o755)
    stores = EmbeddedStores.for_data_dir(Path(tmp))
    stores.start()
    faults = FaultStores(stores)
    atexit.register(faults.thaw)  # a run cut short must not leave a frozen server behind
    try:
        asyncio.run(_prepare(stores.postgres.url))
        yield faults
    finally:
        faults.thaw()
        stores.postgres.started_here = stores.redis.started_here = True
        stores.stop_started()
        shutil.rmtree(tmp, ignore_errors=True)
