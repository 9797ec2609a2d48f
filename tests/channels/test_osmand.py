"""OsmAnd / Traccar Client HTTP protocol: query and form fields, the JSON body, and encoding back."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from urllib.parse import parse_qsl

import pytest

from dispatchd.channels.gps.osmand import (
    KMH_PER_KNOT,
    Fix,
    OsmandError,
    encode_query,
    parse_json,
    parse_query,
)

BEIJING = timezone(timedelta(hours=8))
RECEIVED = datetime(2026, 5, 3, 8, 0, 30, tzinfo=UTC)


def query(text: str) -> dict[str, str]:
    """The fields of a query string, URL-decoded, as the HTTP layer hands them over."""
    return dict(parse_qsl(text, keep_blank_values=True))


# -- query and form fields --------------------------------------------------------------------------


def test_query_with_every_modelled_field() -> None:
    """A full OsmAnd request fills every Fix field with the right units."""
    fix = parse_query(
        query(
            "id=squad-07&lat=30.259244&lon=120.130633&timestamp=1777795200"
            "&speed=10&bearing=271.5&altitude=12.5&accuracy=4.8&batt=87"
        )
    )
    assert fix == Fix(
        device_id="squad-07",
        lat=30.259244,
        lon=120.130633,
        at=datetime(2026, 5, 3, 8, 0, tzinfo=UTC),
        speed_kmh=pytest.approx(18.52),  # type: ignore[arg-type]
        heading=271.5,
        altitude=12.5,
        accuracy=4.8,
        battery=87.0,
        extras={"speed_knots": 10.0},
    )


def test_query_speed_is_knots_converted_to_kmh_with_the_raw_kept() -> None:
    """speed=40 (knots, as Traccar documents for OsmAnd) is 74.08 km/h, and 40 stays in extras."""
    fix = parse_query(query("id=1&lat=30&lon=120&timestamp=1777795200&speed=40"))
    assert fix.speed_kmh == pytest.approx(40 * 1.852)
    assert fix.extras["speed_knots"] == 40.0


def test_query_negative_speed_means_unknown() -> None:
    """A client that sends speed=-1 has no speed; the fix says None, not a negative speed."""
    fix = parse_query(query("id=1&lat=30&lon=120&timestamp=1777795200&speed=-1&bearing=-1&accuracy=-1"))
    assert (fix.speed_kmh, fix.heading, fix.accuracy) == (None, None, None)


def test_query_millisecond_timestamp() -> None:
    """A 13-digit timestamp is unix milliseconds, kept to the millisecond."""
    fix = parse_query(query("id=902064&lat=42.06288&lon=-88.23412&timestamp=1442068686579"))
    assert fix.at == datetime(2015, 9, 12, 14, 38, 6, 579000, tzinfo=UTC)


def test_query_second_timestamp() -> None:
    """A 10-digit timestamp is unix seconds."""
    fix = parse_query(query("id=123456&timestamp=1377177267&lat=60.0&lon=30.0"))
    assert fix.at == datetime(2013, 8, 22, 13, 14, 27, tzinfo=UTC)


def test_query_iso_timestamp() -> None:
    """An ISO 8601 timestamp with Z or an offset is read as given and returned in UTC."""
    zulu = parse_query(query("id=1&lat=42.06288&lon=-88.23412&timestamp=2016-01-27T18%3A55%3A47Z"))
    assert zulu.at == datetime(2016, 1, 27, 18, 55, 47, tzinfo=UTC)
    offset = parse_query(query("id=1&lat=30&lon=120&timestamp=2026-05-03T16%3A00%3A00%2B08%3A00"))
    assert offset.at == datetime(2026, 5, 3, 8, 0, tzinfo=UTC)
    assert offset.at.tzinfo is UTC


def test_query_local_date_time_uses_the_given_zone() -> None:
    """'yyyy-MM-dd HH:mm:ss' has no zone; it is read in local_tz (UTC unless told)."""
    fields = query("id=1&lat=30&lon=120&timestamp=2026-05-03+16%3A00%3A00")
    assert parse_query(fields).at == datetime(2026, 5, 3, 16, 0, tzinfo=UTC)
    assert parse_query(fields, local_tz=BEIJING).at == datetime(2026, 5, 3, 8, 0, tzinfo=UTC)


def test_query_without_timestamp_takes_received_at() -> None:
    """No timestamp: the caller's receive time is used, and without one the request is refused."""
    fields = query("id=1&lat=30&lon=120")
    assert parse_query(fields, received_at=RECEIVED).at == RECEIVED
    with pytest.raises(OsmandError) as refused:
        parse_query(fields)
    assert refused.value.field == "timestamp"


def test_query_garbage_timestamp_is_refused() -> None:
    """A timestamp that is neither unix time nor ISO 8601 names the field."""
    with pytest.raises(OsmandError, match="timestamp: not unix seconds"):
        parse_query(query("id=1&lat=30&lon=120&timestamp=yesterday"))


