"""Settings: built once from ``config/dispatchd.toml`` and ``DISPATCHD_*`` variables, then passed down.

Nothing else in the daemon reads the environment. Every key lives in a section; the environment
variable for ``[section] key`` is ``DISPATCHD_SECTION_KEY`` (``[http] port`` → ``DISPATCHD_HTTP_PORT``,
``[database] url`` → ``DISPATCHD_DATABASE_URL``, ``[data] dir`` → ``DISPATCHD_DATA_DIR``).
A bad value raises :class:`ConfigError` naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_type_hints


class ConfigError(ValueError):
    """One bad setting: the key, the value seen and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str) -> None:
        super().__init__(f"configuration error: {key}={value!r}: {allowed}")
        self.key = key


def _meta(
    doc: str, *, lo: float | None = None, hi: float | None = None, choices: tuple[str, ...] = ()
) -> dict[str, Any]:
    return {"doc": doc, "lo": lo, "hi": hi, "choices": choices}


def _port(doc: str) -> dict[str, Any]:
    return _meta(doc, lo=0, hi=65535)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    host: str = field(default="127.0.0.1", metadata=_meta("address the HTTP server binds"))
    port: int = field(default=8080, metadata=_port("HTTP port (0 picks a free one)"))
    shutdown_timeout: float = field(default=5.0, metadata=_meta("seconds to drain on SIGTERM", lo=0, hi=60))
    max_body_mb: int = field(default=100, metadata=_meta("largest request body in MB", lo=1, hi=1024))
    header_timeout: float = field(
        default=10.0, metadata=_meta("seconds a client has to send a request's headers", lo=1, hi=300)
    )
    body_timeout: float = field(
        default=30.0, metadata=_meta("seconds a request body may go without a byte before it is cut", lo=1, hi=600)
    )
    keepalive_timeout: float = field(
        default=75.0, metadata=_meta("seconds an idle keep-alive connection is kept", lo=1, hi=3600)
    )
    max_connections_per_address: int = field(
        default=256, metadata=_meta("open connections one client address may hold (0 = no cap)", lo=0, hi=1000000)
    )
    retry_after: int = field(
        default=5, metadata=_meta("Retry-After seconds of a 503 while a store is unavailable", lo=1, hi=600)
    )


@dataclass(frozen=True, slots=True)
class DatabaseSettings:
    url: str = field(default="", metadata=_meta("PostgreSQL URL; empty = embedded server under data dir"))
    pool_min: int = field(default=2, metadata=_meta("smallest connection pool", lo=1, hi=100))
    pool_max: int = field(default=10, metadata=_meta("largest connection pool", lo=1, hi=500))
    statement_timeout: float = field(
        default=5.0, metadata=_meta("seconds a statement may run (the server cancels it)", lo=0.1, hi=3600)
    )
    acquire_timeout: float = field(
        default=2.0, metadata=_meta("seconds to wait for a pooled connection", lo=0.05, hi=600)
    )
    connect_timeout: float = field(
        default=3.0, metadata=_meta("seconds to open a connection", lo=0.1, hi=600)
    )


@dataclass(frozen=True, slots=True)
class RedisSettings:
    url: str = field(default="", metadata=_meta("Redis URL; empty = embedded server under data dir"))
    socket_timeout: float = field(
        default=2.0, metadata=_meta("seconds a Redis command may wait for its answer", lo=0.05, hi=600)
    )
    connect_timeout: float = field(
        default=2.0, metadata=_meta("seconds to open a Redis connection", lo=0.05, hi=600)
    )


@dataclass(frozen=True, slots=True)
class DataSettings:
    dir: Path = field(default=Path("var"), metadata=_meta("data directory (embedded stores, uploads)"))


@dataclass(frozen=True, slots=True)
class PathSettings:
    orgs: Path = field(default=Path("config/orgs"), metadata=_meta("directory of organisation TOML files"))
    taxonomy: Path = field(default=Path("config/taxonomy.toml"), metadata=_meta("case taxonomy"))
    hotlines: Path = field(default=Path("config/hotlines.toml"), metadata=_meta("hotline routing"))
    webui: Path = field(default=Path("webui"), metadata=_meta("directory of the web UI"))
    plans: Path = field(default=Path("config/plans"), metadata=_meta("directory of emergency plan TOML files"))


