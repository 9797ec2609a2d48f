"""DTMF as RFC 4733 telephone-events, sans I/O: the payload format, a receiver and a sender.

§2.3: a 4-byte payload — event (8 bits), E (end), R (reserved), volume (6 bits, −dBm0), duration
(16 bits, in timestamp units). All packets of one event carry the RTP timestamp of its start
(§2.5.1.2); the first has the marker bit (§2.5.1.1); the duration grows in each update, and the
end is sent three times (§2.5.1.4) so that it survives loss.

:class:`DtmfReceiver` reports each key once, when its first packet arrives (the officer sees it
at once), whatever order or how many copies of its packets come; :func:`event_packets` makes the
packet train of one key for the sender.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DIGITS",
    "DtmfReceiver",
    "KeyPress",
    "TelephoneEvent",
    "build_event",
    "event_packets",
    "parse_event",
]

#: §3.2 Table 7: events 0–15 are the DTMF keys.
DIGITS: Final = "0123456789*#ABCD"
_PAYLOAD: Final = struct.Struct("!BBH")
END_COPIES: Final = 3  # §2.5.1.4: the final packet is sent three times


class DtmfError(ValueError):
    """Not a telephone-event payload."""


@dataclass(frozen=True, slots=True)
class TelephoneEvent:
    event: int
    end: bool
    volume: int  # 0–63: power level, −dBm0
    duration: int  # timestamp units since the event's start

    @property
    def key(self) -> str | None:
        return DIGITS[self.event] if self.event < len(DIGITS) else None


def parse_event(payload: bytes) -> TelephoneEvent:
    """The first event of a payload (§2.3); redundant events of RFC 2198 are not used here."""
    if len(payload) < 4:
        raise DtmfError("telephone-event payload shorter than 4 bytes")
    event, flags, duration = _PAYLOAD.unpack_from(payload)
    return TelephoneEvent(event, bool(flags & 0x80), flags & 0x3F, duration)


def build_event(event: TelephoneEvent) -> bytes:
    if not 0 <= event.event <= 255 or not 0 <= event.volume <= 63 or not 0 <= event.duration <= 0xFFFF:
        raise DtmfError("telephone-event field out of range")
    return _PAYLOAD.pack(event.event, (0x80 if event.end else 0) | event.volume, event.duration)


@dataclass(frozen=True, slots=True)
class KeyPress:
    """One key the far end pressed; ``timestamp`` is the RTP timestamp of its start."""

    key: str
    timestamp: int


class DtmfReceiver:
    """Telephone-event packets in, each key out once (at its first packet)."""

    def __init__(self, memory: int = 16) -> None:
        self._seen: list[tuple[int, int]] = []  # (ssrc, timestamp) of recent events
        self._memory = memory

    def receive(self, ssrc: int, timestamp: int, payload: bytes) -> KeyPress | None:
        try:
            event = parse_event(payload)
        except DtmfError:
            return None
        key = event.key
        if key is None:
            return None
        marker = (ssrc, timestamp)
        if marker in self._seen:
            return None  # an update, an end, or a copy of the end, of an event already reported
        self._seen = [*self._seen[-(self._memory - 1) :], marker]
        return KeyPress(key, timestamp)


def event_packets(
    key: str, *, duration: int = 800, step: int = 400, volume: int = 10
) -> list[tuple[bool, bytes]]:
    """The train of one key: (marker, payload) per packet, all sent with the key's start timestamp.

    ``duration`` and ``step`` are in timestamp units (at 8 kHz: 100 ms and one update every 50 ms,
    §2.5.1.2); the end goes ``END_COPIES`` times with the final duration (§2.5.1.4).
    """
    if len(key) != 1 or key.upper() not in DIGITS:
        raise DtmfError(f"{key!r} is not a DTMF key")
    event = DIGITS.index(key.upper())
    packets: list[tuple[bool, bytes]] = []
    elapsed = step
    first = True
    while elapsed < duration:
        packets.append((first, build_event(TelephoneEvent(event, False, volume, elapsed))))
        first = False
        elapsed += step
    final = build_event(TelephoneEvent(event, True, volume, duration))
    packets += [(first and i == 0, final) for i in range(END_COPIES)]
    return packets
