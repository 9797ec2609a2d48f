"""The demo of ``dispatchd dev``: demo accounts on first start, and the simulated feeds.

Passwords are generated on first start, printed once on stderr (stdout carries only JSON log
lines) and kept in ``<data>/demo-accounts.txt`` (mode 0600) for the person who runs the demo.

The accounts are placed so that each role's step of the chain happens to them: the duty officers
and the grid worker in the first township (the grid worker in the grid its demo reports fall in),
the squad member in that township's squads (the ones the console proposes for its cases), the
department handler in the department that handles the demo's most common category, and a
simulated officer (``desk``) who answers the demo's calls, so the real ``duty`` account's console
rings for the person who runs the demo.
"""

from __future__ import annotations

import secrets
import sys

import structlog

from dispatchd.channels.reports.demo import REPORTS
from dispatchd.context import Context
from dispatchd.store import users

log = structlog.get_logger("dispatchd.demo")

# (username, role, level of the home unit, department kind or None, display name); the handler's
# department is the one of the demo's most common category (MOST_COMMON).
MOST_COMMON = "most_common"
DEMO_ACCOUNTS = (
    ("admin", "admin", "county", None, "系统管理员"),
    ("duty", "duty_officer", "county", None, "县指挥中心值班员"),
    ("leader", "leader", "county", None, "县领导"),
    ("township", "duty_officer", "township", None, "镇指挥室值班员"),
    ("handler", "department_handler", "township", MOST_COMMON, "部门承办人"),
    ("squad", "squad_member", "township", None, "应急中队队员"),
    ("grid", "grid_worker", "grid", None, "网格员"),
    ("desk", "duty_officer", "county", None, "模拟值班员（演示）"),
    ("ops", "ops", "county", None, "运维"),
)


def most_common_department_kind(ctx: Context) -> str:
    """The department kind that handles most of what the demo's grid workers report."""
    weights: dict[str, float] = {}
    for category, weight, _ in REPORTS:
        if category in ctx.taxonomy:
            kind = ctx.taxonomy.get(category).default_department
            weights[kind] = weights.get(kind, 0.0) + weight
    return max(sorted(weights), key=lambda k: weights[k])


def _home_units(ctx: Context) -> dict[str, str]:
    """The first county, its first township and that township's first grid."""
    tree = ctx.orgs
    county = next(u for u in tree.units.values() if u.level == "county")
    township = tree.children(county.code)[0]
    grid = next(u for u in tree.subtree(township.code) if u.level == "grid")
    return {"county": county.code, "township": township.code, "grid": grid.code}


async def seed_accounts(ctx: Context) -> list[tuple[str, str, str]]:
    """Create the demo accounts that do not exist yet; return (username, password, role) of new ones."""
    homes = _home_units(ctx)
    tree = ctx.orgs
    created: list[tuple[str, str, str]] = []
    async with ctx.pool.acquire() as conn:
        for username, role, level, dept_kind, name in DEMO_ACCOUNTS:
            if await conn.fetchval("SELECT 1 FROM users WHERE username = $1", username):
                continue
            org = homes[level]
            kind = most_common_department_kind(ctx) if dept_kind == MOST_COMMON else dept_kind
            dept = tree.find_department(org, kind) if kind else None
            if dept is not None:
                org = dept.org  # a county's department (the fire brigade) has its home there
            password = secrets.token_urlsafe(9)
            await users.create_user(
                conn, username, users.hash_password(password), role, org, dept.code if dept else None, name
            )
            created.append((username, password, role))
    return created


async def announce_accounts(ctx: Context) -> None:
    """Create the demo accounts missing, print them once and keep them in the data dir."""
    created = await seed_accounts(ctx)
    if not created:
        return
    path = ctx.settings.data.dir / "demo-accounts.txt"
    lines = [f"{u}\t{p}\t{r}" for u, p, r in created]
    with path.open("a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
    path.chmod(0o600)
    print(
        "\n演示账号 demo accounts (shown once; also in " + str(path.name) + " under the data dir):",
        file=sys.stderr,
    )
    for u, p, r in created:
        print(f"  {u:<10} {p:<14} {r}", file=sys.stderr)
    print(file=sys.stderr, flush=True)
    log.info("demo_accounts_created", usernames=[u for u, _, _ in created])
