"""MANSCDP, the XML of GB/T 28181 (``Application/MANSCDP+xml``), sans I/O: bytes in, typed messages out.

What this module implements, by clause of GB/T 28181-2016 (2022 where it differs):

* §A.2.1 the four roots: ``Query`` and ``Control`` (platform → device), ``Response`` and ``Notify``
  (device → platform), each with ``CmdType``, ``SN`` and ``DeviceID``.
* §9.6 / A.2.5 **Keepalive** (``Notify``, with ``Status`` and optional ``Info/DeviceID`` of faulty
  devices).
* §9.5 / A.2.4 **Catalog** query, and its answer (``Response``) or change notification (``Notify``,
  §9.11 catalogue subscription; items carry ``Event`` ON/OFF/VLOST/DEFECT/ADD/DEL/UPDATE) with
  ``SumNum`` and one ``DeviceList`` per message: a device splits a long catalogue over several
  messages, which :class:`~dispatchd.channels.gb28181.registry.CatalogCollector` puts back together.
* §9.5 **DeviceInfo** and **DeviceStatus** queries and answers.
* §9.3 / A.2.3 **DeviceControl** with ``PTZCmd`` (Annex A.3, :mod:`.ptz`), ``IFameCmd`` (ask for a
  key frame) and the other control fields kept as they are.
* §9.4 / A.2.5 **Alarm** notification and the platform's answer; the alarm subscription query.
* §9.11.2 **MobilePosition** notification.

Devices write this XML in GB2312 (the standard's default), sometimes GBK or GB18030, sometimes
UTF-8 — and now and then declare one and send another. :func:`decode_body` reads the declared
encoding (GB2312 and GBK are read as GB18030, their superset) and falls back to the other family
when the bytes do not fit it.

A body that cannot be used raises :class:`ManscdpError` naming why: too large, a ``DOCTYPE`` or
entity declaration (refused outright: no entity is ever expanded), not decodable, not well-formed,
or not MANSCDP.
"""

from __future__ import annotations

import codecs
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Final, TypeAlias
from xml.sax.saxutils import escape

__all__ = [
    "MAX_BODY_BYTES",
    "Alarm",
    "Catalog",
    "CatalogItem",
    "DeviceControl",
    "DeviceInfo",
    "DeviceStatus",
    "Element",
    "Keepalive",
    "ManscdpError",
    "Message",
    "MobilePosition",
    "Query",
    "Result",
    "Unknown",
    "decode_body",
    "parse",
    "parse_element",
    "serialize",
]

#: Largest body taken: a SIP message never carries more (RFC 3261 §18.1.1 over UDP; the same bound
#: holds for TCP in :mod:`dispatchd.channels.hotline.sip`).
MAX_BODY_BYTES: Final = 65535
#: Items of one DeviceList taken at most (a device splits larger catalogues over messages).
MAX_ITEMS: Final = 2000
ROOTS: Final = ("Query", "Control", "Response", "Notify")
CONTENT_TYPE: Final = "Application/MANSCDP+xml"

