"""Typed slots of the plans capability on the service context."""

from __future__ import annotations

import asyncio

from dispatchd.context import Slot
from dispatchd.domain.plans import Plan

# The plans read from config/plans/ at start-up (validated before the stores open).
FILE_PLANS = Slot[tuple[Plan, ...]]("plan_files")
# Set when notices wait to be sent (SMS) or escalations may be due: wakes the notices loop at once.
NOTICES_WAKE = Slot[asyncio.Event]("plan_notices_wake")
