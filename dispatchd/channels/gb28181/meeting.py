"""A camera as a source of a meeting (a case's consultation), like a pulled RTSP camera.

The meeting gets a :class:`~dispatchd.video.forward.Source` of its own from the camera's stream
(the room ends it when it closes), fed with the same frames as every viewer: the device sends one
stream whatever watches it. Meetings carry the camera's H.264 as it comes, so the meeting's codec
must be H.264 (:mod:`dispatchd.channels.gb28181.api` sees to it).
"""

from __future__ import annotations

from collections.abc import Callable

from dispatchd.channels.gb28181.runtime import Gb28181Runtime
from dispatchd.video.forward import Source
from dispatchd.video.room import Room
from dispatchd.video.store import Invite

#: ``meeting_invites.source_url`` of a camera: ``gb28181:<device id>/<channel id>``.
SCHEME = "gb28181:"


def source_url(device_id: str, channel_id: str) -> str:
    return f"{SCHEME}{device_id}/{channel_id}"


def parse_source_url(url: str | None) -> tuple[str, str] | None:
    if not url or not url.startswith(SCHEME):
        return None
    device_id, _, channel_id = url[len(SCHEME) :].partition("/")
    return (device_id, channel_id) if device_id and channel_id else None


class CameraPuller:
    """What the room keeps in ``pullers`` for a camera participant."""

    def __init__(self, runtime: Gb28181Runtime, device_id: str, channel_id: str, participant: str) -> None:
        self.runtime = runtime
        self.participant = participant
        self.device_id = device_id
        self.channel_id = channel_id
        self.source: Source | None = None

    def start(self, published: Callable[[str, Source], None]) -> bool:
        edge = self.runtime.edge
        if edge is None:
            return False
        mode = self.runtime.modes.get(self.device_id)
        _, self.source = edge.streams.acquire(
            self.channel_id, self.device_id, mode, participant=self.participant
        )
        published("video", self.source)
        return True

    async def stop(self) -> None:
        edge = self.runtime.edge
        if self.source is not None:
            if edge is not None:
                edge.streams.release(self.channel_id, self.source)
            self.source.end()
            self.source = None


def starter(runtime: Gb28181Runtime) -> Callable[[Room, Invite], None]:
    """Start a camera invite's puller in a room (registered with the rooms for kind ``camera``)."""

    def start(room: Room, invite: Invite) -> None:
        found = parse_source_url(invite.source_url)
        if found is None or invite.participant_id in room.pullers:
            return
        participant = room.add_source_participant(invite)
        puller = CameraPuller(runtime, *found, participant.id)

        def published(kind: str, source: Source) -> None:
            room.publish(participant, kind, source)
            room.later(room.relayout(roster=True))

        if puller.start(published):
            room.pullers[participant.id] = puller

    return start