_DECLARATION: Final = re.compile(
    rb"^\s*<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z0-9_.\-]+)[\"']", re.IGNORECASE
)
_FORBIDDEN: Final = re.compile(r"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)
_GB_NAMES: Final = frozenset({"gb2312", "gbk", "gb18030", "gb_2312-80", "cp936", "euc-cn", "x-gbk"})
_UTF8_NAMES: Final = frozenset({"utf-8", "utf8"})


class ManscdpError(ValueError):
    """A body that cannot be used; the message says why."""


# ---- decoding -------------------------------------------------------------------------------------


def declared_encoding(body: bytes) -> str | None:
    """The ``encoding`` of the XML declaration, lower case, or None."""
    match = _DECLARATION.match(body[:200])
    return match.group(1).decode("ascii").lower() if match else None


def _has_multibyte_utf8(body: bytes) -> bool:
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return any(ord(ch) > 0x7F for ch in text)


def decode_body(body: bytes) -> str:
    """The text of a MANSCDP body, by its declared encoding (see the module documentation).

    GB2312/GBK/GB18030 are read as GB18030. A body declared GB but valid UTF-8 with non-ASCII text is
    read as UTF-8 (firmware that declares the standard's GB2312 and writes UTF-8); a body declared
    UTF-8 that is not, as GB18030. No declaration: UTF-8, else GB18030.
    """
    if len(body) > MAX_BODY_BYTES:
        raise ManscdpError(f"body of {len(body)} bytes exceeds the {MAX_BODY_BYTES}-byte limit")
    if body.startswith(b"\xef\xbb\xbf"):
        body = body[3:]
    declared = declared_encoding(body)
    if declared is None or declared in _UTF8_NAMES:
        order = ["utf-8", "gb18030"]
    elif declared in _GB_NAMES:
        order = ["utf-8", "gb18030"] if _has_multibyte_utf8(body) else ["gb18030", "utf-8"]
    else:
        try:
            codecs.lookup(declared)
        except LookupError:
            raise ManscdpError(f"unknown encoding {declared!r} declared") from None
        order = [declared]
    for encoding in order:
        try:
            return body.decode(encoding)
        except UnicodeDecodeError:
            continue
    raise ManscdpError(f"body is not text in the declared encoding ({declared or 'none declared'})")


# ---- a small, immutable element tree ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Element:
    """One XML element: tag, text (stripped), attributes and children, in order."""

    tag: str
    text: str = ""
    attrs: tuple[tuple[str, str], ...] = ()
    children: tuple[Element, ...] = ()

    def child(self, tag: str) -> Element | None:
        return next((c for c in self.children if c.tag == tag), None)

    def text_of(self, tag: str) -> str | None:
        found = self.child(tag)
        return found.text if found is not None else None

    def attr(self, name: str) -> str | None:
        return next((v for k, v in self.attrs if k == name), None)


def _convert(node: ET.Element, depth: int = 0) -> Element:
    if depth > 16:
        raise ManscdpError("XML nested too deeply")
    tag = node.tag if isinstance(node.tag, str) else ""
    if "}" in tag:  # a namespace some firmware adds: the local name is what counts
        tag = tag.rsplit("}", 1)[1]
    children = tuple(_convert(c, depth + 1) for c in node)
    return Element(tag, (node.text or "").strip(), tuple(node.attrib.items()), children)


def parse_element(body: bytes) -> Element:
    """Decode and parse a body into an :class:`Element` tree (no DOCTYPE, no entities)."""
    text = decode_body(body)
    if _FORBIDDEN.search(text):
        raise ManscdpError("DOCTYPE and entity declarations are refused")
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ManscdpError(f"malformed XML: {exc}") from None
    return _convert(root)


# ---- typed messages -------------------------------------------------------------------------------

Fields: TypeAlias = tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class Keepalive:
    """§9.6: a device is alive; ``error_devices`` lists faulty sub-devices (``Info/DeviceID``)."""

    sn: int
    device_id: str
    status: str = "OK"
    error_devices: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Query:
    """A ``Query`` from the platform: Catalog, DeviceInfo, DeviceStatus, Alarm (subscription),
    MobilePosition, … with its extra fields in order."""

    cmd_type: str
    sn: int
    device_id: str
    fields: Fields = ()


@dataclass(frozen=True, slots=True)
class CatalogItem:
    """One ``Item`` of a catalogue (A.2.4.3 / A.2.6.4). Coordinates are as the device reports them."""

    device_id: str
    name: str = ""
    manufacturer: str = ""
    model: str = ""
    owner: str = ""
    civil_code: str = ""
    address: str = ""
    parental: int | None = None
    parent_id: str = ""
    register_way: int | None = None
    secrecy: int | None = None
    status: str = ""
    longitude: float | None = None
    latitude: float | None = None
    event: str = ""
    info: Fields = ()  # children of <Info>: PTZType, Resolution, DownloadSpeed, …
    extra: Fields = ()  # other simple children, kept in order

    @property
    def ptz_type(self) -> int | None:
        """Info/PTZType (1 dome, 2 half-dome, 3 fixed, 4 remote-controlled; 2016 A.2.4.3)."""
        value = dict(self.info).get("PTZType", "")
        return int(value) if value.isdigit() else None

    @property
    def type_code(self) -> str:
        """Digits 11–13 of the 20-digit id (Annex D): 131 camera, 132 IPC, 134 alarm input, …"""
        return self.device_id[10:13] if len(self.device_id) == 20 else ""

    @property
    def is_video(self) -> bool:
        """A channel that sends video: a camera (131) or IP camera (132) by its id (Annex D)."""
        return self.type_code in ("131", "132")

    @property
    def online(self) -> bool:
        return self.status.upper() in ("ON", "ONLINE", "OK")


@dataclass(frozen=True, slots=True)
class Catalog:
    """A catalogue answer (``Response``) or change notification (``Notify``, §9.11)."""

    root: str
    sn: int
    device_id: str
    sum_num: int
    items: tuple[CatalogItem, ...] = ()


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    sn: int
    device_id: str
    result: str = "OK"
    device_name: str = ""
    manufacturer: str = ""
    model: str = ""
    firmware: str = ""
    channel: int | None = None
    extra: Fields = ()


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    sn: int
    device_id: str
    result: str = "OK"
    online: str = ""
    status: str = ""
    encode: str = ""
    record: str = ""
    device_time: str = ""
    alarms: tuple[tuple[str, str], ...] = ()  # Alarmstatus/Item: (DeviceID, DutyStatus)
    extra: Fields = ()


@dataclass(frozen=True, slots=True)
class DeviceControl:
    """§9.3: ``ptz_cmd`` is the 16 hex digits of Annex A.3; other control fields (IFameCmd,
    TeleBoot, RecordCmd, GuardCmd, AlarmCmd, HomePosition, …) are kept in ``fields``."""

    sn: int
    device_id: str
    ptz_cmd: str = ""
    fields: Fields = ()


@dataclass(frozen=True, slots=True)
class Alarm:
    """§9.4 alarm notification. ``method``: 1 phone, 2 device, 3 SMS, 4 GPS, 5 video, 6 fault, 7 other."""

    sn: int
    device_id: str
    priority: int | None = None
    method: int | None = None
    time: str = ""
    description: str = ""
    longitude: float | None = None
    latitude: float | None = None
    alarm_type: int | None = None
    extra: Fields = ()


@dataclass(frozen=True, slots=True)
class MobilePosition:
    """§9.11.2 mobile position notification (coordinates as the device reports them)."""

    sn: int
    device_id: str
    time: str = ""
    longitude: float | None = None
    latitude: float | None = None
    speed: float | None = None
    direction: float | None = None
    altitude: float | None = None


@dataclass(frozen=True, slots=True)
class Result:
    """A ``Response`` that only carries a result (to DeviceControl, Alarm, …), or the platform's
    answer to an alarm notification."""

    cmd_type: str
    sn: int
    device_id: str
    result: str = "OK"
    fields: Fields = ()


@dataclass(frozen=True, slots=True)
class RecordItem:
    """One recording of a ``RecordInfo`` answer (§9.7, A.2.6.7): times as the device writes them
    (local time, no zone), ``file_path`` the device's own name for it."""

    device_id: str
    name: str = ""
    file_path: str = ""
    address: str = ""
    start_time: str = ""
    end_time: str = ""
    secrecy: int | None = None
    type: str = ""  # time, alarm, manual, all
    recorder_id: str = ""
    file_size: int | None = None


@dataclass(frozen=True, slots=True)
class RecordInfo:
    """A recordings answer (``Response/RecordInfo``, §9.7): one part of ``sum_num`` recordings."""

    sn: int
    device_id: str
    name: str
    sum_num: int
    items: tuple[RecordItem, ...] = ()


@dataclass(frozen=True, slots=True)
class MediaStatus:
    """§9.8: the state of a recording being sent; ``NotifyType`` 121 says its end was reached."""

    sn: int
    device_id: str
    notify_type: str


# NotifyType of a MediaStatus: the recording's end was sent (the platform then sends BYE).
MEDIA_END: Final = "121"


@dataclass(frozen=True, slots=True)
class Unknown:
    """A well-formed MANSCDP message of a kind not modelled here (RecordInfo, PresetQuery, …)."""

    root: str
    cmd_type: str
    sn: int
    device_id: str
    element: Element = field(compare=True)


Message: TypeAlias = (
    Keepalive
    | Query
    | Catalog
    | DeviceInfo
    | DeviceStatus
    | DeviceControl
    | Alarm
    | MobilePosition
    | RecordInfo
    | MediaStatus
    | Result
    | Unknown
)

# ---- times ---------------------------------------------------------------------------------------

# GB/T 28181 times (AlarmTime, StartTime, EndTime …) carry no zone: they are Beijing time.
BEIJING: Final = timezone(timedelta(hours=8))


def gb_time(text: str) -> datetime | None:
    """``2025-04-22T11:26:02`` (Beijing time) as an aware time; None when it is not one."""
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return at if at.tzinfo is not None else at.replace(tzinfo=BEIJING)


def gb_time_text(at: datetime) -> str:
    """An aware time as GB/T 28181 writes it: Beijing time to the second, no zone."""
    return at.astimezone(BEIJING).replace(tzinfo=None).isoformat(timespec="seconds")


# ---- reading --------------------------------------------------------------------------------------

_ITEM_FIELDS: Final = {
    "DeviceID",
    "Name",
    "Manufacturer",
    "Model",
    "Owner",
    "CivilCode",
    "Address",
    "Parental",
    "ParentID",
    "RegisterWay",
    "Secrecy",
    "Status",
    "Longitude",
    "Latitude",
    "Event",
    "Info",
}


def _int(text: str | None, what: str) -> int | None:
    if text is None or text == "":
        return None
    try:
        return int(text)
    except ValueError:
        raise ManscdpError(f"{what} is not a number: {text[:20]!r}") from None


def _float(text: str | None, what: str) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ManscdpError(f"{what} is not a number: {text[:20]!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ManscdpError(f"{what} is not a finite number")
    return value


def _simple(element: Element, known: set[str] | frozenset[str]) -> Fields:
    """Simple children (no grandchildren) not in ``known``, in order."""
    return tuple((c.tag, c.text) for c in element.children if c.tag not in known and not c.children)


def _item(element: Element) -> CatalogItem:
    device_id = element.text_of("DeviceID") or ""
    if not device_id:
        raise ManscdpError("catalogue item without DeviceID")
    info = element.child("Info")
    return CatalogItem(
        device_id=device_id,
        name=element.text_of("Name") or "",
        manufacturer=element.text_of("Manufacturer") or "",
        model=element.text_of("Model") or "",
        owner=element.text_of("Owner") or "",
        civil_code=element.text_of("CivilCode") or "",
        address=element.text_of("Address") or "",
        parental=_int(element.text_of("Parental"), "Parental"),
        parent_id=element.text_of("ParentID") or "",
        register_way=_int(element.text_of("RegisterWay"), "RegisterWay"),
        secrecy=_int(element.text_of("Secrecy"), "Secrecy"),
        status=element.text_of("Status") or "",
        longitude=_float(element.text_of("Longitude"), "Longitude"),
        latitude=_float(element.text_of("Latitude"), "Latitude"),
        event=element.text_of("Event") or "",
        info=tuple((c.tag, c.text) for c in info.children) if info is not None else (),
        extra=_simple(element, _ITEM_FIELDS),
    )


def parse(body: bytes) -> Message:
    """Parse a MANSCDP body into a typed message (see the module documentation)."""
    root = parse_element(body)
    if root.tag not in ROOTS:
        raise ManscdpError(f"root element {root.tag[:30]!r} is not one of {', '.join(ROOTS)}")
    cmd_type = root.text_of("CmdType")
    if not cmd_type:
        raise ManscdpError("missing CmdType")
    sn = _int(root.text_of("SN"), "SN")
    if sn is None:
        raise ManscdpError("missing SN")
    device_id = root.text_of("DeviceID") or ""
    if not device_id:
        raise ManscdpError("missing DeviceID")
    known = {"CmdType", "SN", "DeviceID"}
    kind = (root.tag, cmd_type)
    if kind == ("Notify", "Keepalive"):
        info = root.child("Info")
        errors = tuple(c.text for c in info.children if c.tag == "DeviceID") if info is not None else ()
        return Keepalive(sn, device_id, root.text_of("Status") or "", errors)
    if root.tag == "Query":
        return Query(cmd_type, sn, device_id, _simple(root, known))
    if cmd_type == "Catalog" and root.tag in ("Response", "Notify"):
        sum_num = _int(root.text_of("SumNum"), "SumNum")
        listing = root.child("DeviceList")
        entries = [c for c in listing.children if c.tag == "Item"] if listing is not None else []
        if len(entries) > MAX_ITEMS:
            raise ManscdpError(f"more than {MAX_ITEMS} items in one DeviceList")
        items = tuple(_item(c) for c in entries)
        return Catalog(root.tag, sn, device_id, sum_num if sum_num is not None else len(items), items)
    if kind == ("Response", "DeviceInfo"):
        fields = {"Result", "DeviceName", "Manufacturer", "Model", "Firmware", "Channel"}
        return DeviceInfo(
            sn,
            device_id,
            root.text_of("Result") or "",
            root.text_of("DeviceName") or "",
            root.text_of("Manufacturer") or "",
            root.text_of("Model") or "",
            root.text_of("Firmware") or "",
            _int(root.text_of("Channel"), "Channel"),
            _simple(root, known | fields),
        )
    if kind == ("Response", "DeviceStatus"):
        fields = {"Result", "Online", "Status", "Encode", "Record", "DeviceTime", "Alarmstatus"}
        alarm = root.child("Alarmstatus")
        alarms = (
            tuple((c.text_of("DeviceID") or "", c.text_of("DutyStatus") or "") for c in alarm.children)
            if alarm is not None
            else ()
        )
        return DeviceStatus(
            sn,
            device_id,
            root.text_of("Result") or "",
            root.text_of("Online") or "",
            root.text_of("Status") or "",
            root.text_of("Encode") or "",
            root.text_of("Record") or "",
            root.text_of("DeviceTime") or "",
            alarms,
            _simple(root, known | fields),
        )
    if kind == ("Control", "DeviceControl"):
        return DeviceControl(sn, device_id, root.text_of("PTZCmd") or "", _simple(root, known | {"PTZCmd"}))
    if kind == ("Notify", "Alarm"):
        fields = {
            "AlarmPriority",
            "AlarmMethod",
            "AlarmTime",
            "AlarmDescription",
            "Longitude",
            "Latitude",
            "Info",
        }
        info = root.child("Info")
        return Alarm(
            sn,
            device_id,
            _int(root.text_of("AlarmPriority"), "AlarmPriority"),
            _int(root.text_of("AlarmMethod"), "AlarmMethod"),
            root.text_of("AlarmTime") or "",
            root.text_of("AlarmDescription") or "",
            _float(root.text_of("Longitude"), "Longitude"),
            _float(root.text_of("Latitude"), "Latitude"),
            _int(info.text_of("AlarmType"), "AlarmType") if info is not None else None,
            _simple(root, known | fields),
        )
    if kind == ("Response", "RecordInfo"):
        listing = root.child("RecordList")
        entries = [c for c in listing.children if c.tag == "Item"] if listing is not None else []
        if len(entries) > MAX_ITEMS:
            raise ManscdpError(f"more than {MAX_ITEMS} items in one RecordList")
        records = tuple(
            RecordItem(
                e.text_of("DeviceID") or device_id,
                e.text_of("Name") or "",
                e.text_of("FilePath") or "",
                e.text_of("Address") or "",
                e.text_of("StartTime") or "",
                e.text_of("EndTime") or "",
                _int(e.text_of("Secrecy"), "Secrecy"),
                e.text_of("Type") or "",
                e.text_of("RecorderID") or "",
                _int(e.text_of("FileSize"), "FileSize"),
            )
            for e in entries
        )
        sum_num = _int(root.text_of("SumNum"), "SumNum")
        return RecordInfo(sn, device_id, root.text_of("Name") or "", sum_num if sum_num is not None else len(records), records)
    if kind == ("Notify", "MediaStatus"):
        return MediaStatus(sn, device_id, root.text_of("NotifyType") or "")
    if kind == ("Notify", "MobilePosition"):
        return MobilePosition(
            sn,
            device_id,
            root.text_of("Time") or "",
            _float(root.text_of("Longitude"), "Longitude"),
            _float(root.text_of("Latitude"), "Latitude"),
            _float(root.text_of("Speed"), "Speed"),
            _float(root.text_of("Direction"), "Direction"),
            _float(root.text_of("Altitude"), "Altitude"),
        )
    if (
        root.tag == "Response"
        and root.child("Result") is not None
        and all(not c.children for c in root.children)
    ):
        return Result(
            cmd_type, sn, device_id, root.text_of("Result") or "", _simple(root, known | {"Result"})
        )
    return Unknown(root.tag, cmd_type, sn, device_id, root)


# ---- writing --------------------------------------------------------------------------------------


def _fmt(value: float) -> str:
    text = f"{value:.7f}".rstrip("0")
    return text + "0" if text.endswith(".") else text


def _lines(root: str, cmd_type: str, sn: int, device_id: str, body: list[str]) -> list[str]:
    return [
        f"<{root}>",
        f"<CmdType>{escape(cmd_type)}</CmdType>",
        f"<SN>{sn}</SN>",
        f"<DeviceID>{escape(device_id)}</DeviceID>",
        *body,
        f"</{root}>",
    ]


def _tag(name: str, value: object) -> str:
    return f"<{name}>{escape(str(value))}</{name}>"


def _opt(out: list[str], name: str, value: object) -> None:
    if value is None or value == "":
        return
    out.append(_tag(name, _fmt(value) if isinstance(value, float) else value))


def _opts(out: list[str], pairs: tuple[tuple[str, object], ...]) -> None:
    for name, value in pairs:
        _opt(out, name, value)


def _item_lines(item: CatalogItem) -> list[str]:
    out = ["<Item>", _tag("DeviceID", item.device_id), _tag("Name", item.name)]
    _opts(
        out,
        (
            ("Manufacturer", item.manufacturer),
            ("Model", item.model),
            ("Owner", item.owner),
            ("CivilCode", item.civil_code),
            ("Address", item.address),
            ("Parental", item.parental),
            ("ParentID", item.parent_id),
            ("RegisterWay", item.register_way),
            ("Secrecy", item.secrecy),
            ("Status", item.status),
            ("Longitude", item.longitude),
            ("Latitude", item.latitude),
            ("Event", item.event),
        ),
    )
    out += [_tag(k, v) for k, v in item.extra]
    if item.info:
        out += ["<Info>", *(_tag(k, v) for k, v in item.info), "</Info>"]
    out.append("</Item>")
    return out


def _element_lines(element: Element) -> list[str]:
    attrs = "".join(f' {k}="{escape(v, {chr(34): "&quot;"})}"' for k, v in element.attrs)
    if not element.children:
        return [f"<{element.tag}{attrs}>{escape(element.text)}</{element.tag}>"]
    out = [f"<{element.tag}{attrs}>"]
    for child in element.children:
        out += _element_lines(child)
    out.append(f"</{element.tag}>")
    return out


def _body_lines(message: Message) -> list[str]:
    if isinstance(message, Keepalive):
        body = [_tag("Status", message.status)]
        if message.error_devices:
            body += ["<Info>", *(_tag("DeviceID", d) for d in message.error_devices), "</Info>"]
        return _lines("Notify", "Keepalive", message.sn, message.device_id, body)
    if isinstance(message, Query):
        return _lines(
            "Query", message.cmd_type, message.sn, message.device_id, [_tag(k, v) for k, v in message.fields]
        )
    if isinstance(message, Catalog):
        body = [_tag("SumNum", message.sum_num), f'<DeviceList Num="{len(message.items)}">']
        for item in message.items:
            body += _item_lines(item)
        body.append("</DeviceList>")
        return _lines(message.root, "Catalog", message.sn, message.device_id, body)
    if isinstance(message, DeviceInfo):
        body = []
        _opts(
            body,
            (
                ("Result", message.result),
                ("DeviceName", message.device_name),
                ("Manufacturer", message.manufacturer),
                ("Model", message.model),
                ("Firmware", message.firmware),
                ("Channel", message.channel),
            ),
        )
        body += [_tag(k, v) for k, v in message.extra]
        return _lines("Response", "DeviceInfo", message.sn, message.device_id, body)
    if isinstance(message, DeviceStatus):
        body = []
        _opts(
            body,
            (
                ("Result", message.result),
                ("Online", message.online),
                ("Status", message.status),
                ("Encode", message.encode),
                ("Record", message.record),
                ("DeviceTime", message.device_time),
            ),
        )
        if message.alarms:
            body.append(f'<Alarmstatus Num="{len(message.alarms)}">')
            for device, duty in message.alarms:
                body += ["<Item>", _tag("DeviceID", device), _tag("DutyStatus", duty), "</Item>"]
            body.append("</Alarmstatus>")
        body += [_tag(k, v) for k, v in message.extra]
        return _lines("Response", "DeviceStatus", message.sn, message.device_id, body)
    if isinstance(message, DeviceControl):
        body = [_tag("PTZCmd", message.ptz_cmd)] if message.ptz_cmd else []
        body += [_tag(k, v) for k, v in message.fields]
        return _lines("Control", "DeviceControl", message.sn, message.device_id, body)
    if isinstance(message, Alarm):
        body = []
        _opts(
            body,
            (
                ("AlarmPriority", message.priority),
                ("AlarmMethod", message.method),
                ("AlarmTime", message.time),
                ("AlarmDescription", message.description),
                ("Longitude", message.longitude),
                ("Latitude", message.latitude),
            ),
        )
        body += [_tag(k, v) for k, v in message.extra]
        if message.alarm_type is not None:
            body += ["<Info>", _tag("AlarmType", message.alarm_type), "</Info>"]
        return _lines("Notify", "Alarm", message.sn, message.device_id, body)
    if isinstance(message, MobilePosition):
        body = []
        _opts(
            body,
            (
                ("Time", message.time),
                ("Longitude", message.longitude),
                ("Latitude", message.latitude),
                ("Speed", message.speed),
                ("Direction", message.direction),
                ("Altitude", message.altitude),
            ),
        )
        return _lines("Notify", "MobilePosition", message.sn, message.device_id, body)
    if isinstance(message, MediaStatus):
        return _lines("Notify", "MediaStatus", message.sn, message.device_id, [_tag("NotifyType", message.notify_type)])
    if isinstance(message, RecordInfo):
        body = [_tag("Name", message.name), _tag("SumNum", message.sum_num), f'<RecordList Num="{len(message.items)}">']
        for r in message.items:
            body += ["<Item>", _tag("DeviceID", r.device_id)]
            _opts(
                body,
                (
                    ("Name", r.name),
                    ("FilePath", r.file_path),
                    ("Address", r.address),
                    ("StartTime", r.start_time),
                    ("EndTime", r.end_time),
                    ("Secrecy", r.secrecy),
                    ("Type", r.type),
                    ("RecorderID", r.recorder_id),
                    ("FileSize", r.file_size),
                ),
            )
            body.append("</Item>")
        body.append("</RecordList>")
        return _lines("Response", "RecordInfo", message.sn, message.device_id, body)
    if isinstance(message, Result):
        body = [_tag("Result", message.result), *(_tag(k, v) for k, v in message.fields)]
        return _lines("Response", message.cmd_type, message.sn, message.device_id, body)
    return _element_lines(message.element)


def serialize(message: Message, encoding: str = "GB2312") -> bytes:
    """The body of ``message``: an XML declaration and one element per line (CRLF).

    Written in ``encoding`` (GB2312 by default, as the standard's examples are); text GB2312 cannot
    hold is written in GB18030 and declared so.
    """
    text = "\r\n".join(_body_lines(message)) + "\r\n"
    for name in dict.fromkeys([encoding, "GB18030"]):
        codec = "gb18030" if name.lower() in _GB_NAMES and name.lower() != "gb2312" else name.lower()
        try:
            data = text.encode(codec)
        except UnicodeEncodeError:
            continue
        return f'<?xml version="1.0" encoding="{name}"?>\r\n'.encode("ascii") + data
    raise ManscdpError("text cannot be encoded")  # pragma: no cover - GB18030 encodes all of Unicode
