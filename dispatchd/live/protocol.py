"""The live wire formats, pure: board and squad messages, the Redis feed envelope, websocket frames.

Nothing here does I/O or reads the clock. The board hub encodes each change once per instance
(:func:`change_message`), frames it once (:func:`text_frame`, RFC 6455 §5.2: a server never masks,
so the same bytes are valid on every connection) and concatenates the frames visible to a
jurisdiction into one write per client and tick.

Board messages (server → client), each a JSON text message with ``type``:

- ``snapshot``: ``{"type": "snapshot", "seq": S, "at", "org", "sections": {...}}``, current to ``S``;
- ``resumed``: ``{"type": "resumed", "since": N}``, the changes after ``N`` follow;
- ``change``: one outbox row: ``{"type": "change", "seq"}`` and the one envelope every change of
  every entity has (:meth:`dispatchd.store.changes.Change.envelope`): ``entity, id, version, action,
  org, time, actor, data, detail`` (``topic`` and ``at`` repeat ``entity`` and ``time`` for clients
  written before the envelope);
- ``heartbeat``: ``{"type": "heartbeat", "at", "head"}``: every change up to ``head`` was sent.

Squad messages are described in :data:`SQUAD_IN` and :data:`SQUAD_OUT`; ``docs/live.md`` has both.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from dispatchd.validate import INT64_MAX, INT64_MIN, MAX_DEPTH, json_depth, storable_problem

# Close codes (RFC 6455 §7.4.2: 4000–4999 are for applications).
CLOSE_GOING_AWAY = 1001  # the instance stops: reconnect (to any instance) with since=
CLOSE_RESUME = 4001  # too slow, the queue overflowed: reconnect with since=<last seq received>
CLOSE_NO_UNIT = 4403  # /ws/squad: the user is a member of no squad unit
CLOSE_BAD_MESSAGE = 4400  # the client sent something that is not a message of this protocol

_LEN1 = struct.Struct("!BB")
_LEN2 = struct.Struct("!BBH")
_LEN3 = struct.Struct("!BBQ")
_FIN_TEXT = 0x81
_FIN_CLOSE = 0x88


def dumps(obj: Any) -> str:
    """Compact JSON, UTF-8 kept readable, datetimes as ISO 8601."""
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=_default)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def text_frame(payload: bytes) -> bytes:
    """One unmasked, final text frame carrying ``payload`` (RFC 6455 §5.2)."""
    n = len(payload)
    if n < 126:
        return _LEN1.pack(_FIN_TEXT, n) + payload
    if n < 65536:
        return _LEN2.pack(_FIN_TEXT, 126, n) + payload
    return _LEN3.pack(_FIN_TEXT, 127, n) + payload


def close_frame(code: int, reason: str = "") -> bytes:
    """An unmasked close frame (RFC 6455 §5.5.1); the reason is cut to fit 123 bytes."""
    body = struct.pack("!H", code) + reason.encode()[:123]
    return _LEN1.pack(_FIN_CLOSE, len(body)) + body


def parse_frames(data: bytes) -> tuple[list[tuple[int, bytes]], bytes]:
    """Split unmasked frames off ``data``: ([(opcode, payload)], rest). For tests and benchmarks."""
    out: list[tuple[int, bytes]] = []
    pos = 0
    while len(data) - pos >= 2:
        b0, b1 = data[pos], data[pos + 1]
        n = b1 & 0x7F
        head = 2
        if n == 126:
            if len(data) - pos < 4:
                break
            n = struct.unpack_from("!H", data, pos + 2)[0]
            head = 4
        elif n == 127:
            if len(data) - pos < 10:
                break
            n = struct.unpack_from("!Q", data, pos + 2)[0]
            head = 10
        if b1 & 0x80:
            raise ValueError("a server frame must not be masked")
        if len(data) - pos < head + n:
            break
        out.append((b0 & 0x0F, data[pos + head : pos + head + n]))
        pos += head + n
    return out, data[pos:]


# -- a websocket, as the hubs need it ----------------------------------------------------------


class Socket(Protocol):
    """The server end of a websocket, whichever framework serves it (aiohttp's fits)."""

    @property
    def closed(self) -> bool: ...

    @property
    def close_code(self) -> int | None: ...

    async def send_str(self, data: str, compress: int | None = None) -> None: ...

    async def close(self, *, code: int = 1000, message: bytes = b"", drain: bool = True) -> bool: ...


# -- the change feed ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChangeRow:
    """One outbox row as the feed carries it: its routing columns and its envelope (``data``)."""

    seq: int
    topic: str  # the entity kind
    entity_id: str
    org_path: tuple[str, ...]
    at: str  # ISO 8601 commit-side time of the row (outbox.created_at)
    data: Any  # the envelope: entity, id, version, action, org, time, actor, data, detail

    @property
    def action(self) -> str | None:
        env = self.data if isinstance(self.data, dict) else {}
        action = env.get("action")
        return action if isinstance(action, str) else None

    @property
    def entity(self) -> dict[str, Any]:
        """The entity as clients see it after the change (the envelope's ``data``)."""
        env = self.data if isinstance(self.data, dict) else {}
        body = env.get("data")
        return body if isinstance(body, dict) else {}

    @property
    def detail(self) -> dict[str, Any]:
        env = self.data if isinstance(self.data, dict) else {}
        detail = env.get("detail")
        return detail if isinstance(detail, dict) else {}

    @property
    def org(self) -> str:
        """The owning unit (last element of the path)."""
        return self.org_path[-1] if self.org_path else ""

    def visible_to(self, home_unit: str) -> bool:
        """A viewer sees a change of a unit in the subtree of their home unit."""
        return home_unit in self.org_path

    def as_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "topic": self.topic,
            "id": self.entity_id,
            "org_path": list(self.org_path),
            "at": self.at,
            "data": self.data,
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ChangeRow:
        return cls(
            seq=int(obj["seq"]),
            topic=str(obj["topic"]),
            entity_id=str(obj["id"]),
            org_path=tuple(obj["org_path"]),  # codes are JSON strings (row_json writes them)
            at=str(obj["at"]),
            data=obj.get("data"),
        )


def feed_envelope(prev: int, rows: Sequence[str]) -> str:
    """The Redis message of a relay batch: ``rows`` are JSON texts of :meth:`ChangeRow.as_json`.

    ``prev`` is the seq of the last row the relay published before this batch, so that a
    subscriber can tell a lost message from a hole in the sequence (a rolled-back transaction
    leaves one): if ``prev`` is beyond what it has, it missed rows and reads them from PostgreSQL.
    A batch without rows is the relay's heartbeat.
    """
    return '{"prev":' + str(int(prev)) + ',"rows":[' + ",".join(rows) + "]}"


def row_json(
    seq: int, topic: str, entity_id: str, org_path: Sequence[str], at: datetime, payload_json: str
) -> str:
    """JSON text of one row, embedding the payload as PostgreSQL returned it (``payload::text``)."""
    return (
        '{"seq":'
        + str(int(seq))
        + ',"topic":'
        + dumps(topic)
        + ',"id":'
        + dumps(entity_id)
        + ',"org_path":'
        + dumps(list(org_path))
        + ',"at":'
        + dumps(at.isoformat())
        + ',"data":'
        + payload_json
        + "}"
    )


def parse_envelope(text: str | bytes) -> tuple[int, list[ChangeRow]]:
    obj = json.loads(text)
    return int(obj["prev"]), [ChangeRow.from_json(r) for r in obj["rows"]]


# -- board messages ----------------------------------------------------------------------------


def change_message(row: ChangeRow) -> dict[str, Any]:
    """The board message of a change: its seq and its envelope."""
    envelope = row.data if isinstance(row.data, dict) else {}
    return {
        "type": "change",
        "seq": row.seq,
        "entity": envelope.get("entity", row.topic),
        "id": row.entity_id,
        "version": envelope.get("version", 0),
        "action": envelope.get("action"),
        "org": envelope.get("org") or row.org,
        "time": envelope.get("time", row.at),
        "actor": envelope.get("actor"),
        "data": envelope.get("data"),
        "detail": envelope.get("detail") or {},
        "topic": row.topic,
        "at": envelope.get("time", row.at),
    }


def snapshot_message(
    seq: int, at: datetime, org: str, sections: Mapping[str, Any], stores_down: Sequence[str] = ()
) -> dict[str, Any]:
    """``stores_down``: the stores the serving instance sees down (the board says what that means)."""
    return {
        "type": "snapshot",
        "seq": seq,
        "at": at.isoformat(),
        "org": org,
        "sections": dict(sections),
        "stores_down": list(stores_down),
    }


def resumed_message(since: int) -> dict[str, Any]:
    return {"type": "resumed", "since": since}


def heartbeat_message(at: datetime, head: int, stores_down: Sequence[str] = ()) -> dict[str, Any]:
    return {"type": "heartbeat", "at": at.isoformat(), "head": head, "stores_down": list(stores_down)}


# -- squad messages ----------------------------------------------------------------------------

# What a device may send on /ws/squad, with the fields each needs.
SQUAD_IN: Mapping[str, tuple[str, ...]] = {
    "ack": ("order_id",),
    "accept": ("order_id",),
    "decline": ("order_id",),  # optional "reason"
    "status": ("status",),  # optional "unit_id" when the member is in several units
    "position": ("lat", "lon"),  # optional accuracy, speed (km/h), heading, altitude, at
    "ping": (),
}
# What the server sends on /ws/squad.
SQUAD_OUT = ("hello", "order", "order_update", "unit_status", "notice", "ok", "error", "pong")

DEVICE_STATUSES = ("available", "en_route", "on_scene", "returning", "off_duty")


class BadMessage(ValueError):
    """A device message that is not one of :data:`SQUAD_IN`, or lacks a field; ``code`` names why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class SquadCommand:
    type: str
    fields: Mapping[str, Any]

    def int_field(self, name: str) -> int:
        value = self.fields.get(name)
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise BadMessage("invalid", f"{name} must be an integer")
        try:
            number = int(value)
        except ValueError:
            raise BadMessage("invalid", f"{name} must be an integer") from None
        if not INT64_MIN <= number <= INT64_MAX:
            raise BadMessage("invalid", f"{name} is out of range (a 64-bit integer)")
        return number

    def float_field(self, name: str, lo: float, hi: float, *, required: bool = True) -> float | None:
        value = self.fields.get(name)
        if value is None and not required:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadMessage("invalid", f"{name} must be a number")
        if isinstance(value, int) and not -1e300 < value < 1e300:
            raise BadMessage("invalid", f"{name} must be between {lo:g} and {hi:g}")
        if not lo <= float(value) <= hi:
            raise BadMessage("invalid", f"{name} must be between {lo:g} and {hi:g}")
        return float(value)


def parse_squad_message(text: str) -> SquadCommand:
    """Parse one device message; raise :class:`BadMessage` when it is not one of :data:`SQUAD_IN`."""
    if len(text) > 16384:
        raise BadMessage("too_large", "a message is at most 16 KiB")
    raw = text.encode("utf-8", "surrogatepass")
    if json_depth(raw) > MAX_DEPTH:
        raise BadMessage("too_deep", f"a message is nested at most {MAX_DEPTH} levels")
    try:
        obj = json.loads(text)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise BadMessage("invalid_json", "not JSON") from None
    if not isinstance(obj, dict):
        raise BadMessage("invalid_json", "a message is a JSON object")
    if storable_problem(obj) is not None:
        raise BadMessage("invalid", "a message must not hold NUL or invalid Unicode")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in SQUAD_IN:
        raise BadMessage("unknown_type", "type must be one of " + ", ".join(SQUAD_IN))
    missing = [f for f in SQUAD_IN[kind] if obj.get(f) is None]
    if missing:
        raise BadMessage("missing", f"{kind} needs {', '.join(missing)}")
    return SquadCommand(kind, obj)


def order_message(order: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "order", "order": dict(order)}


def order_update_message(order: Mapping[str, Any]) -> dict[str, Any]:
    return {"type": "order_update", "order": dict(order)}
