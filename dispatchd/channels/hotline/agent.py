"""The hotline's SIP user agent server, sans I/O: bytes and commands in, bytes and call events out.

This is the transaction user of RFC 3261 (§8.2 UAS behaviour, §12 dialogs, §13.3 answering an
INVITE, §15 ending a session) on top of :class:`~dispatchd.channels.hotline.transaction.TransactionLayer`.
It takes calls to the numbers the hotline directory routes, and nothing else:

* **INVITE** to a routed number: 100 Trying (the transaction layer), then 180 Ringing with our
  To tag, and :class:`CallOffered` for the queue. When an officer answers, :meth:`HotlineAgent.answer`
  sends 200 OK with an SDP answer and retransmits it (T1 doubling up to T2, §13.3.1.4) until the
  ACK (:class:`CallConfirmed`) or 64·T1, when the session is ended with a BYE (:class:`CallEnded`,
  reason ``no_ack``). A re-INVITE in the dialog (session refresh) gets the same answer again.
* **CANCEL** (§9.2): 200 for the CANCEL and 487 for the INVITE while it is unanswered
  (:class:`CallAbandoned`); 481 when it matches no INVITE.
* **BYE** (§15.1.2): 200; before the answer also 487 for the INVITE (:class:`CallAbandoned`),
  after it :class:`CallEnded` with reason ``caller_hangup``; 481 outside any dialog.
* **OPTIONS** (§11.2): 200 with Allow, Accept and Supported — trunks use it as a keep-alive.
* **ACK** of a 2xx confirms the call; other ACKs are absorbed.
* Everything else is refused as §8.2 and §21 say: 405 (a method we know but do not take) or
  501 (one we do not know), both with Allow; 400 naming what was malformed; 404 for a number we
  do not answer; 415 for a body that is not SDP; 416 for a URI scheme that is not sip, sips or
  tel; 420 for a Require we do not support; 481 outside a dialog; 482 for a merged request
  (§8.2.2.2); 483 when Max-Forwards is 0; 486 when the queue is full; 488 for an offer without
  G.711; 505 for another SIP version. Malformed requests that cannot be answered (no usable
  Via), malformed ACKs and malformed responses are dropped and reported as :class:`Dropped`.

:meth:`HotlineAgent.hangup` ends a call from our side: 480 while it rings, a BYE (a client
transaction) once it is confirmed, or a BYE as soon as the ACK comes when the 200 is still out.

Calls out (the user agent client, §8.1, §13.2): :meth:`HotlineAgent.dial` sends an INVITE with our
offer through the :class:`Trunk` (an INVITE client transaction); 180/183 give :class:`CallRinging`;
a 401/407 is answered once with digest credentials (§22.2, §22.3); a 2xx makes the dialog (remote
target from its Contact, route set from its Record-Route reversed, §12.1.2), is ACKed by us
(§13.2.2.4, again for every copy) and gives :class:`CallAnswered`; any other final response gives
:class:`CallFailed`. Hanging up before the answer CANCELs (§9.1; only once a provisional response
came, else as soon as one comes; a 2xx crossing the CANCEL is ACKed and ended with a BYE). In the
dialog, BYE either way works as for calls in.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeAlias

from dispatchd.channels.hotline.sdp import (
    SdpError,
    SdpOffer,
    build_answer,
    build_offer,
    parse_sdp,
    sdp_from_body,
)
from dispatchd.channels.hotline.sip import (
    MAGIC_COOKIE,
    Headers,
    Request,
    Response,
    SipParseError,
    SipUri,
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
from dispatchd.channels.hotline.voice.digest import DigestError, authorization, parse_challenge

__all__ = [
    "ALLOWED_METHODS",
    "AgentConfig",
    "CallAbandoned",
    "CallAnswered",
    "CallConfirmed",
    "CallEnded",
    "CallFailed",
    "CallOffered",
    "CallRinging",
    "CallStateError",
    "Dropped",
    "HotlineAgent",
    "Rejected",
    "Trunk",
    "dialled_number",
]

ALLOWED_METHODS: Final = ("INVITE", "ACK", "CANCEL", "BYE", "OPTIONS")
_ALLOW: Final = ", ".join(ALLOWED_METHODS)
# Methods of RFC 3261 and its common extensions: known, so 405 rather than 501 (§21.4.6, §21.5.2).
_KNOWN_NOT_TAKEN: Final = frozenset(
    {"REGISTER", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE"}
)
#: Option tags we support (none: no 100rel, no timer); a Require naming any other gets 420.
SUPPORTED: Final[frozenset[str]] = frozenset()


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """``advertise_host``: the address written in Contact and Via; empty: the host the caller dialled."""

    user_agent: str = "dispatchd"
    contact_user: str = "hotline"
    advertise_host: str = ""
    max_calls: int = 200
    timers: Timers = field(default_factory=Timers)


# ---- events for the call queue ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallOffered:
    """A new call rings: ``caller`` (the asserted or From number), ``dialled`` (the line)."""

    call: str
    caller: str
    caller_name: str
    dialled: str
    peer: Peer


@dataclass(frozen=True, slots=True)
class CallAbandoned:
    """The caller gave up before the answer: ``cancel`` or ``bye`` (§15: BYE in an early dialog)."""

    call: str
    reason: str


@dataclass(frozen=True, slots=True)
class CallConfirmed:
    """The ACK of our 200 came: the call is connected. ``answer``: the SDP answer the ACK carried,
    when the INVITE had no offer and ours went in the 200 (RFC 3261 §13.2.1)."""

    call: str
    answer: SdpOffer | None = None


@dataclass(frozen=True, slots=True)
class CallEnded:
    """An answered call ended not by our command: ``caller_hangup``, ``no_ack``, ``transport``."""

    call: str
    reason: str


@dataclass(frozen=True, slots=True)
class Dropped:
    """A message was dropped unanswered: it could not be parsed, or it may not be answered."""

    transport: str
    reason: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A malformed request was answered with 400 (``reason`` names the problem)."""

    transport: str
    reason: str


