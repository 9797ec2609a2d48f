"""One way to ask for cases: a :class:`CaseQuery` (what to filter on, and a keyset page) turned
into SQL on table alias ``i`` of ``incidents``.

The case list, a grid worker's reports, Open311, a caller's history, the verification tasks, the
board and the statistics all ask through it, so "open", "in my jurisdiction" or "in this unit's
subtree" are written once (:data:`dispatchd.incidents.store.OPEN_SQL`, :func:`~dispatchd.incidents.store.visibility_sql`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import asyncpg

from dispatchd.incidents.store import OPEN_SQL, unit_in_scope_sql, visibility_sql
from dispatchd.store.db import like_anywhere
from dispatchd.store.users import User

# The orders a page may come in; keyset paging goes by id within them.
NEWEST_FIRST: Final = "i.id DESC"
CREATED_NEWEST_FIRST: Final = "i.created_at DESC, i.id DESC"
DUE_FIRST: Final = "i.deadline_at NULLS LAST, i.id"
URGENT_FIRST: Final = "i.priority, i.overdue DESC, i.id DESC"


@dataclass(frozen=True)
class CaseQuery:
    """What to ask of the cases; every part is optional and the parts are ANDed."""

    viewer: User | None = None  # only cases this user may see (属地, reporter, handling department)
    unit: str | None = None  # owned or placed within this unit's subtree
    open: bool | None = None  # True: open states only; False: ended ones only
    states: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()  # a code matches itself and its sub-categories
    priorities: tuple[str, ...] = ()
    channels: tuple[str, ...] = ()  # reported through any of them
    first_channel: str | None = None  # first reported through it (Open311's own requests)
    overdue: bool | None = None
    bbox: tuple[float, float, float, float] | None = None  # min_lon, min_lat, max_lon, max_lat
    text: str | None = None  # in number, description, address or caller
    reporter_id: int | None = None
    grid_or_reporter: tuple[str, int] | None = None  # a grid worker's cases: their grid, or theirs
    department: str | None = None  # handled by this department (lead or co-handling)
    callers: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()
    created_from: datetime | None = None  # inclusive
    created_to: datetime | None = None  # exclusive
    order: str = NEWEST_FIRST
    limit: int | None = 50
    before: int | None = None  # keyset page: ids below this one (with NEWEST_FIRST)

    def where(self, args: list[Any]) -> str:
        """The WHERE clause (without the keyword); appends its parameters to ``args``."""
        clauses: list[str] = ["TRUE"]

        def param(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if self.viewer is not None:
            clauses.append(visibility_sql(self.viewer, args))
        if self.unit is not None:
            clauses.append(unit_in_scope_sql(self.unit, args))
        if self.open is not None:
            clauses.append(OPEN_SQL if self.open else f"NOT {OPEN_SQL}")
        if self.states:
            clauses.append(f"i.state = ANY({param(list(self.states))}::text[])")
        if self.categories:
            n = param(list(self.categories))
            clauses.append(
                f"(i.category = ANY({n}::text[]) OR EXISTS (SELECT 1 FROM unnest({n}::text[]) AS c(code)"
                " WHERE i.category LIKE c.code || '.%'))"
            )
        if self.priorities:
            clauses.append(f"i.priority = ANY({param(list(self.priorities))}::text[])")
        if self.channels:
            clauses.append(f"i.channels && {param(list(self.channels))}::text[]")
        if self.first_channel is not None:
            clauses.append(f"i.channel = {param(self.first_channel)}")
        if self.overdue is not None:
            clauses.append(f"i.overdue = {param(self.overdue)}")
        if self.bbox is not None:
            min_lon, min_lat, max_lon, max_lat = self.bbox
            clauses.append(
                f"i.lat BETWEEN {param(min_lat)} AND {param(max_lat)}"
                f" AND i.lon BETWEEN {param(min_lon)} AND {param(max_lon)}"
            )
        if self.text:
            n = param(like_anywhere(self.text))
            clauses.append(
                f"(i.number ILIKE {n} OR i.description ILIKE {n} OR coalesce(i.address, '') ILIKE {n}"
                f" OR coalesce(i.caller, '') ILIKE {n})"
            )
        if self.reporter_id is not None:
            clauses.append(f"i.reporter_id = {param(self.reporter_id)}")
        if self.grid_or_reporter is not None:
            grid, reporter = self.grid_or_reporter
            clauses.append(f"(i.grid = {param(grid)} OR i.reporter_id = {param(reporter)})")
        if self.department is not None:
            n = param(self.department)
            clauses.append(f"(i.lead_department = {n} OR {n} = ANY(i.co_departments))")
        if self.callers:
            clauses.append(f"i.caller = ANY({param(list(self.callers))}::text[])")
        if self.numbers:
            clauses.append(f"i.number = ANY({param(list(self.numbers))}::text[])")
        if self.created_from is not None:
            clauses.append(f"i.created_at >= {param(self.created_from)}")
        if self.created_to is not None:
            clauses.append(f"i.created_at < {param(self.created_to)}")
        if self.before is not None:
            clauses.append(f"i.id < {param(self.before)}")
        return " AND ".join(clauses[1:] or clauses)

    def sql(self, args: list[Any], columns: str = "i.*") -> str:
        """The whole SELECT, one row more than ``limit`` (to know whether a next page exists)."""
        sql = f"SELECT {columns} FROM incidents i WHERE {self.where(args)} ORDER BY {self.order}"
        if self.limit is not None:
            args.append(self.limit + 1)
            sql += f" LIMIT ${len(args)}"
        return sql


async def find(conn: asyncpg.Connection, query: CaseQuery) -> tuple[list[asyncpg.Record], int | None]:
    """The page of cases ``query`` asks for, and the id to continue before (None on the last page)."""
    args: list[Any] = []
    rows: list[asyncpg.Record] = await conn.fetch(query.sql(args), *args)
    if query.limit is None or len(rows) <= query.limit:
        return rows, None
    page = rows[: query.limit]
    return page, (page[-1]["id"] if page else None)

