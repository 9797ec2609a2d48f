"""The OsmAnd / Traccar Client HTTP server, on its own port (``[osmand] port``, 5055 as in Traccar).

Accepted, on any path:

* ``GET`` or ``POST`` with the fields in the query string (OsmAnd, older Traccar Client), or
  ``POST`` with ``application/x-www-form-urlencoded`` fields; ``id, lat, lon, timestamp, speed``
  (knots), ``bearing, altitude, accuracy, batt`` as Traccar documents them
  (:func:`dispatchd.channels.gps.osmand.parse_query`);
* ``POST`` with ``application/json``: the body of Traccar Client 9 and later
  (:func:`~dispatchd.channels.gps.osmand.parse_json`), also with ``location`` as a list (a batch).

The device key goes in the query or form field ``key`` (put it in the client's server URL:
``http://host:5055/?key=…``), or in ``Authorization: Bearer …`` or as the password of HTTP Basic.

Answers: 200 when the fixes are stored, or held while PostgreSQL is unreachable (or were filtered
out: a client must not retry those), 400 naming the bad field (JSON nested deeper than 32 levels
included), 401 for an unknown device or a wrong key, 405 with Allow for another method, 429 past the
per-device rate, 503 with Retry-After when the fix cannot be taken now (the outage buffer is full, or
the device is not known yet and PostgreSQL is unreachable): the client sends it again later.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
from collections.abc import AsyncGenerator
from typing import Any

import structlog
from aiohttp import web

from dispatchd.channels.gps.intake import GpsIntake
from dispatchd.channels.gps.osmand import Fix, OsmandError, parse_json, parse_query
from dispatchd.channels.gps.sink import HELD_BACK
from dispatchd.context import Context
from dispatchd.domain.units import Position
from dispatchd.store.outage import OUTAGES, store_failure
from dispatchd.units.devices import Device
from dispatchd.validate import MAX_DEPTH, json_depth, text_is_storable
from dispatchd.web import headers
from dispatchd.web.appkeys import CTX
from dispatchd.web.server import ConnectionGuard, http_runner, request_finished, request_started

log = structlog.get_logger("dispatchd.gps.osmand")

INTAKE = web.AppKey("gps_intake", GpsIntake)
_SEEN = web.AppKey("osmand_seen", dict[tuple[Any, str], None])
_MAX_BODY = 256 * 1024
_SOS = {"sos", "alarm", "panic", "emergency"}


def _peer(request: web.Request) -> Any:
    transport = request.transport
    return transport.get_extra_info("peername") if transport is not None else None


def _once(request: web.Request, event: str, **fields: Any) -> None:
    """Log ``event`` once per connection (a misbehaving client cannot flood the log)."""
    seen = request.app[_SEEN]
    key = (_peer(request), event)
    if key in seen:
        return
    if len(seen) > 10_000:
        seen.clear()
    seen[key] = None
    log.info(event, peer=str(key[0]), **fields)


def _text(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=message + "\n", headers=headers)


def _header_key(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    if scheme.lower() == "basic" and value.strip():
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        return decoded.partition(":")[2] or None
    return None


async def _read_fixes(request: web.Request, received: Any) -> tuple[list[Fix], str | None]:
    """The fixes of the request and the key it carries; raises OsmandError for bad input."""
    params = {k: request.query.get(k, "") for k in request.query}
    key = params.pop("key", None)
    if not all(text_is_storable(t) for t in (*params, *params.values())):
        raise OsmandError("query", "holds NUL or invalid Unicode")
    if request.method == "POST" and request.content_type == "application/json":
        body = await request.read()
        if json_depth(body) > MAX_DEPTH:
            raise OsmandError("body", f"JSON nested deeper than {MAX_DEPTH} levels")
        try:
            root = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise OsmandError("body", f"not JSON: {str(error)[:100]}") from None
        items = root if isinstance(root, list) else [root]
        fixes: list[Fix] = []
        for item in items[:1000]:
            if isinstance(item, dict) and isinstance(item.get("location"), list):
                for loc in item["location"][:1000]:
                    one = {**item, "location": loc}
                    fixes.append(parse_json(json.dumps(one).encode(), received_at=received))
            else:
                fixes.append(parse_json(json.dumps(item).encode(), received_at=received))
            if isinstance(item, dict) and isinstance(item.get("key"), str) and key is None:
                key = item["key"]
        if not fixes:
            raise OsmandError("location", "missing")
        return fixes, key or _header_key(request)
    if request.method == "POST" and request.content_type == "application/x-www-form-urlencoded":
        form = await request.post()
        for name in form:
            value = form.get(name)
            if isinstance(value, str):
                params.setdefault(name, value)
        key = key or (params.pop("key", None))
        params.pop("key", None)
    if not params:
        raise OsmandError("id", "missing (no fields in the query or form)")
    return [parse_query(params, received_at=received)], key or _header_key(request)


def _position(device: Device, fix: Fix) -> Position:
    return Position(
        unit_id=device.unit_id,
        device_id=device.id,
        lat=fix.lat,
        lon=fix.lon,
        at=fix.at,
        source="osmand",
        speed_kmh=fix.speed_kmh,
        heading=fix.heading,
        altitude_m=fix.altitude,
        accuracy_m=fix.accuracy,
        battery=fix.battery,
    )


def _is_sos(fix: Fix) -> bool:
    alarm = fix.extras.get("alarm")
    return isinstance(alarm, str) and alarm.strip().lower() in _SOS


def _retry_later(request: web.Request, message: str) -> web.Response:
    outages = request.app[CTX].get(OUTAGES)
    retry = str(int(outages.retry_after)) if outages is not None else "5"
    return _text(503, message, {"Retry-After": retry})


async def handle(request: web.Request) -> web.StreamResponse:
    request_started(request)
    try:
        return await _handle(request)
    except (web.HTTPException, asyncio.CancelledError):
        raise
    except Exception as exc:
        if store_failure(request.app[CTX], exc) is not None:
            # A store that is down: "retry later", and one log line per outage (the tracker's).
            return _retry_later(request, "temporarily unable to take the position; retry")
        if isinstance(exc, ConnectionError):
            raise  # the phone went away
        if _first(request, "osmand_request_failed"):
            log.exception("osmand_request_failed", peer=str(_peer(request)))
        return _text(500, "internal error")
    finally:
        request_finished(request)


def _first(request: web.Request, event: str) -> bool:
    seen = request.app[_SEEN]
    key = (_peer(request), event)
    if key in seen:
        return False
    seen[key] = None
    return True


async def _handle(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CTX]
    metrics = ctx.metrics
    if request.method not in ("GET", "POST"):
        return _text(405, "method not allowed: send GET or POST", {"Allow": "GET, POST"})
    intake = request.app[INTAKE]
    received = ctx.clock.now()
    try:
        fixes, key = await _read_fixes(request, received)
    except OsmandError as error:
        metrics.rejected_input.labels("osmand").inc()
        _once(request, "osmand_bad_request", field=error.field, error=error.message)
        return _text(400, f"bad request: {error}")
    except web.HTTPException:
        raise
    except (ValueError, UnicodeDecodeError) as error:
        metrics.rejected_input.labels("osmand").inc()
        _once(request, "osmand_bad_request", error=str(error)[:200])
        return _text(400, "bad request: unreadable body")
    require_key = ctx.settings.osmand.require_key
    devices: dict[str, Device] = {}
    for fix in fixes:
        if fix.device_id in devices:
            continue
        device = await intake.devices.find("osmand", fix.device_id)
        if device is None or device.disabled:
            intake.refuse("osmand", "unknown_device")
            _once(request, "osmand_unknown_device", device=fix.device_id[:64])
            return _text(401, "unknown device or wrong key")
        if require_key and not device.secret_matches(key):
            intake.refuse("osmand", "bad_key")
            _once(request, "osmand_bad_key", device=fix.device_id[:64])
            return _text(401, "unknown device or wrong key")
        if not intake.allow(device, "osmand"):
            _once(request, "osmand_rate_limited", device=fix.device_id[:64])
            return _text(429, "too many requests", {"Retry-After": "1"})
        devices[fix.device_id] = device
    if not intake.sink.room(len(fixes), "osmand"):
        # The database is away and the outage buffer is full: nothing of this is kept; send it again.
        return _retry_later(request, "the server cannot hold more positions now; retry")
    held_back = False
    for fix in fixes:
        device = devices[fix.device_id]
        position = _position(device, fix)
        verdict = intake.submit(position, received)
        held_back = held_back or verdict == HELD_BACK
        intake.alarm_state(device, "osmand", _is_sos(fix), position if verdict == "live" else None)
    if not await asyncio.shield(intake.sink.written()):
        return _text(500, "the position could not be stored")
    if held_back:
        # The database is away and the outage buffer is full: this fix was not kept; send it again.
        return _retry_later(request, "the server cannot hold more positions now; retry")
    return web.Response(status=200)


def build_osmand_app(ctx: Context, intake: GpsIntake) -> web.Application:
    sub = web.Application(client_max_size=_MAX_BODY)
    sub[CTX] = ctx
    sub[INTAKE] = intake
    sub[_SEEN] = {}
    sub.router.add_route("*", "/{tail:.*}", handle)
    headers.setup(sub)
    return sub


async def serve_osmand(ctx: Context, intake: GpsIntake, host: str, port: int) -> AsyncGenerator[int, None]:
    """Run the OsmAnd server while the generator is suspended; yields the bound port. Its connections
    are guarded like the HTTP port's ([http] timeouts, [osmand] max_connections_per_address)."""
    http = ctx.settings.http
    guard = ConnectionGuard(
        "osmand",
        ctx.metrics,
        header_timeout=http.header_timeout,
        body_timeout=http.body_timeout,
        max_per_address=ctx.settings.osmand.max_connections_per_address,
    )
    runner = http_runner(
        build_osmand_app(ctx, intake),
        guard,
        keepalive_timeout=http.keepalive_timeout,
        access_log=None,
        handle_signals=False,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port, reuse_address=True, reuse_port=ctx.settings.osmand.reuse_port or None)
        await site.start()
        bound = int(runner.addresses[0][1])
        log.info("osmand_listening", address=f"http://{host}:{bound}")
        yield bound
    finally:
        await runner.cleanup()