@dataclass(frozen=True, slots=True)
class Trunk:
    """Where calls out go: the trunk or PBX (``peer``), the domain of our URIs, who we say we are,
    and the digest credentials it may ask for."""

    peer: Peer
    domain: str
    caller_id: str
    username: str = ""
    password: str = ""


@dataclass(frozen=True, slots=True)
class CallRinging:
    """A call out rings at the far end (180, or 183 Session Progress)."""

    call: str


@dataclass(frozen=True, slots=True)
class CallAnswered:
    """A call out was answered; ``answer``: the SDP of the 2xx."""

    call: str
    answer: SdpOffer | None


@dataclass(frozen=True, slots=True)
class CallFailed:
    """A call out ended before an answer: ``status`` (486 busy, 480 or 408 no answer, 487 after our
    CANCEL…) and a short ``reason``."""

    call: str
    status: int
    reason: str


CallEvent: TypeAlias = CallOffered | CallAbandoned | CallConfirmed | CallEnded
Effect: TypeAlias = (
    Send
    | CallOffered
    | CallAbandoned
    | CallConfirmed
    | CallEnded
    | CallRinging
    | CallAnswered
    | CallFailed
    | Dropped
    | Rejected
)


class CallStateError(Exception):
    """The command does not fit the call's state (it was cancelled, or already answered)."""


def dialled_number(request: Request) -> str | None:
    """The number the caller dialled: the user part of the Request-URI (or of To when it has none).

    A tel URI gives its number; a user part like ``+8657765890101;npdi`` loses its parameters.
    """
    for text in (request.uri, request.headers.get("To") or ""):
        try:
            uri = parse_uri(text) if text is request.uri else parse_name_addr(text).parsed_uri()
        except SipParseError:
            continue
        if uri.user:
            return uri.user.split(";")[0]
    return None


def _caller(request: Request) -> tuple[str, str]:
    """(number, display name): P-Asserted-Identity (RFC 3325) when the trunk asserts one, else From."""
    for value in (*request.headers.get_all("P-Asserted-Identity"), request.headers.get("From") or ""):
        try:
            address = parse_name_addr(value)
            uri = address.parsed_uri()
        except SipParseError:
            continue
        if uri.user:
            return uri.user.split(";")[0], address.display
    return "anonymous", ""


# ---- calls --------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Call:
    key: str
    invite_key: TxKey
    invite: Request
    peer: Peer  # where the INVITE came from (transport, TCP connection)
    response_peer: Peer  # where its responses go
    local_tag: str
    remote_tag: str
    remote_target: SipUri
    route_set: tuple[str, ...]
    local_host: str
    offer: SdpOffer | None
    state: str = "ringing"  # ringing, answering, confirmed, terminating
    ok: Response | None = None
    retransmit_at: float | None = None
    interval: float = 0.0
    give_up_at: float | None = None
    bye_pending: bool = False
    local_cseq: int = 0
    bye_key: TxKey | None = None
    outgoing: bool = False
    local_party: str = ""  # our From/To value with our tag, for requests in the dialog
    remote_party: str = ""
    local_sdp: bytes = b""


