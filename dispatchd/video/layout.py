"""The video network's way of meeting, as pure state: who is on screen and who hears whom.

综治视联网 meetings are chaired: everyone sees the chair (主会场) and the current speaker; the chair
brings a site on screen by roll call (点名), can rotate through sites every N seconds (轮巡), mutes
and unmutes sites, and sees raised hands (举手). Each participant receives only what is shown — at
most ``slots`` video streams and the audio of those not muted — so the server's cost grows with
publishers plus a fixed number of streams per participant, not with the square of the participants.

The chair — and any site the chair allows — may also watch a **wall** (电视墙) of split screens:
1, 4, 9 or 16 tiles filled with the sites in roll order (点名册), page by page, turned by hand or
by rotation (轮巡) every N seconds, while the speaker stays large beside it. What a site shows on
its wall is forwarded to it alone, and each picture is sent in the size it is shown at: a tile of
a 9- or 16-way wall gets the low simulcast layer, a 4-way tile the middle one, the speaker and a
full-screen view the high one (:meth:`Screen.view_for`).

Commands take the current monotonic time where timing matters and return nothing; the room asks
:meth:`Screen.view_for` after every change and re-points its forwarding slots.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field


class LayoutError(ValueError):
    """A command that cannot apply (unknown participant, not allowed)."""

    def __init__(self, code: str, message_zh: str, message_en: str) -> None:
        super().__init__(message_en)
        self.code = code
        self.message_zh = message_zh
        self.message_en = message_en


@dataclass(slots=True)
class Rotation:
    """轮巡: the speaker slot cycles through ``sites`` every ``interval`` seconds."""

    sites: list[str]
    interval: float
    index: int = 0
    next_at: float = 0.0


# Tiles of a wall (0: no wall, the chair-and-speaker view).
WALL_LAYOUTS = (0, 1, 4, 9, 16)
# How large a picture is shown: it decides the simulcast layer sent (see simulcast.py).
LARGE, MEDIUM, SMALL = "large", "medium", "small"


def tile_size(tiles: int) -> str:
    """The size of one tile of a wall of ``tiles``: full screen, a quarter, or smaller."""
    return LARGE if tiles <= 1 else MEDIUM if tiles <= 4 else SMALL


@dataclass(slots=True)
class Wall:
    """One site's wall: ``tiles`` per page, the page shown, and the page rotation (轮巡) if any."""

    tiles: int
    page: int = 0
    interval: float | None = None
    next_at: float = 0.0


@dataclass(frozen=True, slots=True)
class Shown:
    """One picture a participant receives: whose, and how large it is shown."""

    participant: str
    size: str


