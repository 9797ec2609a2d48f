"""Mirror the organisation tree from configuration into PostgreSQL (for joins and statistics)."""

from __future__ import annotations

import asyncpg

from dispatchd.domain.orgs import OrgTree


def unit_path(tree: OrgTree, code: str) -> list[str]:
    """Codes from the root down to ``code`` inclusive."""
    return [*reversed(tree.ancestors(code)), code]


async def sync_org_tree(conn: asyncpg.Connection, tree: OrgTree) -> None:
    """Upsert every unit and department; units no longer configured stay (records may point to them)."""
    units = []
    for u in tree.units.values():
        boundary = {"type": "Polygon", "coordinates": [[list(p) for p in u.boundary]]} if u.boundary else None
        centre = u.centre or (None, None)
        units.append(
            (
                u.code,
                u.name,
                u.name_en,
                u.level,
                u.parent,
                unit_path(tree, u.code),
                boundary,
                centre[0],
                centre[1],
                u.synthetic,
            )
        )
    departments = [
        (d.code, d.name, d.name_en, d.kind, d.org, unit_path(tree, d.org)) for d in tree.departments.values()
    ]
    async with conn.transaction():
        await conn.executemany(
            "INSERT INTO org_units (code, name, name_en, level, parent, path, boundary, centre_lon,"
            " centre_lat, synthetic) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
            " ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name, name_en = EXCLUDED.name_en,"
            " level = EXCLUDED.level, parent = EXCLUDED.parent, path = EXCLUDED.path,"
            " boundary = EXCLUDED.boundary, centre_lon = EXCLUDED.centre_lon,"
            " centre_lat = EXCLUDED.centre_lat, synthetic = EXCLUDED.synthetic",
            units,
        )
        await conn.executemany(
            "INSERT INTO departments (code, name, name_en, kind, org_code, path)"
            " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name,"
            " name_en = EXCLUDED.name_en, kind = EXCLUDED.kind, org_code = EXCLUDED.org_code,"
            " path = EXCLUDED.path",
            departments,
        )
