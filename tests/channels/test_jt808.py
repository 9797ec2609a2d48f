"""JT/T 808 framing, header and bodies: round trips in both header editions, and real captured frames."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from dispatchd.channels.gps.jt808 import (
    ALARM_EMERGENCY,
    ALARM_OVERSPEED,
    BEIJING_TIME,
    STATUS_ACC,
    STATUS_POSITIONED,
    STATUS_SOUTH,
    STATUS_WEST,
    Body,
    ExtraItem,
    FrameSplitter,
    Header,
    Heartbeat,
    Jt808Error,
    Location,
    LocationBatch,
    Message,
    MsgId,
    PlatformGeneralReply,
    RegisterReply,
    RegisterResult,
    ReplyResult,
    Subpackage,
    TerminalAuth,
    TerminalGeneralReply,
    TerminalRegister,
    checksum,
    decode_body,
    decode_frame,
    decode_location,
    encode_body,
    encode_frame,
    encode_message,
    encode_reply,
    escape,
    fuel_item,
    is_emergency,
    mileage_item,
    recorder_speed_item,
    satellites_item,
    signal_strength_item,
    unescape,
    vendor_readings,
)

FRAMES_TSV = (
    Path(__file__).resolve().parents[2].parent / "shared" / "testdata" / "jt808" / "traccar-frames.tsv"
)

PHONE = "13800138000"
IMEI = "866496077582164"
HANGZHOU_FIX_TIME = datetime(2026, 5, 3, 8, 0, 5, tzinfo=UTC)


# -- helpers ----------------------------------------------------------------------------------------


def only_frame(wire: bytes) -> bytes:
    """The single payload a fresh splitter cuts from ``wire``."""
    splitter = FrameSplitter()
    frames = splitter.feed(wire)
    assert len(frames) == 1, splitter.last_rejection
    assert splitter.junk_bytes == 0
    return frames[0]


def through_the_wire(body: Body, *, protocol_version: int | None, serial: int = 7) -> Message:
    """Encode ``body`` as a terminal would and read it back as the platform does."""
    wire = encode_message(body, phone=PHONE, serial=serial, protocol_version=protocol_version)
    return decode_frame(only_frame(wire))


def hangzhou_location(**changes: object) -> Location:
    """A squad vehicle by West Lake with every standard additional item and one vendor item."""
    values: dict[str, object] = {
        "alarm": ALARM_EMERGENCY | ALARM_OVERSPEED,
        "status": STATUS_ACC | STATUS_POSITIONED,
        "lat": 30.259244,
        "lon": 120.130633,
        "altitude_m": 12,
        "speed_kmh": 43.7,
        "heading": 271,
        "at": HANGZHOU_FIX_TIME,
        "items": (
            mileage_item(12345.6),
            fuel_item(45.6),
            recorder_speed_item(43.5),
            signal_strength_item(25),
            satellites_item(14),
            ExtraItem(0xE1, b"\x2d"),
        ),
    }
    values.update(changes)
    return Location(**values)  # type: ignore[arg-type]


REGISTER_2013 = TerminalRegister(
    province=33,
    city=100,
    manufacturer="70111",
    model="BSJ-A6",
    terminal_id="A6Z0001",
    plate_colour=1,
    plate="浙A12345",
)
REGISTER_2019 = TerminalRegister(
    province=33,
    city=100,
    manufacturer="ZJKJ0000001",
    model="MD300-4G-BEIDOU",
    terminal_id=IMEI,
    plate_colour=2,
    plate="浙AD12345",
)

BODIES_BOTH_EDITIONS: list[Body] = [
    TerminalGeneralReply(reply_serial=41, reply_msg_id=0x8103, result=ReplyResult.UNSUPPORTED),
    PlatformGeneralReply(reply_serial=9, reply_msg_id=0x0200, result=ReplyResult.ALARM_ACK),
    Heartbeat(),
    RegisterReply(reply_serial=3, result=RegisterResult.OK, auth_code="a8f3c2d1"),
    RegisterReply(reply_serial=3, result=RegisterResult.NO_SUCH_TERMINAL),
    hangzhou_location(),
    hangzhou_location(lat=-33.856784, lon=-70.648273, items=(), at=None),
    LocationBatch(
        kind=1,
        locations=(
            hangzhou_location(),
            hangzhou_location(speed_kmh=0.0, alarm=0, items=(satellites_item(9),)),
        ),
    ),
]


# -- framing ------------------------------------------------------------------------------------------


def test_escape_follows_the_standard_example() -> None:
    """0x30 0x7e 0x08 0x7d 0x55 escapes to 0x30 0x7d 0x02 0x08 0x7d 0x01 0x55 and back (§4.4.2)."""
    raw = bytes([0x30, 0x7E, 0x08, 0x7D, 0x55])
    escaped = escape(raw)
    assert escaped == bytes([0x30, 0x7D, 0x02, 0x08, 0x7D, 0x01, 0x55])
    assert unescape(escaped) == raw


def test_escape_does_not_escape_its_own_escapes() -> None:
    """A body of 0x7d 0x02 bytes survives escaping and unescaping unchanged."""
    raw = bytes([0x7D, 0x02, 0x7E, 0x7D, 0x01])
    assert unescape(escape(raw)) == raw
    assert 0x7E not in escape(raw)


@pytest.mark.parametrize(
    ("escaped", "problem"),
    [
        (b"\x30\x7d", "not followed"),
        (b"\x30\x7d\x03\x55", "followed by 0x03"),
        (b"\x30\x7e\x55", "bare 0x7e"),
    ],
)
def test_unescape_rejects_broken_escapes(escaped: bytes, problem: str) -> None:
    """A dangling 0x7d, an unknown escape or a bare flag inside a frame is an error, not data."""
    with pytest.raises(Jt808Error, match=problem):
        unescape(escaped)


def test_checksum_is_xor_of_all_bytes() -> None:
    """The check code is the XOR of header and body bytes."""
    assert checksum(b"") == 0
    assert checksum(bytes([0x01, 0x02, 0x04])) == 0x07
    assert checksum(bytes([0x7E, 0x7E])) == 0


def test_frame_escapes_flag_and_escape_bytes_in_header_and_body() -> None:
    """0x7e and 0x7d in the serial number and the latitude are escaped on the wire and restored."""
    lat_with_flags = 0x017E7D10 / 1_000_000  # micro-degrees whose bytes are 01 7e 7d 10
    location = hangzhou_location(lat=lat_with_flags, items=())
    wire = encode_message(location, phone=PHONE, serial=0x7E7D)
    inner = wire[1:-1]
    assert wire[0] == 0x7E and wire[-1] == 0x7E
    assert 0x7E not in inner
    assert b"\x7d\x02\x7d\x01" in inner  # the serial number 0x7e7d
    assert b"\x01\x7d\x02\x7d\x01\x10" in inner  # the latitude
    message = decode_frame(only_frame(wire))
    assert message.header.serial == 0x7E7D
    assert decode_body(message) == location


def test_check_code_that_equals_the_flag_is_escaped() -> None:
    """When the XOR comes out as 0x7e the check code itself is written as 0x7d 0x02."""
    for serial in range(256):
        header = Header(msg_id=MsgId.HEARTBEAT, phone=PHONE, serial=serial)
        wire = encode_frame(header, b"")
        if wire.endswith(b"\x7d\x02\x7e"):
            break
    else:
        pytest.fail("no serial number gives a 0x7e check code")
    assert decode_frame(only_frame(wire)).header == header


def test_bad_check_code_is_rejected() -> None:
    """A payload whose last byte is not the XOR of the rest raises with both values in the message."""
    payload = bytearray(only_frame(encode_message(Heartbeat(), phone=PHONE, serial=1)))
    payload[-1] ^= 0xFF
    with pytest.raises(Jt808Error, match="bad check code"):
        decode_frame(bytes(payload))


@pytest.mark.parametrize("keep", [0, 1, 3, 6, 12])
def test_truncated_header_is_rejected(keep: int) -> None:
    """A payload cut inside the 2013 header raises 'truncated header', whatever the cut."""
    payload = only_frame(encode_message(Heartbeat(), phone=PHONE, serial=1))
    with pytest.raises(Jt808Error, match="truncated header"):
        decode_frame(payload[:keep])


def test_truncated_2019_header_is_rejected() -> None:
    """A payload with the version flag but only a 2013-sized header raises 'truncated header'."""
    payload = only_frame(encode_message(Heartbeat(), phone=PHONE, serial=1, protocol_version=1))
    with pytest.raises(Jt808Error, match="2019 header"):
        decode_frame(payload[:14])


def test_truncated_body_is_rejected() -> None:
    """A location frame cut short (check code recomputed) fails on length, not silently."""
    payload = only_frame(encode_message(hangzhou_location(), phone=PHONE, serial=1))
    content = payload[:-10]
    with pytest.raises(Jt808Error, match="bad length"):
        decode_frame(content + bytes([checksum(content)]))


def test_declared_length_must_match_body() -> None:
    """A header that declares one body byte more than the frame carries is a bad length."""
    header = Header(msg_id=MsgId.HEARTBEAT, phone=PHONE, serial=1)
    payload = bytearray(only_frame(encode_frame(header, b"")))
    payload[3] = 1  # body length 1, no body
    payload[-1] = checksum(bytes(payload[:-1]))
    with pytest.raises(Jt808Error, match="bad length: header declares a 1-byte body, frame carries 0"):
        decode_frame(bytes(payload))


def test_body_too_long_for_the_length_field_is_refused() -> None:
    """Bodies over 1023 bytes cannot be framed without subpackaging."""
    header = Header(msg_id=0x0900, phone=PHONE, serial=1)
    with pytest.raises(Jt808Error, match="10 bits"):
        encode_frame(header, bytes(1024))


# -- stream splitting -----------------------------------------------------------------------------------


def three_frames() -> list[bytes]:
    """Three different frames, one of them full of bytes that need escaping."""
    return [
        encode_message(Heartbeat(), phone=PHONE, serial=1),
        encode_message(hangzhou_location(lat=0x017E7D10 / 1_000_000), phone=PHONE, serial=0x7D7E),
        encode_message(TerminalAuth("a8f3c2d1", IMEI, "V2.1.7"), phone=IMEI, serial=3, protocol_version=1),
    ]


def test_splitter_fed_byte_by_byte_returns_every_frame() -> None:
    """Feeding one byte at a time yields the same payloads as feeding whole frames."""
    frames = three_frames()
    splitter = FrameSplitter()
    payloads: list[bytes] = []
    for byte in b"".join(frames):
        payloads += splitter.feed(bytes([byte]))
    assert payloads == [unescape(frame[1:-1]) for frame in frames]
    assert splitter.junk_bytes == 0 and splitter.rejected == 0 and splitter.buffered == 0


def test_splitter_skips_and_counts_junk_between_frames() -> None:
    """Noise before, between (even containing 0x7e and 0x7d) and after frames is skipped and counted."""
    first, second, third = three_frames()
    leading, middle, lone_flag_junk, trailing = (
        b"GET / HTTP/1.1\r\n",
        b"\x00\x7d\xff",
        b"\x7ejunk\x7e",
        b"\x01\x02",
    )
    stream = leading + first + middle + second + lone_flag_junk + third + trailing
    splitter = FrameSplitter()
    payloads = splitter.feed(stream)
    assert [decode_frame(p).header.serial for p in payloads] == [1, 0x7D7E, 3]
    assert splitter.junk_bytes == len(leading) + len(middle) + len(b"junk")
    assert splitter.rejected == 2  # the run after the first frame, and b"junk"
    assert splitter.buffered == len(trailing)  # held until a flag says what it was
    assert splitter.last_rejection is not None


def test_splitter_accepts_frames_that_share_a_flag() -> None:
    """Terminals that send 7e A 7e B 7e (one flag between frames) lose nothing."""
    first, second, _ = three_frames()
    stream = first + second[1:]
    assert FrameSplitter().feed(stream) == [unescape(first[1:-1]), unescape(second[1:-1])]


def test_splitter_drops_corrupt_frame_and_keeps_the_next() -> None:
    """A frame with a flipped bit is counted as rejected and the following frame still arrives."""
    first, second, third = three_frames()
    corrupt = bytearray(second)
    corrupt[5] ^= 0x01
    splitter = FrameSplitter()
    payloads = splitter.feed(first + bytes(corrupt) + third)
    assert [decode_frame(p).header.serial for p in payloads] == [1, 3]
    assert splitter.rejected == 1
    assert splitter.last_rejection is not None and "check code" in splitter.last_rejection


def test_splitter_buffer_is_bounded_and_recovers() -> None:
    """A run longer than max_frame_length is discarded without buffering it, then sync returns."""
    splitter = FrameSplitter(max_frame_length=64)
    frame = encode_message(Heartbeat(), phone=PHONE, serial=5)
    assert splitter.feed(b"\x7e" + b"\x55" * 40) == []
    assert splitter.feed(b"\x55" * 1000) == []
    assert splitter.buffered == 0
    assert splitter.feed(frame) == [unescape(frame[1:-1])]
    assert splitter.junk_bytes == 1040
    assert splitter.last_rejection is not None and "64 bytes" in splitter.last_rejection


def test_splitter_keeps_a_partial_frame_across_feeds() -> None:
    """Half a frame is held until the rest arrives."""
    frame = encode_message(hangzhou_location(), phone=PHONE, serial=5)
    splitter = FrameSplitter()
    assert splitter.feed(frame[:20]) == []
    assert splitter.buffered == 19
    assert splitter.feed(frame[20:]) == [unescape(frame[1:-1])]


# -- headers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol_version", [None, 1])
def test_header_round_trips_in_both_editions(protocol_version: int | None) -> None:
    """Message id, terminal number, serial, version, encryption and subpackage survive encode/decode."""
    header = Header(
        msg_id=0x0801,
        phone=PHONE,
        serial=65535,
        protocol_version=protocol_version,
        encryption=1,
        subpackage=Subpackage(total=3, index=2),
    )
    message = decode_frame(only_frame(encode_frame(header, b"\x01\x02\x03")))
    assert message == Message(header=header, body=b"\x01\x02\x03")


def test_2013_header_layout() -> None:
    """A 2013 header is id, properties, BCD[6] terminal number and serial: 12 bytes."""
    payload = only_frame(encode_message(Heartbeat(), phone=PHONE, serial=0x0102))
    assert payload[:-1].hex() == "0002" + "0000" + "013800138000" + "0102"


def test_2019_header_layout() -> None:
    """A 2019 header sets bit 14, adds the version byte and a BCD[10] terminal number: 17 bytes."""
    payload = only_frame(encode_message(Heartbeat(), phone=PHONE, serial=0x0102, protocol_version=1))
    assert payload[:-1].hex() == "0002" + "4000" + "01" + "00000000013800138000" + "0102"


def test_terminal_number_is_the_same_in_both_editions() -> None:
    """Zero padding is dropped, so one terminal keeps one identity across header editions."""
    old = decode_frame(only_frame(encode_message(Heartbeat(), phone=PHONE, serial=1)))
    new = decode_frame(only_frame(encode_message(Heartbeat(), phone=PHONE, serial=1, protocol_version=1)))
    assert old.header.phone == new.header.phone == PHONE
    assert (old.header.is_2019, new.header.is_2019) == (False, True)


@pytest.mark.parametrize(
    ("phone", "protocol_version"),
    [("1380013800012", None), ("", None), ("1380013800X", None), ("123456789012345678901", 1)],
)
def test_header_refuses_terminal_numbers_that_do_not_fit(phone: str, protocol_version: int | None) -> None:
    """A terminal number longer than the edition's BCD field, empty or not digits is refused."""
    with pytest.raises(Jt808Error, match="terminal number"):
        Header(msg_id=MsgId.HEARTBEAT, phone=phone, serial=1, protocol_version=protocol_version)


