"""Typed slots of the case service on the service context.

The case service knows nothing of what else belongs to a case; capabilities that keep such things
register a reaction in :data:`CASE_ENDED`, run in the transaction that ends the case (closed,
evaluated, rejected, merged): orders cancel the case's open orders to squads.
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
