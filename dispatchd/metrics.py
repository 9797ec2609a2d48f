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
        # Grid reports and Open311 (dispatchd/channels/reports/): submissions by outcome, photos received.
        self.reports = Counter(
            "dispatchd_reports_total",
            "report submissions: created, replayed (same Idempotency-Key), key_reused, open311",
            ["outcome"],
            registry=r,
        )
        self.photos = Counter(
            "dispatchd_photos_total",
            "photos received: stored, too_large, unsupported, too_many, rate_limited, disk_full",
            ["outcome"],
            registry=r,
        )
        self.rejected_input = Counter(
            "dispatchd_rejected_input_total", "malformed input rejected", ["channel"], registry=r
        )
        # Hotline (dispatchd/channels/hotline/): SIP messages, malformed ones, and what became of calls.
        self.sip_messages = Counter(
            "dispatchd_sip_messages_total", "SIP messages received", ["transport", "kind"], registry=r
        )
        self.sip_malformed = Counter(
            "dispatchd_sip_malformed_total",
            "malformed SIP messages: answered_400 (a request we could answer) or dropped",
            ["transport", "outcome"],
            registry=r,
        )
        self.hotline_calls = Counter(
            "dispatchd_hotline_calls_total",
            "hotline call events: offered, answered, abandoned, ended",
            ["source", "event"],
            registry=r,
        )
        # Live: change feed, board and squad websockets, orders (dispatchd/live/).
        self.live_feed_rows = Counter(
            "dispatchd_live_feed_rows_total", "outbox rows handed to this instance's clients", registry=r
        )
        self.live_feed_backfills = Counter(
            "dispatchd_live_feed_backfills_total",
            "catch-ups of the change feed from PostgreSQL",
            ["reason"],
            registry=r,
        )
        self.live_relay = Gauge("dispatchd_live_relay", "1 while this instance is the feed relay", registry=r)
        self.live_relay_published = Counter(
            "dispatchd_live_relay_published_total", "outbox rows published to Redis", registry=r
        )
        self.live_frames = Counter(
            "dispatchd_live_frames_total", "frames written to board clients", registry=r
        )
        self.live_frame_bytes = Counter(
            "dispatchd_live_frame_bytes_total", "bytes of frames written to board clients", registry=r
        )
        self.live_queue_drops = Counter(
            "dispatchd_live_queue_drops_total",
            "board clients closed because their queue overflowed (told to resume)",
            registry=r,
        )
        self.live_board_starts = Counter(
            "dispatchd_live_board_starts_total", "board connections started", ["mode"], registry=r
        )
        self.live_orders = Counter(
            "dispatchd_live_order_events_total", "order events (created, resent, delivered, ...)", ["event"],
            registry=r,
        )
        self.live_squad_messages = Counter(
            "dispatchd_live_squad_messages_total", "messages from squad devices", ["type"], registry=r
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
        # Stores (dispatchd/store/outage.py): up or down as this instance sees them, outages, failures.
        self.store_up = Gauge("dispatchd_store_up", "1 while the store answers, 0 during an outage", ["store"], registry=r)
        for store in ("postgres", "redis"):
            self.store_up.labels(store).set(1)
        self.store_outages = Counter(
            "dispatchd_store_outages_total", "outages of a store seen by this instance", ["store"], registry=r
        )
        self.store_failures = Counter(
            "dispatchd_store_failures_total",
            "calls that met a store failure: outage (down or hung) or busy (statement timeout, pool full)",
            ["store", "kind"],
            registry=r,
        )
        self.http_cut = Counter(
            "dispatchd_http_connections_cut_total",
            "connections cut: header_timeout, body_timeout, per_address_cap (port: http, osmand, jt808, sip)",
            ["port", "reason"],
            registry=r,
        )
