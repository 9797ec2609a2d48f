"""Application keys of the squad-units capability."""

from __future__ import annotations

from aiohttp import web

from dispatchd.units.devices import DeviceDirectory

DEVICES = web.AppKey("unit_devices", DeviceDirectory)
# The ports the position servers really bound: {"osmand": 5055, "jt808": 5015} (tests bind port 0).
GPS_PORTS = web.AppKey("gps_ports", dict[str, int])