def test_header_refuses_values_that_do_not_fit_a_word() -> None:
    """Message ids and serial numbers are WORDs."""
    with pytest.raises(Jt808Error, match="WORD"):
        Header(msg_id=0x10000, phone=PHONE, serial=1)
    with pytest.raises(Jt808Error, match="WORD"):
        Header(msg_id=1, phone=PHONE, serial=-1)


# -- bodies ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol_version", [None, 1], ids=["2013", "2019"])
@pytest.mark.parametrize("body", BODIES_BOTH_EDITIONS, ids=lambda body: type(body).__name__)
def test_body_round_trips_in_both_editions(body: Body, protocol_version: int | None) -> None:
    """Every modelled body decodes to what was encoded, under a 2013 and a 2019 header."""
    message = through_the_wire(body, protocol_version=protocol_version)
    assert message.header.msg_id == body.MSG_ID
    assert message.header.protocol_version == protocol_version
    assert decode_body(message) == body


@pytest.mark.parametrize(
    ("body", "protocol_version"),
    [
        (REGISTER_2013, None),
        (REGISTER_2019, 1),
        (TerminalAuth(auth_code="a8f3c2d1"), None),
        (TerminalAuth(auth_code="a8f3c2d1", imei=IMEI, software_version="V2.1.7"), 1),
    ],
    ids=["register-2013", "register-2019", "auth-2013", "auth-2019"],
)
def test_edition_specific_bodies_round_trip(body: Body, protocol_version: int | None) -> None:
    """Register and auth round trip in the layout their header edition calls for."""
    assert decode_body(through_the_wire(body, protocol_version=protocol_version)) == body


