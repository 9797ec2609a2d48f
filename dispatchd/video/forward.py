"""Selective forwarding of encoded frames: sources in, one forwarding slot per receiving m-line out.

A :class:`Source` is one published track — a participant's camera or microphone, one simulcast
layer of a camera, a pulled camera. A slot shows frames of at most one source at a time:

* :class:`RtpForwarder` (participants' slots) writes each frame straight out as RTP packets — the
  publisher's own payloads with a header of the slot's stream (:class:`RtpStream`, pure) — and hands
  them to a sink that protects (SRTP) and sends them on the subscriber's connection at once: no
  queue, no task per subscriber, no re-packetising;
* :class:`ForwardedTrack` (the recorder) queues ``(timestamp, data)`` for a reader.

Both switch the same way (:class:`Switch`): a slot pointed at another source — another site on roll
call, another simulcast layer of the same site — keeps forwarding the old one until the new one's
next keyframe, asked for at once, and then continues the outgoing timeline (RTP sequence numbers,
timestamps, VP8 picture IDs) from where the old one stopped, so the subscriber's decoder sees one
stream. Nothing here decodes a frame, and nothing here does I/O or reads a clock: frames carry
their arrival time.
"""

from __future__ import annotations

import asyncio
import fractions
import random
import struct
from collections.abc import Callable

import av
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from dispatchd.video import vp8
from dispatchd.video.framing import AUDIO_CLOCK, VIDEO_CLOCK, EncodedFrame, vp8_size


class ForwardingTotals:
    """This instance's forwarding counters, plain ints (one locked metric update per frame would cost
    more than forwarding it); :mod:`dispatchd.video.service` reads them when metrics are scraped."""

    __slots__ = ("frames_in", "frames_out", "keyframe_requests", "layer_switches", "renegotiations", "skips")

    def __init__(self) -> None:
        self.frames_in = {"video": 0, "audio": 0}  # frames received from publishers, by kind
        self.frames_out = {"video": 0, "audio": 0}  # frames forwarded to subscribers, by kind
        self.keyframe_requests = 0  # PLIs sent to publishers
        self.skips = 0  # a slow subscriber's queue dropped to the next keyframe
        self.renegotiations = 0  # new offers the server asked participants for
        self.layer_switches = 0  # a slot moved to another simulcast layer of the same site


# A keyframe request stays outstanding for this many frames of the source (about a second at
# 30 fps); further requests in that time are answered by the same keyframe.
KEYFRAME_REQUEST_FRAMES = 30
# A source whose last frame is older than this is taken as paused (a browser stops sending a
# simulcast layer its own bandwidth estimate cannot carry).
ACTIVE_WITHIN = 1.0
# Payload bytes per RTP packet when a frame comes without the publisher's packets (RTSP cameras).
MAX_PAYLOAD = 1200


