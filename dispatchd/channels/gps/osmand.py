"""OsmAnd / Traccar Client HTTP protocol, sans I/O: request fields or body in, a :class:`Fix` out.

Squad phones run Traccar Client (or OsmAnd's live-tracking plugin) and send one fix per HTTP
request, in one of two shapes (https://www.traccar.org/osmand/):

* **query or form fields** (OsmAnd and Traccar Client before 9.0): ``id`` (or ``deviceid``),
  ``lat`` and ``lon`` (or ``location=lat,lon``), ``timestamp``, ``speed`` in knots, ``bearing``
  (or ``heading``), ``altitude``, ``accuracy``, ``batt`` (percent), ``hdop``, ``charge``, and any
  further field the client adds;
* **a JSON body** (Traccar Client 9.0 and later, the native format of its background-location
  SDK): ``{"device_id": ..., "location": {"timestamp": ISO 8601, "coords": {"latitude",
  "longitude", "accuracy", "speed" (m/s), "heading", "altitude"}, "battery": {"level" (0..1),
  "is_charging"}, "is_moving", "odometer", "event", "activity": {"type"}, "extras": {...}}}``.

The SDK reports -1 for a speed, heading, accuracy or battery level it does not know; those
become None. Nothing here reads the clock: a request without a time gets the ``received_at`` the
caller passes, or is refused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from typing import TypeAlias
from urllib.parse import urlencode

__all__ = [
    "KMH_PER_KNOT",
    "KMH_PER_MPS",
    "Extra",
    "Fix",
    "OsmandError",
    "encode_query",
    "parse_json",
    "parse_query",
]

#: One knot is one nautical mile (1852 m) an hour.
KMH_PER_KNOT = 1.852
KMH_PER_MPS = 3.6

#: Unix times below this are seconds, above it milliseconds (Traccar's rule: Java's Integer.MAX_VALUE).
_MILLIS_THRESHOLD = 2**31 - 1

Extra: TypeAlias = str | int | float | bool


class OsmandError(ValueError):
    """A request field is missing or unusable; ``field`` names it."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class Fix:
    """One position report from a phone.

    ``at`` is an aware UTC datetime. ``speed_kmh`` is km/h whatever the wire unit; the value as
    sent stays in ``extras`` (``speed_knots`` for the query form, ``speed_mps`` for JSON).
    ``heading`` is degrees clockwise from north, ``altitude`` and ``accuracy`` metres, ``battery``
    percent. ``extras`` holds everything else the client sent: ``hdop``, ``charging``, ``valid``,
    ``is_moving``, ``odometer_m``, ``event``, ``activity``, ``alarm`` (e.g. ``"sos"``), and any
    unknown query field as its raw string.
    """

    device_id: str
    lat: float
    lon: float
    at: datetime
    speed_kmh: float | None = None
    heading: float | None = None
    altitude: float | None = None
    accuracy: float | None = None
    battery: float | None = None
    extras: Mapping[str, Extra] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.at.tzinfo is None or self.at.utcoffset() is None:
            raise ValueError("Fix.at must be timezone-aware")


# -- query / form fields ---------------------------------------------------------------------------

# Query fields that become Fix attributes or typed extras; everything else is kept as sent.
_MODELLED_QUERY_FIELDS = frozenset(
    {
        "id",
        "deviceid",
        "lat",
        "lon",
        "location",
        "timestamp",
        "speed",
        "bearing",
        "heading",
        "altitude",
        "accuracy",
        "batt",
        "hdop",
        "charge",
        "valid",
    }
)