def test_register_field_widths_differ_by_edition() -> None:
    """2013 register fields are 5/20/7 bytes, 2019 ones 11/30/30, both padded with 0x00."""
    body_2013 = encode_body(REGISTER_2013)
    body_2019 = encode_body(REGISTER_2019, is_2019=True)
    plate_2013 = "浙A12345".encode("gbk")
    plate_2019 = "浙AD12345".encode("gbk")
    assert len(body_2013) == 2 + 2 + 5 + 20 + 7 + 1 + len(plate_2013)
    assert len(body_2019) == 2 + 2 + 11 + 30 + 30 + 1 + len(plate_2019)
    assert body_2013[4:9] == b"70111"
    assert body_2013[9:29] == b"BSJ-A6".ljust(20, b"\x00")
    assert body_2019[45:75] == IMEI.encode().ljust(30, b"\x00")
    assert body_2013.endswith(plate_2013)


def test_register_refuses_text_longer_than_its_field() -> None:
    """A 2013 manufacturer id longer than 5 bytes cannot be written."""
    too_long = TerminalRegister(33, 100, "ZJKJ0000001", "M", "1", 1, "浙A1")
    with pytest.raises(Jt808Error, match="manufacturer"):
        encode_body(too_long)


def test_register_decoded_with_the_wrong_edition_fails_loudly() -> None:
    """A 2013 register body read as 2019 is too short and raises instead of misreading fields."""
    message = Message(
        header=Header(msg_id=MsgId.TERMINAL_REGISTER, phone=PHONE, serial=1, protocol_version=1),
        body=encode_body(REGISTER_2013),
    )
    with pytest.raises(Jt808Error, match="truncated at terminal id"):
        decode_body(message)


