"""Photo formats: sniffing by content and the copy without metadata (pure, no event loop)."""

from __future__ import annotations

import io
import struct

import pytest

from dispatchd.channels.reports import photos
from tests.channels.reports.helpers import decodes, gps_bytes, jpeg, png, webp


def strip(media_type: str, data: bytes) -> tuple[bytes, list[str]]:
    out = io.BytesIO()
    removed = photos.strip_metadata(media_type, io.BytesIO(data), out)
    return out.getvalue(), removed


def test_sniff_recognises_content_not_names() -> None:
    """JPEG, PNG and WebP are known by their first bytes; text is not a picture whatever its name."""
    assert photos.sniff(jpeg()[:16]) == photos.JPEG
    assert photos.sniff(png()[:16]) == photos.PNG
    assert photos.sniff(webp()[:16]) == photos.WEBP
    assert photos.sniff(b"hello, this is a text file renamed to photo.jpg") is None
    assert photos.sniff(b"GIF89a" + bytes(10)) is None
    assert photos.sniff(b"") is None


def test_jpeg_copy_loses_gps_keeps_orientation_and_decodes() -> None:
    """The JPEG copy drops the Exif segment with its GPS position, keeps the orientation, still decodes."""
    original = jpeg(orientation=6)
    assert gps_bytes() in original
    copy, removed = strip(photos.JPEG, original)
    assert gps_bytes() not in copy and b"\x88\x25" not in copy  # no GPS IFD pointer either
    assert "exif" in removed and "comment" in removed  # FFmpeg writes a COM segment too
    assert photos._exif_orientation(copy[4 : 4 + struct.unpack(">H", copy[4:6])[0]][2:]) == 6
    assert decodes(copy, "mjpeg")


def test_jpeg_without_orientation_gets_no_exif_at_all() -> None:
    """An upright photo's copy carries no Exif segment at all."""
    copy, _ = strip(photos.JPEG, jpeg(orientation=1))
    assert b"Exif" not in copy
    assert decodes(copy, "mjpeg")


def test_png_copy_loses_text_and_exif_chunks() -> None:
    """The PNG copy drops tEXt and eXIf chunks and still decodes."""
    original = png()
    copy, removed = strip(photos.PNG, original)
    assert gps_bytes() in original and gps_bytes() not in copy
    assert b"tEXt" not in copy and b"eXIf" not in copy
    assert removed == ["exif", "text"]
    assert decodes(copy, "png")


def test_webp_copy_loses_exif_and_its_flag() -> None:
    """The WebP copy drops the EXIF chunk, clears its VP8X flag, fixes the RIFF size, still decodes."""
    original = webp()
    copy, removed = strip(photos.WEBP, original)
    assert gps_bytes() in original and gps_bytes() not in copy
    assert removed == ["exif"]
    assert struct.unpack("<I", copy[4:8])[0] == len(copy) - 8
    assert copy[12:16] == b"VP8X" and copy[20] & 0x08 == 0
    assert decodes(copy, "webp")


def test_clean_photo_is_copied_unchanged() -> None:
    """A picture without metadata comes out byte for byte the same."""
    for media_type, data in ((photos.PNG, png(metadata=False)), (photos.WEBP, webp(metadata=False))):
        copy, removed = strip(media_type, data)
        assert copy == data and removed == []


@pytest.mark.parametrize(
    ("media_type", "data"),
    [
        (photos.JPEG, b"\xff\xd8\xff\xe1\x00"),  # ends inside a segment length
        (photos.JPEG, b"\xff\xd8\xff\xe0\x00\x10JFIF"),  # ends inside a segment
        (photos.PNG, b"\x89PNG\r\n\x1a\n\x00\x00"),  # ends inside a chunk header
        (photos.WEBP, b"RIFF\x20\x00\x00\x00WEBPVP8 \xff\x00\x00\x00"),  # chunk past the RIFF size
    ],
)
def test_broken_files_are_refused(media_type: str, data: bytes) -> None:
    """A file that starts like a picture but breaks off is a format error, not a crash."""
    with pytest.raises(photos.PhotoFormatError):
        strip(media_type, data)
