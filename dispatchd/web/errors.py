"""JSON errors ``{"error": {"code", "message", "fields"?}}`` in zh-CN or English by Accept-Language.

Services raise the domain errors of :mod:`dispatchd.errors`; this is the one place that gives them
HTTP status codes (:func:`from_domain`). :class:`ApiError` is for what only HTTP knows (a bad
cursor, a missing token, a body too large).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from dispatchd.errors import (
    Conflict,
    DomainError,
    Forbidden,
    InsufficientStorage,
    Invalid,
    NotFound,
    Throttled,
    TooLarge,
    Unavailable,
    UnsupportedMedia,
)


def preferred_language(accept_language: str | None) -> str:
    """``en`` when the client ranks an English tag above any Chinese one, else ``zh-CN``."""
    if not accept_language:
        return "zh-CN"
    best: tuple[float, str] | None = None
    for position, part in enumerate(accept_language.split(",")):
        tag, _, params = part.strip().partition(";")
        tag = tag.strip().lower()
        q = 1.0
        if params.strip().startswith("q="):
            try:
                q = float(params.strip()[2:])
            except ValueError:
                q = 0.0
        if tag.startswith("en") or tag.startswith("zh"):
            score = (q, tag)
            if best is None or q > best[0] or (q == best[0] and position == 0):
                best = score
    if best is not None and best[1].startswith("en"):
        return "en"
    return "zh-CN"


def request_language(request: web.Request) -> str:
    lang = request.query.get("lang")
    if lang in ("en", "zh-CN"):
        return lang
    return preferred_language(request.headers.get("Accept-Language"))


class ApiError(Exception):
    """An error a client can act on: HTTP status, stable code, message in both languages."""

    def __init__(
        self,
        status: int,
        code: str,
        message_zh: str,
        message_en: str,
        fields: Mapping[str, tuple[str, str]] | None = None,
        extra: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message_en)
        self.status = status
        self.code = code
        self.message_zh = message_zh
        self.message_en = message_en
        self.fields = dict(fields or {})
        self.extra = dict(extra or {})
        self.headers = dict(headers or {})

    def body(self, lang: str) -> dict[str, Any]:
        en = lang == "en"
        err: dict[str, Any] = {"code": self.code, "message": self.message_en if en else self.message_zh}
        if self.fields:
            err["fields"] = {k: (v[1] if en else v[0]) for k, v in self.fields.items()}
        err.update(self.extra)
        return {"error": err}

    def response(self, lang: str) -> web.Response:
        return web.json_response(self.body(lang), status=self.status, headers=self.headers, dumps=_dumps)


def _dumps(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, default=str)


# The status code of each kind of domain error.
DOMAIN_STATUS: Final[Mapping[type[DomainError], int]] = {
    NotFound: 404,
    Forbidden: 403,
    Conflict: 409,
    Invalid: 422,
    TooLarge: 413,
    UnsupportedMedia: 415,
    InsufficientStorage: 507,
    Throttled: 429,
    Unavailable: 503,
}


def from_domain(exc: DomainError) -> ApiError:
    """The HTTP answer to a service's refusal (``Retry-After`` where the client should wait)."""
    status = next((code for kind, code in DOMAIN_STATUS.items() if isinstance(exc, kind)), 400)
    headers: dict[str, str] = {}
    if isinstance(exc, Throttled | Unavailable):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    return ApiError(
        status, exc.code, exc.message_zh, exc.message_en, fields=exc.fields, extra=exc.extra, headers=headers
    )


# Stock errors of the HTTP layer.


def unauthorized() -> ApiError:
    return ApiError(
        401,
        "unauthorized",
        "需要登录：请提供有效的访问令牌",
        "authentication required: a valid bearer token",
        headers={"WWW-Authenticate": 'Bearer realm="dispatchd"'},
    )


def bad_request(zh: str, en: str, code: str = "bad_request") -> ApiError:
    return ApiError(400, code, zh, en)


_STATUS_TEXT: dict[int, tuple[str, str, str]] = {
    400: ("bad_request", "请求无效", "bad request"),
    401: ("unauthorized", "需要登录", "authentication required"),
    403: ("forbidden", "禁止访问", "forbidden"),
    404: ("not_found", "没有这个地址", "no such route"),
    405: ("method_not_allowed", "不支持此方法", "method not allowed"),
    413: ("payload_too_large", "请求体过大", "request body too large"),
    415: ("unsupported_media_type", "不支持的内容类型", "unsupported media type"),
    429: ("too_many_requests", "请求过于频繁", "too many requests"),
}


def from_http_exception(exc: web.HTTPException) -> ApiError:
    code, zh, en = _STATUS_TEXT.get(exc.status, ("error", "请求失败", exc.reason or "error"))
    # RFC 9110 §15.5.6: a 405 says which methods the resource takes.
    kept = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
    return ApiError(exc.status, code, zh, en, headers=kept)