def test_auth_2019_layout() -> None:
    """2019 auth is length byte, code, IMEI BYTE[15], software version BYTE[20]."""
    body = encode_body(TerminalAuth("abc", IMEI, "V1"), is_2019=True)
    assert body == b"\x03abc" + IMEI.encode() + b"V1".ljust(20, b"\x00")


def test_auth_2013_cannot_carry_imei() -> None:
    """IMEI and software version are refused for the 2013 layout rather than dropped."""
    with pytest.raises(Jt808Error, match="2019"):
        encode_body(TerminalAuth("abc", IMEI, "V1"))


def test_general_reply_layout_and_answering() -> None:
    """0x8001 answers with the request's serial and id; body is WORD, WORD, BYTE."""
    request = Header(msg_id=MsgId.LOCATION_REPORT, phone=PHONE, serial=0x1234)
    reply = PlatformGeneralReply.answering(request, ReplyResult.ALARM_ACK)
    assert encode_body(reply) == bytes.fromhex("1234" + "0200" + "04")


def test_register_reply_carries_auth_code_only_on_success() -> None:
    """A refused registration has no auth code; asking for one is an error."""
    assert encode_body(RegisterReply(7, RegisterResult.OK, "k3y")) == b"\x00\x07\x00k3y"
    assert encode_body(RegisterReply(7, RegisterResult.TERMINAL_ALREADY_REGISTERED)) == b"\x00\x07\x03"
    with pytest.raises(Jt808Error, match="auth code"):
        encode_body(RegisterReply(7, RegisterResult.NO_SUCH_VEHICLE, "k3y"))


