"""Prometheus metrics, one registry per application instance (tests build many apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "dispatchd_http_requests_total", "HTTP requests", ["method", "route", "status"], registry=r
        )
        self.http_latency = Histogram(
            "dispatchd_http_request_seconds",
            "HTTP request latency",
            ["method", "route"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.connections = Gauge("dispatchd_connections", "open long-lived connections", ["kind"], registry=r)
        self.login_failures = Counter("dispatchd_login_failures_total", "failed logins", registry=r)
        self.transitions = Counter(
            "dispatchd_incident_transitions_total", "case transitions", ["action"], registry=r
        )
        self.rejected_input = Counter(
            "dispatchd_rejected_input_total", "malformed input rejected", ["channel"], registry=r
        )
        # Squad positions (dispatchd/channels/gps/): fixes accepted, kept out, and the batched writes.
        self.gps_fixes = Counter(
            "dispatchd_gps_fixes_total",
            "fixes accepted (live = became the unit's position, track_only = older than it)",
            ["protocol", "use"],
            registry=r,
        )
        self.gps_filtered = Counter(
            "dispatchd_gps_fixes_filtered_total",
            "fixes kept out of the live position: null_island, out_of_range, future, impossible_speed,"
            " duplicate",
            ["protocol", "reason"],
            registry=r,
        )
        self.gps_refused = Counter(
            "dispatchd_gps_messages_refused_total",
            "position messages refused: unknown_device, bad_key, unauthenticated, rate_limited",
            ["protocol", "reason"],
            registry=r,
        )
        self.gps_alarms = Counter("dispatchd_gps_alarms_total", "emergency alarms received", ["protocol"], registry=r)
        self.gps_writes = Counter(
            "dispatchd_gps_batch_writes_total", "batched position writes", ["store", "result"], registry=r
        )
        self.gps_batch_rows = Counter(
            "dispatchd_gps_batch_rows_total", "rows written by batched position writes", ["store"], registry=r
        )