class Source:
    """One published track (or one simulcast layer); delivers each frame to every subscribed slot."""

    def __init__(
        self,
        participant: str,
        kind: str,
        codec: str,
        request_keyframe: Callable[[], None] | None = None,
        totals: ForwardingTotals | None = None,
        *,
        rid: str | None = None,
    ) -> None:
        self.participant = participant
        self.totals = totals or ForwardingTotals()
        self.kind = kind
        self.codec = codec.upper()
        self.rid = rid
        self.clock_rate = VIDEO_CLOCK if kind == "video" else AUDIO_CLOCK
        self.subscribers: set[Switch] = set()
        self._request_keyframe = request_keyframe
        self._request_age: int | None = None  # frames since the outstanding keyframe request
        self.frames_in = 0
        self.frames_out = 0
        self.keyframes = 0
        self.keyframe_requests = 0
        self.width: int | None = None
        self.height: int | None = None
        self.ended = False
        # Bit rate over the last second or so, from the frames' sizes and arrival times.
        self.bitrate = 0.0
        self.last_arrival: float | None = None
        self._window_start: float | None = None
        self._window_bytes = 0
        self._picture_id = random.randrange(0x8000)  # for frames this source packetises itself

    @property
    def pixels(self) -> int:
        return (self.width or 0) * (self.height or 0)

    def active(self, now: float) -> bool:
        """True while frames keep coming (a paused simulcast layer is not)."""
        return self.last_arrival is not None and now - self.last_arrival < ACTIVE_WITHIN

    def deliver(self, frame: EncodedFrame) -> None:
        """Hand one encoded frame to every subscriber (called on the event loop)."""
        self.frames_in += 1
        totals = self.totals
        totals.frames_in[self.kind] += 1
        self._measure(frame)
        if frame.keyframe:
            self.keyframes += 1
            self._request_age = None
            if self.codec == "VP8" and self.kind == "video":
                size = vp8_size(frame.data)
                if size is not None:
                    self.width, self.height = size
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

    def _measure(self, frame: EncodedFrame) -> None:
        now = frame.arrival
        self.last_arrival = now
        if self._window_start is None:
            self._window_start = now
        self._window_bytes += len(frame.data)
        elapsed = now - self._window_start
        if elapsed >= 1.0:
            self.bitrate = self._window_bytes * 8 / elapsed
            self._window_start, self._window_bytes = now, 0

    def payloads(self, frame: EncodedFrame) -> list[bytes]:
        """The frame's RTP payloads: the publisher's own, or packetised here once for every subscriber."""
        if frame.payloads is None:
            frame.payloads = self._packetise(frame.data)
        return frame.payloads

    def _packetise(self, data: bytes) -> list[bytes]:
        if self.kind == "audio":
            return [data]  # RFC 7587 section 4.2: one Opus packet per RTP payload
        if self.codec == "VP8":
            # RFC 7741 section 4.1: partition 0 from the start, a new picture ID per frame.
            self._picture_id = (self._picture_id + 1) & 0x7FFF
            chunks = [data[i : i + MAX_PAYLOAD] for i in range(0, len(data), MAX_PAYLOAD)] or [b""]
            return [
                vp8.build(chunk, start=i == 0, picture_id=self._picture_id) for i, chunk in enumerate(chunks)
            ]
        return h264_payloads(data)

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


def h264_payloads(data: bytes) -> list[bytes]:
    """RTP payloads of an Annex B access unit (RFC 6184): single NAL units, FU-A when too large."""
    payloads: list[bytes] = []
    starts: list[tuple[int, int]] = []  # (start code position, NAL position)
    pos = data.find(b"\x00\x00\x01")
    while pos != -1:
        starts.append((pos - 1 if pos > 0 and data[pos - 1] == 0 else pos, pos + 3))
        pos = data.find(b"\x00\x00\x01", pos + 3)
    for i, (_, nal_at) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else len(data)
        nal = data[nal_at:end]
        if not nal:
            continue
        if len(nal) <= MAX_PAYLOAD:
            payloads.append(nal)
            continue
        # RFC 6184 section 5.8: FU indicator (F, NRI, type 28), FU header (S, E, type).
        indicator = (nal[0] & 0xE0) | 28
        body = nal[1:]
        pieces = [body[j : j + MAX_PAYLOAD - 2] for j in range(0, len(body), MAX_PAYLOAD - 2)]
        for j, piece in enumerate(pieces):
            header = nal[0] & 0x1F
            if j == 0:
                header |= 0x80
            if j == len(pieces) - 1:
                header |= 0x40
            payloads.append(bytes([indicator, header]) + piece)
    return payloads