def test_reply_goes_back_in_the_request_edition() -> None:
    """encode_reply answers a 2019 terminal with a 2019 header and the same terminal number."""
    request = Header(msg_id=MsgId.TERMINAL_AUTH, phone=IMEI, serial=77, protocol_version=1)
    wire = encode_reply(request, PlatformGeneralReply.answering(request), serial=500)
    reply = decode_frame(only_frame(wire))
    assert reply.header == Header(
        msg_id=MsgId.PLATFORM_GENERAL_REPLY, phone=IMEI, serial=500, protocol_version=1
    )
    assert decode_body(reply) == PlatformGeneralReply(77, MsgId.TERMINAL_AUTH, ReplyResult.OK)


def test_heartbeat_with_a_body_is_malformed() -> None:
    """0x0002 has an empty body; bytes there are reported."""
    message = Message(Header(msg_id=MsgId.HEARTBEAT, phone=PHONE, serial=1), b"\x00")
    with pytest.raises(Jt808Error, match="unexpected bytes"):
        decode_body(message)


def test_unmodelled_encrypted_and_split_messages_are_not_decoded() -> None:
    """decode_body returns None for unknown ids, encrypted bodies and single packets of a split message."""
    location_body = encode_body(hangzhou_location())
    unknown = Message(Header(msg_id=0x0900, phone=PHONE, serial=1), b"\x01")
    encrypted = Message(
        Header(msg_id=MsgId.LOCATION_REPORT, phone=PHONE, serial=1, encryption=1), location_body
    )
    split = Message(
        Header(msg_id=MsgId.LOCATION_REPORT, phone=PHONE, serial=1, subpackage=Subpackage(2, 1)),
        location_body,
    )
    assert [decode_body(m) for m in (unknown, encrypted, split)] == [None, None, None]


