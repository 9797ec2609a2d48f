"""SIP transactions, sans I/O (RFC 3261 §17, with the RFC 6026 "Accepted" state).

The layer takes parsed messages and the current monotonic time, and returns effects: messages
to send, and what the transaction user (the call agent) must hear about. It never awaits and
never reads a clock; :meth:`TransactionLayer.tick` is called with the time, and
:meth:`TransactionLayer.next_deadline` says when next to call it.

Server transactions (what the hotline mostly is):

* **INVITE** (§17.2.1): sends 100 Trying at once; passes the INVITE up; retransmissions of the
  INVITE get the last provisional or final response again. A final non-2xx response moves it to
  *Completed*: over UDP it is retransmitted on Timer G (T1, doubling up to T2) until the ACK
  arrives (*Confirmed*, then Timer I = T4 absorbs ACK copies) or Timer H (64·T1) gives up, which
  the TU hears as :class:`ServerTimeout`. A 2xx moves it to *Accepted* (RFC 6026 §7.1) for
  Timer L = 64·T1, absorbing INVITE copies; retransmitting the 2xx until the ACK is the TU's job
  (§13.3.1.4), since the ACK of a 2xx is a transaction of its own and reaches the TU as
  :class:`AckReceived`.
* **non-INVITE** (§17.2.2): BYE, CANCEL, OPTIONS and everything refused; a copy of the request
  gets the last response again; *Completed* lasts Timer J (64·T1 over UDP, 0 over TCP).

Client transactions, for the BYE the hotline sends when the officer hangs up (§17.1.2): Timer E
retransmits over UDP (T1 doubling, T2 once a provisional came), Timer F (64·T1) gives up
(:class:`ClientTimeout`), Timer K (T4) absorbs response copies.

INVITE client transactions, for the hotline's calls out through a trunk and the live-view INVITEs
of the GB/T 28181 platform (§17.1.1 with RFC 6026 §7.2): Timer A retransmits over UDP (T1 doubling)
until a response, Timer B (64·T1) gives up while nothing came (after a provisional response there
is no Timer B: the TU decides, with a CANCEL). A 2xx moves it to *Accepted* for Timer M = 64·T1,
passing each 2xx copy up (the ACK of a 2xx is the TU's, §13.2.2.4). A final non-2xx is acknowledged
here (§17.1.1.3: same branch, the response's To) and moves it to *Completed*, where copies are
acknowledged again until Timer D (32 s over UDP).

Matching (§17.2.3, §17.1.3): a request with an RFC 3261 branch (``z9hG4bK…``) matches by branch,
sent-by and method (ACK matching its INVITE); an RFC 2543 request by Request-URI, From tag,
Call-ID, CSeq number and top Via. Responses match a client transaction by branch and CSeq method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, TypeAlias

from dispatchd.channels.hotline.sip import (
    MAGIC_COOKIE,
    Headers,
    Request,
    Response,
    SipParseError,
    response_to,
)

__all__ = [
    "AckReceived",
    "ClientResponse",
    "ClientTimeout",
    "Peer",
    "RequestReceived",
    "Send",
    "ServerTimeout",
    "Timers",
    "TransactionLayer",
    "TxKey",
    "ack_for",
    "response_destination",
    "stamp_via",
    "transaction_key",
]


@dataclass(frozen=True, slots=True)
class Peer:
    """The other end of a message: transport (``UDP``/``TCP``), address, and which TCP connection."""

    transport: str
    host: str
    port: int
    connection: int = 0

    @property
    def reliable(self) -> bool:
        return self.transport != "UDP"


@dataclass(frozen=True, slots=True)
class Timers:
    """RFC 3261 §17.1.1.1 and Table 4: T1 (RTT estimate), T2 (longest retransmit interval), T4."""

    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0


TxKey: TypeAlias = tuple[str, ...]


# ---- effects ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Put ``message`` on the wire to ``peer``."""

    message: Request | Response
    peer: Peer


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """A new request (not a copy, not an ACK) for the TU, in server transaction ``key``."""

    key: TxKey
    request: Request
    peer: Peer


@dataclass(frozen=True, slots=True)
class AckReceived:
    """An ACK that no server transaction absorbs: the ACK of a 2xx, for the dialog (§13.3.1.4)."""

    request: Request
    peer: Peer


@dataclass(frozen=True, slots=True)
class ServerTimeout:
    """Timer H fired: the final non-2xx response of INVITE ``key`` was never acknowledged."""

    key: TxKey
    request: Request


@dataclass(frozen=True, slots=True)
class ClientResponse:
    """A response (not a copy) to our request in client transaction ``key``."""

    key: TxKey
    request: Request
    response: Response


