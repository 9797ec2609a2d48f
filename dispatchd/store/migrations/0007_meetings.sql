-- Video meetings (视频会商, 综治视联网): who convened them, who is invited with which join token,
-- pulled sources (RTSP cameras, squad phones), recordings, and an append-only audit trail.
-- Media never touches the database: it is forwarded in memory by the instance that hosts the room.

CREATE TABLE meetings (
    id            bigserial PRIMARY KEY,
    title         text NOT NULL CHECK (length(title) BETWEEN 1 AND 200),
    org_code      text NOT NULL REFERENCES org_units (code),   -- the convening unit
    org_path      text[] NOT NULL,
    created_by    bigint REFERENCES users (id) ON DELETE SET NULL,
    status        text NOT NULL CHECK (status IN ('scheduled', 'running', 'ended')),
    scheduled_at  timestamptz,
    started_at    timestamptz,
    ended_at      timestamptz,
    incident_id   text,                                        -- the case this consultation is about
    codec         text NOT NULL CHECK (codec IN ('VP8', 'H264')),
    created_at    timestamptz NOT NULL
);
CREATE INDEX meetings_status ON meetings (status);
CREATE INDEX meetings_org_path ON meetings USING gin (org_path);
CREATE INDEX meetings_incident ON meetings (incident_id) WHERE incident_id IS NOT NULL;

-- One row per join link: an invited unit (command room), the chair, a squad phone or a camera.
CREATE TABLE meeting_invites (
    id          bigserial PRIMARY KEY,
    meeting_id  bigint NOT NULL REFERENCES meetings (id) ON DELETE CASCADE,
    unit_code   text REFERENCES org_units (code),
    label       text NOT NULL,
    role        text NOT NULL CHECK (role IN ('chair', 'speaker', 'participant', 'viewer')),
    kind        text NOT NULL CHECK (kind IN ('unit', 'chair', 'squad', 'rtsp')),
    token_hash  bytea UNIQUE,                                   -- sha256 of the link token; NULL for cameras
    source_url  text,                                           -- RTSP URL of a pulled camera
    user_id     bigint REFERENCES users (id) ON DELETE SET NULL,
    created_at  timestamptz NOT NULL,
    revoked     boolean NOT NULL DEFAULT false
);
CREATE INDEX meeting_invites_meeting ON meeting_invites (meeting_id);

CREATE TABLE meeting_recordings (
    id          bigserial PRIMARY KEY,
    meeting_id  bigint NOT NULL REFERENCES meetings (id) ON DELETE CASCADE,
    incident_id text,
    path        text NOT NULL,                                  -- relative to the data directory
    started_at  timestamptz NOT NULL,
    stopped_at  timestamptz,
    bytes       bigint
);
CREATE INDEX meeting_recordings_meeting ON meeting_recordings (meeting_id);

CREATE TABLE meeting_events (
    id          bigserial PRIMARY KEY,
    meeting_id  bigint NOT NULL REFERENCES meetings (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL,
    actor       text NOT NULL,                                  -- user name or invite label
    action      text NOT NULL,
    detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX meeting_events_meeting ON meeting_events (meeting_id, id);
