"""Statistics of the closed loop per unit and period — the figures the province measures.

The cohort is the cases *received* in ``[start, end)`` whose owning unit or place lies in the
unit's subtree; every figure describes what became of that cohort so far:

* ``received``, ``accepted`` (立案), ``rejected``, ``merged``, ``closed``, ``open``;
* ``resolution_rate`` = closed ÷ accepted (矛盾化解率);
* ``closed_township_or_below`` and its share of closed cases (owned at township, community or
  grid level when closed — Zhejiang's "more than 95% solved at township level or below");
* ``overdue`` (went past a step's deadline at least once) and ``overdue_now`` (overdue and open);
* ``median_dispatch_s`` (received → first dispatch) and ``median_close_s`` (received → closed),
  overall and per handling department (lead and co-handlers);
* satisfaction from the callback: evaluated count, mean 1–5, share satisfied (4 or 5, 群众满意率);
* breakdowns by child unit, department, top-level category, channel and priority, and the
  received count of the same period one year earlier (year-on-year change).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Final

import asyncpg

from dispatchd.context import Context, Slot
from dispatchd.domain.orgs import OrgTree
from dispatchd.domain.taxonomy import Taxonomy
from dispatchd.incidents.query import CaseQuery
from dispatchd.incidents.store import OPEN_SQL

# Figures other capabilities add to ``GET /api/v1/stats`` under their own key (patrol compliance,
# call answering …): ``async fn(conn, org, start, end) -> JSON``, registered with
# :func:`register_section` when the capability is set up.
StatsSection = Callable[[asyncpg.Connection, str, datetime, datetime], Awaitable[Any]]
STATS_SECTIONS: Final = Slot[dict[str, StatsSection]]("stats_sections")


def register_section(ctx: Context, name: str, section: StatsSection) -> None:
    """Add ``name`` to the statistics of every unit and period (whatever the setup order)."""
    if STATS_SECTIONS not in ctx:
        ctx[STATS_SECTIONS] = {}
    ctx[STATS_SECTIONS][name] = section


_LOW_LEVELS: Final = "('township', 'community', 'grid')"

_FIGURES: Final = f"""
    count(DISTINCT i.id) AS received,
    count(DISTINCT i.id) FILTER (WHERE i.accepted_at IS NOT NULL) AS accepted,
    count(DISTINCT i.id) FILTER (WHERE i.state = 'rejected') AS rejected,
    count(DISTINCT i.id) FILTER (WHERE i.state = 'merged') AS merged,
    count(DISTINCT i.id) FILTER (WHERE i.closed_at IS NOT NULL) AS closed,
    count(DISTINCT i.id) FILTER (WHERE i.closed_level IN {_LOW_LEVELS}) AS closed_low,
    count(DISTINCT i.id) FILTER (WHERE {OPEN_SQL}) AS open,
    count(DISTINCT i.id) FILTER (WHERE i.ever_overdue) AS overdue,
    count(DISTINCT i.id) FILTER (WHERE i.overdue AND {OPEN_SQL}) AS overdue_now,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM i.dispatched_at - i.created_at)::float8)
        AS median_dispatch_s,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM i.closed_at - i.created_at)::float8)
        AS median_close_s,
    count(i.satisfaction) AS evaluated,
    avg(i.satisfaction)::float8 AS satisfaction_mean,
    count(*) FILTER (WHERE i.satisfaction >= 4) AS satisfied,
    count(DISTINCT i.id) FILTER (WHERE i.urged > 0) AS urged,
    count(DISTINCT i.id) FILTER (WHERE i.supervised) AS supervised,
    count(DISTINCT i.id) FILTER (WHERE i.returns > 0) AS returned,
    count(DISTINCT i.id) FILTER (WHERE i.extensions > 0) AS extended,
    count(DISTINCT i.id) FILTER (WHERE i.callbacks > 0) AS called_back
