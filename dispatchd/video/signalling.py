"""The meeting signalling protocol over ``/ws/meet/{id}?token=…``: pure parse and serialise.

Every message is one JSON object with a ``type``. The participant always makes the SDP offer and
the server answers, so offers never cross (no glare). See docs/video.md for the full exchange.

Participant → server: ``offer`` {sdp}, ``candidate`` {candidate, sdpMid, sdpMLineIndex} (trickle ICE;
``candidate`` null or empty at the end), ``hand`` {raised}, ``leave``; the chair also sends
``rollcall`` {participant|null}, ``rotate`` {participants?, interval?}, ``rotate_stop``,
``mute`` {participant, muted}, ``record`` {on}, ``end``, ``wall_allow`` {participant, allowed}. The
chair and the sites it allowed lay out their own wall: ``layout`` {tiles: 0|1|4|9|16}, ``page``
{page}, ``page_rotate`` {interval?}, ``page_rotate_stop``.

Server → participant: ``welcome``, ``answer`` {sdp}, ``roster``, ``screen``, ``renegotiate``
(make a new offer: what you receive needs other slots), ``muted`` {muted}, ``recording`` {on},
``error`` {code, message}, ``ended``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from dispatchd.validate import MAX_DEPTH, json_depth

MAX_MESSAGE = 256 * 1024  # an SDP with many candidates stays well below this

CHAIR_ONLY = frozenset({"rollcall", "rotate", "rotate_stop", "mute", "record", "end", "wall_allow"})
WALL = frozenset({"layout", "page", "page_rotate", "page_rotate_stop"})
_TYPES = frozenset({"offer", "candidate", "hand", "leave"}) | CHAIR_ONLY | WALL


class ProtocolError(ValueError):
    def __init__(self, code: str, message_zh: str, message_en: str) -> None:
        super().__init__(message_en)
        self.code = code
        self.message_zh = message_zh
        self.message_en = message_en


@dataclass(frozen=True, slots=True)
class Message:
    type: str
    data: dict[str, Any]

    def str_field(self, name: str, *, optional: bool = False, max_length: int = 200_000) -> str | None:
        value = self.data.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, str) or len(value) > max_length:
            raise ProtocolError("bad_field", f"字段 {name} 应为字符串", f"field {name} must be a string")
        return value

    def int_field(self, name: str) -> int:
        value = self.data.get(name)
        if not isinstance(value, int) or isinstance(value, bool):
            raise ProtocolError("bad_field", f"字段 {name} 应为整数", f"field {name} must be an integer")
        return value


def parse(raw: str | bytes) -> Message:
    """One client message; raises :class:`ProtocolError` naming what is wrong."""
    if len(raw) > MAX_MESSAGE:
        raise ProtocolError("too_large", "消息过大", "message too large")
    if json_depth(raw if isinstance(raw, bytes) else raw.encode("utf-8", "surrogatepass")) > MAX_DEPTH:
        raise ProtocolError("too_deep", f"消息嵌套超过 {MAX_DEPTH} 层", f"message nested deeper than {MAX_DEPTH} levels")
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise ProtocolError("bad_json", "消息不是有效的 JSON", "message is not valid JSON") from None
    if not isinstance(data, dict):
        raise ProtocolError("bad_json", "消息应为 JSON 对象", "message must be a JSON object")
    kind = data.get("type")
    if kind not in _TYPES:
        raise ProtocolError("unknown_type", f"未知消息类型：{kind}", f"unknown message type: {kind}")
    msg = Message(kind, data)
    if kind == "offer":
        msg.str_field("sdp")
    elif kind == "candidate":
        cand = data.get("candidate")
        if cand is not None and not isinstance(cand, str | dict):
            raise ProtocolError("bad_field", "candidate 格式错误", "candidate must be a string or object")
    elif kind in ("hand", "mute") and not isinstance(data.get("raised" if kind == "hand" else "muted"), bool):
        raise ProtocolError("bad_field", "缺少布尔字段", "a boolean field is missing")
    elif kind == "record" and not isinstance(data.get("on"), bool):
        raise ProtocolError("bad_field", "缺少布尔字段 on", "boolean field on is missing")
    elif kind == "wall_allow" and not isinstance(data.get("allowed"), bool):
        raise ProtocolError("bad_field", "缺少布尔字段 allowed", "boolean field allowed is missing")
    elif kind in ("layout", "page"):
        msg.int_field("tiles" if kind == "layout" else "page")
    return msg


def candidate_fields(msg: Message) -> tuple[str, str | None, int | None] | None:
    """(candidate line, sdpMid, sdpMLineIndex) of a trickled candidate; None at end-of-candidates.

    Accepts the browser's ``RTCIceCandidateInit`` either nested (``{"candidate": {...}}``) or flat.
    """
    cand: Any = msg.data.get("candidate")
    holder: dict[str, Any] = msg.data
    if isinstance(cand, dict):
        holder = cand
        cand = cand.get("candidate")
    if not cand:
        return None
    line = cand[len("candidate:") :] if cand.startswith("candidate:") else cand
    mid = holder.get("sdpMid")
    index = holder.get("sdpMLineIndex")
    return (
        line,
        mid if isinstance(mid, str) else None,
        index if isinstance(index, int) and not isinstance(index, bool) else None,
    )


def dumps(kind: str, **fields: Any) -> str:
    return json.dumps({"type": kind, **fields}, ensure_ascii=False, default=str)


def error(code: str, message: str) -> str:
    return dumps("error", code=code, message=message)
