"""The AsyncAPI 3.0 document of ``/ws/board`` and ``/ws/squad`` (served at ``/api/asyncapi.json``).

Message names here are the ``type`` values of :mod:`dispatchd.live.protocol`; a test checks that
both lists agree. ``docs/live.md`` explains the same in prose.
"""

from __future__ import annotations

from typing import Any

from dispatchd import __version__
from dispatchd.live.protocol import CLOSE_GOING_AWAY, CLOSE_NO_UNIT, CLOSE_RESUME, DEVICE_STATUSES

_STR: dict[str, Any] = {"type": "string"}
_INT: dict[str, Any] = {"type": "integer"}
_NUM: dict[str, Any] = {"type": "number"}
_TIME: dict[str, Any] = {"type": "string", "format": "date-time"}


def _obj(props: dict[str, Any], required: list[str], desc: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props, "required": required}
    if desc:
        schema["description"] = desc
    return schema


def _typed(name: str, props: dict[str, Any], required: list[str], desc: str) -> dict[str, Any]:
    return {
        "name": name,
        "title": name,
        "summary": desc,
        "contentType": "application/json",
        "payload": _obj({"type": {"const": name}, **props}, ["type", *required], desc),
    }


ORDER_SCHEMA = _obj(
    {
        "id": _INT,
        "incident_id": _INT,
        "unit_id": _INT,
        "instructions": _STR,
        "priority": {"enum": ["P1", "P2", "P3", "P4"]},
        "incident": _obj(
            {"id": _INT, "number": _STR, "category": _STR, "priority": _STR, "description": _STR,
             "place": {"type": "object"}},
            ["id", "number"],
        ),
        "place": _obj(
            {"location": {"type": ["object", "null"]}, "address": {"type": ["string", "null"]}}, []
        ),
        "state": {"enum": ["pending", "delivered", "accepted", "declined", "cancelled", "reassigned", "completed"]},
        "sends": _INT,
        "created_at": _TIME,
        "delivered_at": {"type": ["string", "null"], "format": "date-time"},
        "accepted_at": {"type": ["string", "null"], "format": "date-time"},
        "overdue": {"type": "boolean"},
        "replaced_by": {"type": ["integer", "null"]},
    },
    ["id", "incident_id", "unit_id", "state"],
    "an order as GET /api/v1/orders/{id} returns it (without receipts and timeline)",
)

# The one envelope of every change of every entity (dispatchd.store.changes.Change.envelope): on the
# board websocket, in the outbox and in the Redis feed.
ENVELOPE = _obj(
    {
        "entity": {
            "type": "string",
            "description": "incident, order, unit, call, callout, meeting, patrol, alert, positions, ...",
        },
        "id": {"type": "string", "description": "the entity's id"},
        "version": {"type": "integer", "description": "the entity's version after the change (0: unversioned)"},
        "action": {"type": "string", "description": "what happened: report, dispatch, accepted, status, ring, ..."},
        "org": {"type": ["string", "null"], "description": "the owning org unit"},
        "time": _TIME,
        "actor": {
            "type": ["object", "null"],
            "properties": {"id": {"type": ["integer", "null"]}, "name": _STR, "role": {"type": ["string", "null"]}},
        },
        "data": {"type": "object", "description": "the entity as the API shows it, after the change"},
        "detail": {"type": "object", "description": "what the action carried (a reason, a department, ...)"},
        "topic": {"type": "string", "description": "the same as entity, for clients written before the envelope"},
        "at": {"type": "string", "format": "date-time", "description": "the same as time, likewise"},
    },
    ["entity", "id", "version", "action", "org", "time", "data", "detail"],
    "One change of one entity.",
)

_STORES_DOWN = {
    "type": "array",
    "items": {"enum": ["postgres", "redis"]},
    "description": "the stores the serving instance sees down now: postgres — changes cannot be saved "
    "(requests answer 503, try again); redis — live positions and presence come from PostgreSQL and "
    "may lag",
}

BOARD_OUT = {
    "snapshot": _typed(
        "snapshot",
        {
            "seq": _INT,
            "at": _TIME,
            "org": _STR,
            "sections": {"type": "object", "description": "name -> data"},
            "stores_down": _STORES_DOWN,
        },
        ["seq", "sections"],
        "First message without since= (or when since= is too old): the jurisdiction as of seq. Sections: "
        "incidents (open cases, counters), units (status, position), calls, meetings, orders, alerts; "
        "a section that could not be read is null.",
    ),
    "resumed": _typed(
        "resumed",
        {"since": _INT},
        ["since"],
        "First message when since= was accepted: every change after since follows, then live changes.",
    ),
    "change": {
        "name": "change",
        "title": "change",
        "summary": "One change of one entity, in the one envelope every change has.",
        "contentType": "application/json",
        "payload": {
            "allOf": [
                _obj({"type": {"const": "change"}, "seq": _INT}, ["type", "seq"]),
                {"$ref": "#/components/schemas/envelope"},
            ],
            "description": "One outbox row. Seqs increase; each arrives once; a hole means a change outside "
            "the jurisdiction or a rolled-back transaction.",
        },
    },
    "heartbeat": _typed(
        "heartbeat",
        {
            "at": _TIME,
            "head": {"type": "integer", "description": "every change up to head was sent before"},
            "stores_down": _STORES_DOWN,
        },
        ["at", "head"],
        "Sent every [live] heartbeat_interval seconds, and at once when a store goes down or comes back.",
    ),
}