"""

CSV_COLUMNS: Final[tuple[str, ...]] = (
    "section",
    "code",
    "name",
    "received",
    "accepted",
    "rejected",
    "merged",
    "closed",
    "open",
    "resolution_rate",
    "closed_township_or_below",
    "township_or_below_share",
    "overdue",
    "overdue_now",
    "median_dispatch_s",
    "median_close_s",
    "evaluated",
    "satisfaction_mean",
    "satisfied_share",
    "urged",
    "supervised",
    "returned",
    "extended",
    "called_back",
)


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _seconds(value: float | None) -> float | None:
    return round(value, 1) if value is not None else None


def _figures(row: Any) -> dict[str, Any]:
    return {
        "received": row["received"],
        "accepted": row["accepted"],
        "rejected": row["rejected"],
        "merged": row["merged"],
        "closed": row["closed"],
        "open": row["open"],
        "resolution_rate": _ratio(row["closed"], row["accepted"]),
        "closed_township_or_below": row["closed_low"],
        "township_or_below_share": _ratio(row["closed_low"], row["closed"]),
        "overdue": row["overdue"],
        "overdue_now": row["overdue_now"],
        "median_dispatch_s": _seconds(row["median_dispatch_s"]),
        "median_close_s": _seconds(row["median_close_s"]),
        "satisfaction": {
            "evaluated": row["evaluated"],
            "mean": round(row["satisfaction_mean"], 2) if row["satisfaction_mean"] is not None else None,
            "satisfied_share": _ratio(row["satisfied"], row["evaluated"]),
        },
        # The chain's controls (12345-style): cases urged, supervised, returned, given more time.
        "urged": row["urged"],
        "supervised": row["supervised"],
        "returned": row["returned"],
        "extended": row["extended"],
        "called_back": row["called_back"],
    }


async def statistics(
    conn: asyncpg.Connection,
    *,
    tree: OrgTree,
    taxonomy: Taxonomy,
    org: str,
    start: datetime,
    end: datetime,
) -> dict[str, Any]:
    """Every figure for the cases of ``org``'s subtree received in ``[start, end)``."""
    args: list[Any] = []
    where = CaseQuery(unit=org, created_from=start, created_to=end).where(args)

    total = await conn.fetchrow(f"SELECT {_FIGURES} FROM incidents i WHERE {where}", *args)
    # The child unit under ``org`` on the way to the case's place (or owner when it has no place).
    child = (
        "(coalesce(nullif(i.place_path, '{}'), i.org_path))"
        "[array_position(coalesce(nullif(i.place_path, '{}'), i.org_path), $1) + 1]"
    )
    by_unit = await conn.fetch(
        f"SELECT {child} AS key, {_FIGURES} FROM incidents i WHERE {where} GROUP BY key ORDER BY key",
        *args,
    )
    by_department = await conn.fetch(
        f"SELECT d.code AS key, {_FIGURES} FROM incidents i"
        " CROSS JOIN LATERAL unnest(array_remove(ARRAY[i.lead_department] || i.co_departments, NULL)) AS d(code)"
        f" WHERE {where} GROUP BY key ORDER BY key",
        *args,
    )
    by_category = await conn.fetch(
        "SELECT split_part(i.category, '.', 1) || '.' || split_part(i.category, '.', 2) AS key,"
        " count(*) AS received, count(*) FILTER (WHERE i.closed_at IS NOT NULL) AS closed"
        f" FROM incidents i WHERE {where} GROUP BY key ORDER BY received DESC, key",
        *args,
    )
    by_channel = await conn.fetch(
        "SELECT c.code AS key, count(*) AS received FROM incidents i"
        f" CROSS JOIN LATERAL unnest(i.channels) AS c(code) WHERE {where} GROUP BY key ORDER BY key",
        *args,
    )
    by_priority = await conn.fetch(
        f"SELECT i.priority AS key, count(*) AS received FROM incidents i WHERE {where}"
        " GROUP BY key ORDER BY key",
        *args,
    )
    year_args: list[Any] = []
    year_ago = CaseQuery(unit=org, created_from=_year_before(start), created_to=_year_before(end))
    previous: int = await conn.fetchval(
        f"SELECT count(*) FROM incidents i WHERE {year_ago.where(year_args)}", *year_args
    )

    unit = tree.get(org)
    units = []
    for row in by_unit:
        code = row["key"]
        known = tree.units.get(code) if code is not None else None
        units.append(
            {
                "code": code,
                "name": known.name if known else "本级",
                "name_en": known.name_en if known else "this level",
                "level": known.level if known else unit.level,
                **_figures(row),
            }
        )
    # A department that returned a case no longer handles it: its returns are in the audit log.
    returned_by = {
        r["key"]: r["n"]
        for r in await conn.fetch(
            "SELECT a.data->>'department' AS key, count(DISTINCT i.id) AS n FROM incidents i"
            " JOIN audit_log a ON a.entity = 'incident' AND a.entity_id = i.id::text AND a.action = 'return'"
            f" WHERE {where} GROUP BY key",
            *args,
        )
    }
    departments = []
    for row in by_department:
        dept = tree.departments.get(row["key"])
        departments.append(
            {
                "code": row["key"],
                "name": dept.name if dept else row["key"],
                "name_en": dept.name_en if dept else row["key"],
                **_figures(row),
                "returned": returned_by.pop(row["key"], 0),
            }
        )
    for code, n in sorted(returned_by.items()):
        dept = tree.departments.get(code)
        departments.append(
            {"code": code, "name": dept.name if dept else code, "name_en": dept.name_en if dept else code, "returned": n}
        )
    categories = []
    for row in by_category:
        category = taxonomy.categories.get(row["key"])
        categories.append(
            {
                "code": row["key"],
                "name": {"zh-CN": category.name, "en": category.name_en} if category else row["key"],
                "received": row["received"],
                "closed": row["closed"],
            }
        )
    figures = _figures(total)
    return {
        "org": {"code": org, "name": unit.name, "name_en": unit.name_en, "level": unit.level},
        "from": start.isoformat(),
        "to": end.isoformat(),
        **figures,
        "previous_year": {
            "from": _year_before(start).isoformat(),
            "to": _year_before(end).isoformat(),
            "received": previous,
            "received_change": _ratio(figures["received"] - previous, previous),
        },
        "by_unit": units,
        "by_department": departments,
        "by_category": categories,
        "by_channel": {row["key"]: row["received"] for row in by_channel},
        "by_priority": {row["key"]: row["received"] for row in by_priority},
    }


def _year_before(moment: datetime) -> datetime:
    try:
        return moment.replace(year=moment.year - 1)
    except ValueError:  # 29 February
        return moment.replace(year=moment.year - 1, day=28)


def to_csv(stats: dict[str, Any]) -> str:
    """The statistics as CSV: one row for the unit, one per child unit, one per department."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)

    def row(section: str, code: str | None, name: str, figures: dict[str, Any]) -> list[Any]:
        satisfaction = figures.get("satisfaction") or {}
        values: dict[str, Any] = {
            "section": section,
            "code": code or "",
            "name": name,
            **{k: v for k, v in figures.items() if k != "satisfaction"},
            "evaluated": satisfaction.get("evaluated"),
            "satisfaction_mean": satisfaction.get("mean"),
            "satisfied_share": satisfaction.get("satisfied_share"),
        }
        return ["" if values.get(c) is None else values[c] for c in CSV_COLUMNS]

    writer.writerow(row("total", stats["org"]["code"], stats["org"]["name"], stats))
    for unit in stats["by_unit"]:
        writer.writerow(row("unit", unit["code"], unit["name"], unit))
    for dept in stats["by_department"]:
        writer.writerow(row("department", dept["code"], dept["name"], dept))
    return out.getvalue()
