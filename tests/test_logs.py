"""Logs: JSON lines with timestamp, level and context, personal data masked."""

from __future__ import annotations

import io
import json

import structlog

from dispatchd.logs import configure_logging, mask_number, mask_text


def test_mask_text_masks_mobile_and_id_card() -> None:
    """Mobile numbers and ID-card numbers inside free text are masked, other numbers kept."""
    out = mask_text("来电 13812345678 身份证 33038119800101123X 案件 RA20260503-0007 门牌 1234")
    assert "13812345678" not in out and "138****5678" in out
    assert "33038119800101123X" not in out and "330381********123X" in out
    assert "RA20260503-0007" in out and "1234" in out
    assert mask_text("+8613912345678") == "+86139****5678"


def test_mask_number() -> None:
    """A value known to be a phone number keeps only its ends."""
    assert mask_number("057765891234") == "057*****1234"
    assert mask_number("967999") == "**7999"


def test_json_lines_with_context_and_masking() -> None:
    """Each line is JSON with ISO time, level, event, bound request id; secrets and phones masked."""
    buf = io.StringIO()
    configure_logging("info", "json", stream=buf)
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(request_id="abc123")
    log = structlog.get_logger("t")
    log.info("call_received", caller="13812345678", password="hunter2", note="回拨 13900001111")
    log.debug("hidden")
    structlog.contextvars.clear_contextvars()
    lines = buf.getvalue().strip().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["event"] == "call_received" and rec["level"] == "info"
    assert rec["request_id"] == "abc123"
    assert rec["timestamp"].endswith("Z") and "T" in rec["timestamp"]
    assert rec["caller"] == "138****5678"
    assert rec["password"] == "***"
    assert "13900001111" not in rec["note"]
