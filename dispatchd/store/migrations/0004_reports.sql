-- Grid reports (平安通) and Open311: idempotency keys of submissions, photos and which cases they
-- belong to, and the patrol log (网格日志) with its track points and places visited
-- (dispatchd/channels/reports/).

-- One row per client-chosen Idempotency-Key, inserted in the same transaction as the case it
-- created. A retry (even concurrent: it waits on the unique index until the first commits) reads
-- the stored answer instead of opening a second case. ``scope`` keeps keys per client:
-- 'user:<id>' for a grid worker, 'apikey:<id>' for an Open311 client.
CREATE TABLE report_requests (
    id           bigserial PRIMARY KEY,
    scope        text NOT NULL,
    idem_key     text NOT NULL CHECK (length(idem_key) BETWEEN 1 AND 200),
    fingerprint  bytea NOT NULL,            -- SHA-256 of the canonical report and its photos' digests
    incident_id  bigint REFERENCES incidents (id),
    status       smallint,                  -- HTTP status of the first answer
    response     text,                      -- the first answer's body, returned as is on a retry
    created_at   timestamptz NOT NULL,
    UNIQUE (scope, idem_key)
);
CREATE INDEX report_requests_incident ON report_requests (incident_id);

-- Photos, content-addressed: the original is <data dir>/media/<aa>/<sha256>, the copy without
-- metadata (GPS, EXIF, XMP, text chunks) that everyone but the uploader sees is stored the same
-- way under its own digest.
CREATE TABLE photos (
    sha256         text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    media_type     text NOT NULL CHECK (media_type IN ('image/jpeg', 'image/png', 'image/webp')),
    size           bigint NOT NULL CHECK (size > 0),
    public_sha256  text NOT NULL CHECK (public_sha256 ~ '^[0-9a-f]{64}$'),
    public_size    bigint NOT NULL CHECK (public_size > 0),
    stripped       text[] NOT NULL DEFAULT '{}',  -- what the public copy left out: exif, xmp, text, ...
    created_at     timestamptz NOT NULL
);
CREATE INDEX photos_public ON photos (public_sha256);

-- Which case a photo belongs to, who uploaded it and why (report, verify, reopen). A user may
-- fetch a photo when they may see one of its cases; its uploader gets the original.
CREATE TABLE photo_links (
    id           bigserial PRIMARY KEY,
    sha256       text NOT NULL REFERENCES photos (sha256),
    incident_id  bigint NOT NULL REFERENCES incidents (id),
    uploaded_by  bigint REFERENCES users (id),   -- NULL: an Open311 client
    purpose      text NOT NULL CHECK (purpose IN ('report', 'verify', 'reopen')),
    created_at   timestamptz NOT NULL
);
CREATE INDEX photo_links_sha ON photo_links (sha256);
CREATE INDEX photo_links_incident ON photo_links (incident_id);

-- The patrol log (网格日志): a grid worker starts and stops a patrol; the phone sends track points
-- while it runs; places visited and notes are written down. ``local_day`` is the day (UTC+8) the
-- patrol started: daily compliance (e.g. two patrols of two hours, as in Taizhou) counts it there.
CREATE TABLE patrols (
    id          bigserial PRIMARY KEY,
    user_id     bigint NOT NULL REFERENCES users (id),
    org_code    text NOT NULL REFERENCES org_units (code),  -- the worker's unit (grid) at the start
    org_path    text[] NOT NULL,
    started_at  timestamptz NOT NULL,
    ended_at    timestamptz,
    local_day   date NOT NULL,
    distance_m  double precision NOT NULL DEFAULT 0,
    notes       text,
    CHECK (ended_at IS NULL OR ended_at >= started_at)
);
-- At most one running patrol per worker.
CREATE UNIQUE INDEX patrols_one_running ON patrols (user_id) WHERE ended_at IS NULL;
CREATE INDEX patrols_user_day ON patrols (user_id, local_day);
CREATE INDEX patrols_day ON patrols (local_day);
CREATE INDEX patrols_org_path ON patrols USING gin (org_path);

-- Track points of a patrol (WGS-84). The key makes a batch resent after a lost answer harmless.
CREATE TABLE patrol_points (
    patrol_id  bigint NOT NULL REFERENCES patrols (id) ON DELETE CASCADE,
    at         timestamptz NOT NULL,
    lat        double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    lon        double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    accuracy   real,
    PRIMARY KEY (patrol_id, at)
);

-- Places visited during a patrol (a shop, a rented house, a construction site), with a note.
CREATE TABLE patrol_visits (
    id          bigserial PRIMARY KEY,
    patrol_id   bigint NOT NULL REFERENCES patrols (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL,
    place       text NOT NULL CHECK (length(place) BETWEEN 1 AND 200),
    lat         double precision,
    lon         double precision,
    note        text,
    UNIQUE (patrol_id, at, place)
);