@dataclass(frozen=True, slots=True)
class AuthSettings:
    token_ttl: int = field(
        default=43200, metadata=_meta("bearer token lifetime in seconds", lo=60, hi=30 * 86400)
    )
    address_failures: int = field(
        default=20, metadata=_meta("failed logins from one address within the window before it waits (429)", lo=1, hi=100000)
    )
    failure_window: int = field(
        default=900, metadata=_meta("seconds failed logins are remembered", lo=10, hi=86400)
    )
    account_free_failures: int = field(
        default=3, metadata=_meta("failed logins of one account before its logins are slowed", lo=0, hi=1000)
    )
    account_max_delay: float = field(
        default=5.0, metadata=_meta("longest delay in seconds before a login of a much-attacked account is checked", lo=0, hi=60)
    )


@dataclass(frozen=True, slots=True)
class LogSettings:
    level: str = field(
        default="info", metadata=_meta("log level", choices=("debug", "info", "warning", "error"))
    )
    format: str = field(
        default="auto",
        metadata=_meta("auto = JSON unless stdout is a terminal", choices=("auto", "json", "console")),
    )


@dataclass(frozen=True, slots=True)
class DemoSettings:
    enabled: bool = field(default=False, metadata=_meta("run the demo feed (dispatchd dev turns it on)"))
    speed: float = field(default=1.0, metadata=_meta("demo time multiplier", lo=0.01, hi=10000))


@dataclass(frozen=True, slots=True)
class VideoSettings:
    ice_servers: str = field(
        default="", metadata=_meta("STUN/TURN URLs, space-separated; empty = host candidates only")
    )
    ice_username: str = field(default="", metadata=_meta("TURN user name"))
    ice_credential: str = field(default="", metadata=_meta("TURN password"))
    host_addresses: str = field(
        default="", metadata=_meta("local addresses offered as ICE host candidates; empty = all interfaces")
    )
    codec: str = field(
        default="VP8", metadata=_meta("video codec of new meetings", choices=("VP8", "H264"))
    )
    screen_slots: int = field(
        default=2, metadata=_meta("video streams each participant receives (chair, speaker)", lo=1, hi=4)
    )
    rotation_interval: int = field(
        default=10, metadata=_meta("default seconds per site when rotating (轮巡)", lo=3, hi=600)
    )
    link_base: str = field(default="", metadata=_meta("scheme://host[:port] of join links; empty = the request's"))
    max_participants: int = field(default=64, metadata=_meta("participants per meeting", lo=2, hi=1000))
    queue_frames: int = field(
        default=30, metadata=_meta("frames queued per subscriber before skipping to a keyframe", lo=4, hi=600)
    )
    rtsp_transport: str = field(
        default="tcp", metadata=_meta("RTSP transport for pulled cameras", choices=("tcp", "udp"))
    )


@dataclass(frozen=True, slots=True)
class IncidentSettings:
    county_prefix: str = field(default="RA", metadata=_meta("prefix of case numbers"))
    warn_share: float = field(
        default=0.8, metadata=_meta("share of a step's time limit at which to warn", lo=0.05, hi=0.99)
    )
    escalate_grace: int = field(
        default=1800, metadata=_meta("seconds past a deadline before automatic escalation", lo=0, hi=864000)
    )
    duplicate_radius_m: float = field(
        default=100.0, metadata=_meta("duplicate candidates: metres", lo=1, hi=100000)
    )
    duplicate_window_s: int = field(
        default=7200, metadata=_meta("duplicate candidates: seconds, same category", lo=60, hi=864000)
    )
    duplicate_caller_window_s: int = field(
        default=86400, metadata=_meta("duplicate candidates: seconds, same caller", lo=60, hi=2592000)
    )
    timer_interval: float = field(
        default=1.0, metadata=_meta("seconds between deadline checks", lo=0.05, hi=60)
    )
    max_returns: int = field(
        default=2,
        metadata=_meta("times a department may return a case (退单) before the dispatch stands", lo=0, hi=20),
    )
    max_extension_hours: int = field(
        default=720, metadata=_meta("most hours one extension (延期) may add", lo=1, hi=8760)
    )


@dataclass(frozen=True, slots=True)
class OsmandSettings:
    host: str = field(default="", metadata=_meta("address the OsmAnd HTTP server binds; empty = [http] host"))
    port: int = field(default=5055, metadata=_port("OsmAnd / Traccar Client HTTP port (0 picks a free one)"))
    require_key: bool = field(default=True, metadata=_meta("refuse fixes without the device's key"))
    reuse_port: bool = field(
        default=False, metadata=_meta("SO_REUSEPORT: several instances on one host share the port (one per core)")
    )
    max_connections_per_address: int = field(
        default=256, metadata=_meta("open connections one address may hold (0 = no cap)", lo=0, hi=1000000)
    )


