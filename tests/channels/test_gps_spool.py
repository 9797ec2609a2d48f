"""The spool of held GPS batches (dispatchd/channels/gps/spool.py), on real files and real processes:
a batch put there comes back whole to the next sink, but only once the sink that put it has ended
(closed, or killed with SIGKILL); half-written and unreadable files are never taken for batches."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from structlog.testing import capture_logs

from dispatchd.channels.gps.spool import HeldSpool

CST = timezone(timedelta(hours=8))


def rows(n: int, unit_id: int = 7) -> list[tuple[object, ...]]:
    """Track rows in sink.TRACK_COLUMNS order, with the kinds of value a fix has (None included)."""
    at = datetime(2026, 12, 2, 9, 30, tzinfo=CST)
    return [
        (
            unit_id,
            3,
            at + timedelta(seconds=i),
            27.7425 + i / 10000,
            120.48,
            None if i % 2 else 36.5,
            90.0,
            None,
            5.0,
            None,
            "osmand",
            datetime(2026, 12, 2, 1, 30, i, 250000, tzinfo=UTC),
        )
        for i in range(n)
    ]


def opened(root: Path) -> HeldSpool:
    spool = HeldSpool(root)
    spool.open()
    return spool


def test_a_running_sinks_batches_are_not_taken_and_an_ended_ones_come_back_whole(tmp_path: Path) -> None:
    """While the sink that put a batch runs, another adopts nothing; once it closed with the batch
    still held, the other gets the same id and the same rows (times with their offsets) and the
    ended sink's directory is gone."""
    first, second = opened(tmp_path), opened(tmp_path)
    batch, held = uuid.uuid4(), rows(5)
    first.put(batch, held)
    assert first.holds(batch) and first.count == 1
    assert second.adopt() == []
    assert first.close() == 1
    adopted = second.adopt()
    assert adopted == [(batch, held)]
    assert adopted[0][1][0][2].utcoffset() == timedelta(hours=8)
    assert not first.dir.exists()
    assert second.holds(batch) and [p.name.endswith(".batch") for p in second.dir.iterdir() if p.name != ".lock"] == [True]
    assert second.adopt() == []


def test_a_written_batch_is_dropped_and_an_empty_spool_leaves_nothing(tmp_path: Path) -> None:
    """drop() removes the batch's file; close() of a spool holding nothing removes its directory."""
    spool = opened(tmp_path)
    batch = uuid.uuid4()
    spool.put(batch, rows(2))
    spool.drop(batch)
    assert not spool.holds(batch)
    assert spool.close() == 0
    assert list(tmp_path.iterdir()) == []


def test_batches_come_back_oldest_first_from_several_ended_sinks(tmp_path: Path) -> None:
    """Batches of two ended sinks are returned in the order they were put."""
    a, b = opened(tmp_path), opened(tmp_path)
    order = []
    for spool in (a, b, a):
        batch = uuid.uuid4()
        spool.put(batch, rows(1))
        order.append(batch)
    a.close()
    b.close()
    third = opened(tmp_path)
    assert [batch for batch, _ in third.adopt()] == order


def test_a_sink_killed_with_sigkill_leaves_its_batches_to_the_next(tmp_path: Path) -> None:
    """A process that put a batch and was killed (-9) holds no lock any more: its batch is adopted."""
    script = (
        "import sys, uuid, os, signal\n"
        "from pathlib import Path\n"
        "from dispatchd.channels.gps.spool import HeldSpool\n"
        "from tests.channels.test_gps_spool import rows\n"
        "s = HeldSpool(Path(sys.argv[1])); s.open(); s.put(uuid.UUID(sys.argv[2]), rows(3))\n"
        "print('held', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGSTOP)\n"
    )
    batch = uuid.uuid4()
    proc = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path), str(batch)],
        stdout=subprocess.PIPE,
        cwd=Path(__file__).resolve().parents[2],
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
        survivor = opened(tmp_path)
        assert survivor.adopt() == []  # the process lives (stopped), its lock holds
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        assert survivor.adopt() == [(batch, rows(3))]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_half_written_and_unreadable_files_are_never_taken_for_batches(tmp_path: Path) -> None:
    """A temporary file (never acknowledged) is deleted; a cut batch file is set aside as .bad and
    logged as an error, not deleted and not written."""
    ended = opened(tmp_path)
    good = uuid.uuid4()
    ended.put(good, rows(2))
    (ended.dir / "00000000000000000001-x.tmp").write_bytes(b'{"batch"')
    cut = ended.dir / f"00000000000000000002-{uuid.uuid4().hex}.batch"
    whole = (ended.dir / next(p.name for p in ended.dir.iterdir() if p.suffix == ".batch")).read_bytes()
    cut.write_bytes(whole[: len(whole) - 20])
    ended.close()
    with capture_logs() as logs:
        adopted = opened(tmp_path).adopt()
    assert adopted == [(good, rows(2))]
    assert [e["event"] for e in logs] == ["gps_held_batch_unreadable"]
    assert [p.name.endswith(".batch.bad") for p in tmp_path.iterdir() if p.is_file()] == [True]
    assert not any(p.suffix == ".tmp" for p in tmp_path.rglob("*"))


def test_a_directory_being_made_is_not_adopted(tmp_path: Path) -> None:
    """A sink's directory is hidden until locked: a hidden directory is never taken over."""
    (tmp_path / ".0123").mkdir()
    spool = opened(tmp_path)
    assert spool.adopt() == []
    assert (tmp_path / ".0123").exists()
    os.rmdir(tmp_path / ".0123")
