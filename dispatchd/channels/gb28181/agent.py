"""The platform's SIP user agent for GB/T 28181 devices, sans I/O: bytes and commands in, bytes and
device events out.

It is the transaction user (RFC 3261 §8, §12, §13.2) on the hotline's
:class:`~dispatchd.channels.hotline.transaction.TransactionLayer`, and what it does follows
GB/T 28181-2016 §9:

* **REGISTER** (§9.1): 401 with a digest challenge, 200 with ``Expires`` and a ``Date`` the device
  may set its clock by (§9.1.2.1), 403 for wrong credentials, 400 for an id that is not 20 digits,
  503 when the registry is full. ``Expires: 0`` unregisters.
* **MESSAGE** with ``Application/MANSCDP+xml`` (§9.3–§9.6, §9.11) from a registered device, from the
  address it registered from: 200, then the event — Keepalive, Catalog (gathered over its parts),
  DeviceInfo, DeviceStatus, Alarm (answered with ``Response/Alarm`` ``Result OK``), MobilePosition.
  From an unknown device or another address: 403. Malformed XML or a body in no known encoding:
  400 naming the problem. Another content type: 415.
* **NOTIFY** of a subscription (§9.11, RFC 6665): 200 and the same events (catalogue changes,
  alarms).
* **BYE** from a device ends its stream (§9.2.2.3); **OPTIONS** 200; **ACK** absorbed; **CANCEL**
  481 (nothing of ours can be cancelled); other methods 405 or 501.

Commands, each a client transaction: :meth:`Gb28181Agent.query` (``Query``: Catalog, DeviceInfo,
DeviceStatus …), :meth:`~Gb28181Agent.control` (``DeviceControl``: PTZCmd, IFameCmd),
:meth:`~Gb28181Agent.subscribe` (SUBSCRIBE with a ``Query`` body, §9.11; refreshed in its dialog
before it expires), :meth:`~Gb28181Agent.invite` (live view, §9.2.2.1: ``Subject`` naming sender and
receiver, the SDP offer; the 2xx is ACKed, §13.2.2.4) and :meth:`~Gb28181Agent.bye`.

Flood limits (:class:`~dispatchd.channels.gb28181.registry.TokenBuckets`): per source socket
(address and port, or TCP connection) before anything is parsed, then per device; what is over the
limit is dropped unanswered.
"""

from __future__ import annotations

import itertools
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final, TypeAlias

from dispatchd.channels.gb28181 import manscdp
from dispatchd.channels.gb28181.manscdp import (
    Alarm,
    Catalog,
    CatalogItem,
    DeviceInfo,
    DeviceStatus,
    ManscdpError,
    MediaStatus,
    MobilePosition,
    Query,
    RecordInfo,
    Result,
)
from dispatchd.channels.gb28181.registry import (
    Accepted,
    CameBack,
    CatalogCollector,
    Challenge,
    Refused,
    Registered,
    Registry,
    TokenBuckets,
    Unregistered,
    WentOffline,
)
from dispatchd.channels.gb28181.sdp import GbSdp, SdpError, parse_sdp
from dispatchd.channels.hotline.sip import (
    MAGIC_COOKIE,
    Headers,
    Request,
    Response,
    SipParseError,
    parse_message,
    parse_name_addr,
    parse_uri,
    response_to,
)
from dispatchd.channels.hotline.transaction import (
    AckReceived,
    ClientResponse,
    ClientTimeout,
    Peer,
    RequestReceived,
    Send,
    ServerTimeout,
    Timers,
    TransactionLayer,
    TxKey,
    response_destination,
    stamp_via,
)

__all__ = [
    "ALLOWED_METHODS",
    "AgentConfig",
    "AlarmReceived",
    "AuthFailed",
    "CatalogChanged",
    "CatalogReceived",
    "DeviceInfoReceived",
    "DeviceOffline",
    "DeviceOnline",
    "DeviceRegistered",
    "DeviceStatusReceived",
    "DeviceUnregistered",
    "Dropped",
    "Gb28181Agent",
    "PlaybackFinished",
    "PositionReceived",
    "RecordsReceived",
    "RequestFailed",
    "StreamAnswered",
    "StreamEnded",
    "StreamFailed",
    "SubscriptionState",
]

