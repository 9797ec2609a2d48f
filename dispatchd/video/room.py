"""Rooms: the live side of a meeting on this instance — participants, peer connections, forwarding.

A room exists while someone is connected. Each participant has one ``RTCPeerConnection`` to the
server; the m-lines the participant sends on become :class:`~dispatchd.video.forward.Source` s
(through the receiver tap of :mod:`dispatchd.video.seam`) — one per simulcast layer when it sends
several — and the m-lines it receives on become slots, each an
:class:`~dispatchd.video.forward.RtpForwarder` writing straight to the participant's connection
(:class:`~dispatchd.video.seam.DirectSender`). After every change the room asks the
:class:`~dispatchd.video.layout.Screen` what each participant should see, how large, and hear, and
points each slot at the layer of that site its size and the participant's link call for
(:mod:`dispatchd.video.simulcast`): only what is shown is forwarded.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import structlog
from aiortc import (
    RTCBundlePolicy,
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.sdp import SessionDescription, candidate_from_sdp

from dispatchd.config import VideoSettings
from dispatchd.live.protocol import Socket
from dispatchd.rtc import close_peer
from dispatchd.video import seam, simulcast
from dispatchd.video.forward import ForwardingTotals, RtpForwarder, Source, Switch
from dispatchd.video.layout import LayoutError, Screen
from dispatchd.video.signalling import CHAIR_ONLY, WALL, Message, ProtocolError, candidate_fields, dumps
from dispatchd.video.store import Invite, Meeting

if TYPE_CHECKING:
    from dispatchd.video.recording import Recorder

log = structlog.get_logger("dispatchd.video")

_SERVER_DIRECTION = {
    # (participant sends, participant receives) -> the server's direction on that m-line
    (True, True): "sendrecv",
    (True, False): "recvonly",
    (False, True): "sendonly",
    (False, False): "inactive",
}


def ice_configuration(settings: VideoSettings) -> RTCConfiguration:
    """ICE servers from settings; none by default, so no public STUN server is tried."""
    urls = settings.ice_servers.split()
    servers = [
        RTCIceServer(
            urls=url, username=settings.ice_username or None, credential=settings.ice_credential or None
        )
        for url in urls
    ]
    # One transport for every m-line (max-bundle): with aiortc's default "balanced" policy, an offer
    # whose first m-line is audio followed by several video m-lines leaves the later video ones on a
    # transport that bundling then discards, and nothing is ever sent on them.
    return RTCConfiguration(iceServers=servers, bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)


@dataclass(eq=False)
class Slot:
    mid: str
    kind: str
    track: Switch
    direct: seam.DirectSender | None = None


@dataclass(eq=False)
class Participant:
    invite: Invite
    ws: Socket | None = None
    pc: RTCPeerConnection | None = None
    sources: dict[str, Source] = field(default_factory=dict)
    layers: list[Source] = field(default_factory=list)  # simulcast: every layer of its camera
    rids: dict[str, list[str]] = field(default_factory=dict)  # simulcast: mid -> rids it sends there
    slots: list[Slot] = field(default_factory=list)
    tapped: set[str] = field(default_factory=set)  # mids whose receiver hands on encoded frames
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    last_screen: str = ""
    asked: tuple[int, int] = (0, 0)  # (video, audio) slots last asked for with ``renegotiate``
    closed: bool = False
    link: simulcast.LinkEstimate = field(default_factory=simulcast.LinkEstimate)
    last_remb: tuple[float, float] = (0.0, 0.0)  # (bits per second, when): one REMB names every slot

    def video_layers(self) -> list[Source]:
        """The layers of its camera to choose from: the simulcast ones, or its one video source."""
        if self.layers:
            return self.layers
        video = self.sources.get("video")
        return [video] if video is not None else []

    @property
    def id(self) -> str:
        return self.invite.participant_id

    @property
    def is_chair(self) -> bool:
        return self.invite.role == "chair"

    async def send(self, text: str) -> None:
        if self.ws is not None and not self.ws.closed:
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                pass


Actor = Callable[[str, dict[str, Any], bool], Awaitable[None]]
RecordingSwitch = Callable[["Room", bool, str], Awaitable[None]]


PEER_CLOSE_TIMEOUT = 10.0


async def _close_peer(pc: RTCPeerConnection, meeting_id: int, participant: str) -> None:
    try:
        async with asyncio.timeout(PEER_CLOSE_TIMEOUT):
            await close_peer(pc)
    except TimeoutError:
        log.warning("peer_close_timeout", meeting_id=meeting_id, participant=participant)
    except Exception as exc:  # aiortc's own close failing must not stop the room
        log.warning("peer_close_failed", meeting_id=meeting_id, participant=participant, error=repr(exc))


class Room:
    """One meeting's participants and forwarding on this instance."""

    def __init__(
        self,
        meeting: Meeting,
        invites: list[Invite],
        settings: VideoSettings,
        monotonic: Callable[[], float],
        audit: Actor,
        recording: RecordingSwitch | None = None,
        totals: ForwardingTotals | None = None,
    ) -> None:
        self.meeting = meeting
        self.totals = totals or ForwardingTotals()
        self.settings = settings
        self.invites = {inv.participant_id: inv for inv in invites}
        self.participants: dict[str, Participant] = {}
        self.screen = Screen(slots=settings.screen_slots)
        self.screen.order = list(self.invites)  # roll order: the convening list, chair first
        self._monotonic = monotonic
        self._audit = audit
        self._recording = recording
        self.recorder: Recorder | None = None
        self.pullers: dict[str, Any] = {}
        self.closed = False
        self._ticker: asyncio.Task[None] | None = None
        self._background: set[asyncio.Future[None]] = set()

    # -- membership ---------------------------------------------------------------------------
    async def join(self, invite: Invite, ws: Socket | None) -> Participant:
        self.invites[invite.participant_id] = invite
        if invite.participant_id not in self.screen.order:
            self.screen.order.append(invite.participant_id)
        old = self.participants.get(invite.participant_id)
        if old is not None:  # the same link opened again (a reload): the newer connection wins
            await old.send(dumps("error", code="replaced", message="在另一处加入了会议 / joined elsewhere"))
            await self._drop(old)
        p = Participant(invite, ws)
        self.participants[p.id] = p
        self.screen.join(p.id, chair=p.is_chair)
        if p.is_chair:
            self.screen.take_chair(p.id)
        await p.send(
            dumps(
                "welcome",
                you=invite.as_json(),
                meeting=self.meeting.as_json(),
                slots=self.settings.screen_slots,
                ice_servers=[
                    {
                        "urls": u,
                        "username": self.settings.ice_username,
                        "credential": self.settings.ice_credential,
                    }
                    if self.settings.ice_username
                    else {"urls": u}
                    for u in self.settings.ice_servers.split()
                ],
            )
        )
        log.info("participant_joined", meeting_id=self.meeting.id, participant=p.id, label=invite.label)
        self._ensure_ticker()
        await self.relayout(roster=True)
        return p

    async def leave(self, p: Participant) -> None:
        if self.participants.get(p.id) is p:
            await self._drop(p)
            log.info("participant_left", meeting_id=self.meeting.id, participant=p.id)
            await self.relayout(roster=True)

    async def _drop(self, p: Participant) -> None:
        p.closed = True
        if self.participants.get(p.id) is p:
            del self.participants[p.id]
        self.screen.leave(p.id)
        for source in p.sources.values():
            source.end()
        p.sources.clear()
        for slot in p.slots:
            slot.track.show(None)
            if slot.direct is not None:
                slot.direct.stop()
        if p.pc is not None:
            # Closed in the background, within a bound: aiortc's close waits on its senders and
            # transports, and the others' screens must not wait for a peer that is gone.
            self.later(_close_peer(p.pc, self.meeting.id, p.id))
        if p.ws is not None and not p.ws.closed:
            await p.ws.close()

    def add_source_participant(self, invite: Invite) -> Participant:
        """A pulled source (RTSP camera): present on the roster, never sends or receives SDP."""
        p = Participant(invite)
        self.invites[invite.participant_id] = invite
        self.participants[p.id] = p
        self.screen.join(p.id)
        return p

    def publish(self, p: Participant, kind: str, source: Source, layers: list[Source] | None = None) -> None:
        old = p.sources.get(kind)
        if old is not None and old is not source:
            old.end()
        if kind == "video":
            for layer in p.layers:
                if layer is not source and layer not in (layers or []):
                    layer.end()
            p.layers = list(layers or [])
        p.sources[kind] = source

    # -- signalling ---------------------------------------------------------------------------
    async def handle(self, p: Participant, msg: Message) -> None:
        if msg.type in CHAIR_ONLY and not p.is_chair:
            raise ProtocolError("not_chair", "只有主持人可以这样做", "only the chair may do this")
        if msg.type in WALL:
            await self.wall_command(p, msg)
            return
        if msg.type == "offer":
            p.asked = (0, 0)
            answer = await self.negotiate(p, msg.str_field("sdp") or "")
            await p.send(dumps("answer", sdp=answer))
            await self.relayout(roster=True)
        elif msg.type == "candidate":
            await self.add_candidate(p, msg)
        elif msg.type == "hand":
            self.screen.raise_hand(p.id, bool(msg.data["raised"]))
            await self.relayout(roster=True)
        elif msg.type == "leave":
            await self.leave(p)
        else:
            await self.chair_command(p, msg)

    async def chair_command(self, p: Participant, msg: Message) -> None:
        target = msg.data.get("participant")
        if target is not None and not isinstance(target, str):
            raise ProtocolError("bad_field", "participant 应为字符串", "participant must be a string")
        try:
            if msg.type == "rollcall":
                self.screen.roll_call(target)
                await self._audit("rollcall", {"participant": target, "by": p.id}, True)
            elif msg.type == "rotate":
                sites = msg.data.get("participants")
                if sites is not None and not (
                    isinstance(sites, list) and all(isinstance(s, str) for s in sites)
                ):
                    raise ProtocolError(
                        "bad_field", "participants 应为字符串数组", "participants must be strings"
                    )
                self.screen.rotate(sites, self._interval(msg), self._monotonic())
                await self._audit("rotate", {"sites": self.screen.as_json()["rotation"]}, True)
            elif msg.type == "rotate_stop":
                self.screen.stop_rotation()
            elif msg.type == "mute":
                if not isinstance(target, str):
                    raise ProtocolError("bad_field", "缺少 participant", "participant is missing")
                muted = bool(msg.data["muted"])
                self.screen.mute(target, muted)
                other = self.participants.get(target)
                if other is not None:
                    await other.send(dumps("muted", muted=muted))
                await self._audit("mute", {"participant": target, "muted": muted}, False)
            elif msg.type == "wall_allow":
                if not isinstance(target, str):
                    raise ProtocolError("bad_field", "缺少 participant", "participant is missing")
                allowed = bool(msg.data["allowed"])
                self.screen.allow_wall(target, allowed)
                await self._audit("wall_allow", {"participant": target, "allowed": allowed}, False)
            elif msg.type == "record":
                await self.set_recording(bool(msg.data["on"]), p.invite.label)
            elif msg.type == "end":
                await self._audit("end_requested", {"by": p.id}, False)
                await self.end()
                return
        except LayoutError as exc:
            raise ProtocolError(exc.code, exc.message_zh, exc.message_en) from None
        await self.relayout(roster=True)

    def _interval(self, msg: Message) -> float:
        """A rotation's seconds per step (sites or pages): 1–3600, the configured one by default."""
        interval = msg.data.get("interval", self.settings.rotation_interval)
        if not isinstance(interval, int | float) or isinstance(interval, bool) or not 1 <= interval <= 3600:
            raise ProtocolError("bad_field", "interval 应在 1 到 3600 秒之间", "interval must be 1–3600 s")
        return float(interval)

    async def wall_command(self, p: Participant, msg: Message) -> None:
        """A wall's layout, page and page rotation: the chair's, or a site's the chair allowed."""
        try:
            if msg.type == "layout":
                self.screen.set_layout(p.id, msg.int_field("tiles"))
            elif msg.type == "page":
                self.screen.turn_page(p.id, msg.int_field("page"))
            elif msg.type == "page_rotate":
                self.screen.rotate_pages(p.id, self._interval(msg), self._monotonic())
            elif msg.type == "page_rotate_stop":
                self.screen.stop_pages(p.id)
        except LayoutError as exc:
            raise ProtocolError(exc.code, exc.message_zh, exc.message_en) from None
        await self.relayout()

    async def negotiate(self, p: Participant, sdp: str) -> str:
        """Apply the participant's offer; tap what it sends, give slots for what it receives."""
        async with p.lock:
            if p.closed:
                raise ProtocolError("left", "已离开会议", "you have left the meeting")
            try:
                parsed = SessionDescription.parse(sdp)
            except Exception:
                raise ProtocolError("bad_sdp", "SDP 无法解析", "the SDP offer cannot be parsed") from None
            directions = {m.rtp.muxId: m.direction for m in parsed.media if m.kind in ("audio", "video")}
            offered = simulcast.offered_layers(sdp)
            if p.pc is None:
                p.pc = self._new_peer(p)
            pc = p.pc
            try:
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            except Exception as exc:
                raise ProtocolError(
                    "bad_sdp", f"无法接受此 SDP：{exc}", f"the offer was refused: {exc}"
                ) from None
            for t in pc.getTransceivers():
                if t.mid is None or t.mid not in directions:
                    continue
                rids = offered.get(t.mid) if t.kind == "video" else None
                if rids and (t.mid in p.rids or t.mid not in p.tapped):
                    p.rids[t.mid] = rids
                    seam.accept_rid_extensions(t, simulcast.extension_ids(sdp, t.mid))
                self._configure(p, t, directions[t.mid] or "sendrecv")
            answer = await pc.createAnswer()
            await pc.setLocalDescription(answer)
            if pc.connectionState == "connected":
                self._start_sending(p)
            # aiortc knows nothing of simulcast: the answer accepts the layers here (RFC 8853).
            layers = {mid: rids for mid, rids in p.rids.items() if mid in offered}
            return simulcast.answer_layers(pc.localDescription.sdp, layers, sdp)

    def _configure(self, p: Participant, t: RTCRtpTransceiver, remote_direction: str) -> None:
        kind = t.kind
        codec = "opus" if kind == "audio" else self.meeting.codec
        sends = remote_direction in ("sendonly", "sendrecv")
        receives = remote_direction in ("recvonly", "sendrecv")
        if (sends or receives) and not seam.restrict_codecs(t, codec):
            raise ProtocolError(
                "codec",
                f"本会议使用 {codec} 编码，浏览器未提供",
                f"this meeting uses {codec}; the offer lacks it",
            )
        assert t.mid is not None
        if sends and t.mid not in p.tapped:
            rids = p.rids.get(t.mid)
            if rids:
                layers = [Source(p.id, kind, codec, totals=self.totals, rid=rid) for rid in rids]
                tap = seam.tap_receiver(
                    t.receiver, kind, codec, layers[0].deliver, {s.rid or "": s.deliver for s in layers}
                )
                for layer in layers:
                    layer._request_keyframe = lambda rid=layer.rid: tap.request_keyframe(rid)
                self.publish(p, kind, layers[0], layers)
                log.info("simulcast_published", meeting_id=self.meeting.id, participant=p.id, rids=rids)
            else:
                source = Source(p.id, kind, codec, totals=self.totals)
                tap = seam.tap_receiver(t.receiver, kind, codec, source.deliver)
                source._request_keyframe = tap.request_keyframe
                self.publish(p, kind, source)
            p.tapped.add(t.mid)
        if receives and not any(s.mid == t.mid for s in p.slots):
            forwarder = RtpForwarder(kind, label=f"{p.id}:{t.mid}", totals=self.totals)
            direct = seam.DirectSender(t, forwarder, lambda what, value: self._feedback(p, what, value))
            forwarder.on_change = lambda _track: self.later(self._screen_to(p))
            p.slots.append(Slot(t.mid, kind, forwarder, direct))
        t.direction = _SERVER_DIRECTION[(sends, receives)]

    def _start_sending(self, p: Participant) -> None:
        """The connection is up: every slot not yet sending starts (at a keyframe)."""
        for slot in p.slots:
            if slot.direct is not None and isinstance(slot.track, RtpForwarder) and slot.track.sink is None:
                slot.direct.start()

    def _feedback(self, p: Participant, what: str, value: float) -> None:
        """REMB or receiver-report loss from ``p``'s browser: lower its layers when its link is short."""
        now = self._monotonic()
        sending = sum(
            s.track.current.bitrate for s in p.slots if s.kind == "video" and s.track.current is not None
        )
        if what == "remb":
            if p.last_remb[0] == value and now - p.last_remb[1] < 0.1:
                return  # the same REMB, routed to each slot it names
            p.last_remb = (value, now)
            lowered = p.link.on_remb(value, sending, now)
        else:
            lowered = p.link.on_loss(value, sending, now)
        if lowered:
            log.info("link_short", meeting_id=self.meeting.id, participant=p.id, budget=p.link.budget)
            self._apply(p)

    def _new_peer(self, p: Participant) -> RTCPeerConnection:
        pc = RTCPeerConnection(ice_configuration(self.settings))

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            log.info("peer_state", meeting_id=self.meeting.id, participant=p.id, state=pc.connectionState)
            if pc.connectionState == "connected":
                self._start_sending(p)
            # Its media is gone (ICE failed, or consent expired: the browser vanished without a
            # word on the signalling socket): the site has left, and the others' screens say so.
            if pc.connectionState in ("failed", "closed") and not p.closed:
                await self.leave(p)

        return pc

    async def add_candidate(self, p: Participant, msg: Message) -> None:
        fields = candidate_fields(msg)
        async with p.lock:
            if p.pc is None or p.pc.remoteDescription is None:
                raise ProtocolError("no_offer", "请先发送 offer", "send the offer before candidates")
            if fields is None:
                await p.pc.addIceCandidate(None)  # end of candidates
                return
            line, mid, index = fields
            try:
                candidate = candidate_from_sdp(line)
            except (ValueError, IndexError):
                raise ProtocolError(
                    "bad_candidate", "ICE 候选格式错误", "the ICE candidate cannot be parsed"
                ) from None
            candidate.sdpMid = mid
            candidate.sdpMLineIndex = index if index is not None else (0 if mid is None else None)
            await p.pc.addIceCandidate(candidate)

    # -- what everyone sees -------------------------------------------------------------------
    async def relayout(self, *, roster: bool = False) -> None:
        """Point every slot at what the screen says; tell participants what changed."""
        for p in list(self.participants.values()):
            self._apply(p)
        if self.recorder is not None:
            self.recorder.show(
                [self._best_layer(pid) for pid in self.screen.on_screen()],
                self._sources_of([x for x in self.screen.on_screen() if x not in self.screen.muted], "audio"),
            )
        if roster:
            text = dumps("roster", participants=self.roster(), screen=self.screen.as_json())
            await asyncio.gather(*(p.send(text) for p in list(self.participants.values())))
        await asyncio.gather(*(self._tell(p) for p in list(self.participants.values())))

    async def _tell(self, p: Participant) -> None:
        await self._screen_to(p)
        await self._ask_for_slots(p)

    async def _ask_for_slots(self, p: Participant) -> None:
        """Ask for a new offer when ``p`` is to receive more of a kind than it has m-lines for.

        Only for kinds it receives at all (a participant that offered no audio slot wants none) and
        only once per need: its next offer resets the question. The page then adds ``recvonly``
        transceivers up to ``video``/``audio`` and offers again on the same connection.
        """
        if p.pc is None or p.pc.remoteDescription is None or not p.slots:
            return
        have = Counter(slot.kind for slot in p.slots)
        need = {"video": len(self.screen.shown_for(p.id)), "audio": len(self.screen.heard_by(p.id))}
        wanted = tuple(max(have[k], need[k]) if have[k] else 0 for k in ("video", "audio"))
        held = (have["video"], have["audio"])
        if all(w <= max(h, a) for w, h, a in zip(wanted, held, p.asked, strict=True)):
            return  # enough m-lines, or asked for them already
        p.asked = (max(wanted[0], p.asked[0]), max(wanted[1], p.asked[1]))
        self.totals.renegotiations += 1
        log.info(
            "renegotiate_asked",
            meeting_id=self.meeting.id,
            participant=p.id,
            video=wanted[0],
            audio=wanted[1],
        )
        await p.send(dumps("renegotiate", video=wanted[0], audio=wanted[1]))

    def _sources_of(self, pids: list[str], kind: str) -> list[Source | None]:
        out: list[Source | None] = []
        for pid in pids:
            other = self.participants.get(pid)
            out.append(other.sources.get(kind) if other is not None else None)
        return out

    def _best_layer(self, pid: str) -> Source | None:
        """The highest layer of a site's camera (what the recorder keeps)."""
        other = self.participants.get(pid)
        if other is None:
            return None
        layers = other.video_layers()
        choice = simulcast.choose_layer([self._layer_view(s) for s in layers], "large")
        return layers[choice] if choice is not None else None

    def _layer_view(self, source: Source) -> simulcast.Layer:
        # Frames carry the media edge's arrival times (the event loop's clock): compare with that.
        now = asyncio.get_running_loop().time()
        return simulcast.Layer(source.active(now), source.pixels, source.bitrate)

    def _apply(self, p: Participant) -> None:
        """Point ``p``'s slots at what it is to see (the layer its size and link call for) and hear."""
        view = self.screen.view_for(p.id)
        pictures: list[simulcast.Picture] = []
        choices: list[list[Source]] = []
        for shown in view:
            other = self.participants.get(shown.participant)
            layers = other.video_layers() if other is not None else []
            choices.append(layers)
            pictures.append(simulcast.Picture([self._layer_view(s) for s in layers], shown.size))
        picked = simulcast.allocate(pictures, p.link.budget)
        heard = self._sources_of(self.screen.heard_by(p.id), "audio")
        index = {"video": 0, "audio": 0}
        more = False
        for slot in p.slots:
            i = index[slot.kind]
            index[slot.kind] += 1
            source: Source | None = None
            if slot.kind == "video":
                if i < len(view) and picked[i] is not None:
                    source = choices[i][picked[i] or 0]
                before = slot.track.target
                if source is not None and source is not before:
                    more = more or before is None or source.bitrate > before.bitrate
            elif i < len(heard):
                source = heard[i]
            slot.track.show(source)
        if more:
            p.link.settle(self._monotonic())

    async def _screen_to(self, p: Participant) -> None:
        sizes = {v.participant: v.size for v in self.screen.view_for(p.id)}
        slots = [
            {
                "mid": s.mid,
                "kind": s.kind,
                "participant": s.track.showing,
                "label": self._label(s.track.showing),
                "size": sizes.get(s.track.showing or "") if s.kind == "video" else None,
                "layer": s.track.target.rid if s.track.target is not None else None,
            }
            for s in p.slots
        ]
        text = dumps(
            "screen",
            screen=self.screen.as_json(),
            slots=slots,
            shown=self.screen.shown_for(p.id),
            wall=self.screen.wall_json(p.id),
        )
        if text != p.last_screen:
            p.last_screen = text
            await p.send(text)

    def _label(self, pid: str | None) -> str | None:
        if pid is None:
            return None
        inv = self.invites.get(pid)
        return inv.label if inv else pid

    def roster(self) -> list[dict[str, Any]]:
        out = []
        for pid, inv in self.invites.items():
            p = self.participants.get(pid)
            out.append(
                {
                    **inv.as_json(),
                    "online": p is not None,
                    "publishing": sorted(p.sources) if p is not None else [],
                    "hand": pid in self.screen.hands,
                    "muted": pid in self.screen.muted,
                }
            )
        return out

    # -- rotation, recording, end -------------------------------------------------------------
    def later(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` soon (from a synchronous callback), keeping a reference until it is done."""
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _ensure_ticker(self) -> None:
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.ensure_future(self._tick_loop())

    async def _tick_loop(self) -> None:
        ticks = 0
        while not self.closed:
            await asyncio.sleep(0.2)
            ticks += 1
            now = self._monotonic()
            if self.screen.tick(now):
                await self.relayout(roster=True)
                continue
            for p in list(self.participants.values()):
                if p.link.tick(now):
                    log.info("link_probe", meeting_id=self.meeting.id, participant=p.id, budget=p.link.budget)
                    self._apply(p)
            if ticks % 5 == 0 and any(p.layers for p in self.participants.values()):
                # Simulcast layers pause, resume and change rate: choose again once a second.
                for p in list(self.participants.values()):
                    self._apply(p)

    async def set_recording(self, on: bool, actor: str) -> None:
        if self._recording is None:
            raise ProtocolError("no_recording", "此会议不能录制", "this meeting cannot be recorded")
        await self._recording(self, on, actor)

    async def end(self) -> None:
        """End the meeting for everyone on this instance."""
        for p in list(self.participants.values()):
            await p.send(dumps("ended"))
        await self.close()

    async def close(self) -> None:
        self.closed = True
        if self._ticker is not None:
            self._ticker.cancel()
        for puller in list(self.pullers.values()):
            await puller.stop()
        self.pullers.clear()
        if self.recorder is not None:
            await self.set_recording(False, "system")
        for p in list(self.participants.values()):
            await self._drop(p)

    @property
    def online(self) -> int:
        return sum(1 for p in self.participants.values() if p.ws is not None)