# -- location reports -----------------------------------------------------------------------------------


def test_location_basic_fields_layout() -> None:
    """The 28-byte basic block: alarm, status, lat, lon, altitude, speed, direction, GMT+8 BCD time."""
    body = encode_body(hangzhou_location(items=()))
    assert body.hex() == (
        "00000003"  # emergency + overspeed
        "00000003"  # ACC on, positioned
        "01cdb82c"  # 30.259244 degrees = 30 259 244 millionths
        "07290c49"  # 120.130633 degrees
        "000c"  # 12 m
        "01b5"  # 43.7 km/h in 0.1 km/h
        "010f"  # 271 degrees
        "260503160005"  # 2026-05-03 16:00:05 Beijing time = 08:00:05 UTC
    )


def test_location_standard_items_decode() -> None:
    """Items 0x01, 0x02, 0x03, 0x30, 0x31 give mileage, fuel, recorder speed, signal and satellites."""
    location = decode_location(encode_body(hangzhou_location()))
    assert location.mileage_km == pytest.approx(12345.6)
    assert location.fuel_l == pytest.approx(45.6)
    assert location.recorder_speed_kmh == pytest.approx(43.5)
    assert location.signal_strength == 25
    assert location.satellites == 14
    assert location.item(0xE1) == b"\x2d"
    assert location.item(0x25) is None


def test_location_flags() -> None:
    """Alarm bit 0 is the emergency button; status bits 0 and 1 are ACC and a valid fix."""
    location = hangzhou_location()
    assert location.is_emergency and is_emergency(location.alarm)
    assert not is_emergency(ALARM_OVERSPEED)
    assert location.acc_on and location.is_positioned
    quiet = hangzhou_location(alarm=0, status=0)
    assert not quiet.is_emergency and not quiet.acc_on and not quiet.is_positioned


def test_standard_item_with_unexpected_length_is_kept_raw() -> None:
    """A 0x31 item that is not one byte does not decode as satellites but stays in items."""
    location = decode_location(encode_body(hangzhou_location(items=(ExtraItem(0x31, b"\x00\x0e"),))))
    assert location.satellites is None
    assert location.items == (ExtraItem(0x31, b"\x00\x0e"),)


def test_hemisphere_comes_from_status_bits() -> None:
    """South and west set status bits 2 and 3 on encode and give negative degrees on decode."""
    santiago = hangzhou_location(lat=-33.45, lon=-70.6667, status=STATUS_POSITIONED)
    body = encode_body(santiago)
    status = int.from_bytes(body[4:8], "big")
    assert status == STATUS_POSITIONED | STATUS_SOUTH | STATUS_WEST
    assert body[8:12] == (33_450_000).to_bytes(4, "big")
    decoded = decode_location(body)
    assert (decoded.lat, decoded.lon) == (-33.45, -70.6667)
    # the dataclass keeps the bits in step with the signs, so a stale south bit is cleared
    assert hangzhou_location(status=STATUS_SOUTH | STATUS_ACC).status == STATUS_ACC
    assert santiago.status == STATUS_POSITIONED | STATUS_SOUTH | STATUS_WEST


def test_location_time_is_beijing_time_converted_to_utc() -> None:
    """BCD 200807180722 (GMT+8) is 2020-08-07 10:07:22 UTC, an aware datetime."""
    body = bytearray(encode_body(hangzhou_location(items=())))
    body[22:28] = bytes.fromhex("200807180722")
    at = decode_location(bytes(body)).at
    assert at == datetime(2020, 8, 7, 10, 7, 22, tzinfo=UTC)
    assert at is not None and at.utcoffset() is not None
    assert at.astimezone(BEIJING_TIME).hour == 18


