"""RTP read from real captures: the pcap files Debian's sip-tester ships (g711a.pcap: A-law speech
from a SIP call; dtmf_2833_*.pcap: RFC 4733 key trains), so the parsers meet packets they did not make."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

CAPTURES = Path("/usr/share/sip-tester")


def capture(name: str) -> Path:
    path = CAPTURES / name
    if not path.is_file():
        from tests.conftest import require_tool

        require_tool("sipp")  # the captures come with sipp (sip-tester): skip, or fail under CI
        pytest.skip(f"{path} not present")
    return path


def udp_payloads(path: Path) -> list[bytes]:
    """The UDP payloads of a classic pcap file (link type Ethernet, IPv4)."""
    data = path.read_bytes()
    magic = struct.unpack_from("<I", data)[0]
    endian = "<" if magic == 0xA1B2C3D4 else ">"
    link = struct.unpack_from(endian + "I", data, 20)[0]
    assert link == 1, "Ethernet captures only"
    out: list[bytes] = []
    offset = 24
    while offset + 16 <= len(data):
        _, _, included, _ = struct.unpack_from(endian + "IIII", data, offset)
        frame = data[offset + 16 : offset + 16 + included]
        offset += 16 + included
        if frame[12:14] != b"\x08\x00":
            continue
        header = (frame[14] & 0x0F) * 4
        if frame[14 + 9] != 17:  # UDP
            continue
        udp = frame[14 + header :]
        length = struct.unpack_from("!H", udp, 4)[0]
        out.append(udp[8:length])
    return out