@dataclass(frozen=True, slots=True)
class Jt808Settings:
    host: str = field(default="", metadata=_meta("address the JT/T 808 TCP server binds; empty = [http] host"))
    port: int = field(default=5015, metadata=_port("JT/T 808 TCP port (0 picks a free one)"))
    idle_timeout: float = field(
        default=600.0, metadata=_meta("seconds without a frame before a terminal is dropped", lo=1, hi=86400)
    )
    max_connections_per_address: int = field(
        default=256, metadata=_meta("open connections one address may hold (0 = no cap)", lo=0, hi=1000000)
    )
    reuse_port: bool = field(
        default=False, metadata=_meta("SO_REUSEPORT: several instances on one host share the port (one per core)")
    )


@dataclass(frozen=True, slots=True)
class UnitSettings:
    stale_after: int = field(
        default=300, metadata=_meta("seconds without a fix before a unit's position is stale", lo=10, hi=86400)
    )
    speed_team_kmh: float = field(default=40.0, metadata=_meta("ETA speed of a team", lo=1, hi=200))
    speed_vehicle_kmh: float = field(default=40.0, metadata=_meta("ETA speed of a vehicle", lo=1, hi=200))
    speed_person_kmh: float = field(default=5.0, metadata=_meta("ETA speed on foot", lo=1, hi=200))
    speed_motorbike_kmh: float = field(default=35.0, metadata=_meta("ETA speed of a motorbike", lo=1, hi=200))
    speed_ebike_kmh: float = field(default=20.0, metadata=_meta("ETA speed of an e-bike", lo=1, hi=200))
    route_factor: float = field(
        default=1.3, metadata=_meta("road distance / straight-line distance for ETAs", lo=1, hi=5)
    )
    nearest_radius_km: float = field(
        default=50.0, metadata=_meta("nearest squad: search radius in km", lo=0.1, hi=2000)
    )
    max_speed_kmh: float = field(
        default=300.0, metadata=_meta("a jump faster than this between fixes is refused", lo=10, hi=2000)
    )
    max_future_s: int = field(
        default=300, metadata=_meta("fixes further in the future than this are refused", lo=0, hi=86400)
    )
    china_only: bool = field(default=False, metadata=_meta("refuse fixes outside China's bounding box"))
    device_rate: float = field(
        default=5.0, metadata=_meta("messages per second a device may send, sustained", lo=0.1, hi=1000)
    )
    device_burst: int = field(
        default=30, metadata=_meta("messages a device may send at once above the rate", lo=1, hi=10000)
    )
    live_flush_s: float = field(
        default=0.1, metadata=_meta("seconds between writes of live positions to Redis", lo=0.01, hi=1)
    )
    track_flush_s: float = field(
        default=0.5, metadata=_meta("seconds between batched track writes to PostgreSQL", lo=0.05, hi=1)
    )
    publish_interval_s: float = field(
        default=1.0, metadata=_meta("least seconds between two position changes of one unit", lo=1, hi=60)
    )
    alarm_category: str = field(
        default="incident.criminal", metadata=_meta("taxonomy category of the case an emergency alarm opens")
    )
    track_retention_days: int = field(
        default=365,
        metadata=_meta("days of squad tracks kept; older months are dropped whole (0 = keep all)", lo=0, hi=36500),
    )
    outage_buffer: int = field(
        default=200000,
        metadata=_meta("fixes held while PostgreSQL is unreachable; past it devices are told to retry", lo=0, hi=10000000),
    )


@dataclass(frozen=True, slots=True)
class MapSettings:
    tile_url: str = field(
        default="",
        metadata=_meta("tile URL template with {z} {x} {y} and optional {s}; empty = offline basemap"),
    )
    tile_crs: str = field(
        default="wgs84",
        metadata=_meta("coordinate system of the tiles", choices=("wgs84", "cgcs2000", "gcj02")),
    )
    tile_subdomains: str = field(default="", metadata=_meta("characters substituted for {s} in turn"))
    label_url: str = field(default="", metadata=_meta("optional label tiles drawn above (same system)"))
    attribution: str = field(default="", metadata=_meta("credit line shown on the map"))
    min_zoom: int = field(default=3, metadata=_meta("smallest zoom level", lo=0, hi=22))
    max_zoom: int = field(default=18, metadata=_meta("largest zoom level", lo=0, hi=22))


