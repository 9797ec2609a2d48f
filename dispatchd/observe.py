"""Operational metrics that no single capability owns, read when Prometheus scrapes or measured by
two small loops: queue depths, store health, event-loop lag and order latencies.

* read at scrape time (:class:`OpsCollector`): frames queued for slow boards, fixes waiting for
  their batched write, the database pool's busy connections, whether this instance holds the SIP
  port, and its identity (``dispatchd_instance_info``: version and instance id);
* :func:`probe_stores` every ``PROBE_INTERVAL``: a ``SELECT 1`` and a ``PING`` with a deadline; a
  failure counts in ``dispatchd_store_errors_total{store}`` and is handed to the outage tracker
  (``store/outage.py``: ``dispatchd_store_up`` goes to 0, one log line per outage, its own probe
  watches for the return), so a store that fails while nobody calls it is seen too; the loop's own
  lateness is the event loop's lag (``dispatchd_event_loop_lag_seconds``);
* :func:`measure_orders` every ``ORDER_INTERVAL``: order-to-receipt and order-to-acceptance over the
  orders of the last ``ORDER_WINDOW`` (p50, p95, max, from the orders' own times), the same figure on
  every instance (dashboards take the max).

Metrics counted where things happen stay with their capability (``dispatchd_connections{kind}``,
``dispatchd_gps_fixes_total``, ``dispatchd_video_*``, ...); ``deploy/grafana/dispatchd.json`` shows
them all.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Final

import structlog
from prometheus_client import Counter, Gauge
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector

from dispatchd import __version__
from dispatchd.channels.gps.slots import SINK
from dispatchd.channels.hotline.slots import SIP
from dispatchd.context import Context, Slot
from dispatchd.live.slots import BOARD_HUB
from dispatchd.store.outage import OUTAGES
from dispatchd.tasks import raise_if_cancelling

log = structlog.get_logger("dispatchd.observe")

PROBE_INTERVAL: Final = 5.0
PROBE_TIMEOUT: Final = 3.0
ORDER_INTERVAL: Final = 15.0
ORDER_WINDOW: Final = timedelta(minutes=15)


class OpsCollector(Collector):
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[GaugeMetricFamily | InfoMetricFamily]:
        ctx = self.ctx
        yield InfoMetricFamily(
            "dispatchd_instance", "this instance", value={"version": __version__, "instance": ctx.instance_id}
        )
        queued = GaugeMetricFamily(
            "dispatchd_queue_depth", "items waiting in this instance's queues", labels=["queue"]
        )
        hub = ctx.get(BOARD_HUB)
        if hub is not None:
            queued.add_metric(
                ["board_frames"], sum(len(c.backlog) for group in hub.groups.values() for c in group)
            )
        sink = ctx.get(SINK)
        if sink is not None:
            queued.add_metric(["gps_track_rows"], sink.backlog)
        yield queued
        try:
            pool = ctx.pool
        except RuntimeError:  # not open yet, or closed
            pool = None
        if pool is not None:
            busy = GaugeMetricFamily(
                "dispatchd_db_pool_connections", "database pool connections", labels=["state"]
            )
            busy.add_metric(["busy"], pool.get_size() - pool.get_idle_size())
            busy.add_metric(["idle"], pool.get_idle_size())
            yield busy
        sip = ctx.get(SIP)
        yield GaugeMetricFamily(
            "dispatchd_sip_active",
            "1 while this instance holds the SIP port",
            value=1 if sip and sip.ports else 0,
        )


class OpsMetrics:
    """The loops' metrics, registered in the instance's registry."""

    def __init__(self, ctx: Context) -> None:
        r = ctx.metrics.registry
        self.store_errors = Counter(
            "dispatchd_store_errors_total", "failed store probes (SELECT 1, PING)", ["store"], registry=r
        )
        self.loop_lag = Gauge(
            "dispatchd_event_loop_lag_seconds", "how late the event loop ran the last probe", registry=r
        )
        self.order_latency = Gauge(
            "dispatchd_order_latency_seconds",
            "orders of the last 15 minutes: seconds from creation to the first receipt or to acceptance",
            ["step", "stat"],
            registry=r,
        )
        self.orders = Gauge("dispatchd_orders_recent", "orders created in the last 15 minutes", registry=r)
        r.register(OpsCollector(ctx))


# The instance's operational metrics (set up by http_server.build_app).
OPS = Slot[OpsMetrics]("observe_metrics")


async def probe_stores(ctx: Context, metrics: OpsMetrics, interval: float = PROBE_INTERVAL) -> None:
    loop = asyncio.get_running_loop()
    while True:
        planned = loop.time() + interval
        await asyncio.sleep(interval)
        metrics.loop_lag.set(max(0.0, loop.time() - planned))
        for store, probe in (("postgres", _pg_probe), ("redis", _redis_probe)):
            try:
                async with asyncio.timeout(PROBE_TIMEOUT):
                    await probe(ctx)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                raise_if_cancelling()
                metrics.store_errors.labels(store).inc()
                tracker = ctx.get(OUTAGES)
                if tracker is not None:
                    tracker.failed(store, f"{type(exc).__name__}: {exc}")


async def _pg_probe(ctx: Context) -> None:
    async with ctx.pool.acquire() as conn:
        await conn.fetchval("SELECT 1")


async def _redis_probe(ctx: Context) -> None:
    await ctx.redis.ping()


_ORDER_STATS: Final = """
SELECT count(*) AS n,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - created_at)) AS d50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - created_at)) AS d95,
       max(extract(epoch FROM delivered_at - created_at)) AS dmax,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM accepted_at - created_at)) AS a50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY extract(epoch FROM accepted_at - created_at)) AS a95,
       max(extract(epoch FROM accepted_at - created_at)) AS amax
  FROM orders WHERE created_at >= $1
"""


async def measure_orders(ctx: Context, metrics: OpsMetrics) -> None:
    """Order latencies of the recent window, from the orders' own times."""
    async with ctx.pool.acquire() as conn:
        row = await conn.fetchrow(_ORDER_STATS, ctx.clock.now() - ORDER_WINDOW)
    metrics.orders.set(row["n"] or 0)
    for step, prefix in (("delivered", "d"), ("accepted", "a")):
        for stat, key in (("p50", "50"), ("p95", "95"), ("max", "max")):
            value = row[f"{prefix}{key}"]
            metrics.order_latency.labels(step, stat).set(float(value) if value is not None else 0.0)


async def order_loop(ctx: Context, metrics: OpsMetrics, interval: float = ORDER_INTERVAL) -> None:
    while True:
        try:
            await measure_orders(ctx, metrics)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            raise_if_cancelling()
            log.warning("order_latency_failed", error=f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(interval)