@dataclass(frozen=True, slots=True)
class ClientTimeout:
    """Timer F fired: our request ``key`` got no final response (§17.1.2.2); treat as 408."""

    key: TxKey
    request: Request


Effect: TypeAlias = Send | RequestReceived | AckReceived | ServerTimeout | ClientResponse | ClientTimeout


# ---- helpers ------------------------------------------------------------------------------------


def transaction_key(request: Request) -> TxKey:
    """The server transaction a request belongs to (§17.2.3); ACK and CANCEL map to their INVITE's
    key only through :meth:`TransactionLayer.find_invite` (CANCEL) or absorption (ACK)."""
    via = request.vias[0]
    method = "INVITE" if request.method == "ACK" else request.method
    branch = via.branch or ""
    if branch.startswith(MAGIC_COOKIE):
        return ("3261", branch, via.sent_by, method)
    return (
        "2543",
        request.uri,
        request.from_.tag or "",
        request.call_id,
        str(request.cseq.number),
        str(via),
        method,
    )


def _with_method(key: TxKey, method: str) -> TxKey:
    return (*key[:-1], method)


def stamp_via(request: Request, peer: Peer) -> Request:
    """§18.2.1 and RFC 3581: note in the top Via where the request really came from.

    ``received`` is added when the sent-by host is not the source address; an empty ``rport``
    gets the source port (and then ``received`` always).
    """
    vias = request.headers.get_all("Via")
    top = request.vias[0]
    params: dict[str, str | None] = {}
    if top.has_param("rport") and not top.param("rport"):
        params["rport"] = str(peer.port)
        params["received"] = peer.host
    elif top.host != peer.host.lower():
        params["received"] = peer.host
    if not params:
        return request
    stamped = str(top.with_params(**params))
    headers = request.headers.with_("Via", stamped, *vias[1:])
    return Request(request.method, request.uri, headers, request.body, request.version)


def response_destination(request: Request, peer: Peer) -> Peer:
    """Where the responses to ``request`` go (§18.2.2, RFC 3581 §4).

    Over TCP, back over the connection the request came on. Over UDP, to ``received`` (or the
    sent-by host) at ``rport`` when the client asked for it, else at the sent-by port (5060 when
    absent).
    """
    if peer.reliable:
        return peer
    try:
        top = request.vias[0]
    except (SipParseError, IndexError):
        return peer
    host = top.param("received") or top.host
    rport = top.param("rport")
    if rport and rport.isdigit():
        port = int(rport)
    else:
        port = top.port or 5060
    return Peer(peer.transport, host.strip("[]") if host.startswith("[") else host, port, peer.connection)


# ---- transactions -------------------------------------------------------------------------------


@dataclass(slots=True)
class _Transaction:
    key: TxKey
    kind: str  # server_invite, server, client
    request: Request
    peer: Peer  # where responses (server) or the request (client) go
    state: str
    last_response: Response | None = None
    timers: dict[str, float] = field(default_factory=dict)
    interval: float = 0.0


SERVER_INVITE: Final = "server_invite"
SERVER: Final = "server"
CLIENT: Final = "client"
CLIENT_INVITE: Final = "client_invite"
#: §17.1.1.2: Timer D is at least 32 s over an unreliable transport.
TIMER_D: Final = 32.0


def ack_for(request: Request, response: Response) -> Request:
    """The ACK of a final non-2xx response (§17.1.1.3): the INVITE's Request-URI, Call-ID, From,
    CSeq number and top Via (same branch), the response's To, and the INVITE's Route set."""
    fields: list[tuple[str, str]] = [("Via", request.headers.get_all("Via")[0])]
    fields += [("Max-Forwards", "70")]
    for name in ("From", "Call-ID"):
        fields.append((name, request.headers.get(name) or ""))
    fields.append(("To", response.headers.get("To") or request.headers.get("To") or ""))
    fields.append(("CSeq", f"{request.cseq.number} ACK"))
    fields += [("Route", route) for route in request.headers.get_all("Route")]
    return Request("ACK", request.uri, Headers(fields))


