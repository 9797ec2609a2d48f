"""What a camera's alarm (GB/T 28181-2016 §9.4, ``Notify/Alarm``) means to the command room. Pure.

An alarm names how it was raised (``AlarmMethod``: 1 phone, 2 device, 3 SMS, 4 GPS, 5 video
analysis, 6 device fault, 7 other) and, for methods 2, 5 and 6, what (``Info/AlarmType``, Annex
A.2.6 of the 2016 edition). :func:`judge` sorts it:

* ``case`` — something may be happening at the camera: a person raised it (phone, SMS, a manual
  video alarm), the device was tampered with, or video analysis saw an intrusion, a tripwire crossed,
  loitering, an object left or taken, a crowd, movement the wrong way or too fast. It opens a case
  at the camera (channel ``video``);
* ``fault`` — the camera itself needs care (video lost, disk full or failed, fan, temperature): no
  case, a line for the operators and a count;
* ``note`` — counted and logged only: plain motion detection and flow counting fire all day, and
  a video-quality alarm or an unknown code is no incident.

The alarm's priority (1 highest … 4) sets the case's for 1 and 2 (P1, P2); lower ones take the
category's default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

Kind = Literal["case", "fault", "note"]

METHODS: Final[dict[int, tuple[str, str]]] = {
    1: ("电话报警", "phone alarm"),
    2: ("设备报警", "device alarm"),
    3: ("短信报警", "SMS alarm"),
    4: ("GPS报警", "GPS alarm"),
    5: ("视频报警", "video alarm"),
    6: ("设备故障报警", "device fault"),
    7: ("其他报警", "other alarm"),
}

# (method, type) -> (name, english name, kind)
TYPES: Final[dict[tuple[int, int], tuple[str, str, Kind]]] = {
    (2, 1): ("视频丢失报警", "video lost", "fault"),
    (2, 2): ("设备防拆报警", "device tampered with", "case"),
    (2, 3): ("存储设备磁盘满报警", "storage full", "fault"),
    (2, 4): ("设备高温报警", "device too hot", "fault"),
    (2, 5): ("设备低温报警", "device too cold", "fault"),
    (5, 1): ("人工视频报警", "manual video alarm", "case"),
    (5, 2): ("运动目标检测报警", "motion detected", "note"),
    (5, 3): ("遗留物检测报警", "object left behind", "case"),
    (5, 4): ("物体移除检测报警", "object removed", "case"),
    (5, 5): ("绊线检测报警", "tripwire crossed", "case"),
    (5, 6): ("入侵检测报警", "intrusion", "case"),
    (5, 7): ("逆行检测报警", "wrong-way movement", "case"),
    (5, 8): ("徘徊检测报警", "loitering", "case"),
    (5, 9): ("流量统计报警", "flow count", "note"),
    (5, 10): ("密度检测报警", "crowd density", "case"),
    (5, 11): ("视频异常检测报警", "video anomaly", "fault"),
    (5, 12): ("快速移动报警", "fast movement", "case"),
    (6, 1): ("存储设备磁盘故障报警", "storage disk failed", "fault"),
    (6, 2): ("存储设备风扇故障报警", "storage fan failed", "fault"),
}

# Methods whose alarms a person raised: a case whatever the type.
_BY_A_PERSON: Final = frozenset({1, 3})
# A crowd is a stability matter (人员密集), not a crime.
CROWD: Final = (5, 10)
CROWD_CATEGORY: Final = "incident.stability.crowding"


@dataclass(frozen=True, slots=True)
class Judgement:
    kind: Kind
    name: str  # 入侵检测报警
    name_en: str  # intrusion
    priority: str | None  # P1, P2, or None: the category's default
    category: str | None  # None: the configured [gb28181] alarm_category


def judge(method: int | None, alarm_type: int | None, priority: int | None) -> Judgement:
    """Sort one alarm (see the module's text); unknown codes are notes."""
    method_name = METHODS.get(method or 0)
    known = TYPES.get((method or 0, alarm_type or 0))
    if known is not None:
        name, name_en, kind = known
    elif method in _BY_A_PERSON and method_name is not None:
        name, name_en, kind = method_name[0], method_name[1], "case"
    elif method == 6:
        name, name_en, kind = METHODS[6][0], METHODS[6][1], "fault"
    else:
        zh, en = method_name or ("未知报警", "unknown alarm")
        name, name_en, kind = zh, en, "note"
    level = {1: "P1", 2: "P2"}.get(priority or 0)
    category = CROWD_CATEGORY if (method, alarm_type) == CROWD else None
    return Judgement(kind, name, name_en, level, category)
