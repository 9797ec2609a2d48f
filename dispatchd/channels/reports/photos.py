"""Photo formats, pure: what a file is (sniffed from its first bytes, never from its name or the
client's Content-Type) and a copy of it without metadata.

The copy others see keeps every byte needed to show the picture and drops what can identify
where and with what it was taken:

* JPEG (ITU-T T.81 / JFIF): APP1 (Exif, with its GPS IFD, and XMP), APP3–APP13 and APP15
  (maker and IPTC data), COM, and anything after EOI. APP0 (JFIF), APP2 (ICC profile) and APP14
  (Adobe colour transform) stay. The Exif orientation tag is written back in a minimal Exif
  segment, so that the picture is not shown on its side.
* PNG (ISO/IEC 15948): eXIf, tEXt, zTXt, iTXt and tIME chunks, and anything after IEND.
* WebP (RIFF container): EXIF and XMP chunks, and their flags in VP8X.

Everything streams through file objects in chunks: a 100 MB photo costs a few buffers of memory.
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Final

JPEG: Final = "image/jpeg"
PNG: Final = "image/png"
WEBP: Final = "image/webp"
MEDIA_TYPES: Final[tuple[str, ...]] = (JPEG, PNG, WEBP)
EXTENSIONS: Final = {JPEG: "jpg", PNG: "png", WEBP: "webp"}

# Bytes needed to recognise every supported type.
SNIFF_BYTES: Final = 16
_CHUNK: Final = 64 * 1024
_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"


class PhotoFormatError(ValueError):
    """The file claims a supported type by its first bytes but its structure is broken."""


def sniff(head: bytes) -> str | None:
    """The media type of a file from its first :data:`SNIFF_BYTES` bytes, or None."""
    if head[:3] == b"\xff\xd8\xff":
        return JPEG
    if head[:8] == _PNG_SIGNATURE:
        return PNG
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP" and head[12:16] in (b"VP8 ", b"VP8L", b"VP8X"):
        return WEBP
    return None


def strip_metadata(media_type: str, src: BinaryIO, dst: BinaryIO) -> list[str]:
    """Copy the picture in ``src`` to ``dst`` without its metadata; return what was left out.

    ``dst`` must be seekable for WebP (the RIFF size is written last). Raises
    :class:`PhotoFormatError` when ``src`` is not a well-formed file of ``media_type``.
    """
    reader = _Reader(src)
    if media_type == JPEG:
        return _strip_jpeg(reader, dst)
    if media_type == PNG:
        return _strip_png(reader, dst)
    if media_type == WEBP:
        return _strip_webp(reader, dst)
    raise ValueError(f"unsupported media type {media_type!r}")


class _Reader:
    """A buffered reader with exact reads, look-ahead and chunked copying."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self._buf = b""

    def fill(self, n: int) -> bytes:
        """At least ``n`` buffered bytes unless the file ends first; returns the buffer."""
        while len(self._buf) < n:
            more = self._src.read(max(_CHUNK, n - len(self._buf)))
            if not more:
                break
            self._buf += more
        return self._buf

    def exact(self, n: int, what: str) -> bytes:
        if len(self.fill(n)) < n:
            raise PhotoFormatError(f"file ends inside {what}")
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def skip(self, n: int) -> None:
        self.copy(n, None, "skipped data")

    def copy(self, n: int, dst: BinaryIO | None, what: str) -> None:
        """Move ``n`` bytes to ``dst`` (or drop them) without holding more than a chunk."""
        while n > 0:
            if not self._buf:
                self.fill(1)
                if not self._buf:
                    raise PhotoFormatError(f"file ends inside {what}")
            take = self._buf[:n]
            self._buf = self._buf[len(take) :]
            n -= len(take)
            if dst is not None:
                dst.write(take)

    def drop(self, n: int) -> None:
        self._buf = self._buf[n:]

    def at_end(self) -> bool:
        return not self.fill(1)


# -- JPEG -------------------------------------------------------------------------------------------

