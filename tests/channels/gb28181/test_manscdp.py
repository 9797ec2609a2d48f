"""MANSCDP parse and serialise over the real devices' messages, in their encodings (GB/T 28181 §A.2)."""

from __future__ import annotations

import pytest

from dispatchd.channels.gb28181 import manscdp
from dispatchd.channels.gb28181.manscdp import (
    Alarm,
    Catalog,
    CatalogItem,
    DeviceControl,
    DeviceInfo,
    DeviceStatus,
    Keepalive,
    ManscdpError,
    MobilePosition,
    Query,
    Result,
    Unknown,
)
from tests.channels.gb28181.captures import CAPTURES, NAMES, body, message

MANSCDP = [n for n in NAMES if "manscdp" in (message(n).headers.get("Content-Type") or "").lower()]


@pytest.mark.parametrize("name", MANSCDP)
def test_round_trip_over_captures(name: str) -> None:
    """Every captured MANSCDP body parses, serialises and parses again to the same message."""
    first = manscdp.parse(body(name))
    assert manscdp.parse(manscdp.serialize(first)) == first
    assert manscdp.parse(manscdp.serialize(first, "UTF-8")) == first


def test_dahua_keepalive() -> None:
    """The Dahua dome's keep-alive (GB2312 declared, indented) reads as a Keepalive with status OK."""
    assert manscdp.parse(body("dahua-sd6c3230-keepalive.sip")) == Keepalive(539, "34020000001320000002", "OK")


def test_hikvision_catalog_two_items() -> None:
    """The Hikvision catalogue answer has SumNum 2: a camera channel and an alarm input with no name."""
    catalog = manscdp.parse(body("hikvision-ds2cd5024efwd-catalog-response.sip"))
    assert isinstance(catalog, Catalog) and catalog.root == "Response"
    assert (catalog.sn, catalog.device_id, catalog.sum_num) == (10021, "34020000001320000002", 2)
    camera, alarm_in = catalog.items
    assert camera.device_id == "34020000001310000001" and camera.name == "hikangname"
    assert camera.is_video and camera.online and camera.longitude is None
    assert ("SafetyWay", "0") in camera.extra
    assert alarm_in.type_code == "134" and not alarm_in.is_video and alarm_in.name == ""


def test_dahua_catalog_info_ptz_type() -> None:
    """The Dahua catalogue item carries <Info><PTZType>3</PTZType>: kept, and read as the PTZ type."""
    catalog = manscdp.parse(body("dahua-sd6c3230-catalog-response.sip"))
    assert isinstance(catalog, Catalog)
    (item,) = catalog.items
    assert item.ptz_type == 3 and dict(item.info)["DownloadSpeed"] == "1/2/4/8"
    assert item.model == "DH-SD-6C3230UE-HN" and item.parent_id == "34020000001320000002"


def test_uniview_item_with_zero_coordinates() -> None:
    """The Uniview catalogue item's coordinates (0.0000000) read as numbers; its Info keeps Resolution."""
    text = (CAPTURES / "uniview-hic6622-catalog-item.fragment.xml").read_text(encoding="utf-8")
    xml = (
        '<?xml version="1.0" encoding="GB2312"?>\n<Response><CmdType>Catalog</CmdType><SN>3</SN>'
        f'<DeviceID>75015310072008100002</DeviceID><SumNum>1</SumNum><DeviceList Num="1">{text}'
        "</DeviceList></Response>"
    ).encode("gb2312")
    catalog = manscdp.parse(xml)
    assert isinstance(catalog, Catalog)
    (item,) = catalog.items
    assert (item.longitude, item.latitude) == (0.0, 0.0) and item.parental == 1
    assert dict(item.info)["Resolution"] == "6/4/2" and item.ptz_type == 1


def test_device_info_answers() -> None:
    """Both devices' DeviceInfo answers give model and firmware."""
    hik = manscdp.parse(body("hikvision-ds2cd5024efwd-deviceinfo-response.sip"))
    assert isinstance(hik, DeviceInfo)
    assert (hik.model, hik.firmware, hik.channel, hik.result) == ("DS-2CD5024EFWD", "V5.5.85", 1, "OK")
    dahua = manscdp.parse(body("dahua-sd6c3230-deviceinfo-response.sip"))
    assert isinstance(dahua, DeviceInfo) and dahua.manufacturer == "Dahua"


