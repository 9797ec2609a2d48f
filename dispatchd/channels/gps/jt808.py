"""JT/T 808 (2013 and 2019 editions) wire format, sans I/O: bytes in, messages out, and back.

Vehicle terminals (车载终端) speak JT/T 808 over TCP. A frame is::

    0x7e | header | body | check code | 0x7e

with 0x7e and 0x7d escaped inside (JT/T 808-2013 §4.4.2, 标识位), the check code the XOR of
every header and body byte (§4.4.4, 校验码), and a header that the 2019 edition widened
(JT/T 808-2019 §4.4.3, 消息头: bit 14 of the body properties flags a protocol-version byte and a
10-byte BCD terminal number instead of 6).

Layers, each usable on its own:

* :class:`FrameSplitter` cuts a TCP byte stream into unescaped frame payloads and never loses
  sync on junk;
* :func:`decode_frame` / :func:`encode_frame` turn a payload into a :class:`Message` (header and
  raw body) and back;
* :func:`decode_body` / :func:`encode_body` turn a raw body into a typed body (:class:`Location`,
  :class:`TerminalRegister`, ...) and back, for the messages a dispatch platform needs.

Nothing here reads the clock, logs or touches a socket; the connection handler feeds bytes in and
writes the bytes it gets back.
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import IntEnum
from typing import ClassVar, TypeAlias

__all__ = [
    "ALARM_COLLISION",
    "ALARM_EMERGENCY",
    "ALARM_FATIGUE",
    "ALARM_GNSS_ANTENNA_CUT",
    "ALARM_GNSS_ANTENNA_SHORT",
    "ALARM_GNSS_FAULT",
    "ALARM_ILLEGAL_DISPLACEMENT",
    "ALARM_ILLEGAL_DOOR_OPEN",
    "ALARM_ILLEGAL_IGNITION",
    "ALARM_IN_OUT_AREA",
    "ALARM_IN_OUT_ROUTE",
    "ALARM_OVERSPEED",
    "ALARM_POWER_CUT",
    "ALARM_POWER_LOW",
    "ALARM_ROLLOVER",
    "ALARM_ROUTE_DEVIATION",
    "ALARM_VEHICLE_STOLEN",
    "BEIJING_TIME",
    "ESCAPE",
    "FLAG",
    "MAX_BODY_LENGTH",
    "STATUS_ACC",
    "STATUS_BEIDOU",
    "STATUS_GALILEO",
    "STATUS_GLONASS",
    "STATUS_GPS",
    "STATUS_POSITIONED",
    "STATUS_SOUTH",
    "STATUS_WEST",
    "Body",
    "ExtraItem",
    "FrameSplitter",
    "Header",
    "Heartbeat",
    "Jt808Error",
    "Location",
    "LocationBatch",
    "Message",
    "MsgId",
    "PlatformGeneralReply",
    "RegisterReply",
    "RegisterResult",
    "ReplyResult",
    "Subpackage",
    "TerminalAuth",
    "TerminalGeneralReply",
    "TerminalRegister",
    "VendorReadings",
    "checksum",
    "decode_body",
    "decode_frame",
    "decode_location",
    "encode_body",
    "encode_frame",
    "encode_message",
    "encode_reply",
    "escape",
    "fuel_item",
    "is_emergency",
    "mileage_item",
    "recorder_speed_item",
    "satellites_item",
    "signal_strength_item",
    "unescape",
    "vendor_readings",
]


class Jt808Error(ValueError):
    """A frame or body that does not follow JT/T 808; the message says what and where."""


# -- framing (JT/T 808-2013 §4.4.2 标识位, §4.4.4 校验码) ------------------------------------------

FLAG = 0x7E
ESCAPE = 0x7D
_FLAG_BYTES = b"\x7e"
_ESCAPE_BYTES = b"\x7d"

#: The body length field is 10 bits wide (消息体属性 bits 0-9).
MAX_BODY_LENGTH = 0x3FF

#: Terminals report local time in GMT+8 (JT/T 808 位置基本信息, 时间 BCD[6]).
BEIJING_TIME = timezone(timedelta(hours=8), "GMT+8")


def escape(data: bytes) -> bytes:
    """Escape header, body and check code for the wire: 0x7d -> 0x7d 0x01, 0x7e -> 0x7d 0x02.

    JT/T 808-2013 §4.4.2: on sending, pack the message, compute the check code, then escape.
    0x7d goes first so the escapes written for 0x7e are not escaped again.
    """
    return data.replace(_ESCAPE_BYTES, b"\x7d\x01").replace(_FLAG_BYTES, b"\x7d\x02")


def unescape(data: bytes) -> bytes:
    """Undo :func:`escape`; raise :class:`Jt808Error` on a dangling or unknown escape or a bare 0x7e."""
    if FLAG in data:
        raise Jt808Error(f"bare 0x7e at offset {data.index(FLAG)} inside a frame")
    if ESCAPE not in data:
        return data
    parts = data.split(_ESCAPE_BYTES)
    out = bytearray(parts[0])
    offset = len(parts[0])
    for part in parts[1:]:
        if not part:
            raise Jt808Error(f"0x7d at offset {offset} is not followed by 0x01 or 0x02")
        if part[0] == 0x01:
            out.append(ESCAPE)
        elif part[0] == 0x02:
            out.append(FLAG)
        else:
            raise Jt808Error(f"0x7d at offset {offset} is followed by 0x{part[0]:02x}, not 0x01 or 0x02")
        out += part[1:]
        offset += 1 + len(part)
    return bytes(out)


def checksum(data: bytes) -> int:
    """The check code: XOR of every byte of header and body (JT/T 808-2013 §4.4.4)."""
    value = 0
    for byte in data:
        value ^= byte
    return value


class FrameSplitter:
    """Cut a TCP byte stream into unescaped frame payloads (header + body + check code).

    Every 0x7e is treated as a possible frame boundary, and a run of bytes between two of them is
    handed out only if it unescapes, has a whole header, the right body length and a good check
    code. Anything else (bytes before the first 0x7e, noise between frames, a corrupt frame, a run
    longer than ``max_frame_length``) is skipped and counted, and the next 0x7e starts afresh, so
    the splitter never loses sync. Frames that share one 0x7e between them are accepted too.

    Counters for the connection handler: ``junk_bytes`` (bytes skipped), ``rejected`` (runs
    between flags that were not a frame) and ``last_rejection`` (why the latest one was not).
    """

    def __init__(self, max_frame_length: int = 4096) -> None:
        if max_frame_length < 1:
            raise ValueError("max_frame_length must be positive")
        self.max_frame_length = max_frame_length
        self.junk_bytes = 0
        self.rejected = 0
        self.last_rejection: str | None = None
        self._seen_flag = False
        self._discarding = False
        self._buffer = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the closing 0x7e (never more than ``max_frame_length``)."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Take the next bytes from the stream; return the payloads of the frames they complete."""
        frames: list[bytes] = []
        position = 0
        end = len(data)
        while position < end:
            flag_at = data.find(FLAG, position)
            run_end = end if flag_at < 0 else flag_at
            run_length = run_end - position
            if not self._seen_flag or self._discarding:
                self.junk_bytes += run_length
            elif len(self._buffer) + run_length > self.max_frame_length:
                self._reject(
                    len(self._buffer) + run_length, f"no closing 0x7e within {self.max_frame_length} bytes"
                )
                self._buffer.clear()
                self._discarding = True
            else:
                self._buffer += data[position:run_end]
            if flag_at < 0:
                break
            self._seen_flag = True
            self._discarding = False
            if self._buffer:
                run = bytes(self._buffer)
                self._buffer.clear()
                payload = self._accept(run)
                if payload is not None:
                    frames.append(payload)
            position = flag_at + 1
        return frames

    def _accept(self, run: bytes) -> bytes | None:
        try:
            payload = unescape(run)
            decode_frame(payload)
        except Jt808Error as error:
            self._reject(len(run), str(error))
            return None
        return payload

    def _reject(self, size: int, reason: str) -> None:
        self.junk_bytes += size
        self.rejected += 1
        self.last_rejection = reason


