"""The signalling messages of walls, parsed without an event loop."""

from __future__ import annotations

import pytest

from dispatchd.video.signalling import CHAIR_ONLY, WALL, ProtocolError, dumps, parse


def test_wall_messages_parse_and_bad_fields_are_named() -> None:
    """``layout``, ``page`` and ``wall_allow`` parse with their fields; a missing or mistyped field is a
    ``bad_field`` error in both languages; only ``wall_allow`` is the chair's alone."""
    assert parse(dumps("layout", tiles=9)).int_field("tiles") == 9
    assert parse(dumps("page", page=2)).data["page"] == 2
    assert parse(dumps("page_rotate", interval=10)).type == "page_rotate"
    assert parse(dumps("wall_allow", participant="p3", allowed=True)).data["allowed"] is True
    for raw in (
        dumps("layout", tiles="9"),
        dumps("layout"),
        dumps("page", page=True),
        dumps("wall_allow", participant="p3"),
    ):
        with pytest.raises(ProtocolError) as caught:
            parse(raw)
        assert caught.value.code == "bad_field" and caught.value.message_zh and caught.value.message_en
    assert "wall_allow" in CHAIR_ONLY and not WALL & CHAIR_ONLY
