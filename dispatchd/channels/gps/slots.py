"""Typed slots of the position pipeline on the service context."""

from __future__ import annotations

from dispatchd.channels.gps.intake import GpsIntake
from dispatchd.channels.gps.jt808_server import Jt808Server
from dispatchd.channels.gps.sink import PositionSink
from dispatchd.context import Slot

SINK = Slot[PositionSink]("gps_sink")
INTAKE = Slot[GpsIntake]("gps_intake")
JT808_SERVER = Slot[Jt808Server]("jt808_server")
