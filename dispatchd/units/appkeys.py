"""Application keys of the squad-units capability."""

from __future__ import annotations

from aiohttp import web

from dispatchd.channels.gps.intake import GpsIntake
from dispatchd.channels.gps.jt808_server import Jt808Server
from dispatchd.channels.gps.sink import PositionSink
from dispatchd.units.devices import DeviceDirectory

DEVICES = web.AppKey("unit_devices", DeviceDirectory)
SINK = web.AppKey("gps_sink", PositionSink)
INTAKE = web.AppKey("gps_intake", GpsIntake)
JT808_SERVER = web.AppKey("jt808_server", Jt808Server)
# The ports the position servers really bound: {"osmand": 5055, "jt808": 5015} (tests bind port 0).
GPS_PORTS = web.AppKey("gps_ports", dict[str, int])