def test_alarm_notify() -> None:
    """The Hikvision alarm: priority 4, method 5 (video), type 2 under Info, no coordinates."""
    alarm = manscdp.parse(body("hikvision-ds2cd5024efwd-alarm-notify.sip"))
    assert alarm == Alarm(99, "34020000001310000001", 4, 5, "2025-04-22T11:26:02", "", None, None, 2)


def test_ptz_control_from_the_platform() -> None:
    """eXosip's DeviceControl (lower-case content type, no encoding declared) carries the PTZ hex."""
    control = manscdp.parse(body("exosip-ptz-up.sip"))
    assert control == DeviceControl(16, "34020000001310000001", "A50F000800640020")


def test_query_catalog() -> None:
    """eXosip's catalogue query reads as a Query with no extra fields."""
    assert manscdp.parse(body("exosip-query-catalog.sip")) == Query("Catalog", 7, "34020000001320000002")


def test_gb2312_preset_name() -> None:
    """The preset answer, GB2312 on the wire, keeps its Chinese preset name (预置点 1)."""
    unknown = manscdp.parse(body("hikvision-ds2cd5024efwd-presetquery-response.sip"))
    assert isinstance(unknown, Unknown) and unknown.cmd_type == "PresetQuery"
    listing = unknown.element.child("PresetList")
    assert listing is not None and listing.children[0].text_of("PresetName") == "预置点 1"


def test_gbk_and_gb18030_text() -> None:
    """A name in GBK (outside GB2312: 堃) and one in GB18030 read right when declared GBK or GB2312."""
    for declared in ("GBK", "GB2312", "GB18030"):
        xml = (
            f'<?xml version="1.0" encoding="{declared}"?><Response><CmdType>DeviceInfo</CmdType><SN>1</SN>'
            "<DeviceID>33038100001320000001</DeviceID><DeviceName>马屿镇堃路口𠀾</DeviceName></Response>"
        ).encode("gb18030")
        info = manscdp.parse(xml)
        assert isinstance(info, DeviceInfo) and info.device_name == "马屿镇堃路口𠀾"


def test_utf8_declared_as_gb2312() -> None:
    """Firmware that declares GB2312 and writes UTF-8 is read as UTF-8 (the bytes are valid UTF-8)."""
    xml = (
        '<?xml version="1.0" encoding="GB2312"?><Notify><CmdType>Alarm</CmdType><SN>5</SN>'
        "<DeviceID>33038100001310000001</DeviceID><AlarmDescription>越界报警</AlarmDescription></Notify>"
    ).encode()
    alarm = manscdp.parse(xml)
    assert isinstance(alarm, Alarm) and alarm.description == "越界报警"


def test_serialize_falls_back_to_gb18030() -> None:
    """Text GB2312 cannot hold is written in GB18030 and declared so; it reads back the same."""
    info = DeviceInfo(1, "33038100001320000001", device_name="堃𠀾")
    data = manscdp.serialize(info)
    assert data.startswith(b'<?xml version="1.0" encoding="GB18030"?>')
    assert manscdp.parse(data) == info


