"""Typed slots of the squad-units capability on the service context."""

from __future__ import annotations

from dispatchd.channels.gps.intake import GpsIntake
from dispatchd.channels.gps.jt808_server import Jt808Server
from dispatchd.channels.gps.sink import PositionSink
from dispatchd.context import Slot
from dispatchd.units.devices import DeviceDirectory

DEVICES = Slot[DeviceDirectory]("unit_devices")
SINK = Slot[PositionSink]("gps_sink")
INTAKE = Slot[GpsIntake]("gps_intake")
JT808_SERVER = Slot[Jt808Server]("jt808_server")
# The ports the position servers really bound: {"osmand": 5055, "jt808": 5015} (tests bind port 0).
GPS_PORTS = Slot[dict[str, int]]("gps_ports")