def test_location_time_of_zeros_means_unknown() -> None:
    """A terminal without a clock sends 000000000000; the fix has no time rather than an error."""
    body = bytearray(encode_body(hangzhou_location(items=())))
    body[22:28] = bytes(6)
    assert decode_location(bytes(body)).at is None


def test_bad_bcd_time_is_rejected() -> None:
    """A time nibble above 9 is bad BCD and raises with the field named."""
    body = bytearray(encode_body(hangzhou_location(items=())))
    body[22:28] = bytes.fromhex("2008071807a2")
    with pytest.raises(Jt808Error, match="bad BCD in location time"):
        decode_location(bytes(body))


def test_impossible_date_is_rejected() -> None:
    """Valid BCD that is not a date (month 13) raises."""
    body = bytearray(encode_body(hangzhou_location(items=())))
    body[22:28] = bytes.fromhex("201307180722")
    with pytest.raises(Jt808Error, match="not a date"):
        decode_location(bytes(body))


def test_latitude_beyond_90_degrees_is_rejected() -> None:
    """Micro-degrees above 90 000 000 cannot be a latitude."""
    body = bytearray(encode_body(hangzhou_location(items=())))
    body[8:12] = (90_000_001).to_bytes(4, "big")
    with pytest.raises(Jt808Error, match="latitude"):
        decode_location(bytes(body))


def test_truncated_location_and_item_are_rejected() -> None:
    """A basic block under 28 bytes, or an item longer than what is left, raises naming the field."""
    body = encode_body(hangzhou_location())
    with pytest.raises(Jt808Error, match="truncated at time"):
        decode_location(body[:25])
    with pytest.raises(Jt808Error, match="additional item 0xe1"):
        decode_location(body[:-1])


def test_batch_count_must_match() -> None:
    """A 0x0704 body that declares more locations than it carries raises."""
    body = bytearray(encode_body(LocationBatch(kind=0, locations=(hangzhou_location(),))))
    body[0:2] = (2).to_bytes(2, "big")
    message = Message(Header(msg_id=MsgId.LOCATION_BATCH, phone=PHONE, serial=1), bytes(body))
    with pytest.raises(Jt808Error, match="declares 2 locations, carries 1"):
        decode_body(message)


def test_vendor_items_are_read_best_effort() -> None:
    """Common manufacturer items give battery level, voltages and temperatures; odd sizes give None."""
    location = hangzhou_location(
        items=(
            ExtraItem(0xE3, bytes.fromhex("0050019a0000")),
            ExtraItem(0x82, bytes.fromhex("0092")),
            ExtraItem(0x51, bytes.fromhex("8015")),
        )
    )
    readings = vendor_readings(location)
    assert readings.battery_level == 80
    assert readings.battery_v == pytest.approx(4.10)
    assert readings.power_v == pytest.approx(14.6)
    assert readings.temperatures_c == ((1, -2.1),)
    odd = vendor_readings(
        hangzhou_location(items=(ExtraItem(0xE1, b"\xff"), ExtraItem(0xEB, b"\x00\x09\x00")))
    )
    assert odd.battery_level is None and odd.power_v is None and odd.battery_v is None


# -- real captured frames -------------------------------------------------------------------------------


@dataclass(frozen=True)
class CapturedFrame:
    line: int
    wire: bytes
    description: str