@dataclass(frozen=True, slots=True)
class LiveSettings:
    frame_interval: float = field(
        default=0.1, metadata=_meta("board: seconds between frames of changes, at most", lo=0.01, hi=5)
    )
    heartbeat_interval: float = field(
        default=15.0, metadata=_meta("board and squad: seconds between heartbeats", lo=1, hi=300)
    )
    queue_frames: int = field(
        default=100, metadata=_meta("board: frames queued for one slow client before it must resume", lo=2, hi=10000)
    )
    compression: bool = field(
        default=False, metadata=_meta("permessage-deflate on the websockets (memory per connection)")
    )
    resume_max_rows: int = field(
        default=20000, metadata=_meta("board: resume with at most this many rows, else a snapshot", lo=100, hi=1000000)
    )
    retention_hours: float = field(
        default=24.0, metadata=_meta("hours the change feed keeps rows for resuming clients", lo=0.1, hi=720)
    )
    relay_poll_interval: float = field(
        default=1.0, metadata=_meta("relay: seconds between outbox polls when no NOTIFY wakes it", lo=0.01, hi=60)
    )
    relay_election_interval: float = field(
        default=2.0, metadata=_meta("seconds between attempts to become the relay", lo=0.05, hi=60)
    )
    resend_after: float = field(
        default=15.0, metadata=_meta("orders: seconds without a receipt before sending again", lo=1, hi=3600)
    )
    accept_timeout: float = field(
        default=60.0, metadata=_meta("orders: seconds to accept before the duty officer is alerted", lo=5, hi=86400)
    )
    auto_reassign: bool = field(
        default=False, metadata=_meta("orders: give an unaccepted order to the next nearest unit by itself")
    )
    timer_interval: float = field(
        default=1.0, metadata=_meta("orders: seconds between checks of resend and accept timers", lo=0.01, hi=60)
    )


@dataclass(frozen=True, slots=True)
class SipSettings:
    host: str = field(default="", metadata=_meta("address the SIP server binds (UDP and TCP); empty = [http] host"))
    port: int = field(default=5060, metadata=_port("SIP port, UDP and TCP (0 picks a free one)"))
    advertise_host: str = field(
        default="", metadata=_meta("address written in Contact, Via and SDP; empty = the bound or dialled host")
    )
    advertise_port: int = field(
        default=0, metadata=_port("port written in Contact and Via; 0 = the bound port (set it behind a stream proxy)")
    )
    max_calls: int = field(
        default=200, metadata=_meta("calls at once (waiting or connected); more get 486 Busy Here", lo=1, hi=100000)
    )
    t1: float = field(default=0.5, metadata=_meta("RFC 3261 T1: round-trip estimate in seconds", lo=0.05, hi=10))
    t2: float = field(default=4.0, metadata=_meta("RFC 3261 T2: longest retransmit interval in seconds", lo=0.5, hi=60))
    t4: float = field(default=5.0, metadata=_meta("RFC 3261 T4: seconds a message may live in the network", lo=0.5, hi=60))
    user_agent: str = field(default="dispatchd", metadata=_meta("Server and User-Agent header value"))
    record: bool = field(default=True, metadata=_meta("record answered calls (both sides) under the data dir"))
    max_connections_per_address: int = field(
        default=64, metadata=_meta("open SIP TCP connections one address may hold (0 = no cap)", lo=0, hi=100000)
    )
    standby: bool = field(
        default=True,
        metadata=_meta("one SIP edge per deployment: bind only while holding the PostgreSQL advisory lock of the port"),
    )
    standby_interval: float = field(
        default=2.0, metadata=_meta("seconds between a standby's attempts to take the SIP port's lock", lo=0.05, hi=60)
    )


