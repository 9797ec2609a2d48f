"""The rooms of this instance, kept under a typed application key, and what they need from the app."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from dispatchd.video import store
from dispatchd.video.recording import Recorder
from dispatchd.video.room import Room
from dispatchd.video.signalling import ProtocolError
from dispatchd.video.sources import RtspPuller
from dispatchd.video.store import Invite, Meeting
from dispatchd.web.appkeys import CLOCK, METRICS, POOL, SETTINGS

log = structlog.get_logger("dispatchd.video")


class Rooms:
    """Live rooms by meeting id; a room opens with its first participant."""

    def __init__(self, app: web.Application) -> None:
        self.app = app
        self.rooms: dict[int, Room] = {}
        self._lock = asyncio.Lock()

    async def open(self, meeting: Meeting) -> Room:
        async with self._lock:
            room = self.rooms.get(meeting.id)
            if room is not None and not room.closed:
                return room
            async with self.app[POOL].acquire() as conn:
                invites = await store.invites_of(conn, meeting.id)
            settings = self.app[SETTINGS].video

            async def audit(action: str, detail: dict[str, Any], publish: bool) -> None:
                async with self.app[POOL].acquire() as conn:
                    await store.record_event(
                        conn, meeting, "chair", action, detail, self.app[CLOCK].now(), publish=publish
                    )

            room = Room(meeting, invites, settings, self.app[CLOCK].monotonic, audit, self.set_recording)
            self.rooms[meeting.id] = room
            for inv in invites:
                if inv.kind == "rtsp":
                    self.start_puller(room, inv)
            log.info("room_opened", meeting_id=meeting.id)
            return room

    def start_puller(self, room: Room, invite: Invite) -> None:
        """Pull an RTSP camera into the room as a participant the chair can put on screen."""
        if invite.participant_id in room.pullers or not invite.source_url:
            return
        p = room.add_source_participant(invite)
        puller = RtspPuller(
            invite.source_url,
            room.meeting.codec,
            p.id,
            transport=self.app[SETTINGS].video.rtsp_transport,
        )
        room.pullers[p.id] = puller

        def published(kind: str, source: Any) -> None:
            room.publish(p, kind, source)
            room.later(room.relayout(roster=True))

        puller.start(published)

    async def set_recording(self, room: Room, on: bool, actor: str) -> None:
        """Start or stop muxing what is on screen into ``<data dir>/recordings/``."""
        now = self.app[CLOCK].now()
        if on:
            if room.recorder is not None:
                return
            data_dir: Path = self.app[SETTINGS].data.dir
            rel = Path("recordings") / f"meeting-{room.meeting.id}-{now:%Y%m%dT%H%M%S}.mkv"
            (data_dir / rel.parent).mkdir(parents=True, exist_ok=True)
            recorder = Recorder(
                data_dir / rel,
                room.meeting.codec,
                slots=room.settings.screen_slots,
                monotonic=self.app[CLOCK].monotonic,
            )
            async with self.app[POOL].acquire() as conn:
                recorder.record_id = await store.start_recording(conn, room.meeting, str(rel), actor, now)
            room.recorder = recorder
            recorder.start()
            await room.relayout()
            await room_broadcast(room, "recording", on=True)
        else:
            running = room.recorder
            if running is None:
                return
            room.recorder = None
            size = await running.stop()
            async with self.app[POOL].acquire() as conn:
                await store.stop_recording(conn, room.meeting, running.record_id, size, actor, now)
            await room_broadcast(room, "recording", on=False)

    async def end(self, meeting_id: int) -> None:
        room = self.rooms.pop(meeting_id, None)
        if room is not None:
            await room.end()

    def participants(self, meeting_id: int) -> int:
        room = self.rooms.get(meeting_id)
        return room.online if room is not None else 0

    async def close_all(self) -> None:
        for room in list(self.rooms.values()):
            await room.close()
        self.rooms.clear()

    async def forget_if_empty(self, room: Room) -> None:
        if room.online == 0 and self.rooms.get(room.meeting.id) is room:
            await room.close()
            del self.rooms[room.meeting.id]
            log.info("room_closed", meeting_id=room.meeting.id)

    def frames_forwarded(self) -> int:
        total = 0
        for room in self.rooms.values():
            for p in room.participants.values():
                total += sum(s.frames_out for s in p.sources.values())
        return total


async def room_broadcast(room: Room, kind: str, **fields: Any) -> None:
    from dispatchd.video.signalling import dumps

    text = dumps(kind, **fields)
    await asyncio.gather(*(p.send(text) for p in list(room.participants.values())))


ROOMS = web.AppKey("video_rooms", Rooms)


async def rooms_ctx(app: web.Application) -> AsyncIterator[None]:
    """Close every room (peer connections, pullers, recordings) when the application stops."""
    yield
    await app[ROOMS].close_all()
    app[METRICS].connections.labels("meeting").set(0)


__all__ = ["ROOMS", "ProtocolError", "Rooms", "rooms_ctx"]
