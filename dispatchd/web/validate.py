"""Reading JSON bodies and query strings of a request, validated by :mod:`dispatchd.validate`."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from aiohttp import web

from dispatchd.errors import invalid
from dispatchd.validate import TYPE_ZH, Field, check_fields
from dispatchd.web.errors import ApiError


async def json_body(request: web.Request, fields: Sequence[Field] | None = None) -> dict[str, Any]:
    """Parse a JSON object body (400 when it is not one) and validate it when fields are given."""
    try:
        raw = await request.read()
        data = json.loads(raw) if raw else {}
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(
            400, "invalid_json", "请求体不是有效的 JSON", "request body is not valid JSON"
        ) from None
    if not isinstance(data, dict):
        raise ApiError(400, "invalid_json", "请求体应为 JSON 对象", "request body must be a JSON object")
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