def captured_frames() -> list[CapturedFrame]:
    """Every data line of the capture file (comments start with #)."""
    frames = []
    for number, line in enumerate(FRAMES_TSV.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or line.startswith("#"):
            continue
        hex_frame, description = line.split("\t")
        frames.append(CapturedFrame(number, bytes.fromhex(hex_frame.strip()), description.strip()))
    return frames


CAPTURED = captured_frames()

# The auth capture is labelled "2019 header", but its body properties are 0x0020: bit 14 is clear,
# the terminal number is BCD[6] and the body is the 2013 auth layout (the whole body is the code).
# The bytes are what the terminal sent, so the test follows them.
LABELLED_2019_BUT_2013_ON_THE_WIRE = {bytes.fromhex("7e010200204f07788ef676")}


def test_capture_file_is_all_there() -> None:
    """The fixture file has the 15 frames it was published with, so none is silently skipped."""
    assert len(CAPTURED) == 15


@pytest.mark.parametrize("captured", CAPTURED, ids=lambda c: f"line{c.line}")
def test_captured_frame_decodes(captured: CapturedFrame) -> None:
    """A real frame splits, passes its check code, has the labelled id and edition, and re-encodes exactly."""
    payload = only_frame(captured.wire)
    message = decode_frame(payload)
    labelled_id = int(re.search(r"0x([0-9a-f]{4})", captured.description).group(1), 16)  # type: ignore[union-attr]
    assert message.header.msg_id == labelled_id
    labelled_2019 = "2019 header" in captured.description
    if captured.wire[:11] in LABELLED_2019_BUT_2013_ON_THE_WIRE:
        labelled_2019 = False
    assert message.header.is_2019 == labelled_2019
    assert encode_frame(message.header, message.body) == captured.wire


def locations_of(body: Body | None) -> list[Location]:
    if isinstance(body, Location):
        return [body]
    if isinstance(body, LocationBatch):
        return list(body.locations)
    return []


@pytest.mark.parametrize("captured", CAPTURED, ids=lambda c: f"line{c.line}")
def test_captured_frame_gives_the_expected_values(captured: CapturedFrame) -> None:
    """Each labelled value (satellites, battery, power, temperature, the register/auth reply) is read."""
    message = decode_frame(only_frame(captured.wire))
    body = decode_body(message)
    assert body is not None
    locations = locations_of(body)
    description = captured.description
    checked = 0

    for location in locations:
        assert -90 <= location.lat <= 90 and -180 <= location.lon <= 180
        assert location.at is not None and datetime(2015, 1, 1, tzinfo=UTC) < location.at
    if isinstance(body, Location | LocationBatch):
        assert encode_body(body) == message.body  # items kept raw and in order, so nothing is lost
        checked += 1

    if found := re.search(r"satellites (\d+)", description):
        assert [location.satellites for location in locations] == [int(found.group(1))]
        checked += 1
    readings = vendor_readings(locations[0]) if locations else None
    if found := re.search(r"battery level (\d+)", description):
        assert readings is not None and readings.battery_level == int(found.group(1))
        checked += 1
    if found := re.search(r"battery ([\d.]+) V", description):
        assert readings is not None and readings.battery_v == pytest.approx(float(found.group(1)))
        checked += 1
    if found := re.search(r"power ([\d.]+) V", description):
        assert readings is not None and readings.power_v == pytest.approx(float(found.group(1)))
        checked += 1
    if found := re.search(r"temperature (\d+) = ([\d.]+)", description):
        assert readings is not None
        sensors = dict(readings.temperatures_c)
        assert sensors[int(found.group(1))] == pytest.approx(float(found.group(2)))
        checked += 1

    if "answered with 0x8100" in description:
        assert isinstance(body, TerminalRegister)
        assert message.header.is_2019 and body.terminal_id == message.header.phone == IMEI
        assert body.model == "MD300"
        wire = encode_reply(
            message.header,
            RegisterReply(message.header.serial, RegisterResult.OK, auth_code=body.terminal_id),
            serial=1,
        )
        reply = decode_frame(only_frame(wire))
        assert reply.header.msg_id == MsgId.REGISTER_REPLY
        assert reply.header.is_2019 and reply.header.phone == message.header.phone
        assert decode_body(reply) == RegisterReply(message.header.serial, RegisterResult.OK, IMEI)
        checked += 1
    if "answered with 0x8001" in description:
        assert isinstance(body, TerminalAuth)
        assert body.auth_code == "ODY4OTM1MDYwMDA1MDIwbmV3U25SdWxl"
        wire = encode_reply(message.header, PlatformGeneralReply.answering(message.header), serial=1)
        reply = decode_frame(only_frame(wire))
        assert reply.header.phone == message.header.phone
        assert decode_body(reply) == PlatformGeneralReply(message.header.serial, MsgId.TERMINAL_AUTH)
        checked += 1

    assert checked >= 1, f"nothing in {description!r} was checked"


def test_capture_as_one_noisy_stream() -> None:
    """All captured frames in one stream with noise between them come out whole and in order."""
    noise = b"\x00\x7d\xff\x7e\x01"
    stream = noise.join(frame.wire for frame in CAPTURED)
    splitter = FrameSplitter()
    payloads: list[bytes] = []
    for start in range(0, len(stream), 7):
        payloads += splitter.feed(stream[start : start + 7])
    assert [decode_frame(p).header.serial for p in payloads] == [
        decode_frame(only_frame(frame.wire)).header.serial for frame in CAPTURED
    ]
    assert splitter.junk_bytes == len(noise) * (len(CAPTURED) - 1) - (len(CAPTURED) - 1)
