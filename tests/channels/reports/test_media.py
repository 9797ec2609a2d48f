"""The photo store: streamed reading with an early stop, sniffing, content-addressed placing."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from dispatchd.channels.reports.media import MediaStore
from dispatchd.errors import DomainError, TooLarge, UnsupportedMedia
from tests.channels.reports.helpers import jpeg, png

CHUNK = 64 * 1024


class Source:
    """A multipart part that produces ``size`` bytes lazily and counts what was read."""

    def __init__(self, head: bytes, size: int) -> None:
        self.head, self.size, self.read = head, size, 0

    async def read_chunk(self, size: int = CHUNK) -> bytes:
        if self.read >= self.size:
            return b""
        start = self.read
        n = min(size, self.size - start)
        self.read += n
        block = self.head[start : start + n]
        return block + bytes(n - len(block))


async def test_a_large_photo_is_stopped_at_the_limit(tmp_path: Path) -> None:
    """A 20 MB photo is read only up to the 10 MB limit (never held whole), refused with 413, and leaves no file."""
    store = MediaStore(tmp_path / "media")
    store.prepare()
    source = Source(jpeg(), 20 * 1024 * 1024)
    with pytest.raises(DomainError) as refused:
        async with store.staging() as stage:
            await store.receive(stage, source, index=1, limit_bytes=10 * 1024 * 1024)
    assert isinstance(refused.value, TooLarge)
    assert source.read <= 10 * 1024 * 1024 + CHUNK
    assert [p for p in (tmp_path / "media").rglob("*") if p.is_file()] == []


async def test_text_is_refused_after_its_first_bytes(tmp_path: Path) -> None:
    """A text file is refused with 415 as soon as its first chunk shows what it is."""
    store = MediaStore(tmp_path / "media")
    store.prepare()
    source = Source(b"plain text, not a photo " * 10, 5 * 1024 * 1024)
    with pytest.raises(DomainError) as refused:
        async with store.staging() as stage:
            await store.receive(stage, source, index=1, limit_bytes=10 * 1024 * 1024)
    assert isinstance(refused.value, UnsupportedMedia) and source.read == CHUNK
    assert list((tmp_path / "media" / "tmp").iterdir()) == []


async def test_placed_under_digests_after_commit(tmp_path: Path) -> None:
    """Original and public copy wait in tmp/ and are moved to media/<aa>/<sha256>; tmp/ ends empty."""
    store = MediaStore(tmp_path / "media")
    store.prepare()
    data = png()
    async with store.staging() as stage:
        staged = await store.receive(stage, Source(data, len(data)), index=1, limit_bytes=len(data))
        assert not store.path(staged.sha256).exists()
        store.place_all(stage)
    assert staged.sha256 == hashlib.sha256(data).hexdigest()
    assert store.path(staged.sha256).read_bytes() == data
    public = store.path(staged.public_sha256).read_bytes()
    assert hashlib.sha256(public).hexdigest() == staged.public_sha256 and b"tEXt" not in public
    assert list((tmp_path / "media" / "tmp").iterdir()) == []


def test_only_stale_leftovers_are_swept(tmp_path: Path) -> None:
    """At start-up, temporary files of a crashed process go; those another instance writes now stay."""
    store = MediaStore(tmp_path / "media")
    store.prepare()
    old, fresh = store.tmp_dir / "old.part", store.tmp_dir / "fresh.part"
    old.write_bytes(b"x")
    fresh.write_bytes(b"y")
    os.utime(old, (1000, 1000))
    os.utime(fresh, (5000, 5000))
    store.prepare(stale_before=3000)
    assert sorted(p.name for p in store.tmp_dir.iterdir()) == ["fresh.part"]
