"""The greeting, menu and queue announcements as a state machine: no event loop, time passed in."""

from __future__ import annotations

from types import MappingProxyType

from dispatchd.channels.hotline.voice.ivr import AskPosition, Ivr, Play, Route
from dispatchd.domain.hotlines import Menu, Prompt

MENU = Menu(Prompt(text="治安请按1，调解请按2"), MappingProxyType({"1": "police", "2": "justice"}))


def machine(menu: Menu | None = MENU) -> Ivr:
    return Ivr(
        greeting=True,
        menu=menu,
        queue_prompt=True,
        announce_position=True,
        menu_timeout=5,
        announce_interval=30,
    )


def test_greeting_menu_key_then_queue_with_position_announcements() -> None:
    """Greeting and menu, a listed key routes and queues with music, then a position every 30 s."""
    ivr = machine()
    assert ivr.start(0) == [Play(("greeting", "menu"), music=False)]
    assert ivr.finished("greeting", 3) == [] and ivr.next_deadline() is None
    ivr.finished("menu", 6)
    assert ivr.next_deadline() == 11
    assert ivr.key("2", 7) == [Route("2", "justice"), Play(("queue",), music=True)]
    assert ivr.key("1", 8) == []  # the menu is over
    assert ivr.tick(36) == [] and ivr.tick(37) == [AskPosition()]
    assert ivr.position(3) == [Play(("position",), music=True, position=3)]
    assert ivr.position(0) == []
    assert ivr.next_deadline() == 67


def test_menu_repeats_once_for_a_wrong_key_and_times_out() -> None:
    """An unlisted key replays the menu once; then, or without a key, the call queues unrouted."""
    ivr = machine()
    ivr.start(0)
    assert ivr.key("9", 1) == [Play(("menu",), music=False)]
    assert ivr.tick(100) == []  # the replay has not finished: no timeout yet
    ivr.finished("menu", 4)
    assert ivr.tick(8.9) == [] and ivr.tick(9) == [Play(("queue",), music=True)]
    assert ivr.chosen is None and ivr.state == "waiting"
    again = machine()
    again.start(0)
    again.key("9", 1)
    assert again.key("8", 2) == [Play(("queue",), music=True)]


def test_without_menu_the_greeting_leads_to_the_queue() -> None:
    """No menu: greeting and queue prompt in one go, then music; keys are ignored."""
    ivr = machine(menu=None)
    assert ivr.start(0) == [Play(("greeting", "queue"), music=True)]
    assert ivr.key("1", 1) == [] and ivr.next_deadline() == 30
