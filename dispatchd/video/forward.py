"""Selective forwarding of encoded frames: sources in, one forwarding track per receiving slot out.

A :class:`Source` is one published track (a participant's camera or microphone, a pulled camera).
A :class:`ForwardedTrack` feeds one subscriber's RTP sender: its ``recv`` yields encoded
``av.Packet`` s, which aiortc's sender packetises (``encoder.pack``) without encoding. Nothing here
decodes a frame.

Switching what a slot shows (roll call, rotation) waits for a keyframe of the new source, asked
for at once, and keeps the outgoing timestamps continuous so the subscriber's decoder sees one
stream. A subscriber that falls behind (its queue fills) skips to the next keyframe.
"""

from __future__ import annotations

import asyncio
import fractions
from collections.abc import Callable

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from dispatchd.video.framing import AUDIO_CLOCK, VIDEO_CLOCK, EncodedFrame


class ForwardingTotals:
    """This instance's forwarding counters, plain ints (one locked metric update per frame would cost
    more than forwarding it); :mod:`dispatchd.video.service` reads them when metrics are scraped."""

    __slots__ = ("frames_in", "frames_out", "keyframe_requests", "renegotiations", "skips")

    def __init__(self) -> None:
        self.frames_in = {"video": 0, "audio": 0}  # frames received from publishers, by kind
        self.frames_out = {"video": 0, "audio": 0}  # frames queued to subscribers, by kind
        self.keyframe_requests = 0  # PLIs sent to publishers
        self.skips = 0  # a slow subscriber's queue dropped to the next keyframe
        self.renegotiations = 0  # new offers the server asked participants for


# A keyframe request stays outstanding for this many frames of the source (about a second at
# 30 fps); further requests in that time are answered by the same keyframe.
KEYFRAME_REQUEST_FRAMES = 30


class Source:
    """One published track; delivers each assembled frame to every subscribed track."""

    def __init__(
        self,
        participant: str,
        kind: str,
        codec: str,
        request_keyframe: Callable[[], None] | None = None,
        totals: ForwardingTotals | None = None,
    ) -> None:
        self.participant = participant
        self.totals = totals or ForwardingTotals()
        self.kind = kind
        self.codec = codec.upper()
        self.clock_rate = VIDEO_CLOCK if kind == "video" else AUDIO_CLOCK
        self.subscribers: set[ForwardedTrack] = set()
        self._request_keyframe = request_keyframe
        self._request_age: int | None = None  # frames since the outstanding keyframe request
        self.frames_in = 0
        self.frames_out = 0
        self.keyframes = 0
        self.keyframe_requests = 0
        self.width: int | None = None
        self.height: int | None = None
        self.ended = False

    def deliver(self, frame: EncodedFrame) -> None:
        """Hand one encoded frame to every subscriber (called on the event loop)."""
        self.frames_in += 1
        totals = self.totals
        totals.frames_in[self.kind] += 1
        if frame.keyframe:
            self.keyframes += 1
            self._request_age = None
        elif self._request_age is not None:
            self._request_age += 1
            if self._request_age >= KEYFRAME_REQUEST_FRAMES:
                self._request_age = None  # lost: allow the next request through
                if any(track.waits_for_keyframe(self) for track in self.subscribers):
                    self.request_keyframe()  # someone still waits: ask again rather than never
        if frame.discontinuity and self.kind == "video":
            self.request_keyframe()
        sent = 0
        for track in list(self.subscribers):
            if track.offer(self, frame):
                sent += 1
        self.frames_out += sent
        totals.frames_out[self.kind] += sent

    def request_keyframe(self) -> None:
        """Ask the publisher for a keyframe (RTCP PLI), at most one outstanding at a time."""
        if self.kind != "video" or self._request_keyframe is None or self._request_age is not None:
            return
        self._request_age = 0
        self.keyframe_requests += 1
        self.totals.keyframe_requests += 1
        self._request_keyframe()

    def end(self) -> None:
        self.ended = True
        for track in list(self.subscribers):
            track.source_ended(self)