@dataclass(slots=True)
class _Dialling:
    """A call out before its final response."""

    key: str
    call_id: str
    local_tag: str
    number: str
    trunk: Trunk
    local_host: str
    sdp: bytes
    invite: Request
    tx_key: TxKey
    cseq: int = 1
    state: str = "calling"  # calling, ringing, cancelling
    provisional: bool = False
    cancel_pending: bool = False
    auth_tries: int = 0
    ack: Request | None = None


class HotlineAgent:
    """The SIP UAS of the hotline; one per dispatchd instance, fed by the asyncio edge.

    ``accepts(dialled)`` says whether a number is a hotline line (else 404). ``local_port(transport)``
    gives the port we listen on, for Contact and Via. ``new_token`` makes tags and branches
    (random by default; tests pass a counter).
    """

    def __init__(
        self,
        accepts: Callable[[str], bool],
        local_port: Callable[[str], int],
        config: AgentConfig | None = None,
        new_token: Callable[[], str] | None = None,
    ) -> None:
        self.config = config or AgentConfig()
        self.transactions = TransactionLayer(self.config.timers)
        self._accepts = accepts
        self._local_port = local_port
        self._token = new_token or (lambda: secrets.token_hex(8))
        self._calls: dict[str, _Call] = {}
        self._dialling: dict[str, _Dialling] = {}
        self._by_tx: dict[TxKey, str] = {}
        self._aliases: dict[str, str] = {}  # "Call-ID;remote tag" of a call out -> its key
        self._acks: dict[str, tuple[Request, Peer]] = {}  # the ACK of each answered call out

    # -- introspection ----------------------------------------------------------------------

    def __contains__(self, call: object) -> bool:
        return call in self._calls or call in self._dialling

    def call_state(self, call: str) -> str | None:
        found = self._calls.get(call)
        if found is None:
            dialling = self._dialling.get(call)
            return dialling.state if dialling is not None else None
        return found.state

    def calls(self) -> list[str]:
        return [*self._calls, *self._dialling]

    def local_host(self, call: str) -> str | None:
        found = self._calls.get(call)
        return found.local_host if found is not None else None

    def offer_of(self, call: str) -> SdpOffer | None:
        """The caller's SDP offer (None when the INVITE came without one, or the call is gone)."""
        found = self._calls.get(call)
        return found.offer if found is not None else None

    # -- input ------------------------------------------------------------------------------

    def receive(self, data: bytes, peer: Peer, now: float) -> list[Effect]:
        """One datagram, or one framed message from a TCP stream."""
        try:
            message = parse_message(data, datagram=not peer.reliable)
        except SipParseError as exc:
            return self.malformed(exc, peer)
        if isinstance(message, Response):
            return self._handle(self.transactions.receive_response(message, now), now)
        request = stamp_via(message, peer)
        return self._handle(self.transactions.receive_request(request, peer, now), now)

    def malformed(self, error: SipParseError, peer: Peer) -> list[Effect]:
        """400 for a malformed request that has a Via to answer to; drop anything else (§21.4.1)."""
        partial = error.partial
        if isinstance(partial, Request) and partial.method != "ACK":
            try:
                partial.vias[0]
                request = stamp_via(partial, peer)
            except (SipParseError, IndexError):
                return [Dropped(peer.transport, error.reason)]
            reason = "".join(ch for ch in error.reason if ch.isprintable())[:120]
            answer = response_to(request, 400, f"Bad Request - {reason}", to_tag=self._token())
            answer = self._decorate(answer)
            return [Send(answer, response_destination(request, peer)), Rejected(peer.transport, error.reason)]
        return [Dropped(peer.transport, error.reason)]

    def tick(self, now: float) -> list[Effect]:
        """Fire due transaction timers and 2xx retransmissions."""
        effects: list[Effect] = list(self._handle(self.transactions.tick(now), now))
        for call in list(self._calls.values()):
            if call.state != "answering" or call.ok is None:
                continue
            if call.give_up_at is not None and now >= call.give_up_at:
                # §13.3.1.4: no ACK for 64*T1: the dialog is confirmed, and ended with a BYE.
                effects += self._send_bye(call, now)
                effects.append(CallEnded(call.key, "no_ack"))
            elif call.retransmit_at is not None and now >= call.retransmit_at:
                call.interval = min(2 * call.interval, self.config.timers.t2)
                call.retransmit_at = now + call.interval
                effects.append(Send(call.ok, call.response_peer))
        return effects

    def next_deadline(self) -> float | None:
        deadlines = [self.transactions.next_deadline()]
        for call in self._calls.values():
            if call.state == "answering":
                deadlines += [call.retransmit_at, call.give_up_at]
        found = [d for d in deadlines if d is not None]
        return min(found) if found else None

    # -- commands ---------------------------------------------------------------------------

    def answer(
        self, call: str, media_host: str, media_port: int, now: float, direction: str = "recvonly"
    ) -> list[Effect]:
        """Send 200 OK with our SDP (answer to the caller's offer, or our offer when it sent none):
        ``sendrecv`` when the caller will hear us, ``recvonly`` when only recorded."""
        found = self._calls.get(call)
        if found is None or found.state != "ringing":
            raise CallStateError(f"call is {found.state if found else 'gone'}")
        if self.transactions.state(found.invite_key) != "proceeding":
            raise CallStateError("the INVITE is no longer pending")
        session = int(now * 1000) % 2**32 or 1
        body = (
            build_answer(found.offer, media_host, media_port, session, direction=direction)
            if found.offer is not None
            else build_offer(media_host, media_port, session, direction=direction)
        )
        ok = response_to(
            found.invite,
            200,
            to_tag=found.local_tag,
            extra=[("Contact", self._contact(found)), ("Allow", _ALLOW), ("Content-Type", "application/sdp")],
            body=body,
        )
        ok = self._decorate(ok)
        found.ok = ok
        found.state = "answering"
        t1 = self.config.timers.t1
        found.give_up_at = now + 64 * t1
        if not found.response_peer.reliable:
            found.interval = t1
            found.retransmit_at = now + t1
        return self._handle(self.transactions.respond(found.invite_key, ok, now), now)

    def hangup(self, call: str, now: float) -> list[Effect]:
        """End the call from our side (see the module documentation); nothing if it is over."""
        if call in self._dialling:
            return self._cancel_out(self._dialling[call], now)
        found = self._calls.get(call)
        if found is None or found.state == "terminating":
            return []
        if found.state == "ringing":
            self._calls.pop(call, None)
            final = self._final(found, 480)
            return self._handle(self.transactions.respond(found.invite_key, final, now), now)
        if found.state == "answering":
            found.bye_pending = True  # §15: the callee must not send BYE before the ACK
            return []
        return self._send_bye(found, now)

    def refuse_unavailable(self, call: str, retry_after: int, now: float) -> list[Effect]:
        """Refuse a call still ringing because the call record cannot be written now: ``503 Service
        Unavailable`` with ``Retry-After`` (§21.5.4, §20.33), which tells the carrier or proxy to try
        another server or again later (RFC 3263 §4.3). A call past ringing is hung up as usual."""
        found = self._calls.get(call)
        if found is None or found.state != "ringing":
            return self.hangup(call, now)
        self._calls.pop(call, None)
        final = self._decorate(
            response_to(found.invite, 503, to_tag=found.local_tag, extra=[("Retry-After", str(retry_after))])
        )
        return self._handle(self.transactions.respond(found.invite_key, final, now), now)

    # -- the transaction user ---------------------------------------------------------------

    def _handle(self, effects: Sequence[object], now: float) -> list[Effect]:
        out: list[Effect] = []
        for effect in effects:
            if isinstance(effect, Send):
                out.append(effect)
            elif isinstance(effect, RequestReceived):
                out += self._request(effect.key, effect.request, effect.peer, now)
            elif isinstance(effect, AckReceived):
                out += self._ack(effect.request, now)
            elif isinstance(effect, ClientResponse):
                if effect.key in self._by_tx:
                    out += self._out_response(self._by_tx[effect.key], effect.response, now)
                elif effect.response.status >= 200:
                    self._bye_done(effect.key)
            elif isinstance(effect, ClientTimeout):
                if effect.key in self._by_tx:
                    key = self._by_tx.pop(effect.key)
                    if self._dialling.pop(key, None) is not None:
                        out.append(CallFailed(key, 408, "timeout"))
                else:
                    self._bye_done(effect.key)
            elif isinstance(effect, ServerTimeout):
                pass  # a refused INVITE was never acknowledged: nothing is left to clean up
        return out

    def _respond(
        self,
        key: TxKey,
        request: Request,
        status: int,
        now: float,
        *,
        reason: str | None = None,
        to_tag: str | None = None,
        extra: Sequence[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> list[Effect]:
        tag = to_tag or request.to.tag or self._token()
        response = response_to(request, status, reason, to_tag=tag, extra=extra, body=body)
        return self._handle(self.transactions.respond(key, self._decorate(response), now), now)

    def _decorate(self, response: Response) -> Response:
        headers = response.headers.plus("Server", self.config.user_agent)
        return Response(response.status, response.reason, headers, response.body, response.version)

    def _request(self, key: TxKey, request: Request, peer: Peer, now: float) -> list[Effect]:
        method = request.method
        if request.version != "SIP/2.0":
            return self._respond(key, request, 505, now)
        if method not in ALLOWED_METHODS:
            status = 405 if method in _KNOWN_NOT_TAKEN else 501
            return self._respond(key, request, status, now, extra=[("Allow", _ALLOW)])
        try:
            parse_uri(request.uri)
        except SipParseError as exc:
            if exc.reason.startswith("unsupported URI scheme"):
                return self._respond(key, request, 416, now)
            return self._respond(key, request, 400, now, reason=f"Bad Request - {exc.reason}")
        max_forwards = request.headers.get("Max-Forwards")
        if max_forwards == "0" and method != "OPTIONS":
            return self._respond(key, request, 483, now)
        if method != "CANCEL":
            required = {tag.lower() for tag in request.headers.get_all("Require")}
            unsupported = sorted(required - SUPPORTED)
            if unsupported:
                return self._respond(key, request, 420, now, extra=[("Unsupported", ", ".join(unsupported))])
        if method == "INVITE":
            return self._invite(key, request, peer, now)
        if method == "CANCEL":
            return self._cancel(key, request, now)
        if method == "BYE":
            return self._bye(key, request, now)
        return self._respond(
            key,
            request,
            200,
            now,
            extra=[
                ("Allow", _ALLOW),
                ("Accept", "application/sdp"),
                ("Supported", ", ".join(sorted(SUPPORTED))),
            ],
        )

    def _dialog(self, request: Request) -> _Call | None:
        """The call a request inside a dialog belongs to (Call-ID, remote tag, our tag; §12.2.2)."""
        key = f"{request.call_id};{request.from_.tag or ''}"
        found = self._calls.get(self._aliases.get(key, key))
        if found is None or request.to.tag != found.local_tag:
            return None
        return found

    def _invite(self, key: TxKey, request: Request, peer: Peer, now: float) -> list[Effect]:
        if request.to.tag is not None:
            # A re-INVITE (§14.2): a session refresh gets the same answer; no new session is taken.
            existing = self._dialog(request)
            if existing is None:
                return self._respond(key, request, 481, now)
            if existing.state != "confirmed" or (existing.ok is None and not existing.local_sdp):
                return self._respond(key, request, 491, now, to_tag=existing.local_tag)
            return self._respond(
                key,
                request,
                200,
                now,
                to_tag=existing.local_tag,
                extra=[("Contact", self._contact(existing)), ("Content-Type", "application/sdp")],
                body=existing.ok.body if existing.ok is not None else existing.local_sdp,
            )
        call_key = f"{request.call_id};{request.from_.tag or ''}"
        if call_key in self._calls:
            return self._respond(key, request, 482, now)  # §8.2.2.2: merged request
        dialled = dialled_number(request)
        if dialled is None or not self._accepts(dialled):
            return self._respond(key, request, 404, now)
        offer: SdpOffer | None = None
        if request.body.strip():
            try:
                text = sdp_from_body(request.headers.get("Content-Type") or "", request.body)
                if text is None:
                    return self._respond(key, request, 415, now, extra=[("Accept", "application/sdp")])
                offer = parse_sdp(text)
            except SdpError as exc:
                return self._respond(key, request, 400, now, reason=f"Bad Request - {exc}")
            if offer.audio_codec() is None:
                return self._respond(
                    key,
                    request,
                    488,
                    now,
                    extra=[("Warning", '304 dispatchd "G.711 audio (PCMU/PCMA) only"')],
                )
        contacts = request.headers.get_all("Contact")
        try:
            target = parse_name_addr(contacts[0]).parsed_uri() if contacts else None
        except SipParseError:
            target = None
        if target is None:
            return self._respond(key, request, 400, now, reason="Bad Request - missing or bad Contact")
        active = sum(1 for c in self._calls.values() if c.state != "terminating")
        if active >= self.config.max_calls:
            return self._respond(key, request, 486, now, extra=[("Retry-After", "30")])
        caller, caller_name = _caller(request)
        try:
            uri_host = parse_uri(request.uri).host
        except SipParseError:
            uri_host = ""
        call = _Call(
            key=call_key,
            invite_key=key,
            invite=request,
            peer=peer,
            response_peer=response_destination(request, peer),
            local_tag=self._token(),
            remote_tag=request.from_.tag or "",
            remote_target=target,
            route_set=tuple(request.headers.get_all("Record-Route")),  # §12.1.1: in order for the UAS
            local_host=self.config.advertise_host or uri_host,
            offer=offer,
            local_cseq=0,
        )
        self._calls[call_key] = call
        ringing = response_to(request, 180, to_tag=call.local_tag, extra=[("Contact", self._contact(call))])
        effects = self._handle(self.transactions.respond(key, self._decorate(ringing), now), now)
        return [*effects, CallOffered(call_key, caller, caller_name, dialled, peer)]

    def _cancel(self, key: TxKey, request: Request, now: float) -> list[Effect]:
        invite_key = self.transactions.find_invite(request)
        if invite_key is None:
            return self._respond(key, request, 481, now)
        call = next((c for c in self._calls.values() if c.invite_key == invite_key), None)
        tag = call.local_tag if call is not None else None
        effects = self._respond(key, request, 200, now, to_tag=tag)
        if call is not None and call.state == "ringing":
            self._calls.pop(call.key, None)
            effects += self._handle(self.transactions.respond(invite_key, self._final(call, 487), now), now)
            effects.append(CallAbandoned(call.key, "cancel"))
        return effects

    def _bye(self, key: TxKey, request: Request, now: float) -> list[Effect]:
        call = self._dialog(request)
        if call is None:
            return self._respond(key, request, 481, now)
        effects = self._respond(key, request, 200, now, to_tag=call.local_tag)
        if call.state == "terminating":
            return effects  # both ends hung up at once; our BYE transaction finishes by itself
        self._forget(call.key)
        if call.state == "ringing":
            # §15.1.2: BYE in an early dialog; the pending INVITE is answered 487.
            effects += self._handle(
                self.transactions.respond(call.invite_key, self._final(call, 487), now), now
            )
            effects.append(CallAbandoned(call.key, "bye"))
        else:
            effects.append(CallEnded(call.key, "remote_hangup" if call.outgoing else "caller_hangup"))
        return effects

    def _ack(self, request: Request, now: float) -> list[Effect]:
        call = self._dialog(request)
        if call is None or call.state != "answering":
            return []  # a copy of an ACK, or the ACK of a call already over: absorbed
        try:
            if request.cseq.number != call.invite.cseq.number:
                return []
        except SipParseError:
            return []
        call.state = "confirmed"
        call.retransmit_at = call.give_up_at = None
        answer: SdpOffer | None = None
        if call.offer is None and request.body.strip():
            try:
                text = sdp_from_body(request.headers.get("Content-Type") or "", request.body)
                answer = parse_sdp(text) if text is not None else None
            except SdpError:
                answer = None
        effects: list[Effect] = [CallConfirmed(call.key, answer)]
        if call.bye_pending:
            effects += self._send_bye(call, now)
        return effects

    def _final(self, call: _Call, status: int) -> Response:
        return self._decorate(response_to(call.invite, status, to_tag=call.local_tag))

    def _contact(self, call: _Call) -> str:
        transport = call.peer.transport
        port = self._local_port(transport)
        host = call.local_host or "127.0.0.1"
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        suffix = ";transport=tcp" if transport == "TCP" else ""
        return f"<sip:{self.config.contact_user}@{host}:{port}{suffix}>"

    def _send_bye(self, call: _Call, now: float) -> list[Effect]:
        """§15.1.1: BYE in the dialog, by the route set (loose routing, §12.2.1.1) to the remote target."""
        call.state = "terminating"
        call.retransmit_at = call.give_up_at = None
        call.local_cseq += 1
        transport = call.peer.transport
        port = self._local_port(transport)
        host = call.local_host or "127.0.0.1"
        branch = MAGIC_COOKIE + self._token()
        via = f"SIP/2.0/{transport} {host}:{port};branch={branch};rport"
        invite = call.invite
        if call.outgoing:
            local_party, remote_party = call.local_party, call.remote_party
        else:
            local_party = str(parse_name_addr(invite.headers.get("To") or "").with_tag(call.local_tag))
            remote_party = str(parse_name_addr(invite.headers.get("From") or ""))
        fields: list[tuple[str, str]] = [
            ("Via", via),
            ("Max-Forwards", "70"),
            ("From", local_party),
            ("To", remote_party),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{call.local_cseq} BYE"),
        ]
        fields += [("Route", route) for route in call.route_set]
        fields.append(("User-Agent", self.config.user_agent))
        bye = Request("BYE", str(call.remote_target), Headers(fields))
        destination = self._next_hop(call)  # a TCP call reuses its connection
        key, effects = self.transactions.send_request(bye, destination, now)
        call.bye_key = key
        return self._handle(list(effects), now)

    def _bye_done(self, key: TxKey) -> None:
        for call in list(self._calls.values()):
            if call.bye_key == key:
                self._forget(call.key)

    def _forget(self, key: str) -> None:
        call = self._calls.pop(key, None)
        if call is not None and call.outgoing:
            self._aliases.pop(f"{call.invite.call_id};{call.remote_tag}", None)
            self._acks.pop(key, None)

    # -- calls out (UAC) --------------------------------------------------------------------

    def dial(
        self, number: str, sdp: bytes, trunk: Trunk, local_host: str, now: float
    ) -> tuple[str, list[Effect]]:
        """Call ``number`` through ``trunk`` with our SDP offer; returns the call's key and effects."""
        call_id = f"{self._token()}{self._token()}@{local_host or 'dispatchd'}"
        tag = self._token()
        key = f"{call_id};{tag}"
        invite = self._out_invite(call_id, tag, number, trunk, local_host, sdp, 1, [])
        tx_key, effects = self.transactions.send_invite(invite, trunk.peer, now)
        self._dialling[key] = _Dialling(key, call_id, tag, number, trunk, local_host, sdp, invite, tx_key)
        self._by_tx[tx_key] = key
        return key, self._handle(list(effects), now)

    def _out_invite(
        self,
        call_id: str,
        tag: str,
        number: str,
        trunk: Trunk,
        local_host: str,
        sdp: bytes,
        cseq: int,
        extra: list[tuple[str, str]],
    ) -> Request:
        transport = trunk.peer.transport
        port = self._local_port(transport)
        host = f"[{local_host}]" if ":" in local_host and not local_host.startswith("[") else local_host
        suffix = ";transport=tcp" if transport == "TCP" else ""
        uri = f"sip:{number}@{trunk.domain}"
        fields: list[tuple[str, str]] = [
            ("Via", f"SIP/2.0/{transport} {host}:{port};branch={MAGIC_COOKIE}{self._token()};rport"),
            ("Max-Forwards", "70"),
            ("From", f"<sip:{trunk.caller_id}@{trunk.domain}>;tag={tag}"),
            ("To", f"<{uri}>"),
            ("Call-ID", call_id),
            ("CSeq", f"{cseq} INVITE"),
            ("Contact", f"<sip:{self.config.contact_user}@{host}:{port}{suffix}>"),
            ("Allow", _ALLOW),
            ("User-Agent", self.config.user_agent),
            *extra,
            ("Content-Type", "application/sdp"),
        ]
        return Request("INVITE", uri, Headers(fields), sdp)

    def _out_response(self, key: str, response: Response, now: float) -> list[Effect]:
        dialling = self._dialling.get(key)
        status = response.status
        if dialling is None:
            # A 2xx copy after the dialog exists (RFC 6026 Accepted): ACK it again.
            sent = self._acks.get(key)
            return [Send(sent[0], sent[1])] if sent is not None and 200 <= status < 300 else []
        if status < 200:
            effects: list[Effect] = []
            dialling.provisional = True
            if dialling.cancel_pending:
                effects += self._send_cancel(dialling, now)
            elif status in (180, 183) and dialling.state == "calling":
                dialling.state = "ringing"
                effects.append(CallRinging(key))
            return effects
        if status < 300:
            return self._out_answered(dialling, response, now)
        self._by_tx.pop(dialling.tx_key, None)
        if (
            status in (401, 407)
            and dialling.trunk.username
            and dialling.auth_tries < 2
            and dialling.state != "cancelling"
        ):
            retried = self._authenticate(dialling, response, now)
            if retried is not None:
                return retried
        self._dialling.pop(key, None)
        reason = "cancelled" if dialling.state == "cancelling" else (response.reason or str(status))
        return [CallFailed(key, status, reason)]

    def _authenticate(self, dialling: _Dialling, response: Response, now: float) -> list[Effect] | None:
        """§22.2/§22.3: the INVITE again, CSeq + 1, with credentials for the challenge."""
        header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
        answer = "Authorization" if response.status == 401 else "Proxy-Authorization"
        try:
            challenge = parse_challenge(response.headers.get(header) or "")
        except DigestError:
            return None
        dialling.auth_tries += 1
        dialling.cseq += 1
        uri = f"sip:{dialling.number}@{dialling.trunk.domain}"
        credentials = authorization(
            challenge,
            username=dialling.trunk.username,
            password=dialling.trunk.password,
            method="INVITE",
            uri=uri,
            cnonce=self._token(),
        )
        dialling.invite = self._out_invite(
            dialling.call_id,
            dialling.local_tag,
            dialling.number,
            dialling.trunk,
            dialling.local_host,
            dialling.sdp,
            dialling.cseq,
            [(answer, credentials)],
        )
        dialling.tx_key, effects = self.transactions.send_invite(dialling.invite, dialling.trunk.peer, now)
        dialling.provisional = False
        self._by_tx[dialling.tx_key] = dialling.key
        return self._handle(list(effects), now)

    def _out_answered(self, dialling: _Dialling, response: Response, now: float) -> list[Effect]:
        """§13.2.2.4: the dialog from the 2xx, and its ACK (a transaction of its own)."""
        self._dialling.pop(dialling.key, None)
        contacts = response.headers.get_all("Contact")
        try:
            target = parse_name_addr(contacts[0]).parsed_uri() if contacts else parse_uri(dialling.invite.uri)
        except SipParseError:
            target = parse_uri(dialling.invite.uri)
        remote_tag = response.to.tag or ""
        route_set = tuple(reversed(response.headers.get_all("Record-Route")))  # §12.1.2: reversed for the UAC
        answer: SdpOffer | None = None
        try:
            text = sdp_from_body(response.headers.get("Content-Type") or "", response.body)
            answer = parse_sdp(text) if text else None
        except SdpError:
            answer = None
        call = _Call(
            key=dialling.key,
            invite_key=dialling.tx_key,
            invite=dialling.invite,
            peer=dialling.trunk.peer,
            response_peer=dialling.trunk.peer,
            local_tag=dialling.local_tag,
            remote_tag=remote_tag,
            remote_target=target,
            route_set=route_set,
            local_host=dialling.local_host,
            offer=answer,
            state="confirmed",
            local_cseq=dialling.cseq,
            outgoing=True,
            local_party=dialling.invite.headers.get("From") or "",
            remote_party=response.headers.get("To") or "",
            local_sdp=dialling.sdp,
        )
        self._calls[call.key] = call
        self._aliases[f"{dialling.call_id};{remote_tag}"] = call.key
        fields: list[tuple[str, str]] = [
            (
                "Via",
                f"SIP/2.0/{call.peer.transport} {self._via_host(call)};branch={MAGIC_COOKIE}{self._token()};rport",
            ),
            ("Max-Forwards", "70"),
            ("From", call.local_party),
            ("To", call.remote_party),
            ("Call-ID", dialling.call_id),
            ("CSeq", f"{dialling.cseq} ACK"),
            *[("Route", route) for route in route_set],
        ]
        ack = Request("ACK", str(target), Headers(fields))
        destination = self._next_hop(call)
        self._acks[call.key] = (ack, destination)
        effects: list[Effect] = [Send(ack, destination)]
        if dialling.cancel_pending or dialling.state == "cancelling":
            effects += self._send_bye(call, now)  # answered as we gave up: ended at once
            effects.append(CallFailed(call.key, 487, "cancelled"))
            return effects
        effects.append(CallAnswered(call.key, answer))
        return effects

    def _via_host(self, call: _Call) -> str:
        host = call.local_host or "127.0.0.1"
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"{host}:{self._local_port(call.peer.transport)}"

    def _next_hop(self, call: _Call) -> Peer:
        if call.peer.reliable:
            return call.peer
        hop = call.remote_target
        if call.route_set:
            try:
                hop = parse_name_addr(call.route_set[0]).parsed_uri()
            except SipParseError:
                pass
        if call.outgoing and not call.route_set:
            return call.peer  # calls out go through the trunk, whatever the Contact says
        return Peer(call.peer.transport, hop.host.strip("[]"), hop.port or 5060)

    def _cancel_out(self, dialling: _Dialling, now: float) -> list[Effect]:
        if dialling.state == "cancelling":
            return []
        if not dialling.provisional:
            dialling.cancel_pending = True  # §9.1: not before a provisional response
            return []
        return self._send_cancel(dialling, now)

    def _send_cancel(self, dialling: _Dialling, now: float) -> list[Effect]:
        """§9.1: Request-URI, Call-ID, To, From, the CSeq number and the top Via of the INVITE."""
        dialling.state = "cancelling"
        dialling.cancel_pending = False
        invite = dialling.invite
        fields = [
            ("Via", invite.headers.get("Via") or ""),
            ("Max-Forwards", "70"),
            ("From", invite.headers.get("From") or ""),
            ("To", invite.headers.get("To") or ""),
            ("Call-ID", invite.call_id),
            ("CSeq", f"{invite.cseq.number} CANCEL"),
            ("User-Agent", self.config.user_agent),
        ]
        cancel = Request("CANCEL", invite.uri, Headers(fields))
        _, effects = self.transactions.send_request(cancel, dialling.trunk.peer, now)
        return self._handle(list(effects), now)
