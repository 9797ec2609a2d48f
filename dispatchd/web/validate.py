"""Reading JSON bodies and query strings of a request, validated by :mod:`dispatchd.validate`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

from dispatchd.errors import invalid
from dispatchd.validate import (
    MAX_DEPTH,
    TYPE_ZH,
    Field,
    check_fields,
    check_storable,
    json_depth,
    may_hold_unstorable,
)
from dispatchd.web.errors import ApiError

# Bodies of these types are taken as JSON (a browser's fetch without a type says text/plain).
JSON_TYPES = frozenset({"application/json", "text/plain", "application/octet-stream"})


def parse_json(raw: bytes, what_zh: str = "请求体", what_en: str = "request body") -> Any:
    """Decoded JSON, or 400 naming the problem: not JSON, not UTF-8, a number too long, nesting
    deeper than :data:`~dispatchd.validate.MAX_DEPTH` (checked before the parser recurses)."""
    if json_depth(raw) > MAX_DEPTH:
        raise ApiError(
            400,
            "json_too_deep",
            f"{what_zh}嵌套超过 {MAX_DEPTH} 层",
            f"{what_en} is nested deeper than {MAX_DEPTH} levels",
        )
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        # ValueError covers a malformed document and a number of more than 4,300 digits.
        raise ApiError(400, "invalid_json", f"{what_zh}不是有效的 JSON", f"{what_en} is not valid JSON") from None


async def json_body(request: web.Request, fields: Sequence[Field] | None = None) -> dict[str, Any]:
    """Parse a JSON object body (400 when it is not one, 415 for a form or multipart body) and
    validate it when fields are given; text nobody can store (NUL, lone surrogates) is 422."""
    if request.body_exists and request.content_type not in JSON_TYPES:
        raise ApiError(
            415,
            "unsupported_media_type",
            "请求体应为 application/json",
            "the body must be application/json",
        )
    raw = await request.read()
    data = parse_json(raw) if raw.strip() else {}
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "请求体应为 JSON 对象", "request body must be a JSON object")
    if may_hold_unstorable(raw):
        check_storable(data)
    return check_fields(data, fields) if fields is not None else data


def query_params(request: web.Request, fields: Sequence[Field]) -> dict[str, Any]:
    """Convert and validate query parameters by the declared field types."""
    errors: dict[str, tuple[str, str]] = {}
    converted: dict[str, Any] = {}
    for f in fields:
        raw = request.query.get(f.name)
        if raw is None or raw == "":
            continue
        try:
            if f.type == "integer":
                converted[f.name] = int(raw)
            elif f.type == "number":
                converted[f.name] = float(raw)
            elif f.type == "boolean":
                if raw.lower() not in ("true", "false", "1", "0"):
                    raise ValueError
                converted[f.name] = raw.lower() in ("true", "1")
            else:
                converted[f.name] = raw
        except ValueError:
            errors[f.name] = (f"应为{TYPE_ZH[f.type]}", f"must be {f.type}")
    if errors:
        raise invalid(errors)
    return check_fields(converted, fields)


def time_param(name: str, text: str) -> datetime:
    """A time given in a query as ISO 8601 (a zone-less one is UTC; a ``+`` sent unescaped reads as
    a space) or as unix seconds; 422 naming ``name`` otherwise."""
    try:
        if text.replace(".", "", 1).isdigit():
            return datetime.fromtimestamp(float(text), UTC)
        value = datetime.fromisoformat(
            text.replace(" ", "+") if text.count(" ") == 1 and "T" in text else text
        )
    except (ValueError, OverflowError, OSError):
        raise invalid({name: ("应为 ISO 8601 时间或 Unix 秒", "must be ISO 8601 or unix seconds")}) from None
    if not 1970 <= value.year <= 9000:
        raise invalid({name: ("应在 1970 至 9000 年之间", "must lie between the years 1970 and 9000")})
    return value if value.tzinfo else value.replace(tzinfo=UTC)
