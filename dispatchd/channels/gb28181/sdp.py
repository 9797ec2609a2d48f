"""The SDP of a GB/T 28181 media session, sans I/O (GB/T 28181-2016 §9.2, Annex F; RFC 4566, RFC 4145).

A live-view INVITE from the platform offers ``s=Play`` (``Playback`` and ``Download`` for
recordings, with a ``t=`` range and ``u=`` naming the channel), one ``m=video`` line over
``RTP/AVP`` (UDP) or ``TCP/RTP/AVP`` (RFC 4571 framing), ``a=recvonly``, the payload types it takes
(``96 PS/90000``, ``98 H264/90000``, …) and two lines of its own:

* ``y=`` — the 10-digit SSRC (Annex F): first digit 0 for live video, 1 for a recording; digits
  2–6 are digits 4–8 of the SIP domain; the last four number the stream. The device sends RTP with
  this SSRC, written as a decimal number.
* ``f=`` — the media description ``v/codec/resolution/framerate/ratetype/bitrate a/codec/rate/…``
  (Annex F.3), often empty.

Over TCP, ``a=setup`` says who connects (RFC 4145): the platform offering ``passive`` listens and the
device connects; offering ``active``, the platform connects to the port of the device's answer
(which says ``passive``). ``a=connection:new`` asks for a fresh connection.

:func:`parse_sdp` reads every line it knows and keeps other attributes in order;
:meth:`GbSdp.encode` writes them back (CRLF), so parse → encode → parse gives the same value.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Final

from dispatchd.channels.hotline.sdp import SdpError

__all__ = ["DIRECTIONS", "GbSdp", "SdpError", "make_ssrc", "parse_sdp"]

DIRECTIONS: Final = ("sendrecv", "sendonly", "recvonly", "inactive")
TCP_PROTOS: Final = ("TCP/RTP/AVP", "RTP/AVP/TCP")
#: Payload types of the standard's examples (§9.2.2.1): 96 PS, 97 MPEG-4, 98 H.264, 99 SVAC, 100 H.265.
DEFAULT_RTPMAP: Final = ((96, "PS/90000"), (98, "H264/90000"), (97, "MPEG4/90000"))


def make_ssrc(domain: str, number: int, *, live: bool = True) -> str:
    """The ``y=`` value of Annex F: live/history digit, domain digits 4–8, 4-digit stream number."""
    if len(domain) < 8 or not domain[:8].isdigit():
        raise ValueError("the SIP domain must start with 8 digits")
    return ("0" if live else "1") + domain[3:8] + f"{number % 10000:04d}"


@dataclass(frozen=True, slots=True)
class GbSdp:
    """One GB/T 28181 session description with a single media line (see the module documentation)."""

    username: str
    address: str
    port: int
    session_name: str = "Play"
    session_id: str = "0"
    session_version: str = "0"
    connection: str = ""
    media: str = "video"
    proto: str = "RTP/AVP"
    payloads: tuple[int, ...] = (96,)
    rtpmap: tuple[tuple[int, str], ...] = ((96, "PS/90000"),)
    direction: str = ""
    setup: str = ""
    connection_attr: str = ""
    ssrc: str = ""
    media_format: str | None = None  # f=; "" when the line is present and empty
    uri: str = ""  # u=
    info: str = ""  # i=
    time: str = "0 0"
    attributes: tuple[tuple[str, str | None], ...] = field(default=())  # others, in order

    @property
    def tcp(self) -> bool:
        return self.proto.upper() in TCP_PROTOS

    @property
    def host(self) -> str:
        """Where the media of this description is sent to or comes from."""
        return self.connection or self.address

    @property
    def ssrc_number(self) -> int | None:
        """The RTP SSRC the ``y=`` line names (a decimal number), if any."""
        return int(self.ssrc) if self.ssrc.isdigit() and int(self.ssrc) < 2**32 else None

    def encoding(self, payload_type: int) -> str:
        """The encoding name of a payload type (``PS``, ``H264`` …), upper case, or ``""``."""
        return next((name.split("/")[0].upper() for pt, name in self.rtpmap if pt == payload_type), "")

    def with_(self, **changes: object) -> GbSdp:
        return replace(self, **changes)  # type: ignore[arg-type]

    def encode(self) -> bytes:
        family = "IP6" if ":" in self.address else "IP4"
        lines = [
            "v=0",
            f"o={self.username} {self.session_id} {self.session_version} IN {family} {self.address}",
            f"s={self.session_name}",
        ]
        if self.uri:
            lines.append(f"u={self.uri}")
        if self.info:
            lines.append(f"i={self.info}")
        if self.connection:
            lines.append(f"c=IN {'IP6' if ':' in self.connection else 'IP4'} {self.connection}")
        lines.append(f"t={self.time}")
        lines.append(f"m={self.media} {self.port} {self.proto} {' '.join(str(p) for p in self.payloads)}")
        if self.direction:
            lines.append(f"a={self.direction}")
        if self.setup:
            lines.append(f"a=setup:{self.setup}")
        if self.connection_attr:
            lines.append(f"a=connection:{self.connection_attr}")
        lines += [f"a=rtpmap:{pt} {name}" for pt, name in self.rtpmap]
        lines += [f"a={name}" + (f":{value}" if value is not None else "") for name, value in self.attributes]
        if self.ssrc:
            lines.append(f"y={self.ssrc}")
        if self.media_format is not None:
            lines.append(f"f={self.media_format}")
        return ("\r\n".join(lines) + "\r\n").encode("utf-8")


def parse_sdp(data: bytes | str) -> GbSdp:
    """Read a GB/T 28181 SDP (CRLF or LF). Raises :class:`SdpError` naming what is wrong."""
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError:
            raise SdpError("SDP is not UTF-8") from None
    values: dict[str, object] = {}
    rtpmap: list[tuple[int, str]] = []
    attributes: list[tuple[str, str | None]] = []
    seen_version = seen_media = False
    for raw in data.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"bad SDP line {line[:30]!r}")
        key, value = line[0], line[2:].strip()
        if key == "v":
            seen_version = value == "0"
        elif key == "o":
            parts = value.split()
            if len(parts) != 6:
                raise SdpError(f"bad origin line {value[:60]!r}")
            values.update(username=parts[0], session_id=parts[1], session_version=parts[2], address=parts[5])
        elif key == "s":
            values["session_name"] = value
        elif key == "u":
            values["uri"] = value
        elif key == "i" and not seen_media:
            values["info"] = value
        elif key == "c":
            parts = value.split()
            if len(parts) != 3 or parts[0] != "IN":
                raise SdpError(f"bad connection line {value[:60]!r}")
            values["connection"] = parts[2].split("/")[0]
        elif key == "t":
            values["time"] = value
        elif key == "m":
            if seen_media:
                raise SdpError("more than one media line")
            parts = value.split()
            if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                raise SdpError(f"bad media line {value[:60]!r}")
            port = int(parts[1].split("/")[0])
            if port > 65535:
                raise SdpError(f"bad port {port}")
            if not all(p.isdigit() and int(p) < 128 for p in parts[3:]):
                raise SdpError(f"bad payload types in {value[:60]!r}")
            seen_media = True
            values.update(
                media=parts[0], port=port, proto=parts[2], payloads=tuple(int(p) for p in parts[3:])
            )
        elif key == "a" and seen_media:
            name, colon, attr = value.partition(":")
            if name == "rtpmap":
                pt, _, encoding = attr.partition(" ")
                if not pt.isdigit() or not encoding.strip():
                    raise SdpError(f"bad rtpmap {attr[:40]!r}")
                rtpmap.append((int(pt), encoding.strip()))
            elif name in DIRECTIONS and not colon:
                values["direction"] = name
            elif name == "setup":
                values["setup"] = attr.strip().lower()
            elif name == "connection":
                values["connection_attr"] = attr.strip().lower()
            else:
                attributes.append((name, attr if colon else None))
        elif key == "y":
            if value and not (value.isdigit() and len(value) <= 10):
                raise SdpError(f"bad y= SSRC {value[:20]!r}")
            values["ssrc"] = value
        elif key == "f":
            values["media_format"] = value
    if not seen_version:
        raise SdpError("not an SDP session description (no v=0)")
    if "username" not in values:
        raise SdpError("no origin line")
    if not seen_media:
        raise SdpError("no media line")
    return GbSdp(rtpmap=tuple(rtpmap), attributes=tuple(attributes), **values)  # type: ignore[arg-type]
