-- Cameras of the public-security video network (GB/T 28181): the devices that register with this
-- platform (IP cameras, NVRs, lower platforms) and their video channels, the cameras.
-- Media never touches the database: live video is forwarded in memory by the instance holding the
-- device's registration.

CREATE TABLE gb_devices (
    id              text PRIMARY KEY CHECK (id ~ '^[0-9]{20}$'),    -- GB/T 28181 Annex D id
    name            text NOT NULL DEFAULT '',
    manufacturer    text NOT NULL DEFAULT '',
    model           text NOT NULL DEFAULT '',
    firmware        text NOT NULL DEFAULT '',
    org_code        text NOT NULL REFERENCES org_units (code),     -- owning unit ([gb28181] org by default)
    org_path        text[] NOT NULL,
    status          text NOT NULL DEFAULT 'offline' CHECK (status IN ('online', 'offline')),
    transport       text CHECK (transport IN ('UDP', 'TCP')),     -- as it registered
    remote          text,                                          -- host:port it registered from
    user_agent      text NOT NULL DEFAULT '',
    -- How it sends live video; NULL = [gb28181] media_transport.
    media_transport text CHECK (media_transport IN ('udp', 'tcp-passive', 'tcp-active')),
    -- The datum of the coordinates its catalogue reports (converted to WGS-84 when GCJ-02).
    coordinates     text NOT NULL DEFAULT 'wgs84' CHECK (coordinates IN ('wgs84', 'gcj02')),
    -- Its own password, as digest authentication needs it (RFC 2617 / RFC 7616 HA1): H(id:realm:password)
    -- in MD5 and SHA-256, and the realm they were made for. NULL = the shared [gb28181] password.
    ha1_md5         text,
    ha1_sha256      text,
    ha1_realm       text,
    instance_id     text,                                          -- the instance holding its registration
    registered_at   timestamptz,
    last_seen_at    timestamptz,
    version         integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL
);
CREATE INDEX gb_devices_org ON gb_devices (org_code);

CREATE TABLE cameras (
    id              text PRIMARY KEY CHECK (id ~ '^[0-9]{20}$'),    -- the channel id
    device_id       text NOT NULL REFERENCES gb_devices (id) ON DELETE CASCADE,
    name            text NOT NULL DEFAULT '',
    name_override   boolean NOT NULL DEFAULT false,                    -- named by hand: catalogues keep it
    manufacturer    text NOT NULL DEFAULT '',
    model           text NOT NULL DEFAULT '',
    address         text NOT NULL DEFAULT '',
    civil_code      text NOT NULL DEFAULT '',
    -- online when its device is and its catalogue says ON; reported_status keeps what the catalogue said.
    status          text NOT NULL DEFAULT 'offline' CHECK (status IN ('online', 'offline')),
    reported_status text NOT NULL DEFAULT '',
    lat             double precision CHECK (lat BETWEEN -90 AND 90),      -- WGS-84
    lon             double precision CHECK (lon BETWEEN -180 AND 180),
    reported_lat    double precision,                                  -- as the device reported it
    reported_lon    double precision,
    position_source text NOT NULL DEFAULT 'none' CHECK (position_source IN ('device', 'manual', 'none')),
    org_code        text NOT NULL REFERENCES org_units (code),         -- the grid it stands in, or overridden
    org_path        text[] NOT NULL,
    org_override    boolean NOT NULL DEFAULT false,
    ptz_type        smallint,                                          -- 1 dome, 2 half-dome, 3 fixed, 4 remote
    removed         boolean NOT NULL DEFAULT false,                    -- gone from the device's catalogue
    version         integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL,
    updated_at      timestamptz NOT NULL,
    CHECK ((lat IS NULL) = (lon IS NULL))
);
CREATE INDEX cameras_device ON cameras (device_id);
CREATE INDEX cameras_org ON cameras (org_code) WHERE NOT removed;
CREATE INDEX cameras_position ON cameras (lat, lon) WHERE lat IS NOT NULL AND NOT removed;

-- A camera can join a meeting as a source, like an RTSP URL.
ALTER TABLE meeting_invites DROP CONSTRAINT meeting_invites_kind_check;
ALTER TABLE meeting_invites ADD CONSTRAINT meeting_invites_kind_check
    CHECK (kind IN ('unit', 'chair', 'squad', 'rtsp', 'camera'));