_SOI, _EOI, _SOS, _APP0, _APP1, _APP2, _APP14, _APP15, _COM = (
    0xD8,
    0xD9,
    0xDA,
    0xE0,
    0xE1,
    0xE2,
    0xEE,
    0xEF,
    0xFE,
)
_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0–RST7: no length field
_KEEP_APP: Final = frozenset({_APP0, _APP2, _APP14})
_EXIF_HEADER: Final = b"Exif\x00\x00"
_ORIENTATION_TAG: Final = 0x0112


def _strip_jpeg(r: _Reader, dst: BinaryIO) -> list[str]:
    if r.exact(2, "the JPEG start") != b"\xff\xd8":
        raise PhotoFormatError("not a JPEG file (no SOI marker)")
    dst.write(b"\xff\xd8")
    removed: list[str] = []
    marker = _next_marker(r)
    while True:
        if marker == _EOI:
            dst.write(b"\xff\xd9")
            if not r.at_end():
                removed.append("trailer")
            return removed
        if marker in _STANDALONE:
            dst.write(bytes((0xFF, marker)))
            marker = _next_marker(r)
            continue
        (length,) = struct.unpack(">H", r.exact(2, "a segment length"))
        if length < 2:
            raise PhotoFormatError("JPEG segment length below 2")
        body = length - 2
        if marker == _APP1 or (0xE3 <= marker <= 0xED) or marker == _APP15 or marker == _COM:
            if marker == _APP1 and body <= 65533:
                payload = r.exact(body, "an APP1 segment")
                removed.append("exif" if payload.startswith(_EXIF_HEADER) else "xmp")
                orientation = _exif_orientation(payload) if payload.startswith(_EXIF_HEADER) else None
                if orientation is not None and orientation != 1:
                    dst.write(_minimal_exif(orientation))
            else:
                r.skip(body)
                removed.append("comment" if marker == _COM else f"app{marker - _APP0}")
            marker = _next_marker(r)
            continue
        dst.write(bytes((0xFF, marker)) + struct.pack(">H", length))
        r.copy(body, dst, "a JPEG segment")
        if marker == _SOS:
            marker = _copy_scan(r, dst)
        else:
            marker = _next_marker(r)


def _next_marker(r: _Reader) -> int:
    """The next marker code between segments (fill bytes 0xFF skipped)."""
    if r.exact(1, "a marker") != b"\xff":
        raise PhotoFormatError("JPEG segment not followed by a marker")
    while True:
        code = r.exact(1, "a marker")[0]
        if code != 0xFF:
            if code == 0x00:
                raise PhotoFormatError("invalid JPEG marker 0x00")
            return code


def _copy_scan(r: _Reader, dst: BinaryIO) -> int:
    """Copy entropy-coded data up to the next marker (stuffed 0xFF00 and RSTn are data); return
    that marker's code. A file that ends inside the scan is treated as ending with EOI."""
    while True:
        buf = r.fill(2)
        if not buf:
            return _EOI
        at = buf.find(b"\xff")
        if at < 0:
            dst.write(buf)
            r.drop(len(buf))
            continue
        if at > 0:
            dst.write(buf[:at])
            r.drop(at)
            continue
        buf = r.fill(2)
        if len(buf) < 2:
            r.drop(len(buf))
            return _EOI
        code = buf[1]
        if code == 0x00 or 0xD0 <= code <= 0xD7:
            dst.write(buf[:2])
            r.drop(2)
        elif code == 0xFF:
            r.drop(1)  # a fill byte before a marker
        else:
            r.drop(2)
            return code


def _exif_orientation(payload: bytes) -> int | None:
    """The orientation tag (1–8) of IFD0 in an Exif APP1 payload, or None."""
    tiff = payload[len(_EXIF_HEADER) :]
    if len(tiff) < 8 or tiff[:2] not in (b"II", b"MM"):
        return None
    order = "<" if tiff[:2] == b"II" else ">"
    try:
        (ifd,) = struct.unpack_from(order + "I", tiff, 4)
        (count,) = struct.unpack_from(order + "H", tiff, ifd)
        for i in range(count):
            tag, kind, n = struct.unpack_from(order + "HHI", tiff, ifd + 2 + 12 * i)
            if tag == _ORIENTATION_TAG and kind == 3 and n == 1:
                (value,) = struct.unpack_from(order + "H", tiff, ifd + 2 + 12 * i + 8)
                return int(value) if 1 <= value <= 8 else None
    except struct.error:
        return None
    return None


