"""OASIS CAP 1.2 alerts (and CAP 1.1), with the GB/T 35965.1 warning fields where they differ. Pure.

The document is untrusted: it is parsed with defusedxml (no entities, no DTDs, no external
references) and limited in size by the caller. What is read (docs/plans.md):

- ``<alert>``: identifier, sender, sent, status, msgType (Alert, Update, Cancel), references
  (``sender,identifier,sent`` triples; matched on sender and identifier only, as real feeds shift
  the time by a second).
- every ``<info>`` (several languages or severities): event, eventCode (every value, whatever its
  valueName: GB/T 35965.1 event type codes such as ``11B01`` 台风 are matched as given), urgency,
  severity, certainty, headline, description (all of its text, child elements included, as one
  real feed nests elements in it), expires, parameters; the zh-CN (else zh, else first) info names
  the warning.
- GB/T 35965.1: the warning colour (红色/橙色/黄色/蓝色, or Red/Orange/Yellow/Blue) from a
  parameter whose name mentions colour or level, or from the headline, mapped to CAP severity
  (Extreme/Severe/Moderate/Minor) where ``<severity>`` is Unknown or missing; geocodes whose value is
  an administrative division code (GB/T 2260, the codes of config/orgs) cover that unit.
- ``<area>``: polygons (``lat,lon`` pairs) and circles (``lat,lon radius_km``); areaDesc.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Final
from xml.etree.ElementTree import Element

from defusedxml import ElementTree as SafeTree
from defusedxml.common import DefusedXmlException

from dispatchd.domain.plans import Circle

NAMESPACES: Final = ("urn:oasis:names:tc:emergency:cap:1.2", "urn:oasis:names:tc:emergency:cap:1.1")
MSG_TYPES: Final = ("Alert", "Update", "Cancel", "Ack", "Error")
_COLOURS: Final = {
    "红": "Extreme",
    "red": "Extreme",
    "橙": "Severe",
    "orange": "Severe",
    "黄": "Moderate",
    "yellow": "Moderate",
    "蓝": "Minor",
    "blue": "Minor",
}


class CapError(ValueError):
    """Not a CAP alert we can take; ``field`` names what is wrong."""

    def __init__(self, field_name: str, message_zh: str, message_en: str) -> None:
        super().__init__(message_en)
        self.field = field_name
        self.message_zh = message_zh
        self.message_en = message_en


@dataclass(frozen=True, slots=True)
class Alert:
    identifier: str
    sender: str
    sent: datetime | None
    status: str
    msg_type: str
    references: tuple[tuple[str, str], ...]  # (sender, identifier)
    event: str
    event_codes: tuple[str, ...]
    urgency: str | None
    severity: str | None
    certainty: str | None
    colour: str | None
    headline: str | None
    description: str | None
    expires: datetime | None
    area_desc: str
    polygons: tuple[tuple[tuple[float, float], ...], ...]  # rings of (lon, lat)
    circles: tuple[Circle, ...]
    geocodes: tuple[str, ...]
    extra: dict[str, Any] = field(default_factory=dict)

    def areas_json(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = [{"type": "polygon", "ring": [list(p) for p in ring]} for ring in self.polygons]
        out += [{"type": "circle", "lat": c.lat, "lon": c.lon, "radius_km": c.radius_km} for c in self.circles]
        return out


def _local(tag: str) -> tuple[str | None, str]:
    if tag.startswith("{"):
        ns, _, name = tag[1:].partition("}")
        return ns, name
    return None, tag


def _children(el: Element, name: str) -> list[Element]:
    return [c for c in el if _local(c.tag)[1] == name]


def _text(el: Element, name: str) -> str | None:
    found = _children(el, name)
    if not found:
        return None
    value = "".join(found[0].itertext()).strip()
    return value or None


def _time(value: str | None, field_name: str) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise CapError(field_name, f"{field_name} 时间格式错误", f"{field_name} is not a CAP date-time") from None
    if moment.tzinfo is None:
        raise CapError(field_name, f"{field_name} 缺少时区", f"{field_name} has no time zone")
    return moment


def _pairs(text: str, field_name: str) -> list[tuple[float, float]]:
    """``lat,lon lat,lon …`` → [(lon, lat), …]."""
    out: list[tuple[float, float]] = []
    for part in text.split():
        try:
            lat_s, lon_s = part.split(",")
            lat, lon = float(lat_s), float(lon_s)
        except ValueError:
            raise CapError(field_name, "多边形坐标格式错误", f"{field_name}: {part[:40]!r} is not lat,lon") from None
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise CapError(field_name, "坐标超出范围", f"{field_name}: {part[:40]!r} out of range")
        out.append((lon, lat))
    return out


def _circle(text: str) -> Circle:
    try:
        centre, radius = text.split()
        lat_s, lon_s = centre.split(",")
        c = Circle(float(lat_s), float(lon_s), float(radius))
    except ValueError:
        raise CapError("circle", "圆形区域格式错误", f"circle {text[:40]!r} is not 'lat,lon radius'") from None
    if not (-90 <= c.lat <= 90 and -180 <= c.lon <= 180 and 0 <= c.radius_km <= 2000):
        raise CapError("circle", "圆形区域超出范围", "circle out of range")
    return c


def _pick_info(infos: list[Element]) -> Element:
    for wanted in ("zh-cn", "zh"):
        for info in infos:
            lang = (_text(info, "language") or "").lower()
            if lang == wanted or (wanted == "zh" and lang.startswith("zh")):
                return info
    return infos[0]


def _colour(info: Element, headline: str | None) -> str | None:
    for param in _children(info, "parameter"):
        name = (_text(param, "valueName") or "").lower()
        value = (_text(param, "value") or "").lower()
        if any(k in name for k in ("colo", "level", "级别", "颜色")):
            for key, severity in _COLOURS.items():
                if key in value:
                    return severity
    text = (headline or "").lower()
    for key, severity in _COLOURS.items():
        if f"{key}色" in text or f"{key} warning" in text:
            return severity
    return None


def parse(document: bytes) -> Alert:
    """A CAP alert from its XML bytes; CapError says what is wrong."""
    try:
        root = SafeTree.fromstring(document, forbid_dtd=True)
    except DefusedXmlException:
        raise CapError("document", "文档含有不允许的 XML 构造（DTD 或实体）", "the document uses DTDs or entities, which are refused") from None
    except SafeTree.ParseError as exc:
        raise CapError("document", "不是格式正确的 XML", f"not well-formed XML: {exc}") from None
    ns, name = _local(root.tag)
    if name != "alert" or ns not in NAMESPACES:
        raise CapError("alert", "不是 CAP 1.2 警报（根元素应为 alert）", "not a CAP 1.2 <alert> (urn:oasis:names:tc:emergency:cap:1.2)")
    identifier, sender = _text(root, "identifier"), _text(root, "sender")
    if not identifier:
        raise CapError("identifier", "缺少 identifier", "identifier is missing")
    if not sender:
        raise CapError("sender", "缺少 sender", "sender is missing")
    msg_type = _text(root, "msgType") or "Alert"
    if msg_type not in MSG_TYPES:
        raise CapError("msgType", "msgType 无效", "msgType must be one of " + ", ".join(MSG_TYPES))
    references: list[tuple[str, str]] = []
    for triple in (_text(root, "references") or "").split():
        parts = triple.split(",")
        if len(parts) >= 2:
            references.append((parts[0], parts[1]))
    infos = _children(root, "info")
    if not infos and msg_type != "Cancel":
        raise CapError("info", "缺少 info", "the alert has no <info>")
    polygons: list[tuple[tuple[float, float], ...]] = []
    circles: list[Circle] = []
    geocodes: list[str] = []
    descs: list[str] = []
    codes: list[str] = []
    for info in infos:
        for code in _children(info, "eventCode"):
            value = _text(code, "value")
            if value:
                codes.append(value)
        for area in _children(info, "area"):
            if (d := _text(area, "areaDesc")) and d not in descs:
                descs.append(d)
            for poly in _children(area, "polygon"):
                ring = _pairs("".join(poly.itertext()), "polygon")
                if len(ring) >= 4:
                    polygons.append(tuple(ring))
            for circ in _children(area, "circle"):
                circles.append(_circle("".join(circ.itertext()).strip()))
            for geo in _children(area, "geocode"):
                value = _text(geo, "value")
                if value:
                    geocodes.append(value)
    main = _pick_info(infos) if infos else None
    event = (_text(main, "event") if main is not None else None) or ""
    if main is not None and not event:
        raise CapError("event", "缺少 event", "info has no <event>")
    severity = _text(main, "severity") if main is not None else None
    headline = _text(main, "headline") if main is not None else None
    colour = _colour(main, headline) if main is not None else None
    if colour and (severity is None or severity == "Unknown"):
        severity = colour
    return Alert(
        identifier=identifier,
        sender=sender,
        sent=_time(_text(root, "sent"), "sent"),
        status=_text(root, "status") or "Actual",
        msg_type=msg_type,
        references=tuple(references),
        event=event,
        event_codes=tuple(dict.fromkeys(codes)),
        urgency=_text(main, "urgency") if main is not None else None,
        severity=severity,
        certainty=_text(main, "certainty") if main is not None else None,
        colour=colour,
        headline=headline,
        description=(_text(main, "description") if main is not None else None),
        expires=_time(_text(main, "expires"), "expires") if main is not None else None,
        area_desc="；".join(descs)[:1000],
        polygons=tuple(polygons),
        circles=tuple(circles),
        geocodes=tuple(dict.fromkeys(geocodes)),
    )
