-- The one-number hotline (967999): every call to it or to a merged department line, from SIP or
-- from a centre's own PBX through the CTI webhook, with its queue state and durations, and an
-- append-only trail of its state changes.  Every change writes the call, an event row and an outbox
-- row (topic 'call') in one transaction (dispatchd/channels/hotline/calls.py).

CREATE TABLE hotline_calls (
    id               bigserial PRIMARY KEY,
    source           text NOT NULL CHECK (source IN ('sip', 'cti')),
    external_id      text NOT NULL,             -- SIP: Call-ID;from-tag; CTI: the PBX's call id
    instance_id      text,                      -- SIP: the dispatchd instance holding the dialog
    caller           text NOT NULL,             -- calling number, normalised (as incidents.caller)
    caller_name      text NOT NULL DEFAULT '',
    dialled          text NOT NULL,             -- the line dialled, normalised
    line_name        text NOT NULL DEFAULT '',
    line_name_en     text NOT NULL DEFAULT '',
    department_kind  text,                      -- the department kind the old line belonged to
    department_code  text REFERENCES departments (code),
    category         text,                      -- the line's default category
    org_code         text NOT NULL REFERENCES org_units (code),   -- the unit whose desk takes the call
    org_path         text[] NOT NULL,
    state            text NOT NULL CHECK (state IN ('ringing', 'queued', 'answered', 'abandoned', 'ended')),
    ringing_user_id  bigint REFERENCES users (id),                -- the officer whose console rings
    ring_deadline    timestamptz,
    agent_user_id    bigint REFERENCES users (id),                -- who answered
    agent_name       text,                                        -- CTI: the PBX's agent name
    offered_at       timestamptz NOT NULL,
    answered_at      timestamptz,
    ended_at         timestamptz,
    end_reason       text,
    incident_id      bigint REFERENCES incidents (id),
    recording        text,                      -- path under the data dir
    version          integer NOT NULL DEFAULT 1,
    UNIQUE (source, external_id)
);
CREATE INDEX hotline_calls_caller ON hotline_calls (caller, offered_at DESC);
CREATE INDEX hotline_calls_offered ON hotline_calls (offered_at);
CREATE INDEX hotline_calls_live ON hotline_calls (state) WHERE state IN ('ringing', 'queued', 'answered');
CREATE INDEX hotline_calls_org_path ON hotline_calls USING gin (org_path);
CREATE INDEX hotline_calls_incident ON hotline_calls (incident_id) WHERE incident_id IS NOT NULL;

CREATE TABLE hotline_call_events (
    id          bigserial PRIMARY KEY,
    call_id     bigint NOT NULL REFERENCES hotline_calls (id),
    at          timestamptz NOT NULL,
    event       text NOT NULL,      -- offered, ring, queue, answer, abandon, end, link
    from_state  text,
    to_state    text NOT NULL,
    actor_id    bigint,
    actor_name  text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX hotline_call_events_call ON hotline_call_events (call_id, id);
