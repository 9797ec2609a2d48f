"""The photo store: uploads streamed to temporary files, checked, stripped of metadata, and kept
content-addressed under ``<data dir>/media/``.

A photo is received in chunks (never held whole in memory), its type sniffed from its first bytes,
its size limited while it streams. The original and its public copy (no GPS, EXIF, XMP, text
chunks) wait in ``media/tmp/`` until the transaction that records them commits; then each is moved
to ``media/<aa>/<sha256>`` with an atomic rename (the same content under the same name, so two
instances placing the same photo at once do no harm). A request that fails leaves nothing: its
temporary files are removed when its :class:`Staging` closes; what a crash leaves in ``media/tmp/``
is swept at start and every few minutes (:meth:`MediaStore.sweep`).

Before each photo is taken, :meth:`MediaStore.admit` checks the disk (below ``[reports]
min_free_mb`` photos are refused, 507, while text reports go on) and the uploader's allowance
(:class:`UploadAllowance`: photos and megabytes per hour, 429 with Retry-After past it).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import math
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Protocol

import structlog

from dispatchd.channels.reports import photos
from dispatchd.errors import InsufficientStorage, Throttled, TooLarge, UnsupportedMedia

log = structlog.get_logger("dispatchd.reports")

_CHUNK: Final = 64 * 1024
SHA256: Final = re.compile(r"^[0-9a-f]{64}$")


class ChunkSource(Protocol):
    """What a multipart body part offers (aiohttp's BodyPartReader)."""

    async def read_chunk(self, size: int = ...) -> bytes: ...


@dataclass
class StagedPhoto:
    """A received photo waiting in ``media/tmp/`` for its transaction to commit."""

    index: int  # 1-based position in the request, for messages
    sha256: str
    media_type: str
    size: int
    public_sha256: str
    public_size: int
    stripped: list[str]
    original_tmp: Path
    public_tmp: Path

    @property
    def url(self) -> str:
        return media_url(self.sha256)

    def as_json(self) -> dict[str, object]:
        return {
            "sha256": self.sha256,
            "url": self.url,
            "type": self.media_type,
            "size": self.size,
            "stripped": self.stripped,
        }


def media_url(sha256: str) -> str:
    """The authenticated route of a photo (add ``?token=`` for an ``<img>``)."""
    return f"/api/v1/media/{sha256}"


def sha_of_url(reference: str) -> str | None:
    """The digest in a photo reference written by :func:`media_url`, or None."""
    prefix = "/api/v1/media/"
    if reference.startswith(prefix) and SHA256.match(reference[len(prefix) :]):
        return reference[len(prefix) :]
    return None


def too_large(index: int, limit_mb: float) -> TooLarge:
    return TooLarge(
        f"第 {index} 张照片超过 {limit_mb:g} MB",
        f"photo {index} is larger than {limit_mb:g} MB",
        code="photo_too_large",
        fields={
            "photo": (f"每张照片不能超过 {limit_mb:g} MB", f"each photo must be at most {limit_mb:g} MB")
        },
    )


def unsupported(index: int, detail_en: str = "") -> UnsupportedMedia:
    en = f"photo {index} is not a JPEG, PNG or WebP image"
    return UnsupportedMedia(
        f"第 {index} 张照片不是 JPEG、PNG 或 WebP 图片",
        en + (f" ({detail_en})" if detail_en else ""),
        code="unsupported_photo_type",
        fields={
            "photo": (
                "只接受 JPEG、PNG 或 WebP 图片（按文件内容判断）",
                "only JPEG, PNG or WebP (judged by content)",
            )
        },
    )


@dataclass
class Staging:
    """The temporary files of one request; :meth:`MediaStore.staging` removes what is left."""

    store: MediaStore
    photos: list[StagedPhoto] = field(default_factory=list)
    _temps: list[Path] = field(default_factory=list)

    def temp(self) -> Path:
        path = self.store.tmp_dir / f"{uuid.uuid4().hex}.part"
        self._temps.append(path)
        return path

    def cleanup(self) -> None:
        for path in self._temps:
            with contextlib.suppress(OSError):  # what cannot go now goes with the next sweep
                path.unlink()
        self._temps.clear()


class UploadAllowance:
    """What each user may still upload: photos and bytes, refilled evenly to so many an hour
    (in memory, per instance). Time is the caller's (monotonic seconds)."""

    def __init__(self, photos_per_hour: int, bytes_per_hour: float) -> None:
        self.photos_per_hour = float(photos_per_hour)
        self.bytes_per_hour = float(bytes_per_hour)
        self._left: dict[int, tuple[float, float, float]] = {}  # user -> (photos, bytes, at)

    def _refilled(self, user_id: int, now: float) -> tuple[float, float]:
        photos, nbytes, at = self._left.get(user_id, (self.photos_per_hour, self.bytes_per_hour, now))
        hours = max(0.0, now - at) / 3600
        return (
            min(self.photos_per_hour, photos + hours * self.photos_per_hour),
            min(self.bytes_per_hour, nbytes + hours * self.bytes_per_hour),
        )

    def wait(self, user_id: int, now: float) -> float:
        """Seconds until the user may upload another photo (0: now)."""
        photos, nbytes = self._refilled(user_id, now)
        self._left[user_id] = (photos, nbytes, now)
        if len(self._left) > 100_000:
            self._left = {user_id: self._left[user_id]}
        photo_wait = 0.0 if photos >= 1 else (1 - photos) / self.photos_per_hour * 3600
        byte_wait = 0.0 if nbytes > 0 else (1 - nbytes) / self.bytes_per_hour * 3600
        return max(photo_wait, byte_wait)

    def spend(self, user_id: int, size: int, now: float) -> None:
        photos, nbytes = self._refilled(user_id, now)
        self._left[user_id] = (photos - 1, nbytes - size, now)


def photo_rate_exceeded(wait: float) -> Throttled:
    minutes = max(1, math.ceil(wait / 60))
    return Throttled(
        f"上传照片过多，请 {minutes} 分钟后再传（文字上报不受影响）",
        f"too many photos uploaded; try again in {minutes} min (reports without photos are still taken)",
        retry_after=wait,
        code="photo_rate_exceeded",
    )


def disk_nearly_full() -> InsufficientStorage:
    return InsufficientStorage(
        "服务器存储空间不足，暂不接收照片；不带照片的上报仍可提交",
        "the server's disk is nearly full: photos are refused for now; send the report without them",
        code="disk_nearly_full",
    )


class MediaStore:
    """Photos under ``root`` (``<data dir>/media``), one file per digest."""

    def __init__(self, root: Path, *, min_free_bytes: float = 0, allowance: UploadAllowance | None = None) -> None:
        self.root = root
        self.tmp_dir = root / "tmp"
        self.min_free_bytes = min_free_bytes
        self.allowance = allowance

    def free_bytes(self) -> int:
        self.root.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.root).free

    def admit(self, user_id: int, now: float) -> None:
        """May ``user_id`` send a photo now? Raises InsufficientStorage (507) below the free-space
        floor, Throttled (429) past the user's allowance."""
        if self.min_free_bytes and self.free_bytes() < self.min_free_bytes:
            raise disk_nearly_full()
        if self.allowance is not None:
            wait = self.allowance.wait(user_id, now)
            if wait > 0:
                raise photo_rate_exceeded(wait)

    def received(self, user_id: int, staged: StagedPhoto, now: float) -> None:
        if self.allowance is not None:
            self.allowance.spend(user_id, staged.size, now)

    def sweep(self, stale_before: float) -> int:
        """Remove temporary files last written before ``stale_before`` (a POSIX time); return how many."""
        removed = 0
        for leftover in self.tmp_dir.glob("*.part"):
            with contextlib.suppress(OSError):
                if leftover.stat().st_mtime < stale_before:
                    leftover.unlink()
                    removed += 1
        return removed

    def prepare(self, stale_before: float | None = None) -> None:
        """Create the directories; drop temporary files a crashed process left behind, those last
        written before ``stale_before`` (a POSIX time): instances sharing the data directory may
        be receiving photos right now."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        if stale_before is not None:
            self.sweep(stale_before)

    def path(self, sha256: str) -> Path:
        if not SHA256.match(sha256):
            raise ValueError("not a SHA-256 digest")
        return self.root / sha256[:2] / sha256

    @contextlib.asynccontextmanager
    async def staging(self) -> AsyncIterator[Staging]:
        stage = Staging(self)
        try:
            yield stage
        finally:
            stage.cleanup()

    async def receive(
        self, stage: Staging, part: ChunkSource, *, index: int, limit_bytes: int
    ) -> StagedPhoto:
        """Stream one photo part to a temporary file: sniff its type from the first bytes (415),
        stop at ``limit_bytes`` (413), then write its public copy. Nothing stays on failure."""
        limit_mb = limit_bytes / (1024 * 1024)
        original = stage.temp()
        digest = hashlib.sha256()
        size = 0
        head = b""
        media_type: str | None = None
        with original.open("wb") as out:
            while True:
                chunk = await part.read_chunk(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit_bytes:
                    raise too_large(index, limit_mb)
                if media_type is None:
                    head += chunk
                    if len(head) < photos.SNIFF_BYTES:
                        continue
                    media_type = photos.sniff(head)
                    if media_type is None:
                        raise unsupported(index)
                    chunk, head = head, b""
                digest.update(chunk)
                out.write(chunk)
            if media_type is None:  # shorter than the sniffing window
                media_type = photos.sniff(head)
                if media_type is None or not head:
                    raise unsupported(index)
                digest.update(head)
                out.write(head)
        public = stage.temp()
        try:
            stripped, public_sha, public_size = await asyncio.to_thread(
                _write_public, media_type, original, public
            )
        except photos.PhotoFormatError as exc:
            raise unsupported(index, str(exc)) from None
        staged = StagedPhoto(
            index=index,
            sha256=digest.hexdigest(),
            media_type=media_type,
            size=size,
            public_sha256=public_sha,
            public_size=public_size,
            stripped=stripped,
            original_tmp=original,
            public_tmp=public,
        )
        stage.photos.append(staged)
        log.debug("photo_staged", sha256=staged.sha256, size=size, media_type=media_type, stripped=stripped)
        return staged

    def place(self, staged: StagedPhoto) -> None:
        """Move a staged photo and its public copy to their content-addressed names (after commit)."""
        for sha, temp in ((staged.sha256, staged.original_tmp), (staged.public_sha256, staged.public_tmp)):
            final = self.path(sha)
            if final.exists():
                with contextlib.suppress(FileNotFoundError):
                    temp.unlink()
                continue
            final.parent.mkdir(parents=True, exist_ok=True)
            if temp.exists():
                os.replace(temp, final)

    def place_all(self, stage: Staging) -> None:
        for staged in stage.photos:
            self.place(staged)


def _write_public(media_type: str, original: Path, public: Path) -> tuple[list[str], str, int]:
    """Write the copy without metadata; return what it left out, its digest and size."""
    with original.open("rb") as src, public.open("w+b") as dst:
        stripped = photos.strip_metadata(media_type, src, dst)
        dst.flush()
        size = dst.tell()
        dst.seek(0)
        digest = hashlib.sha256()
        while block := dst.read(_CHUNK):
            digest.update(block)
    if size == 0:
        raise photos.PhotoFormatError("nothing left of the picture")
    return sorted(set(stripped)), digest.hexdigest(), size