ALLOWED_METHODS: Final = ("REGISTER", "MESSAGE", "NOTIFY", "BYE", "ACK", "OPTIONS", "CANCEL")
_ALLOW: Final = ", ".join(ALLOWED_METHODS)
_KNOWN_NOT_TAKEN: Final = frozenset({"INVITE", "PRACK", "SUBSCRIBE", "PUBLISH", "INFO", "REFER", "UPDATE"})


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """``host``: the address written in Via and Contact when the device's REGISTER named no IP."""

    platform_id: str
    domain: str
    host: str = "127.0.0.1"
    user_agent: str = "dispatchd"
    timers: Timers = field(default_factory=Timers)
    invite_timeout: float = 10.0
    rate: float = 20.0
    burst: int = 200


# ---- events -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceRegistered:
    device_id: str
    peer: Peer
    expires: int
    fresh: bool
    user_agent: str


@dataclass(frozen=True, slots=True)
class DeviceUnregistered:
    device_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class DeviceOffline:
    device_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class DeviceOnline:
    device_id: str


@dataclass(frozen=True, slots=True)
class AuthFailed:
    device_id: str
    peer: Peer
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class CatalogReceived:
    """A catalogue answer, gathered over its parts (``complete`` False: time ran out first)."""

    device_id: str
    items: tuple[CatalogItem, ...]
    complete: bool


@dataclass(frozen=True, slots=True)
class CatalogChanged:
    """Items of a catalogue notification (§9.11.1), each with its ``event`` (ON, OFF, ADD, DEL …)."""

    device_id: str
    items: tuple[CatalogItem, ...]


@dataclass(frozen=True, slots=True)
class DeviceInfoReceived:
    device_id: str
    info: DeviceInfo


@dataclass(frozen=True, slots=True)
class DeviceStatusReceived:
    device_id: str
    status: DeviceStatus


@dataclass(frozen=True, slots=True)
class AlarmReceived:
    device_id: str
    alarm: Alarm


@dataclass(frozen=True, slots=True)
class PositionReceived:
    device_id: str
    position: MobilePosition


@dataclass(frozen=True, slots=True)
class PlaybackFinished:
    """The device sent the end of a recording of ``channel_id`` (§9.8 MediaStatus 121)."""

    device_id: str
    channel_id: str


@dataclass(frozen=True, slots=True)
class RecordsReceived:
    """One part of a device's answer to a recordings query (§9.7), matched to the query by its SN."""

    device_id: str
    records: RecordInfo


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """A MESSAGE of ours was refused (``status``) or never answered (408)."""

    device_id: str
    cmd_type: str
    status: int


@dataclass(frozen=True, slots=True)
class SubscriptionState:
    """A subscription was accepted (``expires`` > 0) or refused/ended (``status`` ≥ 300 or 408)."""

    device_id: str
    event: str
    status: int
    expires: int


@dataclass(frozen=True, slots=True)
class StreamAnswered:
    """The device answered our INVITE ``call`` (2xx, ACKed) with ``sdp``."""

    call: str
    sdp: GbSdp


