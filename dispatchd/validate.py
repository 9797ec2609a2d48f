"""Declarative validation of request bodies, with per-field messages in two languages.

The same :class:`Field` lists feed the OpenAPI document, so what is documented is what is checked.
Pure: services validate with it too; reading a request is :mod:`dispatchd.web.validate`'s.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from dispatchd.errors import invalid

# Every integer is stored as a PostgreSQL bigint: what lies beyond is refused as out of range.
INT64_MIN: Final = -(2**63)
INT64_MAX: Final = 2**63 - 1
# JSON nested deeper than this is refused (nobody sends more; a parser should not be made to recurse).
MAX_DEPTH: Final = 32
# What no stored text may hold: NUL (PostgreSQL refuses it) and lone surrogates (not UTF-8).
_UNSTORABLE: Final = re.compile("[\x00\ud800-\udfff]")
# What a declared text field may not hold either: the other C0 controls and DEL (tab, LF, CR are text).
_CONTROL: Final = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")

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
        elif self.type == "integer":
            s["minimum"] = INT64_MIN
        if self.maximum is not None:
            s["maximum"] = self.maximum
        elif self.type == "integer":
            s["maximum"] = INT64_MAX
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
    if f.type == "integer" and not INT64_MIN <= value <= INT64_MAX:
        return ("超出范围（64 位整数）", "is out of range (a 64-bit integer)")
    if f.type == "number" and isinstance(value, int) and abs(value) > 1e300:
        return ("超出范围", "is out of range")
    if isinstance(value, str) and _CONTROL.search(value):
        return ("不能含控制字符（如 NUL）", "must not contain control characters (such as NUL)")
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
        if f.items == "string" and any(_CONTROL.search(v) for v in value):
            return ("元素不能含控制字符（如 NUL）", "items must not contain control characters (such as NUL)")
        if f.items == "integer" and not all(INT64_MIN <= v <= INT64_MAX for v in value):
            return ("元素超出范围（64 位整数）", "items are out of range (64-bit integers)")
    return None


def storable_problem(value: Any, depth: int = 0) -> tuple[str, str] | None:
    """Why ``value`` (decoded JSON) cannot be kept: nested deeper than :data:`MAX_DEPTH`, or text
    (a value or a key) with NUL or a lone surrogate; None when it can."""
    if depth > MAX_DEPTH:
        return (f"嵌套超过 {MAX_DEPTH} 层", f"is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        return ("不能含 NUL 或无效的 Unicode", "must not contain NUL or invalid Unicode") if _UNSTORABLE.search(value) else None
    if isinstance(value, dict):
        for k, v in value.items():
            problem = storable_problem(k, depth + 1) or storable_problem(v, depth + 1)
            if problem:
                return problem
    elif isinstance(value, list):
        for v in value:
            problem = storable_problem(v, depth + 1)
            if problem:
                return problem
    elif isinstance(value, int) and not isinstance(value, bool) and not INT64_MIN <= value <= INT64_MAX:
        if not -1e300 < value < 1e300:
            return ("数字超出范围", "holds a number out of range")
    return None


def check_storable(data: Mapping[str, Any]) -> None:
    """422 naming each top-level field whose value cannot be kept (see :func:`storable_problem`)."""
    errors: dict[str, tuple[str, str]] = {}
    for key, value in data.items():
        problem = storable_problem(key) or storable_problem(value, 1)
        if problem:
            name = key if not _UNSTORABLE.search(key) else "(key)"
            errors[name[:64]] = problem
    if errors:
        raise invalid(errors)


def text_is_storable(value: str) -> bool:
    return _UNSTORABLE.search(value) is None


# How NUL and lone surrogates can appear in JSON text: as \u escapes (raw control bytes are not JSON).
_UNSTORABLE_ESCAPE: Final = re.compile(rb"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")


def may_hold_unstorable(raw: bytes) -> bool:
    """False when the JSON text ``raw`` surely holds no NUL and no lone surrogate (a quick scan)."""
    return _UNSTORABLE_ESCAPE.search(raw) is not None



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


# A JSON string (skipped whole, escapes and all) or a bracket.
_JSON_SYNTAX: Final = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


def json_depth(raw: bytes) -> int:
    """The deepest nesting of brackets in ``raw`` outside strings (a cheap pass, no parsing), to
    refuse a deep document before a recursive parser meets it."""
    if raw.count(b"[") + raw.count(b"{") <= MAX_DEPTH:
        return 0
    deepest = depth = 0
    for m in _JSON_SYNTAX.finditer(raw):
        token = m.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > MAX_DEPTH:
                    break
        elif token in (b"]", b"}"):
            depth -= 1
    return deepest
