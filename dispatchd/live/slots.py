"""Typed slots of the live capability on the service context (change feed, hubs, order timers)."""

from __future__ import annotations

from dispatchd.context import Slot
from dispatchd.live.board import BoardHub
from dispatchd.live.feed import Feed
from dispatchd.live.orders import OrderTimers
from dispatchd.live.squad import SquadHub

FEED = Slot[Feed]("live_feed")
BOARD_HUB = Slot[BoardHub]("live_board_hub")
SQUAD_HUB = Slot[SquadHub]("live_squad_hub")
ORDER_TIMERS = Slot[OrderTimers]("live_order_timers")
