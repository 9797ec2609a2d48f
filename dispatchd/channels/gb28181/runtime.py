"""What the GB/T 28181 platform keeps for the life of an instance, registered on the context, and its
metrics: every device and every stream counted in ``/metrics``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import structlog
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dispatchd.channels.gb28181.edge import GbEdge
from dispatchd.channels.gb28181.view import Viewers
from dispatchd.context import Context, Slot

log = structlog.get_logger("dispatchd.gb28181")


@dataclass(eq=False)
class Gb28181Runtime:
    """The SIP edge (None when another instance on this host holds the port) and the viewers."""

    edge: GbEdge | None = None
    viewers: Viewers | None = None
    ports: dict[str, int] = field(default_factory=dict)
    #: Devices' media transports as last read from PostgreSQL (meetings start cameras without a query).
    modes: dict[str, str | None] = field(default_factory=dict)


GB28181 = Slot[Gb28181Runtime]("gb28181")


@asynccontextmanager
async def running(ctx: Context) -> AsyncIterator[Gb28181Runtime]:
    """Bind the SIP port, run the edge and the streams; stop them (BYE to every stream) at the end."""
    runtime = ctx.get(GB28181) or Gb28181Runtime()
    ctx[GB28181] = runtime
    settings = ctx.settings.gb28181
    edge: GbEdge | None = GbEdge(ctx)
    assert edge is not None
    try:
        runtime.ports.update(await edge.start(settings.port))
        runtime.edge = edge
        runtime.viewers = Viewers(edge.streams, ctx.settings.video)
    except OSError as exc:
        log.warning("gb28181_port_unavailable", port=settings.port, error=str(exc))
        edge = None
    try:
        yield runtime
    finally:
        if runtime.viewers is not None:
            await runtime.viewers.close_all()
        if edge is not None:
            await edge.close()
        runtime.edge = None
        runtime.viewers = None
        runtime.ports.clear()


class Gb28181Collector(Collector):
    """Devices by state, streams by state and transport, viewers, and the edge's and streams' counters."""

    def __init__(self, runtime: Gb28181Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> list[Metric]:
        edge = self.runtime.edge
        devices = GaugeMetricFamily(
            "dispatchd_gb28181_devices", "GB/T 28181 devices registered with this instance", labels=["status"]
        )
        streams = GaugeMetricFamily(
            "dispatchd_gb28181_streams", "camera streams on this instance", labels=["state", "transport"]
        )
        viewers = GaugeMetricFamily("dispatchd_gb28181_viewers", "WebRTC viewing sessions of cameras")
        consumers = GaugeMetricFamily(
            "dispatchd_gb28181_stream_consumers", "viewers and meetings using camera streams"
        )
        messages = CounterMetricFamily(
            "dispatchd_gb28181_sip_messages",
            "SIP messages received from devices",
            labels=["transport", "kind"],
        )
        dropped = CounterMetricFamily(
            "dispatchd_gb28181_dropped",
            "device messages not acted on: malformed_sip, malformed_xml, rate_limited, unregistered,"
            " wrong_address, bad_content_type",
            labels=["reason"],
        )
        auth = CounterMetricFamily(
            "dispatchd_gb28181_auth_failures", "registrations refused (wrong credentials)"
        )
        alarms = CounterMetricFamily("dispatchd_gb28181_alarms", "alarm notifications from devices")
        alarm_kinds = CounterMetricFamily(
            "dispatchd_gb28181_alarm_kinds",
            "alarm notifications by what they meant: case (opened or merged), fault, note",
            labels=["kind"],
        )
        stream_events = CounterMetricFamily(
            "dispatchd_gb28181_stream_events",
            "INVITEs sent, answered, failed; streams restarted after a stall; key frames asked for",
            labels=["event"],
        )
        frames = CounterMetricFamily("dispatchd_gb28181_frames", "video frames received from devices")
        received = CounterMetricFamily(
            "dispatchd_gb28181_video_bytes", "bytes of video received from devices"
        )
        gaps = CounterMetricFamily(
            "dispatchd_gb28181_discontinuities", "frames after lost or skipped data (RTP loss, PS resync)"
        )
        if edge is not None:
            state = edge.snapshot()
            devices.add_metric(["online"], state["online"])
            devices.add_metric(["offline"], state["offline"])
            counted: dict[tuple[str, str], int] = {}
            total_consumers = 0
            for stream in edge.streams.streams.values():
                key = (stream.state, stream.mode)
                counted[key] = counted.get(key, 0) + 1
                total_consumers += stream.plan.consumers
            for (state_name, mode), count in sorted(counted.items()):
                streams.add_metric([state_name, mode], count)
            consumers.add_metric([], total_consumers)
            for (transport, kind), count in sorted(edge.totals.messages.items()):
                messages.add_metric([transport, kind], count)
            for reason, count in sorted(edge.totals.dropped.items()):
                dropped.add_metric([reason], count)
            auth.add_metric([], edge.totals.auth_failures)
            alarms.add_metric([], edge.totals.alarms)
            for kind in ("case", "fault", "note"):
                alarm_kinds.add_metric([kind], edge.totals.alarm_kinds[kind])
            totals = edge.streams.totals
            for event in ("invites", "answered", "failures", "restarts", "keyframe_requests"):
                stream_events.add_metric([event], getattr(totals, event))
            frames.add_metric([], totals.frames)
            received.add_metric([], totals.bytes)
            gaps.add_metric([], totals.discontinuities)
        viewers.add_metric([], len(self.runtime.viewers.sessions) if self.runtime.viewers is not None else 0)
        return [
            devices,
            streams,
            viewers,
            consumers,
            messages,
            dropped,
            auth,
            alarms,
            alarm_kinds,
            stream_events,
            frames,
            received,
            gaps,
        ]
