"""Domain errors: what a service says when it refuses, in both languages, without an HTTP status.

Services raise these; only the HTTP layer (:mod:`dispatchd.web.errors`) turns them into status
codes (404, 403, 409, 422, 429, 503), and the websocket and device edges into their own answers.
Every error carries a stable ``code`` a client can act on and a message in Chinese and English.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class DomainError(Exception):
    """A refusal a client can act on: a stable code and a message in zh-CN and English."""

    default_code = "error"

    def __init__(
        self,
        message_zh: str,
        message_en: str,
        *,
        code: str | None = None,
        fields: Mapping[str, tuple[str, str]] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message_en)
        self.code = code or self.default_code
        self.message_zh = message_zh
        self.message_en = message_en
        self.fields = dict(fields or {})
        self.extra = dict(extra or {})

    def message(self, lang: str) -> str:
        return self.message_en if lang == "en" else self.message_zh


class NotFound(DomainError):
    """The thing does not exist, or the caller may not know that it does."""

    default_code = "not_found"


class Forbidden(DomainError):
    """The caller's role or jurisdiction does not allow this."""

    default_code = "forbidden"


class Conflict(DomainError):
    """The thing is not in a state that allows this (a stale version, a closed case, a duplicate)."""

    default_code = "conflict"


class Invalid(DomainError):
    """The input is wrong; ``fields`` names each bad field."""

    default_code = "invalid"


class TooLarge(DomainError):
    """The input is larger than allowed (a photo, a body)."""

    default_code = "payload_too_large"


class UnsupportedMedia(DomainError):
    """The input is of a type that is not taken (a photo that is no JPEG, PNG or WebP)."""

    default_code = "unsupported_media_type"


class InsufficientStorage(DomainError):
    """The disk is too full to keep this: text is still taken, files are not."""

    default_code = "insufficient_storage"


class Throttled(DomainError):
    """Too much, too fast: try again after ``retry_after`` seconds."""

    default_code = "too_many_requests"

    def __init__(self, message_zh: str, message_en: str, *, retry_after: float, code: str | None = None) -> None:
        super().__init__(message_zh, message_en, code=code)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """A store or a peer the answer depends on is down or hung: try again after ``retry_after``."""

    default_code = "unavailable"

    def __init__(
        self,
        message_zh: str,
        message_en: str,
        *,
        retry_after: float = 5.0,
        code: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(message_zh, message_en, code=code, extra=extra)
        self.retry_after = retry_after


def not_found(what_zh: str = "资源", what_en: str = "resource") -> NotFound:
    return NotFound(f"{what_zh}不存在", f"{what_en} not found")


def forbidden(zh: str = "无权执行此操作", en: str = "not allowed for your role or jurisdiction") -> Forbidden:
    return Forbidden(zh, en)


def conflict(zh: str, en: str, code: str = "conflict", extra: Mapping[str, Any] | None = None) -> Conflict:
    return Conflict(zh, en, code=code, extra=extra)


def invalid(errors: Mapping[str, tuple[str, str]]) -> Invalid:
    """422 naming every bad field: ``{name: (message_zh, message_en)}``."""
    names = ", ".join(errors)
    return Invalid(f"字段有误：{names}", f"invalid fields: {names}", fields=errors)
