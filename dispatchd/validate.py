"""Declarative validation of request bodies, with per-field messages in two languages.

The same :class:`Field` lists feed the OpenAPI document, so what is documented is what is checked.
Pure: services validate with it too; reading a request is :mod:`dispatchd.web.validate`'s.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from dispatchd.errors import invalid

_TYPES = {
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
    "array": list,
    "object": dict,
}
TYPE_ZH = {
    "string": "字符串",
    "integer": "整数",
    "number": "数字",
    "boolean": "布尔值",
    "array": "数组",
    "object": "对象",
}


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: str = "string"  # string | integer | number | boolean | array | object
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    choices: tuple[str, ...] = ()
    description: str = ""
    items: str | None = None  # element type of an array

    def schema(self) -> dict[str, Any]:
        s: dict[str, Any] = {"type": self.type}
        if self.description:
            s["description"] = self.description
        if self.minimum is not None:
            s["minimum"] = self.minimum
        if self.maximum is not None:
            s["maximum"] = self.maximum
        if self.max_length is not None:
            s["maxLength" if self.type == "string" else "maxItems"] = self.max_length
        if self.choices:
            s["enum"] = list(self.choices)
        if self.type == "array":
            s["items"] = {"type": self.items or "string"}
        return s


def object_schema(fields: Sequence[Field]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": {f.name: f.schema() for f in fields}}
    required = [f.name for f in fields if f.required]
    if required:
        schema["required"] = required
    return schema


def _check(f: Field, value: Any) -> tuple[str, str] | None:
    expected = _TYPES[f.type]
    if isinstance(value, bool) and f.type in ("integer", "number"):
        return (f"应为{TYPE_ZH[f.type]}", f"must be {f.type}")
    if f.type == "number" and isinstance(value, float) and not math.isfinite(value):
        return ("应为有限数字", "must be a finite number")
    if not isinstance(value, expected):  # type: ignore[arg-type]
        return (f"应为{TYPE_ZH[f.type]}", f"must be {'an' if f.type[0] in 'aio' else 'a'} {f.type}")
    if f.minimum is not None and isinstance(value, int | float) and value < f.minimum:
        return (f"不能小于 {f.minimum:g}", f"must be at least {f.minimum:g}")
    if f.maximum is not None and isinstance(value, int | float) and value > f.maximum:
        return (f"不能大于 {f.maximum:g}", f"must be at most {f.maximum:g}")
    if f.max_length is not None and isinstance(value, str | list) and len(value) > f.max_length:
        return (f"长度不能超过 {f.max_length}", f"must have at most {f.max_length} characters/items")
    if f.type == "string" and f.required and isinstance(value, str) and not value.strip():
        return ("不能为空", "must not be empty")
    if f.choices and value not in f.choices:
        return ("取值无效，可选：" + "、".join(f.choices), "must be one of " + ", ".join(f.choices))
    if f.type == "array" and f.items:
        item_type = _TYPES[f.items]
        if not all(isinstance(v, item_type) and not isinstance(v, bool) for v in value):  # type: ignore[arg-type]
            return (f"元素应为{TYPE_ZH[f.items]}", f"items must be {f.items}")
    return None


def check_fields(data: Mapping[str, Any], fields: Sequence[Field]) -> dict[str, Any]:
    """Return the known fields of ``data``; raise 422 naming every bad field."""
    errors: dict[str, tuple[str, str]] = {}
    out: dict[str, Any] = {}
    for f in fields:
        if f.name not in data or data[f.name] is None:
            if f.required:
                errors[f.name] = ("必填", "is required")
            continue
        problem = _check(f, data[f.name])
        if problem:
            errors[f.name] = problem
        else:
            out[f.name] = data[f.name]
    if errors:
        raise invalid(errors)
    return out
