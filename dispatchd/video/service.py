"""The rooms of this instance, kept in a typed slot of the service context."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dispatchd.context import Context, Slot
from dispatchd.store.changes import Actor
from dispatchd.video import store
from dispatchd.video.forward import ForwardingTotals
from dispatchd.video.recording import Recorder
from dispatchd.video.room import Room
from dispatchd.video.signalling import ProtocolError, dumps
from dispatchd.video.sources import RtspPuller
from dispatchd.video.store import Invite, Meeting

log = structlog.get_logger("dispatchd.video")


class Rooms:
    """Live rooms by meeting id; a room opens with its first participant."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.rooms: dict[int, Room] = {}
        self.totals = ForwardingTotals()
        self._lock = asyncio.Lock()
        # Pulled sources of other invite kinds than RTSP (``camera``: a GB/T 28181 channel), started
        # with the room: kind -> starter, registered by the capability that knows them.
        self.source_starters: dict[str, Callable[[Room, Invite], None]] = {}

    async def open(self, meeting: Meeting) -> Room:
        async with self._lock:
            room = self.rooms.get(meeting.id)
            if room is not None and not room.closed:
                return room
            async with self.ctx.pool.acquire() as conn:
                invites = await store.invites_of(conn, meeting.id)
            settings = self.ctx.settings.video

            async def audit(action: str, detail: dict[str, Any], publish: bool) -> None:
                async with self.ctx.pool.acquire() as conn:
                    await store.record_event(
                        conn, meeting, Actor(None, "chair"), action, detail, self.ctx.clock.now(), publish=publish
                    )

            room = Room(
                meeting,
                invites,
                settings,
                self.ctx.clock.monotonic,
                audit,
                self.set_recording,
                totals=self.totals,
            )
            self.rooms[meeting.id] = room
            for inv in invites:
                if inv.kind == "rtsp":
                    self.start_puller(room, inv)
                elif inv.kind in self.source_starters:
                    self.source_starters[inv.kind](room, inv)
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
            transport=self.ctx.settings.video.rtsp_transport,
            totals=self.totals,
        )
        room.pullers[p.id] = puller

        def published(kind: str, source: Any) -> None:
            room.publish(p, kind, source)
            room.later(room.relayout(roster=True))

        puller.start(published)

    async def set_recording(self, room: Room, on: bool, actor: str) -> None:
        """Start or stop muxing what is on screen into ``<data dir>/recordings/``."""
        now = self.ctx.clock.now()
        if on:
            if room.recorder is not None:
                return
            data_dir: Path = self.ctx.settings.data.dir
            rel = Path("recordings") / f"meeting-{room.meeting.id}-{now:%Y%m%dT%H%M%S}.mkv"
            (data_dir / rel.parent).mkdir(parents=True, exist_ok=True)
            recorder = Recorder(
                data_dir / rel,
                room.meeting.codec,
                slots=room.settings.screen_slots,
                monotonic=self.ctx.clock.monotonic,
            )
            async with self.ctx.pool.acquire() as conn:
                recorder.record_id = await store.start_recording(conn, room.meeting, str(rel), Actor(None, actor), now)
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
            async with self.ctx.pool.acquire() as conn:
                await store.stop_recording(
                    conn, room.meeting, running.record_id, size, Actor(None, actor), now
                )
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


class VideoCollector(Collector):
    """The video metrics, read from the rooms and the forwarding totals when metrics are scraped."""

    def __init__(self, rooms: Rooms) -> None:
        self.rooms = rooms

    def collect(self) -> list[Metric]:
        rooms = [r for r in self.rooms.rooms.values() if not r.closed]
        totals = self.rooms.totals
        sources = GaugeMetricFamily(
            "dispatchd_video_sources", "tracks published to this instance", labels=["kind"]
        )
        streams = GaugeMetricFamily(
            "dispatchd_video_forwarded_streams",
            "receiving slots showing a source now (streams forwarded)",
            labels=["kind"],
        )
        published = {"video": 0, "audio": 0}
        forwarded = {"video": 0, "audio": 0}
        for room in rooms:
            for p in room.participants.values():
                for kind in p.sources:
                    published[kind] = published.get(kind, 0) + 1
                for slot in p.slots:
                    if slot.track.current is not None:
                        forwarded[slot.kind] = forwarded.get(slot.kind, 0) + 1
        frames = CounterMetricFamily(
            "dispatchd_video_frames",
            "encoded frames received from publishers (in) and queued to subscribers (out)",
            labels=["direction", "kind"],
        )
        for kind in ("video", "audio"):
            sources.add_metric([kind], published.get(kind, 0))
            streams.add_metric([kind], forwarded.get(kind, 0))
            frames.add_metric(["in", kind], totals.frames_in[kind])
            frames.add_metric(["out", kind], totals.frames_out[kind])
        return [
            GaugeMetricFamily(
                "dispatchd_video_rooms", "meetings with a live room on this instance", len(rooms)
            ),
            GaugeMetricFamily(
                "dispatchd_video_participants",
                "participants connected to this instance's rooms",
                sum(r.online for r in rooms),
            ),
            sources,
            streams,
            frames,
            CounterMetricFamily(
                "dispatchd_video_keyframe_requests",
                "keyframe requests (PLI) sent to publishers",
                totals.keyframe_requests,
            ),
            CounterMetricFamily(
                "dispatchd_video_subscriber_skips",
                "times a slow subscriber's queue was dropped to the next keyframe",
                totals.skips,
            ),
            CounterMetricFamily(
                "dispatchd_video_layer_switches",
                "slots moved to another simulcast layer of the same site (size or link)",
                totals.layer_switches,
            ),
            CounterMetricFamily(
                "dispatchd_video_renegotiations",
                "new offers the server asked participants for (renegotiate)",
                totals.renegotiations,
            ),
        ]


async def room_broadcast(room: Room, kind: str, **fields: Any) -> None:
    text = dumps(kind, **fields)
    await asyncio.gather(*(p.send(text) for p in list(room.participants.values())))


ROOMS = Slot[Rooms]("video_rooms")


async def close_rooms(ctx: Context) -> None:
    """Close every room (peer connections, pullers, recordings): the application stops."""
    await ctx[ROOMS].close_all()
    ctx.metrics.connections.labels("meeting").set(0)


__all__ = ["ROOMS", "ProtocolError", "Rooms", "close_rooms"]
