"""Application keys of the live capability (change feed, board and squad hubs, orders)."""

from __future__ import annotations

from aiohttp import web

from dispatchd.live.board import BoardHub
from dispatchd.live.feed import Feed
from dispatchd.live.orders import OrderTimers
from dispatchd.live.squad import SquadHub

FEED = web.AppKey("live_feed", Feed)
BOARD_HUB = web.AppKey("live_board_hub", BoardHub)
SQUAD_HUB = web.AppKey("live_squad_hub", SquadHub)
ORDER_TIMERS = web.AppKey("live_order_timers", OrderTimers)
