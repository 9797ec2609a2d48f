"""The ``incidents`` section of the board snapshot: open cases and counters of a jurisdiction."""

from __future__ import annotations

from datetime import datetime, time
from typing import Any, Final

from dispatchd.clock import LOCAL_TZ
from dispatchd.context import Context
from dispatchd.incidents import store
from dispatchd.incidents.query import URGENT_FIRST, CaseQuery, find

# The board shows at most this many open cases (most urgent first); counters count them all.
BOARD_LIMIT: Final = 500


def _root(ctx: Context, codes: frozenset[str]) -> str | None:
    """The top unit of a jurisdiction (a unit and everything below it)."""
    tree = ctx.orgs
    for code in codes:
        parent = tree.units[code].parent if code in tree else None
        if parent is None or parent not in codes:
            return code
    return None


async def incidents_section(ctx: Context, codes: frozenset[str]) -> dict[str, Any]:
    """Open cases of the jurisdiction (P1 first, then overdue, then newest) and today's counters."""
    root = _root(ctx, codes)
    if root is None:
        return {"open": [], "counters": {}}
    open_states = store.OPEN_SQL
    today = datetime.combine(ctx.clock.now().astimezone(LOCAL_TZ).date(), time(0), LOCAL_TZ)
    args: list[Any] = []
    scope = CaseQuery(unit=root).where(args)
    args.append(today)
    since = f"${len(args)}"
    async with ctx.pool.acquire() as conn:
        rows, _ = await find(conn, CaseQuery(unit=root, open=True, order=URGENT_FIRST, limit=BOARD_LIMIT))
        counts = await conn.fetchrow(
            f"SELECT count(*) FILTER (WHERE {open_states}) AS open,"
            f" count(*) FILTER (WHERE {open_states} AND i.overdue) AS overdue,"
            f" count(*) FILTER (WHERE i.state = 'reported') AS to_accept,"
            f" count(*) FILTER (WHERE i.created_at >= {since}) AS received_today,"
            f" count(*) FILTER (WHERE i.closed_at >= {since}) AS closed_today"
            f" FROM incidents i WHERE {scope}",
            *args,
        )
        channels = await conn.fetch(
            "SELECT i.channel AS channel, count(*) AS n FROM incidents i"
            f" WHERE {scope} AND i.created_at >= {since} GROUP BY i.channel",
            *args,
        )
    return {
        "open": [store.summary_json(r, ctx.orgs, ctx.taxonomy) for r in rows],
        "counters": {
            **dict(counts),
            "received_today_by_channel": {r["channel"]: r["n"] for r in channels},
        },
    }
