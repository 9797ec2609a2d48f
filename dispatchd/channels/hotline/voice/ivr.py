"""What the caller hears before an officer answers, as a state machine: no I/O, time passed in.

1. **Greeting** (the line's own, else the hotline's), then
2. **menu** when the line has one: its prompt, then up to ``menu_timeout`` seconds for a key; a
   listed key routes the call to that department kind (:class:`Route`), another key plays the menu
   once more, no key leaves the call as it is;
3. **waiting**: the queue prompt and music; every ``announce_interval`` seconds the edge is asked
   for the caller's position (:class:`AskPosition`) and plays it (:meth:`Ivr.position`).

Actions out: :class:`Play` (clips by name, then music or silence), :class:`Route`, :class:`AskPosition`.
The officer's answer ends it (the edge drops the machine).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeAlias

from dispatchd.domain.hotlines import Menu

__all__ = ["Action", "AskPosition", "Ivr", "Play", "Route"]


@dataclass(frozen=True, slots=True)
class Play:
    """Play these prompts in turn (``"greeting"``, ``"menu"``, ``"queue"``, ``"position"``), then music."""

    clips: tuple[str, ...]
    music: bool = True
    position: int = 0  # for the "position" clip: the callers ahead


@dataclass(frozen=True, slots=True)
class Route:
    """The caller chose ``key``: the call goes to ``department_kind``."""

    key: str
    department_kind: str


@dataclass(frozen=True, slots=True)
class AskPosition:
    """Time to tell the caller their place: the edge counts and calls :meth:`Ivr.position`."""


Action: TypeAlias = Play | Route | AskPosition


class Ivr:
    def __init__(
        self,
        *,
        greeting: bool,
        menu: Menu | None,
        queue_prompt: bool,
        announce_position: bool,
        menu_timeout: float,
        announce_interval: float,
    ) -> None:
        self.greeting = greeting
        self.menu = menu
        self.queue_prompt = queue_prompt
        self.announce_position = announce_position
        self.menu_timeout = menu_timeout
        self.announce_interval = announce_interval
        self.state = "new"
        self.chosen: str | None = None
        self._menu_deadline: float | None = None
        self._menu_plays = 0
        self._next_announce: float | None = None

    def start(self, now: float) -> list[Action]:
        clips = ("greeting",) if self.greeting else ()
        if self.menu is not None:
            self.state = "menu"
            self._menu_plays = 1
            return [Play((*clips, "menu"), music=False)]
        return self._wait(now, clips)

    def _wait(self, now: float, before: tuple[str, ...] = ()) -> list[Action]:
        self.state = "waiting"
        self._menu_deadline = None
        if self.announce_position:
            self._next_announce = now + self.announce_interval
        clips = (*before, "queue") if self.queue_prompt else before
        return [Play(clips, music=True)]

    def finished(self, clip: str, now: float) -> list[Action]:
        """A prompt ended: after the menu prompt the wait for a key begins."""
        if clip == "menu" and self.state == "menu":
            self._menu_deadline = now + self.menu_timeout
        return []

    def key(self, key: str, now: float) -> list[Action]:
        if self.state != "menu" or self.menu is None:
            return []
        kind = self.menu.keys.get(key)
        if kind is not None:
            self.chosen = key
            return [Route(key, kind), *self._wait(now)]
        if self._menu_plays < 2:  # an unknown key: the menu once more
            self._menu_plays += 1
            self._menu_deadline = None
            return [Play(("menu",), music=False)]
        return self._wait(now)

    def tick(self, now: float) -> list[Action]:
        if self.state == "menu" and self._menu_deadline is not None and now >= self._menu_deadline:
            return self._wait(now)
        if self.state == "waiting" and self._next_announce is not None and now >= self._next_announce:
            self._next_announce = now + self.announce_interval
            return [AskPosition()]
        return []

    def position(self, ahead: int) -> list[Action]:
        """``ahead`` callers wait before this one (0: next; then only the music goes on)."""
        if self.state != "waiting" or ahead <= 0:
            return []
        return [Play(("position",), music=True, position=ahead)]

    def next_deadline(self) -> float | None:
        if self.state == "menu":
            return self._menu_deadline
        if self.state == "waiting":
            return self._next_announce
        return None
