"""The demo feed of grid reports: simulated grid workers of the demo county file reports through
the real service path (the same exactly-once submission as ``POST /api/v1/reports``).

Rhythm: Zhejiang's 3.78 million reports of 2016 from 109,000 grids are about 0.1 a grid a day, so
tens a day for a county of a few hundred grids (``[reports] demo_per_day``), more by day than by
night (the hourly weights below: patrols are in the morning and afternoon). Arrivals are a Poisson
process thinned by the hour's weight; ``[demo] speed`` runs the demo day faster (speed 24: a day
an hour). One demo grid-worker account per township is created when missing.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Final

import shapely
import structlog

from dispatchd.channels.reports import service
from dispatchd.clock import LOCAL_TZ
from dispatchd.context import Context
from dispatchd.errors import DomainError
from dispatchd.store import users
from dispatchd.store.users import User

log = structlog.get_logger("dispatchd.reports.demo")

# Relative report rate by local hour (0–23): quiet at night, peaks mid-morning and mid-afternoon.
HOURLY_WEIGHTS: Final[tuple[float, ...]] = (
    0.1, 0.05, 0.05, 0.05, 0.1, 0.2, 0.5, 1.0, 1.6, 2.0, 2.0, 1.6,
    1.0, 1.2, 1.8, 2.0, 1.8, 1.4, 1.0, 0.8, 0.6, 0.4, 0.3, 0.2,
)  # fmt: skip


def expected_per_hour(per_day: float) -> list[float]:
    """Reports expected in each local hour of a demo day (they add up to ``per_day``)."""
    total = sum(HOURLY_WEIGHTS)
    return [per_day * w / total for w in HOURLY_WEIGHTS]


# What grid workers report most (一心两翼), with a description each: category, weight, texts.
REPORTS: Final[tuple[tuple[str, float, tuple[str, ...]], ...]] = (
    ("incident.dispute.neighbour", 3, ("邻居因楼道堆放杂物发生争吵", "两户村民因宅基地界址发生争执")),
    ("incident.dispute.labour", 1.5, ("工地工人反映被拖欠工资三个月", "小作坊员工讨要加班费")),
    ("incident.dispute.property_management", 1.5, ("小区业主与物业因停车收费发生纠纷",)),
    ("incident.dispute.marriage_family", 1, ("夫妻吵架，邻居报称有摔东西声音",)),
    ("hazard.fire.ebike_charging", 3, ("楼道内有电动车飞线充电", "出租房内电瓶车入户充电")),
    ("hazard.fire.blocked_access", 2, ("消防通道被车辆堵塞", "店铺门口堆放货物占用疏散通道")),
    ("hazard.fire.three_in_one", 1.5, ("沿街店铺存在“三合一”住人现象",)),
    ("hazard.work_safety.construction_site", 1.5, ("工地脚手架未设置防护网", "施工现场工人未佩戴安全帽")),
    ("hazard.public_order.road_facility", 1.5, ("路口窨井盖缺失", "路灯损坏多日未修")),
    ("hazard.public_order.illegal_construction", 1, ("村民在自家屋顶违章搭建彩钢棚",)),
    ("hazard.environment.refuse", 2, ("河边垃圾堆积无人清运", "建筑垃圾随意倾倒在路边")),
    ("hazard.environment.water_pollution", 1, ("河道发现不明排污口，水体发黑",)),
    ("hazard.environment.noise", 1, ("夜间施工噪音扰民",)),
    ("hazard.food_safety.unlicensed", 1, ("路边无证摊贩售卖熟食",)),
    ("population.migrant.rental_housing", 2, ("新增出租房屋一处，租客未登记", "出租房新入住外来务工人员4名")),
    ("population.special.elderly_alone", 1, ("独居老人家中无人应门，需上门查看",)),
)


@dataclass(frozen=True)
class DemoWorker:
    user: User
    grids: tuple[str, ...]  # the grids of the worker's township, where it reports from


async def ensure_workers(ctx: Context) -> list[DemoWorker]:
    """One demo grid worker per township of the demo county (created when missing), at home in
    the township's first grid."""
    tree = ctx.orgs
    workers: list[DemoWorker] = []
    async with ctx.pool.acquire() as conn:
        # The demo's own grid worker account checks what is reported in its grid: its township's
        # reports fall there.
        home = await conn.fetchval("SELECT org_code FROM users WHERE username = 'grid'")
        for township in tree.units_at("township"):
            grids = tuple(u.code for u in tree.subtree(township.code) if u.level == "grid" and u.boundary)
            if not grids or not township.synthetic:
                continue
            if home in grids:
                grids = (home,)
            username = f"demo-grid-{township.code}"
            row = await conn.fetchrow("SELECT id FROM users WHERE username = $1", username)
            if row is None:
                secret = await asyncio.to_thread(users.hash_password, secrets.token_urlsafe(16))
                try:
                    user = await users.create_user(
                        conn,
                        username,
                        secret,
                        "grid_worker",
                        grids[0],
                        None,
                        f"{township.name}网格员（演示）",
                    )
                    log.info("demo_grid_worker_created", username=username)
                except users.UserError:  # another instance created it meanwhile
                    user = None
                if user is None:
                    continue
            else:
                found = await users.get_user(conn, row["id"])
                if found is None:
                    continue
                user = found
            workers.append(DemoWorker(user, grids))
    return workers