@dataclass(slots=True)
class Screen:
    slots: int = 2
    chair: str | None = None
    speaker: str | None = None
    rotation: Rotation | None = None
    present: list[str] = field(default_factory=list)  # in order of joining
    muted: set[str] = field(default_factory=set)
    hands: list[str] = field(default_factory=list)  # in order raised
    order: list[str] = field(default_factory=list)  # roll order (点名册): the meeting's invites
    walls: dict[str, Wall] = field(default_factory=dict)  # who watches a wall, and its state
    wall_allowed: set[str] = field(default_factory=set)  # sites the chair lets watch a wall

    # -- membership ---------------------------------------------------------------------------
    def join(self, pid: str, *, chair: bool = False) -> None:
        if pid not in self.present:
            self.present.append(pid)
        if chair and self.chair is None:
            self.chair = pid

    def leave(self, pid: str) -> None:
        if pid in self.present:
            self.present.remove(pid)
        self.muted.discard(pid)
        if pid in self.hands:
            self.hands.remove(pid)
        if self.speaker == pid:
            self.speaker = None
        if self.chair == pid:
            self.chair = None
        self.walls.pop(pid, None)
        self.wall_allowed.discard(pid)
        if self.rotation is not None and pid in self.rotation.sites:
            self.rotation.sites.remove(pid)
            if not self.rotation.sites:
                self.rotation = None
            else:
                self.rotation.index %= len(self.rotation.sites)

    def take_chair(self, pid: str) -> None:
        self._require(pid)
        self.chair = pid
        if self.speaker == pid:
            self.speaker = None

    # -- the chair's commands -----------------------------------------------------------------
    def roll_call(self, pid: str | None) -> None:
        """点名: bring ``pid`` on screen as the speaker (None clears it); stops any rotation."""
        if pid is not None:
            self._require(pid)
            if pid == self.chair:
                raise LayoutError("is_chair", "主持人本就在屏幕上", "the chair is always on screen")
            self.muted.discard(pid)
            if pid in self.hands:
                self.hands.remove(pid)
        self.rotation = None
        self.speaker = pid

    def rotate(self, sites: list[str] | None, interval: float, now: float) -> None:
        """轮巡: cycle the speaker slot through ``sites`` (default: everyone but the chair)."""
        chosen = [p for p in (sites if sites is not None else self.present) if p != self.chair]
        for pid in chosen:
            self._require(pid)
        if not chosen:
            raise LayoutError("no_sites", "没有可轮巡的会场", "no sites to rotate through")
        if interval <= 0:
            raise LayoutError("bad_interval", "轮巡间隔必须大于 0", "the interval must be positive")
        self.rotation = Rotation(list(dict.fromkeys(chosen)), interval, 0, now + interval)
        self.speaker = self.rotation.sites[0]

    def stop_rotation(self) -> None:
        self.rotation = None

    def tick(self, now: float) -> bool:
        """Advance a due rotation of the speaker or of a wall's pages; True when a picture changed."""
        changed = False
        for pid, wall in self.walls.items():
            if wall.interval is not None and now >= wall.next_at:
                wall.next_at = now + wall.interval
                pages = self.pages(pid)
                if pages > 1:
                    wall.page = (wall.page + 1) % pages
                    changed = True
        rot = self.rotation
        if rot is None or now < rot.next_at:
            return changed
        rot.index = (rot.index + 1) % len(rot.sites)
        rot.next_at = now + rot.interval
        changed = changed or self.speaker != rot.sites[rot.index]
        self.speaker = rot.sites[rot.index]
        return changed

    # -- walls (电视墙) ---------------------------------------------------------------------------
    def may_watch_wall(self, pid: str) -> bool:
        return pid == self.chair or pid in self.wall_allowed

    def allow_wall(self, pid: str, allowed: bool) -> None:
        """The chair lets a site watch (and lay out) a wall of its own, or takes that back."""
        self._require(pid)
        if allowed:
            self.wall_allowed.add(pid)
        else:
            self.wall_allowed.discard(pid)
            if pid != self.chair:
                self.walls.pop(pid, None)

    def set_layout(self, pid: str, tiles: int) -> None:
        """``pid`` watches a wall of ``tiles`` (1, 4, 9, 16) beside the speaker; 0 ends its wall."""
        if not self.may_watch_wall(pid):
            raise LayoutError(
                "no_wall", "主持人未允许本会场使用电视墙", "the chair has not allowed you a wall"
            )
        if tiles not in WALL_LAYOUTS:
            raise LayoutError("bad_layout", "分屏数应为 1、4、9 或 16", "a wall has 1, 4, 9 or 16 tiles")
        if tiles == 0:
            self.walls.pop(pid, None)
            return
        wall = self.walls.get(pid)
        if wall is None:
            self.walls[pid] = Wall(tiles)
        else:
            first = wall.page * wall.tiles  # keep the first site of the page on the new page
            wall.tiles, wall.page = tiles, first // tiles

    def turn_page(self, pid: str, page: int) -> None:
        """Show page ``page`` of ``pid``'s wall (counted from 0, wrapping around)."""
        wall = self._wall(pid)
        wall.page = page % max(1, self.pages(pid))

    def rotate_pages(self, pid: str, interval: float, now: float) -> None:
        """轮巡 of a wall: the next page every ``interval`` seconds."""
        if interval <= 0:
            raise LayoutError("bad_interval", "轮巡间隔必须大于 0", "the interval must be positive")
        wall = self._wall(pid)
        wall.interval, wall.next_at = interval, now + interval

    def stop_pages(self, pid: str) -> None:
        self._wall(pid).interval = None

    def _wall(self, pid: str) -> Wall:
        wall = self.walls.get(pid)
        if wall is None:
            raise LayoutError("no_wall", "请先选择分屏", "choose a wall layout first")
        return wall

    def wall_sites(self, pid: str) -> list[str]:
        """The sites that fill ``pid``'s wall, in roll order: everyone present but itself and the speaker."""
        rank = {p: i for i, p in enumerate(self.order)}
        ordered = sorted(self.present, key=lambda p: (rank.get(p, len(rank)), self.present.index(p)))
        return [p for p in ordered if p not in (pid, self.speaker)]

    def pages(self, pid: str) -> int:
        wall = self.walls.get(pid)
        if wall is None:
            return 0
        return max(1, math.ceil(len(self.wall_sites(pid)) / wall.tiles))

    def mute(self, pid: str, muted: bool) -> None:
        self._require(pid)
        if muted:
            self.muted.add(pid)
        else:
            self.muted.discard(pid)

    def raise_hand(self, pid: str, raised: bool) -> None:
        self._require(pid)
        if raised and pid not in self.hands:
            self.hands.append(pid)
        elif not raised and pid in self.hands:
            self.hands.remove(pid)

    # -- what each participant receives -------------------------------------------------------
    def on_screen(self) -> list[str]:
        """The sites shown to everyone, chair first."""
        return [p for p in dict.fromkeys((self.chair, self.speaker)) if p is not None]

    def _stage_for(self, pid: str) -> list[str]:
        """The chair-and-speaker view of ``pid``: the chair and the speaker, never itself."""
        shown = [p for p in self.on_screen() if p != pid]
        if len(shown) < self.slots and pid == self.chair:
            # The chair also watches the first raised hand, so a request to speak is seen.
            shown += [h for h in self.hands if h not in shown and h != pid][:1]
        return shown[: self.slots]

    def view_for(self, pid: str) -> list[Shown]:
        """Video ``pid`` receives, slot by slot, with the size each is shown at.

        Without a wall: the chair and the speaker, large. With a wall: the speaker large, then the
        wall's current page of sites in roll order, each at the wall's tile size.
        """
        wall = self.walls.get(pid)
        if wall is None:
            return [Shown(p, LARGE) for p in self._stage_for(pid)]
        shown = [Shown(self.speaker, LARGE)] if self.speaker not in (None, pid) else []
        sites = self.wall_sites(pid)
        pages = max(1, math.ceil(len(sites) / wall.tiles))
        wall.page %= pages
        size = tile_size(wall.tiles)
        start = wall.page * wall.tiles
        return shown + [Shown(p, size) for p in sites[start : start + wall.tiles]]

    def shown_for(self, pid: str) -> list[str]:
        """Whose video ``pid`` receives, slot by slot (see :meth:`view_for`)."""
        return [s.participant for s in self.view_for(pid)]

    def heard_by(self, pid: str) -> list[str]:
        """Audio ``pid`` receives: the chair and the speaker (never a wall's tiles), unless muted."""
        heard = [p for p in self.on_screen() if p != pid]
        if pid not in self.walls:
            heard = self._stage_for(pid)
        return [p for p in heard if p not in self.muted]

    def _require(self, pid: str) -> None:
        if pid not in self.present:
            raise LayoutError(
                "unknown_participant", "该参会方不在会议中", "no such participant in the meeting"
            )

    def as_json(self) -> dict[str, object]:
        rot = self.rotation
        return {
            "chair": self.chair,
            "speaker": self.speaker,
            "rotation": None
            if rot is None
            else {"sites": list(rot.sites), "interval": rot.interval, "current": rot.sites[rot.index]},
            "muted": sorted(self.muted),
            "hands": list(self.hands),
            "wall_allowed": sorted(self.wall_allowed),
        }

    def wall_json(self, pid: str) -> dict[str, object] | None:
        """``pid``'s own wall for its ``screen`` message: layout, page, pages, rotation."""
        wall = self.walls.get(pid)
        if wall is None:
            return None
        return {"tiles": wall.tiles, "page": wall.page, "pages": self.pages(pid), "interval": wall.interval}