class Switch:
    """Which source a slot forwards and the timeline it forwards it on (pure; no I/O, no clock)."""

    kind: str
    clock_rate: int
    label: str
    totals: ForwardingTotals

    def _init_switch(self, kind: str, label: str, totals: ForwardingTotals | None) -> None:
        self.kind = kind
        self.label = label
        self.totals = totals or ForwardingTotals()
        self.clock_rate = VIDEO_CLOCK if kind == "video" else AUDIO_CLOCK
        self._step = self.clock_rate // 30 if kind == "video" else 960  # one frame / 20 ms
        self.current: Source | None = None
        self.pending: Source | None = None
        self._need_keyframe = True
        self._resync = True
        self._offset = 0
        self._last_in: int | None = None
        self._last_out: int | None = None
        self._last_arrival: float | None = None
        self.frames_sent = 0
        self.skips = 0
        self.switches = 0
        self.on_change: Callable[[Switch], None] | None = None

    @property
    def showing(self) -> str | None:
        """The participant whose frames this slot forwards now (or is about to)."""
        source = self.pending or self.current
        return source.participant if source is not None else None

    @property
    def target(self) -> Source | None:
        """The source this slot is to show: the pending one if a switch waits, else the current."""
        return self.pending or self.current

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
        elif source is self.current:
            return
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
        """Take one frame of a subscribed source; True when it was forwarded."""
        if source is self.pending:
            if not frame.keyframe:
                return False
            same_site = self.current is not None and self.current.participant == source.participant
            self._detach_current()
            self.current, self.pending = source, None
            self._need_keyframe = False
            self._resync = True
            self.switches += 1
            if same_site:
                self.totals.layer_switches += 1
            if self.on_change is not None:
                self.on_change(self)
        elif source is not self.current:
            return False
        if self._need_keyframe:
            if not frame.keyframe:
                return False
            self._need_keyframe = False
        resync = self._resync or self._last_in is None
        if resync:
            # Continue the outgoing timeline after the last frame sent, by the time that passed.
            if self._last_out is None:
                target = 0
            else:
                gap = self._step
                if frame.arrival and self._last_arrival is not None:
                    gap = max(1, round((frame.arrival - self._last_arrival) * self.clock_rate))
                target = self._last_out + gap
            self._offset = target - frame.timestamp
            self._resync = False
        pts = frame.timestamp + self._offset
        if self._last_out is not None and pts <= self._last_out:
            pts = self._last_out + 1  # never go backwards (a source restarted its clock)
        self._last_in = frame.timestamp
        self._last_out = pts
        self._last_arrival = frame.arrival
        if not self._emit(source, frame, pts, resync):
            return False
        self.frames_sent += 1
        return True

    def _emit(self, source: Source, frame: EncodedFrame, pts: int, resync: bool) -> bool:
        raise NotImplementedError

    def need_keyframe(self) -> None:
        """Forward nothing more until the current source's next keyframe (asked for)."""
        if self.kind == "video":
            self._need_keyframe = True
            if self.current is not None:
                self.current.request_keyframe()

    def request_keyframe(self) -> None:
        """The subscriber reported picture loss (PLI/FIR): pass it on to the publisher of what it shows."""
        source = self.pending or self.current
        if source is not None:
            source.request_keyframe()


_HEADER = struct.Struct("!BBHII")


