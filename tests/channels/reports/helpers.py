"""Pictures, places and requests shared by the grid-report tests."""

from __future__ import annotations

import json
import struct
import uuid
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import aiohttp
import av
import numpy as np
from aiohttp.test_utils import TestClient

from dispatchd.domain.orgs import OrgTree
from tests.conftest import Account
from tests.incidents.helpers import point_in

TOWN = "330381001"
OTHER_TOWN = "330381002"
GRID = "330381001001G001"
OTHER_GRID = "330381002001G001"

# The GPS position written into test photos: 27°47'12.34"N 120°39'56.78"E.
GPS_LATITUDE = ((27, 1), (47, 1), (1234, 100))
GPS_LONGITUDE = ((120, 1), (39, 1), (5678, 100))


def _encode(codec_name: str, pix_fmt: str, width: int = 64, height: int = 48) -> bytes:
    codec = av.CodecContext.create(codec_name, "w")
    codec.width, codec.height, codec.pix_fmt = width, height, pix_fmt
    codec.time_base = Fraction(1, 25)
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, : width // 2] = (200, 40, 40)
    pixels[:, width // 2 :] = (40, 40, 200)
    frame = av.VideoFrame.from_ndarray(pixels, format="rgb24").reformat(format=pix_fmt)
    packets = list(codec.encode(frame)) + list(codec.encode(None))
    return b"".join(bytes(p) for p in packets)


def exif_with_gps(orientation: int = 6) -> bytes:
    """An Exif APP1 payload (big-endian TIFF): IFD0 with orientation and a GPS IFD."""
    ifd0 = 8
    gps = ifd0 + 2 + 2 * 12 + 4
    data = gps + 2 + 4 * 12 + 4
    tiff = b"MM\x00\x2a" + struct.pack(">I", ifd0)
    tiff += struct.pack(">H", 2)
    tiff += struct.pack(">HHIHH", 0x0112, 3, 1, orientation, 0)
    tiff += struct.pack(">HHII", 0x8825, 4, 1, gps)
    tiff += struct.pack(">I", 0)
    tiff += struct.pack(">H", 4)
    tiff += struct.pack(">HHI", 0x0001, 2, 2) + b"N\x00\x00\x00"
    tiff += struct.pack(">HHII", 0x0002, 5, 3, data)
    tiff += struct.pack(">HHI", 0x0003, 2, 2) + b"E\x00\x00\x00"
    tiff += struct.pack(">HHII", 0x0004, 5, 3, data + 24)
    tiff += struct.pack(">I", 0)
    for num, den in (*GPS_LATITUDE, *GPS_LONGITUDE):
        tiff += struct.pack(">II", num, den)
    return b"Exif\x00\x00" + tiff


def gps_bytes() -> bytes:
    """Bytes that only a photo still carrying its GPS position contains."""
    return b"".join(struct.pack(">II", n, d) for n, d in GPS_LATITUDE)


def jpeg(*, gps: bool = True, orientation: int = 6) -> bytes:
    """A real JPEG (FFmpeg's encoder), with an Exif segment carrying a GPS position."""
    data = _encode("mjpeg", "yuvj420p")
    assert data[:2] == b"\xff\xd8"
    if not gps:
        return data
    payload = exif_with_gps(orientation)
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    return data[:2] + segment + data[2:]


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    import zlib

    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(*, metadata: bool = True) -> bytes:
    """A real PNG with a tEXt chunk and an eXIf chunk (GPS) before its image data."""
    data = _encode("png", "rgb24")
    if not metadata:
        return data
    ihdr_end = 8 + 8 + 13 + 4
    extra = _png_chunk(b"tEXt", b"Comment\x00taken at home") + _png_chunk(b"eXIf", exif_with_gps()[6:])
    return data[:ihdr_end] + extra + data[ihdr_end:]


def webp(*, metadata: bool = True) -> bytes:
    """A real WebP (libwebp) in the extended format with an EXIF chunk carrying GPS."""
    data = _encode("libwebp", "yuv420p")
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    if not metadata:
        return data
    chunks = data[12:]
    width, height = 64, 48
    vp8x = b"VP8X" + struct.pack("<I", 10) + bytes([0x08, 0, 0, 0])
    vp8x += (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    exif = exif_with_gps()[6:]
    exif_chunk = b"EXIF" + struct.pack("<I", len(exif)) + exif + (b"\x00" if len(exif) % 2 else b"")
    body = b"WEBP" + vp8x + chunks + exif_chunk
    return b"RIFF" + struct.pack("<I", len(body)) + body


def decodes(data: bytes, codec_name: str) -> bool:
    """Whether FFmpeg decodes ``data`` into a picture."""
    codec = av.CodecContext.create(codec_name, "r")
    frames = codec.decode(av.Packet(data))
    return len(frames) == 1 and frames[0].width == 64


def report_body(tree: OrgTree, grid: str = GRID, **fields: Any) -> dict[str, Any]:
    lat, lon = point_in(tree, grid)
    body: dict[str, Any] = {
        "category": "hazard.fire.ebike_charging",
        "description": "楼道内有电动车飞线充电",
        "location": {"lat": lat, "lon": lon},
        "observed_at": "2026-05-03T15:30:00+08:00",
    }
    body.update(fields)
    return body


def form(
    report: dict[str, Any] | None, photos: Sequence[tuple[str, bytes, str]] = (), part: str = "report"
) -> aiohttp.FormData:
    """A multipart body: the JSON part and (filename, bytes, content type) photos."""
    data = aiohttp.FormData()
    if report is not None:
        data.add_field(part, json.dumps(report, ensure_ascii=False), content_type="application/json")
    for name, content, content_type in photos:
        data.add_field("photo", content, filename=name, content_type=content_type)
    return data


async def submit(
    client: TestClient[Any, Any],
    who: Account,
    body: Any,
    *,
    key: str | None = None,
    expect: int | None = 201,
    lang: str | None = None,
) -> tuple[int, Any]:
    """POST /api/v1/reports with a JSON body (dict) or a multipart form; returns status and JSON."""
    headers = dict(who.headers)
    headers["Idempotency-Key"] = key or uuid.uuid4().hex
    if lang:
        headers["Accept-Language"] = lang
    if isinstance(body, dict):
        resp = await client.post("/api/v1/reports", json=body, headers=headers)
    else:
        resp = await client.post("/api/v1/reports", data=body, headers=headers)
    data = await resp.json()
    if expect is not None:
        assert resp.status == expect, data
    return resp.status, data


__all__ = ["point_in"]