def parse_query(
    params: Mapping[str, str],
    *,
    received_at: datetime | None = None,
    local_tz: tzinfo = UTC,
) -> Fix:
    """Read a fix from query-string or form fields (already URL-decoded, one value per name).

    ``timestamp`` may be unix seconds, unix milliseconds, ISO 8601, or ``yyyy-MM-dd HH:mm:ss``;
    a time without an offset is read in ``local_tz``. Without a ``timestamp`` the fix takes
    ``received_at``. Raises :class:`OsmandError` naming the field that is missing or invalid.
    """
    device_id = (params.get("id") or params.get("deviceid") or "").strip()
    if not device_id:
        raise OsmandError("id", "missing (send id or deviceid)")

    if "lat" in params or "lon" in params:
        lat = _latitude("lat", _query_number(params, "lat"))
        lon = _longitude("lon", _query_number(params, "lon"))
    elif "location" in params:
        parts = params["location"].split(",")
        if len(parts) != 2:
            raise OsmandError("location", f"expected 'lat,lon', got {params['location']!r}")
        lat = _latitude("location", _number("location", parts[0]))
        lon = _longitude("location", _number("location", parts[1]))
    else:
        raise OsmandError("lat", "missing (send lat and lon, or location=lat,lon)")

    if "timestamp" in params:
        at = _query_time(params["timestamp"], local_tz)
    elif received_at is not None:
        at = _aware("received_at", received_at)
    else:
        raise OsmandError("timestamp", "missing")

    extras: dict[str, Extra] = {}
    speed_kmh: float | None = None
    if "speed" in params:
        knots = _query_number(params, "speed")
        extras["speed_knots"] = knots
        speed_kmh = knots * KMH_PER_KNOT if knots >= 0 else None

    heading_field = "bearing" if "bearing" in params else "heading"
    heading = _heading(_query_number(params, heading_field)) if heading_field in params else None
    altitude = _query_number(params, "altitude") if "altitude" in params else None
    accuracy = _unknown_if_negative(_query_number(params, "accuracy")) if "accuracy" in params else None
    battery = _battery_percent("batt", _query_number(params, "batt")) if "batt" in params else None

    if "hdop" in params:
        extras["hdop"] = _query_number(params, "hdop")
    if "charge" in params:
        extras["charging"] = _flag("charge", params["charge"])
    if "valid" in params:
        extras["valid"] = _flag("valid", params["valid"])
    for name, value in params.items():
        if name not in _MODELLED_QUERY_FIELDS:
            extras.setdefault(name, value)

    return Fix(
        device_id=device_id,
        lat=lat,
        lon=lon,
        at=at,
        speed_kmh=speed_kmh,
        heading=heading,
        altitude=altitude,
        accuracy=accuracy,
        battery=battery,
        extras=extras,
    )


def _query_number(params: Mapping[str, str], name: str) -> float:
    if name not in params:
        raise OsmandError(name, "missing")
    return _number(name, params[name])


