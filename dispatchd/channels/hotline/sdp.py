"""The SDP of a hotline call, sans I/O: read the caller's offer, write our answer (RFC 4566, RFC 3264).

The command centre takes G.711 audio, as every carrier trunk and PBX offers it: PCMU (payload
type 0) and PCMA (8), with RFC 4733 telephone-events for DTMF when offered. The answer is
``sendrecv`` when the caller will hear someone (an officer's console, prompts), ``recvonly`` when
the call is answered for the recording only (a PBX desk answering it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

__all__ = ["SdpError", "SdpMedia", "SdpOffer", "build_answer", "build_offer", "parse_sdp", "sdp_from_body"]

#: Static payload types of RFC 3551 we take, in order of preference.
G711: Final = {0: "PCMU", 8: "PCMA"}


class SdpError(ValueError):
    """The session description cannot be used; the message says why."""


@dataclass(frozen=True, slots=True)
class SdpMedia:
    kind: str
    port: int
    proto: str
    formats: tuple[str, ...]
    rtpmap: dict[int, str] = field(default_factory=dict)
    connection: str | None = None
    direction: str = "sendrecv"
    ptime: int | None = None  # RFC 4566 §6 a=ptime: milliseconds of media per packet it wants


@dataclass(frozen=True, slots=True)
class SdpOffer:
    origin: str
    connection: str | None
    media: tuple[SdpMedia, ...]

    def audio(self) -> SdpMedia | None:
        return next((m for m in self.media if m.kind == "audio" and m.port != 0), None)

    def audio_codec(self) -> tuple[int, str] | None:
        """The G.711 codec we will answer with: the caller's first choice among PCMU and PCMA."""
        audio = self.audio()
        if audio is None or "RTP/AVP" not in audio.proto.upper():
            return None
        for fmt in audio.formats:
            if not fmt.isdigit():
                continue
            pt = int(fmt)
            name = audio.rtpmap.get(pt, G711.get(pt, "")).split("/")[0].upper()
            if name in ("PCMU", "PCMA") and (pt in G711 or audio.rtpmap.get(pt, "").endswith("/8000")):
                return pt, name
        return None

    def telephone_event(self) -> int | None:
        audio = self.audio()
        if audio is None:
            return None
        for pt, name in audio.rtpmap.items():
            if name.lower().startswith("telephone-event/8000"):
                return pt
        return None

    def packet_time(self) -> int:
        """Milliseconds per packet the caller wants to receive (a=ptime, 10–60; default 20)."""
        audio = self.audio()
        ptime = audio.ptime if audio is not None else None
        return ptime if ptime is not None and 10 <= ptime <= 60 and ptime % 10 == 0 else 20

    def remote_rtp(self) -> tuple[str, int] | None:
        audio = self.audio()
        host = (audio.connection if audio else None) or self.connection
        return (host, audio.port) if audio and host else None


@dataclass(slots=True)
class _MediaDraft:
    kind: str
    port: int
    proto: str
    formats: tuple[str, ...]
    rtpmap: dict[int, str] = field(default_factory=dict)
    connection: str | None = None
    direction: str = "sendrecv"
    ptime: int | None = None

    def done(self) -> SdpMedia:
        return SdpMedia(
            self.kind,
            self.port,
            self.proto,
            self.formats,
            self.rtpmap,
            self.connection,
            self.direction,
            self.ptime,
        )


def parse_sdp(text: str) -> SdpOffer:
    """Read the parts of an SDP we use: origin, connection addresses, media, rtpmap, direction."""
    origin = ""
    connection: str | None = None
    media: list[_MediaDraft] = []
    seen_version = False
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"bad SDP line {line[:30]!r}")
        key, value = line[0], line[2:]
        if key == "v":
            seen_version = value.strip() == "0"
        elif key == "o":
            origin = value
        elif key == "c":
            parts = value.split()
            if len(parts) != 3 or parts[0] != "IN":
                raise SdpError(f"bad connection line {value!r}")
            host = parts[2].split("/")[0]
            if media:
                media[-1].connection = host
            else:
                connection = host
        elif key == "m":
            parts = value.split()
            if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                raise SdpError(f"bad media line {value!r}")
            media.append(_MediaDraft(parts[0], int(parts[1].split("/")[0]), parts[2], tuple(parts[3:])))
        elif key == "a" and media:
            name, _, attr = value.partition(":")
            if name == "rtpmap":
                pt, _, encoding = attr.partition(" ")
                if pt.isdigit():
                    media[-1].rtpmap[int(pt)] = encoding.strip()
            elif name in ("sendrecv", "sendonly", "recvonly", "inactive"):
                media[-1].direction = name
            elif name == "ptime" and attr.strip().isdigit():
                media[-1].ptime = int(attr.strip())
    if not seen_version:
        raise SdpError("not an SDP session description (no v=0)")
    return SdpOffer(origin, connection, tuple(m.done() for m in media))