@dataclass(frozen=True, slots=True)
class Gb28181Settings:
    host: str = field(default="", metadata=_meta("address the GB/T 28181 SIP server binds (UDP and TCP); empty = [http] host"))
    port: int = field(default=15060, metadata=_port("GB/T 28181 SIP port for cameras and NVRs, UDP and TCP (0 picks a free one)"))
    advertise_host: str = field(
        default="", metadata=_meta("address written in Via, Contact and the SDP of INVITEs; empty = the bound address")
    )
    platform_id: str = field(
        default="33038100002000000001", metadata=_meta("this platform's 20-digit SIP id (GB/T 28181 Annex D)")
    )
    domain: str = field(default="3303810000", metadata=_meta("10-digit SIP domain, the digest realm"))
    password: str = field(default="", metadata=_meta("shared device password; empty = only devices with their own"))
    keepalive_interval: float = field(
        default=60.0, metadata=_meta("seconds between a device's keep-alives (its configured interval)", lo=1, hi=3600)
    )
    missed_keepalives: int = field(
        default=3, metadata=_meta("keep-alives missed before a device is marked offline", lo=1, hi=100)
    )
    register_expires: int = field(
        default=3600, metadata=_meta("longest registration granted, in seconds", lo=60, hi=86400)
    )
    media_transport: str = field(
        default="udp",
        metadata=_meta("how devices send media by default", choices=("udp", "tcp-passive", "tcp-active")),
    )
    media_host: str = field(
        default="", metadata=_meta("address media is received on and written in the SDP; empty = advertise_host")
    )
    invite_timeout: float = field(
        default=10.0, metadata=_meta("seconds a device has to answer an INVITE", lo=1, hi=120)
    )
    stall_timeout: float = field(
        default=8.0, metadata=_meta("seconds without video before a stream is requested again", lo=1, hi=600)
    )
    linger: float = field(
        default=5.0, metadata=_meta("seconds a stream stays up after its last viewer left", lo=0, hi=600)
    )
    device_rate: float = field(
        default=20.0, metadata=_meta("SIP messages per second a device or address may send, sustained", lo=0.1, hi=10000)
    )
    device_burst: int = field(
        default=200, metadata=_meta("SIP messages a device or address may send at once above the rate", lo=1, hi=100000)
    )
    max_devices: int = field(default=5000, metadata=_meta("registered devices at once", lo=1, hi=1000000))
    org: str = field(default="", metadata=_meta("unit owning devices and unplaced cameras; empty = the first county"))
    alarm_cases: bool = field(
        default=True, metadata=_meta("a camera's intrusion, tripwire, tamper … alarm opens a case at the camera")
    )
    alarm_category: str = field(
        default="incident.criminal", metadata=_meta("taxonomy category of the case a camera alarm opens")
    )
    alarm_merge_s: int = field(
        default=600,
        metadata=_meta("seconds in which the same alarm of the same camera adds to its case, not a new one", lo=0, hi=86400),
    )
    t1: float = field(default=0.5, metadata=_meta("RFC 3261 T1: round-trip estimate in seconds", lo=0.05, hi=10))
    user_agent: str = field(default="dispatchd", metadata=_meta("User-Agent header value"))


@dataclass(frozen=True, slots=True)
class HotlineSettings:
    org: str = field(default="", metadata=_meta("unit whose duty desk takes the hotline; empty = the first county"))
    ring_timeout: float = field(
        default=20.0, metadata=_meta("seconds an officer's console rings before the next officer's", lo=3, hi=600)
    )
    answer_target: float = field(
        default=10.0, metadata=_meta("NFPA 1225: seconds within which calls are to be answered", lo=1, hi=600)
    )
    answer_share: float = field(
        default=0.9, metadata=_meta("NFPA 1225: share of calls to answer within the target", lo=0.01, hi=1)
    )
    cti_hmac_key: str = field(default="", metadata=_meta("HMAC-SHA256 key of the CTI webhook; empty = webhook off"))
    cti_max_skew: int = field(
        default=300, metadata=_meta("seconds a CTI event's timestamp may differ from our clock", lo=5, hi=86400)
    )
    history_limit: int = field(
        default=10, metadata=_meta("previous calls and cases shown for a caller", lo=1, hi=200)
    )
    queue_interval: float = field(
        default=1.0, metadata=_meta("seconds between rounds of the call queue (ring the next officer)", lo=0.05, hi=60)
    )


@dataclass(frozen=True, slots=True)
class VoiceSettings:
    record_legs: bool = field(
        default=False, metadata=_meta("besides the mixed recording, one file per side (caller, officer)")
    )
    recording_days: int = field(
        default=180, metadata=_meta("days recordings are kept (0 = for ever)", lo=0, hi=36500)
    )
    queue_announce_interval: float = field(
        default=30.0, metadata=_meta("seconds between announcements of a waiting caller's position", lo=5, hi=600)
    )
    menu_timeout: float = field(
        default=6.0, metadata=_meta("seconds the DTMF menu waits for a key before the call queues", lo=1, hi=60)
    )
    trunk: str = field(
        default="", metadata=_meta("host[:port] of the SIP trunk or PBX for calls out; empty = no calls out")
    )
    trunk_transport: str = field(default="udp", metadata=_meta("transport to the trunk", choices=("udp", "tcp")))
    trunk_domain: str = field(default="", metadata=_meta("domain of the Request-URI and From; empty = the trunk's host"))
    trunk_username: str = field(default="", metadata=_meta("digest user name at the trunk (RFC 7616)"))
    trunk_password: str = field(default="", metadata=_meta("digest password at the trunk"))
    caller_id: str = field(default="967999", metadata=_meta("number calls out are made from (From user)"))
    dial_prefix: str = field(default="", metadata=_meta("prefix the trunk needs before a number (e.g. 0 for an outside line)"))
    ring_timeout: float = field(
        default=30.0, metadata=_meta("seconds a call out rings before it is given up", lo=5, hi=300)
    )
    escalate_after: float = field(
        default=0.0,
        metadata=_meta("叫应: seconds after an order is sent without acceptance before the unit's phones are rung; 0 = off", lo=0, hi=86400),
    )
    escalate_key_timeout: float = field(
        default=10.0, metadata=_meta("叫应: seconds the called person has to press 1 after the prompt", lo=2, hi=120)
    )