def random_point(ctx: Context, grid: str, rng: random.Random) -> tuple[float, float]:
    """A random WGS-84 point (lat, lon) inside ``grid``."""
    boundary = ctx.orgs.get(grid).boundary
    assert boundary is not None
    polygon = shapely.Polygon(boundary)
    min_lon, min_lat, max_lon, max_lat = polygon.bounds
    for _ in range(50):
        lon, lat = rng.uniform(min_lon, max_lon), rng.uniform(min_lat, max_lat)
        if ctx.locator.locate(lat, lon) == grid:
            return lat, lon
    point = polygon.representative_point()
    return float(point.y), float(point.x)


def pick_report(rng: random.Random, known: Sequence[str]) -> tuple[str, str]:
    choices = [r for r in REPORTS if r[0] in known]
    category, _, texts = rng.choices(choices, weights=[r[1] for r in choices])[0]
    return category, rng.choice(texts)


async def file_one(ctx: Context, worker: DemoWorker, rng: random.Random) -> int | None:
    """One simulated report through the exactly-once submission; returns the case id."""
    grid = rng.choice(worker.grids)
    lat, lon = random_point(ctx, grid, rng)
    category, text = pick_report(rng, list(ctx.taxonomy.categories))
    body = {
        "category": category,
        "description": text,
        "location": {"lat": round(lat, 6), "lon": round(lon, 6)},
        "observed_at": ctx.clock.now().isoformat(),
    }
    report = service.report_checker(ctx)(body)
    outcome = await service.submit_report(
        ctx,
        worker.user,
        report,
        (),
        key=f"demo-{uuid.uuid4().hex}",
        fingerprint=service.fingerprint(body),
        extra={"demo": True},
    )
    return outcome.incident_id


async def run_demo(ctx: Context) -> None:
    """File reports at the configured daily rhythm until cancelled."""
    settings = ctx.settings
    per_day = settings.reports.demo_per_day
    speed = settings.demo.speed
    if per_day <= 0:
        return
    workers = await ensure_workers(ctx)
    if not workers:
        log.info("reports_demo_idle", reason="no synthetic township with grids")
        return
    rng = random.Random()
    clock = ctx.clock
    mean = sum(HOURLY_WEIGHTS) / len(HOURLY_WEIGHTS)
    peak = max(HOURLY_WEIGHTS) / mean
    # Highest arrival rate, in reports per real second; thinning keeps each hour's share.
    rate = per_day * peak * speed / 86400
    started_real = clock.monotonic()
    started_demo = clock.now()
    log.info("reports_demo_started", per_day=per_day, speed=speed, workers=len(workers))
    while True:
        await asyncio.sleep(rng.expovariate(rate))
        demo_now = started_demo + timedelta(seconds=(clock.monotonic() - started_real) * speed)
        hour = demo_now.astimezone(LOCAL_TZ).hour
        if rng.random() > HOURLY_WEIGHTS[hour] / mean / peak:
            continue
        try:
            incident_id = await file_one(ctx, rng.choice(workers), rng)
            log.debug("demo_report_filed", incident_id=incident_id)
        except DomainError as exc:
            log.warning("demo_report_refused", code=exc.code, message=exc.message_en)
