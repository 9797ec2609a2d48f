"""Call-answering statistics against NFPA 1225 (2022): 90% of calls answered within 10 seconds.

For the calls offered to a unit's hotline in ``[start, end)``:

* ``offered``, ``answered``, ``abandoned`` (the caller hung up first), ``refused`` (the officer
  ended it unanswered), ``waiting`` (still ringing or queued: not yet counted either way);
* ``answered_within_target`` and its ``share_answered_within_target`` of the calls that are no
  longer waiting — an abandoned call counts as not answered in time, the conservative reading;
* ``abandonment_rate`` = abandoned ÷ calls no longer waiting;
* wait (offer to answer) of answered calls: mean, median, 90th percentile; mean talk time;
* ``meets_standard``: the share reaches ``[hotline] answer_share`` (0.9) at ``answer_target`` (10 s);
* the same counts per line dialled, so the merged department lines can be compared.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import asyncpg

_FIGURES = """
    count(*) AS offered,
    count(*) FILTER (WHERE answered_at IS NOT NULL) AS answered,
    count(*) FILTER (WHERE state = 'abandoned') AS abandoned,
    count(*) FILTER (WHERE state = 'ended' AND answered_at IS NULL) AS refused,
    count(*) FILTER (WHERE state IN ('ringing', 'queued')) AS waiting,
    count(*) FILTER (WHERE answered_at - offered_at <= make_interval(secs => $4)) AS answered_within_target,
    avg(extract(epoch FROM answered_at - offered_at))::float8 AS mean_wait_s,
    percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM answered_at - offered_at)::float8)
        AS median_wait_s,
    percentile_cont(0.9) WITHIN GROUP (ORDER BY extract(epoch FROM answered_at - offered_at)::float8)
        AS p90_wait_s,
    avg(extract(epoch FROM ended_at - answered_at))::float8 AS mean_talk_s
"""


def _ratio(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None


def _round(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None


def _figures(row: Any, share_required: float) -> dict[str, Any]:
    decided = row["offered"] - row["waiting"]
    share = _ratio(row["answered_within_target"], decided)
    return {
        "offered": row["offered"],
        "answered": row["answered"],
        "abandoned": row["abandoned"],
        "refused": row["refused"],
        "waiting": row["waiting"],
        "answered_within_target": row["answered_within_target"],
        "share_answered_within_target": share,
        "abandonment_rate": _ratio(row["abandoned"], decided),
        "mean_wait_s": _round(row["mean_wait_s"]),
        "median_wait_s": _round(row["median_wait_s"]),
        "p90_wait_s": _round(row["p90_wait_s"]),
        "mean_talk_s": _round(row["mean_talk_s"]),
        "meets_standard": share is not None and share >= share_required,
    }


async def call_statistics(
    conn: asyncpg.Connection,
    *,
    org: str,
    start: datetime,
    end: datetime,
    target_s: float,
    share_required: float,
) -> dict[str, Any]:
    """The figures above for calls of ``org``'s subtree offered in ``[start, end)``."""
    where = "org_path @> ARRAY[$1]::text[] AND offered_at >= $2 AND offered_at < $3"
    total = await conn.fetchrow(
        f"SELECT {_FIGURES} FROM hotline_calls WHERE {where}", org, start, end, target_s
    )
    lines = await conn.fetch(
        f"SELECT dialled, min(line_name) AS line_name, min(line_name_en) AS line_name_en,"
        f" min(department_code) AS department, {_FIGURES}"
        f" FROM hotline_calls WHERE {where} GROUP BY dialled ORDER BY count(*) DESC, dialled",
        org,
        start,
        end,
        target_s,
    )
    return {
        "org": org,
        "from": start.isoformat(),
        "to": end.isoformat(),
        "standard": {
            "name": "NFPA 1225 (2022)",
            "answer_target_s": target_s,
            "required_share": share_required,
        },
        **_figures(total, share_required),
        "by_line": [
            {
                "dialled": r["dialled"],
                "line": {"zh-CN": r["line_name"], "en": r["line_name_en"]},
                "department": r["department"],
                **_figures(r, share_required),
            }
            for r in lines
        ],
    }
