"""Reading a submission: a JSON body, or ``multipart/form-data`` with one JSON part and ``photo``
parts, streamed part by part (photos go straight to temporary files)."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import BodyPartReader, MultipartReader, web

from dispatchd.channels.reports.media import MediaStore, Staging
from dispatchd.errors import invalid
from dispatchd.web.errors import ApiError

PHOTO_PART: Final = "photo"
_JSON_PART_MAX: Final = 256 * 1024


@dataclass
class Submission:
    data: dict[str, Any]
    parsed: Any  # what ``check`` returned for ``data``


def _bad_json(part: str) -> ApiError:
    return ApiError(
        400,
        "invalid_json",
        f"“{part}”部分应为 JSON 对象",
        f"the '{part}' part must be a JSON object",
        fields={part: ("应为 JSON 对象", "must be a JSON object")},
    )


def _parse_object(raw: bytes, part: str) -> dict[str, Any]:
    try:
        data = json.loads(raw) if raw.strip() else None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise _bad_json(part) from None
    if not isinstance(data, dict):
        raise _bad_json(part)
    return data


async def read_submission(
    request: web.Request,
    store: MediaStore,
    stage: Staging,
    *,
    json_part: str,
    check: Callable[[dict[str, Any]], Any],
    max_photos: int,
    photo_limit_bytes: int,
) -> Submission:
    """The JSON object (from the body or the ``json_part`` part) checked by ``check`` as soon as it
    arrives, and the photos staged in ``stage``. 400 for a malformed body, 413/415 for a photo,
    422 for too many photos or bad fields."""
    content_type = request.content_type
    if content_type == "multipart/form-data":
        return await _read_multipart(request, store, stage, json_part, check, max_photos, photo_limit_bytes)
    if content_type in ("application/json", "application/octet-stream") or not request.body_exists:
        try:
            raw = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ApiError(413, "payload_too_large", "请求体过大", "request body too large") from None
        data = _parse_object(raw, "body")
        return Submission(data, check(data))
    raise ApiError(
        415,
        "unsupported_media_type",
        "请求体应为 application/json 或 multipart/form-data",
        "the body must be application/json or multipart/form-data",
    )


async def _read_multipart(
    request: web.Request,
    store: MediaStore,
    stage: Staging,
    json_part: str,
    check: Callable[[dict[str, Any]], Any],
    max_photos: int,
    photo_limit_bytes: int,
) -> Submission:
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError):
        raise ApiError(400, "invalid_multipart", "multipart 请求体无效", "malformed multipart body") from None
    data: dict[str, Any] | None = None
    parsed: Any = None
    count = 0
    while True:
        try:
            part = await reader.next()
        except ValueError:
            raise ApiError(
                400, "invalid_multipart", "multipart 请求体无效", "malformed multipart body"
            ) from None
        if part is None:
            break
        if isinstance(part, MultipartReader) or not isinstance(part, BodyPartReader):
            raise ApiError(
                400, "invalid_multipart", "不支持嵌套的 multipart", "nested multipart is not supported"
            )
        name = part.name or ""
        if name == json_part:
            if data is not None:
                raise ApiError(
                    400, "duplicate_part", f"“{json_part}”部分重复", f"the '{json_part}' part appears twice"
                )
            raw = bytearray()
            while chunk := await part.read_chunk(64 * 1024):
                raw += chunk
                if len(raw) > _JSON_PART_MAX:
                    raise ApiError(
                        413,
                        "payload_too_large",
                        f"“{json_part}”部分超过 {_JSON_PART_MAX // 1024} KB",
                        f"the '{json_part}' part is larger than {_JSON_PART_MAX // 1024} KB",
                    )
            data = _parse_object(bytes(raw), json_part)
            parsed = check(data)
        elif name == PHOTO_PART:
            count += 1
            if count > max_photos:
                raise invalid({PHOTO_PART: (f"最多 {max_photos} 张照片", f"at most {max_photos} photos")})
            await store.receive(stage, part, index=count, limit_bytes=photo_limit_bytes)
        else:
            raise ApiError(
                400,
                "unknown_part",
                f"未知的部分“{name}”（应为 {json_part} 或 {PHOTO_PART}）",
                f"unknown part '{name}' (expected '{json_part}' or '{PHOTO_PART}')",
            )
    if data is None:
        raise ApiError(
            400,
            "missing_part",
            f"缺少“{json_part}”部分（JSON）",
            f"the multipart body needs a '{json_part}' part (JSON)",
            fields={json_part: ("必填", "is required")},
        )
    return Submission(data, parsed)