def sdp_from_body(content_type: str, body: bytes) -> str | None:
    """The SDP text of a body: ``application/sdp``, or its part of a ``multipart/mixed`` body.

    SIP-I trunks send ``multipart/mixed`` with an ISUP part beside the SDP (RFC 3204). None when
    there is no SDP; :class:`SdpError` for a body that is not text.
    """
    kind = content_type.split(";")[0].strip().lower()
    if kind == "application/sdp":
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise SdpError("SDP body is not UTF-8") from None
    if kind.startswith("multipart/"):
        boundary = None
        for param in content_type.split(";")[1:]:
            key, _, value = param.strip().partition("=")
            if key.lower() == "boundary":
                boundary = value.strip().strip('"')
        if not boundary:
            raise SdpError("multipart body without a boundary")
        for part in body.split(b"--" + boundary.encode())[1:]:
            if part.startswith(b"--"):
                break
            head, sep, content = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
            if not sep:
                continue
            for line in head.split(b"\r\n"):
                field_name, _, field_value = line.partition(b":")
                if field_name.strip().lower() == b"content-type" and field_value.strip().lower().startswith(
                    b"application/sdp"
                ):
                    try:
                        return content.rstrip(b"\r\n").decode("utf-8")
                    except UnicodeDecodeError:
                        raise SdpError("SDP part is not UTF-8") from None
        return None
    return None


def _lines(session_id: int, version: int, host: str, body: list[str]) -> bytes:
    family = "IP6" if ":" in host else "IP4"
    head = [
        "v=0",
        f"o=dispatchd {session_id} {version} IN {family} {host}",
        "s=dispatchd hotline",
        f"c=IN {family} {host}",
        "t=0 0",
    ]
    return ("\r\n".join(head + body) + "\r\n").encode("ascii")


def build_answer(
    offer: SdpOffer, host: str, port: int, session_id: int, version: int = 1, direction: str = "recvonly"
) -> bytes:
    """Our answer (RFC 3264 §6): one audio stream in the offer's codec, received at ``host:port``,
    ``sendrecv`` or ``recvonly``; our packet time is the caller's (a=ptime).

    Streams other than the first audio one are refused with port 0, in the offer's order.
    """
    codec = offer.audio_codec()
    if codec is None:
        raise SdpError("no G.711 audio (PCMU/PCMA) offered")
    pt, name = codec
    dtmf = offer.telephone_event()
    lines: list[str] = []
    answered = False
    for media in offer.media:
        if media.kind == "audio" and media.port != 0 and not answered:
            answered = True
            formats = [str(pt)] + ([str(dtmf)] if dtmf is not None else [])
            lines.append(f"m=audio {port} {media.proto} {' '.join(formats)}")
            lines.append(f"a=rtpmap:{pt} {name}/8000")
            if dtmf is not None:
                lines += [f"a=rtpmap:{dtmf} telephone-event/8000", f"a=fmtp:{dtmf} 0-15"]
            lines += [f"a=ptime:{offer.packet_time()}", f"a={direction}"]
        else:
            lines.append(f"m={media.kind} 0 {media.proto} {' '.join(media.formats)}")
    return _lines(session_id, version, host, lines)


def build_offer(
    host: str, port: int, session_id: int, version: int = 1, direction: str = "recvonly"
) -> bytes:
    """Our offer for a call that came without one (the offer then goes in the 200 OK, RFC 3261 §13.2.1)."""
    return _lines(
        session_id,
        version,
        host,
        [
            f"m=audio {port} RTP/AVP 0 8 101",
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:8 PCMA/8000",
            "a=rtpmap:101 telephone-event/8000",
            "a=fmtp:101 0-15",
            "a=ptime:20",
            f"a={direction}",
        ],
    )
