"""The 8-byte PTZ command of GB/T 28181-2016 Annex A.3: bytes, check nibble and checksum."""

from __future__ import annotations

import pytest

from dispatchd.channels.gb28181 import manscdp, ptz
from dispatchd.channels.gb28181.manscdp import DeviceControl
from dispatchd.channels.gb28181.ptz import FocusIris, Preset, PtzError, PtzMove
from tests.channels.gb28181.captures import body


def test_captured_tilt_up() -> None:
    """eXosip's A50F000800640020 is tilt up at speed 0x64; encoding it gives the same 8 bytes."""
    control = manscdp.parse(body("exosip-ptz-up.sip"))
    assert isinstance(control, DeviceControl)
    command = ptz.decode(control.ptz_cmd)
    assert command == PtzMove(tilt=1, tilt_speed=0x64)
    assert ptz.encode(command).hex().upper() == "A50F000800640020"


def test_stop_and_byte_layout() -> None:
    """Stop is A5 0F 00 00 00 00 00 B4: version 0 check nibble F, checksum the byte sum mod 256."""
    assert ptz.encode(ptz.move("stop")) == bytes.fromhex("A50F0000000000B4")


@pytest.mark.parametrize(
    ("action", "code"),
    [
        ("right", 0x01),
        ("left", 0x02),
        ("down", 0x04),
        ("up", 0x08),
        ("zoom_in", 0x10),
        ("zoom_out", 0x20),
        ("up_left", 0x0A),
        ("down_right", 0x05),
    ],
)
def test_direction_bits(action: str, code: int) -> None:
    """Each named move sets the instruction bits of Table A.3 and the speeds of its axes."""
    data = ptz.encode(ptz.move(action, speed=0xA0))
    assert data[3] == code
    assert data[4] == (0xA0 if code & 0x03 else 0)
    assert data[5] == (0xA0 if code & 0x0C else 0)
    assert data[6] >> 4 == (0x0A if code & 0x30 else 0)
    assert data[7] == sum(data[:7]) % 256
    assert ptz.decode(data) == ptz.move(action, speed=0xA0)


def test_address_spans_two_bytes() -> None:
    """An address above 255 puts its high 4 bits in the low nibble of byte 7."""
    data = ptz.encode(PtzMove(pan=1, pan_speed=1, zoom_speed=3, address=0x5AB))
    assert data[2] == 0xAB and data[6] == 0x35
    assert ptz.decode(data) == PtzMove(pan=1, pan_speed=1, zoom_speed=3, address=0x5AB)


def test_presets_and_focus() -> None:
    """Preset call (0x82, number in byte 6) and focus/iris (0x4X) round-trip."""
    assert ptz.encode(Preset("call", 3))[3:6] == bytes([0x82, 0, 3])
    for command in (
        Preset("set", 1),
        Preset("delete", 255),
        FocusIris(focus=-1, iris=1, focus_speed=9, iris_speed=7),
    ):
        assert ptz.decode(ptz.encode(command)) == command


def _with_checksum(head: str) -> str:
    raw = bytes.fromhex(head)
    return (raw + bytes([sum(raw) % 256])).hex().upper()


@pytest.mark.parametrize(
    "text",
    [
        "A50F000800640021",  # checksum off by one
        _with_checksum("A50E0008006400"),  # check nibble of byte 2 wrong
        _with_checksum("A40F0008006400"),  # not the A5 lead byte
        "A50F00080064",  # 6 bytes
        "ZZ0F000800640020",  # not hex
        _with_checksum("A50F000C006464"),  # up and down at once
        _with_checksum("A50F0099000000"),  # an instruction code not supported
    ],
)
def test_refused_commands(text: str) -> None:
    """Bad checksum, bad check nibble, wrong lead byte, wrong length, non-hex, opposite directions raise."""
    with pytest.raises(PtzError):
        ptz.decode(text)


def test_out_of_range_values() -> None:
    """Speeds, addresses and preset numbers out of range are refused when encoding."""
    for command in (
        PtzMove(pan_speed=256),
        PtzMove(zoom_speed=16),
        PtzMove(address=4096),
        Preset("call", 0),
        PtzMove(pan=2),
    ):
        with pytest.raises(PtzError):
            ptz.encode(command)
    with pytest.raises(PtzError):
        ptz.move("spin")