class ForwardedTrack(MediaStreamTrack):
    """What one receiving slot shows: frames of at most one source at a time, as encoded packets."""

    def __init__(
        self, kind: str, *, queue_frames: int = 30, label: str = "", totals: ForwardingTotals | None = None
    ) -> None:
        super().__init__()
        self.kind = kind
        self.totals = totals or ForwardingTotals()
        self.label = label
        self.clock_rate = VIDEO_CLOCK if kind == "video" else AUDIO_CLOCK
        self._time_base = fractions.Fraction(1, self.clock_rate)
        self._step = self.clock_rate // 30 if kind == "video" else 960  # one frame / 20 ms
        self._queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue(queue_frames)
        self.current: Source | None = None
        self.pending: Source | None = None
        self._need_keyframe = True
        self._resync = True
        self._offset = 0
        self._last_in: int | None = None
        self._last_out: int | None = None
        self.frames_sent = 0
        self.skips = 0
        self.on_change: Callable[[ForwardedTrack], None] | None = None

    @property
    def showing(self) -> str | None:
        """The participant whose frames this slot forwards now (or is about to)."""
        source = self.pending or self.current
        return source.participant if source is not None else None

    def show(self, source: Source | None) -> None:
        """Point the slot at ``source``; video switches at the new source's next keyframe."""
        if source is (self.pending or self.current):
            return
        if self.pending is not None:
            self.pending.subscribers.discard(self)
            self.pending = None
        if source is None:
            self._detach_current()
            return
        if self.kind == "audio" or self.current is None:
            self._detach_current()
            self.current = source
            self._need_keyframe = self.kind == "video"
            self._resync = True
            source.subscribers.add(self)
            source.request_keyframe()
        else:
            self.pending = source
            source.subscribers.add(self)
            source.request_keyframe()

    def _detach_current(self) -> None:
        if self.current is not None:
            self.current.subscribers.discard(self)
            self.current = None

    def source_ended(self, source: Source) -> None:
        if source is self.pending:
            self.pending = None
        if source is self.current:
            self._detach_current()
        source.subscribers.discard(self)

    def waits_for_keyframe(self, source: Source) -> bool:
        """True while this slot shows nothing of ``source`` until its next keyframe."""
        return source is self.pending or (source is self.current and self._need_keyframe)

    def offer(self, source: Source, frame: EncodedFrame) -> bool:
        """Take one frame of a subscribed source; True when it was queued for sending."""
        if source is self.pending:
            if not frame.keyframe:
                return False
            self._detach_current()
            self.current, self.pending = source, None
            self._need_keyframe = False
            self._resync = True
            if self.on_change is not None:
                self.on_change(self)
        elif source is not self.current:
            return False
        if self._need_keyframe:
            if not frame.keyframe:
                return False
            self._need_keyframe = False
        if self._resync or self._last_in is None:
            # Continue the outgoing timeline one frame after the last packet sent.
            target = 0 if self._last_out is None else self._last_out + self._step
            self._offset = target - frame.timestamp
            self._resync = False
        pts = frame.timestamp + self._offset
        if self._last_out is not None and pts <= self._last_out:
            pts = self._last_out + 1  # never go backwards (a source restarted its clock)
        self._last_in = frame.timestamp
        self._last_out = pts
        try:
            self._queue.put_nowait((pts, frame.data))
        except asyncio.QueueFull:
            self._skip_to_keyframe()
            return False
        return True

    def _skip_to_keyframe(self) -> None:
        """The subscriber is behind: drop what is queued and resume at a keyframe."""
        self.skips += 1
        self.totals.skips += 1
        while not self._queue.empty():
            self._queue.get_nowait()
        if self.kind == "video":
            self._need_keyframe = True
            if self.current is not None:
                self.current.request_keyframe()

    def request_keyframe(self) -> None:
        """The subscriber reported picture loss (PLI/FIR): pass it on to the publisher."""
        source = self.pending or self.current
        if source is not None:
            source.request_keyframe()

    async def recv(self) -> av.Packet:  # type: ignore[type-arg, unused-ignore]  # generic in newer stubs
        if self.readyState != "live":
            raise MediaStreamError
        item = await self._queue.get()
        if item is None:
            raise MediaStreamError
        pts, data = item
        packet = av.Packet(data)
        packet.pts = pts
        packet.time_base = self._time_base
        self.frames_sent += 1
        return packet

    def stop(self) -> None:
        self.show(None)
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)
        super().stop()