def test_typed_round_trips() -> None:
    """Each typed message the platform writes or reads survives serialise → parse."""
    item = CatalogItem(
        "33038100001310000001",
        "马屿镇政府门口",
        manufacturer="Hikvision",
        parental=0,
        parent_id="33038100001320000001",
        status="ON",
        longitude=120.6412345,
        latitude=27.7154321,
        event="ADD",
        info=(("PTZType", "1"),),
    )
    messages: list[manscdp.Message] = [
        Keepalive(1, "33038100001320000001", "OK", ("33038100001310000002",)),
        Query("Alarm", 2, "33038100001320000001", (("StartAlarmPriority", "1"), ("EndAlarmPriority", "4"))),
        Catalog("Notify", 3, "33038100001320000001", 1, (item,)),
        DeviceStatus(
            4, "33038100001320000001", "OK", "ONLINE", "OK", alarms=(("33038100001340000001", "OFFDUTY"),)
        ),
        DeviceControl(5, "33038100001310000001", "", (("IFameCmd", "Send"),)),
        MobilePosition(6, "33038100001320000001", "2026-05-03T08:00:00", 120.64, 27.71, 12.5, 90.0, 3.0),
        Result("DeviceControl", 7, "33038100001310000001", "OK"),
        Result("Alarm", 8, "33038100001310000001", "OK"),
    ]
    for msg in messages:
        assert manscdp.parse(manscdp.serialize(msg)) == msg


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"x" * (manscdp.MAX_BODY_BYTES + 1), "exceeds"),
        (
            b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]>'
            b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN><DeviceID>&b;</DeviceID></Notify>",
            "DOCTYPE",
        ),
        (b'<!ENTITY x SYSTEM "file:///etc/passwd"><Notify/>', "DOCTYPE"),
        (b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN>", "malformed"),
        (b"<Notify><SN>1</SN><DeviceID>1</DeviceID></Notify>", "CmdType"),
        (b"<Notify><CmdType>Keepalive</CmdType><SN>x</SN><DeviceID>1</DeviceID></Notify>", "SN"),
        (b"<Notify><CmdType>Keepalive</CmdType><SN>1</SN></Notify>", "DeviceID"),
        (b"<Html><CmdType>Keepalive</CmdType></Html>", "root"),
        (b'<?xml version="1.0" encoding="x-klingon"?><Notify/>', "unknown encoding"),
        (b'<?xml version="1.0" encoding="UTF-8"?><Notify>\xff\xfe\xff</Notify>', "not text"),
        (
            b"<Response><CmdType>Catalog</CmdType><SN>1</SN><DeviceID>1</DeviceID><SumNum>1</SumNum>"
            b"<DeviceList><Item><DeviceID>2</DeviceID><Longitude>east</Longitude></Item></DeviceList></Response>",
            "Longitude",
        ),
    ],
)
def test_refused_bodies(data: bytes, reason: str) -> None:
    """Oversize, DOCTYPE/entities, malformed XML, non-MANSCDP and undecodable bodies raise with a reason."""
    with pytest.raises(ManscdpError, match=reason):
        manscdp.parse(data)


def test_recordinfo_answer_of_a_hikvision_nvr() -> None:
    """The captured NVR answer: SumNum 2, two recordings of channel ...1310000001 with their file
    paths and Beijing times; written back and read again it is the same."""
    records = manscdp.parse(body("hikvision-nvr-recordinfo-response.sip"))
    assert isinstance(records, manscdp.RecordInfo)
    assert (records.sn, records.device_id, records.name, records.sum_num) == (18, "34020000001310000001", "IPCamera 01", 2)
    first, second = records.items
    assert (first.start_time, first.end_time, first.file_path, first.type) == (
        "2024-05-04T14:43:16",
        "2024-05-04T15:16:26",
        "1714804996_1714806986",
        "time",
    )
    assert second.start_time == first.end_time and first.secrecy == 0
    assert manscdp.parse(manscdp.serialize(records)) == records
    start = manscdp.gb_time(first.start_time)
    assert start is not None and start.timestamp() == 1714804996  # the file name is its unix span
    assert manscdp.gb_time_text(start) == first.start_time


def test_media_status_at_the_end_of_a_recording() -> None:
    """§9.8: Notify/MediaStatus with NotifyType 121 (the recording's end) reads as such and writes back."""
    text = (
        '<?xml version="1.0" encoding="GB2312"?>\n<Notify>\n<CmdType>MediaStatus</CmdType>\n<SN>8</SN>\n'
        "<DeviceID>34020000001310000001</DeviceID>\n<NotifyType>121</NotifyType>\n</Notify>\n"
    )
    status = manscdp.parse(text.encode())
    assert status == manscdp.MediaStatus(8, "34020000001310000001", manscdp.MEDIA_END)
    assert manscdp.parse(manscdp.serialize(status)) == status