@dataclass(frozen=True, slots=True)
class ReportSettings:
    photo_max_mb: float = field(
        default=10.0, metadata=_meta("largest photo of a grid report in MB (larger: 413)", lo=0.01, hi=100)
    )
    max_photos: int = field(default=9, metadata=_meta("photos per report or verification, at most", lo=1, hi=50))
    photos_per_hour: int = field(
        default=120, metadata=_meta("photos one user may upload in an hour (more: 429)", lo=1, hi=100000)
    )
    photo_mb_per_hour: float = field(
        default=500.0, metadata=_meta("MB of photos one user may upload in an hour (more: 429)", lo=1, hi=1000000)
    )
    min_free_mb: float = field(
        default=1024.0,
        metadata=_meta("free MB under the data dir below which photos are refused (507); text is still taken", lo=0, hi=1e9),
    )
    patrols_per_day: int = field(
        default=2, metadata=_meta("patrol rule: patrols a grid worker makes a day", lo=1, hi=24)
    )
    patrol_min_hours: float = field(
        default=2.0, metadata=_meta("patrol rule: hours a patrol lasts at least to count", lo=0.05, hi=24)
    )
    open311_public: bool = field(
        default=True, metadata=_meta("Open311 reads (services, requests) without api_key, as the spec has them")
    )
    open311_max_requests: int = field(
        default=1000, metadata=_meta("Open311 GET requests: most requests in one answer", lo=1, hi=10000)
    )
    open311_default_days: int = field(
        default=90, metadata=_meta("Open311 GET requests: days back when no start_date is given", lo=1, hi=3650)
    )
    demo_per_day: float = field(
        default=30.0, metadata=_meta("demo feed: grid reports a day in the demo county at speed 1", lo=0, hi=100000)
    )


@dataclass(frozen=True, slots=True)
class PlanSettings:
    propose_interval: float = field(
        default=5.0, metadata=_meta("seconds between looks for open cases that match a plan's trigger", lo=0.05, hi=3600)
    )
    propose_window: int = field(
        default=86400, metadata=_meta("only cases reported within this many seconds are proposed a plan", lo=60, hi=30 * 86400)
    )
    escalate_after: int = field(
        default=600, metadata=_meta("seconds a notice may stay unacknowledged before it goes to the deputy", lo=10, hi=86400)
    )
    timer_interval: float = field(
        default=5.0, metadata=_meta("seconds between looks for due escalations", lo=0.05, hi=3600)
    )
    sms_gateway: str = field(default="", metadata=_meta("URL of the HTTP SMS gateway; empty = no SMS (recorded as unavailable)"))
    sms_style: str = field(
        default="generic",
        metadata=_meta("request shape of the SMS gateway", choices=("generic", "aliyun", "tencent")),
    )
    sms_sign: str = field(default="", metadata=_meta("SMS signature (短信签名) the carrier registered"))
    sms_template: str = field(default="", metadata=_meta("SMS template id (Aliyun TemplateCode, Tencent TemplateId)"))
    sms_app_id: str = field(
        default="", metadata=_meta("SMS application id (Tencent SmsSdkAppId; Aliyun AccessKeyId when not signed here)")
    )
    sms_api_key: str = field(default="", metadata=_meta("bearer secret sent to the SMS gateway (never logged)"))
    sms_access_key_id: str = field(
        default="", metadata=_meta("cloud access key id (Aliyun AccessKeyId, Tencent SecretId): requests are signed")
    )
    sms_access_key_secret: str = field(
        default="", metadata=_meta("cloud access key secret (Aliyun AccessKeySecret, Tencent SecretKey; never logged)")
    )
    sms_region: str = field(
        default="", metadata=_meta("cloud region of a signed request; empty = cn-hangzhou (Aliyun), ap-guangzhou (Tencent)")
    )
    sms_timeout: float = field(default=5.0, metadata=_meta("seconds an SMS request may take", lo=0.1, hi=120))
    cap_feed_url: str = field(default="", metadata=_meta("URL of a CAP 1.2 feed to poll (an alert or an Atom/RSS list of alerts); empty = none"))
    cap_poll_interval: float = field(default=300.0, metadata=_meta("seconds between polls of the CAP feed", lo=5, hi=86400))
    cap_max_kb: int = field(default=512, metadata=_meta("largest CAP document taken, in KB", lo=4, hi=10240))