def _number(name: str, text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise OsmandError(name, f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise OsmandError(name, f"not a finite number: {text!r}")
    return value


def _flag(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    raise OsmandError(name, f"expected true/false/1/0, got {text!r}")


def _query_time(text: str, local_tz: tzinfo) -> datetime:
    text = text.strip()
    if text.isdigit():
        value = int(text)
        seconds, millis = (value, 0) if value < _MILLIS_THRESHOLD else divmod(value, 1000)
        try:
            return datetime.fromtimestamp(seconds, UTC) + timedelta(milliseconds=millis)
        except (OverflowError, OSError, ValueError):
            raise OsmandError("timestamp", f"out of range: {text!r}") from None
    return _iso_time("timestamp", text, local_tz, "unix seconds, unix milliseconds or ISO 8601")


def _iso_time(name: str, text: str, local_tz: tzinfo, expected: str = "ISO 8601") -> datetime:
    """ISO 8601 (``T`` or space between date and time, ``Z`` or an offset or none)."""
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise OsmandError(name, f"not {expected}: {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=local_tz)
    return parsed.astimezone(UTC)


def _aware(name: str, value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise OsmandError(name, "must be timezone-aware")
    return value.astimezone(UTC)


def _latitude(name: str, value: float) -> float:
    if not -90 <= value <= 90:
        raise OsmandError(name, f"latitude {value} is outside -90..90")
    return value


def _longitude(name: str, value: float) -> float:
    if not -180 <= value <= 180:
        raise OsmandError(name, f"longitude {value} is outside -180..180")
    return value


def _heading(value: float) -> float | None:
    """Degrees from north, folded into 0..360; a negative value means the client does not know."""
    if value < 0:
        return None
    return value % 360


def _unknown_if_negative(value: float) -> float | None:
    return None if value < 0 else value


def _battery_percent(name: str, percent: float) -> float | None:
    if percent < 0:
        return None
    if percent > 100:
        raise OsmandError(name, f"battery {percent}% is above 100")
    return percent


# -- JSON body --------------------------------------------------------------------------------------


def parse_json(body: bytes, *, received_at: datetime | None = None) -> Fix:
    """Read a fix from the JSON body of Traccar Client 9 and later (``Content-Type: application/json``).

    Raises :class:`OsmandError` naming the missing or invalid field by its JSON path
    (``location.coords.latitude``, ...). Without ``location.timestamp`` the fix takes
    ``received_at``.
    """
    try:
        root = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise OsmandError("body", f"not JSON: {error}") from None
    root_object = _object("body", root)

    raw_id = root_object.get("device_id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or not str(raw_id).strip():
        raise OsmandError("device_id", "missing or not a string")
    device_id = str(raw_id).strip()

    location = _object("location", root_object.get("location"))
    coords = _object("location.coords", location.get("coords"))

    lat = _latitude("location.coords.latitude", _json_number(coords, "latitude", "location.coords"))
    lon = _longitude("location.coords.longitude", _json_number(coords, "longitude", "location.coords"))

    if "timestamp" in location:
        stamp = location["timestamp"]
        if not isinstance(stamp, str):
            raise OsmandError("location.timestamp", "not an ISO 8601 string")
        at = _iso_time("location.timestamp", stamp, UTC)
    elif received_at is not None:
        at = _aware("received_at", received_at)
    else:
        raise OsmandError("location.timestamp", "missing")

    extras: dict[str, Extra] = {}
    speed_kmh: float | None = None
    speed_mps = _optional_json_number(coords, "speed", "location.coords")
    if speed_mps is not None:
        extras["speed_mps"] = speed_mps
        speed_kmh = speed_mps * KMH_PER_MPS if speed_mps >= 0 else None
    heading = _optional_json_number(coords, "heading", "location.coords")
    accuracy = _optional_json_number(coords, "accuracy", "location.coords")

    battery: float | None = None
    if "battery" in location:
        battery_object = _object("location.battery", location["battery"])
        level = _optional_json_number(battery_object, "level", "location.battery")
        if level is not None and level >= 0:
            if level > 1:
                raise OsmandError("location.battery.level", f"{level} is above 1")
            battery = level * 100
        charging = battery_object.get("is_charging")
        if isinstance(charging, bool):
            extras["charging"] = charging

    for source, target in (
        ("is_moving", "is_moving"),
        ("mock", "mock"),
        ("event", "event"),
        ("alarm", "alarm"),
        ("uuid", "uuid"),
    ):
        value = location.get(source)
        if isinstance(value, str | bool):
            extras[target] = value
    odometer = location.get("odometer")
    if isinstance(odometer, int | float) and not isinstance(odometer, bool):
        extras["odometer_m"] = odometer
    activity = location.get("activity")
    if isinstance(activity, dict) and isinstance(activity.get("type"), str):
        extras["activity"] = activity["type"]
    client_extras = location.get("extras")
    if isinstance(client_extras, dict):
        for name, value in client_extras.items():
            if isinstance(value, str | int | float | bool):
                extras.setdefault(name, value)

    return Fix(
        device_id=device_id,
        lat=lat,
        lon=lon,
        at=at,
        speed_kmh=speed_kmh,
        heading=None if heading is None else _heading(heading),
        altitude=_optional_json_number(coords, "altitude", "location.coords"),
        accuracy=None if accuracy is None else _unknown_if_negative(accuracy),
        battery=battery,
        extras=extras,
    )


def _object(path: str, value: object) -> dict[str, object]:
    if not isinstance(value, dict):
        raise OsmandError(path, "missing or not a JSON object")
    return value


def _json_number(container: Mapping[str, object], key: str, path: str) -> float:
    value = _optional_json_number(container, key, path)
    if value is None:
        raise OsmandError(f"{path}.{key}", "missing")
    return value


def _optional_json_number(container: Mapping[str, object], key: str, path: str) -> float | None:
    value = container.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise OsmandError(f"{path}.{key}", f"not a number: {value!r}")
    if not math.isfinite(value):
        raise OsmandError(f"{path}.{key}", f"not a finite number: {value!r}")
    return float(value)


# -- encoding, for simulators and tests -------------------------------------------------------------


def encode_query(fix: Fix) -> str:
    """The query string (without ``?``) a client would send for this fix.

    :func:`parse_query` reads it back to an equal fix for any fix it produced itself; the raw
    ``speed_knots`` extra, when present, is sent as ``speed`` unchanged so nothing is lost.
    """
    fields: list[tuple[str, str]] = [
        ("id", fix.device_id),
        ("lat", repr(fix.lat)),
        ("lon", repr(fix.lon)),
        ("timestamp", _encode_time(fix.at)),
    ]
    knots = fix.extras.get("speed_knots")
    if isinstance(knots, int | float) and not isinstance(knots, bool):
        fields.append(("speed", repr(float(knots))))
    elif fix.speed_kmh is not None:
        fields.append(("speed", repr(fix.speed_kmh / KMH_PER_KNOT)))
    for name, value in (
        ("bearing", fix.heading),
        ("altitude", fix.altitude),
        ("accuracy", fix.accuracy),
        ("batt", fix.battery),
    ):
        if value is not None:
            fields.append((name, repr(value)))
    for name, extra in fix.extras.items():
        if name in ("speed_knots", "speed_mps"):
            continue
        query_name = {"charging": "charge"}.get(name, name)
        if query_name in ("id", "deviceid", "lat", "lon", "location", "timestamp", "speed"):
            continue
        fields.append((query_name, _encode_extra(extra)))
    return urlencode(fields)


def _encode_time(at: datetime) -> str:
    if at.microsecond == 0 and 0 <= at.timestamp() < _MILLIS_THRESHOLD:
        return str(int(at.timestamp()))
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _encode_extra(value: Extra) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)