def test_query_aliases_deviceid_heading_and_location() -> None:
    """deviceid stands for id, heading for bearing, and location=lat,lon for lat and lon."""
    fix = parse_query(query("deviceid=123456&timestamp=1377177267&location=60.0,30.0&heading=90"))
    assert (fix.device_id, fix.lat, fix.lon, fix.heading) == ("123456", 60.0, 30.0, 90.0)


def test_query_keeps_typed_and_unknown_extras() -> None:
    """hdop is a number, charge and valid are booleans, anything else is kept as sent."""
    fix = parse_query(
        query(
            "id=1&lat=30&lon=120&timestamp=1777795200&hdop=6.0&charge=true&valid=0"
            "&alarm=sos&driverUniqueId=0571-88&ignition=true"
        )
    )
    assert fix.extras == {
        "hdop": 6.0,
        "charging": True,
        "valid": False,
        "alarm": "sos",
        "driverUniqueId": "0571-88",
        "ignition": "true",
    }


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        ("lat=30&lon=120&timestamp=1777795200", "id", "missing"),
        ("id=&lat=30&lon=120&timestamp=1777795200", "id", "missing"),
        ("id=1&lat=91&lon=120&timestamp=1777795200", "lat", "outside -90..90"),
        ("id=1&lat=-90.5&lon=120&timestamp=1777795200", "lat", "outside -90..90"),
        ("id=1&lat=30&lon=180.1&timestamp=1777795200", "lon", "outside -180..180"),
        ("id=1&lat=abc&lon=120&timestamp=1777795200", "lat", "not a number"),
        ("id=1&lat=nan&lon=120&timestamp=1777795200", "lat", "not a finite number"),
        ("id=1&lat=30&timestamp=1777795200", "lon", "missing"),
        ("id=1&timestamp=1777795200", "lat", "missing"),
        ("id=1&location=30;120&timestamp=1777795200", "location", "expected 'lat,lon'"),
        ("id=1&location=95,120&timestamp=1777795200", "location", "outside -90..90"),
        ("id=1&lat=30&lon=120&timestamp=1777795200&speed=fast", "speed", "not a number"),
        ("id=1&lat=30&lon=120&timestamp=1777795200&batt=120", "batt", "above 100"),
        ("id=1&lat=30&lon=120&timestamp=1777795200&charge=maybe", "charge", "expected true/false"),
    ],
)
def test_query_refuses_missing_or_invalid_fields(fields: str, field: str, message: str) -> None:
    """Each bad request raises OsmandError naming the field and saying what is wrong."""
    with pytest.raises(OsmandError, match=re.escape(message)) as refused:
        parse_query(query(fields))
    assert refused.value.field == field
    assert str(refused.value).startswith(f"{field}: ")
    assert isinstance(refused.value, ValueError)


# -- JSON body (Traccar Client 9+) ----------------------------------------------------------------------

TRACCAR_CLIENT_BODY = {
    "location": {
        "event": "motionchange",
        "is_moving": True,
        "uuid": "0e9a2473-a9a7-4c00-997b-fb97d2154e75",
        "timestamp": "2026-05-03T08:00:05.250Z",
        "odometer": 15230.5,
        "coords": {
            "latitude": 30.259244,
            "longitude": 120.130633,
            "accuracy": 3.8,
            "speed": 12.5,
            "speed_accuracy": 0.26,
            "heading": 63,
            "heading_accuracy": 0.28,
            "altitude": 35.7,
            "altitude_accuracy": 3.8,
        },
        "activity": {"type": "in_vehicle", "confidence": 100},
        "battery": {"is_charging": False, "level": 0.79},
        "extras": {"alarm": "sos", "squad": "西湖-3"},
    },
    "device_id": "48241179",
}


def test_json_traccar_client_body() -> None:
    """A Traccar Client 9 body gives m/s converted to km/h, battery 0..1 as percent, and its extras."""
    fix = parse_json(json.dumps(TRACCAR_CLIENT_BODY, ensure_ascii=False).encode())
    assert fix.device_id == "48241179"
    assert (fix.lat, fix.lon) == (30.259244, 120.130633)
    assert fix.at == datetime(2026, 5, 3, 8, 0, 5, 250000, tzinfo=UTC)
    assert fix.speed_kmh == pytest.approx(45.0)
    assert (fix.heading, fix.altitude, fix.accuracy) == (63.0, 35.7, 3.8)
    assert fix.battery == pytest.approx(79.0)
    assert fix.extras == {
        "speed_mps": 12.5,
        "charging": False,
        "is_moving": True,
        "event": "motionchange",
        "uuid": "0e9a2473-a9a7-4c00-997b-fb97d2154e75",
        "odometer_m": 15230.5,
        "activity": "in_vehicle",
        "alarm": "sos",
        "squad": "西湖-3",
    }


def test_json_unknown_values_from_the_sdk_become_none() -> None:
    """speed, heading and battery level of -1 (the SDK's 'unknown') give None, not negative values."""
    body = {
        "location": {
            "timestamp": "2025-05-09T04:11:30.579Z",
            "coords": {
                "latitude": 37.785834,
                "longitude": -122.406417,
                "accuracy": 5,
                "speed": -1,
                "heading": -1,
            },
            "battery": {"level": -1, "is_charging": False},
            "mock": True,
        },
        "device_id": 658765,
    }
    fix = parse_json(json.dumps(body).encode())
    assert (fix.speed_kmh, fix.heading, fix.battery, fix.altitude) == (None, None, None, None)
    assert fix.device_id == "658765"
    assert fix.extras["mock"] is True


