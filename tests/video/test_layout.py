"""The video network's screen as pure state: chair, roll call, rotation, mute, hands."""

from __future__ import annotations

import pytest

from dispatchd.video.layout import LARGE, MEDIUM, SMALL, LayoutError, Screen, Shown


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


def _county(sites: int) -> Screen:
    s = Screen(slots=2)
    s.order = ["chair"] + [f"s{i}" for i in range(1, sites + 1)]
    s.join("chair", chair=True)
    for i in range(sites, 0, -1):  # joined in reverse: the wall still follows the roll order
        s.join(f"s{i}")
    return s


def test_the_chairs_nine_way_wall_shows_sites_in_roll_order_and_the_speaker_large() -> None:
    """With ten sites and s4 speaking, the chair's 3×3 wall shows the other nine in roll order as small
    tiles and s4 large; a 4-way wall pages through them, medium-sized; everyone else still gets two."""
    s = _county(10)
    s.roll_call("s4")
    s.set_layout("chair", 9)
    view = s.view_for("chair")
    assert view[0] == Shown("s4", LARGE)
    assert [v.participant for v in view[1:]] == ["s1", "s2", "s3", "s5", "s6", "s7", "s8", "s9", "s10"]
    assert {v.size for v in view[1:]} == {SMALL}
    assert s.heard_by("chair") == ["s4"]  # tiles are seen, not heard
    assert s.shown_for("s1") == ["chair", "s4"]
    s.set_layout("chair", 4)
    assert s.pages("chair") == 3
    s.turn_page("chair", 2)
    assert [v.participant for v in s.view_for("chair")[1:]] == ["s10"]
    assert s.view_for("chair")[1].size == MEDIUM
    s.set_layout("chair", 1)
    assert s.view_for("chair")[1].size == LARGE  # a one-tile wall is a full-screen view


def test_wall_pages_rotate_and_only_allowed_sites_get_a_wall() -> None:
    """轮巡 of a wall turns its pages every interval; a site may lay out a wall only once the chair allows it."""
    s = _county(10)
    s.set_layout("chair", 4)
    s.rotate_pages("chair", 10, now=0.0)
    assert not s.tick(5.0)
    assert s.tick(10.0) and s.walls["chair"].page == 1
    assert s.tick(20.0) and s.tick(30.0) and s.walls["chair"].page == 0  # three pages, around again
    with pytest.raises(LayoutError):
        s.set_layout("s2", 4)
    s.allow_wall("s2", True)
    s.set_layout("s2", 16)
    assert "s2" not in s.shown_for("s2") and len(s.shown_for("s2")) == 10  # the chair and nine sites
    s.allow_wall("s2", False)
    assert s.shown_for("s2") == ["chair"]
    with pytest.raises(LayoutError):
        s.set_layout("chair", 6)
