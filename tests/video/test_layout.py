"""The video network's screen as pure state: chair, roll call, rotation, mute, hands."""

from __future__ import annotations

import pytest

from dispatchd.video.layout import LayoutError, Screen


def _screen() -> Screen:
    s = Screen(slots=2)
    s.join("chair", chair=True)
    for pid in ("a", "b", "c"):
        s.join(pid)
    return s


def test_everyone_sees_the_chair_and_the_speaker() -> None:
    """Roll call puts a site on screen: others see chair and speaker, the speaker sees the chair."""
    s = _screen()
    assert s.shown_for("a") == ["chair"] and s.shown_for("chair") == []
    s.roll_call("b")
    assert s.shown_for("a") == ["chair", "b"]
    assert s.shown_for("b") == ["chair"]
    assert s.shown_for("chair") == ["b"]
    assert s.heard_by("a") == ["chair", "b"]


def test_rotation_cycles_the_speaker_when_due() -> None:
    """轮巡 moves the speaker slot through the sites every interval, and roll call stops it."""
    s = _screen()
    s.rotate(None, 10, now=100.0)
    assert s.speaker == "a"
    assert not s.tick(105.0)
    assert s.tick(110.0) and s.speaker == "b"
    assert s.tick(120.0) and s.speaker == "c"
    assert s.tick(130.0) and s.speaker == "a"
    s.roll_call("c")
    assert s.rotation is None and s.speaker == "c"


def test_mute_hands_and_leaving() -> None:
    """A muted site is seen but not heard; the chair sees the first raised hand; a leaving speaker clears."""
    s = _screen()
    s.roll_call("a")
    s.mute("a", True)
    assert s.shown_for("b") == ["chair", "a"] and s.heard_by("b") == ["chair"]
    s.raise_hand("c", True)
    assert s.shown_for("chair") == ["a", "c"]
    s.leave("a")
    assert s.speaker is None and s.shown_for("b") == ["chair"]
    with pytest.raises(LayoutError):
        s.roll_call("nobody")