def test_json_without_timestamp_takes_received_at() -> None:
    """A body with no location.timestamp uses the caller's receive time, or is refused without one."""
    body = json.dumps({"device_id": "1", "location": {"coords": {"latitude": 30, "longitude": 120}}}).encode()
    assert parse_json(body, received_at=RECEIVED).at == RECEIVED
    with pytest.raises(OsmandError, match=r"location\.timestamp: missing"):
        parse_json(body)


def with_changes(path: tuple[str, ...], value: object) -> bytes:
    """The Traccar Client body with one field replaced (or removed when value is ...)."""
    body = json.loads(json.dumps(TRACCAR_CLIENT_BODY))
    target = body
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return json.dumps(body).encode()


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (b"{not json", "body", "not JSON"),
        (b"\xff\xfe", "body", "not JSON"),
        (b"[1, 2]", "body", "not a JSON object"),
        (with_changes(("device_id",), ...), "device_id", "missing"),
        (with_changes(("device_id",), True), "device_id", "not a string"),
        (with_changes(("location",), ...), "location", "missing"),
        (with_changes(("location", "coords"), ...), "location.coords", "missing"),
        (with_changes(("location", "coords", "latitude"), ...), "location.coords.latitude", "missing"),
        (
            with_changes(("location", "coords", "latitude"), "30.2"),
            "location.coords.latitude",
            "not a number",
        ),
        (with_changes(("location", "coords", "latitude"), 95.0), "location.coords.latitude", "outside"),
        (with_changes(("location", "coords", "longitude"), -181), "location.coords.longitude", "outside"),
        (with_changes(("location", "coords", "speed"), True), "location.coords.speed", "not a number"),
        (with_changes(("location", "timestamp"), 1777795200), "location.timestamp", "ISO 8601"),
        (with_changes(("location", "timestamp"), "tomorrow"), "location.timestamp", "ISO 8601"),
        (with_changes(("location", "battery", "level"), 79), "location.battery.level", "above 1"),
    ],
)
def test_json_refuses_missing_or_invalid_fields(body: bytes, field: str, message: str) -> None:
    """Each bad body raises OsmandError naming the JSON path of the field at fault."""
    with pytest.raises(OsmandError, match=re.escape(message)) as refused:
        parse_json(body)
    assert refused.value.field == field


# -- encoding -------------------------------------------------------------------------------------------


def test_encode_query_round_trips_a_hand_built_fix() -> None:
    """A simulator's fix, sent as a query, reads back with the same values (speed via knots)."""
    fix = Fix(
        device_id="squad-07",
        lat=30.259244,
        lon=-120.130633,
        at=datetime(2026, 5, 3, 8, 0, 5, 250000, tzinfo=UTC),
        speed_kmh=45.0,
        heading=63.0,
        altitude=-3.5,
        accuracy=3.8,
        battery=79.0,
        extras={"charging": True, "alarm": "sos"},
    )
    text = encode_query(fix)
    back = parse_query(query(text))
    assert back.speed_kmh == pytest.approx(45.0)
    assert back.extras["speed_knots"] == pytest.approx(45.0 / KMH_PER_KNOT)
    assert back.extras["charging"] is True and back.extras["alarm"] == "sos"
    assert (back.device_id, back.lat, back.lon, back.at) == (fix.device_id, fix.lat, fix.lon, fix.at)
    assert (back.heading, back.altitude, back.accuracy, back.battery) == (63.0, -3.5, 3.8, 79.0)


def test_encode_query_is_exact_for_parsed_fixes() -> None:
    """parse_query(encode_query(fix)) == fix for a fix parse_query made, raw knots included."""
    original = parse_query(
        query(
            "id=123456789012345&timestamp=1504763810&lat=40.7232948571&lon=-74.0061408571"
            "&bearing=7.19889788244&speed=40&hdop=0.9&charge=false&valid=1&ignition=true&rpm=933"
        )
    )
    assert parse_query(query(encode_query(original))) == original


def test_encode_query_uses_unix_seconds_for_whole_seconds() -> None:
    """A whole-second time is sent as unix seconds, as OsmAnd does."""
    fix = Fix(device_id="1", lat=30.0, lon=120.0, at=datetime(2026, 5, 3, 8, 0, tzinfo=UTC))
    assert query(encode_query(fix)) == {"id": "1", "lat": "30.0", "lon": "120.0", "timestamp": "1777795200"}


def test_fix_requires_an_aware_time() -> None:
    """A naive datetime would silently mean server-local time, so Fix refuses it."""
    with pytest.raises(ValueError, match="timezone-aware"):
        Fix(device_id="1", lat=30.0, lon=120.0, at=datetime(2026, 5, 3, 8, 0))