# -- header (JT/T 808-2019 §4.4.3 消息头) ---------------------------------------------------------

_LENGTH_MASK = 0x03FF
_ENCRYPTION_SHIFT = 10
_SUBPACKAGE_BIT = 1 << 13
_VERSION_BIT = 1 << 14
_PHONE_DIGITS_2013 = 12  # BCD[6]
_PHONE_DIGITS_2019 = 20  # BCD[10]
_HEX_DIGITS = frozenset("0123456789abcdef")


@dataclass(frozen=True, slots=True)
class Subpackage:
    """消息包封装项: a long message split into ``total`` packets, this one numbered ``index`` from 1."""

    total: int
    index: int

    def __post_init__(self) -> None:
        _check_word("subpackage total", self.total)
        _check_word("subpackage index", self.index)


@dataclass(frozen=True, slots=True)
class Header:
    """消息头.

    ``phone`` is the terminal number (终端手机号) as its BCD digits without the zero padding, so
    ``"13800138000"`` in both header editions; a terminal that puts non-decimal nibbles there keeps
    them as lower-case hex digits so it still has a stable identity. ``protocol_version`` is None
    for a 2013 header and the version byte (1 for the first 2019 revision) for a 2019 one.
    ``encryption`` is the 3-bit 数据加密方式 (0 plain, 1 RSA).
    """

    msg_id: int
    phone: str
    serial: int
    protocol_version: int | None = None
    encryption: int = 0
    subpackage: Subpackage | None = None

    def __post_init__(self) -> None:
        _check_word("message id", self.msg_id)
        _check_word("serial number", self.serial)
        if not 0 <= self.encryption <= 7:
            raise Jt808Error(f"encryption {self.encryption} does not fit in 3 bits")
        if self.protocol_version is not None and not 0 <= self.protocol_version <= 0xFF:
            raise Jt808Error(f"protocol version {self.protocol_version} does not fit in a byte")
        width = self.phone_digits
        if not self.phone or len(self.phone) > width or not set(self.phone) <= _HEX_DIGITS:
            raise Jt808Error(
                f"terminal number {self.phone!r} is not 1 to {width} decimal (or lower-case hex) digits"
            )

    @property
    def is_2019(self) -> bool:
        """True for the 2019 header (version flag, protocol version byte, 10-byte terminal number)."""
        return self.protocol_version is not None

    @property
    def phone_digits(self) -> int:
        """How many BCD digits the terminal number field holds in this header edition."""
        return _PHONE_DIGITS_2019 if self.is_2019 else _PHONE_DIGITS_2013


@dataclass(frozen=True, slots=True)
class Message:
    """One frame: its header and its raw (still encoded) body."""

    header: Header
    body: bytes