def _minimal_exif(orientation: int) -> bytes:
    """An APP1 Exif segment holding only the orientation tag (big-endian TIFF, one IFD entry)."""
    tiff = b"MM\x00\x2a" + struct.pack(">I", 8)
    tiff += struct.pack(">H", 1) + struct.pack(">HHIHH", _ORIENTATION_TAG, 3, 1, orientation, 0)
    tiff += struct.pack(">I", 0)
    payload = _EXIF_HEADER + tiff
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


# -- PNG --------------------------------------------------------------------------------------------

_PNG_DROP: Final = {b"eXIf": "exif", b"tEXt": "text", b"zTXt": "text", b"iTXt": "text", b"tIME": "time"}


def _strip_png(r: _Reader, dst: BinaryIO) -> list[str]:
    if r.exact(8, "the PNG signature") != _PNG_SIGNATURE:
        raise PhotoFormatError("not a PNG file (bad signature)")
    dst.write(_PNG_SIGNATURE)
    removed: list[str] = []
    while True:
        header = r.exact(8, "a PNG chunk header")
        length, kind = struct.unpack(">I", header[:4])[0], header[4:]
        if length > 0x7FFFFFFF or not kind.isalpha():
            raise PhotoFormatError("malformed PNG chunk")
        if kind in _PNG_DROP:
            r.skip(length + 4)
            removed.append(_PNG_DROP[kind])
            continue
        dst.write(header)
        r.copy(length + 4, dst, "a PNG chunk")  # data and CRC
        if kind == b"IEND":
            if not r.at_end():
                removed.append("trailer")
            return sorted(set(removed))


# -- WebP -------------------------------------------------------------------------------------------

_VP8X_EXIF_FLAG: Final = 0x08
_VP8X_XMP_FLAG: Final = 0x04


def _strip_webp(r: _Reader, dst: BinaryIO) -> list[str]:
    header = r.exact(12, "the RIFF header")
    if header[:4] != b"RIFF" or header[8:12] != b"WEBP":
        raise PhotoFormatError("not a WebP file (bad RIFF header)")
    (riff_size,) = struct.unpack("<I", header[4:8])
    remaining = riff_size - 4  # the size counts "WEBP" and the chunks
    start = dst.tell()
    dst.write(b"RIFF\x00\x00\x00\x00WEBP")
    written = 4
    removed: list[str] = []
    while remaining >= 8:
        chunk = r.exact(8, "a WebP chunk header")
        kind, (size,) = chunk[:4], struct.unpack("<I", chunk[4:])
        padded = size + (size & 1)
        remaining -= 8 + padded
        if remaining < 0:
            raise PhotoFormatError("WebP chunk runs past the RIFF size")
        if kind in (b"EXIF", b"XMP "):
            r.skip(padded)
            removed.append("exif" if kind == b"EXIF" else "xmp")
            continue
        if kind == b"VP8X":
            if size < 10:
                raise PhotoFormatError("short VP8X chunk")
            body = bytearray(r.exact(padded, "the VP8X chunk"))
            body[0] &= ~(_VP8X_EXIF_FLAG | _VP8X_XMP_FLAG) & 0xFF
            dst.write(chunk + bytes(body))
        else:
            dst.write(chunk)
            r.copy(padded, dst, "a WebP chunk")
        written += 8 + padded
    if remaining != 0:
        raise PhotoFormatError("WebP RIFF size does not match its chunks")
    if not r.at_end():
        removed.append("trailer")
    end = dst.tell()
    dst.seek(start + 4)
    dst.write(struct.pack("<I", written))
    dst.seek(end)
    return removed
