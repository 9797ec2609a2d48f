"""Requests a caller's user agent sends, for the transaction and agent tests (no event loop)."""

from __future__ import annotations

from dispatchd.channels.hotline.sip import Headers, Request, Response, parse_message
from dispatchd.channels.hotline.transaction import Peer

CALLER = Peer("UDP", "10.0.0.9", 5060)
CALLER_TCP = Peer("TCP", "10.0.0.9", 40123, connection=7)

OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 10.0.0.9\r\ns=-\r\nc=IN IP4 10.0.0.9\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 8 0 101\r\na=rtpmap:8 PCMA/8000\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
)


def request(
    method: str,
    *,
    dialled: str = "967999",
    call_id: str = "call-1@10.0.0.9",
    branch: str = "z9hG4bKinv1",
    from_tag: str = "caller1",
    to_tag: str | None = None,
    cseq: int = 1,
    cseq_method: str | None = None,
    transport: str = "UDP",
    sent_by: str = "10.0.0.9:5060",
    body: bytes = b"",
    content_type: str = "application/sdp",
    extra: tuple[tuple[str, str], ...] = (),
    uri: str | None = None,
    version: str = "SIP/2.0",
) -> Request:
    to = f"<sip:{dialled}@10.0.0.5>" + (f";tag={to_tag}" if to_tag else "")
    fields = [
        ("Via", f"SIP/2.0/{transport} {sent_by};branch={branch}"),
        ("Max-Forwards", "70"),
        ("From", f'"Caller" <sip:13800001111@10.0.0.9>;tag={from_tag}'),
        ("To", to),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} {cseq_method or method}"),
        ("Contact", f"<sip:13800001111@{sent_by}>"),
        *extra,
    ]
    if body:
        fields.append(("Content-Type", content_type))
    return Request(method, uri or f"sip:{dialled}@10.0.0.5", Headers(fields), body, version)


def invite(**kwargs: object) -> Request:
    kwargs.setdefault("body", OFFER)
    return request("INVITE", **kwargs)  # type: ignore[arg-type]


def wire(message: Request | Response) -> bytes:
    return message.encode()


def reparse(message: Request | Response) -> Request | Response:
    """What the other side reads: the message through its wire form."""
    return parse_message(message.encode())


def response_to_bye(bye: Request, status: int = 200) -> Response:
    """The caller's answer to our BYE."""
    fields = [(n, v) for n, v in bye.headers if n in ("Via", "From", "To", "Call-ID", "CSeq")]
    return Response(status, "OK", Headers(fields))