def _check_word(what: str, value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise Jt808Error(f"{what} {value} does not fit in a WORD")


def _decode_header(data: bytes) -> tuple[Header, int, int]:
    """Return the header, its length in bytes and the body length it declares."""
    if len(data) < 4:
        raise Jt808Error(f"truncated header: {len(data)} bytes, need at least 12")
    msg_id = int.from_bytes(data[0:2], "big")
    properties = int.from_bytes(data[2:4], "big")
    is_2019 = bool(properties & _VERSION_BIT)
    subpackaged = bool(properties & _SUBPACKAGE_BIT)
    phone_bytes = (_PHONE_DIGITS_2019 if is_2019 else _PHONE_DIGITS_2013) // 2
    size = 4 + (1 if is_2019 else 0) + phone_bytes + 2 + (4 if subpackaged else 0)
    if len(data) < size:
        edition = "2019" if is_2019 else "2013"
        raise Jt808Error(f"truncated header: {len(data)} bytes, a {edition} header here needs {size}")
    offset = 4
    protocol_version: int | None = None
    if is_2019:
        protocol_version = data[offset]
        offset += 1
    phone = data[offset : offset + phone_bytes].hex().lstrip("0") or "0"
    offset += phone_bytes
    serial = int.from_bytes(data[offset : offset + 2], "big")
    offset += 2
    subpackage: Subpackage | None = None
    if subpackaged:
        subpackage = Subpackage(
            total=int.from_bytes(data[offset : offset + 2], "big"),
            index=int.from_bytes(data[offset + 2 : offset + 4], "big"),
        )
        offset += 4
    header = Header(
        msg_id=msg_id,
        phone=phone,
        serial=serial,
        protocol_version=protocol_version,
        encryption=(properties >> _ENCRYPTION_SHIFT) & 0b111,
        subpackage=subpackage,
    )
    return header, offset, properties & _LENGTH_MASK


def _encode_header(header: Header, body_length: int) -> bytes:
    if not 0 <= body_length <= MAX_BODY_LENGTH:
        raise Jt808Error(f"bad length: a body of {body_length} bytes does not fit in 10 bits")
    properties = body_length | (header.encryption << _ENCRYPTION_SHIFT)
    if header.subpackage is not None:
        properties |= _SUBPACKAGE_BIT
    out = bytearray(header.msg_id.to_bytes(2, "big"))
    if header.protocol_version is not None:
        out += (properties | _VERSION_BIT).to_bytes(2, "big")
        out.append(header.protocol_version)
    else:
        out += properties.to_bytes(2, "big")
    out += bytes.fromhex(header.phone.rjust(header.phone_digits, "0"))
    out += header.serial.to_bytes(2, "big")
    if header.subpackage is not None:
        out += header.subpackage.total.to_bytes(2, "big")
        out += header.subpackage.index.to_bytes(2, "big")
    return bytes(out)


def decode_frame(payload: bytes) -> Message:
    """Decode an unescaped frame payload (header + body + check code, no 0x7e flags).

    Raises :class:`Jt808Error` for a truncated header, a bad check code, or a body whose length
    differs from the one the header declares (消息体属性 bits 0-9).
    """
    if len(payload) < 1:
        raise Jt808Error("truncated header: empty frame")
    content, check_code = payload[:-1], payload[-1]
    header, header_size, declared = _decode_header(content)
    computed = checksum(content)
    if computed != check_code:
        raise Jt808Error(f"bad check code: frame says 0x{check_code:02x}, bytes give 0x{computed:02x}")
    body = content[header_size:]
    if len(body) != declared:
        raise Jt808Error(f"bad length: header declares a {declared}-byte body, frame carries {len(body)}")
    return Message(header=header, body=body)


def encode_frame(header: Header, body: bytes) -> bytes:
    """The wire bytes for a message: flags, escaped header and body, check code (escaped too)."""
    content = _encode_header(header, len(body)) + body
    return _FLAG_BYTES + escape(content + bytes([checksum(content)])) + _FLAG_BYTES


# -- message ids, results, alarm and status bits --------------------------------------------------


class MsgId(IntEnum):
    """The message ids this module encodes and decodes."""

    TERMINAL_GENERAL_REPLY = 0x0001  # 终端通用应答
    HEARTBEAT = 0x0002  # 终端心跳
    TERMINAL_REGISTER = 0x0100  # 终端注册
    TERMINAL_AUTH = 0x0102  # 终端鉴权
    LOCATION_REPORT = 0x0200  # 位置信息汇报
    LOCATION_BATCH = 0x0704  # 定位数据批量上传
    PLATFORM_GENERAL_REPLY = 0x8001  # 平台通用应答
    REGISTER_REPLY = 0x8100  # 终端注册应答


class ReplyResult(IntEnum):
    """结果 of a general reply; ``ALARM_ACK`` only from the platform (平台通用应答)."""

    OK = 0
    FAILURE = 1
    BAD_MESSAGE = 2
    UNSUPPORTED = 3
    ALARM_ACK = 4


class RegisterResult(IntEnum):
    """结果 of a register reply (终端注册应答)."""

    OK = 0
    VEHICLE_ALREADY_REGISTERED = 1
    NO_SUCH_VEHICLE = 2
    TERMINAL_ALREADY_REGISTERED = 3
    NO_SUCH_TERMINAL = 4


# 报警标志位 (alarm flag bits) of the location report.
ALARM_EMERGENCY = 1 << 0  # 紧急报警, the SOS button
ALARM_OVERSPEED = 1 << 1
ALARM_FATIGUE = 1 << 2
ALARM_GNSS_FAULT = 1 << 4
ALARM_GNSS_ANTENNA_CUT = 1 << 5
ALARM_GNSS_ANTENNA_SHORT = 1 << 6
ALARM_POWER_LOW = 1 << 7  # 终端主电源欠压
ALARM_POWER_CUT = 1 << 8  # 终端主电源掉电
ALARM_IN_OUT_AREA = 1 << 20
ALARM_IN_OUT_ROUTE = 1 << 21
ALARM_ROUTE_DEVIATION = 1 << 23
ALARM_VEHICLE_STOLEN = 1 << 26
ALARM_ILLEGAL_IGNITION = 1 << 27
ALARM_ILLEGAL_DISPLACEMENT = 1 << 28
ALARM_COLLISION = 1 << 29
ALARM_ROLLOVER = 1 << 30
ALARM_ILLEGAL_DOOR_OPEN = 1 << 31

# 状态位 (status bits) of the location report.
STATUS_ACC = 1 << 0  # ACC on
STATUS_POSITIONED = 1 << 1  # 定位: the fix is valid
STATUS_SOUTH = 1 << 2  # 南纬
STATUS_WEST = 1 << 3  # 西经
STATUS_GPS = 1 << 18
STATUS_BEIDOU = 1 << 19
STATUS_GLONASS = 1 << 20
STATUS_GALILEO = 1 << 21


def is_emergency(alarm: int) -> bool:
    """True when the alarm flags carry 紧急报警 (the terminal's SOS button)."""
    return bool(alarm & ALARM_EMERGENCY)


# -- bodies ---------------------------------------------------------------------------------------


class _Reader:
    """Reads big-endian fields (JT/T 808 transmits WORD and DWORD high byte first)."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.offset = 0
        self.what = what

    @property
    def remaining(self) -> int:
        return len(self.data) - self.offset

    def take(self, size: int, field: str) -> bytes:
        if self.remaining < size:
            raise Jt808Error(
                f"{self.what}: truncated at {field}, need {size} bytes at offset {self.offset}, "
                f"have {self.remaining}"
            )
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk

    def byte(self, field: str) -> int:
        return self.take(1, field)[0]

    def word(self, field: str) -> int:
        return int.from_bytes(self.take(2, field), "big")

    def dword(self, field: str) -> int:
        return int.from_bytes(self.take(4, field), "big")

    def rest(self) -> bytes:
        return self.take(self.remaining, "rest")

    def done(self) -> None:
        if self.remaining:
            raise Jt808Error(f"{self.what}: {self.remaining} unexpected bytes after the last field")


def _text(raw: bytes, field: str) -> str:
    """STRING / BYTE[n] text: GBK, padded or terminated with 0x00."""
    try:
        return raw.rstrip(b"\x00").decode("gbk")
    except UnicodeDecodeError as error:
        raise Jt808Error(f"{field}: not GBK text ({error.reason} at byte {error.start})") from None


def _encode_text(value: str, field: str, width: int | None = None) -> bytes:
    """GBK text, right-padded with 0x00 to ``width`` when the field is fixed-size."""
    try:
        raw = value.encode("gbk")
    except UnicodeEncodeError as error:
        raise Jt808Error(f"{field}: {value!r} cannot be written in GBK") from error
    if width is None:
        return raw
    if len(raw) > width:
        raise Jt808Error(f"{field}: {value!r} is {len(raw)} bytes, the field holds {width}")
    return raw.ljust(width, b"\x00")


def _bcd(raw: bytes, field: str) -> str:
    digits = raw.hex()
    if not digits.isdigit():
        raise Jt808Error(f"bad BCD in {field}: {digits}")
    return digits


@dataclass(frozen=True, slots=True)
class TerminalGeneralReply:
    """终端通用应答 0x0001: the terminal answers a platform message."""

    MSG_ID: ClassVar[int] = MsgId.TERMINAL_GENERAL_REPLY
    reply_serial: int
    reply_msg_id: int
    result: int = ReplyResult.OK


@dataclass(frozen=True, slots=True)
class PlatformGeneralReply:
    """平台通用应答 0x8001: the platform answers a terminal message (auth, location, heartbeat...)."""

    MSG_ID: ClassVar[int] = MsgId.PLATFORM_GENERAL_REPLY
    reply_serial: int
    reply_msg_id: int
    result: int = ReplyResult.OK

    @classmethod
    def answering(cls, request: Header, result: int = ReplyResult.OK) -> PlatformGeneralReply:
        """The reply to the message with this header."""
        return cls(reply_serial=request.serial, reply_msg_id=request.msg_id, result=result)


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """终端心跳 0x0002: an empty body."""

    MSG_ID: ClassVar[int] = MsgId.HEARTBEAT


@dataclass(frozen=True, slots=True)
class TerminalRegister:
    """终端注册 0x0100 (JT/T 808-2019 §8.8).

    Field widths differ by edition: manufacturer / model / terminal id are BYTE[5] / BYTE[20] /
    BYTE[7] in 2013 and BYTE[11] / BYTE[30] / BYTE[30] in 2019, right-padded with 0x00. ``province``
    and ``city`` are GB/T 2260 codes (Zhejiang is 33). ``plate_colour`` follows JT/T 697.7; with
    colour 0 (no plate yet) the 2019 edition carries the VIN in ``plate``.
    """

    MSG_ID: ClassVar[int] = MsgId.TERMINAL_REGISTER
    province: int
    city: int
    manufacturer: str
    model: str
    terminal_id: str
    plate_colour: int
    plate: str


@dataclass(frozen=True, slots=True)
class RegisterReply:
    """终端注册应答 0x8100: the auth code is present only when ``result`` is OK."""

    MSG_ID: ClassVar[int] = MsgId.REGISTER_REPLY
    reply_serial: int
    result: int
    auth_code: str = ""


@dataclass(frozen=True, slots=True)
class TerminalAuth:
    """终端鉴权 0x0102.

    2013: the body is the auth code. 2019: a length byte, the auth code, IMEI BYTE[15] and software
    version BYTE[20]; ``imei`` and ``software_version`` are None for a 2013 body.
    """

    MSG_ID: ClassVar[int] = MsgId.TERMINAL_AUTH
    auth_code: str
    imei: str | None = None
    software_version: str | None = None


@dataclass(frozen=True, slots=True)
class ExtraItem:
    """位置附加信息项: one (id, raw value) item after the basic location fields."""

    item_id: int
    value: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.item_id <= 0xFF:
            raise Jt808Error(f"additional item id {self.item_id} does not fit in a byte")
        if len(self.value) > 0xFF:
            raise Jt808Error(f"additional item 0x{self.item_id:02x}: {len(self.value)} bytes, at most 255")


_ITEM_MILEAGE = 0x01  # DWORD, 1/10 km
_ITEM_FUEL = 0x02  # WORD, 1/10 L
_ITEM_RECORDER_SPEED = 0x03  # WORD, 1/10 km/h, from the driving recorder (行驶记录功能获取的速度)
_ITEM_SIGNAL_STRENGTH = 0x30  # BYTE, 无线通信网络信号强度
_ITEM_SATELLITES = 0x31  # BYTE, GNSS 定位卫星数


def mileage_item(km: float) -> ExtraItem:
    """Additional item 0x01, odometer (里程) in km, carried in 1/10 km."""
    return ExtraItem(_ITEM_MILEAGE, _scaled(km, 10, 4, "mileage"))


def fuel_item(litres: float) -> ExtraItem:
    """Additional item 0x02, fuel (油量) in L, carried in 1/10 L."""
    return ExtraItem(_ITEM_FUEL, _scaled(litres, 10, 2, "fuel"))


def recorder_speed_item(kmh: float) -> ExtraItem:
    """Additional item 0x03, the driving recorder's speed in km/h, carried in 1/10 km/h."""
    return ExtraItem(_ITEM_RECORDER_SPEED, _scaled(kmh, 10, 2, "recorder speed"))


def signal_strength_item(strength: int) -> ExtraItem:
    """Additional item 0x30, mobile network signal strength."""
    return ExtraItem(_ITEM_SIGNAL_STRENGTH, _scaled(strength, 1, 1, "signal strength"))


def satellites_item(count: int) -> ExtraItem:
    """Additional item 0x31, GNSS satellites in use."""
    return ExtraItem(_ITEM_SATELLITES, _scaled(count, 1, 1, "satellites"))


def _scaled(value: float, scale: int, size: int, field: str) -> bytes:
    raw = round(value * scale)
    if not 0 <= raw < 1 << (8 * size):
        raise Jt808Error(f"{field} {value} does not fit in {size} bytes")
    return raw.to_bytes(size, "big")


@dataclass(frozen=True, slots=True)
class Location:
    """位置信息汇报 0x0200: 位置基本信息 (JT/T 808-2019 表 23) and the additional items.

    ``lat`` / ``lon`` are signed degrees: the wire carries millionths of a degree as DWORD and the
    hemisphere in status bits 2 (south) and 3 (west), which ``status`` keeps in step with the
    signs. ``altitude_m`` is read as a signed WORD (heights above 32767 m do not happen; places
    below sea level do). ``at`` is the fix time in UTC, converted from the terminal's GMT+8 BCD
    time, or None when the terminal sends all zeros (no clock yet). ``items`` keeps every
    additional item raw and in wire order; the properties decode the standard ones.
    """

    MSG_ID: ClassVar[int] = MsgId.LOCATION_REPORT
    alarm: int
    status: int
    lat: float
    lon: float
    altitude_m: int
    speed_kmh: float
    heading: int
    at: datetime | None
    items: tuple[ExtraItem, ...] = ()

    def __post_init__(self) -> None:
        # The hemisphere bits follow the signs of lat and lon (-0.0 counts as south / west, so a
        # decoded zero coordinate keeps the bit the terminal sent).
        status = self.status & ~(STATUS_SOUTH | STATUS_WEST)
        if math.copysign(1.0, self.lat) < 0:
            status |= STATUS_SOUTH
        if math.copysign(1.0, self.lon) < 0:
            status |= STATUS_WEST
        object.__setattr__(self, "status", status)

    def item(self, item_id: int) -> bytes | None:
        """The raw value of the first additional item with this id, if any."""
        for item in self.items:
            if item.item_id == item_id:
                return item.value
        return None

    def _unsigned(self, item_id: int, size: int) -> int | None:
        value = self.item(item_id)
        if value is None or len(value) != size:
            return None
        return int.from_bytes(value, "big")

    @property
    def is_emergency(self) -> bool:
        """紧急报警 is set."""
        return is_emergency(self.alarm)

    @property
    def is_positioned(self) -> bool:
        """The terminal says its fix is valid (status bit 1)."""
        return bool(self.status & STATUS_POSITIONED)

    @property
    def acc_on(self) -> bool:
        """The ignition (ACC) is on (status bit 0)."""
        return bool(self.status & STATUS_ACC)

    @property
    def mileage_km(self) -> float | None:
        """Item 0x01, odometer in km."""
        raw = self._unsigned(_ITEM_MILEAGE, 4)
        return None if raw is None else raw / 10

    @property
    def fuel_l(self) -> float | None:
        """Item 0x02, fuel in litres."""
        raw = self._unsigned(_ITEM_FUEL, 2)
        return None if raw is None else raw / 10

    @property
    def recorder_speed_kmh(self) -> float | None:
        """Item 0x03, the driving recorder's speed in km/h."""
        raw = self._unsigned(_ITEM_RECORDER_SPEED, 2)
        return None if raw is None else raw / 10

    @property
    def signal_strength(self) -> int | None:
        """Item 0x30, mobile network signal strength."""
        return self._unsigned(_ITEM_SIGNAL_STRENGTH, 1)

    @property
    def satellites(self) -> int | None:
        """Item 0x31, GNSS satellites in use."""
        return self._unsigned(_ITEM_SATELLITES, 1)


@dataclass(frozen=True, slots=True)
class LocationBatch:
    """定位数据批量上传 0x0704: ``kind`` 0 is a normal batch, 1 a re-upload of blind-area fixes (盲区补报)."""

    MSG_ID: ClassVar[int] = MsgId.LOCATION_BATCH
    kind: int
    locations: tuple[Location, ...]


Body: TypeAlias = (
    TerminalGeneralReply
    | PlatformGeneralReply
    | Heartbeat
    | TerminalRegister
    | RegisterReply
    | TerminalAuth
    | Location
    | LocationBatch
)

_LOCATION_BASIC_SIZE = 28
_MICRODEGREES = 1_000_000


@functools.lru_cache(maxsize=4096)
def _decode_time(raw: bytes) -> datetime | None:
    # Cached: a fleet reporting together sends the same few seconds over and over (the value is
    # immutable, and a bad time raises, which is not cached).
    digits = _bcd(raw, "location time")
    if digits == "000000000000":
        return None
    year, month, day, hour, minute, second = (int(digits[i : i + 2]) for i in range(0, 12, 2))
    try:
        local = datetime(2000 + year, month, day, hour, minute, second, tzinfo=BEIJING_TIME)
    except ValueError as error:
        raise Jt808Error(f"location time {digits} is not a date: {error}") from None
    return local.astimezone(UTC)


def _encode_time(at: datetime | None) -> bytes:
    if at is None:
        return bytes(6)
    if at.tzinfo is None:
        raise Jt808Error("location time must be timezone-aware")
    local = at.astimezone(BEIJING_TIME)
    if not 2000 <= local.year <= 2099:
        raise Jt808Error(f"location time {at.isoformat()} is outside 2000-2099")
    return bytes.fromhex(local.strftime("%y%m%d%H%M%S"))


_LOCATION_BASIC = struct.Struct(">IIIIhHH6s")


def decode_location(body: bytes) -> Location:
    """Decode a 0x0200 body (also the entries of a 0x0704 batch)."""
    reader = _Reader(body, "location report")
    if len(body) >= _LOCATION_BASIC_SIZE:
        # The fixed 28 bytes in one unpack (a platform decodes thousands of these a second).
        alarm, status, lat_raw, lon_raw, altitude, speed_raw, heading, raw_time = _LOCATION_BASIC.unpack_from(
            body
        )
        reader.offset = _LOCATION_BASIC_SIZE
    else:
        alarm = reader.dword("alarm flags")
        status = reader.dword("status")
        lat_raw = reader.dword("latitude")
        lon_raw = reader.dword("longitude")
        altitude = int.from_bytes(reader.take(2, "altitude"), "big", signed=True)
        speed_raw = reader.word("speed")
        heading = reader.word("direction")
        raw_time = reader.take(6, "time")
    at = _decode_time(raw_time)
    if lat_raw > 90 * _MICRODEGREES:
        raise Jt808Error(f"location report: latitude {lat_raw / _MICRODEGREES} is beyond 90 degrees")
    if lon_raw > 180 * _MICRODEGREES:
        raise Jt808Error(f"location report: longitude {lon_raw / _MICRODEGREES} is beyond 180 degrees")
    lat = lat_raw / _MICRODEGREES
    lon = lon_raw / _MICRODEGREES
    items: list[ExtraItem] = []
    while reader.remaining:
        item_id = reader.byte("additional item id")
        length = reader.byte(f"length of additional item 0x{item_id:02x}")
        items.append(ExtraItem(item_id, reader.take(length, f"additional item 0x{item_id:02x}")))
    return Location(
        alarm=alarm,
        status=status,
        lat=-lat if status & STATUS_SOUTH else lat,
        lon=-lon if status & STATUS_WEST else lon,
        altitude_m=altitude,
        speed_kmh=speed_raw / 10,
        heading=heading,
        at=at,
        items=tuple(items),
    )


def _encode_location(location: Location) -> bytes:
    for name, value, limit in (("latitude", location.lat, 90), ("longitude", location.lon, 180)):
        if not math.isfinite(value) or abs(value) > limit:
            raise Jt808Error(f"{name} {value} is not within +-{limit} degrees")
    if not -0x8000 <= location.altitude_m <= 0x7FFF:
        raise Jt808Error(f"altitude {location.altitude_m} m does not fit in a signed WORD")
    out = bytearray()
    out += _dword("alarm flags", location.alarm)
    out += _dword("status", location.status)
    out += round(abs(location.lat) * _MICRODEGREES).to_bytes(4, "big")
    out += round(abs(location.lon) * _MICRODEGREES).to_bytes(4, "big")
    out += location.altitude_m.to_bytes(2, "big", signed=True)
    out += _scaled(location.speed_kmh, 10, 2, "speed")
    out += _word("direction", location.heading)
    out += _encode_time(location.at)
    for item in location.items:
        out.append(item.item_id)
        out.append(len(item.value))
        out += item.value
    return bytes(out)


def _word(field: str, value: int) -> bytes:
    _check_word(field, value)
    return value.to_bytes(2, "big")


def _dword(field: str, value: int) -> bytes:
    if not 0 <= value <= 0xFFFFFFFF:
        raise Jt808Error(f"{field} {value} does not fit in a DWORD")
    return value.to_bytes(4, "big")


def _byte(field: str, value: int) -> bytes:
    if not 0 <= value <= 0xFF:
        raise Jt808Error(f"{field} {value} does not fit in a BYTE")
    return bytes([value])


def _decode_general_reply(body: bytes, what: str) -> tuple[int, int, int]:
    reader = _Reader(body, what)
    values = reader.word("reply serial"), reader.word("reply message id"), reader.byte("result")
    reader.done()
    return values


def _encode_general_reply(reply: TerminalGeneralReply | PlatformGeneralReply) -> bytes:
    return (
        _word("reply serial", reply.reply_serial)
        + _word("reply message id", reply.reply_msg_id)
        + _byte("result", reply.result)
    )


# (manufacturer, model, terminal id) widths for 2013 and 2019.
_REGISTER_WIDTHS = {False: (5, 20, 7), True: (11, 30, 30)}


def _decode_register(body: bytes, is_2019: bool) -> TerminalRegister:
    maker_width, model_width, id_width = _REGISTER_WIDTHS[is_2019]
    reader = _Reader(body, f"terminal register ({'2019' if is_2019 else '2013'} layout)")
    return TerminalRegister(
        province=reader.word("province"),
        city=reader.word("city"),
        manufacturer=_text(reader.take(maker_width, "manufacturer"), "manufacturer"),
        model=_text(reader.take(model_width, "terminal model"), "terminal model"),
        terminal_id=_text(reader.take(id_width, "terminal id"), "terminal id"),
        plate_colour=reader.byte("plate colour"),
        plate=_text(reader.rest(), "plate"),
    )


def _encode_register(register: TerminalRegister, is_2019: bool) -> bytes:
    maker_width, model_width, id_width = _REGISTER_WIDTHS[is_2019]
    return (
        _word("province", register.province)
        + _word("city", register.city)
        + _encode_text(register.manufacturer, "manufacturer", maker_width)
        + _encode_text(register.model, "terminal model", model_width)
        + _encode_text(register.terminal_id, "terminal id", id_width)
        + _byte("plate colour", register.plate_colour)
        + _encode_text(register.plate, "plate")
    )


def _decode_register_reply(body: bytes) -> RegisterReply:
    reader = _Reader(body, "register reply")
    serial = reader.word("reply serial")
    result = reader.byte("result")
    return RegisterReply(reply_serial=serial, result=result, auth_code=_text(reader.rest(), "auth code"))


def _encode_register_reply(reply: RegisterReply) -> bytes:
    out = _word("reply serial", reply.reply_serial) + _byte("result", reply.result)
    if reply.result == RegisterResult.OK:
        out += _encode_text(reply.auth_code, "auth code")
    elif reply.auth_code:
        raise Jt808Error("register reply: only a successful registration carries an auth code")
    return out


_IMEI_WIDTH = 15
_SOFTWARE_VERSION_WIDTH = 20


def _decode_auth(body: bytes, is_2019: bool) -> TerminalAuth:
    if not is_2019:
        return TerminalAuth(auth_code=_text(body, "auth code"))
    reader = _Reader(body, "terminal auth (2019 layout)")
    code_length = reader.byte("auth code length")
    auth_code = _text(reader.take(code_length, "auth code"), "auth code")
    imei = _text(reader.take(_IMEI_WIDTH, "IMEI"), "IMEI")
    version = _text(reader.take(_SOFTWARE_VERSION_WIDTH, "software version"), "software version")
    reader.done()
    return TerminalAuth(auth_code=auth_code, imei=imei, software_version=version)


def _encode_auth(auth: TerminalAuth, is_2019: bool) -> bytes:
    code = _encode_text(auth.auth_code, "auth code")
    if not is_2019:
        if auth.imei is not None or auth.software_version is not None:
            raise Jt808Error("terminal auth: IMEI and software version exist only in the 2019 layout")
        return code
    return (
        _byte("auth code length", len(code))
        + code
        + _encode_text(auth.imei or "", "IMEI", _IMEI_WIDTH)
        + _encode_text(auth.software_version or "", "software version", _SOFTWARE_VERSION_WIDTH)
    )


def _decode_batch(body: bytes) -> LocationBatch:
    reader = _Reader(body, "location batch")
    count = reader.word("count")
    kind = reader.byte("type")
    locations: list[Location] = []
    while reader.remaining:
        length = reader.word(f"length of location {len(locations) + 1}")
        locations.append(decode_location(reader.take(length, f"location {len(locations) + 1}")))
    if len(locations) != count:
        raise Jt808Error(f"location batch: declares {count} locations, carries {len(locations)}")
    return LocationBatch(kind=kind, locations=tuple(locations))


def _encode_batch(batch: LocationBatch) -> bytes:
    out = bytearray(_word("count", len(batch.locations)) + _byte("type", batch.kind))
    for location in batch.locations:
        encoded = _encode_location(location)
        out += _word("location length", len(encoded)) + encoded
    return bytes(out)


def decode_body(message: Message) -> Body | None:
    """The typed body of a message, or None when this module does not decode it.

    None means: a message id not listed in :class:`MsgId`, an encrypted body, or one packet of a
    split message (reassembling packets is the caller's job). Raises :class:`Jt808Error` when a
    listed body is malformed (truncated, bad BCD time, coordinates out of range, ...).
    """
    header = message.header
    if header.encryption or header.subpackage is not None:
        return None
    body = message.body
    match header.msg_id:
        case MsgId.TERMINAL_GENERAL_REPLY:
            return TerminalGeneralReply(*_decode_general_reply(body, "terminal general reply"))
        case MsgId.PLATFORM_GENERAL_REPLY:
            return PlatformGeneralReply(*_decode_general_reply(body, "platform general reply"))
        case MsgId.HEARTBEAT:
            _Reader(body, "heartbeat").done()
            return Heartbeat()
        case MsgId.TERMINAL_REGISTER:
            return _decode_register(body, header.is_2019)
        case MsgId.REGISTER_REPLY:
            return _decode_register_reply(body)
        case MsgId.TERMINAL_AUTH:
            return _decode_auth(body, header.is_2019)
        case MsgId.LOCATION_REPORT:
            return decode_location(body)
        case MsgId.LOCATION_BATCH:
            return _decode_batch(body)
        case _:
            return None


def encode_body(body: Body, *, is_2019: bool = False) -> bytes:
    """The raw body bytes; ``is_2019`` picks the 2019 layout where the editions differ."""
    match body:
        case TerminalGeneralReply() | PlatformGeneralReply():
            return _encode_general_reply(body)
        case Heartbeat():
            return b""
        case TerminalRegister():
            return _encode_register(body, is_2019)
        case RegisterReply():
            return _encode_register_reply(body)
        case TerminalAuth():
            return _encode_auth(body, is_2019)
        case Location():
            return _encode_location(body)
        case LocationBatch():
            return _encode_batch(body)


def encode_message(body: Body, *, phone: str, serial: int, protocol_version: int | None = None) -> bytes:
    """The wire bytes of a whole message; a 2019 header when ``protocol_version`` is given."""
    header = Header(msg_id=body.MSG_ID, phone=phone, serial=serial, protocol_version=protocol_version)
    return encode_frame(header, encode_body(body, is_2019=header.is_2019))


def encode_reply(request: Header, body: Body, *, serial: int) -> bytes:
    """A platform message to the terminal that sent ``request``, in the same header edition.

    ``serial`` is the platform's own message serial number for this connection.
    """
    return encode_message(body, phone=request.phone, serial=serial, protocol_version=request.protocol_version)


# -- vendor additional items ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VendorReadings:
    """Battery, supply voltage and temperatures from manufacturers' own additional items.

    These items are not in JT/T 808 (ids 0xE1-0xFF are left to manufacturers, and a few terminals
    reuse lower ids); the meanings read here are the ones widely deployed terminals use, as also
    read by the Traccar server. Treat the values as best effort; anything unrecognised is None.
    ``temperatures_c`` pairs a sensor number (from 1) with its reading.
    """

    battery_level: int | None = None
    battery_v: float | None = None
    power_v: float | None = None
    temperatures_c: tuple[tuple[int, float], ...] = ()


def vendor_readings(location: Location) -> VendorReadings:
    """Read the common vendor items of a location report (see :class:`VendorReadings`)."""
    battery_level: int | None = None
    battery_v: float | None = None
    power_v: float | None = None
    temperatures: list[tuple[int, float]] = []
    for item in location.items:
        value, size = item.value, len(item.value)
        match item.item_id, size:
            case ((0x06 | 0xD4 | 0xE1 | 0xE9), 1) if value[0] <= 100:
                battery_level = value[0]
            case 0xE1, 2:
                power_v = int.from_bytes(value, "big") / 10
            case 0x82, 2:
                power_v = int.from_bytes(value, "big") / 10
            case 0xD5, 2:
                battery_v = int.from_bytes(value, "big") / 100
            case 0xE3, 6:
                battery_level = value[1]
                battery_v = int.from_bytes(value[2:4], "big") / 100
            case 0xE4, 2:
                battery_level = value[1]
            case 0x51, (2 | 16):
                for index in range(size // 2):
                    raw = int.from_bytes(value[2 * index : 2 * index + 2], "big")
                    if raw != 0xFFFF:
                        magnitude = (raw & 0x7FFF) / 10
                        temperatures.append((index + 1, -magnitude if raw & 0x8000 else magnitude))
            case 0xEB, _:
                for sub_id, sub_value in _vendor_tlv(value):
                    if sub_id == 0x002D and len(sub_value) == 4:
                        power_v = int.from_bytes(sub_value, "big") / 1000
                    elif sub_id == 0x002D and len(sub_value) == 2:
                        battery_v = int.from_bytes(sub_value, "big") / 1000
                    elif sub_id in (0x00A8, 0x00E1) and len(sub_value) == 1:
                        battery_level = sub_value[0]
    return VendorReadings(
        battery_level=battery_level,
        battery_v=battery_v,
        power_v=power_v,
        temperatures_c=tuple(temperatures),
    )


def _vendor_tlv(value: bytes) -> list[tuple[int, bytes]]:
    """Item 0xEB as (WORD length of id + value, WORD id, value) records; [] if it is not that."""
    records: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(value):
        if offset + 4 > len(value):
            return []
        length = int.from_bytes(value[offset : offset + 2], "big")
        if length < 2 or offset + 2 + length > len(value):
            return []
        sub_id = int.from_bytes(value[offset + 2 : offset + 4], "big")
        records.append((sub_id, value[offset + 4 : offset + 2 + length]))
        offset += 2 + length
    return records