SQUAD_OUT = {
    "hello": _typed(
        "hello",
        {
            "at": _TIME,
            "user": {"type": "object"},
            "units": {"type": "array", "items": {"type": "object"}},
            "conn_id": _STR,
        },
        ["units"],
        "First message; again when the user's units change. ``at``: the server's time, by which the "
        "device dates its position fixes.",
    ),
    "order": _typed(
        "order",
        {"order": ORDER_SCHEMA},
        ["order"],
        "An order for one of the user's units: new, sent again (no receipt yet), or not yet acknowledged by "
        "this user when the device connects. Dedupe by order.id.",
    ),
    "order_update": _typed(
        "order_update", {"order": ORDER_SCHEMA}, ["order"], "A later change of an order (delivered, accepted, ...)."
    ),
    "unit_status": _typed(
        "unit_status", {"unit_id": _INT, "status": _STR}, ["unit_id", "status"], "The unit's status changed."
    ),
    "notice": _typed(
        "notice",
        {"notice": {"type": "object"}},
        ["notice"],
        "A notice to this person (an emergency plan's, or a warning's 叫应: docs/plans.md), new or changed; "
        "acknowledged with POST /api/v1/plan-notices/{id}/ack. Dedupe by notice.id.",
    ),
    "ok": _typed(
        "ok",
        {"for": _STR, "order_id": _INT, "state": _STR, "order": ORDER_SCHEMA},
        ["for"],
        "The device's message named in for was done.",
    ),
    "error": _typed(
        "error",
        {"for": _STR, "order_id": _INT, "code": _STR, "message": _STR},
        ["code", "message"],
        "The device's message was refused (code: invalid_json, unknown_type, missing, invalid, not_found, "
        "illegal_order_move, ...).",
    ),
    "pong": _typed("pong", {}, [], "Answer to ping."),
}

SQUAD_IN = {
    "ack": _typed("ack", {"order_id": _INT}, ["order_id"], "Receipt of an order (sets delivered_at)."),
    "accept": _typed("accept", {"order_id": _INT}, ["order_id"], "The unit takes the order."),
    "decline": _typed("decline", {"order_id": _INT, "reason": _STR}, ["order_id"], "The unit cannot go."),
    "status": _typed(
        "status",
        {"status": {"enum": list(DEVICE_STATUSES)}, "unit_id": _INT},
        ["status"],
        "The unit's status; unit_id only when the member is in several units. returning or available "
        "completes the unit's accepted orders.",
    ),
    "position": _typed(
        "position",
        {"lat": _NUM, "lon": _NUM, "accuracy": _NUM, "speed": _NUM, "heading": _NUM, "altitude": _NUM,
         "at": {"type": "number", "description": "ms since the epoch (browser geolocation)"}, "unit_id": _INT},
        ["lat", "lon"],
        "A WGS-84 fix from the browser's geolocation, handed to the position sink (source squad).",
    ),
    "ping": _typed("ping", {}, [], "Keep-alive; answered with pong."),
}


def _refs(prefix: str, names: list[str]) -> list[dict[str, str]]:
    return [{"$ref": f"#/channels/{prefix}/messages/{n}"} for n in names]


def asyncapi_document() -> dict[str, Any]:
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "dispatchd live websockets",
            "version": __version__,
            "description": (
                "Board: a snapshot (or resume), then changes in frames at most every [live] frame_interval; "
                f"close code {CLOSE_RESUME} means 'too slow: reconnect with since=<last seq>', "
                f"{CLOSE_GOING_AWAY} 'server stopping: reconnect (any instance) with since='. "
                f"Squad: orders with receipt, accept/decline, status, positions; close code {CLOSE_NO_UNIT} "
                "when the user is in no squad unit. Authenticate with ?token=<bearer token>."
            ),
        },
        "servers": {"dispatchd": {"host": "localhost:8080", "protocol": "ws", "description": "any instance"}},
        "components": {"schemas": {"envelope": ENVELOPE}},
        "channels": {
            "board": {
                "address": "/ws/board",
                "parameters": {},
                "bindings": {"ws": {"query": _obj({"token": _STR, "since": _INT}, ["token"])}},
                "messages": BOARD_OUT,
            },
            "squad": {
                "address": "/ws/squad",
                "bindings": {"ws": {"query": _obj({"token": _STR}, ["token"])}},
                "messages": {**SQUAD_OUT, **SQUAD_IN},
            },
        },
        "operations": {
            "boardReceive": {"action": "send", "channel": {"$ref": "#/channels/board"},
                             "messages": _refs("board", list(BOARD_OUT))},
            "squadReceive": {"action": "send", "channel": {"$ref": "#/channels/squad"},
                             "messages": _refs("squad", list(SQUAD_OUT))},
            "squadSend": {"action": "receive", "channel": {"$ref": "#/channels/squad"},
                          "messages": _refs("squad", list(SQUAD_IN))},
        },
    }
