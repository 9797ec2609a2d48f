"""Typed slots of the squad-units capability on the service context.

Units know nothing of who feeds them positions or who acts on their status: the position pipeline
registers itself as :data:`POSITIONS`, and orders add a reaction to status changes to
:data:`STATUS_REACTIONS` (the unit returning completes its accepted orders).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol

import asyncpg

from dispatchd.context import Context, Slot
from dispatchd.domain.units import Position
from dispatchd.store.users import User
from dispatchd.units.devices import DeviceDirectory


class PositionWriter(Protocol):
    """Where fixes go (the batching sink of :mod:`dispatchd.channels.gps.sink`)."""

    def submit(self, fix: Position, now: datetime) -> str:
        """Judge and queue a fix; return its verdict (live, track_only or why it was refused)."""
        ...

    async def flush_pending(self) -> None:
        """Write every queued fix now."""
        ...


# (context, connection in the change's transaction, unit id, new status, who) -> None
StatusReaction = Callable[[Context, asyncpg.Connection, int, str, "User | str | None"], Awaitable[None]]

DEVICES = Slot[DeviceDirectory]("unit_devices")
# The ports the position servers really bound: {"osmand": 5055, "jt808": 5015} (tests bind port 0).
GPS_PORTS = Slot[dict[str, int]]("gps_ports")
POSITIONS = Slot[PositionWriter]("unit_positions")
STATUS_REACTIONS = Slot[list[StatusReaction]]("unit_status_reactions")
