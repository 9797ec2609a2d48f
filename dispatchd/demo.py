"""The demo of ``dispatchd dev``: demo accounts on first start, and the simulated feeds.

Passwords are generated on first start, printed once on stderr (stdout carries only JSON log
lines) and kept in ``<data>/demo-accounts.txt`` (mode 0600) for the person who runs the demo.
"""

from __future__ import annotations

import secrets
import sys

import structlog

from dispatchd.context import Context
from dispatchd.store import users

log = structlog.get_logger("dispatchd.demo")

# (username, role, level of the home unit, department kind or None, display name)
DEMO_ACCOUNTS = (
    ("admin", "admin", "county", None, "系统管理员"),
    ("duty", "duty_officer", "county", None, "县指挥中心值班员"),
    ("leader", "leader", "county", None, "县领导"),
    ("township", "duty_officer", "township", None, "镇指挥室值班员"),
    ("handler", "department_handler", "township", "police", "派出所处置员"),
    ("squad", "squad_member", "township", None, "应急中队队员"),
    ("grid", "grid_worker", "grid", None, "网格员"),
    ("ops", "ops", "county", None, "运维"),
)


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
            dept = tree.find_department(org, dept_kind) if dept_kind else None
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
