"""Fixes acknowledged while PostgreSQL is away, kept on disk until they are written.

The sink acknowledges a fix once it is written *or held* (:mod:`dispatchd.channels.gps.sink`). A
held batch is first put here, one file per batch, and only then acknowledged, so that a daemon killed
during an outage loses nothing it answered "stored" to: the next instance to look adopts the batches
and writes them when PostgreSQL is back. A batch's id goes with it, and ``gps_batches`` makes its
write happen once, also when it was written before the kill but its file was not yet removed.

Layout, under ``<data dir>/gps-held/``: one directory per running sink, named at random and locked
(``flock``) by that process through ``.lock`` for its life. The kernel drops the lock when the
process ends, however it ends, so a directory whose lock can be taken belongs to nobody: any sink of
the host (the same one started again, or another instance sharing the data directory) moves its
batches into its own directory and removes it. A batch file is written under a temporary name,
flushed to disk (``fsync``) and renamed, and the directory is flushed too: a file with the final
name is whole. A temporary file left by a crash was never acknowledged and is deleted.

Every method does blocking file I/O: the sink calls them in a worker thread.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("dispatchd.gps")

LOCK = ".lock"
SUFFIX = ".batch"
TEMPORARY = ".tmp"
# The columns of a track row that are times (see sink.TRACK_COLUMNS: at, received_at).
_TIMES = (2, 11)

Row = tuple[Any, ...]


def _dump(batch: uuid.UUID, rows: Sequence[Row]) -> bytes:
    """A batch as JSON lines: its id, then one array per row (times as ISO 8601 with offset)."""
    lines = [json.dumps({"batch": str(batch), "rows": len(rows)})]
    for row in rows:
        cells = list(row)
        for i in _TIMES:
            cells[i] = cells[i].isoformat()
        lines.append(json.dumps(cells, ensure_ascii=False))
    return ("\n".join(lines) + "\n").encode()


def read_batch(data: bytes) -> tuple[uuid.UUID, list[Row]]:
    """The batch :func:`_dump` wrote; ValueError when the file is not whole."""
    lines = data.decode().splitlines()
    if not lines:
        raise ValueError("empty batch file")
    head = json.loads(lines[0])
    rows: list[Row] = []
    for line in lines[1:]:
        cells = json.loads(line)
        for i in _TIMES:
            cells[i] = datetime.fromisoformat(cells[i])
        rows.append(tuple(cells))
    if len(rows) != head["rows"]:
        raise ValueError(f"batch file holds {len(rows)} of {head['rows']} rows")
    return uuid.UUID(head["batch"]), rows


def _sync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class HeldSpool:
    """One sink's directory of held batches, and the adoption of the batches of sinks that ended."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.dir = root / uuid.uuid4().hex
        self._lock: int | None = None
        self._files: dict[uuid.UUID, Path] = {}

    def open(self) -> None:
        """Make and lock this sink's directory. It is made under a hidden name and shown only once
        locked, so that no other sink takes it for the directory of one that ended."""
        hidden = self.root / f".{self.dir.name}"
        hidden.mkdir(parents=True, exist_ok=False)
        fd = os.open(hidden / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(hidden, self.dir)
        self._lock = fd
        _sync_dir(self.root)

    @property
    def count(self) -> int:
        """Batches on disk in this sink's directory."""
        return len(self._files)

    def holds(self, batch: uuid.UUID) -> bool:
        """Whether the batch is on disk (no I/O)."""
        return batch in self._files

    def put(self, batch: uuid.UUID, rows: Sequence[Row]) -> None:
        """Keep a batch on disk; when this returns, the file is whole and flushed (OSError if not)."""
        final = self.dir / f"{time.time_ns():020d}-{batch.hex}{SUFFIX}"
        temporary = final.with_suffix(TEMPORARY)
        try:
            with open(temporary, "wb") as f:
                f.write(_dump(batch, rows))
                f.flush()
                os.fsync(f.fileno())
            os.rename(temporary, final)
            _sync_dir(self.dir)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        self._files[batch] = final

    def drop(self, batch: uuid.UUID) -> None:
        """Forget a batch that is written (or refused by PostgreSQL as data)."""
        path = self._files.pop(batch, None)
        if path is not None:
            path.unlink(missing_ok=True)

    def adopt(self) -> list[tuple[uuid.UUID, list[Row]]]:
        """Move the batches of every sink that ended into this one's directory; return them, oldest
        first. A file that cannot be read is moved aside (``*.bad``) and logged, never deleted."""
        adopted: list[tuple[str, uuid.UUID, list[Row]]] = []
        try:
            others = [
                p for p in self.root.iterdir() if p.is_dir() and p != self.dir and not p.name.startswith(".")
            ]
        except FileNotFoundError:
            return []
        for other in others:
            adopted.extend(self._adopt_dir(other))
        if adopted:
            _sync_dir(self.dir)
        adopted.sort(key=lambda item: item[0])
        return [(batch, rows) for _, batch, rows in adopted]

    def _adopt_dir(self, other: Path) -> list[tuple[str, uuid.UUID, list[Row]]]:
        try:
            fd = os.open(other / LOCK, os.O_RDWR | os.O_CREAT, 0o600)
        except (FileNotFoundError, NotADirectoryError):
            return []  # removed meanwhile by another sink that adopted it
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return []  # its sink is running
            if not other.exists():
                return []
            found: list[tuple[str, uuid.UUID, list[Row]]] = []
            for path in sorted(other.iterdir()):
                if path.name == LOCK:
                    continue
                if path.suffix != SUFFIX:
                    path.unlink(missing_ok=True)  # half written: never acknowledged
                    continue
                try:
                    batch, rows = read_batch(path.read_bytes())
                except (ValueError, KeyError, IndexError, TypeError, AttributeError) as exc:
                    aside = self.root / f"{other.name}-{path.name}.bad"
                    os.rename(path, aside)
                    log.error("gps_held_batch_unreadable", file=aside.name, error=f"{type(exc).__name__}: {exc}")
                    continue
                mine = self.dir / path.name
                os.rename(path, mine)
                self._files[batch] = mine
                found.append((path.name, batch, rows))
            shutil.rmtree(other, ignore_errors=True)
            return found
        finally:
            os.close(fd)

    def close(self) -> int:
        """Release this sink's directory: removed when empty, else left for the next sink to adopt.
        Returns the batches left on disk."""
        left = len(self._files)
        if self._lock is not None:
            if not left:
                shutil.rmtree(self.dir, ignore_errors=True)
            os.close(self._lock)
            self._lock = None
        return left
