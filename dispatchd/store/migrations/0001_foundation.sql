-- Foundation: organisation tree, departments, accounts, bearer tokens, and the outbox that every
-- change writes in the same transaction as its state (the change feed reads it in seq order).

CREATE TABLE org_units (
    code        text PRIMARY KEY,
    name        text NOT NULL,
    name_en     text NOT NULL,
    level       text NOT NULL CHECK (level IN ('province', 'city', 'county', 'township', 'community', 'grid')),
    parent      text REFERENCES org_units (code) DEFERRABLE INITIALLY DEFERRED,
    path        text[] NOT NULL,          -- codes from the root down to and including this unit
    boundary    jsonb,                    -- GeoJSON Polygon, WGS-84
    centre_lon  double precision,
    centre_lat  double precision,
    synthetic   boolean NOT NULL DEFAULT false
);
CREATE INDEX org_units_path ON org_units USING gin (path);
CREATE INDEX org_units_parent ON org_units (parent);

CREATE TABLE departments (
    code     text PRIMARY KEY,
    name     text NOT NULL,
    name_en  text NOT NULL,
    kind     text NOT NULL,
    org_code text NOT NULL REFERENCES org_units (code) DEFERRABLE INITIALLY DEFERRED,
    path     text[] NOT NULL
);
CREATE INDEX departments_path ON departments USING gin (path);

CREATE TABLE users (
    id              bigserial PRIMARY KEY,
    username        text NOT NULL UNIQUE CHECK (length(username) BETWEEN 1 AND 64),
    password_hash   text NOT NULL,
    role            text NOT NULL CHECK (role IN ('duty_officer', 'leader', 'squad_member', 'grid_worker',
                                                  'department_handler', 'admin', 'ops')),
    org_code        text NOT NULL REFERENCES org_units (code),
    department_code text REFERENCES departments (code),
    display_name    text NOT NULL DEFAULT '',
    created_at      timestamptz NOT NULL DEFAULT now(),
    disabled        boolean NOT NULL DEFAULT false
);

CREATE TABLE auth_tokens (
    token_hash  bytea PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX auth_tokens_expires ON auth_tokens (expires_at);

-- The outbox: one row per change, seq strictly increasing in commit order (writers serialise on an
-- advisory transaction lock before inserting, see dispatchd/store/outbox.py).
CREATE TABLE outbox (
    seq         bigserial PRIMARY KEY,
    topic       text NOT NULL,            -- incident, unit, order, call, meeting, ...
    entity_id   text NOT NULL,
    org_path    text[] NOT NULL,          -- the owning unit's path: who may see this change
    payload     jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX outbox_created ON outbox (created_at);

-- Open311 API keys (stored hashed; the key itself is printed once by `dispatchd apikey add`).
CREATE TABLE api_keys (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    org_code    text NOT NULL REFERENCES org_units (code),
    key_hash    bytea NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked     boolean NOT NULL DEFAULT false
);
