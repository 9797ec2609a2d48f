-- The hotline's calls out through the SIP trunk: callbacks to reporters (回访), calls to departments,
-- and 叫应 — ringing the people of a squad unit, in the order of its call list, about an order nobody
-- accepted, until one of them accepts it by pressing 1. Media never touches the database.

CREATE TABLE voice_callouts (
    id           bigserial PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('callback', 'department', 'escalation')),
    number       text NOT NULL,                    -- the number dialled, normalised
    org_code     text NOT NULL REFERENCES org_units (code),   -- whose desk placed it
    org_path     text[] NOT NULL,
    incident_id  bigint REFERENCES incidents (id),
    order_id     bigint REFERENCES orders (id),
    officer_id   bigint REFERENCES users (id),     -- who placed it from the console
    callee_id    bigint REFERENCES users (id),     -- who is called, when a user (叫应)
    instance_id  text NOT NULL,                    -- the instance holding its SIP dialog
    external_id  text,                             -- SIP Call-ID;tag
    state        text NOT NULL CHECK (state IN ('dialling', 'ringing', 'answered', 'ended', 'failed')),
    result       text,                             -- answered, busy, no_answer, cancelled, failed, accepted, not_accepted
    sip_status   integer,                          -- the final status of a call that failed
    created_at   timestamptz NOT NULL,
    ringing_at   timestamptz,
    answered_at  timestamptz,
    ended_at     timestamptz,
    recording    text,                             -- path under the data dir
    version      integer NOT NULL DEFAULT 1
);
CREATE INDEX voice_callouts_incident ON voice_callouts (incident_id) WHERE incident_id IS NOT NULL;
CREATE INDEX voice_callouts_order ON voice_callouts (order_id) WHERE order_id IS NOT NULL;
CREATE INDEX voice_callouts_live ON voice_callouts (state) WHERE state IN ('dialling', 'ringing', 'answered');

-- One 叫应 run per order: claimed by one instance, finished accepted, exhausted or stopped.
CREATE TABLE voice_escalations (
    order_id     bigint PRIMARY KEY REFERENCES orders (id),
    unit_id      bigint NOT NULL REFERENCES squad_units (id),
    instance_id  text NOT NULL,
    state        text NOT NULL CHECK (state IN ('calling', 'accepted', 'exhausted', 'stopped')),
    started_at   timestamptz NOT NULL,
    finished_at  timestamptz,
    accepted_by  bigint REFERENCES users (id)
);

-- Whom 叫应 rings for a unit, in order: members of the unit with the number to ring.
CREATE TABLE unit_call_lists (
    unit_id   bigint NOT NULL REFERENCES squad_units (id) ON DELETE CASCADE,
    position  integer NOT NULL CHECK (position >= 1),
    user_id   bigint NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    phone     text NOT NULL CHECK (length(phone) BETWEEN 3 AND 32),
    PRIMARY KEY (unit_id, position),
    UNIQUE (unit_id, user_id)
);
