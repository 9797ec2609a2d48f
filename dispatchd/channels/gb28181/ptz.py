"""The 8-byte front-end control command of GB/T 28181-2016 Annex A.3 (``<PTZCmd>`` in DeviceControl).

Layout (A.3.1, Table A.1), one byte each:

1. ``A5`` — the leading code;
2. combination code 1: version in the high nibble (0 here) and, in the low nibble, the check
   ``(byte1 high nibble + byte1 low nibble + byte2 high nibble) % 16`` — ``0F`` for version 0;
3. address, low 8 bits;
4. the instruction code;
5. data 1; 6. data 2;
7. combination code 2: data 3 in the high nibble, address high 4 bits in the low nibble;
8. checksum: ``(byte1 + … + byte7) % 256``.

Instruction codes (A.3.2–A.3.4):

* PTZ (bits 7–6 = ``00``): bit 5 zoom out (wide), bit 4 zoom in (tele), bit 3 tilt up, bit 2 tilt
  down, bit 1 pan left, bit 0 pan right; data 1 is the pan speed, data 2 the tilt speed (0–255),
  data 3 the zoom speed (0–15). All bits 0 is stop. Opposite directions together are not allowed.
* FI (bits 7–4 = ``0100``): bit 3 iris close, bit 2 iris open, bit 1 focus near, bit 0 focus far;
  data 1 focus speed, data 2 iris speed.
* Presets: ``81`` set, ``82`` call, ``83`` delete; data 2 is the preset number (1–255).

Written in hex, as ``<PTZCmd>`` carries it: ``A50F000800640020`` is tilt up at speed 0x64.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

__all__ = [
    "PTZ_ACTIONS",
    "FocusIris",
    "Preset",
    "PtzError",
    "PtzMove",
    "decode",
    "encode",
    "move",
]

LEAD: Final = 0xA5
VERSION: Final = 0


class PtzError(ValueError):
    """A command that cannot be encoded, or bytes that are not a valid Annex A.3 command."""


@dataclass(frozen=True, slots=True)
class PtzMove:
    """Pan (-1 left, +1 right), tilt (-1 down, +1 up), zoom (-1 out, +1 in) at the given speeds;
    all zero is stop."""

    pan: int = 0
    tilt: int = 0
    zoom: int = 0
    pan_speed: int = 0
    tilt_speed: int = 0
    zoom_speed: int = 0
    address: int = 0


@dataclass(frozen=True, slots=True)
class FocusIris:
    """Focus (-1 near, +1 far) and iris (-1 close, +1 open) at the given speeds (A.3.3)."""

    focus: int = 0
    iris: int = 0
    focus_speed: int = 0
    iris_speed: int = 0
    address: int = 0


@dataclass(frozen=True, slots=True)
class Preset:
    """``set``, ``call`` or ``delete`` preset ``number`` (1–255) (A.3.4)."""

    action: str
    number: int
    address: int = 0


Command = PtzMove | FocusIris | Preset

_PRESET_CODES: Final = {"set": 0x81, "call": 0x82, "delete": 0x83}
_PRESET_ACTIONS: Final = {code: action for action, code in _PRESET_CODES.items()}

#: Named moves the API offers: (pan, tilt, zoom).
PTZ_ACTIONS: Final = {
    "stop": (0, 0, 0),
    "up": (0, 1, 0),
    "down": (0, -1, 0),
    "left": (-1, 0, 0),
    "right": (1, 0, 0),
    "up_left": (-1, 1, 0),
    "up_right": (1, 1, 0),
    "down_left": (-1, -1, 0),
    "down_right": (1, -1, 0),
    "zoom_in": (0, 0, 1),
    "zoom_out": (0, 0, -1),
}


def move(action: str, speed: int = 0x80, address: int = 0) -> PtzMove:
    """A :class:`PtzMove` for one of :data:`PTZ_ACTIONS` at ``speed`` (0–255; zoom uses its top nibble)."""
    if action not in PTZ_ACTIONS:
        raise PtzError(f"unknown PTZ action {action!r}")
    pan, tilt, zoom = PTZ_ACTIONS[action]
    return PtzMove(
        pan,
        tilt,
        zoom,
        speed if pan else 0,
        speed if tilt else 0,
        (speed >> 4) if zoom else 0,
        address,
    )


def _range(name: str, value: int, high: int) -> None:
    if not 0 <= value <= high:
        raise PtzError(f"{name} must be 0–{high}, not {value}")


def _direction(name: str, value: int) -> None:
    if value not in (-1, 0, 1):
        raise PtzError(f"{name} must be -1, 0 or 1, not {value}")


def encode(command: Command) -> bytes:
    """The 8 bytes of ``command`` (Annex A.3.1)."""
    _range("address", command.address, 0xFFF)
    data3 = 0
    if isinstance(command, PtzMove):
        for name in ("pan", "tilt", "zoom"):
            _direction(name, getattr(command, name))
        _range("pan_speed", command.pan_speed, 255)
        _range("tilt_speed", command.tilt_speed, 255)
        _range("zoom_speed", command.zoom_speed, 15)
        code = 0
        code |= {1: 0x01, -1: 0x02, 0: 0}[command.pan]  # bit 0 right, bit 1 left
        code |= {-1: 0x04, 1: 0x08, 0: 0}[command.tilt]  # bit 2 down, bit 3 up
        code |= {1: 0x10, -1: 0x20, 0: 0}[command.zoom]  # bit 4 zoom in, bit 5 zoom out
        data1, data2, data3 = command.pan_speed, command.tilt_speed, command.zoom_speed
    elif isinstance(command, FocusIris):
        _direction("focus", command.focus)
        _direction("iris", command.iris)
        _range("focus_speed", command.focus_speed, 255)
        _range("iris_speed", command.iris_speed, 255)
        code = 0x40
        code |= {1: 0x01, -1: 0x02, 0: 0}[command.focus]  # bit 0 far, bit 1 near
        code |= {1: 0x04, -1: 0x08, 0: 0}[command.iris]  # bit 2 open, bit 3 close
        data1, data2 = command.focus_speed, command.iris_speed
    else:
        if command.action not in _PRESET_CODES:
            raise PtzError(f"unknown preset action {command.action!r}")
        _range("preset number", command.number, 255)
        if command.number == 0:
            raise PtzError("preset numbers start at 1")
        code = _PRESET_CODES[command.action]
        data1, data2 = 0, command.number
    head = [
        LEAD,
        (VERSION << 4) | ((LEAD >> 4) + (LEAD & 0x0F) + VERSION) % 16,
        command.address & 0xFF,
        code,
        data1,
        data2,
        (data3 << 4) | (command.address >> 8),
    ]
    return bytes([*head, sum(head) % 256])


def decode(data: bytes | str) -> Command:
    """Read 8 bytes (or their 16 hex digits) back into a command; checks both check fields."""
    if isinstance(data, str):
        text = data.strip()
        if len(text) != 16:
            raise PtzError(f"a PTZ command is 16 hex digits, not {len(text)}")
        try:
            data = bytes.fromhex(text)
        except ValueError:
            raise PtzError("a PTZ command is written in hex digits") from None
    if len(data) != 8:
        raise PtzError(f"a PTZ command is 8 bytes, not {len(data)}")
    if data[0] != LEAD:
        raise PtzError(f"first byte must be A5, not {data[0]:02X}")
    if (data[1] & 0x0F) != ((data[0] >> 4) + (data[0] & 0x0F) + (data[1] >> 4)) % 16:
        raise PtzError("bad check nibble in byte 2")
    if data[7] != sum(data[:7]) % 256:
        raise PtzError(f"bad checksum {data[7]:02X}, expected {sum(data[:7]) % 256:02X}")
    address = data[2] | ((data[6] & 0x0F) << 8)
    code, data1, data2, data3 = data[3], data[4], data[5], data[6] >> 4
    if code & 0xC0 == 0:
        if code & 0x03 == 0x03 or code & 0x0C == 0x0C or code & 0x30 == 0x30:
            raise PtzError("opposite directions in one PTZ command")
        pan = 1 if code & 0x01 else -1 if code & 0x02 else 0
        tilt = 1 if code & 0x08 else -1 if code & 0x04 else 0
        zoom = 1 if code & 0x10 else -1 if code & 0x20 else 0
        return PtzMove(pan, tilt, zoom, data1, data2, data3, address)
    if code & 0xF0 == 0x40:
        if code & 0x03 == 0x03 or code & 0x0C == 0x0C:
            raise PtzError("opposite directions in one FI command")
        focus = 1 if code & 0x01 else -1 if code & 0x02 else 0
        iris = 1 if code & 0x04 else -1 if code & 0x08 else 0
        return FocusIris(focus, iris, data1, data2, address)
    if code in _PRESET_ACTIONS:
        return Preset(_PRESET_ACTIONS[code], data2, address)
    raise PtzError(f"instruction code {code:02X} is not supported")
