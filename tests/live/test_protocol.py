"""The live wire formats, pure: websocket frames, the feed envelope, squad messages, the AsyncAPI file."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from dispatchd.live import protocol as p
from dispatchd.live.asyncapi import BOARD_OUT, SQUAD_IN, SQUAD_OUT, asyncapi_document
from dispatchd.store.changes import SYSTEM, Change


@pytest.mark.parametrize("size", [0, 1, 125, 126, 65535, 65536, 300000])
def test_text_frames_round_trip_at_every_length_class(size: int) -> None:
    """Frames of the three RFC 6455 length encodings parse back to the same payload, unmasked."""
    payload = ("中" * (size // 3) + "x" * (size % 3)).encode()[:size]
    frame = p.text_frame(payload)
    frames, rest = p.parse_frames(frame + frame[:1])
    assert frames == [(0x1, payload)] and rest == frame[:1]
    assert frame[0] == 0x81 and not frame[1] & 0x80


def test_concatenated_frames_are_separate_messages() -> None:
    """A frame blob of several changes is several websocket messages, each its own JSON with type and seq."""
    rows = [p.ChangeRow(n, "incident", str(n), ("330000", "330381"), "2026-05-03T08:00:00+00:00", {"n": n})
            for n in (4, 5, 9)]
    blob = b"".join(p.text_frame(p.dumps(p.change_message(r)).encode()) for r in rows)
    frames, rest = p.parse_frames(blob)
    messages = [json.loads(payload) for _, payload in frames]
    assert rest == b"" and [(m["type"], m["seq"], m["org"]) for m in messages] == [
        ("change", 4, "330381"), ("change", 5, "330381"), ("change", 9, "330381")
    ]


def test_close_frame_carries_the_code() -> None:
    """The resume close frame parses to opcode 8 with code 4001."""
    frames, _ = p.parse_frames(p.close_frame(p.CLOSE_RESUME, "resume"))
    assert frames[0][0] == 0x8 and int.from_bytes(frames[0][1][:2], "big") == 4001


def test_feed_envelope_round_trip_embeds_payload_text() -> None:
    """A relay batch keeps prev, every row and the payload exactly as PostgreSQL gave it."""
    at = datetime(2026, 5, 3, 8, tzinfo=UTC)
    text = p.feed_envelope(7, [p.row_json(8, "order", "12", ["330000", "330381"], at, '{"event": "created"}')])
    prev, rows = p.parse_envelope(text)
    assert prev == 7 and rows == [p.ChangeRow(8, "order", "12", ("330000", "330381"), at.isoformat(),
                                              {"event": "created"})]
    assert rows[0].visible_to("330000") and not rows[0].visible_to("330382")
    assert p.parse_envelope(p.feed_envelope(8, [])) == (8, [])


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("nope", "invalid_json"),
        ("[1]", "invalid_json"),
        ('{"type": "fly"}', "unknown_type"),
        ('{"type": "ack"}', "missing"),
        ('{"type": "position", "lat": 1}', "missing"),
        ("{" + " " * 20000 + "}", "too_large"),
    ],
)
def test_bad_squad_messages_are_named(text: str, code: str) -> None:
    """Every malformed device message is refused with a code saying why."""
    with pytest.raises(p.BadMessage) as err:
        p.parse_squad_message(text)
    assert err.value.code == code


def test_squad_fields_are_checked() -> None:
    """Ids must be integers and numbers must be in range."""
    cmd = p.parse_squad_message('{"type": "ack", "order_id": "12"}')
    assert cmd.int_field("order_id") == 12
    for bad in ('{"type": "ack", "order_id": true}', '{"type": "ack", "order_id": "x"}'):
        with pytest.raises(p.BadMessage):
            p.parse_squad_message(bad).int_field("order_id")
    pos = p.parse_squad_message('{"type": "position", "lat": 27.7, "lon": 120.6}')
    assert pos.float_field("lat", -90, 90) == 27.7 and pos.float_field("speed", 0, 1, required=False) is None
    with pytest.raises(p.BadMessage):
        pos.float_field("lon", -90, 90)


def test_asyncapi_documents_every_message_type() -> None:
    """The AsyncAPI document names exactly the message types the protocol sends and accepts."""
    doc = asyncapi_document()
    assert doc["asyncapi"].startswith("3.")
    assert set(SQUAD_IN) == set(p.SQUAD_IN)
    assert set(SQUAD_OUT) == set(p.SQUAD_OUT)
    assert set(BOARD_OUT) == {"snapshot", "resumed", "change", "heartbeat"}
    board = doc["channels"]["board"]["messages"]
    assert board["change"]["payload"]["allOf"][1] == {"$ref": "#/components/schemas/envelope"}
    assert board["snapshot"]["payload"]["required"] == ["type", "seq", "sections"]
    json.dumps(doc)


def test_every_change_has_the_one_envelope_the_document_describes() -> None:
    """A recorded change's envelope and its board message carry every field the AsyncAPI envelope requires."""
    envelope = asyncapi_document()["components"]["schemas"]["envelope"]
    at = datetime(2026, 5, 3, 8, 0, tzinfo=UTC)
    change = Change(
        "order", 7, 3, "accepted", ["330381", "330381116"], {"id": 7, "state": "accepted"}, SYSTEM, at,
        from_state="delivered", to_state="accepted", detail={"by": "squad"},
    )
    body = change.envelope()
    assert set(envelope["required"]) <= set(body)
    assert body["org"] == "330381116" and body["id"] == "7" and body["data"]["state"] == "accepted"
    row = p.ChangeRow(12, "order", "7", ("330381", "330381116"), at.isoformat(), json.loads(json.dumps(body)))
    message = p.change_message(row)
    assert {"type", "seq", *envelope["required"]} <= set(message)
    assert (message["entity"], message["action"], message["version"], message["seq"]) == ("order", "accepted", 3, 12)
    assert message["detail"] == {"by": "squad"} and message["actor"] == {"id": None, "name": "system", "role": None}