class RtpStream:
    """One outgoing RTP stream of a slot (RFC 3550 section 5.1), as bytes: pure, no I/O.

    Every frame becomes one packet per payload with the stream's SSRC and payload type, consecutive
    sequence numbers, the frame's outgoing timestamp and the marker bit on the last packet. Header
    extensions (RFC 8285 one-byte form): ``mid`` (RFC 8843 section 15) and abs-send-time, which the
    receiver's bandwidth estimator needs for REMB. VP8 picture IDs are shifted to continue over a
    switch. The last packets are kept to answer NACKs (RFC 4585 section 6.2.1), by RTX (RFC 4588)
    when negotiated.
    """

    HISTORY = 512

    def __init__(
        self,
        ssrc: int,
        payload_type: int,
        *,
        codec: str = "VP8",
        mid: str | None = None,
        mid_id: int | None = None,
        abs_send_time_id: int | None = None,
        rtx_ssrc: int | None = None,
        rtx_payload_type: int | None = None,
        sequence: int | None = None,
        timestamp_base: int | None = None,
    ) -> None:
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.codec = codec.upper()
        self.rtx_ssrc = rtx_ssrc
        self.rtx_payload_type = rtx_payload_type
        self.sequence = random.randrange(0x8000) if sequence is None else sequence
        self._rtx_sequence = random.randrange(0x8000)
        self.timestamp_base = random.randrange(1 << 32) if timestamp_base is None else timestamp_base
        self._mid_element = b""
        if mid is not None and mid_id:
            raw = mid.encode()
            self._mid_element = bytes([(mid_id << 4) | (len(raw) - 1)]) + raw
        self._ast_id = abs_send_time_id or 0
        self._history: list[tuple[int, bytes, int] | None] = [None] * self.HISTORY
        self.packets_sent = 0
        self.octets_sent = 0
        self.last_timestamp = 0
        # VP8: picture ID and TL0PICIDX shifts (RFC 7741 section 4.2) and the last ones written.
        self._picture_delta = 0
        self._tl0_delta = 0
        self._last_picture: int | None = None
        self._last_tl0: int | None = None

    def _extension(self, abs_send_time: int | None) -> bytes:
        elements = self._mid_element
        if self._ast_id and abs_send_time is not None:
            elements += bytes([(self._ast_id << 4) | 2]) + (abs_send_time & 0xFFFFFF).to_bytes(3)
        if not elements:
            return b""
        padded = elements + b"\x00" * (-len(elements) % 4)
        return b"\xbe\xde" + (len(padded) // 4).to_bytes(2) + padded

    def frame(
        self, payloads: list[bytes], timestamp: int, *, resync: bool = False, abs_send_time: int | None = None
    ) -> list[bytes]:
        """The packets of one frame; ``timestamp`` is the slot's outgoing timeline (unwrapped)."""
        if self.codec == "VP8" and payloads:
            payloads = self._vp8(payloads, resync)
        ext = self._extension(abs_send_time)
        first = 0x90 if ext else 0x80
        ts = (self.timestamp_base + timestamp) & 0xFFFFFFFF
        pt = self.payload_type
        ssrc = self.ssrc
        seq = self.sequence
        last = len(payloads) - 1
        header_size = 12 + len(ext)
        history = self._history
        out: list[bytes] = []
        octets = 0
        for i, payload in enumerate(payloads):
            packet = _HEADER.pack(first, pt | (0x80 if i == last else 0), seq, ts, ssrc) + ext + payload
            history[seq % self.HISTORY] = (seq, packet, header_size)
            out.append(packet)
            octets += len(payload)
            seq = (seq + 1) & 0xFFFF
        self.sequence = seq
        self.packets_sent += len(out)
        self.octets_sent += octets
        self.last_timestamp = ts
        return out

    def _vp8(self, payloads: list[bytes], resync: bool) -> list[bytes]:
        try:
            head = vp8.parse(payloads[0])
        except ValueError:
            return payloads
        if resync:
            # A new source on this stream: continue its picture numbers from the last ones sent.
            if head.picture_id is not None and self._last_picture is not None:
                modulo = 0x8000 if head.picture_id_bits == 15 else 0x80
                self._picture_delta = (self._last_picture + 1 - head.picture_id) % modulo
            else:
                self._picture_delta = 0
            if head.tl0picidx is not None and self._last_tl0 is not None:
                self._tl0_delta = (self._last_tl0 + 1 - head.tl0picidx) & 0xFF
            else:
                self._tl0_delta = 0
        if head.picture_id is not None:
            modulo = 0x8000 if head.picture_id_bits == 15 else 0x80
            self._last_picture = (head.picture_id + self._picture_delta) % modulo
        if head.tl0picidx is not None:
            self._last_tl0 = (head.tl0picidx + self._tl0_delta) & 0xFF
        if not self._picture_delta and not self._tl0_delta:
            return payloads
        out = []
        for payload in payloads:
            try:
                out.append(vp8.shift(payload, vp8.parse(payload), self._picture_delta, self._tl0_delta))
            except ValueError:
                out.append(payload)
        return out

    def retransmission(self, sequence: int) -> bytes | None:
        """The packet to send again for a NACKed ``sequence``: wrapped in RTX when negotiated."""
        entry = self._history[sequence % self.HISTORY]
        if entry is None or entry[0] != sequence:
            return None
        _, packet, header_size = entry
        if self.rtx_ssrc is None or self.rtx_payload_type is None:
            return packet
        # RFC 4588 section 4: the RTX payload is the original sequence number, then the payload.
        first, second, _, ts, _ = _HEADER.unpack_from(packet)
        rtx = (
            _HEADER.pack(
                first, (second & 0x80) | self.rtx_payload_type, self._rtx_sequence, ts, self.rtx_ssrc
            )
            + packet[12:header_size]
            + sequence.to_bytes(2)
            + packet[header_size:]
        )
        self._rtx_sequence = (self._rtx_sequence + 1) & 0xFFFF
        return rtx


Sink = Callable[[list[bytes]], None]


class RtpForwarder(Switch):
    """A participant's receiving slot: frames go out as RTP packets to ``sink`` the moment they arrive.

    ``sink`` (see :mod:`dispatchd.video.seam`) protects each packet with the subscriber's SRTP
    session and sends it on the subscriber's ICE connection. Until the connection is up there is no
    sink; frames are dropped and the slot starts at a keyframe once it is.
    """

    def __init__(self, kind: str, *, label: str = "", totals: ForwardingTotals | None = None) -> None:
        self._init_switch(kind, label, totals)
        self.stream: RtpStream | None = None
        self.sink: Sink | None = None
        # Measuring hook (the benchmark): called with the frame after its packets went to the sink.
        self.on_sent: Callable[[EncodedFrame], None] | None = None

    def attach(self, stream: RtpStream, sink: Sink) -> None:
        """Start sending on ``stream`` through ``sink`` (the connection is up); begins at a keyframe."""
        self.stream, self.sink = stream, sink
        self.need_keyframe()

    def detach(self) -> None:
        self.sink = None

    def _emit(self, source: Source, frame: EncodedFrame, pts: int, resync: bool) -> bool:
        sink, stream = self.sink, self.stream
        if sink is None or stream is None:
            self._resync = True
            return False
        # abs-send-time (6.18 fixed-point seconds, 24 bits): the frame goes out as it arrives.
        ast = int(frame.arrival * 262144) & 0xFFFFFF
        sink(stream.frame(source.payloads(frame), pts, resync=resync, abs_send_time=ast))
        if self.on_sent is not None:
            self.on_sent(frame)
        return True

    def retransmit(self, sequences: list[int]) -> None:
        """The subscriber NACKed ``sequences``: send those still held again."""
        sink, stream = self.sink, self.stream
        if sink is None or stream is None:
            return
        packets = [p for p in (stream.retransmission(s) for s in sequences) if p is not None]
        if packets:
            sink(packets)

    def stop(self) -> None:
        self.show(None)
        self.sink = None


class ForwardedTrack(MediaStreamTrack, Switch):
    """A slot whose frames are read with ``recv()`` as encoded ``av.Packet`` s (the recorder's)."""

    def __init__(
        self, kind: str, *, queue_frames: int = 30, label: str = "", totals: ForwardingTotals | None = None
    ) -> None:
        MediaStreamTrack.__init__(self)
        self._init_switch(kind, label, totals)
        self.kind = kind
        self._time_base = fractions.Fraction(1, self.clock_rate)
        self._queue: asyncio.Queue[tuple[int, bytes] | None] = asyncio.Queue(queue_frames)

    def _emit(self, source: Source, frame: EncodedFrame, pts: int, resync: bool) -> bool:
        try:
            self._queue.put_nowait((pts, frame.data))
        except asyncio.QueueFull:
            self._skip_to_keyframe()
            return False
        return True

    def _skip_to_keyframe(self) -> None:
        """The reader is behind: drop what is queued and resume at a keyframe."""
        self.skips += 1
        self.totals.skips += 1
        while not self._queue.empty():
            self._queue.get_nowait()
        self.need_keyframe()

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
        return packet

    def stop(self) -> None:
        self.show(None)
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)
        super().stop()