@dataclass(frozen=True, slots=True)
class StreamFailed:
    """Our INVITE ``call`` was refused (``status``), not answered in time (408) or answered badly."""

    call: str
    status: int
    reason: str


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The device ended stream ``call`` with a BYE (or its registration is gone)."""

    call: str
    reason: str


@dataclass(frozen=True, slots=True)
class Dropped:
    """A message was not acted on: ``reason`` is malformed_sip, malformed_xml, rate_limited,
    unregistered, wrong_address, bad_content_type …; ``answered`` when a response went back."""

    transport: str
    reason: str
    detail: str = ""
    answered: bool = False


Event: TypeAlias = (
    DeviceRegistered
    | DeviceUnregistered
    | DeviceOffline
    | DeviceOnline
    | AuthFailed
    | CatalogReceived
    | CatalogChanged
    | DeviceInfoReceived
    | DeviceStatusReceived
    | AlarmReceived
    | PositionReceived
    | RecordsReceived
    | PlaybackFinished
    | RequestFailed
    | SubscriptionState
    | StreamAnswered
    | StreamFailed
    | StreamEnded
    | Dropped
)
Effect: TypeAlias = Send | Event


# ---- dialogs --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Call:
    key: str
    device_id: str
    channel_id: str
    invite: Request
    tx_key: TxKey
    peer: Peer
    deadline: float | None
    state: str = "calling"  # calling, confirmed, abandoned, ended
    remote_tag: str = ""
    remote_target: str = ""
    bye_key: TxKey | None = None


@dataclass(slots=True)
class _Subscription:
    device_id: str
    event: str
    body: bytes
    call_id: str
    local_tag: str
    expires: int
    cseq: int = 1
    remote_tag: str = ""
    refresh_at: float | None = None
    tx_key: TxKey | None = None


@dataclass(frozen=True, slots=True)
class _Pending:
    """What one of our non-INVITE client transactions was for."""

    device_id: str
    method: str
    cmd_type: str


def _user_of(value: str | None) -> str:
    try:
        return parse_name_addr(value or "").parsed_uri().user or ""
    except SipParseError:
        return ""


def _is_ip(host: str) -> bool:
    parts = host.split(".")
    return (len(parts) == 4 and all(p.isdigit() and int(p) < 256 for p in parts)) or host.startswith("[")


def gb_date(wall: datetime) -> str:
    """The ``Date`` of a REGISTER 200 (§9.1.2.1): local time, milliseconds, no zone."""
    return wall.strftime("%Y-%m-%dT%H:%M:%S.") + f"{wall.microsecond // 1000:03d}"


class Gb28181Agent:
    """The platform side of GB/T 28181 signalling (see the module documentation)."""

    def __init__(
        self,
        registry: Registry,
        config: AgentConfig,
        local_port: Callable[[str], int],
        new_token: Callable[[], str] | None = None,
        collector: CatalogCollector | None = None,
    ) -> None:
        self.registry = registry
        self.config = config
        self.transactions = TransactionLayer(config.timers)
        self.collector = collector or CatalogCollector()
        self._local_port = local_port
        self._token = new_token or (lambda: secrets.token_hex(8))
        self._sn = itertools.count(secrets.randbelow(10_000) + 1)
        self._cseq = itertools.count(1)
        self._limits = TokenBuckets(config.rate, config.burst)
        self._calls: dict[str, _Call] = {}
        self._subscriptions: dict[tuple[str, str], _Subscription] = {}
        self._pending: dict[TxKey, _Pending] = {}
        self._local_hosts: dict[str, str] = {}

    # -- introspection ----------------------------------------------------------------------

    def calls(self) -> list[str]:
        return [key for key, call in self._calls.items() if call.state in ("calling", "confirmed")]

    def call_state(self, call: str) -> str | None:
        found = self._calls.get(call)
        return found.state if found is not None else None

    def local_host(self, device_id: str) -> str:
        """Our address as the device sees it (the host of its REGISTER's Request-URI when an IP)."""
        return self._local_hosts.get(device_id) or self.config.host

    # -- input ------------------------------------------------------------------------------

    def receive(self, data: bytes, peer: Peer, now: float, wall: datetime | None = None) -> list[Effect]:
        """One datagram, or one message framed from a TCP stream; ``wall`` is local time for ``Date``."""
        # Per source socket (address and port, or TCP connection): devices behind one NAT address
        # (4G cameras behind a carrier's NAT) each have their own.
        if not self._limits.allow(f"src:{peer.host}:{peer.port}:{peer.connection}", now):
            return [Dropped(peer.transport, "rate_limited", peer.host)]
        try:
            message = parse_message(data, datagram=not peer.reliable)
        except SipParseError as exc:
            return self.malformed(exc, peer)
        if isinstance(message, Response):
            return self._handle(self.transactions.receive_response(message, now), now, wall)
        request = stamp_via(message, peer)
        return self._handle(self.transactions.receive_request(request, peer, now), now, wall)

    def malformed(self, error: SipParseError, peer: Peer) -> list[Effect]:
        partial = error.partial
        if isinstance(partial, Request) and partial.method != "ACK":
            try:
                partial.vias[0]
                request = stamp_via(partial, peer)
            except (SipParseError, IndexError):
                return [Dropped(peer.transport, "malformed_sip", error.reason)]
            reason = "".join(ch for ch in error.reason if ch.isprintable())[:120]
            answer = self._decorate(
                response_to(request, 400, f"Bad Request - {reason}", to_tag=self._token())
            )
            return [
                Send(answer, response_destination(request, peer)),
                Dropped(peer.transport, "malformed_sip", error.reason, answered=True),
            ]
        return [Dropped(peer.transport, "malformed_sip", error.reason)]

    def tick(self, now: float) -> list[Effect]:
        """Transaction timers, offline devices, catalogue timeouts, INVITE timeouts, refreshes."""
        effects: list[Effect] = list(self._handle(self.transactions.tick(now), now, None))
        for event in self.registry.tick(now):
            effects += self._registry_event(event, now)
        for done in self.collector.tick(now):
            effects.append(CatalogReceived(done.device_id, done.items, False))
        for call in list(self._calls.values()):
            if call.state == "calling" and call.deadline is not None and now >= call.deadline:
                call.state = "abandoned"  # a 2xx that still comes is ACKed and ended with BYE
                call.deadline = now + 64 * self.config.timers.t1
                effects.append(StreamFailed(call.key, 408, "no answer in time"))
            elif call.state == "abandoned" and call.deadline is not None and now >= call.deadline:
                self._calls.pop(call.key, None)
        for sub in list(self._subscriptions.values()):
            if sub.refresh_at is not None and now >= sub.refresh_at:
                sub.refresh_at = None
                effects += self._send_subscribe(sub, now)
        return effects

    def next_deadline(self) -> float | None:
        deadlines = [
            self.transactions.next_deadline(),
            self.registry.next_deadline(),
            self.collector.next_deadline(),
        ]
        deadlines += [c.deadline for c in self._calls.values()]
        deadlines += [s.refresh_at for s in self._subscriptions.values()]
        found = [d for d in deadlines if d is not None]
        return min(found) if found else None

    # -- commands ---------------------------------------------------------------------------

    def next_sn(self) -> int:
        return next(self._sn)

    def query(
        self, device_id: str, cmd_type: str, now: float, *, target: str = "", fields: manscdp.Fields = ()
    ) -> tuple[int, list[Effect]]:
        """Send ``Query/cmd_type`` about ``target`` (the device by default); returns its SN."""
        sn = self.next_sn()
        body = manscdp.serialize(Query(cmd_type, sn, target or device_id, fields))
        return sn, self._message(device_id, target or device_id, cmd_type, body, now)

    def control(
        self, device_id: str, target: str, now: float, *, ptz_cmd: str = "", fields: manscdp.Fields = ()
    ) -> list[Effect]:
        """Send ``Control/DeviceControl`` to ``target`` (a channel of the device, §9.3)."""
        body = manscdp.serialize(manscdp.DeviceControl(self.next_sn(), target, ptz_cmd, fields))
        return self._message(device_id, target, "DeviceControl", body, now)

    def _message(self, device_id: str, target: str, cmd_type: str, body: bytes, now: float) -> list[Effect]:
        device = self.registry.get(device_id)
        if device is None:
            return [RequestFailed(device_id, cmd_type, 404)]
        request = self._request(
            "MESSAGE",
            device_id,
            target,
            call_id=self._token() + "@" + self.local_host(device_id),
            from_tag=self._token(),
            cseq=next(self._cseq),
            extra=[("Content-Type", manscdp.CONTENT_TYPE)],
            body=body,
        )
        key, effects = self.transactions.send_request(request, device.peer, now)
        self._pending[key] = _Pending(device_id, "MESSAGE", cmd_type)
        return self._handle(list(effects), now, None)

    def subscribe(
        self, device_id: str, event: str, now: float, *, expires: int = 3600, fields: manscdp.Fields = ()
    ) -> list[Effect]:
        """SUBSCRIBE to ``event`` (``Catalog`` or ``Alarm``) with a ``Query`` body (§9.11)."""
        if self.registry.get(device_id) is None:
            return [SubscriptionState(device_id, event, 404, 0)]
        body = manscdp.serialize(Query(event, self.next_sn(), device_id, fields))
        sub = _Subscription(
            device_id, event, body, self._token() + "@" + self.local_host(device_id), self._token(), expires
        )
        self._subscriptions[(device_id, event)] = sub
        return self._send_subscribe(sub, now)

    def _send_subscribe(self, sub: _Subscription, now: float) -> list[Effect]:
        device = self.registry.get(sub.device_id)
        if device is None:
            self._subscriptions.pop((sub.device_id, sub.event), None)
            return []
        request = self._request(
            "SUBSCRIBE",
            sub.device_id,
            sub.device_id,
            call_id=sub.call_id,
            from_tag=sub.local_tag,
            to_tag=sub.remote_tag,
            cseq=sub.cseq,
            extra=[
                ("Contact", self._contact(sub.device_id, device.peer.transport)),
                ("Event", sub.event),
                ("Expires", str(sub.expires)),
                ("Content-Type", manscdp.CONTENT_TYPE),
            ],
            body=sub.body,
        )
        sub.cseq += 1
        key, effects = self.transactions.send_request(request, device.peer, now)
        sub.tx_key = key
        self._pending[key] = _Pending(sub.device_id, "SUBSCRIBE", sub.event)
        return self._handle(list(effects), now, None)

    def invite(
        self, device_id: str, channel_id: str, offer: GbSdp, now: float
    ) -> tuple[str | None, list[Effect]]:
        """INVITE ``channel_id`` of ``device_id`` with ``offer`` (§9.2.2.1); returns the call key."""
        device = self.registry.get(device_id)
        if device is None:
            return None, []
        call_id = self._token() + "@" + self.local_host(device_id)
        ssrc = offer.ssrc or "0"
        request = self._request(
            "INVITE",
            device_id,
            channel_id,
            call_id=call_id,
            from_tag=self._token(),
            cseq=next(self._cseq),
            extra=[
                ("Contact", self._contact(device_id, device.peer.transport)),
                # §9.2.2.1: Subject: sender id:sender stream number, receiver id:receiver stream number.
                ("Subject", f"{channel_id}:{ssrc},{self.config.platform_id}:0"),
                ("Content-Type", "application/sdp"),
            ],
            body=offer.encode(),
        )
        key, effects = self.transactions.send_invite(request, device.peer, now)
        self._calls[call_id] = _Call(
            call_id, device_id, channel_id, request, key, device.peer, now + self.config.invite_timeout
        )
        return call_id, self._handle(list(effects), now, None)

    def bye(self, call: str, now: float) -> list[Effect]:
        """End a stream: BYE once answered; before that, the answer is refused when it comes."""
        found = self._calls.get(call)
        if found is None:
            return []
        if found.state == "calling":
            found.state = "abandoned"
            found.deadline = now + 64 * self.config.timers.t1
            return []
        if found.state != "confirmed":
            return []
        return self._send_bye(found, now)

    def forget_device(self, device_id: str, now: float) -> list[Effect]:
        """The device is gone (unregistered, expired): its calls end, its subscriptions stop."""
        effects: list[Effect] = []
        for call in list(self._calls.values()):
            if call.device_id == device_id:
                if call.state in ("calling", "confirmed"):
                    effects.append(StreamEnded(call.key, "device_gone"))
                self._calls.pop(call.key, None)
        for key in [k for k in self._subscriptions if k[0] == device_id]:
            del self._subscriptions[key]
        self._local_hosts.pop(device_id, None)
        return effects

    # -- building ---------------------------------------------------------------------------

    def _contact(self, device_id: str, transport: str) -> str:
        host = self.local_host(device_id)
        suffix = ";transport=tcp" if transport == "TCP" else ""
        return f"<sip:{self.config.platform_id}@{host}:{self._local_port(transport)}{suffix}>"

    def _request(
        self,
        method: str,
        device_id: str,
        target: str,
        *,
        call_id: str,
        from_tag: str,
        cseq: int,
        to_tag: str = "",
        extra: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
        uri: str = "",
    ) -> Request:
        device = self.registry.get(device_id)
        assert device is not None
        transport = device.peer.transport
        host = self.local_host(device_id)
        branch = MAGIC_COOKIE + self._token()
        domain = self.config.domain
        fields: list[tuple[str, str]] = [
            ("Via", f"SIP/2.0/{transport} {host}:{self._local_port(transport)};rport;branch={branch}"),
            ("From", f"<sip:{self.config.platform_id}@{domain}>;tag={from_tag}"),
            ("To", f"<sip:{target}@{domain}>" + (f";tag={to_tag}" if to_tag else "")),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} {method}"),
            ("Max-Forwards", "70"),
            ("User-Agent", self.config.user_agent),
            *extra,
        ]
        peer_host = device.peer.host if ":" not in device.peer.host else f"[{device.peer.host}]"
        return Request(method, uri or f"sip:{target}@{peer_host}:{device.peer.port}", Headers(fields), body)

    def _decorate(self, response: Response) -> Response:
        headers = response.headers.plus("User-Agent", self.config.user_agent)
        return Response(response.status, response.reason, headers, response.body, response.version)

    # -- the transaction user ---------------------------------------------------------------

    def _handle(self, effects: Sequence[object], now: float, wall: datetime | None) -> list[Effect]:
        out: list[Effect] = []
        for effect in effects:
            if isinstance(effect, Send):
                out.append(effect)
            elif isinstance(effect, RequestReceived):
                out += self._request_in(effect.key, effect.request, effect.peer, now, wall)
            elif isinstance(effect, AckReceived | ServerTimeout):
                pass  # nothing of ours waits for an ACK
            elif isinstance(effect, ClientResponse):
                out += self._response_in(effect.key, effect.request, effect.response, now)
            elif isinstance(effect, ClientTimeout):
                out += self._timeout(effect.key, effect.request, now)
        return out

    def _respond(
        self,
        key: TxKey,
        request: Request,
        status: int,
        now: float,
        *,
        reason: str | None = None,
        extra: Sequence[tuple[str, str]] = (),
    ) -> list[Effect]:
        tag = request.to.tag or self._token()
        response = response_to(request, status, reason, to_tag=tag, extra=extra)
        return self._handle(self.transactions.respond(key, self._decorate(response), now), now, None)

    def _request_in(
        self, key: TxKey, request: Request, peer: Peer, now: float, wall: datetime | None
    ) -> list[Effect]:
        method = request.method
        if request.version != "SIP/2.0":
            return self._respond(key, request, 505, now)
        if method not in ALLOWED_METHODS:
            status = 405 if method in _KNOWN_NOT_TAKEN else 501
            return self._respond(key, request, status, now, extra=[("Allow", _ALLOW)])
        if method == "REGISTER":
            return self._register(key, request, peer, now, wall)
        if method == "OPTIONS":
            return self._respond(key, request, 200, now, extra=[("Allow", _ALLOW)])
        if method == "CANCEL":
            return self._respond(key, request, 481, now)
        if method == "BYE":
            return self._bye_in(key, request, now)
        return self._manscdp_in(key, request, peer, now)

    def _register(
        self, key: TxKey, request: Request, peer: Peer, now: float, wall: datetime | None
    ) -> list[Effect]:
        device_id = _user_of(request.headers.get("To")) or _user_of(request.headers.get("From"))
        expires_text = request.headers.get("Expires")
        expires: int | None = int(expires_text) if expires_text and expires_text.isdigit() else None
        contacts = request.headers.get_all("Contact")
        if expires is None and contacts:
            try:
                value = parse_name_addr(contacts[0]).param("expires")
            except SipParseError:
                value = None
            expires = int(value) if value and value.isdigit() else None
        if not self._limits.allow("dev:" + device_id, now):
            return [Dropped(peer.transport, "rate_limited", device_id)]
        result = self.registry.register(
            device_id=device_id,
            authorization=request.headers.get("Authorization"),
            expires=expires,
            peer=peer,
            contact=contacts[0] if contacts else "",
            user_agent=request.headers.get("User-Agent") or "",
            now=now,
        )
        if isinstance(result, Challenge):
            return self._respond(key, request, 401, now, extra=[("WWW-Authenticate", result.header)])
        if isinstance(result, Refused):
            effects = self._respond(key, request, result.status, now, reason=None)
            return [*effects, AuthFailed(device_id, peer, result.status, result.reason)]
        extra = [("Expires", str(result.expires))]
        if contacts:
            extra.append(("Contact", contacts[0]))
        if wall is not None:
            extra.append(("Date", gb_date(wall)))
        effects = self._respond(key, request, 200, now, extra=extra)
        if isinstance(result, Accepted) and isinstance(result.event, Registered):
            try:
                host = parse_uri(request.uri).host
            except SipParseError:
                host = ""
            if _is_ip(host):
                self._local_hosts[device_id] = host.strip("[]")
        return effects + self._registry_event(result.event, now)

    def _registry_event(self, event: object, now: float) -> list[Effect]:
        if isinstance(event, Registered):
            return [
                DeviceRegistered(event.device_id, event.peer, event.expires, event.fresh, event.user_agent)
            ]
        if isinstance(event, Unregistered):
            return [
                *self.forget_device(event.device_id, now),
                DeviceUnregistered(event.device_id, event.reason),
            ]
        if isinstance(event, WentOffline):
            return [DeviceOffline(event.device_id, event.reason)]
        if isinstance(event, CameBack):
            return [DeviceOnline(event.device_id)]
        return []

    def _sender(self, request: Request, peer: Peer, now: float) -> tuple[str, str | None]:
        """The registered device a request comes from, or why it is refused."""
        device_id = _user_of(request.headers.get("From"))
        device = self.registry.get(device_id)
        if device is None:
            return device_id, "unregistered"
        if device.peer.host != peer.host:
            return device_id, "wrong_address"  # not where it registered from: not trusted
        if not self._limits.allow("dev:" + device_id, now):
            return device_id, "rate_limited"
        return device_id, None

    def _manscdp_in(self, key: TxKey, request: Request, peer: Peer, now: float) -> list[Effect]:
        device_id, refusal = self._sender(request, peer, now)
        if refusal == "rate_limited":
            return [Dropped(peer.transport, refusal, device_id)]
        if refusal is not None:
            return [*self._respond(key, request, 403, now), Dropped(peer.transport, refusal, device_id, True)]
        if "manscdp" not in request.content_type:
            return [
                *self._respond(key, request, 415, now, extra=[("Accept", manscdp.CONTENT_TYPE)]),
                Dropped(peer.transport, "bad_content_type", request.content_type[:60], True),
            ]
        try:
            message = manscdp.parse(request.body)
        except ManscdpError as exc:
            reason = "".join(ch for ch in str(exc) if ch.isprintable())[:120]
            return [
                *self._respond(key, request, 400, now, reason=f"Bad Request - {reason}"),
                Dropped(peer.transport, "malformed_xml", str(exc), True),
            ]
        effects = self._respond(key, request, 200, now)
        effects += self._registry_event_list(self.registry.seen(device_id, now), now)
        return effects + self._manscdp_event(device_id, message, now)

    def _registry_event_list(self, events: Sequence[object], now: float) -> list[Effect]:
        out: list[Effect] = []
        for event in events:
            out += self._registry_event(event, now)
        return out

    def _manscdp_event(self, device_id: str, message: manscdp.Message, now: float) -> list[Effect]:
        if isinstance(message, Catalog):
            if message.root == "Notify":
                return [CatalogChanged(device_id, message.items)]
            done = self.collector.add(device_id, message.sn, message.sum_num, message.items, now)
            return [CatalogReceived(device_id, done.items, done.complete)] if done is not None else []
        if isinstance(message, DeviceInfo):
            return [DeviceInfoReceived(device_id, message)]
        if isinstance(message, DeviceStatus):
            return [DeviceStatusReceived(device_id, message)]
        if isinstance(message, Alarm):
            # §9.4.2: the platform answers an alarm notification with Response/Alarm, Result OK.
            body = manscdp.serialize(Result("Alarm", message.sn, message.device_id, "OK"))
            answer = self._message(device_id, message.device_id, "Alarm", body, now)
            return [*answer, AlarmReceived(device_id, message)]
        if isinstance(message, MobilePosition):
            return [PositionReceived(device_id, message)]
        if isinstance(message, RecordInfo):
            return [RecordsReceived(device_id, message)]
        if isinstance(message, MediaStatus):
            return [PlaybackFinished(device_id, message.device_id)] if message.notify_type == manscdp.MEDIA_END else []
        return []

    def _bye_in(self, key: TxKey, request: Request, now: float) -> list[Effect]:
        call = self._calls.get(request.call_id)
        if call is None or call.state not in ("confirmed", "calling") or request.from_.tag != call.remote_tag:
            return self._respond(key, request, 481, now)
        effects = self._respond(key, request, 200, now)
        call.state = "ended"
        self._calls.pop(call.key, None)
        return [*effects, StreamEnded(call.key, "device_bye")]

    # -- answers to our requests ------------------------------------------------------------

    def _response_in(self, key: TxKey, request: Request, response: Response, now: float) -> list[Effect]:
        if request.method == "INVITE":
            return self._invite_response(request, response, now)
        if response.status < 200:
            return []
        pending = self._pending.pop(key, None)
        if pending is None:
            return []
        if pending.method == "SUBSCRIBE":
            return self._subscribe_response(pending, response, now)
        if response.status >= 300:
            return [RequestFailed(pending.device_id, pending.cmd_type, response.status)]
        return []

    def _subscribe_response(self, pending: _Pending, response: Response, now: float) -> list[Effect]:
        sub = self._subscriptions.get((pending.device_id, pending.cmd_type))
        if response.status >= 300:
            self._subscriptions.pop((pending.device_id, pending.cmd_type), None)
            return [SubscriptionState(pending.device_id, pending.cmd_type, response.status, 0)]
        expires_text = response.headers.get("Expires") or ""
        expires = int(expires_text) if expires_text.isdigit() else (sub.expires if sub else 0)
        if sub is not None:
            sub.remote_tag = response.to.tag or sub.remote_tag
            if expires > 0:
                # RFC 6665 §4.1.2.1: refresh before it runs out (here at four fifths of it).
                sub.refresh_at = now + max(expires * 0.8, 1.0)
        return [SubscriptionState(pending.device_id, pending.cmd_type, response.status, expires)]

    def _invite_response(self, request: Request, response: Response, now: float) -> list[Effect]:
        call = self._calls.get(request.call_id)
        if call is None or response.status < 200:
            return []
        if response.status >= 300:
            self._calls.pop(call.key, None)
            if call.state == "abandoned":
                return []
            return [StreamFailed(call.key, response.status, response.reason)]
        # §13.2.2.4: ACK every 2xx (copies too) to the remote target, in a transaction of its own.
        call.remote_tag = response.to.tag or ""
        contact = response.headers.get("Contact")
        try:
            call.remote_target = parse_name_addr(contact).uri if contact else request.uri
        except SipParseError:
            call.remote_target = request.uri
        ack = self._in_dialog(call, "ACK", request.cseq.number)
        effects: list[Effect] = [Send(ack, call.peer)]
        if call.state == "abandoned":
            effects += self._send_bye(call, now)
            return effects
        if call.state != "calling":
            return effects  # a copy of the 2xx
        try:
            answer = parse_sdp(response.body)
        except SdpError as exc:
            effects += self._send_bye(call, now)
            return [*effects, StreamFailed(call.key, 488, f"unusable SDP answer: {exc}")]
        call.state = "confirmed"
        call.deadline = None
        return [*effects, StreamAnswered(call.key, answer)]

    def _in_dialog(self, call: _Call, method: str, cseq: int) -> Request:
        from_tag = call.invite.from_.tag or ""
        request = self._request(
            method,
            call.device_id,
            call.channel_id,
            call_id=call.key,
            from_tag=from_tag,
            to_tag=call.remote_tag,
            cseq=cseq,
            uri=call.remote_target,
        )
        # In-dialog requests go to the address the device registered from (it may be behind NAT);
        # the Request-URI is the device's Contact (§12.2.1.1).
        return request

    def _send_bye(self, call: _Call, now: float) -> list[Effect]:
        if self.registry.get(call.device_id) is None:
            self._calls.pop(call.key, None)
            return []
        call.state = "ended"
        call.deadline = None
        bye = self._in_dialog(call, "BYE", call.invite.cseq.number + 1)
        key, effects = self.transactions.send_request(bye, call.peer, now)
        call.bye_key = key
        self._pending[key] = _Pending(call.device_id, "BYE", "")
        self._calls.pop(call.key, None)
        return self._handle(list(effects), now, None)

    def _timeout(self, key: TxKey, request: Request, now: float) -> list[Effect]:
        if request.method == "INVITE":
            call = self._calls.pop(request.call_id, None)
            if call is None or call.state == "abandoned":
                return []
            return [StreamFailed(call.key, 408, "no answer")]
        pending = self._pending.pop(key, None)
        if pending is None:
            return []
        if pending.method == "SUBSCRIBE":
            self._subscriptions.pop((pending.device_id, pending.cmd_type), None)
            return [SubscriptionState(pending.device_id, pending.cmd_type, 408, 0)]
        if pending.method == "MESSAGE":
            return [RequestFailed(pending.device_id, pending.cmd_type, 408)]
        return []
