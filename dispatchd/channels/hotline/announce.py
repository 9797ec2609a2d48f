"""The greeting, menu and queue announcements of one call, run on its media (the IVR's edge).

With ``[prompts] announce`` on (or a line with a greeting or a menu), a new call is answered at once
— the SIP 200 goes out with the INVITE's answer, ``sendrecv`` — and the caller hears the greeting
instead of ringback while the queue rings officers as before. :class:`Announcements` feeds the
pure :class:`~dispatchd.channels.hotline.voice.ivr.Ivr` with the keys the caller presses and the
prompts that ended, and carries out what it says: prompts and music on the media, the menu's choice
as a change of the call's department (the call's ``menu`` event), the position counted in the
queue. An officer's answer takes the media over and the announcements stop.
"""

from __future__ import annotations

from typing import Any

import structlog

from dispatchd.channels.hotline import calls
from dispatchd.channels.hotline.voice.ivr import Action, AskPosition, Ivr, Play, Route
from dispatchd.channels.hotline.voice.media import CallMedia
from dispatchd.channels.hotline.voice.prompts import PromptLibrary
from dispatchd.context import Context
from dispatchd.domain.hotlines import HotlineDirectory, HotlineRoute, Prompt
from dispatchd.errors import Conflict

log = structlog.get_logger("dispatchd.voice")

__all__ = ["Announcements", "wanted"]


def wanted(directory: HotlineDirectory, route: HotlineRoute | None) -> bool:
    """Whether a call to ``route`` is answered at once for announcements."""
    return directory.prompts.announce or (
        route is not None and (route.greeting is not None or route.menu is not None)
    )


class Announcements:
    def __init__(
        self,
        ctx: Context,
        media: CallMedia,
        call: dict[str, Any],
        route: HotlineRoute | None,
        directory: HotlineDirectory,
        library: PromptLibrary,
        later: Any,
    ) -> None:
        self.ctx = ctx
        self.media = media
        self.call_id = int(call["id"])
        self.org = str(call["org"])
        self.directory = directory
        self.library = library
        self.later = later
        prompts = directory.prompts
        self.greeting: Prompt | None = (route.greeting if route is not None else None) or prompts.greeting
        self.menu = route.menu if route is not None else None
        settings = ctx.settings.voice
        self.ivr = Ivr(
            greeting=True,
            menu=self.menu,
            queue_prompt=prompts.queue is not None,
            announce_position=True,
            menu_timeout=settings.menu_timeout,
            announce_interval=settings.queue_announce_interval,
        )
        self.music = library.music(prompts.hold_music, media.codec)

    def start(self) -> None:
        self.media.on_key = self.key
        self.media.on_tick = self.tick
        self._apply(self.ivr.start(self.media.clock()))

    def stop(self) -> None:
        self.media.on_key = None
        self.media.on_tick = None

    def key(self, key: str) -> None:
        self._apply(self.ivr.key(key, self.media.clock()))

    def tick(self, now: float) -> None:
        for clip in self.media.player.finished():
            self._apply(self.ivr.finished(clip, now))
        self._apply(self.ivr.tick(now))

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, Play):
                clips = [(name, self._clip(name, action.position)) for name in action.clips]
                self.media.play(clips, self.music if action.music else b"")
            elif isinstance(action, Route):
                self.later(self._route(action))
            elif isinstance(action, AskPosition):
                self.later(self._position())

    def _clip(self, name: str, position: int) -> bytes:
        codec = self.media.codec
        prompts = self.directory.prompts
        if name == "greeting":
            return self.library.encoded(self.greeting, codec, beeps=2) if self.greeting else b""
        if name == "menu":
            return self.library.encoded(self.menu.prompt, codec, beeps=3) if self.menu else b""
        if name == "queue":
            return self.library.encoded(prompts.queue, codec) if prompts.queue else b""
        if name == "position" and prompts.position is not None:
            return self.library.position(prompts.position, position, codec)
        return b""

    async def _route(self, action: Route) -> None:
        department = self.ctx.orgs.find_department(self.org, action.department_kind)
        try:
            await calls.record_event(
                self.ctx,
                self.call_id,
                None,
                "menu",
                {"key": action.key, "department_kind": action.department_kind},
                department_kind=action.department_kind,
                department_code=department.code if department is not None else None,
            )
        except Conflict:
            # An officer answered meanwhile: the call stays with them, wherever the caller wanted to go.
            log.info("call_menu_too_late", call_id=self.call_id, key=action.key)
            return
        except Exception:
            log.exception("voice_menu_route_failed", call_id=self.call_id)
            return
        log.info("call_menu", call_id=self.call_id, key=action.key, department_kind=action.department_kind)

    async def _position(self) -> None:
        async with self.ctx.pool.acquire() as conn:
            row = await conn.fetchrow(
                "SELECT state, offered_at, org_code FROM hotline_calls WHERE id = $1", self.call_id
            )
            if row is None or row["state"] not in calls.WAITING:
                return
            ahead = await conn.fetchval(
                "SELECT count(*) FROM hotline_calls WHERE org_code = $1 AND state IN ('ringing', 'queued')"
                " AND (offered_at, id) < ($2, $3)",
                row["org_code"],
                row["offered_at"],
                self.call_id,
            )
        if self.media.mode == "prompts" and not self.media.closed:
            self._apply(self.ivr.position(int(ahead or 0)))
