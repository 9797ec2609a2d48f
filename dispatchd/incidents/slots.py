"""Typed slots of the case service on the service context.

The case service knows nothing of what else belongs to a case; capabilities that keep such things
register a reaction in :data:`CASE_ENDED`, run in the transaction that ends the case (closed,
evaluated, rejected, merged): orders cancel the case's open orders to squads. What they add to the
case as the API returns it is a :data:`CASE_EXTRAS` entry (the emergency plan running on it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import asyncpg

from dispatchd.context import Context, Slot
from dispatchd.domain.incident import Actor

# (context, connection in the case's transaction, the case row after the change, who) -> None
CaseReaction = Callable[[Context, asyncpg.Connection, Mapping[str, Any], Actor], Awaitable[None]]

CASE_ENDED = Slot[list[CaseReaction]]("case_ended")

# More of a case as the API returns it, from capabilities above this one (an emergency plan running
# on it): name -> (context, connection, the case row, the viewer or None) -> the value of that key.
CaseExtra = Callable[[Context, asyncpg.Connection, Mapping[str, Any], Any], Awaitable[Any]]
CASE_EXTRAS = Slot[dict[str, CaseExtra]]("case_extras")