class TransactionLayer:
    """Every live transaction of one user agent; see the module documentation."""

    def __init__(self, timers: Timers | None = None) -> None:
        self.timers = timers or Timers()
        self._transactions: dict[TxKey, _Transaction] = {}

    def __len__(self) -> int:
        return len(self._transactions)

    def state(self, key: TxKey) -> str | None:
        """The state of a transaction, or None when it has terminated (or never was)."""
        tx = self._transactions.get(key)
        return tx.state if tx is not None else None

    def request_of(self, key: TxKey) -> Request | None:
        tx = self._transactions.get(key)
        return tx.request if tx is not None else None

    # -- input ------------------------------------------------------------------------------

    def receive_request(self, request: Request, peer: Peer, now: float) -> list[Effect]:
        """A request from the transport (its top Via already stamped with :func:`stamp_via`)."""
        key = transaction_key(request)
        tx = self._transactions.get(key)
        if request.method == "ACK":
            return self._ack(tx, request, peer, now)
        if tx is not None:
            # A copy of a request already in a transaction (§17.2.1, §17.2.2).
            if tx.kind == SERVER_INVITE and tx.state in ("proceeding", "completed") and tx.last_response:
                return [Send(tx.last_response, tx.peer)]
            if tx.kind == SERVER and tx.state in ("proceeding", "completed") and tx.last_response:
                return [Send(tx.last_response, tx.peer)]
            return []
        destination = response_destination(request, peer)
        if request.method == "INVITE":
            tx = _Transaction(key, SERVER_INVITE, request, destination, "proceeding")
            self._transactions[key] = tx
            # §17.2.1: 100 Trying at once, so the client stops retransmitting the INVITE.
            trying = response_to(request, 100)
            tx.last_response = trying
            return [Send(trying, destination), RequestReceived(key, request, peer)]
        tx = _Transaction(key, SERVER, request, destination, "trying")
        self._transactions[key] = tx
        return [RequestReceived(key, request, peer)]

    def _ack(self, tx: _Transaction | None, request: Request, peer: Peer, now: float) -> list[Effect]:
        if tx is None or tx.kind != SERVER_INVITE:
            return [AckReceived(request, peer)]
        if tx.state == "completed":
            # §17.2.1: the ACK of a non-2xx final response; Timer I absorbs its copies.
            tx.state = "confirmed"
            tx.timers = {"I": now + (0.0 if tx.peer.reliable else self.timers.t4)}
            return []
        if tx.state == "accepted":
            return [AckReceived(request, peer)]  # RFC 2543 ACK of our 2xx: the dialog's
        return []

    def receive_response(self, response: Response, now: float) -> list[Effect]:
        """A response from the transport: for one of our client transactions, or dropped."""
        try:
            via = response.vias[0]
            method = response.cseq.method
        except (SipParseError, IndexError):
            return []
        key: TxKey = ("client", via.branch or "", method)
        tx = self._transactions.get(key)
        if tx is not None and tx.kind == CLIENT_INVITE:
            return self._invite_response(tx, response, now)
        if tx is None or tx.kind != CLIENT:
            return []
        if response.status < 200:
            if tx.state == "trying":
                tx.state = "proceeding"
                if "E" in tx.timers:
                    tx.timers["E"] = now + self.timers.t2
                    tx.interval = self.timers.t2
                return [ClientResponse(key, tx.request, response)]
            return []
        if tx.state in ("trying", "proceeding"):
            tx.state = "completed"
            tx.timers = {"K": now + (0.0 if tx.peer.reliable else self.timers.t4)}
            return [ClientResponse(key, tx.request, response)]
        return []  # a copy of the final response, absorbed in Completed

    def _invite_response(self, tx: _Transaction, response: Response, now: float) -> list[Effect]:
        if response.status < 200:
            if tx.state not in ("calling", "proceeding"):
                return []
            tx.state = "proceeding"
            tx.timers.pop("A", None)
            tx.timers.pop("B", None)
            return [ClientResponse(tx.key, tx.request, response)]
        if response.status < 300:
            if tx.state in ("calling", "proceeding"):
                tx.state = "accepted"
                tx.timers = {"M": now + 64 * self.timers.t1}
            if tx.state == "accepted":
                return [ClientResponse(tx.key, tx.request, response)]  # copies too: the TU ACKs each
            return []
        ack = ack_for(tx.request, response)
        if tx.state in ("calling", "proceeding"):
            tx.state = "completed"
            tx.timers = {"D": now + (0.0 if tx.peer.reliable else TIMER_D)}
            return [Send(ack, tx.peer), ClientResponse(tx.key, tx.request, response)]
        if tx.state == "completed":
            return [Send(ack, tx.peer)]
        return []

    # -- commands from the TU ---------------------------------------------------------------------

    def respond(self, key: TxKey, response: Response, now: float) -> list[Effect]:
        """Send ``response`` in server transaction ``key``; nothing when it is already over."""
        tx = self._transactions.get(key)
        if tx is None or tx.kind in (CLIENT, CLIENT_INVITE):
            return []
        t1 = self.timers.t1
        if tx.kind == SERVER_INVITE:
            if tx.state == "accepted" and 200 <= response.status < 300:
                return [Send(response, tx.peer)]  # the TU's 2xx retransmission (§13.3.1.4)
            if tx.state != "proceeding":
                return []
            tx.last_response = response
            if response.status < 200:
                return [Send(response, tx.peer)]
            if response.status < 300:
                tx.state = "accepted"
                tx.timers = {"L": now + 64 * t1}
            else:
                tx.state = "completed"
                tx.timers = {"H": now + 64 * t1}
                if not tx.peer.reliable:
                    tx.timers["G"] = now + t1
                    tx.interval = t1
            return [Send(response, tx.peer)]
        if tx.state == "completed":
            return []
        tx.last_response = response
        if response.status < 200:
            tx.state = "proceeding"
        else:
            tx.state = "completed"
            tx.timers = {"J": now + (0.0 if tx.peer.reliable else 64 * t1)}
        return [Send(response, tx.peer)]

    def send_request(self, request: Request, peer: Peer, now: float) -> tuple[TxKey, list[Effect]]:
        """Start a non-INVITE client transaction for ``request`` (its top Via names our branch)."""
        via = request.vias[0]
        key: TxKey = ("client", via.branch or "", request.method)
        tx = _Transaction(key, CLIENT, request, peer, "trying")
        tx.timers = {"F": now + 64 * self.timers.t1}
        if not peer.reliable:
            tx.timers["E"] = now + self.timers.t1
            tx.interval = self.timers.t1
        self._transactions[key] = tx
        return key, [Send(request, peer)]

    def send_invite(self, request: Request, peer: Peer, now: float) -> tuple[TxKey, list[Effect]]:
        """Start an INVITE client transaction (§17.1.1) for ``request`` (its top Via names our branch)."""
        via = request.vias[0]
        key: TxKey = ("client", via.branch or "", "INVITE")
        tx = _Transaction(key, CLIENT_INVITE, request, peer, "calling")
        tx.timers = {"B": now + 64 * self.timers.t1}
        if not peer.reliable:
            tx.timers["A"] = now + self.timers.t1
            tx.interval = self.timers.t1
        self._transactions[key] = tx
        return key, [Send(request, peer)]

    def find_invite(self, cancel: Request) -> TxKey | None:
        """The INVITE server transaction a CANCEL is for (§9.2): same key but for the method."""
        key = _with_method(transaction_key(cancel), "INVITE")
        tx = self._transactions.get(key)
        return key if tx is not None and tx.kind == SERVER_INVITE else None

    # -- time -------------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        deadlines = [t for tx in self._transactions.values() for t in tx.timers.values()]
        return min(deadlines) if deadlines else None

    def tick(self, now: float) -> list[Effect]:
        """Fire every timer due at ``now``."""
        effects: list[Effect] = []
        for key, tx in list(self._transactions.items()):
            due = sorted((when, name) for name, when in tx.timers.items() if when <= now)
            for _, name in due:
                if name not in tx.timers:
                    continue
                effects += self._fire(tx, name, now)
                if tx.state == "terminated":
                    self._transactions.pop(key, None)
                    break
        return effects

    def _fire(self, tx: _Transaction, name: str, now: float) -> list[Effect]:
        t2 = self.timers.t2
        if name == "G" and tx.state == "completed" and tx.last_response is not None:
            tx.interval = min(2 * tx.interval, t2)
            tx.timers["G"] = now + tx.interval
            return [Send(tx.last_response, tx.peer)]
        if name == "A" and tx.state == "calling":
            tx.interval *= 2  # §17.1.1.2: Timer A doubles, with no T2 cap
            tx.timers["A"] = now + tx.interval
            return [Send(tx.request, tx.peer)]
        if name == "E" and tx.state in ("trying", "proceeding"):
            tx.interval = min(2 * tx.interval, t2) if tx.state == "trying" else t2
            tx.timers["E"] = now + tx.interval
            return [Send(tx.request, tx.peer)]
        tx.timers.pop(name, None)
        if name == "H" and tx.state == "completed":
            tx.state = "terminated"
            return [ServerTimeout(tx.key, tx.request)]
        if name == "F" and tx.state in ("trying", "proceeding"):
            tx.state = "terminated"
            return [ClientTimeout(tx.key, tx.request)]
        if name == "B" and tx.state == "calling":
            tx.state = "terminated"
            return [ClientTimeout(tx.key, tx.request)]
        if name in ("D", "I", "J", "K", "L", "M"):
            tx.state = "terminated"
        return []
