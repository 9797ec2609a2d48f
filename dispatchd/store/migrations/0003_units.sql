-- Squad units (应急中队: teams, vehicles, people on foot, motorbikes, e-bikes), their members, their
-- tracking devices (OsmAnd phones, JT/T 808 vehicle terminals), an audit of their changes, and the
-- track history. The live position of a unit is in Redis (see dispatchd/store/keys.py); the track
-- here is written in batches by the position sink (dispatchd/channels/gps/sink.py).

CREATE TABLE squad_units (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    kind        text NOT NULL CHECK (kind IN ('team', 'vehicle', 'person', 'motorbike', 'ebike')),
    org_code    text NOT NULL REFERENCES org_units (code),
    org_path    text[] NOT NULL,          -- the owning org unit's path, root first
    status      text NOT NULL DEFAULT 'available'
                CHECK (status IN ('available', 'dispatched', 'en_route', 'on_scene', 'returning', 'off_duty')),
    version     integer NOT NULL DEFAULT 1,
    created_at  timestamptz NOT NULL,
    updated_at  timestamptz NOT NULL
);
CREATE INDEX squad_units_org ON squad_units (org_code);
CREATE INDEX squad_units_path ON squad_units USING gin (org_path);

-- Squad members (users, normally role squad_member) of a unit; a user may be in several units.
CREATE TABLE unit_members (
    unit_id     bigint NOT NULL REFERENCES squad_units (id) ON DELETE CASCADE,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    added_at    timestamptz NOT NULL,
    PRIMARY KEY (unit_id, user_id)
);
CREATE INDEX unit_members_user ON unit_members (user_id);

-- Tracking devices. ``identifier`` is the OsmAnd ``id`` or the JT/T 808 terminal phone number
-- (BCD digits without leading zeros). ``secret_hash`` is the SHA-256 of the OsmAnd device key or of
-- the JT/T 808 auth code the platform issued at registration (0x8100); NULL until one is issued.
CREATE TABLE devices (
    id           bigserial PRIMARY KEY,
    unit_id      bigint NOT NULL REFERENCES squad_units (id) ON DELETE CASCADE,
    protocol     text NOT NULL CHECK (protocol IN ('osmand', 'jt808')),
    identifier   text NOT NULL CHECK (length(identifier) BETWEEN 1 AND 64),
    secret_hash  bytea,
    created_at   timestamptz NOT NULL,
    registered_at timestamptz,             -- JT/T 808: last successful terminal registration
    disabled     boolean NOT NULL DEFAULT false,
    UNIQUE (protocol, identifier)
);
CREATE INDEX devices_unit ON devices (unit_id);

-- Append-only audit of unit changes (created, status, member and device changes).
CREATE TABLE unit_events (
    id          bigserial PRIMARY KEY,
    unit_id     bigint NOT NULL REFERENCES squad_units (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL,
    actor       text NOT NULL,
    action      text NOT NULL,
    details     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX unit_events_unit ON unit_events (unit_id, at);

-- Track history, one row per accepted fix, written with COPY in batches. No foreign keys: rows come
-- only from registered devices, and a per-row check would cost more than the insert itself.
CREATE TABLE track_points (
    unit_id      bigint NOT NULL,
    device_id    bigint NOT NULL,
    at           timestamptz NOT NULL,      -- fix time (UTC)
    lat          double precision NOT NULL, -- WGS-84
    lon          double precision NOT NULL,
    speed_kmh    real,
    heading      real,
    altitude_m   real,
    accuracy_m   real,
    battery      real,
    source       text NOT NULL,             -- osmand | jt808 | squad (browser geolocation)
    received_at  timestamptz NOT NULL
);
CREATE INDEX track_points_unit_at ON track_points (unit_id, at);
