"""The video network's way of meeting, as pure state: who is on screen and who hears whom.

综治视联网 meetings are chaired: everyone sees the chair (主会场) and the current speaker; the chair
brings a site on screen by roll call (点名), can rotate through sites every N seconds (轮巡), mutes
and unmutes sites, and sees raised hands (举手). Each participant receives only what is shown — at
most ``slots`` video streams and the audio of those not muted — so the server's cost grows with
publishers plus a fixed number of streams per participant, not with the square of the participants.

Commands take the current monotonic time where timing matters and return nothing; the room asks
:meth:`Screen.shown_for` after every change and re-points its forwarding tracks.
"""

from __future__ import annotations

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


@dataclass(slots=True)
class Screen:
    slots: int = 2
    chair: str | None = None
    speaker: str | None = None
    rotation: Rotation | None = None
    present: list[str] = field(default_factory=list)  # in order of joining
    muted: set[str] = field(default_factory=set)
    hands: list[str] = field(default_factory=list)  # in order raised

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
        """Advance a due rotation; True when the speaker changed."""
        rot = self.rotation
        if rot is None or now < rot.next_at:
            return False
        rot.index = (rot.index + 1) % len(rot.sites)
        rot.next_at = now + rot.interval
        changed = self.speaker != rot.sites[rot.index]
        self.speaker = rot.sites[rot.index]
        return changed

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

    def shown_for(self, pid: str) -> list[str]:
        """Video ``pid`` receives, slot by slot: the chair and the speaker, never itself."""
        shown = [p for p in self.on_screen() if p != pid]
        if len(shown) < self.slots and pid == self.chair:
            # The chair also watches the first raised hand, so a request to speak is seen.
            shown += [h for h in self.hands if h not in shown and h != pid][:1]
        return shown[: self.slots]

    def heard_by(self, pid: str) -> list[str]:
        """Audio ``pid`` receives: whom it sees, unless muted."""
        return [p for p in self.shown_for(pid) if p not in self.muted]

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
        }