@dataclass(frozen=True, slots=True)
class Settings:
    http: HttpSettings = field(default_factory=HttpSettings)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    data: DataSettings = field(default_factory=DataSettings)
    paths: PathSettings = field(default_factory=PathSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    log: LogSettings = field(default_factory=LogSettings)
    demo: DemoSettings = field(default_factory=DemoSettings)
    video: VideoSettings = field(default_factory=VideoSettings)
    incidents: IncidentSettings = field(default_factory=IncidentSettings)
    reports: ReportSettings = field(default_factory=ReportSettings)
    live: LiveSettings = field(default_factory=LiveSettings)
    map: MapSettings = field(default_factory=MapSettings)
    osmand: OsmandSettings = field(default_factory=OsmandSettings)
    jt808: Jt808Settings = field(default_factory=Jt808Settings)
    units: UnitSettings = field(default_factory=UnitSettings)
    sip: SipSettings = field(default_factory=SipSettings)
    hotline: HotlineSettings = field(default_factory=HotlineSettings)
    voice: VoiceSettings = field(default_factory=VoiceSettings)
    gb28181: Gb28181Settings = field(default_factory=Gb28181Settings)
    plans: PlanSettings = field(default_factory=PlanSettings)

    @property
    def embedded_database(self) -> bool:
        return not self.database.url

    @property
    def embedded_redis(self) -> bool:
        return not self.redis.url


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _coerce(key: str, raw: object, typ: Any, meta: Mapping[str, Any]) -> object:
    value: object
    if typ is bool:
        if isinstance(raw, bool):
            value = raw
        elif isinstance(raw, str) and raw.strip().lower() in _TRUE | _FALSE:
            value = raw.strip().lower() in _TRUE
        else:
            raise ConfigError(key, raw, "must be true or false")
    elif typ is int:
        try:
            if isinstance(raw, bool) or isinstance(raw, float):
                raise ValueError
            value = int(str(raw).strip())
        except ValueError:
            raise ConfigError(key, raw, f"must be an integer{_range(meta)}") from None
    elif typ is float:
        try:
            if isinstance(raw, bool):
                raise ValueError
            value = float(str(raw).strip())
        except ValueError:
            raise ConfigError(key, raw, f"must be a number{_range(meta)}") from None
    elif typ is Path:
        if not isinstance(raw, str | Path) or not str(raw).strip():
            raise ConfigError(key, raw, "must be a non-empty path")
        value = Path(str(raw))
    else:
        if not isinstance(raw, str):
            raise ConfigError(key, raw, "must be a string")
        value = raw.strip()
    lo, hi, choices = meta.get("lo"), meta.get("hi"), meta.get("choices") or ()
    if isinstance(value, int | float) and not isinstance(value, bool):
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ConfigError(key, raw, f"must be{_range(meta)}")
    if choices and value not in choices:
        raise ConfigError(key, raw, "must be one of " + ", ".join(choices))
    return value


def _range(meta: Mapping[str, Any]) -> str:
    lo, hi = meta.get("lo"), meta.get("hi")
    if lo is None and hi is None:
        return ""
    return f" between {lo:g} and {hi:g}"


def env_name(section: str, key: str) -> str:
    return f"DISPATCHD_{section.upper()}_{key.upper()}"


def load_settings(
    path: Path | None = None, env: Mapping[str, str] | None = None, **overrides: object
) -> Settings:
    """Build the settings from a TOML file (optional), the environment and keyword overrides.

    ``overrides`` take ``section_key=value`` (``http_port=0``) and win over everything; tests use them.
    Relative paths are resolved against the project root: the parent of the config file's directory
    when a file is given, otherwise the current directory.
    """
    env = os.environ if env is None else env
    if path is None and env.get("DISPATCHD_CONFIG"):
        path = Path(env["DISPATCHD_CONFIG"])
    doc: dict[str, Any] = {}
    root = Path.cwd()
    if path is not None:
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError("DISPATCHD_CONFIG", str(path), "file does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(str(path), "…", f"is not valid TOML: {exc}") from None
        root = path.resolve().parent.parent
    sections: dict[str, object] = {}
    hints = get_type_hints(Settings)
    for section_field in dataclasses.fields(Settings):
        name = section_field.name
        cls = hints[name]
        table = doc.get(name, {})
        if not isinstance(table, dict):
            raise ConfigError(f"[{name}]", table, "must be a table")
        unknown = set(table) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"[{name}] {sorted(unknown)[0]}", table[sorted(unknown)[0]], "unknown key")
        values: dict[str, object] = {}
        sub_hints = get_type_hints(cls)
        for f in dataclasses.fields(cls):
            key = env_name(name, f.name)
            raw: object
            if f"{name}_{f.name}" in overrides:
                raw = overrides[f"{name}_{f.name}"]
            elif key in env:
                raw = env[key]
            elif f.name in table:
                raw = table[f.name]
                key = f"[{name}] {f.name}"
            else:
                continue
            values[f.name] = _coerce(key, raw, sub_hints[f.name], f.metadata)
        sections[name] = cls(**values)
    settings = Settings(**sections)  # type: ignore[arg-type]
    _check_gb28181(settings.gb28181)
    return _resolve_paths(settings, root)


def _check_gb28181(gb: Gb28181Settings) -> None:
    """GB/T 28181-2016 Annex D: a 20-digit id; the SIP domain is the first 10 digits of a centre's id."""
    if not (len(gb.platform_id) == 20 and gb.platform_id.isascii() and gb.platform_id.isdigit()):
        raise ConfigError(env_name("gb28181", "platform_id"), gb.platform_id, "must be 20 digits")
    if not (len(gb.domain) == 10 and gb.domain.isascii() and gb.domain.isdigit()):
        raise ConfigError(env_name("gb28181", "domain"), gb.domain, "must be 10 digits")


def _resolve_paths(settings: Settings, root: Path) -> Settings:
    def abs_(p: Path) -> Path:
        return p if p.is_absolute() else (root / p)

    paths = settings.paths
    return dataclasses.replace(
        settings,
        data=DataSettings(dir=abs_(settings.data.dir).resolve()),
        paths=PathSettings(
            orgs=abs_(paths.orgs),
            taxonomy=abs_(paths.taxonomy),
            hotlines=abs_(paths.hotlines),
            webui=abs_(paths.webui),
            plans=abs_(paths.plans),
        ),
    )


def describe(settings: Settings) -> dict[str, dict[str, object]]:
    """The effective settings as plain data, URLs with passwords masked (for check-config)."""
    out: dict[str, dict[str, object]] = {}
    for section_field in dataclasses.fields(settings):
        section = getattr(settings, section_field.name)
        values: dict[str, object] = {}
        for f in dataclasses.fields(section):
            v = getattr(section, f.name)
            if f.name == "url" and isinstance(v, str):
                v = mask_url(v)
            if f.name.endswith("_key") and isinstance(v, str) and v:
                v = "***"  # hotline CTI webhook key: never printed
            elif f.name.endswith("credential") and v:
                v = "***"  # video TURN password: never printed
            elif f.name.endswith("password") and v:
                v = "***"  # voice trunk password, GB/T 28181 shared device password: never printed
            elif f.name.endswith("_secret") and v:
                v = "***"  # the SMS cloud's access key secret: never printed
            values[f.name] = str(v) if isinstance(v, Path) else v
        out[section_field.name] = values
    return out


def mask_url(url: str) -> str:
    """``postgresql://user:secret@host/db`` → ``postgresql://user:***@host/db``."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    creds, host = rest.rsplit("@", 1)
    if ":" in creds:
        creds = creds.split(":", 1)[0] + ":***"
    return f"{scheme}://{creds}@{host}"


def summary(settings: Settings) -> dict[str, object]:
    """The effective configuration in brief, for the start-up log line: where the instance serves and
    keeps its data, its stores (passwords masked), and every setting that differs from its default
    (secrets masked as in :func:`describe`)."""
    full, defaults = describe(settings), describe(Settings())
    changed = {
        f"{section}.{key}": value
        for section, values in full.items()
        if section not in ("paths", "data")
        for key, value in values.items()
        if defaults[section][key] != value
    }
    return {
        "http": f"{settings.http.host}:{settings.http.port}",
        "database": mask_url(settings.database.url) if settings.database.url else "embedded",
        "redis": mask_url(settings.redis.url) if settings.redis.url else "embedded",
        "data_dir": str(settings.data.dir),
        "changed": changed,
    }
